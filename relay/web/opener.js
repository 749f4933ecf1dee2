// Opens the frames of every stream of one session, mirroring the Rust `StreamOpener`: it rejects
// another session's frames, replays and reordering, reports skipped frames and skipped final
// frames, and checks the hash chain where the previous frame was seen. `EpochOpener` opens the
// frames of several key epochs with the grace rule of docs/protocol.md section 14.3.

import {
  ProtocolError,
  countsAsFinal,
  bytesEqual,
  bytesToHex,
  decodeFrameHeader,
  decryptFrame,
  deriveStreamKey,
  frameHash,
  unpad,
} from './protocol.js';

const ZERO_HASH = new Uint8Array(32);

/**
 * Receiver state for one session. `open` calls run one at a time in call order, because each
 * frame's checks depend on the state the previous frame left.
 */
export class StreamOpener {
  #sessionKey;
  #sessionId;
  #streams = new Map();
  #queue = Promise.resolve();

  /**
   * @param {CryptoKey} sessionKey HKDF base key from `importSessionKey`.
   * @param {Uint8Array} sessionId the 16-byte session id.
   */
  constructor(sessionKey, sessionId) {
    this.#sessionKey = sessionKey;
    this.#sessionId = Uint8Array.from(sessionId);
  }

  /** The session id as lowercase hex. */
  get sessionIdHex() {
    return bytesToHex(this.#sessionId);
  }

  /**
   * Returns whether a frame with this header, or a later one of its stream, was already opened. A
   * resuming receiver skips such frames without error.
   */
  alreadySeen(header) {
    const latest = this.#streams.get(header.streamIdHex)?.latestSeq;
    return latest !== undefined && latest !== null && header.seq <= latest;
  }

  /**
   * Opens one frame: checks its header and session, rejects replays and reordering, then
   * decrypts and removes the padding. Resolves to `{ header, content, skippedFrames,
   * skippedFinal, chainVerified }` like the Rust `OpenedFrame`; `chainVerified` is null when the
   * previous frame of the stream was not seen. Rejects with a ProtocolError.
   */
  open(frame) {
    const result = this.#queue.then(() => this.#openNow(frame));
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Drops every derived key, for when the session key is wiped. */
  clear() {
    this.#streams.clear();
    this.#sessionKey = null;
  }

  async #openNow(frame) {
    const header = decodeFrameHeader(frame);
    if (!bytesEqual(header.sessionId, this.#sessionId)) {
      throw new ProtocolError(
        'wrong_session',
        `frame belongs to session ${header.sessionIdHex}, not ${this.sessionIdHex}`,
      );
    }
    const state = await this.#streamState(header);
    checkOrder(state, header);

    const content = unpad(await decryptFrame(state.key, frame, header));
    const link = linkToPrevious(state, header);
    const thisFinal = countsAsFinal(header.kind) ? 1n : 0n;
    const skippedFinal = maxZero(maxZero(header.finalCount - link.priorFinal) - thisFinal);

    // Only a frame that opened changes the state, so a forged frame cannot advance a stream.
    state.latestSeq = header.seq;
    state.latestFinalCount = header.finalCount;
    state.latestHash = await frameHash(frame);
    this.#streams.set(header.streamIdHex, state);
    return {
      header,
      content,
      skippedFrames: link.skippedFrames,
      skippedFinal,
      chainVerified: link.chainVerified,
    };
  }

  // The recorded state of the frame's stream, or a fresh one that `#openNow` records only
  // once a frame of the stream opens.
  async #streamState(header) {
    const state = this.#streams.get(header.streamIdHex);
    if (state !== undefined) {
      return state;
    }
    if (this.#sessionKey === null) {
      throw new ProtocolError('decrypt', 'the session key was wiped');
    }
    const key = await deriveStreamKey(this.#sessionKey, this.#sessionId, header.streamId);
    return { key, latestSeq: null, latestFinalCount: 0n, latestHash: ZERO_HASH };
  }
}

function checkOrder(state, header) {
  const latest = state.latestSeq;
  if (latest !== null && header.seq === latest) {
    throw new ProtocolError(
      'replay',
      `frame ${header.seq} of stream ${header.streamIdHex} was already received (replay)`,
    );
  }
  if (latest !== null && header.seq < latest) {
    throw new ProtocolError(
      'reordered',
      `frame ${header.seq} of stream ${header.streamIdHex} arrived after frame ${latest}`,
    );
  }
}

// Computes how this frame relates to the last opened frame of its stream.
function linkToPrevious(state, header) {
  const latest = state.latestSeq;
  if (latest === null && header.seq === 0n) {
    const chainVerified = bytesEqual(header.prevHash, ZERO_HASH);
    return { skippedFrames: 0n, priorFinal: 0n, chainVerified };
  }
  if (latest === null) {
    return { skippedFrames: header.seq, priorFinal: 0n, chainVerified: null };
  }
  if (latest === header.seq - 1n) {
    const chainVerified = bytesEqual(header.prevHash, state.latestHash);
    return { skippedFrames: 0n, priorFinal: state.latestFinalCount, chainVerified };
  }
  return {
    skippedFrames: header.seq - latest - 1n,
    priorFinal: state.latestFinalCount,
    chainVerified: null,
  };
}

function maxZero(value) {
  return value > 0n ? value : 0n;
}

/** Frames of the newest key epoch after which the epoch before it expires (section 14.3). */
export const GRACE_FRAMES = 64;

/**
 * Opens frames of every key epoch whose key the page has, mirroring the Rust `EpochOpener`.
 * Frames of the newest epoch open. Frames of the epoch before it open until `GRACE_FRAMES`
 * frames of the newest one have opened. Older epochs are rejected (`expired_epoch`) and their
 * keys dropped. A frame of an epoch without a key is rejected with `unknown_epoch`, and a
 * stream whose frames change epoch with `stream_changed_epoch`.
 */
export class EpochOpener {
  #sessionId;
  #openers = new Map();
  #current;
  #openedInCurrent = 0;
  #streamEpochs = new Map();
  #queue = Promise.resolve();

  /**
   * @param {CryptoKey} sessionKey HKDF base key of epoch `keyEpoch`.
   * @param {Uint8Array} sessionId the 16-byte session id.
   * @param {number} keyEpoch the epoch of `sessionKey`.
   */
  constructor(sessionKey, sessionId, keyEpoch = 0) {
    this.#sessionId = Uint8Array.from(sessionId);
    this.#openers.set(keyEpoch, new StreamOpener(sessionKey, this.#sessionId));
    this.#current = keyEpoch;
  }

  /** The newest epoch this receiver opened a frame of, or started with. */
  get currentEpoch() {
    return this.#current;
  }

  /** Returns whether the page has the key of `keyEpoch`. */
  hasKey(keyEpoch) {
    return this.#openers.has(keyEpoch);
  }

  /**
   * Adds the key of another epoch. Throws a ProtocolError `expired_epoch` for a key older than
   * the epoch before the newest, and keeps a key already held.
   */
  addKey(keyEpoch, sessionKey) {
    if (keyEpoch + 1 < this.#current) {
      throw new ProtocolError(
        'expired_epoch',
        `key epoch ${keyEpoch} has expired: this page now accepts epoch ${this.#current}`,
      );
    }
    if (!this.#openers.has(keyEpoch)) {
      this.#openers.set(keyEpoch, new StreamOpener(sessionKey, this.#sessionId));
    }
  }

  /** Returns whether a frame with this header, or a later one of its stream, was already opened. */
  alreadySeen(header) {
    return this.#openers.get(header.keyEpoch)?.alreadySeen(header) ?? false;
  }

  /** Opens one frame with the key its header names, as `StreamOpener.open` does. */
  open(frame) {
    const result = this.#queue.then(() => this.#openNow(frame));
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Drops every key. */
  clear() {
    for (const opener of this.#openers.values()) {
      opener.clear();
    }
    this.#openers.clear();
  }

  async #openNow(frame) {
    const header = decodeFrameHeader(frame);
    const epoch = header.keyEpoch;
    this.#checkEpoch(header);
    const opener = this.#openers.get(epoch);
    if (opener === undefined) {
      throw new ProtocolError(
        'unknown_epoch',
        `no session key for key epoch ${epoch}: wait for the rotated key`,
      );
    }
    const opened = await opener.open(frame);

    this.#streamEpochs.set(header.streamIdHex, epoch);
    if (epoch > this.#current) {
      this.#current = epoch;
      this.#openedInCurrent = 0;
      // Keys older than the previous epoch can never open a frame again.
      for (const [held, old] of this.#openers) {
        if (held + 1 < epoch) {
          old.clear();
          this.#openers.delete(held);
        }
      }
    }
    if (epoch === this.#current) {
      this.#openedInCurrent += 1;
    }
    return opened;
  }

  #checkEpoch(header) {
    const epoch = header.keyEpoch;
    const first = this.#streamEpochs.get(header.streamIdHex);
    if (first !== undefined && first !== epoch) {
      throw new ProtocolError(
        'stream_changed_epoch',
        `stream ${header.streamIdHex} changed from key epoch ${first} to ${epoch}`,
      );
    }
    const previousInGrace = epoch + 1 === this.#current && this.#openedInCurrent < GRACE_FRAMES;
    if (epoch >= this.#current || previousInGrace) {
      return;
    }
    throw new ProtocolError(
      'expired_epoch',
      `key epoch ${epoch} has expired: this page now accepts epoch ${this.#current}`,
    );
  }
}
