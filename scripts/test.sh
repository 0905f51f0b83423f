#!/usr/bin/env bash
# The test suite: build the static client and the image, then every unit,
# integration and QEMU test. Needs inputs/ (scripts/fetch-inputs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/build.sh
cargo test --locked -- --test-threads="${FAILBACK_TEST_THREADS:-2}"
