// The authorship verifier against streams that the test seals and signs. The cases are forged,
// altered and malformed checkpoints, frames no signature lists, missing final frames and
// streams with no end. Then come the summary the page shows, the Ed25519 point checks and
// publisher keys in links.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import {
  AuthorshipVerifier,
  describeVerdict,
  encodeEndorsement,
  importPublisherKey,
  summarizeAuthorship,
} from '../authorship.js';
import { Y8, hasSmallOrder, isValidPublicKey, orderEightEquation } from '../ed25519.js';
import { StreamOpener } from '../opener.js';
import {
  bytesToHex,
  encodeBase64url,
  hexToBytes,
  importSessionKey,
  parseInvite,
  splitInviteAddress,
} from '../protocol.js';
import { TestStream, generateSigningKey } from '../test-support/seal.mjs';
import { authorshipText } from '../view.js';

const P = (1n << 255n) - 19n;
const keyBytes = randomBytes(32);
const sessionId = randomBytes(16);
const sessionKey = await importSessionKey(keyBytes);
const device = await generateSigningKey();
const publisher = await importPublisherKey(device.publicKey);
const other = await generateSigningKey();

function segment(id, final) {
  return {
    segmentId: id,
    revision: final ? 1 : 0,
    speaker: 'doctor',
    startMs: id * 1000,
    endMs: id * 1000 + 800,
    text: `line ${id}`,
    final,
  };
}

/** Starts a stream that a test builds frame by frame, with its frames listed by sequence number. */
async function newStream() {
  const streamId = randomBytes(16);
  const stream = await TestStream.create(keyBytes, sessionId, streamId);
  return { stream, streamIdHex: bytesToHex(streamId), frames: [] };
}

async function addSegments(script, ids, final = true) {
  for (const id of ids) {
    script.frames.push(await script.stream.sealSegment(segment(id, final)));
  }
}

async function addSigned(script, signingKey, options) {
  script.frames.push(await script.stream.sealSigned(signingKey, options));
}

/** Opens the frames at `seqs` (all when omitted) and returns the verifier's verdict notation. */
async function verdictOf(script, seqs = script.frames.map((_, seq) => seq)) {
  const { verifier } = await observe(script, seqs);
  return describeVerdict(verifier.verdict(script.streamIdHex));
}

async function observe(script, seqs, key = publisher) {
  const opener = new StreamOpener(sessionKey, sessionId);
  const verifier = new AuthorshipVerifier(key);
  const results = [];
  for (const seq of seqs) {
    const frame = script.frames[seq];
    results.push(await verifier.observe(frame, await opener.open(frame)));
  }
  return { verifier, results };
}

// Verdicts of single streams

test('signed stream is complete', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  await addSigned(script, device.signingKey);
  await addSegments(script, [3]);
  await addSigned(script, device.signingKey, { kind: 3, finalSegments: 3 });
  assert.equal(await verdictOf(script), 'complete');
});

test('checkpoint closing the stream completes it', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  await addSigned(script, device.signingKey, { streamEnd: true });
  assert.equal(await verdictOf(script), 'complete');
});

test('checkpoint of another key is forged', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2, 3]);
  await addSigned(script, other.signingKey, { kind: 3, finalSegments: 3 });
  const { verifier, results } = await observe(script, [0, 1, 2, 3]);
  assert.equal(results[3].result, 'rejected');
  assert.equal(results[3].error.kind, 'bad_signature');
  assert.equal(
    describeVerdict(verifier.verdict(script.streamIdHex)),
    'unverified:0-3 bad_signature:3 end_not_seen:3',
  );
});

test('altered checkpoint content fails its signature', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  // The content lists a zero hash for frame 0, but the signature covers the real one.
  const alter = (content) => {
    const listed = hexToBytes(
      bytesToHex(Buffer.from(content.frames, 'base64url')).replace(/^.{64}/, '0'.repeat(64)),
    );
    content.frames = encodeBase64url(listed);
  };
  await addSigned(script, device.signingKey, { change: alter });
  await addSigned(script, device.signingKey, { kind: 3, finalSegments: 2 });
  // The end lists the frames after the checkpoint, so nothing verifies frames 0 to 2.
  assert.equal(await verdictOf(script), 'unverified:0-2 bad_signature:2');
});

// Streams of a second device endorsed by the device whose key the link carries

/** Returns a `change` that adds an endorsement of `endorsed` signed by `endorser`. */
async function endorse(endorser, endorsed, { keyEpoch = 0, edit } = {}) {
  const message = encodeEndorsement(sessionId, keyEpoch, endorsed.publicKey);
  const signature = new Uint8Array(
    await crypto.subtle.sign('Ed25519', endorser.signingKey, message),
  );
  const endorsement = {
    device: encodeBase64url(endorsed.publicKey),
    key_epoch: keyEpoch,
    signature: encodeBase64url(signature),
  };
  edit?.(endorsement);
  return (content) => {
    content.endorsement = endorsement;
  };
}

test('endorsed device stream is complete and names the device', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  const change = await endorse(device, other);
  await addSigned(script, other.signingKey, { change });
  await addSegments(script, [3]);
  await addSigned(script, other.signingKey, { kind: 3, finalSegments: 3, change });
  const { verifier } = await observe(script, [0, 1, 2, 3, 4]);
  const verdict = verifier.verdict(script.streamIdHex);
  assert.equal(verdict.state, 'complete');
  assert.deepEqual(verdict.endorsedDevice, other.publicKey);
  const summary = summarizeAuthorship(verifier, {
    ended: true,
    timeOf: () => undefined,
    signedUpToMs: null,
  });
  assert.deepEqual(summary, { state: 'complete', endorsed: true });
  assert.equal(
    authorshipText(summary),
    "The transcript is complete and signed by the clinician's devices. Part of it comes from " +
      "a second device of the clinician, which the clinician's device approved.",
  );
});

test('endorsement not signed by the link key is rejected', async () => {
  const third = await generateSigningKey();
  const cases = {
    'signed by the device itself': await endorse(other, other),
    'signed by a stranger': await endorse(third, other),
    'for a later key epoch': await endorse(device, other, { keyEpoch: 1 }),
    'naming another device': await endorse(device, third),
  };
  for (const [name, change] of Object.entries(cases)) {
    const script = await newStream();
    await addSegments(script, [1, 2]);
    await addSigned(script, other.signingKey, { kind: 3, finalSegments: 2, change });
    const { verifier, results } = await observe(script, [0, 1, 2]);
    assert.equal(results[2].result, 'rejected', name);
    const expected = name === 'naming another device' ? 'bad_signature' : 'invalid_endorsement';
    assert.equal(results[2].error.kind, expected, name);
    assert.equal(
      describeVerdict(verifier.verdict(script.streamIdHex)),
      'unverified:0-2 bad_signature:2 end_not_seen:2',
      name,
    );
  }
});

test('malformed endorsement is rejected', async () => {
  const cases = {
    'device too short': (endorsement) => {
      endorsement.device = endorsement.device.slice(0, 40);
    },
    'signature too short': (endorsement) => {
      endorsement.signature = encodeBase64url(new Uint8Array(63));
    },
    'epoch not a number': (endorsement) => {
      endorsement.key_epoch = '0';
    },
    'unknown field': (endorsement) => {
      endorsement.extra = 1;
    },
  };
  for (const [name, edit] of Object.entries(cases)) {
    const script = await newStream();
    await addSegments(script, [1]);
    const change = await endorse(device, other, { edit });
    await addSigned(script, other.signingKey, { kind: 3, finalSegments: 1, change });
    const { results } = await observe(script, [0, 1]);
    assert.equal(results[1].result, 'rejected', name);
    assert.notEqual(results[1].error.kind, 'bad_signature', name);
  }
});

test('stream that changes signer is not complete', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  await addSigned(script, device.signingKey);
  await addSegments(script, [3]);
  const change = await endorse(device, other);
  await addSigned(script, other.signingKey, { kind: 3, finalSegments: 3, change });
  const { verifier, results } = await observe(script, [0, 1, 2, 3, 4]);
  assert.equal(results[4].error.kind, 'signer_changed');
  assert.equal(
    describeVerdict(verifier.verdict(script.streamIdHex)),
    'unverified:3-4 bad_signature:4 end_not_seen:4',
  );
});

test('malformed checkpoint is rejected', async () => {
  const cases = {
    'frames one hash short': (content) => {
      content.frames = content.frames.slice(0, 22);
    },
    'frames padded': (content) => {
      content.frames += '=';
    },
    'signature too short': (content) => {
      content.signature = encodeBase64url(new Uint8Array(63));
    },
    'first seq after the frame': (content) => {
      content.first_seq = 5n;
    },
    'stream end not boolean': (content) => {
      content.stream_end = 1;
    },
  };
  for (const [name, change] of Object.entries(cases)) {
    const script = await newStream();
    await addSegments(script, [1]);
    await addSigned(script, device.signingKey, { change });
    const { results } = await observe(script, [0, 1]);
    assert.equal(results[1].result, 'rejected', name);
    assert.equal(results[1].error.kind, 'malformed_checkpoint', name);
  }
});

test('signature with small-order R is rejected', async () => {
  const script = await newStream();
  await addSegments(script, [1]);
  const identity = new Uint8Array(64);
  identity[0] = 1;
  await addSigned(script, device.signingKey, {
    change: (content) => {
      content.signature = encodeBase64url(identity);
    },
  });
  const { results } = await observe(script, [0, 1]);
  assert.equal(results[1].result, 'rejected');
  assert.equal(results[1].error.kind, 'bad_signature');
});

test('frame the signature does not list stays unverified', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  // A valid signature that starts its list after frame 0.
  const skipFirst = (content, statement) => {
    content.first_seq = 1n;
    content.frames = encodeBase64url(statement.frameHashes[1]);
    statement.firstSeq = 1n;
    statement.frameHashes = statement.frameHashes.slice(1);
  };
  await addSigned(script, device.signingKey, { change: skipFirst });
  await addSigned(script, device.signingKey, { kind: 3, finalSegments: 2 });
  assert.equal(await verdictOf(script), 'unverified:0-0');
});

test('frame listed with another hash stays unverified', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  const replaceFirst = (content, statement) => {
    statement.frameHashes = [new Uint8Array(32), statement.frameHashes[1]];
    const listed = new Uint8Array([...new Uint8Array(32), ...statement.frameHashes[1]]);
    content.frames = encodeBase64url(listed);
  };
  await addSigned(script, device.signingKey, { change: replaceFirst });
  await addSigned(script, device.signingKey, { kind: 3, finalSegments: 2 });
  assert.equal(await verdictOf(script), 'unverified:0-0');
});

test('skipped final frames are missing, skipped interim ones are not', async () => {
  const script = await newStream();
  await addSegments(script, [1], false);
  await addSegments(script, [1, 2]);
  await addSigned(script, device.signingKey);
  await addSigned(script, device.signingKey, { kind: 3, finalSegments: 2 });
  assert.equal(await verdictOf(script, [1, 2, 3, 4]), 'complete');
  assert.equal(await verdictOf(script, [0, 3, 4]), 'missing:1-2/2');
  // Without the checkpoint, no signature lists frames 0 and 1.
  assert.equal(await verdictOf(script, [0, 1, 4]), 'unverified:0-1 missing:2-3/1');
});

test('stream without a closing signature has no end', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  await addSigned(script, device.signingKey);
  await addSegments(script, [3]);
  assert.equal(await verdictOf(script), 'unverified:3-3 end_not_seen:3');
  assert.equal(await verdictOf(script, [0, 1, 2]), 'end_not_seen:2');
});

test('frames after the closing signature stay unverified', async () => {
  const script = await newStream();
  await addSegments(script, [1]);
  await addSigned(script, device.signingKey, { streamEnd: true });
  await addSegments(script, [2]);
  await addSigned(script, device.signingKey);
  assert.equal(await verdictOf(script), 'unverified:2-3');
});

test('verifier without a key checks nothing', async () => {
  const script = await newStream();
  await addSegments(script, [1]);
  const { verifier, results } = await observe(script, [0], null);
  assert.equal(results[0].result, 'not_checkable');
  assert.equal(verifier.checkable, false);
  assert.deepEqual(verifier.verdict(script.streamIdHex), { state: 'not_checkable' });
});

// The summary the page shows

async function summaryOf(scripts, { ended, key = publisher } = {}) {
  const opener = new StreamOpener(sessionKey, sessionId);
  const verifier = new AuthorshipVerifier(key);
  const times = new Map();
  let signedUpToMs = null;
  for (const script of scripts) {
    for (const frame of script.frames) {
      const opened = await opener.open(frame);
      const observed = await verifier.observe(frame, opened);
      if (opened.header.kind <= 2) {
        const content = JSON.parse(new TextDecoder().decode(opened.content));
        times.set(`${script.streamIdHex}/${opened.header.seq}`, content.start_ms);
      }
      if (observed.result === 'signed') {
        for (const [name, time] of times) {
          const [stream, seq] = name.split('/');
          if (!verifier.isUnverified(stream, BigInt(seq))) {
            signedUpToMs = Math.max(signedUpToMs ?? time, time);
            times.delete(name);
          }
        }
      }
    }
  }
  const timeOf = (stream, seq) => times.get(`${stream}/${seq}`);
  return summarizeAuthorship(verifier, { ended, timeOf, signedUpToMs });
}

test('summary of a live stream waits for its next checkpoint', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  assert.deepEqual(await summaryOf([script], { ended: false }), { state: 'waiting' });
  await addSigned(script, device.signingKey);
  await addSegments(script, [3, 4]);
  assert.deepEqual(await summaryOf([script], { ended: false }), {
    state: 'signed_so_far',
    signedUpToMs: 2000,
    endorsed: false,
  });
});

test('summary of a stream overdue for a checkpoint warns', async () => {
  const script = await newStream();
  await addSegments(script, Array.from({ length: 16 }, (_, index) => index + 1));
  assert.equal((await summaryOf([script], { ended: false })).state, 'waiting');
  await addSegments(script, [17]);
  const summary = await summaryOf([script], { ended: false });
  assert.equal(summary.state, 'warning');
  assert.deepEqual(summary.unsigned, { frames: 17n, fromMs: 1000, toMs: 17000 });
});

test('summary of a forged stream names its lines', async () => {
  const signed = await newStream();
  await addSegments(signed, [1, 2]);
  await addSigned(signed, device.signingKey, { streamEnd: true });
  const forged = await newStream();
  await addSegments(forged, [61, 62]);
  await addSigned(forged, other.signingKey, { streamEnd: true });

  const live = await summaryOf([signed, forged], { ended: false });
  assert.equal(live.state, 'warning');
  assert.equal(live.badSignatures, 1);
  assert.deepEqual(live.unsigned, { frames: 3n, fromMs: 61000, toMs: 62000 });
  assert.equal(
    authorshipText(live),
    'Warning: this transcript could not be fully checked. Lines from 1:01 to 1:02 are not ' +
      "signed by the clinician's device, so someone else may have written them. 1 signature " +
      "did not match the clinician's device.",
  );

  const ended = await summaryOf([signed, forged], { ended: true });
  assert.equal(ended.endNotSigned, true);
  assert.match(authorshipText(ended), /The signed end of the transcript did not arrive/);
});

test('summary at the end is complete or names what is missing', async () => {
  const script = await newStream();
  await addSegments(script, [1, 2]);
  await addSigned(script, device.signingKey);
  assert.equal((await summaryOf([script], { ended: true })).state, 'warning');
  await addSigned(script, device.signingKey, { kind: 3, finalSegments: 2 });
  const complete = await summaryOf([script], { ended: true });
  assert.deepEqual(complete, { state: 'complete', endorsed: false });
  assert.equal(
    authorshipText(complete),
    "The transcript is complete and signed by the clinician's device.",
  );

  const nothing = await summaryOf([], { ended: true });
  assert.equal(nothing.nothingArrived, true);
  assert.match(authorshipText(nothing), /No transcript signed by the clinician's device arrived/);
});

test('summary without a key says authorship cannot be checked', async () => {
  const script = await newStream();
  await addSegments(script, [1]);
  const summary = await summaryOf([script], { ended: true, key: null });
  assert.deepEqual(summary, { state: 'not_checkable' });
  assert.match(authorshipText(summary), /cannot check who wrote the transcript/);
});

test('summary text of a live signed stream names the time', () => {
  assert.equal(
    authorshipText({ state: 'signed_so_far', signedUpToMs: 125000 }),
    "Signed by the clinician's device up to the line at 2:05.",
  );
});

// Ed25519 points and publisher keys in links

function encodeY(y, sign = 0) {
  const bytes = new Uint8Array(32);
  let rest = y;
  for (let i = 0; i < 32; i += 1) {
    bytes[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  bytes[31] |= sign << 7;
  return bytes;
}

test('order-8 y-coordinate solves its equation', () => {
  assert.equal(orderEightEquation(Y8), 0n);
  assert.equal(orderEightEquation(P - Y8), 0n);
  assert.notEqual(orderEightEquation(Y8 + 1n), 0n);
});

test('small-order and non-canonical keys are invalid', () => {
  for (const y of [0n, 1n, P - 1n, Y8, P - Y8]) {
    for (const sign of [0, 1]) {
      assert.equal(isValidPublicKey(encodeY(y, sign)), false, `y=${y} sign=${sign}`);
      assert.equal(hasSmallOrder(encodeY(y, sign)), true, `y=${y} sign=${sign}`);
    }
  }
  // y = p and y = p + 1 encode 0 and 1 without reduction.
  assert.equal(hasSmallOrder(encodeY(P)), true);
  assert.equal(hasSmallOrder(encodeY(P + 1n)), true);
  assert.equal(isValidPublicKey(encodeY(P + 1n)), false);
  assert.equal(isValidPublicKey(new Uint8Array(31)), false);
});

test('generated keys are valid and not small order', async () => {
  for (let i = 0; i < 20; i += 1) {
    const { publicKey } = await generateSigningKey();
    assert.equal(isValidPublicKey(publicKey), true, bytesToHex(publicKey));
    assert.equal(hasSmallOrder(publicKey), false);
  }
});

test('y-coordinates off the curve are invalid', () => {
  // About half of all y-coordinates have no x on the curve: 2 is one of them.
  assert.equal(isValidPublicKey(encodeY(2n)), false);
  assert.equal(isValidPublicKey(encodeY(3n)), true);
});

test('publisher key in a link is read or rejected', async () => {
  const token = encodeBase64url(randomBytes(32));
  const secret = encodeBase64url(keyBytes);
  const key = encodeBase64url(device.publicKey);
  const parse = (link) => parseInvite(splitInviteAddress(new URL(link)));

  const plain = parse(`https://relay.example/join?token=${token}#secret=${secret}`);
  assert.equal(plain.publisher, null);
  const base = `https://relay.example/join?token=${token}`;
  const signed = parse(`${base}#publisher=${key}&secret=${secret}`);
  assert.deepEqual(signed.publisher, device.publicKey);
  const escaped = parse(`${base}%23publisher=${key}&secret=${secret}`);
  assert.deepEqual(escaped.publisher, device.publicKey);
  assert.deepEqual(escaped.key, new Uint8Array(keyBytes));

  const invalid = [
    '',
    key.slice(0, 42),
    key.replace(/^./, '+'),
    encodeBase64url(encodeY(1n)),
    encodeBase64url(encodeY(2n)),
  ];
  for (const text of invalid) {
    assert.throws(
      () => parse(`https://relay.example/join?token=${token}#publisher=${text}&secret=${secret}`),
      (error) => error.kind === 'invalid_publisher_key',
      text,
    );
  }
  await assert.rejects(importPublisherKey(encodeY(1n)), (error) => {
    return error.kind === 'invalid_publisher_key';
  });
});
