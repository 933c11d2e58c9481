#!/usr/bin/env bash
# The Python binding's tests, as CI runs them, on a machine with only Rust, Python 3 and pip:
# make a venv (or fall back to a user install), install the pinned test tools, build the wheel
# (the release build, once) and the sdist with maturin, check the sdist is a complete source tree,
# install the wheel into a fresh venv outside the checkout and check what a user can import
# (python/check_install.py), install it for the tests too, build the `kubeleash` CLI for the
# sandbox, then run pytest and the masking benchmark. Exits non-zero on any failure.
#
#   python/test.sh [pytest args...]
# Environment: KUBELEASH_VENV (default target/python-venv), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# Versions that exist on PyPI (checked with `pip index versions`).
pins=(maturin==1.16.0 pytest==9.2.0 kubernetes==37.0.2 mcp==2.3.0)
python=${PYTHON:-python3}
venv=${KUBELEASH_VENV:-$repo/target/python-venv}

echo "== python: environment ($($python --version 2>&1))"
usable() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }
make_venv() { rm -rf "$venv"; $python -m venv "$venv" >/dev/null 2>&1 || true; }
usable || make_venv
if ! usable && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv (ensurepip) as a package of its own.
    echo "python3 -m venv failed: installing python3-venv"
    ver=$($python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    { apt-get install -y -q "python$ver-venv" || apt-get install -y -q python3-venv \
        || { apt-get update -q && apt-get install -y -q python3-venv; }; } >/dev/null 2>&1 || true
    make_venv
fi
user_install=()
if usable; then
    py="$venv/bin/python"
else
    rm -rf "$venv"
    echo "no venv available: installing for this user (pip install --user)"
    py=$python
    user_install=(--user)
    # Debian's system Python refuses user installs without this (PEP 668).
    export PIP_BREAK_SYSTEM_PACKAGES=1
fi
pip=("$py" -m pip --disable-pip-version-check -q)
"${pip[@]}" install "${user_install[@]}" "${pins[@]}"

echo "== python: build the wheel and the sdist (maturin build --release, maturin sdist)"
start=$SECONDS
dist="$repo/target/python-dist"
rm -rf "$dist"
# For the host triple, as napi builds the Node addon: the two builds then share the target
# directory, and the Node step recompiles only the crates whose features differ (43 of 156).
host=$(rustc -vV | sed -n 's/^host: //p')
(cd python && "$py" -m maturin build --release --locked --target "$host" --out "$dist" \
    && "$py" -m maturin sdist --out "$dist")
wheels=("$dist"/kubeleash-*.whl)
sdists=("$dist"/kubeleash-*.tar.gz)
[ -f "${wheels[0]}" ] && [ -f "${sdists[0]}" ] || { echo "maturin made no wheel or no sdist in $dist" >&2; exit 1; }
wheel=${wheels[0]}
sdist=${sdists[0]}
version=$(basename "$wheel" | cut -d- -f2)
echo "built $(basename "$wheel") and $(basename "$sdist") in $((SECONDS - start)) s"
"${pip[@]}" install "${user_install[@]}" --force-reinstall --no-deps "$wheel"

echo "== python: the sdist is a complete source tree (cargo check of what it unpacks to)"
# What pip builds from the sdist on a platform with no wheel: every crate the binding needs must
# be in it, with the lock file. `cargo check` of the unpacked tree (offline) proves that
# without a second release build; the wheel above is the release build.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
tar -xzf "$sdist" -C "$unpacked"
manifest=$(find "$unpacked" -maxdepth 3 -path '*/python/Cargo.toml' | head -1)
[ -n "$manifest" ] || { echo "the sdist has no python/Cargo.toml" >&2; exit 1; }
[ -f "$(dirname "$(dirname "$manifest")")/Cargo.lock" ] || { echo "the sdist has no Cargo.lock" >&2; exit 1; }
# The sdist's lock is the workspace's, with entries for crates the sdist leaves out: cargo prunes
# those (so not --locked), and every version it keeps must be one the lock pinned.
root=$(dirname "$(dirname "$manifest")")
cp "$root/Cargo.lock" "$unpacked/pinned.lock"
CARGO_TARGET_DIR="$repo/target" cargo check --quiet --offline --manifest-path "$manifest"
"$py" - "$unpacked/pinned.lock" "$root/Cargo.lock" <<'EOF'
import re, sys
pins = [set(re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', open(p).read())) for p in sys.argv[1:]]
moved = sorted(pins[1] - pins[0])
if moved:
    sys.exit(f"building the sdist resolved versions its lock does not pin: {moved}")
print(f"the sdist checks with {len(pins[1])} of its lock's {len(pins[0])} pinned packages")
EOF

echo "== python: the wheel in a fresh venv outside the checkout, as a user installs it"
consumer="$unpacked/consumer"
$python -m venv "$consumer" || { echo "python3 -m venv failed: cannot check the wheel as a user installs it" >&2; exit 1; }
cpip=("$consumer/bin/python" -m pip --disable-pip-version-check -q)
# The check runs from a copy outside the checkout: Python puts a script's own folder first on
# sys.path, and from python/ that would import the source package instead of the installed one.
cp python/check_install.py "$unpacked/"
"${cpip[@]}" install "$wheel"
(cd "$unpacked" && "$consumer/bin/python" check_install.py "$repo" "$version")
"${cpip[@]}" install "$wheel[kubernetes]"
(cd "$unpacked" && "$consumer/bin/python" check_install.py "$repo" "$version" --with-client)

echo "== python: the kubeleash CLI, for the sandbox"
cargo build --quiet --locked -p kubeleash-cli
export KUBELEASH_BIN="$repo/target/debug/kubeleash"

echo "== python: pytest"
# Run from the repository root, so `import kubeleash` finds the installed package, not the
# source folder (which has no native module).
"$py" -m pytest -p no:cacheprovider -q -ra python/tests "$@"

echo "== python: benchmark (masking a 10,000-item SecretList)"
# The goal is 10x (met on a quiet machine); the check only catches a collapse on a busy one.
"$py" python/bench/mask_secretlist.py --min-ratio 3
