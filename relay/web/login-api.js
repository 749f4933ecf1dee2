// Requests of the staff sign-in page to the relay's accounts API, and the pure helpers around
// them: reading the magic-link token from the page address, reading the CSRF cookie, checking
// form input, building requests and turning failures into plain messages.
//
// The relay sets the access and refresh tokens as HttpOnly cookies, so this module cannot read
// them. It reads only the CSRF cookie, whose value it echoes in a header on state-changing
// requests, as the accounts API requires.

export const CSRF_COOKIE = '__Host-sealcast_csrf';
export const CSRF_HEADER = 'X-CSRF-Token';

// Maximum lengths of a token and a recovery code that the page sends. Real ones are far shorter.
const MAX_TOKEN_LENGTH = 1024;
const MAX_RECOVERY_CODE_LENGTH = 64;
// Maximum length of an email address that the page sends.
const MAX_EMAIL_LENGTH = 254;
const WRAPPER_CHARS = /^[<>"']+|[<>"']+$/g;
// URL-safe characters, so base64url with or without padding passes.
const TOKEN_PATTERN = /^[A-Za-z0-9._~=-]+$/;
const TOTP_PATTERN = /^\d{6}$/;
const RECOVERY_CODE_PATTERN = /^[A-Za-z0-9-]{8,}$/;
const ROLES = new Set(['admin', 'clinician']);

/** A failed request: `kind` is `http`, `network` or `bad_response`. */
export class AuthError extends Error {
  /**
   * @param {string} kind `http` for an error status, `network` when no response arrived,
   *   `bad_response` for a response body this page cannot read.
   * @param {object} details `status`, `retryAfter` (seconds or null) and `serverMessage`.
   */
  constructor(kind, { status = null, retryAfter = null, serverMessage = null } = {}) {
    super(`sign-in request failed: ${status ?? kind}`);
    this.name = 'AuthError';
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
    this.serverMessage = serverMessage;
  }
}

/**
 * Reads the magic-link token from the page address, `window.location` or any object with its
 * `pathname` and `hash`.
 *
 * The link is `/login#token=TOKEN`. Tolerates what mail clients do to links: whitespace (also
 * percent-encoded), wrapping `<>` and quotes. Returns `{ token, cleanUrl, error }`: `token` is
 * null when the fragment has no token, `error` is `invalid_link` when it has a malformed one,
 * and `cleanUrl` is the path without query or fragment, for the address bar. The token's own
 * format is the relay's to check.
 */
export function readLoginAddress({ pathname, hash }) {
  const cleanUrl = pathname;
  const fragment = hash.startsWith('#') ? hash.slice(1) : hash;
  const part = fragment
    .split('&')
    .map(cleanLinkValue)
    .find((text) => text.startsWith('token='));
  const token = part?.slice('token='.length).replace(WRAPPER_CHARS, '');
  if (token === undefined || token === '') {
    return { token: null, cleanUrl, error: token === '' ? 'invalid_link' : null };
  }
  if (token.length > MAX_TOKEN_LENGTH || !TOKEN_PATTERN.test(token)) {
    return { token: null, cleanUrl, error: 'invalid_link' };
  }
  return { token, cleanUrl, error: null };
}

// Undoes what mail clients do to a link part: percent-encoding, line breaks and spaces, and
// wrapping angle brackets or quotes.
function cleanLinkValue(text) {
  let decoded = text;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    decoded = text;
  }
  return decoded.replace(/\s+/g, '').replace(WRAPPER_CHARS, '');
}

/** Returns the value of cookie `name` in a `document.cookie` string, or null if it is unset. */
export function readCookie(cookies, name) {
  for (const pair of cookies.split(';')) {
    const separator = pair.indexOf('=');
    if (separator < 0 || pair.slice(0, separator).trim() !== name) {
      continue;
    }
    const value = pair.slice(separator + 1).trim();
    return value === '' ? null : value;
  }
  return null;
}

/** Returns the trimmed address, or null unless it looks like `local@domain`. */
export function normalizeEmail(text) {
  const email = text.trim();
  const at = email.lastIndexOf('@');
  const valid =
    email.length <= MAX_EMAIL_LENGTH && at > 0 && at < email.length - 1 && !/\s/.test(email);
  return valid ? email : null;
}

/**
 * Returns the code to send for the second factor, or null if it is neither six TOTP digits nor
 * a recovery code. Spaces are removed, so `123 456` counts as six digits.
 */
export function normalizeSecondFactor(text) {
  const code = text.replace(/\s+/g, '');
  if (TOTP_PATTERN.test(code)) {
    return code;
  }
  const recovery = code.length <= MAX_RECOVERY_CODE_LENGTH && RECOVERY_CODE_PATTERN.test(code);
  return recovery ? code : null;
}

/** Returns six TOTP digits without spaces, or null. */
export function normalizeTotpCode(text) {
  const code = text.replace(/\s+/g, '');
  return TOTP_PATTERN.test(code) ? code : null;
}

/**
 * Builds the arguments of `fetch` for one API request: same-origin cookies, no caching, no
 * referrer, a JSON body if there is one, and the CSRF header whenever the cookie is set.
 */
export function buildRequest(method, path, { body, csrfToken } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
  }
  if (csrfToken) {
    headers[CSRF_HEADER] = csrfToken;
  }
  const init = {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    referrerPolicy: 'no-referrer',
  };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
  }
  return { url: path, init };
}

/**
 * Returns the `Retry-After` delay in whole seconds, from either form of the header (a number of
 * seconds or an HTTP-date), or null when the header is missing or unreadable.
 */
export function parseRetryAfter(value, nowMs) {
  if (value === null || value === undefined) {
    return null;
  }
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    return Number(text);
  }
  // Every HTTP-date starts with a day name. Date.parse alone would also read `-5` as a year.
  const dateMs = /^[A-Za-z]{3}/.test(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(dateMs)) {
    return null;
  }
  return Math.max(0, Math.ceil((dateMs - nowMs) / 1000));
}

/** Returns `N minute(s)` for a number of seconds, rounded up and at least one minute. */
export function formatMinutes(seconds) {
  const minutes = Math.max(1, Math.ceil(seconds / 60));
  return `${minutes} minute${minutes === 1 ? '' : 's'}`;
}

const AGAIN = 'Try again in a moment.';
const NEW_LINK = 'Request a new sign-in link below.';
// Messages for a 401 at each step of the page.
const UNAUTHORIZED = {
  request: 'The relay did not accept this request. Reload the page and try again.',
  confirm: `This sign-in link is not valid. ${NEW_LINK}`,
  code: 'The code was not accepted. Check it and try again, or use a recovery code.',
  activate: 'The code was not accepted. Enter the current code from your authenticator app.',
  session: 'Your sign-in has ended. Request a new sign-in link.',
};

/**
 * Returns the plain message for a failed request at one step of the page: `request`, `confirm`,
 * `code`, `activate` or `session`. The relay's own `ErrorBody.message` follows as detail
 * where it adds to the status.
 */
export function describeFailure(error, step) {
  if (!(error instanceof AuthError)) {
    return 'Something went wrong on this page. Reload the page to try again.';
  }
  if (error.kind === 'network') {
    return 'The relay could not be reached. Check your internet connection and try again.';
  }
  if (error.kind === 'bad_response') {
    return `The relay sent a response this page cannot read. ${AGAIN}`;
  }
  const status = error.status;
  if (status === 429) {
    const seconds = error.retryAfter;
    const wait = seconds === null ? 'a minute' : `${seconds} second${seconds === 1 ? '' : 's'}`;
    return `Too many attempts. Wait ${wait}, then try again.`;
  }
  if (status >= 500) {
    return `The relay failed to handle the request. ${AGAIN}`;
  }
  return withDetail(clientErrorMessage(status, step), error.serverMessage);
}

function clientErrorMessage(status, step) {
  switch (status) {
    case 400:
      return 'The relay rejected the request as invalid.';
    case 401:
      return UNAUTHORIZED[step] ?? UNAUTHORIZED.session;
    case 403:
      return 'Your account is not allowed to do this.';
    case 404:
      return step === 'confirm' ? `This sign-in link is not valid. ${NEW_LINK}` : 'Not found.';
    case 410:
      return `This sign-in link has expired or was already used. ${NEW_LINK}`;
    default:
      return `The request failed with status ${status}.`;
  }
}

function withDetail(text, serverMessage) {
  if (typeof serverMessage !== 'string' || serverMessage.trim() === '') {
    return text;
  }
  return `${text} Details: ${serverMessage.trim()}`;
}

// ---------------------------------------------------------------------------------------------
// Requests

/**
 * The accounts API as the sign-in page uses it. `fetch` is the browser's fetch (or a
 * stand-in with the same contract in tests), and `cookies` returns `document.cookie`.
 * Every method resolves to the checked response or rejects with an AuthError.
 */
export class AuthClient {
  #fetch;
  #cookies;
  #now;

  constructor({ fetch, cookies, now = Date.now }) {
    this.#fetch = fetch;
    this.#cookies = cookies;
    this.#now = now;
  }

  /** `POST /v1/auth/login`: mails a sign-in link. Resolves to `{ expiresIn }` in seconds. */
  async requestLink(email) {
    const body = await this.#send('POST', '/v1/auth/login', { email });
    return { expiresIn: requireCount(body?.expires_in) };
  }

  /**
   * `POST /v1/auth/login/confirm`: approves the sign-in of a magic link. Resolves to
   * `{ kind, totpRequired, loginId }`, where `kind` is `device` or `browser`.
   */
  async confirm(token) {
    const body = await this.#send('POST', '/v1/auth/login/confirm', { token });
    const kind = body?.kind;
    if (kind !== 'device' && kind !== 'browser') {
      throw new AuthError('bad_response');
    }
    return {
      kind,
      totpRequired: requireBoolean(body.totp_required),
      loginId: requireString(body.login_id),
    };
  }

  /** `POST /v1/auth/login/totp`: the second factor of a pending browser sign-in. */
  async submitSecondFactor(loginId, code) {
    await this.#send('POST', '/v1/auth/login/totp', { login_id: loginId, code });
  }

  /**
   * `GET /v1/me`: the signed-in user as `{ email, role, totpEnabled }`. When the access cookie
   * has expired, refreshes the tokens once with the refresh cookie and repeats the request.
   */
  async currentUser() {
    let body;
    try {
      body = await this.#send('GET', '/v1/me');
    } catch (error) {
      if (!isUnauthorized(error) || this.#csrfToken() === null) {
        throw error;
      }
      await this.#send('POST', '/v1/auth/refresh');
      body = await this.#send('GET', '/v1/me');
    }
    return parseUser(body);
  }

  /** `POST /v1/auth/logout`: revokes this sign-in's refresh tokens and clears the cookies. */
  async signOut() {
    await this.#send('POST', '/v1/auth/logout');
  }

  /** `POST /v1/auth/totp/enrol`: resolves to `{ secretBase32, otpauthUri }`. */
  async enrolTotp() {
    const body = await this.#send('POST', '/v1/auth/totp/enrol');
    return {
      secretBase32: requireString(body?.secret_base32),
      otpauthUri: requireString(body?.otpauth_uri),
    };
  }

  /** `POST /v1/auth/totp/activate`: resolves to `{ recoveryCodes }`, shown only this once. */
  async activateTotp(code) {
    const body = await this.#send('POST', '/v1/auth/totp/activate', { code });
    const codes = body?.recovery_codes;
    if (!Array.isArray(codes) || codes.length === 0 || !codes.every(isNonEmptyString)) {
      throw new AuthError('bad_response');
    }
    return { recoveryCodes: codes };
  }

  #csrfToken() {
    return readCookie(this.#cookies(), CSRF_COOKIE);
  }

  // Sends one request and resolves to its parsed JSON body, or null for an empty body.
  async #send(method, path, body) {
    const request = buildRequest(method, path, { body, csrfToken: this.#csrfToken() });
    let response;
    try {
      response = await this.#fetch(request.url, request.init);
    } catch {
      throw new AuthError('network');
    }
    let text;
    try {
      text = await response.text();
    } catch {
      throw new AuthError('network');
    }
    if (!response.ok) {
      throw new AuthError('http', {
        status: response.status,
        retryAfter: parseRetryAfter(response.headers.get('Retry-After'), this.#now()),
        serverMessage: readErrorMessage(text),
      });
    }
    return parseBody(text);
  }
}

function parseBody(text) {
  if (text.trim() === '') {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new AuthError('bad_response');
  }
}

// The `message` of an ErrorBody, or null when the body is something else, such as a proxy's
// HTML error page.
function readErrorMessage(text) {
  try {
    const message = JSON.parse(text)?.message;
    return typeof message === 'string' ? message : null;
  } catch {
    return null;
  }
}

function parseUser(body) {
  const role = body?.role;
  if (!ROLES.has(role)) {
    throw new AuthError('bad_response');
  }
  return {
    email: requireString(body.email),
    role,
    totpEnabled: requireBoolean(body.totp_enabled),
  };
}

function isUnauthorized(error) {
  return error instanceof AuthError && error.status === 401;
}

function isNonEmptyString(value) {
  return typeof value === 'string' && value !== '';
}

function requireString(value) {
  if (!isNonEmptyString(value)) {
    throw new AuthError('bad_response');
  }
  return value;
}

function requireBoolean(value) {
  if (typeof value !== 'boolean') {
    throw new AuthError('bad_response');
  }
  return value;
}

function requireCount(value) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new AuthError('bad_response');
  }
  return value;
}
