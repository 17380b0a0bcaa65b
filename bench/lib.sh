# Helpers shared by the bench/ scripts (sourced, not run): a free loopback port, waiting for a
# listener, and the medians printed by the scripts' reports.

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_listening: waits up to 10 s for something to listen on $PORT; exits 1 otherwise.
wait_listening() {
    local i
    for i in $(seq 200); do
        if ss -Hltn "sport = :$PORT" | grep -q .; then
            return 0
        fi
        sleep 0.05
    done
    echo "nothing listens on port $PORT" >&2
    exit 1
}
