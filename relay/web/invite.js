// Invite redemption: how the page gets its credential for the follow socket.
//
// The page proves possession of the session key without sending it. The relay issues a
// challenge, the page first checks the relay's fingerprint against its own key, then responds
// with HMAC(invite auth key, "sealcast v1 invite proof" || challenge). On success the relay sets
// an HttpOnly cookie that authorizes the follow socket, so no credential appears in a URL and
// no script can read it.

import { postJson } from './json-request.js';
import {
  bytesEqual,
  computeInviteProof,
  decodeBase64url,
  encodeBase64url,
  parseFingerprint,
  parseId,
  toU64,
} from './protocol.js';

/**
 * Maps an HTTP status of the invite routes to what the page does: `retry` later, or stop with
 * `not_found` (404), `ended` (410), `already_used` (409) or `refused` (any other refusal).
 */
export function classifyInviteStatus(status) {
  if (status === 404) {
    return 'not_found';
  }
  if (status === 409) {
    return 'already_used';
  }
  if (status === 410) {
    return 'ended';
  }
  if (status === 408 || status === 429 || status >= 500) {
    return 'retry';
  }
  return 'refused';
}

/**
 * Redeems an invite: requests a challenge, compares the relay's fingerprint with the page's
 * before anything else, then sends the proof. Resolves to `{ outcome: 'ok', sessionId, epoch }`,
 * `{ outcome: 'retry' }` for a network failure or a temporary refusal, or `{ outcome: 'failed',
 * kind }` where kind is `fingerprint_mismatch`, `bad_response`, `proof_rejected` or a kind of
 * `classifyInviteStatus`.
 */
export async function redeemInvite({ fetchFn, origin, token, fingerprint, inviteAuthKey }) {
  let challenge;
  try {
    challenge = await postJson(fetchFn, new URL('/v1/invites/challenge', origin), { token });
  } catch {
    return { outcome: 'retry' };
  }
  if (challenge.status !== 200) {
    return statusOutcome(challenge.status);
  }

  const offered = readChallenge(challenge.body);
  if (offered === null) {
    return { outcome: 'failed', kind: 'bad_response' };
  }
  if (!bytesEqual(offered.fingerprint, fingerprint)) {
    return { outcome: 'failed', kind: 'fingerprint_mismatch' };
  }

  const proof = await computeInviteProof(inviteAuthKey, offered.challengeBytes);
  const payload = { token, challenge: offered.challenge, proof: encodeBase64url(proof) };
  let redeemed;
  try {
    redeemed = await postJson(fetchFn, new URL('/v1/invites/redeem', origin), payload);
  } catch {
    return { outcome: 'retry' };
  }
  if (redeemed.status === 401) {
    return { outcome: 'failed', kind: 'proof_rejected' };
  }
  if (redeemed.status !== 200) {
    return statusOutcome(redeemed.status);
  }
  return readRedeemed(redeemed.body, offered.sessionId);
}

function statusOutcome(status) {
  const kind = classifyInviteStatus(status);
  return kind === 'retry' ? { outcome: 'retry' } : { outcome: 'failed', kind };
}

function readChallenge(body) {
  const challenge = typeof body?.challenge === 'string' ? body.challenge : '';
  const challengeBytes = decodeBase64url(challenge);
  const fingerprint = parseFingerprint(body?.fingerprint);
  const sessionId = parseId(body?.session_id);
  if (challengeBytes === null || challengeBytes.length === 0) {
    return null;
  }
  if (fingerprint === null || sessionId === null) {
    return null;
  }
  return { challenge, challengeBytes, fingerprint, sessionId: body.session_id.toLowerCase() };
}

function readRedeemed(body, sessionId) {
  const epoch = toU64(body?.epoch);
  const matches = parseId(body?.session_id) !== null && body.session_id.toLowerCase() === sessionId;
  if (epoch === null || !matches) {
    return { outcome: 'failed', kind: 'bad_response' };
  }
  return { outcome: 'ok', sessionId, epoch };
}
