// Entry point of the staff sign-in page served at /login.
//
// A magic link is /login#token=TOKEN. The token lives in the fragment, which browsers never send
// to a server, and this module removes it from the address bar and the history as its first
// statement. The token then stays only in this module's memory. Mail scanners that fetch the
// link press no button, so the page sends the token to the relay only when the user presses
// "Sign in". Forms are submitted from script because the page's CSP has `form-action 'none'`.

import {
  AuthClient,
  AuthError,
  describeFailure,
  formatMinutes,
  normalizeEmail,
  normalizeSecondFactor,
  normalizeTotpCode,
  readLoginAddress,
} from './login-api.js';
import { LoginView } from './login-view.js';

const address = readLoginAddress(window.location);
window.history.replaceState(null, '', address.cleanUrl);

const DAMAGED_LINK =
  'This sign-in link is damaged or incomplete. Open the whole link from your email, or ' +
  'request a new one below.';
const NO_BROWSER_SESSION =
  'The sign-in was approved, but this browser did not receive a session. Open the link in ' +
  'the browser where you requested it, or request a new link below.';
const INVALID_EMAIL = 'Enter an email address such as name@clinic.example.';
const INVALID_SECOND_FACTOR =
  'Enter the six digits from your authenticator app, or one of your recovery codes.';
const INVALID_TOTP = 'Enter the six digits that your authenticator app shows now.';
const UNEXPECTED = 'Something went wrong on this page. Reload the page to try again.';

const view = new LoginView(document);
const client = new AuthClient({
  fetch: (...args) => window.fetch(...args),
  cookies: () => document.cookie,
});
// The magic-link token until the relay accepts or rejects it.
let pendingToken = address.token;
// The pending sign-in that waits for a TOTP or recovery code.
let pendingLoginId = null;

wireEvents();
start().catch(reportUnexpected);

async function start() {
  if (address.error !== null) {
    view.showError(DAMAGED_LINK);
    showRequest();
    return;
  }
  if (pendingToken !== null) {
    view.showStep('confirm');
    return;
  }
  await showSessionOrRequest();
}

function wireEvents() {
  const on = (id, event, handler) => {
    view.element(id).addEventListener(event, (domEvent) => {
      domEvent.preventDefault();
      handler(domEvent).catch(reportUnexpected);
    });
  };
  on('confirm-button', 'click', () => confirmSignIn());
  on('request-form', 'submit', () => requestLink());
  on('request-again', 'click', async () => showRequest());
  on('code-form', 'submit', () => submitSecondFactor());
  on('sign-out', 'click', () => signOut());
  on('totp-start', 'click', () => startTotp());
  on('activate-form', 'submit', () => activateTotp());
  on('recovery-done', 'click', async () => {
    view.clearRecoveryCodes();
    view.announce('Recovery codes removed from the page.');
    view.element('signed-in-title').focus();
  });
}

// Shows the signed-in view when the browser has a session, else the form for a sign-in link.
async function showSessionOrRequest() {
  try {
    view.showSignedIn(await client.currentUser());
  } catch (error) {
    if (!isUnauthorized(error)) {
      view.showError(describeFailure(error, 'session'));
    }
    showRequest();
  }
}

function showRequest(announcement) {
  view.showStep('request', { announcement, focusId: 'email' });
}

async function confirmSignIn() {
  const button = view.element('confirm-button');
  view.clearError();
  view.setBusy(button, true);
  let confirmed;
  try {
    confirmed = await client.confirm(pendingToken);
  } catch (error) {
    view.showError(describeFailure(error, 'confirm'));
    if (linkIsSpent(error)) {
      pendingToken = null;
      showRequest();
    }
    return;
  } finally {
    view.setBusy(button, false);
  }

  pendingToken = null;
  if (confirmed.kind === 'device') {
    view.showDevice(confirmed.totpRequired);
  } else if (confirmed.totpRequired) {
    pendingLoginId = confirmed.loginId;
    view.showStep('code', { focusId: 'code' });
  } else {
    await showUserAfterSignIn();
  }
}

// A link the relay rejected as malformed, unknown, expired or used cannot succeed later, but
// after a network failure, a 5xx or a 429 the same link may still work.
function linkIsSpent(error) {
  return error instanceof AuthError && [400, 401, 404, 410].includes(error.status);
}

async function showUserAfterSignIn() {
  try {
    const user = await client.currentUser();
    view.clearError();
    view.showSignedIn(user, { announcement: `Signed in as ${user.email}.` });
  } catch (error) {
    // NOTE: the page assumes that a 401 here means another browser started this sign-in, so
    // the relay set no cookies in this one. The accounts API does not specify this case.
    view.showError(isUnauthorized(error) ? NO_BROWSER_SESSION : describeFailure(error, 'session'));
    showRequest();
  }
}

async function requestLink() {
  const input = view.element('email');
  const email = normalizeEmail(input.value);
  if (email === null) {
    view.showFieldError('email', INVALID_EMAIL);
    return;
  }
  view.showFieldError('email', null);
  view.clearError();

  const button = view.element('request-form').querySelector('button[type="submit"]');
  view.setBusy(button, true);
  try {
    const started = await client.requestLink(email);
    view.showSent(formatMinutes(started.expiresIn));
  } catch (error) {
    view.showError(describeFailure(error, 'request'));
  } finally {
    view.setBusy(button, false);
  }
}

async function submitSecondFactor() {
  const input = view.element('code');
  const code = normalizeSecondFactor(input.value);
  if (code === null) {
    view.showFieldError('code', INVALID_SECOND_FACTOR);
    return;
  }
  view.showFieldError('code', null);
  view.clearError();

  const button = view.element('code-form').querySelector('button[type="submit"]');
  view.setBusy(button, true);
  try {
    await client.submitSecondFactor(pendingLoginId, code);
  } catch (error) {
    view.showError(describeFailure(error, 'code'));
    if (error instanceof AuthError && [404, 410].includes(error.status)) {
      pendingLoginId = null;
      showRequest();
    } else {
      input.select();
      input.focus();
    }
    return;
  } finally {
    view.setBusy(button, false);
  }

  input.value = '';
  pendingLoginId = null;
  await showUserAfterSignIn();
}

async function signOut() {
  const button = view.element('sign-out');
  view.clearError();
  view.setBusy(button, true);
  try {
    await client.signOut();
  } catch (error) {
    // A 401 means the sign-in had already ended, which is the goal of signing out.
    if (!isUnauthorized(error)) {
      view.showError(describeFailure(error, 'session'));
      return;
    }
  } finally {
    view.setBusy(button, false);
  }
  view.clearEnrolment();
  view.clearRecoveryCodes();
  showRequest('You are signed out.');
}

async function startTotp() {
  const button = view.element('totp-start');
  view.clearError();
  view.setBusy(button, true);
  try {
    view.showEnrolment(await client.enrolTotp());
  } catch (error) {
    view.showError(describeFailure(error, 'session'));
  } finally {
    view.setBusy(button, false);
  }
}

async function activateTotp() {
  const input = view.element('activate-code');
  const code = normalizeTotpCode(input.value);
  if (code === null) {
    view.showFieldError('activate-code', INVALID_TOTP);
    return;
  }
  view.showFieldError('activate-code', null);
  view.clearError();

  const button = view.element('activate-form').querySelector('button[type="submit"]');
  view.setBusy(button, true);
  try {
    const { recoveryCodes } = await client.activateTotp(code);
    view.showRecoveryCodes(recoveryCodes);
  } catch (error) {
    view.showError(describeFailure(error, 'activate'));
    input.select();
    input.focus();
  } finally {
    view.setBusy(button, false);
  }
}

function isUnauthorized(error) {
  return error instanceof AuthError && error.status === 401;
}

function reportUnexpected(error) {
  console.error('sealcast: the sign-in page failed', error);
  view.showError(UNEXPECTED);
}
