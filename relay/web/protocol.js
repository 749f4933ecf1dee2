// The sealcast version 1 wire format for the browser, mirroring the Rust crate in protocol/src/.
//
// This module has pure functions with no DOM and no network access. They cover the invite link
// fragment, the 88-byte frame header, HKDF-SHA256 derivations (RFC 5869), AES-256-GCM opening
// (NIST SP 800-38D) and padding. They also cover the segment JSON, fingerprint words, the
// invite proof (HMAC-SHA256, RFC 2104) and follow-socket deliveries. bytes.js has the base64url and hex helpers, which this module
// re-exports, and opener.js keeps the per-stream receiver state on top of both. Cryptography
// uses WebCrypto (globalThis.crypto.subtle), which browsers expose only in secure contexts.
// docs/protocol.md in the repository is the normative description.

import { bytesToHex, concatBytes, decodeBase64url, encodeBase64url, toU64 } from './bytes.js';
import { isValidPublicKey } from './ed25519.js';
import { parseJson } from './json.js';
import { WORDS } from './words.js';

// Byte helpers the page and the tests use together with the wire format.
export {
  bytesEqual,
  bytesToHex,
  decodeBase64url,
  encodeBase64url,
  hexToBytes,
  parseId,
  toU64,
} from './bytes.js';

/** The protocol version this code decodes. */
export const PROTOCOL_VERSION = 1;
/** Encoded length of a frame header in bytes. */
export const HEADER_LEN = 88;
/** Length of the AES-GCM authentication tag at the end of every frame. */
export const TAG_LEN = 16;
/** Length of the session key in bytes. */
export const KEY_LEN = 32;
/** Length of an invite token in bytes. */
export const TOKEN_LEN = 32;
/** Length of a key fingerprint in bytes. */
export const FINGERPRINT_LEN = 16;
/** Largest padding bucket: the padded plaintext of bucket b is `256 << b` bytes. */
export const MAX_BUCKET = 8;

/** Frame kind bytes. */
export const FrameKind = Object.freeze({ INTERIM: 1, FINAL: 2, END_OF_SESSION: 3, CHECKPOINT: 4 });

/** HKDF info and HMAC labels, one per purpose, as ASCII text. */
export const LABELS = Object.freeze({
  streamKey: 'sealcast v1 stream key',
  fingerprint: 'sealcast v1 fingerprint',
  inviteAuth: 'sealcast v1 invite auth',
  inviteProof: 'sealcast v1 invite proof',
});

const encoder = new TextEncoder();
const STREAM_KEY_LABEL = encoder.encode(LABELS.streamKey);
const FINGERPRINT_LABEL = encoder.encode(LABELS.fingerprint);
const INVITE_AUTH_LABEL = encoder.encode(LABELS.inviteAuth);
const INVITE_PROOF_LABEL = encoder.encode(LABELS.inviteProof);
const U32_LIMIT = 1n << 32n;

/** A frame or plaintext that cannot be decoded or opened. `kind` names the Rust variant. */
export class ProtocolError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'ProtocolError';
    this.kind = kind;
  }
}

/**
 * An invite link that cannot be used. `kind` names the Rust variant in snake case, and
 * `decodedLength` is the secret's length for `invalid_secret_length`.
 */
export class InviteError extends Error {
  constructor(kind, message, decodedLength = null) {
    super(message);
    this.name = 'InviteError';
    this.kind = kind;
    this.decodedLength = decodedLength;
  }
}

// ---------------------------------------------------------------------------------------------
// Invite link

// Escaped fragment markers and the fragment parameter each one starts.
const ESCAPED_MARKERS = [
  { text: '%23publisher=', parameter: 'publisher=' },
  { text: '%23secret=', parameter: 'secret=' },
  { text: '%23Secret=', parameter: 'secret=' },
];
/** Length of an Ed25519 public key in bytes. */
export const PUBLISHER_KEY_LEN = 32;
const WRAPPER_CHARS = /^[<>"']+|[<>"']+$/g;

/**
 * Splits the parts of the page address into the fragment and the address without the key.
 *
 * Mail clients sometimes escape `#` as `%23`, which moves `secret=` into the query and sends
 * it to the server. Like the Rust parser, a `%23publisher=` or `%23secret=` counts as the
 * fragment marker when the address has no real fragment. `cleanUrl` is the address to put in the address bar: path
 * and query, cut before any escaped marker. It only slices strings and cannot throw, so the
 * caller can remove the key from the address bar before any parsing.
 */
export function splitInviteAddress({ pathname, search, hash }) {
  const address = `${pathname}${search}`;
  const marker = findEscapedMarker(address);
  const cleanUrl = marker === null ? address : address.slice(0, marker.index);
  const queryStart = cleanUrl.indexOf('?');
  const cleanSearch = queryStart >= 0 ? cleanUrl.slice(queryStart) : '';

  const fragment = hash.startsWith('#') ? hash.slice(1) : hash;
  if (fragment === '' && marker !== null) {
    const escaped = address.slice(marker.index + marker.text.length);
    const fragment = `${marker.parameter}${escaped}`;
    return { fragment, search: cleanSearch, cleanUrl };
  }
  return { fragment, search: cleanSearch, cleanUrl };
}

// The escaped marker that comes first in the address, or null.
function findEscapedMarker(address) {
  let found = null;
  for (const marker of ESCAPED_MARKERS) {
    const index = address.indexOf(marker.text);
    if (index >= 0 && (found === null || index < found.index)) {
      found = { index, ...marker };
    }
  }
  return found;
}

/**
 * Reads the invite token from the query and the session key from the fragment.
 *
 * Tolerates what mail and chat clients do to links, like the Rust `InviteLink::parse`:
 * whitespace (also percent-encoded), wrapping `<>`, quotes, and padded or unpadded base64url.
 * Returns `{ token, key, publisher }` with the token in normalized unpadded form, the key as 32
 * bytes and the publishing device's public key as 32 bytes, or null when the link has no
 * `publisher=` part. Throws an InviteError whose kind is `missing_token`, `invalid_token`,
 * `missing_secret`, `invalid_secret_encoding`, `invalid_secret_length` or
 * `invalid_publisher_key`.
 */
export function parseInvite({ search, fragment }) {
  const token = parseInviteToken(search);
  const parts = fragment.split('&').map(cleanLinkValue);
  const publisher = parsePublisherKey(parts);
  const secret = parts.find((part) => part.startsWith('secret='))?.slice('secret='.length);
  if (!secret) {
    throw new InviteError('missing_secret', 'invite link has no #secret part');
  }
  const key = decodeBase64url(secret);
  if (key === null) {
    throw new InviteError('invalid_secret_encoding', 'invite link secret is not valid base64url');
  }
  if (key.length !== KEY_LEN) {
    const length = key.length;
    key.fill(0);
    const message = `invite link secret is ${length} bytes, not 32`;
    throw new InviteError('invalid_secret_length', message, length);
  }
  return { token, key, publisher };
}

// The first `publisher=` part of the fragment as 32 bytes, or null when there is none.
function parsePublisherKey(parts) {
  const text = parts.find((part) => part.startsWith('publisher='))?.slice('publisher='.length);
  if (text === undefined) {
    return null;
  }
  const bytes = decodeBase64url(text);
  if (bytes === null || bytes.length !== PUBLISHER_KEY_LEN || !isValidPublicKey(bytes)) {
    throw new InviteError(
      'invalid_publisher_key',
      'invite link publisher key is not a valid Ed25519 public key',
    );
  }
  return bytes;
}

/**
 * Reads the invite token from the query: the first `token=` parameter, cleaned like the secret
 * and normalized to unpadded base64url. Form decoding is skipped on purpose, so that a `+`
 * stays a `+` and is rejected instead of becoming a space that cleaning would remove.
 * Throws an InviteError of kind `missing_token` or `invalid_token`.
 */
export function parseInviteToken(search) {
  const raw = search
    .replace(/^\?/, '')
    .split('&')
    .find((part) => part.startsWith('token='))
    ?.slice('token='.length);
  const cleaned = raw === undefined ? '' : cleanLinkValue(raw);
  if (cleaned === '') {
    throw new InviteError('missing_token', 'invite link has no token= part');
  }
  const bytes = decodeBase64url(cleaned);
  if (bytes === null || bytes.length !== TOKEN_LEN) {
    throw new InviteError('invalid_token', 'invite link token is malformed');
  }
  return encodeBase64url(bytes);
}

// Browsers percent-encode spaces, quotes and angle brackets in the fragment, so decoding comes
// before removing them. Text with a malformed escape stays as it is and fails decoding later.
function cleanLinkValue(text) {
  let decoded = text;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    decoded = text;
  }
  return decoded.replace(/\s+/g, '').replace(WRAPPER_CHARS, '');
}

// ---------------------------------------------------------------------------------------------
// Frame header

/**
 * Decodes the 88-byte header at the start of `bytes`, checking every field that can be checked
 * without the key. Integers are big-endian; `seq` and `finalCount` are BigInt.
 */
export function decodeHeader(bytes) {
  if (bytes.length < HEADER_LEN) {
    throw new ProtocolError(
      'truncated',
      `frame truncated: ${bytes.length} bytes is shorter than the ${HEADER_LEN}-byte minimum`,
    );
  }
  checkHeaderBytes(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_LEN);
  const sessionId = bytes.slice(8, 24);
  const streamId = bytes.slice(24, 40);
  return {
    kind: bytes[1],
    bucket: bytes[2],
    keyEpoch: view.getUint32(4),
    sessionId,
    streamId,
    sessionIdHex: bytesToHex(sessionId),
    streamIdHex: bytesToHex(streamId),
    seq: view.getBigUint64(40),
    finalCount: view.getBigUint64(48),
    prevHash: bytes.slice(56, 88),
  };
}

function checkHeaderBytes(bytes) {
  if (bytes[0] !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      'unsupported_version',
      `unsupported protocol version ${bytes[0]}: this page speaks version 1`,
    );
  }
  if (bytes[1] < FrameKind.INTERIM || bytes[1] > FrameKind.CHECKPOINT) {
    throw new ProtocolError('unknown_kind', `unknown frame kind ${bytes[1]}: expected 1 to 4`);
  }
  if (bytes[2] > MAX_BUCKET) {
    throw new ProtocolError('invalid_bucket', `invalid padding bucket ${bytes[2]}: maximum is 8`);
  }
  if (bytes[3] !== 0) {
    throw new ProtocolError('reserved_flags', `reserved flags ${bytes[3]} are set`);
  }
}

/** Size in bytes of the padded plaintext for a bucket. */
export function paddedLength(bucket) {
  return 256 << Math.min(bucket, MAX_BUCKET);
}

/** Decodes the header of a whole frame and checks the frame length the header declares. */
export function decodeFrameHeader(frame) {
  const header = decodeHeader(frame);
  const expected = HEADER_LEN + paddedLength(header.bucket) + TAG_LEN;
  if (frame.length !== expected) {
    throw new ProtocolError(
      'length_mismatch',
      `frame length ${frame.length} does not match the ${expected} bytes its header declares`,
    );
  }
  return header;
}

/** Returns whether a frame of this kind counts towards the stream's final count. */
export function countsAsFinal(kind) {
  return kind === FrameKind.FINAL || kind === FrameKind.END_OF_SESSION;
}

// ---------------------------------------------------------------------------------------------
// Keys (HKDF-SHA256, RFC 5869)

function subtle() {
  const api = globalThis.crypto?.subtle;
  if (!api) {
    throw new Error('WebCrypto is unavailable: the page must be served over https');
  }
  return api;
}

/** Returns whether this context has WebCrypto, which browsers offer only to secure contexts. */
export function hasWebCrypto() {
  return Boolean(globalThis.crypto?.subtle);
}

/** Imports the 32 session key bytes as a non-extractable HKDF base key. */
export function importSessionKey(keyBytes) {
  return subtle().importKey('raw', keyBytes, 'HKDF', false, ['deriveBits', 'deriveKey']);
}

function hkdfParams(salt, info) {
  return { name: 'HKDF', hash: 'SHA-256', salt, info };
}

/**
 * Derives the AES-256-GCM key of one stream: salt is the session id, info is the label
 * `sealcast v1 stream key` followed by the stream id. The key is non-extractable unless a
 * test requests otherwise.
 */
export function deriveStreamKey(sessionKey, sessionId, streamId, extractable = false) {
  const info = concatBytes(STREAM_KEY_LABEL, streamId);
  const algorithm = { name: 'AES-GCM', length: 256 };
  return subtle().deriveKey(hkdfParams(sessionId, info), sessionKey, algorithm, extractable, [
    'decrypt',
  ]);
}

/** Derives the 16-byte fingerprint: no salt, info `sealcast v1 fingerprint`. */
export async function deriveFingerprint(sessionKey) {
  const params = hkdfParams(new Uint8Array(0), FINGERPRINT_LABEL);
  return new Uint8Array(await subtle().deriveBits(params, sessionKey, FINGERPRINT_LEN * 8));
}

/**
 * Derives the invite authentication key as an HMAC-SHA256 key: no salt, info
 * `sealcast v1 invite auth`.
 */
export function deriveInviteAuthKey(sessionKey, extractable = false) {
  const params = hkdfParams(new Uint8Array(0), INVITE_AUTH_LABEL);
  const algorithm = { name: 'HMAC', hash: 'SHA-256', length: 256 };
  return subtle().deriveKey(params, sessionKey, algorithm, extractable, ['sign']);
}

/** Computes the invite proof: HMAC-SHA256 over `sealcast v1 invite proof` then the challenge. */
export async function computeInviteProof(inviteAuthKey, challenge) {
  const message = concatBytes(INVITE_PROOF_LABEL, challenge);
  return new Uint8Array(await subtle().sign('HMAC', inviteAuthKey, message));
}

/** Returns the four words at indexes `fingerprint[0..4]` of the fixed word list. */
export function fingerprintWords(fingerprint) {
  return Array.from(fingerprint.subarray(0, 4), (byte) => WORDS[byte]);
}

/** Decodes a fingerprint in its API form, unpadded base64url. Returns null if not 16 bytes. */
export function parseFingerprint(text) {
  const bytes = typeof text === 'string' ? decodeBase64url(text.replace(/=+$/, '')) : null;
  return bytes !== null && bytes.length === FINGERPRINT_LEN ? bytes : null;
}

// ---------------------------------------------------------------------------------------------
// Frames (AES-256-GCM, NIST SP 800-38D)

/** Builds the 96-bit nonce for a sequence number: four zero bytes, then the u64 big-endian. */
export function nonceForSeq(seq) {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(seq));
  return nonce;
}

/** SHA-256 of a whole frame, the `prev_hash` the next frame of its stream carries. */
export async function frameHash(frame) {
  return new Uint8Array(await subtle().digest('SHA-256', frame));
}

/**
 * Authenticates and decrypts a frame whose header was decoded, with the whole header as the
 * associated data. Every failure is the one `decrypt` error, so a failure reveals nothing.
 */
export async function decryptFrame(streamKey, frame, header) {
  const params = {
    name: 'AES-GCM',
    iv: nonceForSeq(header.seq),
    additionalData: frame.subarray(0, HEADER_LEN),
    tagLength: TAG_LEN * 8,
  };
  try {
    return new Uint8Array(await subtle().decrypt(params, streamKey, frame.subarray(HEADER_LEN)));
  } catch {
    throw new ProtocolError(
      'decrypt',
      'frame failed to decrypt: altered or sealed under another key',
    );
  }
}

/** Strips the padding: a u32 big-endian length, the content, then zero bytes only. */
export function unpad(padded) {
  if (padded.length < 4) {
    throw new ProtocolError('malformed_plaintext', 'plaintext is shorter than its length prefix');
  }
  const length = new DataView(padded.buffer, padded.byteOffset, 4).getUint32(0);
  const body = padded.subarray(4);
  if (length > body.length) {
    throw new ProtocolError(
      'malformed_plaintext',
      `length prefix ${length} exceeds the ${body.length} bytes present`,
    );
  }
  if (body.subarray(length).some((byte) => byte !== 0)) {
    throw new ProtocolError('malformed_plaintext', 'padding is not all zero');
  }
  return body.subarray(0, length);
}

// ---------------------------------------------------------------------------------------------
// Plaintext content

const utf8 = new TextDecoder('utf-8', { fatal: true });

function parseContentJson(content, what) {
  try {
    return parseJson(utf8.decode(content));
  } catch {
    throw new ProtocolError('malformed_plaintext', `${what} is not valid UTF-8 JSON`);
  }
}

function requireField(object, name, check, what) {
  const value = object !== null && typeof object === 'object' ? object[name] : undefined;
  if (!check(value)) {
    throw new ProtocolError('malformed_plaintext', `${what} field ${name} is missing or invalid`);
  }
  return value;
}

const isU64 = (value) => toU64(value) !== null;
const isU32 = (value) => isU64(value) && value < U32_LIMIT;
const isString = (value) => typeof value === 'string';
const isBoolean = (value) => typeof value === 'boolean';

/**
 * Parses a transcript segment from frame content. Returns `{ segmentId (BigInt), revision,
 * speaker, startMs, endMs, text, final }` with the numbers as Number, ignoring unknown fields.
 */
export function parseSegment(content) {
  const object = parseContentJson(content, 'segment');
  const field = (name, check) => requireField(object, name, check, 'segment');
  return {
    segmentId: field('segment_id', isU64),
    revision: Number(field('revision', isU32)),
    speaker: field('speaker', isString),
    startMs: Number(field('start_ms', isU64)),
    endMs: Number(field('end_ms', isU64)),
    text: field('text', isString),
    final: field('final', isBoolean),
  };
}

/** Parses the content of an end-of-session frame: `{ finalSegments (BigInt) }`. */
export function parseEndOfSession(content) {
  const object = parseContentJson(content, 'end frame');
  return { finalSegments: requireField(object, 'final_segments', isU64, 'end frame') };
}

/**
 * Splits a binary follow-socket message into its 8-byte big-endian session offset and the
 * frame. Returns null when the message is shorter than the offset.
 */
export function decodeDelivery(message) {
  const bytes = message instanceof Uint8Array ? message : new Uint8Array(message);
  if (bytes.length < 8) {
    return null;
  }
  const offset = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0);
  return { offset, frame: bytes.subarray(8) };
}
