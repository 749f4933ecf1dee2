#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target in fuzz/ for SECONDS each, one
# after another: `bash scripts/fuzz.sh [SECONDS]` (default 60).
#
# Each run starts from the committed seeds in fuzz/corpus/TARGET and writes
# the inputs it adds to fuzz/found/TARGET, which is not committed. A crash
# stops that target, leaves its input in fuzz/artifacts/TARGET/ and makes
# the script exit non-zero after the other targets ran. Installs cargo-fuzz
# when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS]: SECONDS is the run time of each target, a whole number" >&2
    exit 2
fi

# Installing cargo-fuzz 0.13.2 took 2 min 33 s on 2 cores.
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes rustc flags that only a nightly compiler accepts
# (-Zsanitizer and others); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them, so no second toolchain is needed.
export RUSTC_BOOTSTRAP=1
# Debug assertions also turn on integer overflow checks, so arithmetic
# overflow counts as a crash. SEALCAST_FUZZ_SANITIZER picks the sanitizer
# (address by default, none to build faster), and SEALCAST_FUZZ_PROFILE=dev
# builds without optimization, which builds in about a third of the time
# and runs slower.
build_flags=(--debug-assertions --sanitizer "${SEALCAST_FUZZ_SANITIZER:-address}")
case "${SEALCAST_FUZZ_PROFILE:-release}" in
    release) ;;
    dev) build_flags+=(--dev) ;;
    *)
        echo "SEALCAST_FUZZ_PROFILE must be release or dev" >&2
        exit 2
        ;;
esac

cargo fuzz build "${build_flags[@]}"

failed=()
for target in $(cargo fuzz list); do
    mkdir -p "fuzz/found/$target"
    echo "== $target: ${seconds}s"
    if ! cargo fuzz run "${build_flags[@]}" "$target" "fuzz/found/$target" "fuzz/corpus/$target" \
        -- -max_total_time="$seconds" -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz targets that crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash"
