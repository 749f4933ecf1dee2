// The clinician device's side of pairing, for tests: X25519 keys from fixed secrets, the wrap
// of section 12.3, and a scripted pairing mailbox in place of the relay's routes.

import { concatBytes, decodeBase64url, encodeBase64url } from '../bytes.js';
import { agreeSharedSecret, checkCommitment, deriveWrapKeyBytes } from '../pairing.js';

// DER prefix of a PKCS #8 X25519 private key (RFC 8410), followed by the 32 secret bytes.
const X25519_PKCS8_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);

/**
 * Imports a 32-byte X25519 secret. WebCrypto imports private keys as PKCS #8 or JWK only.
 * Resolves to `{ privateKey, publicKey }` with the public key's bytes.
 */
export async function importX25519Secret(secret) {
  const pkcs8 = concatBytes(X25519_PKCS8_PREFIX, secret);
  const privateKey = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'X25519' }, true, [
    'deriveBits',
  ]);
  const jwk = await crypto.subtle.exportKey('jwk', privateKey);
  return { privateKey, publicKey: decodeBase64url(jwk.x) };
}

/** Makes a random X25519 key pair: `{ privateKey, publicKey }` with the public key's bytes. */
export async function generateX25519() {
  const pair = await crypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
  const publicKey = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, publicKey };
}

/** Wraps `payload` (80 bytes) for key epoch `epoch` with `nonce`, as the clinician device does. */
export async function wrapPayload(link, epoch, nonce, payload) {
  const epochBytes = new Uint8Array(4);
  new DataView(epochBytes.buffer).setUint32(0, epoch);
  const keyBytes = await deriveWrapKeyBytes(link, epoch);
  const key = await crypto.subtle.importKey('raw', keyBytes, 'AES-GCM', false, ['encrypt']);
  const sealed = await crypto.subtle.encrypt(
    { name: 'AES-GCM', iv: nonce, additionalData: epochBytes },
    key,
    payload,
  );
  return concatBytes(epochBytes, nonce, new Uint8Array(sealed));
}

/**
 * A pairing slot and the clinician device behind it, which respond to the joiner's requests as
 * the relay's routes do (docs/protocol.md section 12.4). `fetch` is the page's fetch. `log` records
 * each request as `METHOD PATH` in order. Options:
 * - `grant`: `{ epoch, sessionId, sessionKey, publisher }` as bytes, wrapped once the joiner
 *   sent its key.
 * - `clinicianKey`: the clinician device's key pair; `clinicianPublic` overrides the public key
 *   it sends, for example with a low-order point.
 * - `tamperWrap(wrapped)`: changes the wrapped key before the joiner fetches it.
 * - `sessionIdText`: the `session_id` of the completed status, by default the grant's.
 * - `committedPolls`: status requests answered with `committed`, before the clinician device
 *   responds with its key.
 */
export class ScriptedMailbox {
  log = [];
  state = 'open';
  commitment = null;
  joinerPublic = null;
  cancelled = false;
  #options;
  #token = 'joiner-token-for-tests';
  #committedPolls = 0;

  constructor(options) {
    this.#options = options;
  }

  fetch = async (url, init = {}) => {
    const { pathname } = new URL(url);
    const method = init.method ?? 'GET';
    this.log.push(`${method} ${pathname}`);
    if (pathname.endsWith('/commitment') && method === 'POST') {
      return this.#commit(JSON.parse(init.body));
    }
    if (init.headers?.Authorization !== `Bearer ${this.#token}`) {
      return json(401, { error: 'unauthorized', message: 'invalid joiner token' });
    }
    if (pathname.endsWith('/joiner-key') && method === 'POST') {
      return this.#joinerKey(JSON.parse(init.body));
    }
    if (method === 'DELETE') {
      this.cancelled = true;
      this.state = 'cancelled';
      return new Response(null, { status: 204 });
    }
    return this.#status();
  };

  async #commit(body) {
    if (this.state !== 'open') {
      return json(409, { error: 'conflict', message: 'another device already joined' });
    }
    this.commitment = decodeBase64url(body.commitment);
    this.state = 'committed';
    return json(201, { joiner_token: this.#token, expires_in: 300 });
  }

  async #joinerKey(body) {
    if (this.state !== 'responded') {
      return json(409, { error: 'conflict', message: `in state ${this.state}` });
    }
    this.joinerPublic = decodeBase64url(body.public_key);
    await checkCommitment(this.commitment, this.joinerPublic);
    this.state = 'completed';
    return new Response(null, { status: 204 });
  }

  async #status() {
    if (this.state === 'committed') {
      this.#committedPolls += 1;
      if (this.#committedPolls > (this.#options.committedPolls ?? 0)) {
        this.state = 'responded';
      }
    }
    const body = { state: this.state, expires_in: 300 };
    if (this.state === 'responded') {
      body.clinician_public = encodeBase64url(this.#clinicianPublic());
    }
    if (this.state === 'completed') {
      body.wrapped_key = encodeBase64url(await this.#wrapped());
      body.session_id = this.#options.sessionIdText ?? hex(this.#options.grant.sessionId);
      body.follow_token = 'follow-token-for-tests';
    }
    return json(200, body);
  }

  #clinicianPublic() {
    return this.#options.clinicianPublic ?? this.#options.clinicianKey.publicKey;
  }

  async #wrapped() {
    const { grant, clinicianKey, tamperWrap = (wrapped) => wrapped } = this.#options;
    const shared = await agreeSharedSecret(clinicianKey.privateKey, this.joinerPublic);
    const link = {
      shared,
      joinerPublic: this.joinerPublic,
      clinicianPublic: clinicianKey.publicKey,
    };
    const payload = concatBytes(grant.sessionId, grant.sessionKey, grant.publisher);
    const nonce = crypto.getRandomValues(new Uint8Array(12));
    return tamperWrap(await wrapPayload(link, grant.epoch, nonce, payload));
  }
}

function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

function hex(bytes) {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}
