// Stream authorship for the browser, mirroring the Rust `AuthorshipVerifier`
// (protocol/src/authorship/verifier.rs) and docs/protocol.md section 13.
//
// The publishing device seals a checkpoint frame (kind 4) every few frames, and signs the end
// frame (kind 3), with its Ed25519 identity key. Each signature lists the frame hash of every
// frame since the previous signature, so frames the relay skipped for a slow follower do not
// stop the others from being checked. The page learns the public key from the invite link,
// never from the relay, and checks signatures with WebCrypto. A clinician's second device signs
// with its own key, and its checkpoints carry the first device's endorsement of that key
// (section 13.6), which the page checks under the key from the link.

import { bytesEqual, bytesToHex, concatBytes, decodeBase64url, toU64 } from './bytes.js';
import { hasSmallOrder, isValidPublicKey } from './ed25519.js';
import { parseJson } from './json.js';
import { FrameKind, frameHash } from './protocol.js';

/** The label that starts every signed statement. */
export const CHECKPOINT_LABEL = 'sealcast v1 checkpoint';

/** The label that starts every endorsement statement. */
export const ENDORSEMENT_LABEL = 'sealcast v1 device endorsement';

const LABEL_BYTES = new TextEncoder().encode(CHECKPOINT_LABEL);
const ENDORSEMENT_LABEL_BYTES = new TextEncoder().encode(ENDORSEMENT_LABEL);
const KEY_LEN = 32;
const ENDORSEMENT_FIELDS = ['device', 'key_epoch', 'signature'];
const HASH_LEN = 32;
const SIGNATURE_LEN = 64;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A checkpoint or end frame whose signature cannot be accepted, or a publisher key that is not
 * a valid Ed25519 key. `kind` is `malformed_checkpoint`, `bad_signature`,
 * `invalid_publisher_key`, `invalid_endorsement` or `signer_changed`, the Rust variants in snake
 * case.
 */
export class AuthorshipError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'AuthorshipError';
    this.kind = kind;
  }
}

/**
 * Imports the 32 bytes of a publisher key for `verify`. Rejects keys that are not canonical
 * curve points or have small order, like `PublisherKey::from_bytes`.
 */
export async function importPublisherKey(bytes) {
  if (!isValidPublicKey(bytes)) {
    throw new AuthorshipError(
      'invalid_publisher_key',
      'publisher key is not a valid Ed25519 public key',
    );
  }
  return globalThis.crypto.subtle.importKey('raw', bytes, { name: 'Ed25519' }, false, ['verify']);
}

/**
 * Parses the signed content of an opened checkpoint or end frame (section 13.3). Returns
 * `{ statement, signature, endorsement }`, where the statement has the frame's `header`,
 * `firstSeq`, `closesStream` and the listed `frameHashes`, and the endorsement is null or
 * `{ device, keyEpoch, signature }` (section 13.6). Throws an AuthorshipError of kind
 * `malformed_checkpoint` or `invalid_endorsement`.
 */
export function parseSignedContent(opened) {
  const malformed = (reason) =>
    new AuthorshipError('malformed_checkpoint', `checkpoint content is malformed: ${reason}`);
  let content;
  try {
    content = parseJson(utf8.decode(opened.content));
  } catch {
    throw malformed('not a signed content object');
  }

  const firstSeq = toU64(content?.first_seq);
  const streamEnd = content?.stream_end ?? false;
  const frameBytes = readBase64url(content?.frames);
  const signature = readBase64url(content?.signature);
  if (firstSeq === null || typeof streamEnd !== 'boolean') {
    throw malformed('not a signed content object');
  }
  if (content.final_segments !== undefined && toU64(content.final_segments) === null) {
    throw malformed('not a signed content object');
  }
  if (frameBytes === null) {
    throw malformed('frames is not base64url');
  }
  const seq = opened.header.seq;
  if (firstSeq > seq || BigInt(frameBytes.length) !== (seq - firstSeq) * BigInt(HASH_LEN)) {
    throw malformed('frames does not list one hash per frame since first_seq');
  }
  if (signature === null || signature.length !== SIGNATURE_LEN) {
    throw malformed('signature is not 64 bytes of base64url');
  }

  const frameHashes = [];
  for (let offset = 0; offset < frameBytes.length; offset += HASH_LEN) {
    frameHashes.push(frameBytes.subarray(offset, offset + HASH_LEN));
  }
  const statement = {
    header: opened.header,
    firstSeq,
    closesStream: streamEnd || opened.header.kind === FrameKind.END_OF_SESSION,
    frameHashes,
  };
  const endorsement =
    content.endorsement === undefined ? null : parseEndorsement(content.endorsement);
  return { statement, signature, endorsement };
}

// Reads the `endorsement` object of a checkpoint or end frame, as `EndorsementContent` does.
function parseEndorsement(value) {
  const invalid = (reason) =>
    new AuthorshipError('invalid_endorsement', `device endorsement is invalid: ${reason}`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new AuthorshipError(
      'malformed_checkpoint',
      'checkpoint content is malformed: not a signed content object',
    );
  }
  if (Object.keys(value).some((name) => !ENDORSEMENT_FIELDS.includes(name))) {
    throw new AuthorshipError(
      'malformed_checkpoint',
      'checkpoint content is malformed: not a signed content object',
    );
  }
  // parseJson returns integer literals as BigInt.
  const keyEpoch = toU64(value.key_epoch);
  if (keyEpoch === null || keyEpoch > 0xffffffffn) {
    throw new AuthorshipError(
      'malformed_checkpoint',
      'checkpoint content is malformed: not a signed content object',
    );
  }
  const device = readBase64url(value.device);
  if (device === null || device.length !== KEY_LEN) {
    throw invalid('device is not 32 bytes of base64url');
  }
  const signature = readBase64url(value.signature);
  if (signature === null || signature.length !== SIGNATURE_LEN) {
    throw invalid('signature is not 64 bytes of base64url');
  }
  return { device, keyEpoch: Number(keyEpoch), signature };
}

/**
 * Encodes the bytes an endorsement signs (section 13.6): the label, session id, u32 key epoch
 * and the endorsed device's 32-byte key.
 */
export function encodeEndorsement(sessionId, keyEpoch, device) {
  const epoch = new Uint8Array(4);
  new DataView(epoch.buffer).setUint32(0, keyEpoch);
  return concatBytes(ENDORSEMENT_LABEL_BYTES, sessionId, epoch, device);
}

// The signed fields are unpadded base64url, as the Rust crate's `URL_SAFE_NO_PAD` reads them.
function readBase64url(value) {
  if (typeof value !== 'string' || value.includes('=') || value.includes('%')) {
    return null;
  }
  return decodeBase64url(value);
}

/**
 * Encodes the bytes that are signed (section 13.2). They are the label, session id, stream id,
 * u32 key epoch, u64 seq, u8 kind, u64 final count and prev hash of the frame, then the u64
 * first seq, a u8 closes-stream flag and SHA-256 of the listed frame hashes, all big-endian.
 */
export async function encodeStatement(statement) {
  const { header } = statement;
  const listed = concatBytes(...statement.frameHashes);
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', listed));
  const fixed = new Uint8Array(4 + 8 + 1 + 8);
  const view = new DataView(fixed.buffer);
  view.setUint32(0, header.keyEpoch);
  view.setBigUint64(4, header.seq);
  view.setUint8(12, header.kind);
  view.setBigUint64(13, header.finalCount);
  const tail = new Uint8Array(8 + 1);
  new DataView(tail.buffer).setBigUint64(0, statement.firstSeq);
  tail[8] = statement.closesStream ? 1 : 0;
  return concatBytes(
    LABEL_BYTES,
    header.sessionId,
    header.streamId,
    fixed,
    header.prevHash,
    tail,
    digest,
  );
}

/**
 * Checks the authorship and completeness of the streams the page opens (section 13.4). Feed it
 * every frame right after `StreamOpener.open` accepted it, one at a time in that order.
 */
export class AuthorshipVerifier {
  #publisher;
  #streams = new Map();

  /** @param {CryptoKey|null} publisher the key from `importPublisherKey`, or null without one. */
  constructor(publisher) {
    this.#publisher = publisher;
  }

  /** Whether the link carried a publisher key, without which nothing can be checked. */
  get checkable() {
    return this.#publisher !== null;
  }

  /**
   * Records an opened frame and checks its signature when it carries one. Resolves to
   * `{ result }`: `not_checkable`, `pending` (waits for a later signature), `signed` with
   * `firstSeq` and `seq`, or `rejected` with the AuthorshipError in `error`.
   */
  async observe(frame, opened) {
    if (this.#publisher === null) {
      return { result: 'not_checkable' };
    }
    const { header } = opened;
    const hash = await frameHash(frame);
    let track = this.#streams.get(header.streamIdHex);
    if (track === undefined) {
      track = new StreamTrack();
      this.#streams.set(header.streamIdHex, track);
    }
    track.record(header.seq, hash, opened);

    if (header.kind !== FrameKind.CHECKPOINT && header.kind !== FrameKind.END_OF_SESSION) {
      return { result: 'pending' };
    }
    track.lastSignatureSeq = header.seq;
    try {
      const statement = await this.#checkSignature(opened, track);
      track.apply(statement);
      return { result: 'signed', firstSeq: statement.firstSeq, seq: header.seq };
    } catch (error) {
      if (!(error instanceof AuthorshipError)) {
        throw error;
      }
      track.badSignatures.push(header.seq);
      return { result: 'rejected', error };
    }
  }

  async #checkSignature(opened, track) {
    const { statement, signature, endorsement } = parseSignedContent(opened);
    const { signer, signerId } = await this.#signerOf(opened.header, endorsement);
    const message = await encodeStatement(statement);
    if (!(await verifyStrict(signer, signature, message))) {
      throw new AuthorshipError(
        'bad_signature',
        'checkpoint signature does not verify under the publisher key',
      );
    }
    if (track.signerId !== null && track.signerId !== signerId) {
      throw new AuthorshipError(
        'signer_changed',
        'checkpoint is signed by another device than the earlier checkpoints of its stream',
      );
    }
    track.signerId = signerId;
    track.endorsedDevice = endorsement?.device ?? null;
    return statement;
  }

  // Returns the key a signed frame must verify under: the publisher's, or a device key that an
  // endorsement signed by the publisher names for this session and key epoch or a later one.
  async #signerOf(header, endorsement) {
    if (endorsement === null) {
      return { signer: this.#publisher, signerId: 'publisher' };
    }
    const invalid = (reason) =>
      new AuthorshipError('invalid_endorsement', `device endorsement is invalid: ${reason}`);
    if (header.keyEpoch < endorsement.keyEpoch) {
      throw invalid('it is valid only from a later key epoch');
    }
    const message = encodeEndorsement(header.sessionId, endorsement.keyEpoch, endorsement.device);
    if (!(await verifyStrict(this.#publisher, endorsement.signature, message))) {
      throw invalid('its signature does not verify under the publisher key');
    }
    let signer;
    try {
      signer = await importPublisherKey(endorsement.device);
    } catch {
      throw invalid('device is not a valid Ed25519 public key');
    }
    return { signer, signerId: bytesToHex(endorsement.device) };
  }

  /**
   * Returns the verdict for one stream, by its id in hex, or null for a stream never observed:
   * `{ state: 'not_checkable' }`, `{ state: 'complete', endorsedDevice }` or
   * `{ state: 'incomplete', problems }`. `endorsedDevice` is the 32-byte key of the device that
   * signed the stream with the publisher's endorsement, or null when the publisher signed it.
   * Problems are in sequence order, each `{ type, ... }` with BigInt sequence numbers:
   * `unverified` (`first`, `last`), `missing` (`first`, `last`, `finals`), `bad_signature`
   * (`seq`) and `end_not_seen` (`lastOpened`).
   */
  verdict(streamIdHex) {
    if (this.#publisher === null) {
      return { state: 'not_checkable' };
    }
    return this.#streams.get(streamIdHex)?.verdict() ?? null;
  }

  /** Returns `{ streamIdHex, verdict }` for every observed stream, in the order first seen. */
  verdicts() {
    return [...this.#streams.keys()].map((streamIdHex) => ({
      streamIdHex,
      verdict: this.verdict(streamIdHex),
    }));
  }

  /** Whether a valid signature of an endorsed second device verified frames of any stream. */
  get hasEndorsedSigner() {
    return [...this.#streams.values()].some((track) => track.endorsedDevice !== null);
  }

  /** Returns whether a frame of a stream was opened and no valid signature verified it yet. */
  isUnverified(streamIdHex, seq) {
    return this.#streams.get(streamIdHex)?.frames.has(seq) ?? false;
  }

  /**
   * Returns how far one stream is signed while it is live: `lastSignatureSeq` is the newest
   * checkpoint or end frame, valid or not, or null, and `closedAt` the frame whose valid
   * signature closed the stream, or null. Only frames after `lastSignatureSeq` of an open
   * stream can still be covered by a later signature, because each signature lists the frames
   * from the previous checkpoint on.
   */
  progress(streamIdHex) {
    const track = this.#streams.get(streamIdHex);
    return track === undefined
      ? null
      : { lastSignatureSeq: track.lastSignatureSeq, closedAt: track.closedAt };
  }
}

/**
 * The verifier's record of one stream. Records of frames a signature verified are dropped, so
 * memory grows only with unverified frames.
 */
class StreamTrack {
  frames = new Map();
  missing = [];
  badSignatures = [];
  closedAt = null;
  lastSignatureSeq = null;
  lastOpened = 0n;
  // 'publisher', or the endorsed device key in hex, of the first valid signature.
  signerId = null;
  endorsedDevice = null;

  record(seq, hash, opened) {
    this.lastOpened = seq;
    // Skipped ranges without a final frame held only interim revisions or checkpoints, which
    // later frames replace or repeat.
    if (opened.skippedFinal > 0n) {
      this.missing.push({
        type: 'missing',
        first: seq - opened.skippedFrames,
        last: seq - 1n,
        finals: opened.skippedFinal,
      });
    }
    this.frames.set(seq, { hash, verified: false });
  }

  // Marks the frames a valid signature lists whose hash matches. Frames after the closing
  // signature stay unverified, because nothing may follow the end of a stream.
  apply(statement) {
    const seq = statement.header.seq;
    const afterClose = (frameSeq) => this.closedAt !== null && frameSeq > this.closedAt;
    statement.frameHashes.forEach((listed, index) => {
      const listedSeq = statement.firstSeq + BigInt(index);
      const record = this.frames.get(listedSeq);
      if (record !== undefined && !afterClose(listedSeq)) {
        record.verified = bytesEqual(record.hash, listed);
      }
    });
    const own = this.frames.get(seq);
    if (own !== undefined && !afterClose(seq)) {
      own.verified = true;
    }
    if (statement.closesStream && this.closedAt === null) {
      this.closedAt = seq;
    }
    for (const [frameSeq, record] of this.frames) {
      if (record.verified) {
        this.frames.delete(frameSeq);
      }
    }
  }

  verdict() {
    const problems = [...this.missing, ...this.unverifiedRanges()];
    problems.push(...this.badSignatures.map((seq) => ({ type: 'bad_signature', seq })));
    if (this.closedAt === null) {
      problems.push({ type: 'end_not_seen', lastOpened: this.lastOpened });
    }
    if (problems.length === 0) {
      return { state: 'complete', endorsedDevice: this.endorsedDevice };
    }
    // Array sort is stable, so problems that start at the same frame keep the order above.
    problems.sort((a, b) => compareBigInt(problemStart(a), problemStart(b)));
    return { state: 'incomplete', problems };
  }

  // Runs of consecutive opened frames that no signature covers.
  unverifiedRanges() {
    const ranges = [];
    const seqs = [...this.frames.keys()].sort(compareBigInt);
    for (const seq of seqs) {
      const last = ranges.at(-1);
      if (last !== undefined && last.last + 1n === seq) {
        last.last = seq;
      } else {
        ranges.push({ type: 'unverified', first: seq, last: seq });
      }
    }
    return ranges;
  }
}

// WebCrypto rejects S >= L itself, and the small-order R check completes the strict rules.
async function verifyStrict(key, signature, message) {
  return (
    !hasSmallOrder(signature.subarray(0, 32)) &&
    (await globalThis.crypto.subtle.verify('Ed25519', key, signature, message))
  );
}

function problemStart(problem) {
  switch (problem.type) {
    case 'bad_signature':
      return problem.seq;
    case 'end_not_seen':
      return problem.lastOpened + 1n;
    default:
      return problem.first;
  }
}

function compareBigInt(a, b) {
  if (a < b) {
    return -1;
  }
  return a > b ? 1 : 0;
}

/** Describes a verdict in the notation of the section 10.8 vectors, such as `unverified:0-0`. */
export function describeVerdict(verdict) {
  if (verdict.state !== 'incomplete') {
    return verdict.state;
  }
  return verdict.problems.map(describeProblem).join(' ');
}

function describeProblem(problem) {
  switch (problem.type) {
    case 'unverified':
      return `unverified:${problem.first}-${problem.last}`;
    case 'missing':
      return `missing:${problem.first}-${problem.last}/${problem.finals}`;
    case 'bad_signature':
      return `bad_signature:${problem.seq}`;
    default:
      return `end_not_seen:${problem.lastOpened}`;
  }
}

/**
 * Returns what the page shows the patient about authorship, over every stream of the session.
 *
 * While the session is live, the newest frames of an open stream wait for the next signature,
 * which the publishing device seals at least every 16 frames (`CHECKPOINT_INTERVAL` of the Rust
 * crate). Only a stream with more unsigned frames than that counts as unsigned before the end.
 * `timeOf(streamIdHex, seq)` returns the start time in milliseconds of a segment frame, or
 * undefined, and `signedUpToMs` is the start time of the newest signed segment, or null.
 *
 * Returns `{ state }` with state `not_checkable`, `waiting` (nothing signed yet),
 * `signed_so_far` (with `signedUpToMs`), `complete`, or `warning` with `unsigned` (`{ frames,
 * fromMs, toMs }` or null), `missingFinals`, `badSignatures`, `endNotSigned` and
 * `nothingArrived`. `complete` and `signed_so_far` carry `endorsed`, true when a second device
 * of the clinician, endorsed by the device whose key the link carries, signed part of it.
 */
export function summarizeAuthorship(verifier, { ended, timeOf, signedUpToMs }) {
  if (!verifier.checkable) {
    return { state: 'not_checkable' };
  }
  const streams = verifier.verdicts();
  const warning = {
    state: 'warning',
    unsigned: null,
    missingFinals: 0n,
    badSignatures: 0,
    endNotSigned: false,
    nothingArrived: ended && streams.length === 0,
  };
  let problemFound = warning.nothingArrived;
  for (const { streamIdHex, verdict } of streams) {
    if (verdict.state === 'complete') {
      continue;
    }
    const pendingAfter = ended ? null : pendingStart(verifier.progress(streamIdHex));
    for (const problem of verdict.problems) {
      const counts = addProblem(warning, problem, { streamIdHex, pendingAfter, timeOf });
      problemFound = counts || problemFound;
    }
  }
  if (problemFound) {
    return warning;
  }
  const endorsed = verifier.hasEndorsedSigner;
  if (ended) {
    return { state: 'complete', endorsed };
  }
  return signedUpToMs === null
    ? { state: 'waiting' }
    : { state: 'signed_so_far', signedUpToMs, endorsed };
}

/** Frames a publisher seals between two signatures, at most. */
export const CHECKPOINT_INTERVAL = 16n;

// The first sequence number of an open stream's frames that may still wait for a signature,
// or null when the stream is closed and nothing waits.
function pendingStart(progress) {
  if (progress === null || progress.closedAt !== null) {
    return null;
  }
  return progress.lastSignatureSeq === null ? 0n : progress.lastSignatureSeq + 1n;
}

// Adds one problem of a stream to the warning and returns whether it counts now.
function addProblem(warning, problem, { streamIdHex, pendingAfter, timeOf }) {
  switch (problem.type) {
    case 'missing':
      warning.missingFinals += problem.finals;
      return true;
    case 'bad_signature':
      warning.badSignatures += 1;
      return true;
    case 'end_not_seen':
      // A live stream has not ended yet, unless it is overdue for a signature.
      if (pendingAfter === null) {
        warning.endNotSigned = true;
        return true;
      }
      return problem.lastOpened - pendingAfter >= CHECKPOINT_INTERVAL;
    default:
      return addUnsigned(warning, problem, { streamIdHex, pendingAfter, timeOf });
  }
}

function addUnsigned(warning, range, { streamIdHex, pendingAfter, timeOf }) {
  const waiting = pendingAfter !== null && range.first >= pendingAfter;
  if (waiting && range.last - pendingAfter < CHECKPOINT_INTERVAL) {
    return false;
  }
  const unsigned = warning.unsigned ?? { frames: 0n, fromMs: null, toMs: null };
  unsigned.frames += range.last - range.first + 1n;
  for (let seq = range.first; seq <= range.last; seq += 1n) {
    const time = timeOf(streamIdHex, seq);
    if (time !== undefined) {
      unsigned.fromMs = unsigned.fromMs === null ? time : Math.min(unsigned.fromMs, time);
      unsigned.toMs = unsigned.toMs === null ? time : Math.max(unsigned.toMs, time);
    }
  }
  warning.unsigned = unsigned;
  return true;
}
