// Test-only frame sealing with WebCrypto, written from docs/protocol.md section 6 so that the
// tests can build frames the page has never seen. vectors.test.mjs checks that it reproduces
// the document's frames byte for byte. The page itself never seals.

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

function encodeHeader({ kind, bucket, sessionId, streamId, seq, finalCount, prevHash }) {
  const header = new Uint8Array(HEADER_LEN);
  const view = new DataView(header.buffer);
  header.set([1, kind, bucket, 0]);
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

/** Seals the frames of one stream, keeping sequence number, final count and hash chain. */
export class TestStream {
  #key;
  #sessionId;
  #streamId;
  #seq = 0n;
  #finalCount = 0n;
  #prevHash = new Uint8Array(32);

  /**
   * Starts a stream. `firstPrevHash` replaces the zero hash of frame 0, to build a frame that
   * a correct sender never seals.
   */
  static async create(sessionKeyBytes, sessionId, streamId, firstPrevHash = new Uint8Array(32)) {
    const stream = new TestStream();
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

  /** Seals content text with a frame kind byte. */
  async seal(kind, contentText) {
    const content = encoder.encode(contentText);
    const bucket = bucketFor(content.length);
    const finalCount = this.#finalCount + (kind === 1 ? 0n : 1n);
    const header = encodeHeader({
      kind,
      bucket,
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
    return frame;
  }
}
