#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) coverage-guided for SECONDS (default 60),
# one after the other, from its seed corpus (fuzz/corpus/NAME, read only: what the
# fuzzer learns goes to fuzz/target/corpus/NAME). Needs a nightly toolchain and
# cargo-fuzz; a crash stops the run and leaves its input in fuzz/artifacts/NAME/
# (keep it in fuzz/corpus/NAME/ as a regression input once fixed).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (cargo fuzz needs one): rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 1
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t"
    log="target/fuzz-$t.log"
    # The largest seed sets the longest input tried (a disk head is 34 KiB); an input
    # that takes over 10 s counts as a hang.
    if ! cargo +nightly fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 >"$log" 2>&1; then
        grep -E 'panicked at|ERROR|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
        echo "fuzz.sh: $t crashed: fix it, keep the input in fuzz/corpus/$t/ (log: fuzz/$log)" >&2
        exit 1
    fi
    echo "$t (${seconds}s): $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)"
done
