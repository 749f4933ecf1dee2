// The page's EpochOpener against the grace rule of docs/protocol.md section 14.3, with frames
// sealed by test-support/seal.mjs under several key epochs.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import { EpochOpener, GRACE_FRAMES } from '../opener.js';
import { importSessionKey } from '../protocol.js';
import { TestStream } from '../test-support/seal.mjs';

const sessionId = randomBytes(16);

async function streamOf(keyBytes, keyEpoch, streamId = randomBytes(16)) {
  return TestStream.create(keyBytes, sessionId, streamId, new Uint8Array(32), keyEpoch);
}

function segment(id) {
  return {
    segmentId: id,
    revision: 0,
    speaker: 'doctor',
    startMs: id,
    endMs: id + 1,
    text: `line ${id}`,
    final: true,
  };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error.kind;
  }
  return null;
}

test('previous epoch opens until grace ends', async () => {
  const oldBytes = randomBytes(32);
  const newBytes = randomBytes(32);
  const opener = new EpochOpener(await importSessionKey(oldBytes), sessionId, 0);
  const old = await streamOf(oldBytes, 0);
  const rotated = await streamOf(newBytes, 1);

  await opener.open(await old.sealSegment(segment(0)));
  const early = await rotated.sealSegment(segment(1));
  assert.equal(await rejection(opener.open(early)), 'unknown_epoch');
  assert.equal(opener.currentEpoch, 0);

  opener.addKey(1, await importSessionKey(newBytes));
  await opener.open(early);
  assert.equal(opener.currentEpoch, 1);
  for (let id = 2; id < GRACE_FRAMES; id += 1) {
    await opener.open(await rotated.sealSegment(segment(id)));
  }
  // 63 frames of epoch 1 opened: the old stream still opens.
  await opener.open(await old.sealSegment(segment(100)));
  await opener.open(await rotated.sealSegment(segment(GRACE_FRAMES)));
  assert.equal(await rejection(opener.open(await old.sealSegment(segment(101)))), 'expired_epoch');
});

test('older epochs and changed streams are rejected', async () => {
  const keys = [randomBytes(32), randomBytes(32), randomBytes(32)];
  const opener = new EpochOpener(await importSessionKey(keys[0]), sessionId, 0);
  const zero = await streamOf(keys[0], 0);
  const two = await streamOf(keys[2], 2);
  await opener.open(await zero.sealSegment(segment(0)));
  opener.addKey(2, await importSessionKey(keys[2]));
  await opener.open(await two.sealSegment(segment(1)));

  assert.equal(opener.hasKey(0), false, 'the key of epoch 0 was kept');
  assert.equal(await rejection(opener.open(await zero.sealSegment(segment(2)))), 'expired_epoch');
  assert.throws(() => opener.addKey(0, null), { kind: 'expired_epoch' });

  // A stream that opened under epoch 2 cannot go on under epoch 3.
  const streamId = randomBytes(16);
  const before = await streamOf(keys[2], 2, streamId);
  await opener.open(await before.sealSegment(segment(3)));
  opener.addKey(3, await importSessionKey(keys[1]));
  const after = await streamOf(keys[1], 3, streamId);
  await after.sealSegment(segment(4));
  const moved = await after.sealSegment(segment(5));
  assert.equal(await rejection(opener.open(moved)), 'stream_changed_epoch');
  assert.equal(opener.currentEpoch, 2);
});
