// Wire-format checks beyond the document's vectors: base64url edge cases, the lossless JSON
// parser, header and padding errors, segment parsing, and an opener that rejects every altered,
// replayed, reordered or foreign frame.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parseJson } from '../json.js';
import { StreamOpener } from '../opener.js';
import {
  bytesToHex,
  decodeBase64url,
  decodeDelivery,
  decodeFrameHeader,
  decodeHeader,
  encodeBase64url,
  importSessionKey,
  parseEndOfSession,
  parseFingerprint,
  parseId,
  parseSegment,
  unpad,
} from '../protocol.js';
import { TestStream } from '../test-support/seal.mjs';

const encoder = new TextEncoder();
const keyBytes = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
const sessionId = new Uint8Array(16).fill(0x31);
const streamA = new Uint8Array(16).fill(0xa1);
const streamB = new Uint8Array(16).fill(0xb2);

function segment(id, revision, final, text = `segment ${id} revision ${revision}`) {
  return {
    segmentId: id,
    revision,
    speaker: 'doctor',
    startMs: id * 1000,
    endMs: id * 1000 + 900,
    text,
    final,
  };
}

async function sealedStream(segments, stream = streamA) {
  const sealer = await TestStream.create(keyBytes, sessionId, stream);
  const frames = [];
  for (const item of segments) {
    frames.push(await sealer.sealSegment(item));
  }
  return frames;
}

async function newOpener(key = keyBytes, session = sessionId) {
  return new StreamOpener(await importSessionKey(key), session);
}

async function openError(opener, frame) {
  try {
    await opener.open(frame);
  } catch (error) {
    return error.kind;
  }
  return 'opened';
}

test('base64url round trip for every length', () => {
  for (let length = 0; length <= 40; length += 1) {
    const bytes = Uint8Array.from({ length }, (_, i) => (i * 89 + length) & 0xff);
    const text = encodeBase64url(bytes);
    assert.ok(!text.includes('='), text);
    assert.deepEqual(decodeBase64url(text), bytes);
    const padded = text + '='.repeat((4 - (text.length % 4)) % 4);
    assert.deepEqual(decodeBase64url(padded), bytes, padded);
  }
});

test('base64url rejects non-canonical text', () => {
  assert.equal(decodeBase64url('ab+c'), null, 'standard alphabet plus');
  assert.equal(decodeBase64url('ab/c'), null, 'standard alphabet slash');
  assert.equal(decodeBase64url('abcde'), null, 'length 1 modulo 4');
  assert.deepEqual(decodeBase64url('AA=='), new Uint8Array([0]), 'canonical padding');
  assert.equal(decodeBase64url('AB=='), null, 'non-zero trailing bits with padding');
  assert.equal(decodeBase64url('AB'), null, 'non-zero trailing bits');
  assert.equal(decodeBase64url('AAB'), null, 'non-zero trailing bits, two bytes');
  assert.equal(decodeBase64url('AA='), null, 'too little padding');
  assert.equal(decodeBase64url('AA==='), null, 'too much padding');
  assert.equal(decodeBase64url('AAA=='), null, 'padding that the length does not need');
  assert.equal(decodeBase64url('A=A='), null, 'padding inside');
  assert.deepEqual(decodeBase64url('AA%3D%3D'), new Uint8Array([0]), 'escaped padding');
});

test('json keeps u64 integers exact', () => {
  const value = parseJson('{"epoch":18446744073709551615,"small":7,"ratio":0.5,"exp":1e3}');
  assert.equal(value.epoch, 18446744073709551615n);
  assert.equal(value.small, 7n);
  assert.equal(value.ratio, 0.5);
  assert.equal(value.exp, 1000);
});

test('json parses nested values and escapes', () => {
  const value = parseJson(
    ' {"a":[1,-2,{"b":null}],"t":"x\\"y\\u00e9\\n","f":false,"__proto__":1} ',
  );
  assert.deepEqual(value.a, [1n, -2n, { b: null }]);
  assert.equal(value.t, 'x"yé\n');
  assert.equal(value.f, false);
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.equal(Object.hasOwn(value, '__proto__'), true);
});

test('json rejects invalid text', () => {
  for (const text of [
    '',
    '{',
    '{"a":1,}',
    '[1 2]',
    '{"a":1}x',
    '01',
    '"\\x"',
    'nul',
    '{"a":1,"a":2}',
  ]) {
    assert.throws(() => parseJson(text), SyntaxError, text);
  }
});

test('header decode rejects bad fields', async () => {
  const [frame] = await sealedStream([segment(1, 0, true)]);
  const cases = [
    [0, 2, 'unsupported_version'],
    [1, 9, 'unknown_kind'],
    [1, 5, 'unknown_kind'],
    [1, 0, 'unknown_kind'],
    [2, 9, 'invalid_bucket'],
    [3, 1, 'reserved_flags'],
  ];
  for (const [offset, value, kind] of cases) {
    const bad = frame.slice();
    bad[offset] = value;
    assert.throws(() => decodeHeader(bad), { kind }, `byte ${offset} = ${value}`);
  }
  assert.throws(() => decodeHeader(frame.subarray(0, 87)), { kind: 'truncated' });
  assert.throws(() => decodeFrameHeader(frame.subarray(0, frame.length - 1)), {
    kind: 'length_mismatch',
  });
  assert.throws(() => decodeFrameHeader(new Uint8Array([...frame, 0])), {
    kind: 'length_mismatch',
  });
  assert.equal(decodeFrameHeader(frame).seq, 0n);
});

test('unpad checks prefix and padding', () => {
  const padded = new Uint8Array(256);
  padded.set([0, 0, 0, 5, 104, 101, 108, 108, 111]);
  assert.equal(new TextDecoder().decode(unpad(padded)), 'hello');
  const dirty = padded.slice();
  dirty[200] = 1;
  assert.throws(() => unpad(dirty), { kind: 'malformed_plaintext' });
  const long = padded.slice();
  long[0] = 0xff;
  assert.throws(() => unpad(long), { kind: 'malformed_plaintext' });
  assert.throws(() => unpad(new Uint8Array(3)), { kind: 'malformed_plaintext' });
});

test('segment parsing checks every field', () => {
  const valid = {
    segment_id: 3,
    revision: 1,
    speaker: 'patient',
    start_ms: 10,
    end_ms: 20,
    text: 'hi',
    final: false,
  };
  const encode = (object) => encoder.encode(JSON.stringify(object));
  const parsed = parseSegment(encoder.encode(JSON.stringify({ extra: true, ...valid })));
  assert.equal(parsed.segmentId, 3n);
  assert.equal(parsed.text, 'hi');

  const broken = [
    ['segment_id', -1],
    ['segment_id', 1.5],
    ['revision', 4294967296],
    ['speaker', 5],
    ['start_ms', '10'],
    ['text', null],
    ['final', 'yes'],
  ];
  for (const [name, value] of broken) {
    assert.throws(
      () => parseSegment(encode({ ...valid, [name]: value })),
      { kind: 'malformed_plaintext' },
      name,
    );
  }
  for (const name of Object.keys(valid)) {
    const { [name]: _, ...missing } = valid;
    assert.throws(() => parseSegment(encode(missing)), { kind: 'malformed_plaintext' }, name);
  }
  assert.throws(() => parseSegment(new Uint8Array([0x7b, 0xff, 0x7d])), {
    kind: 'malformed_plaintext',
  });
  assert.equal(parseEndOfSession(encoder.encode('{"final_segments":4}')).finalSegments, 4n);
  assert.throws(() => parseEndOfSession(encoder.encode('{}')), { kind: 'malformed_plaintext' });
});

test('ids, fingerprints and deliveries parse', () => {
  assert.equal(
    bytesToHex(parseId('0123456789ABCDEF0123456789abcdef')),
    '0123456789abcdef0123456789abcdef',
  );
  assert.equal(parseId('0123'), null);
  assert.equal(parseId('0123456789abcdef0123456789abcdeg'), null);
  assert.equal(parseFingerprint('NxD8nmpguRARcYbX5md_0Q').length, 16);
  assert.deepEqual(
    parseFingerprint('NxD8nmpguRARcYbX5md_0Q=='),
    parseFingerprint('NxD8nmpguRARcYbX5md_0Q'),
  );
  assert.equal(parseFingerprint('NxD8nmpguRARcYbX5md'), null);
  assert.equal(decodeDelivery(new Uint8Array(7)), null);
  const delivery = decodeDelivery(new Uint8Array([0, 0, 0, 0, 0, 0, 1, 2, 9]));
  assert.equal(delivery.offset, 258n);
  assert.deepEqual([...delivery.frame], [9]);
});

test('every single bit flip fails to open', async () => {
  const [frame] = await sealedStream([segment(1, 0, true)]);
  const opener = await newOpener();
  const outcomes = new Map();
  for (let bit = 0; bit < frame.length * 8; bit += 1) {
    const flipped = frame.slice();
    flipped[bit >> 3] ^= 1 << (bit & 7);
    const kind = await openError(opener, flipped);
    assert.notEqual(kind, 'opened', `bit ${bit} flipped`);
    outcomes.set(kind, (outcomes.get(kind) ?? 0) + 1);
  }
  assert.ok(outcomes.get('decrypt') > 2000, `decrypt failures: ${outcomes.get('decrypt')}`);
  // No failed frame changed the receiver state, so the original still opens as the first frame.
  const opened = await opener.open(frame);
  assert.equal(opened.chainVerified, true);
});

test('truncated, extended and foreign frames fail', async () => {
  const [frame] = await sealedStream([segment(1, 0, true)]);
  const opener = await newOpener();
  assert.equal(await openError(opener, frame.subarray(0, frame.length - 16)), 'length_mismatch');
  assert.equal(await openError(opener, new Uint8Array([...frame, 0])), 'length_mismatch');
  assert.equal(await openError(opener, frame.subarray(0, 40)), 'truncated');

  const otherKey = keyBytes.map((byte) => byte ^ 0x55);
  assert.equal(await openError(await newOpener(otherKey), frame), 'decrypt');
  const otherSession = new Uint8Array(16).fill(0x32);
  assert.equal(await openError(await newOpener(keyBytes, otherSession), frame), 'wrong_session');
});

test('replays and reorders are rejected', async () => {
  const frames = await sealedStream([
    segment(1, 0, false),
    segment(1, 1, true),
    segment(2, 0, true),
  ]);
  const opener = await newOpener();
  await opener.open(frames[0]);
  await opener.open(frames[2]);
  assert.equal(await openError(opener, frames[2]), 'replay');
  assert.equal(await openError(opener, frames[1]), 'reordered');
  assert.equal(opener.alreadySeen(decodeFrameHeader(frames[1])), true);
  assert.equal(opener.alreadySeen(decodeFrameHeader(frames[2])), true);
});

test('skipped interim is no gap but skipped final is', async () => {
  const frames = await sealedStream([
    segment(1, 0, false),
    segment(1, 1, false),
    segment(1, 2, true),
    segment(2, 0, true),
    segment(3, 0, false),
  ]);
  const opener = await newOpener();
  const first = await opener.open(frames[0]);
  assert.equal(first.chainVerified, true);

  const afterInterim = await opener.open(frames[2]);
  assert.equal(afterInterim.skippedFrames, 1n);
  assert.equal(afterInterim.skippedFinal, 0n);
  assert.equal(afterInterim.chainVerified, null);

  const afterFinal = await opener.open(frames[4]);
  assert.equal(afterFinal.skippedFrames, 1n);
  assert.equal(afterFinal.skippedFinal, 1n);
});

test('two frames for one position break the chain', async () => {
  const [original] = await sealedStream([segment(1, 0, true)]);
  const [, forkedNext] = await sealedStream([
    segment(1, 0, true, 'other text'),
    segment(2, 0, true),
  ]);
  const opener = await newOpener();
  await opener.open(original);
  const opened = await opener.open(forkedNext);
  assert.equal(opened.skippedFrames, 0n);
  assert.equal(opened.chainVerified, false);
});

test('first frame must carry the zero hash', async () => {
  const sealer = await TestStream.create(keyBytes, sessionId, streamA, new Uint8Array(32).fill(7));
  const opened = await (await newOpener()).open(await sealer.sealSegment(segment(1, 0, true)));
  assert.equal(opened.chainVerified, false);
});

test('streams are tracked separately', async () => {
  const [a0, a1] = await sealedStream([segment(1, 0, true), segment(2, 0, true)], streamA);
  const [b0] = await sealedStream([segment(3, 0, true)], streamB);
  const opener = await newOpener();
  await opener.open(a0);
  const fromB = await opener.open(b0);
  assert.equal(fromB.chainVerified, true);
  const nextA = await opener.open(a1);
  assert.equal(nextA.chainVerified, true);
  assert.equal(nextA.skippedFinal, 0n);
});

test('long unicode segment opens in a larger bucket', async () => {
  const text = 'Temperatur 38,2 °C — 痛い 🙂 '.repeat(60);
  const [frame] = await sealedStream([segment(9, 0, true, text)]);
  assert.ok(decodeFrameHeader(frame).bucket >= 2);
  const opened = await (await newOpener()).open(frame);
  assert.equal(parseSegment(opened.content).text, text);
});
