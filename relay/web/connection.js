// The follow socket: frames in, transcript segments out, with redemption, reconnect and resume.
//
// The relay delivers each frame with its session offset. After a disconnect the page resumes
// from min(last received + 1, last committed + 1) with the epoch it saw, because frames after the
// last committed one can come again at other offsets after a relay crash. Frames already opened
// are dropped silently. Reconnects back off exponentially with jitter, from 1 s to 30 s.

import { AuthorshipVerifier, summarizeAuthorship } from './authorship.js';
import { redeemInvite } from './invite.js';
import { parseJson } from './json.js';
import { EpochOpener } from './opener.js';
import {
  FrameKind,
  ProtocolError,
  bytesEqual,
  decodeDelivery,
  decodeFrameHeader,
  parseEndOfSession,
  parseFingerprint,
  parseId,
  parseSegment,
  toU64,
} from './protocol.js';

/** WebSocket close codes the follow socket acts on (see the Rust `api::close`). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  ABNORMAL: 1006,
  POLICY_VIOLATION: 1008,
  SESSION_ENDED: 4004,
  CANNOT_RECOVER: 4006,
  REVOKED: 4009,
});

/** Minimum wait before a reconnect, in milliseconds. */
export const MIN_RETRY_MS = 1000;
/** Maximum wait before a reconnect, in milliseconds. */
export const MAX_RETRY_MS = 30000;
/** Failed connection attempts in a row after which the page shows that it is still trying. */
export const SLOW_CONNECT_ATTEMPTS = 4;

// A proof is rejected when the challenge expired between the two requests, so the page tries
// again with a fresh challenge, but not forever: the relay may hold another verifier.
const MAX_PROOF_REJECTIONS = 3;

/**
 * Refused upgrades in a row, before the first welcome, after which a paired page gives up. A
 * paired page has no invite to redeem, so it cannot tell a deleted credential from an
 * unreachable relay.
 */
export const MAX_PAIRED_REFUSALS = 3;

/**
 * Bytes of frames of a key epoch without a key that the page keeps until the key arrives, as
 * the `sealcast` client does. Frames beyond it are dropped and counted as failed.
 */
export const MAX_PENDING_BYTES = 16 * 1024 * 1024;

/**
 * Returns the wait before reconnect attempt `attempt` (0-based): 1 s doubled per attempt, times
 * a random factor in [1, 2) so that many pages do not reconnect in step, at most 30 s.
 */
export function backoffDelay(attempt, random = Math.random) {
  const base = MIN_RETRY_MS * 2 ** Math.min(attempt, 10);
  return Math.min(MAX_RETRY_MS, base * (1 + random()));
}

/** Offset to resume from: the lower of the offsets after the last received and committed ones. */
export function resumeOffset(lastReceived, lastCommitted) {
  const afterReceived = lastReceived === null ? 0n : lastReceived + 1n;
  const afterCommitted = lastCommitted === null ? 0n : lastCommitted + 1n;
  return afterReceived < afterCommitted ? afterReceived : afterCommitted;
}

/** Builds the follow socket URL on the page's own host: wss on https, ws on http. */
export function followUrl(location, epoch, from) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = new URLSearchParams();
  if (epoch !== null) {
    query.set('epoch', String(epoch));
  }
  query.set('from', String(from));
  return `${scheme}//${location.host}/v1/follow?${query}`;
}

/**
 * Follows one session until it ends or the page gives up.
 *
 * `env` supplies the browser APIs: `fetch`, `WebSocket`, `location`, `setTimeout`,
 * `clearTimeout` and `random`. The listener's methods are all optional:
 * - `status(state)`: `connecting`, `live`, `reconnecting`, `ended` or `stopped`.
 * - `session({ sessionId, epoch })`: after a redemption or a welcome, to keep for a reload.
 * - `segment(segment)`: a transcript segment that opened, as `parseSegment` returns it.
 * - `notice(counters)`: `{ failed, missedFinal, unverified, historyLost, slowConnect }`.
 * - `authorship(summary)`: what `summarizeAuthorship` returns, at the start, after every frame
 *   and at the end.
 * - `ended()`: the session ended. The caller must wipe the key.
 * - `failed(kind)`: the page stopped for good. Kinds are `fingerprint_mismatch`,
 *   `already_used`, `not_found`, `ended` (the invite route returned 410), `refused`,
 *   `bad_response` and, for a paired page, `not_paired`.
 *
 * A page that paired (docs/protocol.md section 12) passes `token: null`: its follow cookie came
 * with the pairing, and it has no invite to redeem when the relay refuses the cookie. It passes
 * the keys of later key epochs to `addKey` as they arrive, and the session opens the frames it
 * kept for them.
 */
export class FollowSession {
  #token;
  #sessionKey;
  #fingerprint;
  #inviteAuthKey;
  #env;
  #listener;
  #sessionId;
  #epoch = null;
  #keyEpoch;
  #laterKeys = new Map();
  #pendingFrames = [];
  #pendingBytes = 0;
  #lastReceived = null;
  #lastCommitted = null;
  #opener = null;
  #socket = null;
  #status = null;
  #stopped = false;
  #wake = null;
  #work = Promise.resolve();
  #attempt = 0;
  #everLive = false;
  #refusals = 0;
  #redeemedSinceLive = false;
  #proofRejections = 0;
  #policyCloses = 0;
  #endedByRelay = false;
  #counters = { failed: 0, missedFinal: 0, unverified: 0, historyLost: false, slowConnect: false };
  #verifier;
  // Start times of the segment frames that wait for a signature, by stream id and sequence
  // number, so that the page can show up to which line the transcript is signed.
  #pendingTimes = new Map();
  #signedUpToMs = null;

  /**
   * @param {object} options `token` (normalized invite token), `sessionKey` (HKDF CryptoKey),
   *   `fingerprint` (16 bytes derived from the key), `inviteAuthKey` (HMAC CryptoKey),
   *   `sessionId` (hex, known from an earlier redemption or the pairing, or null),
   *   `publisherKey` (Ed25519
   *   CryptoKey from `importPublisherKey`, or null when the link carries none), `keyEpoch`
   *   (the key epoch of `sessionKey`, 0 unless a pairing after a rotation), `env` and
   *   `listener`.
   */
  constructor({
    token,
    sessionKey,
    fingerprint,
    inviteAuthKey,
    sessionId = null,
    publisherKey = null,
    keyEpoch = 0,
    env,
    listener,
  }) {
    this.#token = token;
    this.#keyEpoch = keyEpoch;
    this.#verifier = new AuthorshipVerifier(publisherKey);
    this.#sessionKey = sessionKey;
    this.#fingerprint = fingerprint;
    this.#inviteAuthKey = inviteAuthKey;
    this.#sessionId = sessionId;
    this.#env = env;
    this.#listener = listener;
  }

  /**
   * Runs until the session ends or the page gives up. With `socketFirst` the page opens the
   * socket with the cookie of an earlier redemption and redeems only if the upgrade fails.
   */
  async run({ socketFirst }) {
    this.#setStatus('connecting');
    this.#reportAuthorship(false);
    let step = socketFirst ? 'connect' : 'redeem';
    while (!this.#stopped) {
      step = step === 'redeem' ? await this.#redeemStep() : await this.#connectStep();
    }
  }

  /**
   * Adds the key of a later key epoch (an HKDF CryptoKey from `importSessionKey`), then opens
   * the frames of that epoch that arrived before it, in arrival order.
   */
  addKey(keyEpoch, sessionKey) {
    this.#enqueue(async () => {
      if (this.#stopped) {
        return;
      }
      if (this.#opener === null) {
        // The welcome has not arrived yet, so the opener does not exist: it takes the key then.
        this.#laterKeys.set(keyEpoch, sessionKey);
        return;
      }
      this.#opener.addKey(keyEpoch, sessionKey);
      await this.#openPending(keyEpoch);
    });
  }

  /** Ends a wait between attempts at once, for example when the browser comes back online. */
  reconnectNow() {
    this.#wake?.();
  }

  /** Stops following and drops the derived keys, without reporting an outcome. */
  stop() {
    this.#shutDown();
    this.#wake?.();
  }

  async #redeemStep() {
    if (this.#token === null) {
      this.#fail('not_paired');
      return 'done';
    }
    const result = await redeemInvite({
      fetchFn: this.#env.fetch,
      origin: this.#env.location.origin,
      token: this.#token,
      fingerprint: this.#fingerprint,
      inviteAuthKey: this.#inviteAuthKey,
    });
    if (this.#stopped) {
      return 'done';
    }
    if (result.outcome === 'ok') {
      return this.#afterRedeemed(result);
    }
    if (result.outcome === 'retry' || this.#retryProof(result.kind)) {
      await this.#pause();
      return 'redeem';
    }
    this.#fail(result.kind === 'proof_rejected' ? 'refused' : result.kind);
    return 'done';
  }

  #afterRedeemed(result) {
    if (!this.#acceptSessionId(result.sessionId)) {
      this.#fail('refused');
      return 'done';
    }
    this.#redeemedSinceLive = true;
    this.#proofRejections = 0;
    this.#listener.session?.({ sessionId: this.#sessionId, epoch: result.epoch });
    return 'connect';
  }

  #retryProof(kind) {
    if (kind !== 'proof_rejected') {
      return false;
    }
    this.#proofRejections += 1;
    return this.#proofRejections < MAX_PROOF_REJECTIONS;
  }

  async #connectStep() {
    const closed = await this.#follow();
    if (this.#stopped) {
      return 'done';
    }
    if (closed.code === CloseCode.SESSION_ENDED || this.#endedByRelay) {
      this.#finishEnded();
      return 'done';
    }
    return closed.opened ? this.#afterClose(closed.code) : this.#afterRefusal();
  }

  // The upgrade failed. Browsers hide the HTTP status, so a refused cookie and an unreachable
  // relay look alike. Before the first welcome, or on the second failure in a row after one,
  // the page redeems again, at most once until the socket is live again.
  async #afterRefusal() {
    this.#refusals += 1;
    this.#updateCounters({ slowConnect: this.#refusals >= SLOW_CONNECT_ATTEMPTS });
    // NOTE: a paired page that was live retries for as long as it is open, because it
    // cannot learn from a refused upgrade whether the session ended meanwhile.
    const suspectCredential =
      this.#token === null
        ? !this.#everLive && this.#refusals >= MAX_PAIRED_REFUSALS
        : !this.#everLive || this.#refusals >= 2;
    if (suspectCredential && !this.#redeemedSinceLive) {
      return 'redeem';
    }
    await this.#pause();
    return 'connect';
  }

  async #afterClose(code) {
    if (code === CloseCode.REVOKED) {
      // The clinician removed this paired device: its cookie no longer works, so retrying
      // cannot help.
      this.#fail('removed');
      return 'done';
    }
    if (code === CloseCode.POLICY_VIOLATION) {
      // The relay rejected the credential or the request: a fresh redemption may cure it once,
      // and a second refusal with no frame in between is final.
      this.#policyCloses += 1;
      if (this.#policyCloses > 1) {
        this.#fail('refused');
        return 'done';
      }
      return 'redeem';
    }
    if (code === CloseCode.CANNOT_RECOVER) {
      this.#resetHistory();
    }
    await this.#pause();
    return 'connect';
  }

  // The relay cannot deliver the requested history. Start over from offset 0 with no epoch; the
  // opener keeps its state, so frames already shown are dropped as duplicates.
  #resetHistory() {
    this.#epoch = null;
    this.#lastReceived = null;
    this.#lastCommitted = null;
    this.#updateCounters({ historyLost: true });
  }

  #follow() {
    const from = resumeOffset(this.#lastReceived, this.#lastCommitted);
    const url = followUrl(this.#env.location, this.#epoch, from);
    return new Promise((resolve) => {
      const outcome = { opened: false, code: CloseCode.ABNORMAL };
      let socket;
      try {
        socket = new this.#env.WebSocket(url);
      } catch {
        resolve(outcome);
        return;
      }
      socket.binaryType = 'arraybuffer';
      socket.addEventListener('open', () => {
        outcome.opened = true;
      });
      socket.addEventListener('message', (event) => {
        this.#enqueue(() => this.#handleMessage(event.data));
      });
      socket.addEventListener('close', (event) => {
        outcome.code = event.code;
        this.#enqueue(() => resolve(outcome));
      });
      this.#socket = socket;
    });
  }

  // Messages are handled one at a time, in arrival order, because opening is asynchronous and
  // each frame's checks depend on the frames before it.
  #enqueue(task) {
    this.#work = this.#work.then(task).catch((error) => {
      console.error('sealcast: failed to handle a relay message', error);
      this.#countFailed();
    });
  }

  async #handleMessage(data) {
    if (this.#stopped) {
      return;
    }
    if (typeof data === 'string') {
      this.#handleEvent(data);
      return;
    }
    await this.#handleDelivery(new Uint8Array(data));
  }

  #handleEvent(text) {
    let event;
    try {
      event = parseJson(text);
    } catch {
      this.#countFailed();
      return;
    }
    if (event?.type === 'welcome') {
      this.#handleWelcome(event);
    } else if (event?.type === 'committed') {
      this.#handleCommitted(event);
    } else if (event?.type === 'ended') {
      this.#endedByRelay = true;
    }
    // Other event types come from later protocol versions and carry nothing this page needs.
  }

  #handleWelcome(event) {
    const fingerprint = parseFingerprint(event.fingerprint);
    const sessionId = parseId(event.session_id);
    const epoch = toU64(event.epoch);
    if (fingerprint === null || sessionId === null || epoch === null) {
      this.#fail('bad_response');
      return;
    }
    // The relay stores the fingerprint of the key of epoch 0 only (section 14.2).
    if (this.#keyEpoch === 0 && !bytesEqual(fingerprint, this.#fingerprint)) {
      this.#fail('fingerprint_mismatch');
      return;
    }
    if (!this.#acceptSessionId(event.session_id.toLowerCase())) {
      this.#fail('refused');
      return;
    }

    if (this.#opener === null) {
      this.#opener = new EpochOpener(this.#sessionKey, sessionId, this.#keyEpoch);
      for (const [keyEpoch, key] of this.#laterKeys) {
        this.#opener.addKey(keyEpoch, key);
      }
      this.#laterKeys.clear();
    }
    this.#epoch = epoch;
    this.#everLive = true;
    this.#attempt = 0;
    this.#refusals = 0;
    this.#redeemedSinceLive = false;
    this.#updateCounters({ slowConnect: false });
    this.#listener.session?.({ sessionId: this.#sessionId, epoch });
    this.#setStatus('live');
  }

  #handleCommitted(event) {
    const offset = toU64(event.offset);
    if (offset === null) {
      this.#countFailed();
      return;
    }
    if (this.#lastCommitted === null || offset > this.#lastCommitted) {
      this.#lastCommitted = offset;
    }
  }

  async #handleDelivery(bytes) {
    const delivery = decodeDelivery(bytes);
    if (delivery === null || this.#opener === null) {
      this.#countFailed();
      return;
    }
    if (this.#lastReceived === null || delivery.offset > this.#lastReceived) {
      this.#lastReceived = delivery.offset;
    }
    this.#policyCloses = 0;

    let header;
    try {
      header = decodeFrameHeader(delivery.frame);
    } catch {
      this.#countFailed();
      return;
    }
    if (this.#opener.alreadySeen(header)) {
      return;
    }
    await this.#openFrame(delivery.frame, header);
  }

  // Opens a frame and shows its content. A frame of an epoch without a key is kept until the
  // key arrives, within MAX_PENDING_BYTES.
  async #openFrame(frame, header) {
    let opened;
    try {
      opened = await this.#opener.open(frame);
    } catch (error) {
      if (error instanceof ProtocolError && error.kind === 'unknown_epoch') {
        this.#keepPending(frame, header);
      } else {
        this.#countFailed();
      }
      return;
    }
    await this.#showOpened(frame, opened);
  }

  #keepPending(frame, header) {
    if (this.#pendingBytes + frame.length > MAX_PENDING_BYTES) {
      this.#countFailed();
      return;
    }
    this.#pendingFrames.push({ frame, keyEpoch: header.keyEpoch });
    this.#pendingBytes += frame.length;
  }

  async #openPending(keyEpoch) {
    const waiting = this.#pendingFrames.filter((pending) => pending.keyEpoch === keyEpoch);
    this.#pendingFrames = this.#pendingFrames.filter((pending) => pending.keyEpoch !== keyEpoch);
    for (const { frame } of waiting) {
      this.#pendingBytes -= frame.length;
      const header = decodeFrameHeader(frame);
      if (!this.#stopped && !this.#opener.alreadySeen(header)) {
        await this.#openFrame(frame, header);
      }
    }
  }

  async #showOpened(frame, opened) {
    this.#checkStream(opened);
    const observed = await this.#verifier.observe(frame, opened);
    const startMs = this.#deliverContent(opened);
    this.#trackSignedTime(opened.header, observed, startMs);
    if (!this.#stopped) {
      this.#reportAuthorship(false);
    }
  }

  #checkStream(opened) {
    if (opened.skippedFinal > 0n) {
      this.#updateCounters({
        missedFinal: this.#counters.missedFinal + Number(opened.skippedFinal),
      });
    }
    if (opened.chainVerified === false) {
      this.#updateCounters({ unverified: this.#counters.unverified + 1 });
    }
  }

  // Shows the frame's content and returns the segment's start time, or undefined when the frame
  // contains no segment.
  #deliverContent(opened) {
    // A checkpoint carries the publishing device's signature, which the verifier checked, and
    // no transcript text.
    if (opened.header.kind === FrameKind.CHECKPOINT) {
      return undefined;
    }
    const isEnd = opened.header.kind === FrameKind.END_OF_SESSION;
    let content;
    try {
      content = isEnd ? parseEndOfSession(opened.content) : parseSegment(opened.content);
    } catch {
      this.#countFailed();
      return undefined;
    }
    if (isEnd) {
      this.#handleEndFrame(content, opened.header);
      return undefined;
    }
    // The authenticated frame kind decides: the relay may drop interim frames, never final ones.
    content.final = opened.header.kind === FrameKind.FINAL;
    this.#listener.segment?.(content);
    return content.startMs;
  }

  // Remembers when a frame that waits for a signature starts, and after a valid signature moves
  // the start times of the frames it verified into `#signedUpToMs`.
  #trackSignedTime(header, observed, startMs) {
    const stream = header.streamIdHex;
    if (observed.result === 'pending' && startMs !== undefined) {
      if (!this.#pendingTimes.has(stream)) {
        this.#pendingTimes.set(stream, new Map());
      }
      this.#pendingTimes.get(stream).set(header.seq, startMs);
    }
    const times = this.#pendingTimes.get(stream);
    if (observed.result !== 'signed' || times === undefined) {
      return;
    }
    for (const [seq, time] of times) {
      if (seq <= observed.seq && !this.#verifier.isUnverified(stream, seq)) {
        this.#signedUpToMs = Math.max(this.#signedUpToMs ?? time, time);
        times.delete(seq);
      }
    }
  }

  #reportAuthorship(ended) {
    const summary = summarizeAuthorship(this.#verifier, {
      ended,
      timeOf: (stream, seq) => this.#pendingTimes.get(stream)?.get(seq),
      signedUpToMs: this.#signedUpToMs,
    });
    this.#listener.authorship?.(summary);
  }

  // The clinician device sealed the end of the session: nothing after it is opened. A stream
  // is complete when its end frame counts every final segment plus itself.
  #handleEndFrame(end, header) {
    if (end.finalSegments + 1n !== header.finalCount) {
      this.#updateCounters({ unverified: this.#counters.unverified + 1 });
    }
    this.#finishEnded();
  }

  #acceptSessionId(sessionId) {
    this.#sessionId ??= sessionId;
    return this.#sessionId === sessionId;
  }

  #pause() {
    if (this.#stopped) {
      return Promise.resolve();
    }
    const delay = backoffDelay(this.#attempt, this.#env.random);
    this.#attempt += 1;
    this.#setStatus(this.#everLive ? 'reconnecting' : 'connecting');
    return new Promise((resolve) => {
      const wake = () => {
        this.#env.clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      const timer = this.#env.setTimeout(wake, delay);
      this.#wake = wake;
    });
  }

  #finishEnded() {
    this.#shutDown();
    this.#setStatus('ended');
    this.#reportAuthorship(true);
    this.#listener.ended?.();
  }

  #fail(kind) {
    this.#shutDown();
    this.#setStatus(kind === 'ended' ? 'ended' : 'stopped');
    this.#listener.failed?.(kind);
  }

  #shutDown() {
    this.#stopped = true;
    const socket = this.#socket;
    this.#socket = null;
    try {
      socket?.close(CloseCode.NORMAL);
    } catch {
      // The socket is already closing, which is what this wanted.
    }
    this.#opener?.clear();
    this.#opener = null;
    this.#laterKeys.clear();
    this.#pendingFrames = [];
    this.#pendingBytes = 0;
    this.#sessionKey = null;
    this.#inviteAuthKey = null;
  }

  #setStatus(state) {
    if (state !== this.#status) {
      this.#status = state;
      this.#listener.status?.(state);
    }
  }

  #countFailed() {
    this.#updateCounters({ failed: this.#counters.failed + 1 });
  }

  #updateCounters(changes) {
    const before = JSON.stringify(this.#counters);
    Object.assign(this.#counters, changes);
    if (JSON.stringify(this.#counters) !== before) {
      this.#listener.notice?.({ ...this.#counters });
    }
  }
}
