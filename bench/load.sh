#!/usr/bin/env bash
# Load test of the real server on 127.0.0.1: one realistic Deployment review, sent to the
# default policy set and to an empty one (the floor: TLS + HTTP + decode + encode), over
# HTTP/2 at concurrency 1 and 32 and HTTP/1.1 at concurrency 1, each for a bounded duration.
# Prints a table with the default/empty ratios and checks every response was a 200.
#
# Usage: bench/load.sh
# Environment:
#   DURATION      length of each measured run, as oha takes it (default 10s; 10 runs in all)
#   WARMUP        requests sent before each measured run and discarded (default 200)
#   CONCURRENCY   concurrencies for HTTP/2 runs (default "1 32")
#   OUT_DIR       where oha's JSON and the server logs go (default bench/out/<UTC time>)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-200}
CONCURRENCY=${CONCURRENCY:-1 32}
OUT_DIR=${OUT_DIR:-$root/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
# Pinned: 1.16.0 builds with rustc >= 1.88 and has HTTP/2, rustls, --cacert and JSON output.
OHA_VERSION=1.16.0
tools=$root/bench/.tools
oha=$tools/bin/oha
bin=$root/target/release/portcullis

log() { printf '==> %s\n' "$*" >&2; }

log "building the release binary"
cargo build --release --locked

if ! [[ -x $oha && $("$oha" --version) == *" $OHA_VERSION"* ]]; then
    log "installing oha $OHA_VERSION into $tools"
    cargo install oha --locked --version "$OHA_VERSION" --root "$tools"
fi

mkdir -p "$OUT_DIR"
work=$(mktemp -d)
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" certs --out "$work/certs" --host 127.0.0.1 --host localhost >/dev/null 2>&1
# The API server sends compact JSON; the file is pretty-printed for people.
python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"))' \
    bench/review-deployment.json "$work/review.json"
printf 'policies: []\n' >"$work/empty.yaml"

addr=
# start_server NAME [serve args...]: starts the server on an ephemeral port, sets $addr once
# /readyz answers.
start_server() {
    local name=$1 logfile="$OUT_DIR/server-$1.log"
    shift
    "$bin" --log-format json serve --addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
        --cert "$work/certs/tls.crt" --key "$work/certs/tls.key" "$@" 2>"$logfile" &
    server_pid=$!
    addr=
    for _ in $(seq 1 300); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$logfile" >&2
            log "the $name server exited during start-up"
            exit 1
        fi
        addr=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "listening":
        print(event["addr"])
        break
' "$logfile")
        if [[ -n $addr ]] && curl -fsS --cacert "$work/certs/ca.crt" "https://$addr/readyz" >/dev/null 2>&1; then
            log "$name policy set listening on $addr"
            return
        fi
        sleep 0.1
    done
    log "the $name server did not become ready"
    exit 1
}

stop_server() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

# measure CONFIG ROUTE PROTO CONCURRENCY
measure() {
    local config=$1 route=$2 proto=$3 c=$4
    local flags=(--no-tui --cacert "$work/certs/ca.crt" -m POST -T application/json -D "$work/review.json" -c "$c")
    [[ $proto == h2 ]] && flags+=(--http2)
    "$oha" "${flags[@]}" -n "$WARMUP" --output-format json "https://$addr/$route" >/dev/null
    log "$config $route $proto c=$c for $DURATION"
    "$oha" "${flags[@]}" -z "$DURATION" -w --output-format json "https://$addr/$route" \
        >"$OUT_DIR/$config-$route-$proto-c$c.json"
}

for config in default empty; do
    if [[ $config == default ]]; then
        start_server default
    else
        start_server empty --config "$work/empty.yaml"
    fi
    for route in validate mutate; do
        for c in $CONCURRENCY; do
            measure "$config" "$route" h2 "$c"
        done
    done
    measure "$config" validate http1.1 1
    stop_server
done

python3 bench/report.py "$OUT_DIR"
