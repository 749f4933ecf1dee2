#!/usr/bin/env bash
# Runs every sealcast test on this machine: installs what the tests need
# (Chromium and Node.js for the browser tests, PostgreSQL for the store's
# tests, when missing), builds the binaries the end-to-end tests spawn, then
# runs the Rust and JavaScript tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real-transcript tests read from here; without it they print that they were skipped.
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
if ! command -v npm >/dev/null; then
    install_debian_package npm
fi
# The browser test drives Debian's Chromium; playwright-core downloads no browser.
if [[ ! -x /usr/bin/chromium ]]; then
    install_debian_package chromium
fi
# The cluster tests start their own servers from Debian's nats-server package.
if [[ ! -x /usr/sbin/nats-server ]]; then
    install_debian_package nats-server
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
# The store's tests on PostgreSQL use the machine's server, started or
# installed when missing, with a database of this run: SEALCAST_TEST_POSTGRES.
source scripts/postgres.sh

cargo build --workspace --bins --locked

# A short load test against an in-process relay: exits non-zero on any lost,
# duplicated, missing or undecryptable frame. About 10 s on two cores.
./target/debug/sealcast-loadtest --clinics 50 --followers 2 --rate 5 --warmup 1s \
    --duration 5s --no-progress --out target/loadtest-smoke
# The same against three relay nodes that fan out through NATS, with
# followers on other nodes than the publishers. About 15 s on two cores.
SEALCAST_BIN_DIR=target/debug bash scripts/cluster-loadtest.sh --clinics 20 --followers 2 \
    --rate 5 --warmup 1s --duration 5s --no-progress --out target/loadtest-cluster-smoke
cargo test --workspace --locked
# The end-to-end tests of the relay, accounts, pairing and several nodes
# again, with every relay's store in a PostgreSQL database of its own.
# --workspace, not -p, so that the crates keep the features of the run
# above and are not compiled again.
SEALCAST_TEST_STORE=postgres cargo test --workspace --locked \
    --test real_transcripts_arrive_complete --test tampered_frames_are_rejected \
    --test relay_crash_loses_nothing --test malformed_input_keeps_others_streaming \
    --test websocket_protocol_errors_are_closed \
    --test sign_in_by_mail --test admin_signs_in_with_totp \
    --test key_rotation_reaches_followers --test pairing_without_link \
    --test paired_devices_follow_rotation --test cluster_fans_out_across_nodes \
    --test cluster_node_kill_moves_followers --test cluster_nats_outage_catches_up \
    --test audit_key_must_match_store
node --test relay/web/test/
# The patient page in headless Chromium against the real relay and CLI, about 40 s.
node --test tests/browser/
