// Pairing without a link, joining side: each refusal of pairing.js, and the order of the steps
// in pairing-relay.js against a scripted mailbox. The known-answer vectors of section 10.7 are
// checked in vectors.test.mjs.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { hexToBytes } from '../bytes.js';
import { joinPairing } from '../pairing-relay.js';
import {
  agreeSharedSecret,
  checkCommitment,
  commitmentOf,
  pairingCode,
  parsePairingId,
  unwrapSessionKey,
} from '../pairing.js';
import { ScriptedMailbox, generateX25519, wrapPayload } from '../test-support/pairing.mjs';
import { generateSigningKey } from '../test-support/seal.mjs';

const PAIRING_ID = '0421-8810-3377';
const ORIGIN = 'https://relay.example:8443';

// Public keys of small order on Curve25519 (RFC 7748 section 6.1 and the curve's 8-torsion),
// for which X25519 outputs 32 zero bytes.
const LOW_ORDER_KEYS = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
].map(hexToBytes);

async function rejectsWith(promise, kind) {
  await assert.rejects(promise, (error) => {
    assert.equal(error.kind, kind, `${error.name}: ${error.message}`);
    return true;
  });
}

async function pairedLink() {
  const joiner = await generateX25519();
  const clinician = await generateX25519();
  const shared = await agreeSharedSecret(joiner.privateKey, clinician.publicKey);
  return { shared, joinerPublic: joiner.publicKey, clinicianPublic: clinician.publicKey };
}

async function testGrant(epoch = 0) {
  const { publicKey } = await generateSigningKey();
  return {
    epoch,
    sessionId: crypto.getRandomValues(new Uint8Array(16)),
    sessionKey: crypto.getRandomValues(new Uint8Array(32)),
    publisher: publicKey,
  };
}

async function wrappedGrant(link, grant) {
  const payload = new Uint8Array([...grant.sessionId, ...grant.sessionKey, ...grant.publisher]);
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  return wrapPayload(link, grant.epoch, nonce, payload);
}

// Runs joinPairing against `mailbox`; `answer` is what the user says about the code.
function runJoin(mailbox, { answer = true, shown = [] } = {}) {
  return joinPairing({
    origin: ORIGIN,
    pairingId: PAIRING_ID,
    env: { fetch: mailbox.fetch, setTimeout: (run) => run(), random: () => 0 },
    confirmCode: async (code) => {
      shown.push({ code, requests: [...mailbox.log] });
      return answer;
    },
  });
}

test('pairing id accepts 12 digits with separators', () => {
  assert.equal(parsePairingId('0421-8810-3377'), '0421-8810-3377');
  assert.equal(parsePairingId(' 042188103377 '), '0421-8810-3377');
  assert.equal(parsePairingId('0421 8810 3377'), '0421-8810-3377');
  assert.equal(parsePairingId('0421-8810-337'), null);
  assert.equal(parsePairingId('0421-8810-33770'), null);
  assert.equal(parsePairingId('0421-88a0-3377'), null);
  assert.equal(parsePairingId(''), null);
});

test('commitment mismatch is rejected', async () => {
  const joiner = await generateX25519();
  const other = await generateX25519();
  const commitment = await commitmentOf(joiner.publicKey);
  await checkCommitment(commitment, joiner.publicKey);
  await rejectsWith(checkCommitment(commitment, other.publicKey), 'commitment_mismatch');
  const short = commitment.subarray(0, 31);
  await rejectsWith(checkCommitment(short, joiner.publicKey), 'commitment_mismatch');
});

test('low-order peer keys are non-contributory', async () => {
  const joiner = await generateX25519();
  for (const key of LOW_ORDER_KEYS) {
    await rejectsWith(agreeSharedSecret(joiner.privateKey, key), 'non_contributory');
  }
});

test('peer keys of the wrong length are rejected', async () => {
  const joiner = await generateX25519();
  const peer = await generateX25519();
  const short = peer.publicKey.subarray(0, 31);
  await rejectsWith(agreeSharedSecret(joiner.privateKey, short), 'invalid_length');
  const long = new Uint8Array([...peer.publicKey, 0]);
  await rejectsWith(agreeSharedSecret(joiner.privateKey, long), 'invalid_length');
  await rejectsWith(commitmentOf(new Uint8Array(33)), 'invalid_length');
});

test('wrapped keys of the wrong length are rejected', async () => {
  const link = await pairedLink();
  const wrapped = await wrappedGrant(link, await testGrant());
  await rejectsWith(unwrapSessionKey(link, wrapped.subarray(0, 111)), 'invalid_length');
  await rejectsWith(unwrapSessionKey(link, new Uint8Array([...wrapped, 0])), 'invalid_length');
  await rejectsWith(unwrapSessionKey(link, new Uint8Array(0)), 'invalid_length');
});

test('altered or foreign wraps fail to decrypt', async () => {
  const link = await pairedLink();
  const grant = await testGrant(2);
  const wrapped = await wrappedGrant(link, grant);
  const opened = await unwrapSessionKey(link, wrapped);
  assert.deepEqual(opened.sessionKey, grant.sessionKey);
  assert.equal(opened.epoch, 2);

  for (const index of [3, 4, 20, 111]) {
    const altered = wrapped.slice();
    altered[index] ^= 0x01;
    await rejectsWith(unwrapSessionKey(link, altered), 'decrypt');
  }
  const other = await pairedLink();
  await rejectsWith(unwrapSessionKey(other, wrapped), 'decrypt');
  const swapped = {
    ...link,
    joinerPublic: link.clinicianPublic,
    clinicianPublic: link.joinerPublic,
  };
  await rejectsWith(unwrapSessionKey(swapped, wrapped), 'decrypt');
});

test('wrapped payload with a low-order publisher key is rejected', async () => {
  const link = await pairedLink();
  const grant = { ...(await testGrant()), publisher: new Uint8Array(32) };
  grant.publisher[0] = 1;
  const wrapped = await wrappedGrant(link, grant);
  await rejectsWith(unwrapSessionKey(link, wrapped), 'invalid_publisher_key');
});

test('join sends commitment, then key after B', async () => {
  const clinicianKey = await generateX25519();
  const grant = await testGrant();
  const mailbox = new ScriptedMailbox({ clinicianKey, grant, committedPolls: 2 });
  const shown = [];
  const result = await runJoin(mailbox, { shown });

  assert.deepEqual(mailbox.log, [
    'POST /v1/pairings/0421-8810-3377/commitment',
    'GET /v1/pairings/0421-8810-3377',
    'GET /v1/pairings/0421-8810-3377',
    'GET /v1/pairings/0421-8810-3377',
    'POST /v1/pairings/0421-8810-3377/joiner-key',
    'GET /v1/pairings/0421-8810-3377',
  ]);
  // The code is shown after the page sent A, and before it fetched the wrapped key.
  assert.equal(shown.length, 1);
  assert.equal(shown[0].requests.at(-1), 'POST /v1/pairings/0421-8810-3377/joiner-key');
  assert.equal(shown[0].code.words.length, 4);
  assert.match(shown[0].code.digits, /^[0-9]{6}$/);
  assert.deepEqual(result.sessionKey, grant.sessionKey);
  assert.deepEqual(result.publisher, grant.publisher);
  assert.deepEqual(result.sessionId, grant.sessionId);
  assert.equal(mailbox.cancelled, false);
});

test('join shows the same code as the clinician', async () => {
  const clinicianKey = await generateX25519();
  const mailbox = new ScriptedMailbox({ clinicianKey, grant: await testGrant() });
  const shown = [];
  await runJoin(mailbox, { shown });
  const expected = await pairingCode(mailbox.joinerPublic, clinicianKey.publicKey);
  assert.deepEqual(shown[0].code.words, expected.words);
  assert.equal(shown[0].code.digits, expected.digits);
});

test('join cancels when the codes differ', async () => {
  const mailbox = new ScriptedMailbox({
    clinicianKey: await generateX25519(),
    grant: await testGrant(),
  });
  await rejectsWith(runJoin(mailbox, { answer: false }), 'codes_differ');
  assert.equal(mailbox.cancelled, true);
  // The wrapped key is never requested after a no.
  assert.equal(mailbox.log.at(-1), 'DELETE /v1/pairings/0421-8810-3377');
  assert.equal(mailbox.log.filter((line) => line.startsWith('GET')).length, 1);
});

test('join rejects a low-order clinician key', async () => {
  const mailbox = new ScriptedMailbox({
    clinicianKey: await generateX25519(),
    clinicianPublic: LOW_ORDER_KEYS[0],
    grant: await testGrant(),
  });
  const shown = [];
  await rejectsWith(runJoin(mailbox, { shown }), 'non_contributory');
  assert.equal(shown.length, 0, 'a code was shown');
  assert.ok(!mailbox.log.some((line) => line.endsWith('/joiner-key')), 'A was sent');
  assert.equal(mailbox.cancelled, true);
});

test('join rejects a clinician key of the wrong length', async () => {
  const clinicianKey = await generateX25519();
  const mailbox = new ScriptedMailbox({
    clinicianKey,
    clinicianPublic: clinicianKey.publicKey.subarray(0, 16),
    grant: await testGrant(),
  });
  await rejectsWith(runJoin(mailbox), 'invalid_length');
  assert.ok(!mailbox.log.some((line) => line.endsWith('/joiner-key')), 'A was sent');
});

test('join rejects an altered wrap', async () => {
  const mailbox = new ScriptedMailbox({
    clinicianKey: await generateX25519(),
    grant: await testGrant(),
    tamperWrap: (wrapped) => {
      wrapped[50] ^= 0x80;
      return wrapped;
    },
  });
  await rejectsWith(runJoin(mailbox), 'decrypt');
});

test('join rejects a truncated wrap', async () => {
  const mailbox = new ScriptedMailbox({
    clinicianKey: await generateX25519(),
    grant: await testGrant(),
    tamperWrap: (wrapped) => wrapped.subarray(0, 100),
  });
  await rejectsWith(runJoin(mailbox), 'invalid_length');
});

test('join rejects a status naming another session', async () => {
  const mailbox = new ScriptedMailbox({
    clinicianKey: await generateX25519(),
    grant: await testGrant(),
    sessionIdText: '00112233445566778899aabbccddeeff',
  });
  await rejectsWith(runJoin(mailbox), 'bad_response');
});

test('join maps relay refusals to failures', async () => {
  const cases = [
    [404, { error: 'not_found', message: 'pairing not found' }, 'not_found'],
    [409, { error: 'conflict', message: 'another device already joined' }, 'taken'],
    [409, { error: 'conflict', message: 'pairing 0421-8810-3377 was cancelled' }, 'cancelled'],
    [410, { error: 'expired', message: 'pairing expired' }, 'expired'],
    [410, { error: 'session_ended', message: 'session has ended' }, 'session_ended'],
    [400, { error: 'bad_request', message: 'not 12 digits' }, 'refused'],
  ];
  for (const [status, body, kind] of cases) {
    const fetch = async () => new Response(JSON.stringify(body), { status });
    const env = { fetch, setTimeout: (run) => run(), random: () => 0 };
    const confirmCode = () => true;
    const join = joinPairing({ origin: ORIGIN, pairingId: PAIRING_ID, env, confirmCode });
    await rejectsWith(join, kind);
  }
});

test('join gives up after repeated network failures', async () => {
  let attempts = 0;
  const fetch = async () => {
    attempts += 1;
    throw new TypeError('network down');
  };
  const env = { fetch, setTimeout: (run) => run(), random: () => 0 };
  const confirmCode = () => true;
  const join = joinPairing({ origin: ORIGIN, pairingId: PAIRING_ID, env, confirmCode });
  await rejectsWith(join, 'unreachable');
  assert.equal(attempts, 5);
});
