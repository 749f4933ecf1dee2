// Test-only frame sealing with WebCrypto, written from docs/protocol.md section 6 so that the
// tests can build frames the page has never seen. vectors.test.mjs checks that it reproduces
// the document's frames byte for byte. The page itself never seals.

import { encodeStatement } from '../authorship.js';
import { encodeBase64url } from '../bytes.js';

const encoder = new TextEncoder();
const HEADER_LEN = 88;

async function deriveSealingKey(sessionKeyBytes, sessionId, streamId) {
  const base = await crypto.subtle.importKey('raw', sessionKeyBytes, 'HKDF', false, ['deriveKey']);
  const info = new Uint8Array([...encoder.encode('sealcast v1 stream key'), ...streamId]);
  const params = { name: 'HKDF', hash: 'SHA-256', salt: sessionId, info };
  return crypto.subtle.deriveKey(params, base, { name: 'AES-GCM', length: 256 }, false, [
    'encrypt',
  ]);
}

function bucketFor(length) {
  for (let bucket = 0; bucket <= 8; bucket += 1) {
    if (length + 4 <= 256 << bucket) {
      return bucket;
    }
  }
  throw new Error(`content of ${length} bytes does not fit any bucket`);
}

function encodeHeader({ kind, bucket, keyEpoch, sessionId, streamId, seq, finalCount, prevHash }) {
  const header = new Uint8Array(HEADER_LEN);
  const view = new DataView(header.buffer);
  header.set([1, kind, bucket, 0]);
  view.setUint32(4, keyEpoch);
  header.set(sessionId, 8);
  header.set(streamId, 24);
  view.setBigUint64(40, seq);
  view.setBigUint64(48, finalCount);
  header.set(prevHash, 56);
  return header;
}

/** Serializes a segment in the field order and form the Rust crate writes. */
export function segmentJson({ segmentId, revision, speaker, startMs, endMs, text, final }) {
  const fields = [
    `"segment_id":${segmentId}`,
    `"revision":${revision}`,
    `"speaker":${JSON.stringify(speaker)}`,
    `"start_ms":${startMs}`,
    `"end_ms":${endMs}`,
    `"text":${JSON.stringify(text)}`,
    `"final":${final}`,
  ];
  return `{${fields.join(',')}}`;
}

/**
 * Imports a 32-byte Ed25519 secret for signing. WebCrypto imports private keys as JWK or
 * PKCS #8 only, and the JWK needs the public key too.
 */
export async function importSigningKey(secret, publicKey) {
  const jwk = {
    kty: 'OKP',
    crv: 'Ed25519',
    d: encodeBase64url(secret),
    x: encodeBase64url(publicKey),
  };
  return crypto.subtle.importKey('jwk', jwk, { name: 'Ed25519' }, false, ['sign']);
}

/** Makes a random Ed25519 key pair: `{ signingKey, publicKey }` with the public key's bytes. */
export async function generateSigningKey() {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const publicKey = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  return { signingKey: pair.privateKey, publicKey };
}

/**
 * Seals the frames of one stream, keeping sequence number, final count and hash chain, and the
 * hashes of the frames since the last signature for signed checkpoints and ends.
 */
export class TestStream {
  #key;
  #sessionId;
  #streamId;
  #seq = 0n;
  #finalCount = 0n;
  #prevHash = new Uint8Array(32);
  #firstUnsigned = 0n;
  #unsignedHashes = [];
  #keyEpoch = 0;

  /**
   * Starts a stream. `firstPrevHash` replaces the zero hash of frame 0, to build a frame that
   * a correct sender never seals. `keyEpoch` is the key epoch of `sessionKeyBytes`.
   */
  static async create(
    sessionKeyBytes,
    sessionId,
    streamId,
    firstPrevHash = new Uint8Array(32),
    keyEpoch = 0,
  ) {
    const stream = new TestStream();
    stream.#keyEpoch = keyEpoch;
    stream.#key = await deriveSealingKey(sessionKeyBytes, sessionId, streamId);
    stream.#sessionId = sessionId;
    stream.#streamId = streamId;
    stream.#prevHash = firstPrevHash;
    return stream;
  }

  /** Seals a segment object (camelCase fields) as an interim or final frame. */
  sealSegment(segment) {
    return this.seal(segment.final ? 2 : 1, segmentJson(segment));
  }

  /** Seals the end-of-session frame. */
  sealEnd(finalSegments) {
    return this.seal(3, `{"final_segments":${finalSegments}}`);
  }

  /** The sequence number the next frame gets. */
  get nextSeq() {
    return this.#seq;
  }

  /**
   * Seals a signed checkpoint (kind 4) or end (kind 3, with `finalSegments`) that lists every
   * frame since the last signature. `change(content, statement)` may alter the content object
   * or the statement before signing, to build checkpoints a correct publisher never seals.
   */
  async sealSigned(signingKey, { kind = 4, streamEnd = false, finalSegments, change } = {}) {
    const content = {};
    if (kind === 3) {
      content.final_segments = finalSegments;
    }
    content.first_seq = this.#firstUnsigned;
    content.frames = encodeBase64url(concat(this.#unsignedHashes));
    content.stream_end = kind === 3 || streamEnd;
    const statement = {
      header: {
        sessionId: this.#sessionId,
        streamId: this.#streamId,
        keyEpoch: this.#keyEpoch,
        seq: this.#seq,
        kind,
        finalCount: this.#finalCount + (kind === 3 ? 1n : 0n),
        prevHash: this.#prevHash,
      },
      firstSeq: this.#firstUnsigned,
      closesStream: content.stream_end,
      frameHashes: [...this.#unsignedHashes],
    };
    change?.(content, statement);
    const message = await encodeStatement(statement);
    const signature = new Uint8Array(await crypto.subtle.sign('Ed25519', signingKey, message));
    content.signature ??= encodeBase64url(signature);
    const fields = Object.entries(content).map(
      ([name, value]) => `${JSON.stringify(name)}:${JSON.stringify(value, bigintAsNumber)}`,
    );
    const frame = await this.seal(kind, `{${fields.join(',')}}`);
    this.#firstUnsigned = this.#seq;
    this.#unsignedHashes = [];
    return frame;
  }

  /** Seals content text with a frame kind byte. */
  async seal(kind, contentText) {
    const content = encoder.encode(contentText);
    const bucket = bucketFor(content.length);
    const finalCount = this.#finalCount + (kind === 2 || kind === 3 ? 1n : 0n);
    const header = encodeHeader({
      kind,
      bucket,
      keyEpoch: this.#keyEpoch,
      sessionId: this.#sessionId,
      streamId: this.#streamId,
      seq: this.#seq,
      finalCount,
      prevHash: this.#prevHash,
    });
    const padded = new Uint8Array(256 << bucket);
    new DataView(padded.buffer).setUint32(0, content.length);
    padded.set(content, 4);

    const iv = new Uint8Array(12);
    new DataView(iv.buffer).setBigUint64(4, this.#seq);
    const params = { name: 'AES-GCM', iv, additionalData: header, tagLength: 128 };
    const sealed = new Uint8Array(await crypto.subtle.encrypt(params, this.#key, padded));
    const frame = new Uint8Array([...header, ...sealed]);

    this.#seq += 1n;
    this.#finalCount = finalCount;
    this.#prevHash = new Uint8Array(await crypto.subtle.digest('SHA-256', frame));
    this.#unsignedHashes.push(this.#prevHash);
    return frame;
  }
}

function concat(arrays) {
  const out = new Uint8Array(arrays.reduce((sum, array) => sum + array.length, 0));
  let offset = 0;
  for (const array of arrays) {
    out.set(array, offset);
    offset += array.length;
  }
  return out;
}

// JSON.stringify cannot write BigInt, and sequence numbers in these tests fit a Number.
function bigintAsNumber(_name, value) {
  return typeof value === 'bigint' ? Number(value) : value;
}
