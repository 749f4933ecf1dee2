// The paired page's long-poll for the keys of later key epochs, against a scripted relay. A key
// the page ignores is not fetched again, and a relay that returns it anyway meets a growing
// delay. Each ignored epoch is reported once.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { bytesToHex, encodeBase64url } from '../bytes.js';
import { receiveLaterKeys, wrappedKeyEpoch } from '../paired-keys.js';
import { agreeSharedSecret } from '../pairing.js';
import { generateX25519, wrapPayload } from '../test-support/pairing.mjs';
import { generateSigningKey } from '../test-support/seal.mjs';

const ORIGIN = 'https://relay.example:8443';

async function pairedLink() {
  const joiner = await generateX25519();
  const clinician = await generateX25519();
  const shared = await agreeSharedSecret(joiner.privateKey, clinician.publicKey);
  return { shared, joinerPublic: joiner.publicKey, clinicianPublic: clinician.publicKey };
}

async function wrapGrant(link, epoch, sessionId, publisher) {
  const sessionKey = crypto.getRandomValues(new Uint8Array(32));
  const payload = new Uint8Array([...sessionId, ...sessionKey, ...publisher]);
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  return encodeBase64url(await wrapPayload(link, epoch, nonce, payload));
}

/**
 * Runs receiveLaterKeys against a relay that stores `stored` (`[epoch, wrapped text]` pairs) and
 * returns those after the requested epoch, or all of them when `ignoreAfter` is set. After
 * `maxFetches` fetches the relay responds with `finalStatus`: 401 rejects the follow token, and
 * 410 reports that the session ended. Resolves to the `after` of each fetch, the epochs handed on, the delays
 * waited, the warnings and the reasons passed to `onStop`.
 */
async function runAgainst({
  link,
  grant,
  stored,
  ignoreAfter = false,
  maxFetches,
  finalStatus = 401,
}) {
  const fetches = [];
  const delays = [];
  const keys = [];
  const warnings = [];
  const stops = [];
  const env = {
    fetch: async (url) => {
      const after = Number(url.searchParams.get('after'));
      fetches.push(after);
      if (fetches.length > maxFetches) {
        return { status: finalStatus, text: async () => '{"error":"stopped"}' };
      }
      const wrappedKeys = stored
        .filter(([epoch]) => ignoreAfter || epoch > after)
        .map(([, text]) => text);
      return { status: 200, text: async () => JSON.stringify({ wrapped_keys: wrappedKeys }) };
    },
    setTimeout: (run, delay) => {
      delays.push(delay);
      run();
    },
    random: () => 0,
  };
  const warn = console.warn;
  console.warn = (...args) => warnings.push(args.join(' '));
  try {
    const { done } = receiveLaterKeys({
      origin: ORIGIN,
      followToken: 'token',
      pairing: { ...link, shared: link.shared.slice() },
      grant,
      env,
      onKey: async (epoch) => keys.push(epoch),
      onStop: (reason) => stops.push(reason),
    });
    await done;
  } finally {
    console.warn = warn;
  }
  return { fetches, keys, delays, warnings, stops };
}

async function pairing() {
  const link = await pairedLink();
  const sessionId = crypto.getRandomValues(new Uint8Array(16));
  const { publicKey: publisher } = await generateSigningKey();
  const { publicKey: otherPublisher } = await generateSigningKey();
  const grant = { epoch: 0, sessionIdHex: bytesToHex(sessionId), publisher };
  return { link, sessionId, publisher, otherPublisher, grant };
}

test('ignored key is not fetched again', async () => {
  const { link, sessionId, otherPublisher, grant } = await pairing();
  const stored = [[1, await wrapGrant(link, 1, sessionId, otherPublisher)]];

  const { fetches, keys, warnings } = await runAgainst({ link, grant, stored, maxFetches: 3 });
  assert.deepEqual(fetches, [0, 1, 1, 1]);
  assert.deepEqual(keys, []);
  assert.equal(warnings.length, 1, warnings.join('\n'));
  assert.match(warnings[0], /key epoch 1/);
});

test('session end stops the fetches', async () => {
  const { link, grant } = await pairing();

  const ended = await runAgainst({ link, grant, stored: [], maxFetches: 2, finalStatus: 410 });
  assert.deepEqual(ended.fetches, [0, 0, 0]);
  assert.deepEqual(ended.delays, [], 'the page waited to retry after the session ended');
  assert.deepEqual(ended.stops, ['ended']);

  const removed = await runAgainst({ link, grant, stored: [], maxFetches: 0 });
  assert.deepEqual(removed.fetches, [0]);
  assert.deepEqual(removed.stops, ['revoked']);
});

test('later key follows an ignored one', async () => {
  const { link, sessionId, publisher, otherPublisher, grant } = await pairing();
  const stored = [
    [1, await wrapGrant(link, 1, sessionId, otherPublisher)],
    [2, await wrapGrant(link, 2, sessionId, publisher)],
  ];

  const { fetches, keys, delays } = await runAgainst({ link, grant, stored, maxFetches: 2 });
  assert.deepEqual(fetches, [0, 2, 2]);
  assert.deepEqual(keys, [2]);
  assert.deepEqual(delays, []);
});

test('repeated ignored key backs off', async () => {
  const { link, sessionId, otherPublisher, grant } = await pairing();
  const stored = [[1, await wrapGrant(link, 1, sessionId, otherPublisher)]];

  const { fetches, delays, warnings } = await runAgainst({
    link,
    grant,
    stored,
    ignoreAfter: true,
    maxFetches: 4,
  });
  assert.equal(fetches.length, 5);
  assert.deepEqual(delays, [1000, 2000, 4000, 8000]);
  assert.equal(warnings.length, 1, warnings.join('\n'));
});

test('wrapped key epoch is read', async () => {
  const link = await pairedLink();
  const { publicKey } = await generateSigningKey();
  const text = await wrapGrant(link, 7, new Uint8Array(16), publicKey);
  const wrapped = Uint8Array.from(Buffer.from(text, 'base64url'));
  assert.equal(wrappedKeyEpoch(wrapped), 7);
  assert.equal(wrappedKeyEpoch(wrapped.subarray(1)), null);
});
