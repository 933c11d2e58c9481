#!/usr/bin/env bash
# The Python binding's tests, as CI runs them, on a machine with only Rust, Python 3 and pip:
# make a venv (or fall back to a user install), install the pinned test tools, build and install
# the binding with `pip install ./python` (the release build, once), build the `kubeleash` CLI
# for the sandbox, then run pytest and the masking benchmark. Exits non-zero on any failure.
#
#   python/test.sh [pytest args...]
# Environment: KUBELEASH_VENV (default target/python-venv), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# Versions that exist on PyPI (checked with `pip index versions`).
pins=(maturin==1.16.0 pytest==9.2.0 kubernetes==37.0.2)
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

echo "== python: build and install the binding (pip install ./python, release)"
start=$SECONDS
"${pip[@]}" install "${user_install[@]}" --force-reinstall --no-deps ./python
echo "built and installed in $((SECONDS - start)) s"

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
