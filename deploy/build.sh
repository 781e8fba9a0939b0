#!/bin/sh
# Builds the `baton` binary: the steps the container image (deploy/Dockerfile) runs, and the
# ones CI runs (.ci/run, with BATON_PROFILE=dev so that it shares the tests' build).
# BATON_PROFILE: release (default) or dev. Prints the binary's path.
set -eu
cd "$(dirname "$0")/.."
profile="${BATON_PROFILE:-release}"
cargo build --locked --profile "$profile" --bin baton >&2
dir="$profile"
[ "$profile" = dev ] && dir=debug
echo "${CARGO_TARGET_DIR:-target}/$dir/baton"
