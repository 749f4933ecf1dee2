// The transcript a follower builds from opened segments, with no DOM.
//
// Live speech recognition revises a segment while the speaker talks. The model keeps one entry per
// segment id: the highest revision seen, except that a final revision replaces every interim one
// and no interim revision replaces a final one. Entries are ordered by start time, then by
// segment id, whatever order their frames arrived in.

/**
 * Ordered transcript entries keyed by segment id. Entries are the objects `parseSegment`
 * returns, with `id` added: the segment id as a decimal string.
 */
export class Transcript {
  #byId = new Map();
  #ordered = [];

  /** Number of segments shown. */
  get size() {
    return this.#ordered.length;
  }

  /** Number of segments whose final revision arrived. */
  get finalCount() {
    return this.#ordered.filter((entry) => entry.final).length;
  }

  /** Entries in display order. */
  entries() {
    return [...this.#ordered];
  }

  /** Returns the entry for a segment id (BigInt or decimal string), or undefined. */
  get(segmentId) {
    return this.#byId.get(String(segmentId));
  }

  /**
   * Applies one revision of a segment and returns `{ action, entry, next, moved, becameFinal }`.
   *
   * `action` is `added`, `revised` or `ignored`. A duplicate, an older revision and an interim
   * revision after the final one are ignored. `next` is the entry now after this one in display
   * order, or null when it is last. `moved` is true when a revision changed its position.
   */
  apply(segment) {
    const entry = { ...segment, id: String(segment.segmentId) };
    const current = this.#byId.get(entry.id);
    if (current !== undefined && !supersedes(entry, current)) {
      return { action: 'ignored', entry: current, next: null, moved: false, becameFinal: false };
    }

    let moved = false;
    if (current !== undefined) {
      const index = this.#ordered.indexOf(current);
      this.#ordered.splice(index, 1);
      moved = compareEntries(current, entry) !== 0;
    }
    const position = this.#insertionIndex(entry);
    this.#ordered.splice(position, 0, entry);
    this.#byId.set(entry.id, entry);
    return {
      action: current === undefined ? 'added' : 'revised',
      entry,
      next: this.#ordered[position + 1] ?? null,
      moved,
      becameFinal: entry.final && !(current?.final ?? false),
    };
  }

  /** Forgets every entry, for when the session key is wiped. */
  clear() {
    this.#byId.clear();
    this.#ordered = [];
  }

  // Binary search for the first entry that sorts after `entry`; appends are the common case.
  #insertionIndex(entry) {
    let low = 0;
    let high = this.#ordered.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (compareEntries(this.#ordered[middle], entry) <= 0) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    return low;
  }
}

/** Returns whether an incoming revision replaces the current entry of the same segment. */
export function supersedes(incoming, current) {
  if (incoming.final !== current.final) {
    return incoming.final;
  }
  return incoming.revision > current.revision;
}

/** Orders entries by start time, then by segment id. */
export function compareEntries(a, b) {
  if (a.startMs !== b.startMs) {
    return a.startMs < b.startMs ? -1 : 1;
  }
  if (a.segmentId !== b.segmentId) {
    return a.segmentId < b.segmentId ? -1 : 1;
  }
  return 0;
}

/** Formats a time from the start of the session as `m:ss`, or `h:mm:ss` from one hour on. */
export function formatTime(milliseconds) {
  const total = Math.max(0, Math.floor(milliseconds / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, '0');
  if (hours > 0) {
    return `${hours}:${String(minutes).padStart(2, '0')}:${seconds}`;
  }
  return `${minutes}:${seconds}`;
}

/**
 * Turns a speaker label from the clinician device into display text: `doctor` becomes
 * `Doctor`, an empty label becomes `Speaker`. Other labels keep their spelling, with the first
 * letter capitalized.
 */
export function speakerLabel(speaker) {
  const trimmed = speaker.trim();
  if (trimmed === '') {
    return 'Speaker';
  }
  const [first, ...rest] = trimmed;
  return first.toLocaleUpperCase() + rest.join('');
}
