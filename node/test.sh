#!/usr/bin/env bash
# The Node binding's tests, as CI runs them. On a fresh machine with Rust and Node 20+, it
# installs what it needs (npm ci: the napi CLI and @kubernetes/client-node 2.0.x with undici 7,
# which runs on Node 20), builds the addon once, checks the generated bindings are the committed
# ones, builds the kubeleash CLI for the sandbox, and runs node --test. Exits non-zero on any
# failure; the last lines are node's summary (# tests, # pass, # fail, ...).
set -euo pipefail
cd "$(dirname "$0")"

echo "== node: npm dependencies (npm ci)"
# The package's install script would build the addon; it is built once, below, by napi.
KUBELEASH_SKIP_BUILD=1 npm ci --no-audit --no-fund --loglevel=error

echo "== node: the addon (napi build --release)"
npm run --silent build

echo "== node: generated native.js and index.d.ts are the committed ones"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1 && git ls-files --error-unmatch index.d.ts native.js >/dev/null 2>&1; then
  if ! git diff --exit-code -- index.d.ts native.js; then
    echo "native.js or index.d.ts differ from what napi generates: run \`npm run build\` in node/ and commit them" >&2
    exit 1
  fi
fi

echo "== node: the kubeleash CLI (its sandbox serves the client-node tests)"
(cd .. && cargo build --quiet --locked -p kubeleash-cli)
target_dir="$(cd .. && cargo metadata --format-version 1 --no-deps | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).target_directory))')"
export KUBELEASH_BIN="$target_dir/debug/kubeleash"

echo "== node: node --test"
tap="$(mktemp)"
trap 'rm -f "$tap"' EXIT
status=0
node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap" \
  test/*.test.mjs test/*.test.cjs || status=$?
# node's own summary, last, for whoever reads the end of the log.
grep -E '^# (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) ' "$tap" | tail -n 8
exit "$status"
