// Pairing through the relay's mailbox, joining side (docs/protocol.md section 12.4).
//
// The order is fixed: the commitment to A first, then B from the clinician device, then A. The
// page shows the code and unwraps the key only after its user confirmed that the clinician
// device shows the same code. A user who says the codes differ cancels the slot, so that the
// clinician device stops waiting. The response that hands out the wrapped key also sets the
// follow cookie, which the follow socket then accepts like a redeemed invite's.

import { postJson, requestJson } from './json-request.js';
import {
  agreeSharedSecret,
  checkCommitment,
  commitmentOf,
  generatePairingKeyPair,
  pairingCode,
  unwrapSessionKey,
} from './pairing.js';
import { decodeBase64url, encodeBase64url } from './bytes.js';

/** The `wait` of each status request: seconds the relay may hold it for the clinician device. */
export const STATUS_WAIT_SECONDS = 25;
/** Failed requests in a row (network errors, 429 or 5xx) after which the page gives up. */
export const MAX_RETRIES = 5;
const RETRY_BASE_MS = 1000;

/**
 * A pairing that stopped, for a reason other than the PairingError kinds of pairing.js. `kind`
 * is one of:
 * - `not_found`: no slot has this id.
 * - `taken`: another device joined the slot, or a step came out of order.
 * - `cancelled`: a device cancelled the slot.
 * - `expired` and `session_ended`: the relay's 410 errors.
 * - `codes_differ`: the user rejected the code.
 * - `bad_response`, `refused` (any other rejection) and `unreachable`.
 */
export class PairingFailure extends Error {
  constructor(kind, message = kind) {
    super(message);
    this.name = 'PairingFailure';
    this.kind = kind;
  }
}

/**
 * Runs the joining side of one pairing.
 *
 * `confirmCode(code)` shows the code (`{ words, digits }`) and resolves to true when the user
 * confirmed that the clinician device shows the same, false otherwise. `progress(step)` is
 * called with `committed`, `code_shown` and `confirmed`. `env` has `fetch`, `setTimeout` and
 * `random`; `keyPair` replaces the random X25519 key pair in tests. Resolves to the unwrapped
 * grant of `unwrapSessionKey` with `pairing` (the shared secret and both public keys, which open
 * later wrapped keys) and `followToken` (the paired device's follow token, or null), and throws
 * a PairingFailure or a PairingError.
 */
export async function joinPairing({
  origin,
  pairingId,
  confirmCode,
  progress = () => {},
  env,
  keyPair = null,
}) {
  const relay = new PairingMailbox(env, origin, pairingId);
  const keys = keyPair ?? (await generatePairingKeyPair());
  const commitment = await commitmentOf(keys.publicKey);

  // Step 1: the commitment, which binds the page to A before it learns B.
  await relay.commit(commitment);
  progress('committed');

  let code;
  let link;
  try {
    // Step 2: B, then the page's own checks, and only then step 3.
    const responded = await relay.waitFor('responded');
    const clinicianPublic = readKey(responded.clinician_public, 'clinician_public');
    const shared = await agreeSharedSecret(keys.privateKey, clinicianPublic);
    await checkCommitment(commitment, keys.publicKey);
    code = await pairingCode(keys.publicKey, clinicianPublic);
    link = { shared, joinerPublic: keys.publicKey, clinicianPublic };
    await relay.sendJoinerKey(keys.publicKey);
  } catch (error) {
    await relay.cancel();
    throw error;
  }

  // Step 4: the user compares the codes. Nothing is unwrapped before a yes.
  progress('code_shown');
  const confirmed = await confirmCode({ words: code.words, digits: code.digits });
  if (!confirmed) {
    link.shared.fill(0);
    await relay.cancel();
    throw new PairingFailure('codes_differ', 'the codes differ, so the pairing was cancelled');
  }
  progress('confirmed');

  // Step 5: the wrapped key, sent once the clinician confirmed too. The pairing's shared secret
  // stays in memory afterwards, to open the keys of later key epochs (paired-keys.js).
  try {
    const completed = await relay.waitFor('completed');
    const wrapped = decodeBase64url(
      typeof completed.wrapped_key === 'string' ? completed.wrapped_key : '',
    );
    if (wrapped === null) {
      throw new PairingFailure('bad_response', 'the completed pairing has no wrapped key');
    }
    const grant = await unwrapSessionKey(link, wrapped);
    if (String(completed.session_id ?? '').toLowerCase() !== grant.sessionIdHex) {
      grant.sessionKey.fill(0);
      throw new PairingFailure(
        'bad_response',
        'the relay named another session than the wrapped key',
      );
    }
    const followToken = typeof completed.follow_token === 'string' ? completed.follow_token : null;
    return { ...grant, pairing: link, followToken };
  } catch (error) {
    link.shared.fill(0);
    throw error;
  }
}

/** The joiner's requests to one pairing slot, with retries for temporary failures. */
class PairingMailbox {
  #env;
  #base;
  #token = null;

  constructor(env, origin, pairingId) {
    this.#env = env;
    this.#base = new URL(`/v1/pairings/${encodeURIComponent(pairingId)}`, origin);
  }

  async commit(commitment) {
    const url = new URL(`${this.#base.pathname}/commitment`, this.#base);
    const response = await this.#retrying(() =>
      postJson(this.#env.fetch, url, { commitment: encodeBase64url(commitment) }),
    );
    if (response.status !== 201) {
      throw failureOf(response);
    }
    if (typeof response.body?.joiner_token !== 'string' || response.body.joiner_token === '') {
      throw new PairingFailure('bad_response', 'the commitment response has no joiner token');
    }
    this.#token = response.body.joiner_token;
  }

  async sendJoinerKey(publicKey) {
    const url = new URL(`${this.#base.pathname}/joiner-key`, this.#base);
    const response = await this.#retrying(() =>
      this.#request('POST', url, { public_key: encodeBase64url(publicKey) }),
    );
    if (response.status !== 204) {
      throw failureOf(response);
    }
  }

  /** Long-polls the status until the slot reaches `state`, and returns that status. */
  async waitFor(state) {
    const url = new URL(`${this.#base.pathname}?wait=${STATUS_WAIT_SECONDS}`, this.#base);
    for (;;) {
      const response = await this.#retrying(() => this.#request('GET', url));
      if (response.status !== 200) {
        throw failureOf(response);
      }
      const current = response.body?.state;
      if (current === state) {
        return response.body;
      }
      if (current === 'cancelled') {
        throw new PairingFailure('cancelled', 'the clinician device cancelled the pairing');
      }
      if (!waitingStates(state).includes(current)) {
        throw new PairingFailure('bad_response', `unexpected pairing state ${String(current)}`);
      }
    }
  }

  /** Cancels the slot. Failures are ignored: the slot expires on its own. */
  async cancel() {
    if (this.#token === null) {
      return;
    }
    try {
      await this.#request('DELETE', this.#base);
    } catch {
      // The relay is unreachable; the slot expires after its lifetime.
    }
  }

  // Sends a request that carries the joiner token, which every step after the commitment needs.
  #request(method, url, payload = undefined) {
    const headers = { Authorization: `Bearer ${this.#token}` };
    return requestJson(this.#env.fetch, method, url, { payload, headers });
  }

  // Repeats a request after a network failure, 429 or 5xx, with exponential backoff.
  async #retrying(send) {
    for (let attempt = 0; ; attempt += 1) {
      let response = null;
      try {
        response = await send();
      } catch {
        response = null;
      }
      const temporary = response === null || response.status === 429 || response.status >= 500;
      if (!temporary) {
        return response;
      }
      if (attempt + 1 >= MAX_RETRIES) {
        throw new PairingFailure('unreachable', 'the relay did not respond to the pairing');
      }
      const delay = RETRY_BASE_MS * 2 ** attempt * (1 + this.#env.random());
      await new Promise((resolve) => this.#env.setTimeout(resolve, delay));
    }
  }
}

// States in which a joiner that waits for `state` keeps polling.
function waitingStates(state) {
  return state === 'responded' ? ['committed'] : ['revealed'];
}

function readKey(text, field) {
  const bytes = typeof text === 'string' ? decodeBase64url(text) : null;
  if (bytes === null) {
    throw new PairingFailure('bad_response', `the status has no valid ${field}`);
  }
  // A key of the wrong length reaches agreeSharedSecret, which rejects it as invalid_length.
  return bytes;
}

/** Maps a refused request to a PairingFailure, by status and the relay's `error` field. */
export function failureOf({ status, body }) {
  const message = typeof body?.message === 'string' ? body.message : `HTTP ${status}`;
  if (status === 404) {
    return new PairingFailure('not_found', message);
  }
  if (status === 409) {
    return new PairingFailure(/cancelled/.test(message) ? 'cancelled' : 'taken', message);
  }
  if (status === 410) {
    const kind = body?.error === 'session_ended' ? 'session_ended' : 'expired';
    return new PairingFailure(kind, message);
  }
  return new PairingFailure('refused', message);
}
