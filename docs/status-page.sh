#!/usr/bin/env bash
# Regenerates docs/status-page.png: the screenshot the status page's browser test takes
# (heartbeat-net/tests/e2e/statuspage.rs, chromium_renders_the_status_page): a live server on
# 127.0.0.1 with a client in every state, loaded in Debian's headless chromium. Needs
# `chromium` (apt-get install chromium).
#
#   docs/status-page.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HEARTBEAT_STATUS_PNG="$PWD/docs/status-page.png" cargo test -p heartbeat-net --test e2e \
    --locked -- --ignored --exact statuspage::chromium_renders_the_status_page
echo "wrote docs/status-page.png"
