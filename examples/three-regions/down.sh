#!/usr/bin/env bash
# Stops the nodes started by up.sh DIR (SIGTERM, then waits for each to finish).
set -euo pipefail
dir=${1:?usage: down.sh DIR}
for n in a b c; do
    pidfile=$dir/$n.pid
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        echo "stopped node $n (pid $pid)"
    fi
    rm -f "$pidfile"
done
