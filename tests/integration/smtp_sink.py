#!/usr/bin/env python3
"""A tiny SMTP sink for the delivery tests, on loopback, python3 standard library only.

Speaks EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT (no STARTTLS, no AUTH: a client
that requires either fails, as it should), and writes each message as one JSON line
  {"t": unix seconds, "from": "a@b", "to": ["c@d", ...], "data": "the message, unstuffed"}
Prints "port N" once listening; exits on SIGTERM or SIGINT, or by itself after
--max-seconds (60).

  smtp_sink.py --out FILE [--max-seconds N]
"""
import argparse
import asyncio
import json
import signal
import sys
import time


def addr(arg):
    a = arg.split(":", 1)[1].strip() if ":" in arg else arg
    a = a.split(" ")[0]
    return a.strip("<>")


async def session(reader, writer, out):
    def send(line):
        writer.write((line + "\r\n").encode())

    send("220 sink ESMTP ready")
    mail_from, rcpt = None, []
    try:
        while True:
            raw = await reader.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line[:4].upper()
            if verb == "EHLO":
                send("250-sink greets you")
                send("250-8BITMIME")
                send("250 SIZE 10485760")
            elif verb == "HELO":
                send("250 sink")
            elif verb == "MAIL":
                mail_from, rcpt = addr(line), []
                send("250 OK")
            elif verb == "RCPT":
                if mail_from is None:
                    send("503 MAIL first")
                else:
                    rcpt.append(addr(line))
                    send("250 OK")
            elif verb == "DATA":
                if not rcpt:
                    send("503 RCPT first")
                    continue
                send("354 end with <CRLF>.<CRLF>")
                await writer.drain()
                lines = []
                while True:
                    d = await reader.readline()
                    if not d:
                        return
                    if d in (b".\r\n", b".\n"):
                        break
                    if d.startswith(b".."):
                        d = d[1:]
                    lines.append(d)
                data = b"".join(lines).decode("utf-8", "replace")
                out.write(json.dumps({"t": time.time(), "from": mail_from, "to": rcpt, "data": data}) + "\n")
                out.flush()
                mail_from, rcpt = None, []
                send("250 OK queued")
            elif verb == "RSET":
                mail_from, rcpt = None, []
                send("250 OK")
            elif verb == "NOOP":
                send("250 OK")
            elif verb == "QUIT":
                send("221 bye")
                await writer.drain()
                break
            else:
                send("502 command not implemented")
            await writer.drain()
    finally:
        writer.close()


async def run(args):
    out = open(args.out, "a", buffering=1)
    server = await asyncio.start_server(lambda r, w: session(r, w, out), "127.0.0.1", 0)
    print("port %d" % server.sockets[0].getsockname()[1], flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, done.set)
    try:
        await asyncio.wait_for(done.wait(), timeout=args.max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()
    out.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-seconds", type=float, default=60)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
