#!/usr/bin/env bash
# Instruction counts of the masker and the decision path, under callgrind: deterministic where
# timings on this shared machine are not, so a regression shows as a count.
#
#   benches/instructions/run.sh
#
# Each figure is instructions per input byte (masking) or per decision, with a baseline counted
# the same way in the same run: serde_json's validation alone (`IgnoredAny`) and serde_json parse,
# mask, serialize of the same bytes. A workload's setup (building the input, compiling the masks)
# is counted once and taken out: each program runs with 1 and with 3 rounds, and the figure is
# the difference over 2 rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

cargo build --release --locked -q -p kubeleash-benches --example profile_mask --example profile_decide
BIN=$PWD/target/release/examples

# count PROGRAM ARGS...: the instructions callgrind collects for one run.
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' | tail -1
}

# per_round PROGRAM WORKLOAD MODE: instructions of one round, setup taken out.
per_round() {
    local one three
    one=$(count "$BIN/$1" "$2" 1 "$3")
    three=$(count "$BIN/$1" "$2" 3 "$3")
    echo $(((three - one) / 2))
}

bytes_of() {
    case "$1" in
        secrets) echo 10000 ;; pods) echo 2000 ;; events) echo 5000 ;; watch) echo 2000 ;;
    esac
}

printf '%-10s %14s %14s %14s %14s %10s %10s %10s\n' workload "kubeleash Ir" "masks-off Ir" "ignored-any Ir" "serde-json Ir" "vs valid." "off/valid." "vs serde"
for w in secrets pods events watch; do
    k=$(per_round profile_mask "$w" kubeleash)
    o=$(per_round profile_mask "$w" masks-off)
    v=$(per_round profile_mask "$w" ignored-any)
    if [ "$w" = watch ]; then s=0; else s=$(per_round profile_mask "$w" serde-json); fi
    ratio_v=$(awk -v a="$k" -v b="$v" 'BEGIN { printf "%.2fx", a / b }')
    ratio_o=$(awk -v a="$o" -v b="$v" 'BEGIN { printf "%.2fx", a / b }')
    ratio_s=$(awk -v a="$k" -v b="$s" 'BEGIN { if (b > 0) printf "%.2fx", b / a; else print "-" }')
    printf '%-10s %14s %14s %14s %14s %10s %10s %10s\n' "$w" "$k" "$o" "$v" "$s" "$ratio_v" "$ratio_o" "$ratio_s"
done
echo "(vs valid.: kubeleash's instructions over serde_json validation's, lower is better; off/valid.:"
echo " the same with every built-in mask and detector off, issue 15's goal being at most 1x;"
echo " vs serde: serde_json parse+mask+serialize's instructions over kubeleash's, higher is better)"

# The decision path: classify and decide one request, bodiless mix, at 10 and 1,000 rules.
per_decision() {
    local rules=$1 n one three
    n=$("$BIN/profile_decide" "$rules" 0 | sed -n 's/^\([0-9]*\) requests per round$/\1/p')
    one=$(count "$BIN/profile_decide" "$rules" 1000)
    three=$(count "$BIN/profile_decide" "$rules" 3000)
    echo $(((three - one) / (2000 * n)))
}
d10=$(per_decision 10)
d1000=$(per_decision 1000)
printf '\n%-24s %12s\n' "decision path" "Ir/request"
printf '%-24s %12s\n' "10 rules" "$d10" "1,000 rules" "$d1000"
awk -v a="$d1000" -v b="$d10" 'BEGIN { printf "1,000 rules / 10 rules: %.2fx\n", a / b }'
