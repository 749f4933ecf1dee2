// The keys of later key epochs for a paired page (docs/protocol.md sections 12.4 and 14.2).
//
// After a rotation the clinician device wraps the new key for this page's pairing and posts it
// to the relay. The page long-polls `GET /v1/paired/keys` with its follow token, opens each
// wrapped key with the pairing's shared secret, and hands the key to the follow session. It
// takes a key only when it names the session and publisher key of the pairing and a newer
// epoch than the page holds. Each fetch requests the epochs after the newest one fetched,
// opened or ignored, so that the relay does not return an ignored key again. A fetch that
// brings only ignored keys is followed by a growing delay.

import { bytesEqual, decodeBase64url } from './bytes.js';
import { parseJson } from './json.js';
import { WRAPPED_KEY_LEN, unwrapSessionKey } from './pairing.js';

/** The `wait` of each fetch: seconds the relay may hold it while no newer key is stored. */
export const KEYS_WAIT_SECONDS = 25;
const RETRY_BASE_MS = 1000;
const MAX_RETRY_MS = 30000;
const MAX_RETRY_DOUBLINGS = 10;

/**
 * Returns the key epoch that a wrapped key names in its first four bytes, big-endian, or null for
 * a key of the wrong length. The epoch is authenticated only once the key opens.
 */
export function wrappedKeyEpoch(wrapped) {
  if (!(wrapped instanceof Uint8Array) || wrapped.length !== WRAPPED_KEY_LEN) {
    return null;
  }
  return new DataView(wrapped.buffer, wrapped.byteOffset, 4).getUint32(0);
}

/**
 * Fetches and opens later keys until `stop()` is called, the relay refuses the follow token
 * (the clinician removed this device, or the session ended before the fetch), or it responds
 * with 410 because the session ended while the fetch waited.
 *
 * `pairing` is the `{ shared, joinerPublic, clinicianPublic }` of the pairing, `grant` the first
 * unwrapped grant (`epoch`, `sessionIdHex`, `publisher`). `onKey(epoch, keyBytes)` receives each
 * new key, and `onStop(reason)` is called once with `revoked` when the relay refuses the token
 * or with `ended` when the session ended.
 * `env` has `fetch`, `setTimeout` and `random`. Returns `{ stop, done }`.
 */
export function receiveLaterKeys({ origin, followToken, pairing, grant, env, onKey, onStop }) {
  let stopped = false;
  let newest = grant.epoch;
  // Newest epoch of any fetched wrapped key, including ignored ones: the `after` of each fetch.
  let after = grant.epoch;
  // Newest epoch whose ignored key was reported, so that each epoch is reported once.
  let warnedEpoch = -1;
  const stop = () => {
    stopped = true;
    pairing.shared.fill(0);
  };

  async function fetchKeys() {
    const url = new URL(`/v1/paired/keys?after=${after}&wait=${KEYS_WAIT_SECONDS}`, origin);
    const response = await env.fetch(url, {
      method: 'GET',
      headers: { Authorization: `Bearer ${followToken}` },
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    });
    let body = null;
    try {
      body = parseJson(await response.text());
    } catch {
      body = null;
    }
    return { status: response.status, body };
  }

  // Reports an ignored key, once per key epoch. A key without a readable epoch is always reported.
  function warnIgnored(epoch, message, detail) {
    if (epoch !== null) {
      if (epoch <= warnedEpoch) {
        return;
      }
      warnedEpoch = epoch;
    }
    if (detail === undefined) {
      console.warn(message);
    } else {
      console.warn(message, detail);
    }
  }

  // Opens one wrapped key and hands it on. Resolves to true when the key was taken.
  async function accept(text) {
    const wrapped = typeof text === 'string' ? decodeBase64url(text) : null;
    if (wrapped === null) {
      warnIgnored(null, 'sealcast: ignored a wrapped key that is not base64url');
      return false;
    }
    const namedEpoch = wrappedKeyEpoch(wrapped);
    if (namedEpoch !== null) {
      after = Math.max(after, namedEpoch);
    }
    let later;
    try {
      later = await unwrapSessionKey(pairing, wrapped);
    } catch (error) {
      warnIgnored(namedEpoch, 'sealcast: ignored a wrapped key that did not open', error?.kind);
      return false;
    }
    const samePairing =
      later.sessionIdHex === grant.sessionIdHex && bytesEqual(later.publisher, grant.publisher);
    if (!samePairing || later.epoch <= newest) {
      later.sessionKey.fill(0);
      warnIgnored(
        later.epoch,
        `sealcast: ignored the key of key epoch ${later.epoch}: it names another session or publisher key, or an epoch the page already has`,
      );
      return false;
    }
    newest = later.epoch;
    await onKey(later.epoch, later.sessionKey);
    return true;
  }

  // Waits the retry delay of attempt `attempt`, from 0: 1 s doubling up to 30 s, with jitter.
  function retryWait(attempt) {
    const delay = Math.min(MAX_RETRY_MS, RETRY_BASE_MS * 2 ** attempt * (1 + env.random()));
    return new Promise((resolve) => env.setTimeout(resolve, delay));
  }

  async function run() {
    let failures = 0;
    let ignoredRounds = 0;
    while (!stopped) {
      let response = null;
      try {
        response = await fetchKeys();
      } catch {
        response = null;
      }
      if (stopped) {
        return;
      }
      if (response?.status === 401) {
        stop();
        onStop?.('revoked');
        return;
      }
      if (response?.status === 410) {
        stop();
        onStop?.('ended');
        return;
      }
      if (response?.status !== 200 || !Array.isArray(response.body?.wrapped_keys)) {
        // A network failure, 429, 5xx or another response: wait, then fetch again.
        await retryWait(failures);
        failures = Math.min(failures + 1, MAX_RETRY_DOUBLINGS);
        continue;
      }
      failures = 0;
      const wrappedKeys = response.body.wrapped_keys;
      let anyTaken = false;
      for (const text of wrappedKeys) {
        if (await accept(text)) {
          anyTaken = true;
        }
      }
      if (anyTaken) {
        ignoredRounds = 0;
      } else if (wrappedKeys.length > 0) {
        // Only ignored keys, which a relay that disregards `after` returns at once again.
        await retryWait(ignoredRounds);
        ignoredRounds = Math.min(ignoredRounds + 1, MAX_RETRY_DOUBLINGS);
      }
    }
  }

  return { stop, done: run() };
}
