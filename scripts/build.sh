#!/usr/bin/env bash
# Build the static client and the boot image into out/ (ISO, PXE tree, SHA256SUMS), after
# fetching the inputs that inputs.lock pins (scripts/fetch-inputs.sh).
#
#   scripts/build.sh [--locked] [failback build arguments...]
#
# --locked (for releases) refuses to build when the archive no longer has a pinned version,
# instead of re-pinning it. Other arguments go to `failback build`.
set -euo pipefail
cd "$(dirname "$0")/.."

fetch=()
if [[ "${1:-}" == "--locked" ]]; then
    fetch=(--locked)
    shift
fi
scripts/fetch-inputs.sh "${fetch[@]}"

target=x86_64-unknown-linux-gnu
# For the image only: exported to cargo it would rebuild every C dependency (cc-based
# build scripts rerun when it changes), i.e. after every commit.
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
# The client, and the stand-in "recovered system" init of the end-to-end test and demo.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" \
    --bin failback --example recovered_init
client="target/$target/release/failback"
if ! file "$client" | grep -q "static-pie linked"; then
    echo "build: $client is not a static-pie executable: $(file -b "$client")" >&2
    exit 1
fi
SOURCE_DATE_EPOCH=$epoch "$client" build --inputs inputs --out out --client "$client" "$@"
