// Bytes, hex, base64url (RFC 4648 section 5) and u64 values, with no DOM and no network access.

const U64_LIMIT = 1n << 64n;

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const BASE64URL_VALUES = new Map([...BASE64URL].map((char, index) => [char, index]));

/** Encodes bytes as unpadded base64url (RFC 4648 section 5). */
export function encodeBase64url(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const chunk = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = Math.min(4, Math.ceil(((bytes.length - i) * 8) / 6));
    for (let j = 0; j < chars; j += 1) {
      out += BASE64URL[(chunk >> (18 - 6 * j)) & 63];
    }
  }
  return out;
}

/**
 * Decodes base64url with or without `=` padding, as the Rust `decode_base64url` does: `%3D` counts
 * as `=`, padded text needs exactly the canonical padding, unused trailing bits must be zero, and
 * the standard alphabet's `+` and `/` are rejected. Returns null for invalid text.
 */
export function decodeBase64url(text) {
  const normalized = text.replace(/%3d/gi, '=');
  if (!normalized.includes('=')) {
    return decodeUnpadded(normalized);
  }
  const body = normalized.replace(/={1,2}$/, '');
  const canonical = normalized.length % 4 === 0 && body.length % 4 >= 2 && !body.includes('=');
  return canonical ? decodeUnpadded(body) : null;
}

function decodeUnpadded(text) {
  if (text.length % 4 === 1) {
    return null;
  }
  const out = new Uint8Array(Math.floor((text.length * 6) / 8));
  let buffer = 0;
  let bits = 0;
  let written = 0;
  for (const char of text) {
    const value = BASE64URL_VALUES.get(char);
    if (value === undefined) {
      return null;
    }
    buffer = ((buffer << 6) | value) & 0xfff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[written] = (buffer >> bits) & 0xff;
      written += 1;
    }
  }
  const trailing = buffer & ((1 << bits) - 1);
  return trailing === 0 ? out : null;
}

/** Encodes bytes as lowercase hex, the form of session and stream ids. */
export function bytesToHex(bytes) {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** Decodes hex of any case. Returns null for invalid text or an odd number of digits. */
export function hexToBytes(text) {
  if (typeof text !== 'string' || text.length % 2 !== 0 || /[^0-9a-fA-F]/.test(text)) {
    return null;
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i += 1) {
    out[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

/** Parses a 16-byte session or stream id written as 32 hex digits. Returns null otherwise. */
export function parseId(text) {
  const bytes = hexToBytes(text);
  return bytes !== null && bytes.length === 16 ? bytes : null;
}

/** Compares two byte arrays without an early exit, for values derived from keys. */
export function bytesEqual(a, b) {
  if (a.length !== b.length) {
    return false;
  }
  let difference = 0;
  for (let i = 0; i < a.length; i += 1) {
    difference |= a[i] ^ b[i];
  }
  return difference === 0;
}

/** Concatenates byte arrays into a new one. */
export function concatBytes(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Converts a parsed JSON integer to a BigInt in the u64 range, or returns null. */
export function toU64(value) {
  return typeof value === 'bigint' && value >= 0n && value < U64_LIMIT ? value : null;
}
