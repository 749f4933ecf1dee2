// The transcript model: revisions, interim replaced by final, display order and duplicates.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Transcript, formatTime, speakerLabel, supersedes } from '../transcript.js';

function segment(
  id,
  revision,
  final,
  startMs = Number(id) * 1000,
  text = `text ${id}.${revision}`,
) {
  return {
    segmentId: BigInt(id),
    revision,
    speaker: 'doctor',
    startMs,
    endMs: startMs + 500,
    text,
    final,
  };
}

const ids = (transcript) => transcript.entries().map((entry) => entry.id);

test('interim replaced by final', () => {
  const transcript = new Transcript();
  assert.equal(transcript.apply(segment(1, 0, false)).action, 'added');
  const revised = transcript.apply(segment(1, 1, false));
  assert.equal(revised.action, 'revised');
  assert.equal(revised.becameFinal, false);
  const final = transcript.apply(segment(1, 2, true));
  assert.equal(final.action, 'revised');
  assert.equal(final.becameFinal, true);
  assert.equal(transcript.size, 1);
  assert.equal(transcript.get(1n).text, 'text 1.2');
  assert.equal(transcript.get('1').final, true);
  assert.equal(transcript.finalCount, 1);
});

test('final replaces interim with a higher revision number', () => {
  const transcript = new Transcript();
  transcript.apply(segment(1, 5, false));
  const change = transcript.apply(segment(1, 3, true));
  assert.equal(change.action, 'revised');
  assert.equal(transcript.get(1n).revision, 3);
});

test('late interim never replaces final', () => {
  const transcript = new Transcript();
  transcript.apply(segment(1, 2, true));
  const change = transcript.apply(segment(1, 3, false));
  assert.equal(change.action, 'ignored');
  assert.equal(transcript.get(1n).final, true);
  assert.equal(transcript.get(1n).revision, 2);
});

test('duplicates and older revisions ignored', () => {
  const transcript = new Transcript();
  transcript.apply(segment(1, 2, false));
  assert.equal(transcript.apply(segment(1, 2, false)).action, 'ignored');
  assert.equal(transcript.apply(segment(1, 1, false)).action, 'ignored');
  transcript.apply(segment(1, 4, true));
  assert.equal(transcript.apply(segment(1, 4, true)).action, 'ignored');
  assert.equal(transcript.apply(segment(1, 3, true)).action, 'ignored');
  assert.equal(transcript.apply(segment(1, 5, true)).action, 'revised');
  assert.equal(transcript.size, 1);
});

test('entries ordered by start then id', () => {
  const transcript = new Transcript();
  transcript.apply(segment(3, 0, true, 3000));
  const early = transcript.apply(segment(1, 0, true, 1000));
  assert.equal(early.next.id, '3');
  transcript.apply(segment(2, 0, true, 3000));
  transcript.apply(segment(4, 0, true, 500));
  const last = transcript.apply(segment(5, 0, true, 9000));
  assert.equal(last.next, null);
  assert.deepEqual(ids(transcript), ['4', '1', '2', '3', '5']);
});

test('revision that changes start time moves', () => {
  const transcript = new Transcript();
  transcript.apply(segment(1, 0, false, 1000));
  transcript.apply(segment(2, 0, false, 2000));
  const change = transcript.apply(segment(1, 1, true, 2500));
  assert.equal(change.moved, true);
  assert.equal(change.next, null);
  assert.deepEqual(ids(transcript), ['2', '1']);
  const still = transcript.apply(segment(2, 1, true, 2000));
  assert.equal(still.moved, false);
  assert.equal(still.next.id, '1');
});

test('large segment ids sort numerically', () => {
  const transcript = new Transcript();
  transcript.apply(segment(18446744073709551615n, 0, true, 0));
  transcript.apply(segment(10n, 0, true, 0));
  transcript.apply(segment(9n, 0, true, 0));
  assert.deepEqual(ids(transcript), ['9', '10', '18446744073709551615']);
});

test('clear forgets everything', () => {
  const transcript = new Transcript();
  transcript.apply(segment(1, 0, true));
  transcript.clear();
  assert.equal(transcript.size, 0);
  assert.equal(transcript.get(1n), undefined);
  assert.equal(transcript.apply(segment(1, 0, true)).action, 'added');
});

test('supersedes rule table', () => {
  const cases = [
    [segment(1, 1, false), segment(1, 0, false), true],
    [segment(1, 0, false), segment(1, 1, false), false],
    [segment(1, 0, true), segment(1, 9, false), true],
    [segment(1, 9, false), segment(1, 0, true), false],
    [segment(1, 1, true), segment(1, 1, true), false],
  ];
  for (const [incoming, current, expected] of cases) {
    assert.equal(
      supersedes(incoming, current),
      expected,
      JSON.stringify([incoming.revision, incoming.final]),
    );
  }
});

test('times and speakers format', () => {
  assert.equal(formatTime(0), '0:00');
  assert.equal(formatTime(1500), '0:01');
  assert.equal(formatTime(83_000), '1:23');
  assert.equal(formatTime(3_723_000), '1:02:03');
  assert.equal(speakerLabel('doctor'), 'Doctor');
  assert.equal(speakerLabel(' patient '), 'Patient');
  assert.equal(speakerLabel(''), 'Speaker');
  assert.equal(speakerLabel('élodie'), 'Élodie');
  assert.equal(speakerLabel('🙂 guest'), '🙂 guest');
});
