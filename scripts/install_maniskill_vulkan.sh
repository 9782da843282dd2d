#!/usr/bin/env bash
# Vulkan for ManiSkill3 on a CPU-only Debian 12 machine: Mesa >= 25 lavapipe from bookworm-backports
# (Debian 12's own Mesa 22 lavapipe is too old for SAPIEN 3). Called by `make setup`; never fails the
# build: when it cannot install, it prints one line and the ManiSkill tests skip themselves.
set -u

skip() { echo "ManiSkill tests will be skipped: $*"; exit 0; }

installed=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
if [ -n "$installed" ] && dpkg --compare-versions "$installed" ge 25; then
    exit 0
fi

. /etc/os-release 2>/dev/null || true
[ "${VERSION_CODENAME:-}" = bookworm ] || \
    skip "no Mesa >= 25 Vulkan driver (lavapipe), and this script only knows Debian 12; install one yourself."

if [ "$(id -u)" = 0 ]; then
    as_root=()
elif sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    skip "Mesa >= 25 Vulkan (lavapipe) is missing and installing it needs root; run 'sudo $0' once."
fi

# The backports suite on the machine's own Debian mirror (the main archive's stanza with another suite).
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    backports=$(awk -v RS= 'NR==1' /etc/apt/sources.list.d/debian.sources \
                | sed 's/^Suites:.*/Suites: bookworm-backports/')
    echo "$backports" | "${as_root[@]}" tee /etc/apt/sources.list.d/backports.sources >/dev/null
else
    echo "deb http://deb.debian.org/debian bookworm-backports main" \
        | "${as_root[@]}" tee /etc/apt/sources.list.d/backports.list >/dev/null
fi
echo "Installing Mesa >= 25 Vulkan (lavapipe) from bookworm-backports for ManiSkill3 ..."
if ! { "${as_root[@]}" apt-get update -qq \
        && "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports \
           mesa-vulkan-drivers libvulkan1 >/dev/null; }; then
    skip "apt-get could not install mesa-vulkan-drivers from bookworm-backports (see the apt output above)."
fi
