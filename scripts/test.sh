#!/usr/bin/env bash
# Everything CI runs: install the test tools (as root on Debian), build the image (which
# fetches the inputs), then every unit, integration, QEMU and EBS test, the ignored ones
# (those that boot QEMU or need moto's server) included.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests' tools: QEMU and OVMF boot the image; xorriso, isoinfo (genisoimage), sgdisk
# (gdisk), fsck.vfat (dosfstools) and qemu-img (qemu-utils, for the cloud images) are oracles;
# python3-venv holds moto's server; chromium (headless) opens the fleet dashboard
# (tests/dashboard.rs).
tools=(qemu-system-x86 qemu-utils ovmf file xorriso genisoimage gdisk dosfstools python3-venv
    debian-archive-keyring chromium)
missing=()
for pkg in "${tools[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "test: missing packages: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

# moto's server (the EBS direct API peer of the tests) in .venv-moto, from PyPI.
scripts/moto-venv.sh
scripts/build.sh
cargo test --locked -- --include-ignored --test-threads="${FAILBACK_TEST_THREADS:-2}"
