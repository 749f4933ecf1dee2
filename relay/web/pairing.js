// Pairing without a link, the joining device's cryptography (docs/protocol.md section 12).
//
// The page makes an X25519 key pair, commits to its public key A with SHA-256, and sends A only
// after it received the clinician device's key B. Both devices derive a four-byte pairing code
// from A || B with HKDF, and the clinician device wraps the session key, the session id and its
// publisher key under a key derived from the X25519 shared secret. Everything runs in WebCrypto
// (X25519, SHA-256, HKDF-SHA256 and AES-256-GCM). pairing-relay.js carries the messages.

import { bytesEqual, bytesToHex, concatBytes } from './bytes.js';
import { isValidPublicKey } from './ed25519.js';
import { WORDS } from './words.js';

/** Labels of section 12, as ASCII text. */
export const PAIRING_LABELS = Object.freeze({
  commit: 'sealcast v1 pairing commit',
  code: 'sealcast v1 pairing code',
  wrap: 'sealcast v1 wrap to joiner',
});

/** Length of an X25519 public key and of a commitment, in bytes. */
export const PAIRING_KEY_LEN = 32;
/** Length of a wrapped key: epoch (4), nonce (12), payload (80) and tag (16). */
export const WRAPPED_KEY_LEN = 112;
/** Digits of a pairing id, which the clinician device shows as `0421-8810-3377`. */
export const PAIRING_ID_DIGITS = 12;

const NONCE_LEN = 12;
const EPOCH_LEN = 4;
const SESSION_ID_LEN = 16;
const SESSION_KEY_LEN = 32;
const PUBLISHER_KEY_LEN = 32;

const encoder = new TextEncoder();
const COMMIT_LABEL = encoder.encode(PAIRING_LABELS.commit);
const CODE_LABEL = encoder.encode(PAIRING_LABELS.code);
const WRAP_LABEL = encoder.encode(PAIRING_LABELS.wrap);

/**
 * A pairing step that must stop. `kind` is the Rust `PairingError` variant in snake case:
 * `non_contributory`, `commitment_mismatch`, `invalid_length`, `decrypt` or
 * `invalid_publisher_key`.
 */
export class PairingError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'PairingError';
    this.kind = kind;
  }
}

function subtle() {
  return globalThis.crypto.subtle;
}

/**
 * Parses a typed pairing id: twelve digits, with any spaces and `-` between them. Returns the
 * id as the clinician device shows it, `dddd-dddd-dddd`, or null.
 */
export function parsePairingId(text) {
  const digits = String(text).replace(/[\s-]/g, '');
  if (!new RegExp(`^[0-9]{${PAIRING_ID_DIGITS}}$`).test(digits)) {
    return null;
  }
  return `${digits.slice(0, 4)}-${digits.slice(4, 8)}-${digits.slice(8)}`;
}

/**
 * Makes the page's X25519 key pair for one pairing. The private key is not extractable.
 * Resolves to `{ privateKey, publicKey }`, with the public key as 32 bytes.
 */
export async function generatePairingKeyPair() {
  const pair = await subtle().generateKey({ name: 'X25519' }, false, ['deriveBits']);
  const publicKey = new Uint8Array(await subtle().exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, publicKey };
}

/** Computes the commitment of step 1: SHA-256 of `sealcast v1 pairing commit` then A. */
export async function commitmentOf(joinerPublic) {
  checkKeyLength(joinerPublic, 'joiner public key');
  const digest = await subtle().digest('SHA-256', concatBytes(COMMIT_LABEL, joinerPublic));
  return new Uint8Array(digest);
}

/**
 * Checks that `joinerPublic` is the key `commitment` commits to, as the clinician device does
 * in step 3. Throws a PairingError of kind `commitment_mismatch` otherwise.
 */
export async function checkCommitment(commitment, joinerPublic) {
  const expected = await commitmentOf(joinerPublic);
  if (commitment.length !== expected.length || !bytesEqual(commitment, expected)) {
    throw new PairingError(
      'commitment_mismatch',
      "the joining device's public key does not match its commitment",
    );
  }
}

/**
 * Computes the X25519 shared secret with the peer's public key. Throws a PairingError of kind
 * `invalid_length` for a key that is not 32 bytes, and `non_contributory` for a low-order key,
 * whose shared secret is 32 zero bytes (RFC 7748 section 6.1). WebCrypto in Chromium and
 * Node.js rejects that case itself with an OperationError, which counts the same.
 */
export async function agreeSharedSecret(privateKey, peerPublic) {
  checkKeyLength(peerPublic, 'peer public key');
  const nonContributory = () =>
    new PairingError(
      'non_contributory',
      "the other device's public key is a low-order point: pairing stopped",
    );
  let shared;
  try {
    const peer = await subtle().importKey('raw', peerPublic, { name: 'X25519' }, false, []);
    shared = new Uint8Array(
      await subtle().deriveBits({ name: 'X25519', public: peer }, privateKey, 256),
    );
  } catch (error) {
    if (error?.name === 'OperationError') {
      throw nonContributory();
    }
    throw error;
  }
  if (shared.every((byte) => byte === 0)) {
    throw nonContributory();
  }
  return shared;
}

/**
 * Derives the pairing code of section 12.2: HKDF with no salt over A || B, info
 * `sealcast v1 pairing code`, 4 bytes. Returns `{ bytes, words, digits }`, where `words` are
 * the four words and `digits` the six decimal digits both devices show.
 */
export async function pairingCode(joinerPublic, clinicianPublic) {
  checkKeyLength(joinerPublic, 'joiner public key');
  checkKeyLength(clinicianPublic, 'clinician public key');
  const ikm = concatBytes(joinerPublic, clinicianPublic);
  const bytes = await hkdf(new Uint8Array(0), ikm, CODE_LABEL, 4);
  const value = new DataView(bytes.buffer).getUint32(0);
  return {
    bytes,
    words: Array.from(bytes, (byte) => WORDS[byte]),
    digits: String(value % 1_000_000).padStart(6, '0'),
  };
}

/**
 * Derives the wrap key of key epoch `epoch` (section 12.3): HKDF with salt A || B over the
 * shared secret, info `sealcast v1 wrap to joiner` then u32(epoch), 32 bytes. Returns the raw
 * bytes, for the test vectors; `unwrapSessionKey` keeps it inside WebCrypto.
 */
export function deriveWrapKeyBytes({ shared, joinerPublic, clinicianPublic }, epoch) {
  return hkdf(
    concatBytes(joinerPublic, clinicianPublic),
    shared,
    concatBytes(WRAP_LABEL, u32(epoch)),
    32,
  );
}

/**
 * Opens a wrapped key of section 12.3 with the pairing's shared secret and both public keys.
 * Resolves to `{ epoch, sessionId, sessionIdHex, sessionKey, publisher }` with the session
 * key and the publisher key as bytes. Throws a PairingError of kind `invalid_length`,
 * `decrypt` (any AES-GCM failure) or `invalid_publisher_key`.
 */
export async function unwrapSessionKey(link, wrapped) {
  if (!(wrapped instanceof Uint8Array) || wrapped.length !== WRAPPED_KEY_LEN) {
    const length = wrapped?.length ?? 0;
    throw new PairingError(
      'invalid_length',
      `wrapped key is ${length} bytes, expected ${WRAPPED_KEY_LEN}`,
    );
  }
  const aad = wrapped.subarray(0, EPOCH_LEN);
  const epoch = new DataView(wrapped.buffer, wrapped.byteOffset, EPOCH_LEN).getUint32(0);
  const nonce = wrapped.subarray(EPOCH_LEN, EPOCH_LEN + NONCE_LEN);
  const sealed = wrapped.subarray(EPOCH_LEN + NONCE_LEN);

  const keyBytes = await deriveWrapKeyBytes(link, epoch);
  let payload;
  try {
    const key = await subtle().importKey('raw', keyBytes, 'AES-GCM', false, ['decrypt']);
    payload = new Uint8Array(
      await subtle().decrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad }, key, sealed),
    );
  } catch {
    throw new PairingError(
      'decrypt',
      'wrapped key failed to decrypt: it was altered or wrapped for another device',
    );
  } finally {
    keyBytes.fill(0);
  }

  const sessionId = payload.slice(0, SESSION_ID_LEN);
  const sessionKey = payload.slice(SESSION_ID_LEN, SESSION_ID_LEN + SESSION_KEY_LEN);
  const publisher = payload.slice(SESSION_ID_LEN + SESSION_KEY_LEN);
  payload.fill(0);
  if (publisher.length !== PUBLISHER_KEY_LEN || !isValidPublicKey(publisher)) {
    sessionKey.fill(0);
    throw new PairingError(
      'invalid_publisher_key',
      'wrapped payload contains an invalid publisher key',
    );
  }
  return { epoch, sessionId, sessionIdHex: bytesToHex(sessionId), sessionKey, publisher };
}

async function hkdf(salt, ikm, info, length) {
  const base = await subtle().importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  const params = { name: 'HKDF', hash: 'SHA-256', salt, info };
  return new Uint8Array(await subtle().deriveBits(params, base, length * 8));
}

function u32(value) {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, value);
  return bytes;
}

function checkKeyLength(key, name) {
  if (!(key instanceof Uint8Array) || key.length !== PAIRING_KEY_LEN) {
    throw new PairingError(
      'invalid_length',
      `${name} is ${key?.length ?? 0} bytes, expected ${PAIRING_KEY_LEN}`,
    );
  }
}
