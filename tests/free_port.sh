# free_port: a loopback port nobody is bound to, for the shell tests (sourced, not run).
# The kernel picks it (a bind to port 0), so it is free when chosen; a port derived from
# the PID could be one an outgoing connection of another test was using at that moment.
# Without python3: a port below the ephemeral range (32768 and up) derived from the PID.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + $$ % 12000))
}
