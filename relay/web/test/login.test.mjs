// The sign-in page's pure helpers: the magic-link token from the fragment and the address left
// in the address bar, the CSRF cookie, form input, request building and failure messages.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  AuthError,
  CSRF_COOKIE,
  buildRequest,
  describeFailure,
  formatMinutes,
  normalizeEmail,
  normalizeSecondFactor,
  normalizeTotpCode,
  parseRetryAfter,
  readCookie,
  readLoginAddress,
} from '../login-api.js';

const TOKEN = 'q3Jv0bW7m2Yd_x-8ZkP4sT1uLcN9eRgA6hVwXyF5iOo';

// Reads a link as the page does from window.location, after the URL parser's percent-encoding.
function addressOf(link) {
  const url = new URL(link);
  return readLoginAddress({ pathname: url.pathname, search: url.search, hash: url.hash });
}

const base = 'https://relay.example/login';

test('fragment token table', () => {
  const cases = [
    ['plain', `${base}#token=${TOKEN}`, TOKEN],
    ['padded', `${base}#token=${TOKEN}=`, `${TOKEN}=`],
    ['escaped padding', `${base}#token=${TOKEN}%3D`, `${TOKEN}=`],
    ['line break', `${base}#token=${TOKEN.slice(0, 20)}\n${TOKEN.slice(20)}`, TOKEN],
    ['escaped space', `${base}#token=${TOKEN.slice(0, 20)}%20${TOKEN.slice(20)}`, TOKEN],
    ['angle brackets', `${base}#token=<${TOKEN}>`, TOKEN],
    ['trailing quote', `${base}#token=${TOKEN}"`, TOKEN],
    ['other fragment parts', `${base}#view=1&token=${TOKEN}`, TOKEN],
    ['trailing slash path', `${base}/#token=${TOKEN}`, TOKEN],
    ['no fragment', base, null],
    ['other name', `${base}#secret=${TOKEN}`, null],
    ['query only', `${base}?token=${TOKEN}`, null],
  ];
  for (const [name, link, expected] of cases) {
    const address = addressOf(link);
    assert.equal(address.token, expected, name);
    assert.equal(address.error, null, name);
  }
});

test('malformed fragment tokens are invalid', () => {
  const cases = [
    ['empty', `${base}#token=`],
    ['markup inside', `${base}#token=${TOKEN}<b>x`],
    ['slash', `${base}#token=${TOKEN}/x`],
    ['plus', `${base}#token=${TOKEN.replace('q', '+')}`],
    ['too long', `${base}#token=${'A'.repeat(1025)}`],
  ];
  for (const [name, link] of cases) {
    const address = addressOf(link);
    assert.equal(address.token, null, name);
    assert.equal(address.error, 'invalid_link', name);
  }
});

test('clean address keeps only the path', () => {
  const cases = [
    [`${base}#token=${TOKEN}`, '/login'],
    [`${base}?utm_source=mail#token=${TOKEN}`, '/login'],
    [`${base}/#token=${TOKEN}`, '/login/'],
    [`${base}#token=`, '/login'],
    [base, '/login'],
  ];
  for (const [link, expected] of cases) {
    const address = addressOf(link);
    assert.equal(address.cleanUrl, expected, link);
    assert.ok(!address.cleanUrl.includes(TOKEN), link);
  }
});

test('address without hash sign', () => {
  const address = readLoginAddress({ pathname: '/login', search: '', hash: `token=${TOKEN}` });
  assert.equal(address.token, TOKEN);
});

test('cookie reading table', () => {
  const cases = [
    ['only cookie', `${CSRF_COOKIE}=abc`, 'abc'],
    ['among others', `a=1; ${CSRF_COOKIE}=abc; b=2`, 'abc'],
    ['no spaces', `a=1;${CSRF_COOKIE}=abc`, 'abc'],
    ['value with equals', `${CSRF_COOKIE}=abc==`, 'abc=='],
    ['absent', 'a=1; b=2', null],
    ['empty string', '', null],
    ['empty value', `${CSRF_COOKIE}=`, null],
    ['longer name', `${CSRF_COOKIE}2=abc`, null],
    ['prefixed name', `x${CSRF_COOKIE}=abc`, null],
    ['no equals sign', `${CSRF_COOKIE}`, null],
  ];
  for (const [name, cookies, expected] of cases) {
    assert.equal(readCookie(cookies, CSRF_COOKIE), expected, name);
  }
});

test('email normalization table', () => {
  const cases = [
    ['plain', 'ana@clinic.example', 'ana@clinic.example'],
    ['surrounding spaces', '  ana@clinic.example \n', 'ana@clinic.example'],
    ['quoted local part with at', '"a@b"@clinic.example', '"a@b"@clinic.example'],
    ['empty', '', null],
    ['no at', 'ana.clinic.example', null],
    ['nothing before at', '@clinic.example', null],
    ['nothing after at', 'ana@', null],
    ['inner space', 'ana maria@clinic.example', null],
    ['too long', `${'a'.repeat(250)}@c.ex`, null],
  ];
  for (const [name, text, expected] of cases) {
    assert.equal(normalizeEmail(text), expected, name);
  }
});

test('second factor normalization table', () => {
  const cases = [
    ['six digits', '123456', '123456'],
    ['grouped digits', '123 456', '123456'],
    ['surrounding spaces', ' 123456\n', '123456'],
    ['recovery code', 'k7d2-9xqp-m4ta', 'k7d2-9xqp-m4ta'],
    ['recovery code with spaces', 'k7d2 9xqp m4ta', 'k7d29xqpm4ta'],
    ['five digits', '12345', null],
    ['seven digits', '1234567', null],
    ['empty', '', null],
    ['short letters', 'abc', null],
    ['punctuation', 'k7d2_9xqp!', null],
    ['too long', 'a'.repeat(65), null],
  ];
  for (const [name, text, expected] of cases) {
    assert.equal(normalizeSecondFactor(text), expected, name);
  }
});

test('totp code normalization table', () => {
  const cases = [
    ['six digits', '654321', '654321'],
    ['grouped digits', '654 321', '654321'],
    ['recovery code', 'k7d2-9xqp-m4ta', null],
    ['letters', 'abcdef', null],
    ['full-width digits', '６５４３２１', null],
    ['five digits', '65432', null],
  ];
  for (const [name, text, expected] of cases) {
    assert.equal(normalizeTotpCode(text), expected, name);
  }
});

test('post request has json body and csrf header', () => {
  const request = buildRequest('POST', '/v1/auth/login/confirm', {
    body: { token: TOKEN },
    csrfToken: 'csrf-value',
  });
  assert.equal(request.url, '/v1/auth/login/confirm');
  assert.equal(request.init.method, 'POST');
  assert.equal(request.init.body, `{"token":"${TOKEN}"}`);
  assert.equal(request.init.headers['Content-Type'], 'application/json');
  assert.equal(request.init.headers['X-CSRF-Token'], 'csrf-value');
  assert.equal(request.init.credentials, 'same-origin');
  assert.equal(request.init.cache, 'no-store');
  assert.equal(request.init.referrerPolicy, 'no-referrer');
});

test('get request has no body or csrf header', () => {
  const request = buildRequest('GET', '/v1/me', { csrfToken: null });
  assert.equal(request.init.method, 'GET');
  assert.equal(request.init.body, undefined);
  assert.equal(request.init.headers['Content-Type'], undefined);
  assert.equal(request.init.headers['X-CSRF-Token'], undefined);
  assert.equal(request.init.headers.Accept, 'application/json');
  assert.equal(request.init.credentials, 'same-origin');
});

test('retry after table', () => {
  const now = Date.parse('2026-12-04T12:00:00Z');
  const cases = [
    ['seconds', '30', 30],
    ['zero', '0', 0],
    ['spaces', ' 7 ', 7],
    ['http date', 'Fri, 04 Dec 2026 12:01:30 GMT', 90],
    ['past date', 'Fri, 04 Dec 2026 11:00:00 GMT', 0],
    ['missing', null, null],
    ['negative', '-5', null],
    ['garbage', 'soon', null],
  ];
  for (const [name, value, expected] of cases) {
    assert.equal(parseRetryAfter(value, now), expected, name);
  }
});

test('minutes formatting table', () => {
  const cases = [
    [900, '15 minutes'],
    [60, '1 minute'],
    [61, '2 minutes'],
    [30, '1 minute'],
    [0, '1 minute'],
  ];
  for (const [seconds, expected] of cases) {
    assert.equal(formatMinutes(seconds), expected, String(seconds));
  }
});

const httpError = (status, details = {}) => new AuthError('http', { status, ...details });

test('failure messages by status', () => {
  const cases = [
    ['network', new AuthError('network'), 'request', /could not be reached/],
    ['unreadable', new AuthError('bad_response'), 'session', /cannot read/],
    ['bad request', httpError(400), 'request', /rejected the request as invalid/],
    ['wrong code', httpError(401), 'code', /code was not accepted/],
    ['wrong first code', httpError(401), 'activate', /code was not accepted/],
    ['bad link', httpError(401), 'confirm', /link is not valid.*new sign-in link/],
    ['ended session', httpError(401), 'session', /sign-in has ended/],
    ['forbidden', httpError(403), 'session', /not allowed/],
    ['unknown link', httpError(404), 'confirm', /link is not valid/],
    ['spent link', httpError(410), 'confirm', /expired or was already used.*new sign-in link/],
    ['throttled', httpError(429, { retryAfter: 42 }), 'request', /Wait 42 seconds/],
    ['throttled one second', httpError(429, { retryAfter: 1 }), 'code', /Wait 1 second,/],
    ['throttled no header', httpError(429), 'code', /Wait a minute/],
    ['server failure', httpError(500), 'confirm', /relay failed/],
    ['unavailable', httpError(503), 'session', /relay failed/],
    ['other status', httpError(418), 'session', /status 418/],
    ['not an auth error', new TypeError('x'), 'session', /Reload the page/],
  ];
  for (const [name, error, step, expected] of cases) {
    assert.match(describeFailure(error, step), expected, name);
  }
});

test('failure message shows relay detail', () => {
  const invalid = httpError(400, { serverMessage: 'invalid email address: missing domain' });
  assert.match(describeFailure(invalid, 'request'), /Details: invalid email address/);

  const internal = httpError(500, { serverMessage: 'internal error: retry later' });
  assert.doesNotMatch(describeFailure(internal, 'session'), /Details/);

  const blank = httpError(401, { serverMessage: '  ' });
  assert.doesNotMatch(describeFailure(blank, 'code'), /Details/);
});
