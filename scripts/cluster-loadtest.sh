#!/usr/bin/env bash
# Runs sealcast-loadtest against three relay nodes on this machine that share
# one data directory and fan frames out through a NATS server of their own.
# With SEALCAST_DATABASE_URL set to a PostgreSQL database, the nodes keep
# their store there instead of in the data directory's SQLite file.
# Publishers connect to node 1, whose URL is every node's public URL, and
# followers to nodes 2 and 3 in turn, so every frame crosses NATS.
#
# Usage: scripts/cluster-loadtest.sh [sealcast-loadtest options]
#   for example: scripts/cluster-loadtest.sh --clinics 100 --duration 30s --out target/bench/cluster
# SEALCAST_BIN_DIR names the folder with sealcast-relay and sealcast-loadtest
# (default target/release). The NATS server, the nodes and their data
# directory are removed at exit; the nodes' logs are printed when the run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${SEALCAST_BIN_DIR:-target/release}
nats_server=/usr/sbin/nats-server
nodes=3
# Seconds to wait for a started process to print its address.
start_timeout=30

if [[ ! -x "$nats_server" ]]; then
    echo "$nats_server not found: install it with apt-get install nats-server" >&2
    exit 2
fi
for binary in sealcast-relay sealcast-loadtest; do
    if [[ ! -x "$bin_dir/$binary" ]]; then
        echo "$bin_dir/$binary not found: run cargo build --release --bins, or set SEALCAST_BIN_DIR" >&2
        exit 2
    fi
done

if [[ -n "${SEALCAST_DATABASE_URL:-}" ]]; then
    # The nodes and the load test's admin commands read both.
    export SEALCAST_STORE=postgres SEALCAST_DATABASE_URL
    echo "store: PostgreSQL"
else
    unset SEALCAST_STORE
    echo "store: SQLite in the shared data directory"
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Prints what follows PREFIX on the first line of FILE that starts with it,
# waiting up to start_timeout seconds for that line.
read_address() {
    local file=$1 prefix=$2 waited=0 line
    while ((waited < start_timeout * 10)); do
        line=$(grep -m1 -F "$prefix" "$file" 2>/dev/null || true)
        if [[ -n "$line" ]]; then
            echo "${line#*"$prefix"}"
            return 0
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "no line starting with '$prefix' in $file within $start_timeout s:" >&2
    cat "$file" >&2
    return 1
}

# Port -1 lets nats-server pick a free port, so the machine's own server on
# 4222 is never used.
"$nats_server" -a 127.0.0.1 -p -1 >"$work/nats.log" 2>&1 &
pids+=($!)
nats_addr=$(read_address "$work/nats.log" "Listening for client connections on ")
nats_url="nats://$nats_addr"
echo "NATS server on $nats_url"

# The first node starts alone: it creates the keys and the development
# certificate in the data directory. Its default public URL is its own.
urls=()
relay_pids=()
for node in $(seq 1 "$nodes"); do
    public_url=()
    if ((node > 1)); then
        public_url=(--public-url "${urls[0]}")
    fi
    "$bin_dir/sealcast-relay" serve --listen 127.0.0.1:0 --data-dir "$work/data" \
        --fanout nats --nats-url "$nats_url" --max-connections 20000 "${public_url[@]}" \
        >"$work/node$node.out" 2>"$work/node$node.log" &
    pids+=($!)
    relay_pids+=($!)
    addr=$(read_address "$work/node$node.out" "sealcast-relay listening on https://")
    urls+=("https://localhost:${addr##*:}")
    echo "node $node (pid $!) on ${urls[-1]}"
done

relay_args=()
for url in "${urls[@]}"; do
    relay_args+=(--relay "$url")
done
status=0
"$bin_dir/sealcast-loadtest" "${relay_args[@]}" --relay-data-dir "$work/data" \
    --relay-pid "$(IFS=,; echo "${relay_pids[*]}")" "$@" || status=$?
if ((status != 0)); then
    for node in $(seq 1 "$nodes"); do
        echo "---- node $node, last 40 log lines ----" >&2
        tail -n 40 "$work/node$node.log" >&2
    done
fi
exit "$status"
