// The consultation the browser test publishes, and the final segments the page must show.
//
// The real consultation is day1_consultation01 of the PriMock57 corpus, read from
// $SEALCAST_TRANSCRIPTS/primock57. Without that variable the test uses the project's sample
// consultation, except under CI, where the real one is required.

import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

import { repoPath } from './paths.mjs';

const CONSULTATION = 'day1_consultation01';

/**
 * Returns `{ name, files, segments }`: the input files for `sealcast publish` and the final
 * segments `{ speaker, startMs, endMs, text }` in the order the page shows them.
 */
export function chooseConsultation() {
  const folder = process.env.SEALCAST_TRANSCRIPTS;
  if (folder === undefined || folder === '') {
    if (process.env.CI === 'true') {
      throw new Error('SEALCAST_TRANSCRIPTS is not set: CI must replay the real consultation');
    }
    console.log(
      'SEALCAST_TRANSCRIPTS is not set: skipping the real consultation, ' +
        'using relay/demo/sample-consultation.jsonl',
    );
    const file = repoPath('relay/demo/sample-consultation.jsonl');
    return { name: 'sample consultation', files: [file], segments: readJsonLines(file) };
  }
  const files = ['doctor', 'patient'].map((speaker) =>
    join(folder, 'primock57', `${CONSULTATION}_${speaker}.TextGrid`),
  );
  const segments = mergeByStart(files.map(readTextGrid));
  return { name: `PriMock57 ${CONSULTATION}`, files, segments };
}

function readJsonLines(file) {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line))
    .filter((line) => line.final !== false)
    .map((line) => ({
      speaker: line.speaker,
      startMs: line.start_ms,
      endMs: line.end_ms,
      text: line.text,
    }));
}

/**
 * Reads the non-empty intervals of a TextGrid in the long text format, as the sealcast CLI
 * does: the speaker is the part of the file name after the last `_`, the text is trimmed, and
 * a doubled quote inside a string is one quote.
 */
function readTextGrid(file) {
  const speaker = basename(file, '.TextGrid').split('_').at(-1);
  const text = readFileSync(file, 'utf8');
  const interval = /xmin = ([\d.eE+-]+)\s+xmax = ([\d.eE+-]+)\s+text = "((?:[^"]|"")*)"/g;
  const segments = [];
  for (const match of text.matchAll(interval)) {
    const label = match[3].replaceAll('""', '"').trim();
    if (label !== '') {
      segments.push({
        speaker,
        startMs: Math.round(Number(match[1]) * 1000),
        endMs: Math.round(Number(match[2]) * 1000),
        text: label,
      });
    }
  }
  if (segments.length === 0) {
    throw new Error(`${file} has no non-empty interval`);
  }
  return segments;
}

/** Merges speakers by start time; the sort is stable, like the CLI's. */
function mergeByStart(inputs) {
  return inputs.flat().sort((a, b) => a.startMs - b.startMs);
}
