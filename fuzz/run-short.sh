#!/usr/bin/env bash
# A short fuzz run, as CI runs it: every fuzz target (or the ones named) for SECONDS each
# (default 20) on the stable toolchain, without a sanitizer (`-s none`: the code forbids
# `unsafe`, and AddressSanitizer needs nightly flags). Installs cargo-fuzz when it is missing.
#
#   fuzz/run-short.sh [SECONDS] [TARGET...]
#
# Seeds come from the repository's corpora (tests/testdata/mask/inputs for the masker,
# tests/testdata/classify.json and decide.json for the classifier, plus fuzz/seeds/). Exits
# non-zero when any target crashes, printing the reproducer's path and how to replay it; each
# crash should become a corpus case in tests/testdata/.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-20}"
if [ "$#" -gt 0 ]; then shift; fi
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

# Seeds: corpus files keep their names, so a seed is easy to trace back.
seed_masker() {
    local dir=corpus/masker f name flags
    mkdir -p "$dir"
    for f in ../tests/testdata/mask/inputs/*; do
        [ "$(wc -c <"$f")" -le 65536 ] || continue
        name=$(basename "$f")
        case "$name" in
            *.log | *.txt) flags='\002' ;;
            watch-*) flags='\001' ;;
            custom-rules-*) flags='\004' ;;
            *) flags='\000' ;;
        esac
        # Byte 0: framing and flags; byte 1: the chunking seed (chunks of up to 8 bytes).
        { printf "$flags"; printf '\003'; cat "$f"; } >"$dir/seed-$name"
    done
}

# Widened approvals: target index, widening lines, NUL, approved body, NUL, later body, NUL,
# later name.
seed_grant() {
    local dir=corpus/grant
    mkdir -p "$dir"
    printf '\000names=web-*\nspec.replicas=1..5\nuses=2\000{"spec":{"replicas":3}}\000{"spec":{"replicas":4}}\000web-2' >"$dir/seed-scale"
    printf '\001spec.template.spec.containers[0].image=registry.example/*\000{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"registry.example/a:1"}]}}}}\000{"spec":{"template":{"spec":{"containers":[{"name":"a","image":"registry.example/a:2"}]}}}}\000web-1' >"$dir/seed-image"
    printf '\005names=app-*\000{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app-1"},"data":{"k":"v"}}\000{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app-2"},"data":{"k":"v"}}\000app-2' >"$dir/seed-create"
    printf '\006names=web-*\000\000\000web-9' >"$dir/seed-log"
}

seed_classify() {
    local dir=corpus/classify
    mkdir -p "$dir"
    cp seeds/classify/* "$dir/"
    # kubectl's protobuf bodies (tests/testdata/protobuf), as text-layout requests.
    local pb
    for pb in ../tests/testdata/protobuf/*.pb; do
        {
            printf 'POST /api/v1/namespaces/dev/secrets\ncontent-type: application/vnd.kubernetes.protobuf\n\n'
            cat "$pb"
        } >"$dir/seed-protobuf-$(basename "$pb" .pb)"
    done
    if command -v jq >/dev/null 2>&1; then
        local file
        for file in ../tests/testdata/classify.json ../tests/testdata/decide.json; do
            jq -r '.[] | .id' "$file" | while read -r id; do
                jq -j --arg id "$id" '.[] | select(.id == $id)
                    | "\(.method) \(.target)\n"
                      + ([(.headers // [])[] | "\(.[0]): \(.[1])\n"] | join(""))
                      + "\n" + (.body // "")' "$file" >"$dir/seed-$(basename "$file" .json)-$id.txt"
            done
        done
    fi
}

status=0
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
for t in "${targets[@]}"; do
    case "$t" in
        masker) seed_masker ;;
        classify) seed_classify ;;
        grant) seed_grant ;;
    esac
    mkdir -p "artifacts/$t"
    touch "$stamp"
    echo "== fuzz $t for ${secs}s"
    log=$(mktemp)
    set +e
    cargo fuzz run -s none "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -timeout=20 -rss_limit_mb=4096 \
        -print_final_stats=1 2>&1 | tee "$log" | grep -v '^#[0-9]*\s*\(NEW\|REDUCE\|pulse\)'
    rc=${PIPESTATUS[0]}
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "== $t: ${runs:-?} runs in ${secs}s, exit $rc"
    rm -f "$log"
    if [ "$rc" -ne 0 ]; then
        status=1
        found=0
        while IFS= read -r a; do
            found=1
            echo "!! $t crashed; reproducer: fuzz/$a"
            echo "!!   replay: (cd fuzz && cargo fuzz run -s none $t $a)"
            echo "!!   minimise: (cd fuzz && cargo fuzz tmin -s none $t $a)"
        done < <(find "artifacts/$t" -type f -newer "$stamp" | sort)
        [ "$found" -eq 1 ] || echo "!! $t failed (exit $rc) without writing a reproducer; see the log above"
    fi
done
exit "$status"
