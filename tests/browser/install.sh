#!/usr/bin/env bash
# What the browser test needs: Debian's chromium (/usr/bin/chromium) and the test's npm packages
# (playwright-core, pinned in package-lock.json). playwright-core drives the system chromium: it
# downloads no browser of its own, which this machine's closed network would refuse anyway.
# Idempotent: a second run installs nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium (a few minutes the first time)"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale on a fresh machine: refresh them only then.
    if ! apt-get install -y -q chromium >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q chromium >/dev/null
    fi
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "error: /usr/bin/chromium is still missing after apt-get install chromium" >&2
    exit 1
fi

# npm ci wipes and reinstalls node_modules: skip it when the tree was installed from this very
# lock file (the stamp is a copy of the lock it was installed from).
if ! cmp -s package-lock.json node_modules/.kubeleash-installed-lock 2>/dev/null; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/.kubeleash-installed-lock
fi
