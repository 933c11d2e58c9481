#!/usr/bin/env bash
# The browser test of `kubeleash replay --html`: install what it needs (chromium, playwright-core),
# build the CLI, and run node --test on this folder. The page's screenshot is left in
# target/artifacts/replay-html.png.
set -euo pipefail
cd "$(dirname "$0")/../.."

tests/browser/install.sh
cargo build --quiet --locked -p kubeleash-cli
node --test tests/browser/
