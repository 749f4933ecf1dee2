#!/usr/bin/env bash
# Scans the relay's TLS with testssl.sh (Debian package testssl.sh). Fails
# unless SSLv2, SSLv3, TLS 1.0 and TLS 1.1 are rejected, every cipher suite
# offered is an AEAD suite (AES-GCM, AES-CCM or ChaCha20-Poly1305), TLS
# compression is off, and neither insecure nor client-initiated
# renegotiation is possible.
#
# Starts target/debug/sealcast-relay on a free loopback port with a new data
# directory and its development certificate, and stops it at the end.
# Installs testssl.sh when it is missing; builds the relay when it is.
# About 30 s on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v testssl >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >/dev/null
fi
relay=target/debug/sealcast-relay
if [[ ! -x "$relay" ]]; then
    cargo build -p sealcast-relay --bin sealcast-relay --locked
fi

work="$(mktemp -d)"
relay_pid=""
cleanup() {
    if [[ -n "$relay_pid" ]]; then
        kill "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

"$relay" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/relay.log" 2>&1 &
relay_pid=$!
addr=""
for _ in $(seq 1 100); do
    addr="$(sed -n 's|^sealcast-relay listening on https://||p' "$work/relay.log" | head -n 1)"
    [[ -n "$addr" ]] && break
    sleep 0.1
done
if [[ -z "$addr" ]]; then
    echo "the relay did not print its listening line within 10 s; its output:" >&2
    cat "$work/relay.log" >&2
    exit 1
fi

# -p protocols, -E cipher suites per protocol, -R renegotiation, -C compression.
testssl --quiet --color 0 --warnings off --nodns none --connect-timeout 5 --openssl-timeout 5 \
    -p -E -R -C --jsonfile "$work/testssl.json" "$addr" >"$work/testssl.txt" 2>&1 || true

python3 - "$work/testssl.json" <<'PY'
import json
import sys

findings = {}
ciphers = []
for item in json.load(open(sys.argv[1])):
    if item["id"].startswith("cipher-"):
        ciphers.append(item["finding"])
    else:
        findings[item["id"]] = item["finding"]

failures = []

def expect(check_id, accepted, what):
    finding = findings.get(check_id)
    if finding is None:
        failures.append(f"{check_id}: testssl reported no result ({what})")
    elif not any(finding.startswith(prefix) for prefix in accepted):
        failures.append(f"{check_id}: {finding!r}, expected {what}")

for protocol in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]:
    expect(protocol, ["not offered"], "not offered")
expect("TLS1_2", ["offered"], "offered")
expect("TLS1_3", ["offered"], "offered")
expect("CRIME_TLS", ["not vulnerable"], "no TLS compression")
expect("secure_renego", ["supported"], "RFC 5746 secure renegotiation or none at all")
expect("secure_client_renego", ["not vulnerable"], "no client-initiated renegotiation")

aead = ("GCM", "CCM", "CHACHA20", "POLY1305")
if not ciphers:
    failures.append("testssl listed no cipher suites")
for finding in ciphers:
    if not any(marker in finding.upper() for marker in aead):
        failures.append(f"non-AEAD cipher suite offered: {finding}")

for check_id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3", "CRIME_TLS",
                 "secure_renego", "secure_client_renego"]:
    print(f"{check_id:22} {findings.get(check_id, 'no result')}")
print(f"cipher suites offered: {len(ciphers)}")
for finding in ciphers:
    print(f"  {' '.join(finding.split())}")

if failures:
    print("TLS check failed:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    sys.exit(1)
print("TLS check passed")
PY
