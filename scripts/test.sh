#!/usr/bin/env bash
# Runs every sealcast test on this machine: installs what the tests need
# (Chromium and Node.js for the browser tests, when missing), builds the
# binaries the end-to-end tests spawn, then runs the Rust and JavaScript tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real-transcript tests read from here; without it they say they were skipped.
if [[ -z "${SEALCAST_TRANSCRIPTS:-}" && -d ../shared/data/transcripts ]]; then
    export SEALCAST_TRANSCRIPTS="$(cd ../shared/data/transcripts && pwd)"
fi

apt_updated=false
install_debian_package() {
    if ! $apt_updated; then
        apt-get update -qq
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v node >/dev/null; then
    install_debian_package nodejs
fi

cargo build --workspace --bins --locked
cargo test --workspace --locked
node --test relay/web/test/
