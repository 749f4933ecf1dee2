// The keys of later key epochs for a paired page (docs/protocol.md sections 12.4 and 14.2).
//
// After a rotation the clinician device wraps the new key for this page's pairing and posts it
// to the relay. The page long-polls `GET /v1/paired/keys` with its follow token, opens each
// wrapped key with the pairing's shared secret, and hands the key to the follow session. It
// takes a key only when it names the session and publisher key of the pairing and a newer
// epoch than the page holds.

import { bytesEqual, decodeBase64url } from './bytes.js';
import { parseJson } from './json.js';
import { unwrapSessionKey } from './pairing.js';

/** The `wait` of each fetch: seconds the relay may hold it while no newer key is stored. */
export const KEYS_WAIT_SECONDS = 25;
const RETRY_BASE_MS = 1000;
const MAX_RETRY_MS = 30000;

/**
 * Fetches and opens later keys until `stop()` is called or the relay refuses the follow token,
 * which it does once the clinician removed this device or the session ended.
 *
 * `pairing` is the `{ shared, joinerPublic, clinicianPublic }` of the pairing, `grant` the first
 * unwrapped grant (`epoch`, `sessionIdHex`, `publisher`). `onKey(epoch, keyBytes)` receives each
 * new key, and `onStop(reason)` is called once with `revoked` when the relay refuses the token.
 * `env` has `fetch`, `setTimeout` and `random`. Returns `{ stop, done }`.
 */
export function receiveLaterKeys({ origin, followToken, pairing, grant, env, onKey, onStop }) {
  let stopped = false;
  let newest = grant.epoch;
  const stop = () => {
    stopped = true;
    pairing.shared.fill(0);
  };

  async function fetchKeys() {
    const url = new URL(`/v1/paired/keys?after=${newest}&wait=${KEYS_WAIT_SECONDS}`, origin);
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

  async function accept(text) {
    const wrapped = typeof text === 'string' ? decodeBase64url(text) : null;
    if (wrapped === null) {
      console.warn('sealcast: ignored a wrapped key that is not base64url');
      return;
    }
    let later;
    try {
      later = await unwrapSessionKey(pairing, wrapped);
    } catch (error) {
      console.warn('sealcast: ignored a wrapped key that did not open', error?.kind);
      return;
    }
    const samePairing =
      later.sessionIdHex === grant.sessionIdHex && bytesEqual(later.publisher, grant.publisher);
    if (!samePairing || later.epoch <= newest) {
      later.sessionKey.fill(0);
      console.warn(
        `sealcast: ignored the key of key epoch ${later.epoch}: it names another session or publisher key, or an epoch the page already has`,
      );
      return;
    }
    newest = later.epoch;
    await onKey(later.epoch, later.sessionKey);
  }

  async function run() {
    let failures = 0;
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
      if (response?.status !== 200 || !Array.isArray(response.body?.wrapped_keys)) {
        // A network failure, 429, 5xx or another response: wait, then fetch again.
        const delay = Math.min(MAX_RETRY_MS, RETRY_BASE_MS * 2 ** failures * (1 + env.random()));
        failures = Math.min(failures + 1, 10);
        await new Promise((resolve) => env.setTimeout(resolve, delay));
        continue;
      }
      failures = 0;
      for (const text of response.body.wrapped_keys) {
        await accept(text);
      }
    }
  }

  return { stop, done: run() };
}
