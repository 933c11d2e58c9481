#!/usr/bin/env bash
# kubeleash proxy against kubectl proxy, both in front of the same sandbox, and the sandbox
# directly as the baseline for added latency: same client, same run, endpoints interleaved in
# rounds. Builds release binaries, starts the endpoints on free loopback ports, runs the load
# (benches/examples/proxy_load.rs), prints the table, and stops everything it started.
#
#   benches/proxy/run.sh [proxy_load options: --connections N --seconds S --rounds R --sequential N]
#   KUBELEASH_BENCH_SERVER=real benches/proxy/run.sh ...
#
# With KUBELEASH_BENCH_SERVER=real the upstream is a real kube-apiserver (tests/cluster/start.sh:
# HTTPS, the operator's client certificate, RBAC) instead of the sandbox; there is no plain-HTTP
# `direct` endpoint then, so `kubectl proxy` (same kubeconfig, same TLS) is the baseline for
# added latency as well as for throughput.
#
# Endpoints: `direct` (the sandbox), `kubeleash` (examples/agent-policy.yaml, enforcing and
# masking, over HTTPS: its default, with the CA it makes at start, which the load generator
# trusts alone, and its token as a bearer header), `kubeleash-record` (the same, recording every
# request), `kubeleash-plain` (the first with --plain-http: what TLS costs), `kubectl-proxy`
# (plain HTTP, as kubectl proxy serves; skipped, with a note, when kubectl is not installed), and
# with KUBELEASH_BASELINE_BIN=/path/to/kubeleash (an older build, say) `baseline`: that binary's
# proxy with the same flags, measured in the same rounds (HTTPS if it serves HTTPS); add flags
# to it with KUBELEASH_BASELINE_ARGS (`--record FILE` to compare two builds' recorders).
#
# Besides latency and throughput, it prints each kubeleash process's CPU time per request under
# load (user + system, from /proc): the cost of a feature (recording, TLS) as CPU it burns, which
# the sharing of two cores with the load generator and the sandbox moves far less than it moves
# requests per second.
#
# The load generator keeps its connections alive, as kubectl does: a TLS handshake per
# connection, not per request.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --locked -q -p kubeleash-cli
cargo build --release --locked -q -p kubeleash-benches --example proxy_load
BIN=$PWD/target/release/kubeleash
GEN=$PWD/target/release/examples/proxy_load

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kubeleash-proxy-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -f "$WORK/cluster/env" ]; then tests/cluster/stop.sh "$WORK/cluster" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
REAL=
[ "${KUBELEASH_BENCH_SERVER:-sandbox}" = real ] && REAL=1

# start NAME PATTERN COMMAND...: run COMMAND in the background, wait (up to 30 s) for a line of
# its standard output matching PATTERN, and set ADDR to the 127.0.0.1:PORT it names and PID to
# its process id.
start() {
    local name=$1 pattern=$2
    shift 2
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=("$!")
    PID=$!
    for _ in $(seq 300); do
        if grep -q "$pattern" "$WORK/$name.out" 2>/dev/null; then
            ADDR=$(grep -m1 -o '127\.0\.0\.1:[0-9]*' "$WORK/$name.out")
            return
        fi
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$WORK/$name.err" >&2
    exit 1
}

if [ -n "$REAL" ]; then
    mkdir -p "$WORK/cluster"
    KUBELEASH_CLUSTER_OWNER_PID=$$ tests/cluster/start.sh "$WORK/cluster" >"$WORK/cluster.out" 2>&1 \
        || { cat "$WORK/cluster.out" >&2; exit 1; }
    cp "$WORK/cluster/operator-cert.kubeconfig" "$WORK/operator.kubeconfig"
else
start sandbox 'listening on' "$BIN" sandbox --listen 127.0.0.1:0
SANDBOX=$ADDR
cat >"$WORK/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: http://$SANDBOX
contexts:
- name: sandbox
  context: {cluster: sandbox, user: operator}
current-context: sandbox
users:
- name: operator
  user: {}
EOF
fi
read -r -a BASELINE_ARGS <<<"${KUBELEASH_BASELINE_ARGS:-}"
PROXY_ARGS=(proxy --policy examples/agent-policy.yaml --kubeconfig "$WORK/operator.kubeconfig"
    --listen 127.0.0.1:0 --user agent-1 --group ai-agents)
# Each proxy writes the bearer token it requires, and (HTTPS) the CA it made; the load generator
# presents the one and trusts the other.
start kubeleash 'listening on https://' "$BIN" "${PROXY_ARGS[@]}" \
    --agent-token-file "$WORK/kubeleash.token" --agent-ca-file "$WORK/kubeleash.ca"
KUBELEASH=$ADDR
KUBELEASH_PID=$PID
start kubeleash-record 'listening on https://' "$BIN" "${PROXY_ARGS[@]}" --record "$WORK/record.jsonl" \
    --agent-token-file "$WORK/kubeleash-record.token" --agent-ca-file "$WORK/kubeleash-record.ca"
RECORDING=$ADDR
RECORDING_PID=$PID
start kubeleash-plain 'listening on http://' "$BIN" "${PROXY_ARGS[@]}" --plain-http \
    --agent-token-file "$WORK/kubeleash-plain.token"
PLAIN=$ADDR
PLAIN_PID=$PID
BASELINE_TARGETS=()
if [ -n "${KUBELEASH_BASELINE_BIN:-}" ]; then
    BASELINE_HELP=$("$KUBELEASH_BASELINE_BIN" proxy --help)
    if grep -q -- --plain-http <<<"$BASELINE_HELP"; then
        # Builds that serve HTTPS by default.
        start baseline 'listening on' "$KUBELEASH_BASELINE_BIN" "${PROXY_ARGS[@]}" "${BASELINE_ARGS[@]}" \
            --agent-token-file "$WORK/baseline.token" --agent-ca-file "$WORK/baseline.ca"
        BASELINE_TARGETS=(--target "baseline=https://$ADDR"
            --bearer-file "baseline=$WORK/baseline.token" --ca-file "baseline=$WORK/baseline.ca")
    elif grep -q -- --agent-token-file <<<"$BASELINE_HELP"; then
        # Plain HTTP, with the proxy token (issue 12).
        start baseline 'listening on' "$KUBELEASH_BASELINE_BIN" "${PROXY_ARGS[@]}" "${BASELINE_ARGS[@]}" \
            --agent-token-file "$WORK/baseline.token"
        BASELINE_TARGETS=(--target "baseline=http://$ADDR"
            --bearer-file "baseline=$WORK/baseline.token")
    else
        # Builds from before the proxy token take no --agent-token-file and need none.
        start baseline 'listening on' "$KUBELEASH_BASELINE_BIN" "${PROXY_ARGS[@]}" "${BASELINE_ARGS[@]}"
        BASELINE_TARGETS=(--target "baseline=http://$ADDR")
    fi
    BASELINE_TARGETS+=(--pid "baseline=$PID")
fi

TARGETS=(--target "kubeleash=https://$KUBELEASH"
    --target "kubeleash-record=https://$RECORDING"
    --target "kubeleash-plain=http://$PLAIN"
    --bearer-file "kubeleash=$WORK/kubeleash.token"
    --bearer-file "kubeleash-record=$WORK/kubeleash-record.token"
    --bearer-file "kubeleash-plain=$WORK/kubeleash-plain.token"
    --ca-file "kubeleash=$WORK/kubeleash.ca"
    --ca-file "kubeleash-record=$WORK/kubeleash-record.ca" "${BASELINE_TARGETS[@]}"
    --pid "kubeleash=$KUBELEASH_PID" --pid "kubeleash-record=$RECORDING_PID"
    --pid "kubeleash-plain=$PLAIN_PID")
KUBECTL_PROXY=()
if command -v kubectl >/dev/null; then
    mkdir -p "$WORK/home"
    start kubectl-proxy 'Starting to serve' env HOME="$WORK/home" \
        kubectl --kubeconfig "$WORK/operator.kubeconfig" --cache-dir "$WORK/kube-cache" proxy --port=0
    KUBECTL_PROXY=(--target "kubectl-proxy=http://$ADDR")
elif [ -n "$REAL" ]; then
    echo "kubectl is needed against the real API server: it is the baseline there" >&2
    exit 1
else
    echo "kubectl is not installed: no kubectl proxy column" >&2
fi
# The first target is the baseline for added latency.
if [ -n "$REAL" ]; then
    TARGETS=("${KUBECTL_PROXY[@]}" "${TARGETS[@]}")
else
    TARGETS=(--target "direct=http://$SANDBOX" "${TARGETS[@]}" "${KUBECTL_PROXY[@]}")
fi

echo "$(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)" >&2
"$GEN" "${TARGETS[@]}" "$@"
