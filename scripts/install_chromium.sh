#!/usr/bin/env bash
# Debian's Chromium for `make docs-check` (the documentation opened in a real headless browser). As root or with
# passwordless sudo; otherwise one line says what to run.
set -eu
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n); else
    echo "error: docs-check needs Chromium: run 'sudo apt-get install -y chromium' once." >&2; exit 2
fi
"${as_root[@]}" apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q chromium >/dev/null
command -v chromium
