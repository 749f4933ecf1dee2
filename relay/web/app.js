// Entry point of the patient page served at /join.
//
// The invite link is /join?token=TOKEN#publisher=PUB&secret=KEY, where PUB, the clinician
// device's public key, is optional. The key lives in the fragment, which browsers
// never send to a server, and this module removes it from the address bar and the history as
// its first statement. The key then stays in memory and in this tab's sessionStorage (so a
// reload works without the fragment) until the session ends or the link proves unusable.
//
// /join without a query or fragment pairs with the clinician's device instead (pairing.js).
// The pairing hands over the key and the publisher key, and the relay sets the follow cookie.
// The key is then kept in this tab's sessionStorage like a link's.

import { importPublisherKey } from './authorship.js';
import { FollowSession } from './connection.js';
import { receiveLaterKeys } from './paired-keys.js';
import { PairingFailure, joinPairing } from './pairing-relay.js';
import { PairingView } from './pairing-view.js';
import { parsePairingId } from './pairing.js';
import {
  KEY_LEN,
  PUBLISHER_KEY_LEN,
  decodeBase64url,
  deriveFingerprint,
  deriveInviteAuthKey,
  encodeBase64url,
  fingerprintWords,
  hasWebCrypto,
  importSessionKey,
  parseInvite,
  parseInviteToken,
  splitInviteAddress,
} from './protocol.js';
import { PageView } from './view.js';

const address = splitInviteAddress(window.location);
window.history.replaceState(null, '', address.cleanUrl);

const STORAGE_KEY = 'sealcast.invite';
const PAIRED_KEY = 'sealcast.paired';
const LARGE_TEXT_KEY = 'sealcast.large-text';
const THEME_KEY = 'sealcast.theme';

const NEW_LINK = 'Ask the clinic for a new link.';
const DAMAGED_LINK = `This link is damaged or incomplete. ${NEW_LINK}`;
const MESSAGES = {
  insecure:
    'This page needs a secure connection (https). Open the link exactly as you received it, ' +
    'starting with https://.',
  missing_secret:
    'This link is incomplete: the part after # is missing. Open the whole link from your ' +
    `message. If that does not work: ${NEW_LINK}`,
  missing_token: DAMAGED_LINK,
  invalid_token: DAMAGED_LINK,
  invalid_secret_encoding: DAMAGED_LINK,
  invalid_secret_length: DAMAGED_LINK,
  invalid_publisher_key: DAMAGED_LINK,
  fingerprint_mismatch: `This link does not match the session. ${NEW_LINK}`,
  already_used: `This link has already been used on another device. ${NEW_LINK}`,
  not_found: `This link is not valid or has expired. ${NEW_LINK}`,
  ended: 'This session has ended.',
  refused: `The server refused the connection. ${NEW_LINK}`,
  bad_response: 'The server sent a response this page cannot read. Reload the page to try again.',
  unexpected: 'Something went wrong on this page. Reload the page to try again.',
  session_ended: 'The session has ended.',
  not_paired:
    'This device is no longer paired, or the session has ended. To follow the session, pair ' +
    "again with the clinician's device.",
  removed:
    "The clinician's device removed this device from the session. To follow the session " +
    "again, pair again with the clinician's device.",
};

const PAIR_AGAIN = "Start a new pairing on the clinician's device and enter its id.";
// Messages of a paired page that replace the link's, which tell the patient to get a new link.
const PAIRED_FOLLOW_MESSAGES = {
  fingerprint_mismatch:
    "The server's session does not match the key from the pairing. Pair again with the " +
    "clinician's device.",
  refused: "The server refused the connection. Pair again with the clinician's device.",
};
const PAIRING_MESSAGES = {
  invalid_id: 'A pairing id has 12 digits, such as 0421-8810-3377. Check the id and try again.',
  not_found:
    "No pairing has this id. Check the id on the clinician's device, or start a new pairing there.",
  taken: `Another device already joined this pairing. ${PAIR_AGAIN}`,
  cancelled: `The pairing was cancelled on the clinician's device. ${PAIR_AGAIN}`,
  expired: `The pairing expired. ${PAIR_AGAIN}`,
  session_ended: 'This session has ended.',
  codes_differ:
    'The codes differ, so this pairing was stopped, because someone may have tried to listen ' +
    'in. Tell the clinician, and pair again.',
  non_contributory: `The pairing failed a security check and was stopped. ${PAIR_AGAIN}`,
  commitment_mismatch: `The pairing failed a security check and was stopped. ${PAIR_AGAIN}`,
  invalid_length: `The pairing failed a security check and was stopped. ${PAIR_AGAIN}`,
  decrypt: `The key from the clinician's device could not be opened. ${PAIR_AGAIN}`,
  invalid_publisher_key: `The key from the clinician's device could not be opened. ${PAIR_AGAIN}`,
  unreachable: 'The server did not respond. Check the connection, then try again.',
  bad_response: `The server sent a response this page cannot read. ${PAIR_AGAIN}`,
  refused: `The server refused the pairing. ${PAIR_AGAIN}`,
};

const view = new PageView(document);
const preferences = readPreferences();
setUpLargeText();
setUpTheme();
start().catch((error) => {
  console.error('sealcast: the page failed to start', error);
  view.showStatus('stopped');
  view.showMessage(MESSAGES.unexpected);
});

async function start() {
  if (!hasWebCrypto()) {
    view.showStatus('stopped');
    view.showMessage(MESSAGES.insecure);
    return;
  }
  if (address.search === '' && address.fragment === '') {
    await startWithoutLink();
    return;
  }
  const invite = readInvite();
  if (invite.error !== undefined) {
    view.showStatus('stopped');
    view.showMessage(MESSAGES[invite.error] ?? DAMAGED_LINK);
    return;
  }
  await follow(invite);
}

// Follows with the key of a link or a pairing. `invite.token` is null after a pairing, whose
// follow cookie the page cannot renew. `invite.later`, set right after a pairing, carries what
// the page needs to fetch the keys of later key epochs.
async function follow(invite) {
  const sessionKey = await importSessionKey(invite.key);
  invite.key.fill(0);
  const publisherKey =
    invite.publisher === null ? null : await importPublisherKey(invite.publisher);
  const fingerprint = await deriveFingerprint(sessionKey);
  view.showWords(fingerprintWords(fingerprint));

  const paired = invite.token === null;
  const session = new FollowSession({
    token: invite.token,
    sessionKey,
    fingerprint,
    inviteAuthKey: paired ? null : await deriveInviteAuthKey(sessionKey),
    sessionId: invite.sessionId,
    publisherKey,
    keyEpoch: invite.keyEpoch ?? 0,
    env: browserEnv(),
    listener: paired ? pairedListener() : pageListener(invite.token),
  });
  window.addEventListener('online', () => session.reconnectNow());
  const laterKeys = invite.later === undefined ? null : startLaterKeys(invite.later, session);
  try {
    await session.run({ socketFirst: invite.fromStorage });
  } finally {
    laterKeys?.stop();
  }
}

// Fetches the keys that the clinician device wraps for this pairing after each rotation and
// gives them to the follow session.
function startLaterKeys({ pairing, followToken, grant }, session) {
  return receiveLaterKeys({
    origin: window.location.origin,
    followToken,
    pairing,
    grant,
    env: browserEnv(),
    onKey: async (keyEpoch, keyBytes) => {
      const key = await importSessionKey(keyBytes);
      keyBytes.fill(0);
      session.addKey(keyEpoch, key);
    },
    onStop: (reason) => {
      if (reason !== 'ended') {
        console.warn('sealcast: the relay no longer hands this page later keys');
      }
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Pairing without a link

// Follows the session this tab paired with before a reload, or shows the pairing form.
async function startWithoutLink() {
  const stored = readStoredPairing();
  if (stored !== null) {
    await follow({ ...stored, token: null, fromStorage: true });
    return;
  }
  view.showStatus('unpaired');
  const pairingView = new PairingView(document);
  let running = false;
  pairingView.showForm((text) => {
    if (running) {
      return;
    }
    const pairingId = parsePairingId(text);
    if (pairingId === null) {
      pairingView.showProgress('failed', PAIRING_MESSAGES.invalid_id);
      return;
    }
    running = true;
    pairingView.setFormEnabled(false);
    pair(pairingView, pairingId)
      .catch((error) => {
        pairingView.hideCode();
        pairingView.showProgress('failed', pairingFailureText(error));
      })
      .finally(() => {
        running = false;
        pairingView.setFormEnabled(true);
      });
  });
}

async function pair(pairingView, pairingId) {
  pairingView.showProgress('waiting', `Joining pairing ${pairingId}…`);
  const grant = await joinPairing({
    origin: window.location.origin,
    pairingId,
    env: browserEnv(),
    progress: (step) => {
      if (step === 'committed') {
        pairingView.showProgress('waiting', "Waiting for the clinician's device…");
      } else if (step === 'confirmed') {
        pairingView.hideCode();
        pairingView.showProgress(
          'confirmed',
          "Code confirmed. Waiting for the clinician's device to confirm it too…",
        );
      }
    },
    confirmCode: (code) =>
      pairingView.askCode(code, "Compare the code with the clinician's screen."),
  });
  const secret = encodeBase64url(grant.sessionKey);
  const publisher = encodeBase64url(grant.publisher);
  // NOTE: the pairing's shared secret is kept in memory only, so after a reload the page
  // follows with this key and gets no key of a later epoch.
  writeStoredPairing({ secret, publisher, sessionId: grant.sessionIdHex, keyEpoch: grant.epoch });
  pairingView.hide();
  view.showStatus('connecting');
  const later =
    grant.followToken === null
      ? undefined
      : {
          pairing: grant.pairing,
          followToken: grant.followToken,
          grant: {
            epoch: grant.epoch,
            sessionIdHex: grant.sessionIdHex,
            publisher: Uint8Array.from(grant.publisher),
          },
        };
  await follow({
    token: null,
    key: grant.sessionKey,
    publisher: grant.publisher,
    sessionId: grant.sessionIdHex,
    keyEpoch: grant.epoch,
    fromStorage: true,
    later,
  });
}

function pairingFailureText(error) {
  if (error instanceof PairingFailure || error?.name === 'PairingError') {
    return PAIRING_MESSAGES[error.kind] ?? PAIRING_MESSAGES.refused;
  }
  console.error('sealcast: pairing failed', error);
  return MESSAGES.unexpected;
}

function pairedListener() {
  return {
    status: (state) => view.showStatus(state),
    segment: (segment) => view.showSegment(segment),
    notice: (counters) => view.showNotices(counters),
    authorship: (summary) => view.showAuthorship(summary),
    ended: () => {
      wipeStoredPairing();
      view.showMessage(MESSAGES.session_ended);
    },
    failed: (kind) => {
      if (kind !== 'bad_response') {
        wipeStoredPairing();
      }
      view.showMessage(PAIRED_FOLLOW_MESSAGES[kind] ?? MESSAGES[kind] ?? MESSAGES.refused);
    },
  };
}

// Reads the key from the fragment, or after a reload from this tab's session storage. Returns
// `{ token, key, publisher, sessionId, fromStorage }` or `{ error }` with an InviteError kind.
function readInvite() {
  const stored = readStoredInvite();
  let parsed;
  try {
    parsed = parseInvite(address);
  } catch (error) {
    return recoverFromStorage(error, stored);
  }
  const secret = encodeBase64url(parsed.key);
  const publisher = parsed.publisher === null ? null : encodeBase64url(parsed.publisher);
  const known =
    stored !== null &&
    stored.token === parsed.token &&
    stored.secret === secret &&
    stored.publisher === publisher;
  const sessionId = known ? stored.sessionId : null;
  writeStoredInvite({ token: parsed.token, secret, publisher, sessionId });
  return {
    token: parsed.token,
    key: parsed.key,
    publisher: parsed.publisher,
    sessionId,
    fromStorage: known,
  };
}

function recoverFromStorage(error, stored) {
  const kind = error?.kind ?? 'invalid_secret_encoding';
  if (kind !== 'missing_secret' || stored === null) {
    return { error: kind };
  }
  // parseInvite checks the token before the secret, so the token is valid here.
  const token = parseInviteToken(address.search);
  const key = decodeBase64url(stored.secret);
  if (token !== stored.token || key === null || key.length !== KEY_LEN) {
    return { error: kind };
  }
  const publisher = stored.publisher === null ? null : decodeBase64url(stored.publisher);
  if (publisher !== null && publisher.length !== PUBLISHER_KEY_LEN) {
    return { error: kind };
  }
  return { token, key, publisher, sessionId: stored.sessionId, fromStorage: true };
}

function pageListener(token) {
  return {
    status: (state) => view.showStatus(state),
    session: ({ sessionId }) => rememberSessionId(token, sessionId),
    segment: (segment) => view.showSegment(segment),
    notice: (counters) => view.showNotices(counters),
    authorship: (summary) => view.showAuthorship(summary),
    ended: () => {
      wipeStoredInvite();
      view.showMessage(MESSAGES.session_ended);
    },
    failed: (kind) => {
      // The key is useless after every failure except an unreadable response, where a reload
      // can still succeed.
      if (kind !== 'bad_response') {
        wipeStoredInvite();
      }
      view.showMessage(MESSAGES[kind] ?? MESSAGES.refused);
    },
  };
}

function browserEnv() {
  return {
    fetch: (...args) => window.fetch(...args),
    WebSocket: window.WebSocket,
    location: window.location,
    setTimeout: (callback, delay) => window.setTimeout(callback, delay),
    clearTimeout: (timer) => window.clearTimeout(timer),
    random: Math.random,
  };
}

// ---------------------------------------------------------------------------------------------
// Session storage of the key, for a reload in the same tab

function readStoredInvite() {
  try {
    const value = JSON.parse(window.sessionStorage.getItem(STORAGE_KEY) ?? 'null');
    if (typeof value?.token !== 'string' || typeof value.secret !== 'string') {
      return null;
    }
    const sessionId = typeof value.sessionId === 'string' ? value.sessionId : null;
    const publisher = typeof value.publisher === 'string' ? value.publisher : null;
    return { token: value.token, secret: value.secret, publisher, sessionId };
  } catch {
    return null;
  }
}

function writeStoredInvite(value) {
  try {
    window.sessionStorage.setItem(STORAGE_KEY, JSON.stringify(value));
  } catch {
    // Storage is disabled: the page works, but a reload needs the whole link again.
  }
}

function rememberSessionId(token, sessionId) {
  const stored = readStoredInvite();
  if (stored !== null && stored.token === token && stored.sessionId !== sessionId) {
    writeStoredInvite({ ...stored, sessionId });
  }
}

function wipeStoredInvite() {
  try {
    window.sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // Storage is disabled, so it contains nothing to wipe.
  }
}

// The key, publisher key, session id and key epoch of a pairing, kept like a link's for a
// reload. Returns `{ key, publisher, sessionId, keyEpoch }` with the keys as bytes, or null.
function readStoredPairing() {
  try {
    const value = JSON.parse(window.sessionStorage.getItem(PAIRED_KEY) ?? 'null');
    const key = typeof value?.secret === 'string' ? decodeBase64url(value.secret) : null;
    const publisher =
      typeof value?.publisher === 'string' ? decodeBase64url(value.publisher) : null;
    if (key === null || key.length !== KEY_LEN || typeof value.sessionId !== 'string') {
      return null;
    }
    if (publisher === null || publisher.length !== PUBLISHER_KEY_LEN) {
      return null;
    }
    const keyEpoch = Number.isInteger(value.keyEpoch) && value.keyEpoch >= 0 ? value.keyEpoch : 0;
    return { key, publisher, sessionId: value.sessionId, keyEpoch };
  } catch {
    return null;
  }
}

function writeStoredPairing(value) {
  try {
    window.sessionStorage.setItem(PAIRED_KEY, JSON.stringify(value));
  } catch {
    // Storage is disabled: the page works, but a reload needs a new pairing.
  }
}

function wipeStoredPairing() {
  try {
    window.sessionStorage.removeItem(PAIRED_KEY);
  } catch {
    // Storage is disabled, so it contains nothing to wipe.
  }
}

// ---------------------------------------------------------------------------------------------
// Display preferences, kept in localStorage because they are not secret

function readPreferences() {
  const read = (key) => {
    try {
      return window.localStorage.getItem(key);
    } catch {
      return null;
    }
  };
  return { largeText: read(LARGE_TEXT_KEY) === 'on', theme: read(THEME_KEY) };
}

function savePreference(key, value) {
  try {
    window.localStorage.setItem(key, value);
  } catch {
    // Storage is disabled: the choice lasts until the page closes.
  }
}

function setUpLargeText() {
  const button = document.getElementById('large-text');
  const apply = () => {
    document.documentElement.classList.toggle('large-text', preferences.largeText);
    button.setAttribute('aria-pressed', String(preferences.largeText));
  };
  apply();
  button.addEventListener('click', () => {
    preferences.largeText = !preferences.largeText;
    savePreference(LARGE_TEXT_KEY, preferences.largeText ? 'on' : 'off');
    apply();
  });
}

// Follows prefers-color-scheme until the patient picks light or dark with the toggle.
function setUpTheme() {
  const button = document.getElementById('theme');
  const systemDark = window.matchMedia('(prefers-color-scheme: dark)');
  const apply = () => {
    const chosen = preferences.theme === 'dark' || preferences.theme === 'light';
    const dark = chosen ? preferences.theme === 'dark' : systemDark.matches;
    if (chosen) {
      document.documentElement.dataset.theme = preferences.theme;
    } else {
      delete document.documentElement.dataset.theme;
    }
    button.setAttribute('aria-pressed', String(dark));
  };
  apply();
  button.addEventListener('click', () => {
    preferences.theme = button.getAttribute('aria-pressed') === 'true' ? 'light' : 'dark';
    savePreference(THEME_KEY, preferences.theme);
    apply();
  });
  systemDark.addEventListener('change', apply);
}
