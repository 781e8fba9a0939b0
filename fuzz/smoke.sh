#!/usr/bin/env bash
# Builds every fuzz target and runs each for a fixed, seeded number of inputs: a smoke test that
# the decoders of outside bytes survive a fuzzer. For real fuzzing, run without -runs:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O frame_decode
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1   # cargo-fuzz needs nightly flags; the stable toolchain allows them this way
runs="${FUZZ_RUNS:-200000}"
for target in $(cargo fuzz list); do
  echo "fuzz: $target ($runs runs)"
  log=$(mktemp)
  if ! cargo fuzz run -O "$target" -- -runs="$runs" -seed=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED"
    exit 1
  fi
  grep -E "^Done" "$log" || true
  rm -f "$log"
done
