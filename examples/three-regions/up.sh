#!/usr/bin/env bash
# Three replicating nodes on this machine, one per "region": a cluster CA and certificates,
# a configuration per node, and the nodes started in the background.
#
#   examples/three-regions/up.sh DIR     # DIR: where everything goes (created)
#   examples/three-regions/down.sh DIR   # stops them
#
# Node a (eu-west):  client QUIC 127.0.0.1:7401, HTTP 7481, replication 7501
# Node b (us-east):  client QUIC 127.0.0.1:7402, HTTP 7482, replication 7502
# Node c (ap-south): client QUIC 127.0.0.1:7403, HTTP 7483, replication 7503
# Each node's files are in DIR/<node>/ (node.toml, its certificate, admin.token, its data);
# clients trust DIR/ca.pem; logs in DIR/<node>.log, pids in DIR/<node>.pid.
# VEKTAGRAF=path/to/vektagraf uses that binary; otherwise the release build (built if missing).
set -euo pipefail

dir=${1:?usage: up.sh DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${VEKTAGRAF:-$root/target/release/vektagraf}
if [[ ! -x $bin ]]; then
    echo "building the node (cargo build --release -p vektagraf) ..."
    (cd "$root" && cargo build --release -p vektagraf)
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

nodes=(a b c)
regions=(eu-west us-east ap-south)

if [[ ! -f $dir/ca.pem ]]; then
    "$bin" certs init "$dir"
fi
for i in 0 1 2; do
    n=${nodes[$i]}
    if [[ ! -f $dir/$n/node.pem ]]; then
        "$bin" certs node "$n" --ca "$dir" --out "$dir/$n"
    fi
    {
        echo "[node]"
        echo "data_dir = \"$dir/$n\""
        echo "quic_listen = \"127.0.0.1:740$((i + 1))\""
        echo "http_listen = \"127.0.0.1:748$((i + 1))\""
        echo
        echo "[node.tls]"
        echo "cert = \"$dir/$n/node.pem\""
        echo "key = \"$dir/$n/node.key\""
        echo
        echo "[replication]"
        echo "node_id = \"$n\""
        echo "region = \"${regions[$i]}\""
        echo "listen = \"127.0.0.1:750$((i + 1))\""
        echo
        echo "[replication.tls]"
        echo "ca = \"$dir/ca.pem\""
        echo "cert = \"$dir/$n/node.pem\""
        echo "key = \"$dir/$n/node.key\""
        for j in 0 1 2; do
            [[ $j == "$i" ]] && continue
            echo
            echo "[[replication.peers]]"
            echo "id = \"${nodes[$j]}\""
            echo "address = \"127.0.0.1:750$((j + 1))\""
            echo "region = \"${regions[$j]}\""
        done
    } > "$dir/$n/node.toml"
done

for i in 0 1 2; do
    n=${nodes[$i]}
    if [[ -f $dir/$n.pid ]] && kill -0 "$(cat "$dir/$n.pid")" 2>/dev/null; then
        echo "node $n is already running (pid $(cat "$dir/$n.pid"))"
        continue
    fi
    "$bin" serve --config "$dir/$n/node.toml" > "$dir/$n.log" 2>&1 &
    echo $! > "$dir/$n.pid"
done

# Ready when each node has written its admin token and answers on its HTTP port.
for i in 0 1 2; do
    n=${nodes[$i]}
    for _ in $(seq 1 600); do
        if [[ -s $dir/$n/admin.token ]] && (exec 3<>"/dev/tcp/127.0.0.1/748$((i + 1))") 2>/dev/null; then
            break
        fi
        if ! kill -0 "$(cat "$dir/$n.pid")" 2>/dev/null; then
            echo "node $n stopped; its log:" >&2
            cat "$dir/$n.log" >&2
            exit 1
        fi
        sleep 0.1
    done
done

cat <<INFO
three nodes are up:
  a (eu-west)   quic://127.0.0.1:7401   http://127.0.0.1:7481   token: $dir/a/admin.token
  b (us-east)   quic://127.0.0.1:7402   http://127.0.0.1:7482   token: $dir/b/admin.token
  c (ap-south)  quic://127.0.0.1:7403   http://127.0.0.1:7483   token: $dir/c/admin.token
clients trust $dir/ca.pem; stop them with: examples/three-regions/down.sh $dir
INFO
