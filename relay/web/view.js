// The page's DOM: status, fingerprint words, messages, notices, authorship and the transcript
// list.
//
// Text from the relay or from frames only ever reaches the page through textContent and
// attribute values, never as HTML. Final segments are announced through a polite live region;
// interim revisions are not, because they change several times a second while someone speaks.

import { Transcript, formatTime, speakerLabel } from './transcript.js';

const STATUS_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  ended: 'Session ended',
  stopped: 'Not connected',
  unpaired: 'Not paired',
};

// Distance from the bottom, in CSS pixels, within which the page still counts as following.
const FOLLOW_MARGIN_PX = 48;
// Final segments that arrive within this window are announced together, in milliseconds.
const ANNOUNCE_DELAY_MS = 400;
// Lines kept in the live region; older ones are removed so the region stays small.
const ANNOUNCED_LINES_KEPT = 3;

/** The patient page's elements and the transcript model behind the list. */
export class PageView {
  #elements;
  #transcript = new Transcript();
  #items = new Map();
  #pendingAnnouncements = [];
  #announceTimer = null;

  constructor(document) {
    const byId = (id) => document.getElementById(id);
    this.#elements = {
      document,
      status: byId('status'),
      statusText: byId('status-text'),
      wordsLine: byId('words-line'),
      words: byId('words'),
      message: byId('message'),
      notices: byId('notices'),
      authorship: byId('authorship'),
      transcript: byId('transcript'),
      empty: byId('empty'),
      announcer: byId('announcer'),
      jumpLatest: byId('jump-latest'),
    };
    this.#watchScrolling();
  }

  /** Shows the connection state as text and as `data-state` for styling and tests. */
  showStatus(state) {
    this.#elements.status.dataset.state = state;
    this.#elements.statusText.textContent = STATUS_TEXT[state] ?? state;
  }

  /** Shows the four fingerprint words the patient compares with the clinician's screen. */
  showWords(words) {
    this.#elements.words.textContent = words.join(' ');
    this.#elements.wordsLine.hidden = false;
  }

  /** Shows an error or end message in the alert region. */
  showMessage(text) {
    this.#elements.message.textContent = text;
  }

  /** Shows the notices for frames that failed, gaps, broken chains and slow connecting. */
  showNotices(counters) {
    const lines = noticeLines(counters);
    this.#elements.notices.textContent = lines.join(' ');
    this.#elements.notices.hidden = lines.length === 0;
  }

  /**
   * Shows what `summarizeAuthorship` found, as `data-state` for styling and tests and as a
   * sentence. A change of state is also announced, but the time in "signed up to" is not,
   * because it changes with every signature.
   */
  showAuthorship(summary) {
    const element = this.#elements.authorship;
    const text = authorshipText(summary);
    if (element.textContent === text && element.dataset.state === summary.state) {
      return;
    }
    const stateChanged = element.dataset.state !== summary.state;
    element.dataset.state = summary.state;
    element.textContent = text;
    element.hidden = false;
    if (stateChanged && summary.state !== 'signed_so_far') {
      this.#announceText(text);
    }
  }

  /** Applies one segment revision to the model and the list. */
  showSegment(segment) {
    const following = this.#isFollowing();
    const change = this.#transcript.apply(segment);
    if (change.action === 'ignored') {
      return;
    }
    const item = this.#itemFor(change.entry);
    fillItem(item, change.entry);
    if (change.action === 'added' || change.moved) {
      const next = change.next === null ? null : this.#items.get(change.next.id);
      this.#elements.transcript.insertBefore(item, next ?? null);
    }
    this.#elements.empty.hidden = true;
    if (change.becameFinal) {
      this.#announce(change.entry);
    }
    this.#keepLatestInView(following);
  }

  /** Removes the transcript from the page, for example when the key is wiped after an error. */
  clearTranscript() {
    this.#transcript.clear();
    this.#items.clear();
    this.#elements.transcript.replaceChildren();
    this.#elements.empty.hidden = false;
  }

  #itemFor(entry) {
    let item = this.#items.get(entry.id);
    if (item === undefined) {
      item = createItem(this.#elements.document);
      this.#items.set(entry.id, item);
    }
    return item;
  }

  #announce(entry) {
    this.#pendingAnnouncements.push(entry);
    this.#announceTimer ??= setTimeout(() => this.#flushAnnouncements(), ANNOUNCE_DELAY_MS);
  }

  // A burst, such as the history delivered after joining late, becomes one short announcement.
  #flushAnnouncements() {
    const batch = this.#pendingAnnouncements.splice(0);
    this.#announceTimer = null;
    const spoken = (entry) => `${speakerLabel(entry.speaker)}: ${entry.text}`;
    const text =
      batch.length <= 2
        ? batch.map(spoken).join(' ')
        : `${batch.length} new lines. Latest: ${spoken(batch[batch.length - 1])}`;

    this.#announceText(text);
  }

  #announceText(text) {
    const line = this.#elements.document.createElement('p');
    line.textContent = text;
    this.#elements.announcer.append(line);
    while (this.#elements.announcer.childElementCount > ANNOUNCED_LINES_KEPT) {
      this.#elements.announcer.firstElementChild.remove();
    }
  }

  #isFollowing() {
    const root = this.#elements.document.documentElement;
    const window = this.#elements.document.defaultView;
    return window.innerHeight + window.scrollY >= root.scrollHeight - FOLLOW_MARGIN_PX;
  }

  // Scrolls to the newest line if the patient was following, else offers the jump button.
  #keepLatestInView(following) {
    if (following) {
      this.#scrollToLatest();
    } else {
      this.#elements.jumpLatest.hidden = false;
    }
  }

  #scrollToLatest() {
    const root = this.#elements.document.documentElement;
    root.scrollTop = root.scrollHeight;
    this.#elements.jumpLatest.hidden = true;
  }

  #watchScrolling() {
    const { document, jumpLatest, transcript } = this.#elements;
    document.defaultView.addEventListener(
      'scroll',
      () => {
        if (this.#isFollowing()) {
          jumpLatest.hidden = true;
        }
      },
      { passive: true },
    );
    jumpLatest.addEventListener('click', () => {
      this.#scrollToLatest();
      transcript.focus({ preventScroll: true });
    });
  }
}

function createItem(document) {
  const item = document.createElement('li');
  const meta = document.createElement('p');
  meta.className = 'segment-meta';
  const speaker = document.createElement('span');
  speaker.className = 'speaker';
  const time = document.createElement('time');
  time.className = 'time';
  const tentative = document.createElement('span');
  tentative.className = 'tentative-label';
  tentative.textContent = '(still speaking)';
  meta.append(speaker, ' ', time, ' ', tentative);

  const text = document.createElement('p');
  text.className = 'segment-text';
  item.append(meta, text);
  return item;
}

function fillItem(item, entry) {
  const [meta, text] = item.children;
  const [speaker, time, tentative] = meta.children;
  item.className = `segment ${entry.final ? 'final' : 'interim'}`;
  item.dataset.segmentId = entry.id;
  item.dataset.speaker = entry.speaker.trim().toLowerCase();
  speaker.textContent = speakerLabel(entry.speaker);
  time.textContent = formatTime(entry.startMs);
  time.dateTime = `PT${Math.floor(entry.startMs / 1000)}S`;
  tentative.hidden = entry.final;
  text.textContent = entry.text;
}

/** Returns the notice sentences for the page's counters, most serious first. */
export function noticeLines(counters) {
  const lines = [];
  if (counters.missedFinal > 0) {
    lines.push(`${plural(counters.missedFinal, 'line')} of the transcript did not arrive.`);
  }
  if (counters.failed > 0) {
    lines.push(`${plural(counters.failed, 'part')} of the transcript could not be read.`);
  }
  if (counters.unverified > 0) {
    lines.push('Some parts of the transcript could not be checked for completeness.');
  }
  if (counters.historyLost) {
    lines.push('The server lost part of its history, so earlier lines may be missing.');
  }
  if (counters.slowConnect) {
    lines.push('Still trying to connect. Check your internet connection.');
  }
  return lines;
}

const DEVICE = "the clinician's device";
const DEVICES = "the clinician's devices";
const ENDORSED =
  ` Part of it comes from a second device of the clinician, which ${DEVICE} approved.`;

/** Returns the sentences that tell the patient what `summarizeAuthorship` found. */
export function authorshipText(summary) {
  switch (summary.state) {
    case 'not_checkable':
      return (
        `This link does not contain the key of ${DEVICE}, so this page cannot check who ` +
        'wrote the transcript.'
      );
    case 'waiting':
      return `Waiting for the first lines signed by ${DEVICE}.`;
    case 'signed_so_far':
      return (
        `Signed by ${summary.endorsed ? DEVICES : DEVICE} up to the line at ` +
        `${formatTime(summary.signedUpToMs)}.${summary.endorsed ? ENDORSED : ''}`
      );
    case 'complete':
      return summary.endorsed
        ? `The transcript is complete and signed by ${DEVICES}.${ENDORSED}`
        : `The transcript is complete and signed by ${DEVICE}.`;
    default:
      return warningText(summary);
  }
}

function warningText(summary) {
  const lines = ['Warning: this transcript could not be fully checked.'];
  if (summary.nothingArrived) {
    lines.push(`No transcript signed by ${DEVICE} arrived.`);
  }
  const unsigned = summary.unsigned;
  if (unsigned !== null && unsigned.fromMs !== null) {
    const from = formatTime(unsigned.fromMs);
    const to = formatTime(unsigned.toMs);
    const when = from === to ? `The line at ${from} is` : `Lines from ${from} to ${to} are`;
    lines.push(`${when} not signed by ${DEVICE}, so someone else may have written them.`);
  } else if (unsigned !== null) {
    const parts = plural(Number(unsigned.frames), 'part');
    lines.push(`${parts} of the transcript not signed by ${DEVICE} arrived.`);
  }
  if (summary.missingFinals > 0n) {
    const count = plural(Number(summary.missingFinals), 'signed line');
    lines.push(`${count} did not arrive, so the transcript has gaps.`);
  }
  if (summary.badSignatures > 0) {
    lines.push(`${plural(summary.badSignatures, 'signature')} did not match ${DEVICE}.`);
  }
  if (summary.endNotSigned) {
    lines.push(`The signed end of the transcript did not arrive, so its last part may be missing.`);
  }
  return lines.join(' ');
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}
