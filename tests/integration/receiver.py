#!/usr/bin/env python3
"""A webhook receiver for the delivery tests, on loopback, python3 standard library only.

Verifies Standard Webhooks signatures with its own code (hmac, hashlib, base64: nothing
shared with journeyd), records every request as one JSON line
  {"t": unix seconds, "method", "path", "headers": {lowercase: value}, "body",
   "signature_ok": true | false | null (no secret or no signature), "status"}
and answers per path as told by --rule:
  PATH=STATUS        always STATUS (e.g. /gone=410)
  PATH=STATUSxN      STATUS for the first N requests, then 200 (/flaky=500x2)
  PATH=429xN,ra=S    with Retry-After: S (seconds)
  PATH=hangxN        hold the first N requests without answering (until the client gives up)
  PATH=sleep:SEC     wait SEC seconds, then 200
Other paths get 200. Prints "port N" once listening; exits on SIGTERM or SIGINT, or by
itself after --max-seconds (60).

  receiver.py --out FILE [--secret whsec_...]... [--rule PATH=...]... [--max-seconds N]
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_rule(text):
    path, _, spec = text.partition("=")
    rule = {"status": 200, "times": None, "retry_after": None, "hang": False, "sleep": 0.0}
    parts = spec.split(",")
    head = parts[0]
    if head.startswith("sleep:"):
        rule["sleep"] = float(head[6:])
    else:
        what, _, times = head.partition("x")
        if what == "hang":
            rule["hang"] = True
        else:
            rule["status"] = int(what)
        if times:
            rule["times"] = int(times)
    for p in parts[1:]:
        k, _, v = p.partition("=")
        if k == "ra":
            rule["retry_after"] = v
    return path, rule


def signature_ok(secrets, headers, body):
    sig = headers.get("webhook-signature")
    if not secrets or sig is None:
        return None
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    try:
        if abs(time.time() - int(ts)) > 300:
            return False
    except ValueError:
        return False
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    offered = [s.split(",", 1)[1] for s in sig.split(" ") if s.startswith("v1,")]
    for secret in secrets:
        key = base64.b64decode(secret[6:] if secret.startswith("whsec_") else secret)
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(want, o) for o in offered):
            return True
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--secret", action="append", default=[])
    ap.add_argument("--rule", action="append", default=[])
    ap.add_argument("--max-seconds", type=float, default=60)
    args = ap.parse_args()
    rules = dict(parse_rule(r) for r in args.rule)
    counts = {}
    lock = threading.Lock()
    out = open(args.out, "a", buffering=1)
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = self.path
            with lock:
                counts[path] = counts.get(path, 0) + 1
                seen = counts[path]
            rule = rules.get(path)
            status, extra = 200, {}
            if rule:
                applies = rule["times"] is None or seen <= rule["times"]
                if applies and rule["hang"]:
                    self.record(path, headers, body, None)
                    stop.wait(30)  # the client times out first
                    self.close_connection = True
                    return
                if rule["sleep"]:
                    time.sleep(rule["sleep"])
                if applies:
                    status = rule["status"]
                    if rule["retry_after"] is not None:
                        extra["Retry-After"] = rule["retry_after"]
            self.record(path, headers, body, status)
            reply = b'{"ok":true}' if status < 300 else b'{"error":"as told"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(reply)

        do_PUT = do_POST

        def record(self, path, headers, body, status):
            line = json.dumps({
                "t": time.time(), "method": self.command, "path": path, "headers": headers,
                "body": body.decode("utf-8", "replace"),
                "signature_ok": signature_ok(args.secret, headers, body), "status": status,
            })
            with lock:
                out.write(line + "\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def shutdown(*_):
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    timer = threading.Timer(args.max_seconds, shutdown)
    timer.daemon = True
    timer.start()
    print("port %d" % server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.1)
    out.close()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
