// The sign-in page's requests against a scripted relay on loopback: real HTTP requests through
// fetch, checked for method, path, headers and body, and the page's reading of each response.
// The relay here implements only what each test needs of the accounts API.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, test } from 'node:test';

import { AuthClient, AuthError, CSRF_COOKIE } from '../login-api.js';

const servers = [];

after(() => servers.forEach((server) => server.close()));

/**
 * Starts a relay whose routes are `{ 'METHOD /path': (request) => reply }`, where a reply is
 * `{ status, body, headers }` and `body` is an object sent as JSON or a string sent as is.
 * Resolves to `{ base, requests }`; `requests` records `{ method, path, headers, body }`.
 */
async function startRelay(routes) {
  const requests = [];
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const recorded = {
        method: request.method,
        path: request.url,
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(recorded);
      const route = routes[`${request.method} ${request.url}`];
      const reply = route === undefined ? { status: 404, body: notFound() } : route(recorded);
      const text = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body ?? {});
      response.writeHead(reply.status ?? 200, {
        'Content-Type': 'application/json',
        ...reply.headers,
      });
      response.end(text);
    });
  });
  servers.push(server);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { base: `http://127.0.0.1:${server.address().port}`, requests };
}

function notFound() {
  return { error: 'not_found', message: 'no such endpoint' };
}

// The page sends paths relative to its origin; Node's fetch needs the origin spelled out.
function clientFor(base, cookies = '') {
  return new AuthClient({
    fetch: (path, init) => fetch(new URL(path, base), init),
    cookies: () => cookies,
  });
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected the request to fail');
}

const USER = {
  user_id: 'usr_1',
  email: 'ana@clinic.example',
  role: 'admin',
  organization_id: 'org_1',
  totp_enabled: false,
};

test('link request sends email as json', async () => {
  const relay = await startRelay({
    'POST /v1/auth/login': () => ({
      status: 202,
      body: { login_id: 'lgn_1', expires_in: 900, poll_interval: 5 },
    }),
  });
  const started = await clientFor(relay.base).requestLink('ana@clinic.example');

  assert.deepEqual(started, { expiresIn: 900 });
  const [request] = relay.requests;
  assert.equal(request.method, 'POST');
  assert.equal(request.headers['content-type'], 'application/json');
  assert.equal(request.headers['x-csrf-token'], undefined);
  assert.deepEqual(JSON.parse(request.body), { email: 'ana@clinic.example' });
});

test('confirm sends token and reads kind', async () => {
  const cases = [
    [{ kind: 'device', totp_required: true, login_id: 'lgn_1' }, 'device', true],
    [{ kind: 'browser', totp_required: false, login_id: 'lgn_2' }, 'browser', false],
  ];
  for (const [body, kind, totpRequired] of cases) {
    const relay = await startRelay({ 'POST /v1/auth/login/confirm': () => ({ body }) });
    const confirmed = await clientFor(relay.base).confirm('magic-token');

    assert.equal(confirmed.kind, kind);
    assert.equal(confirmed.totpRequired, totpRequired);
    assert.equal(confirmed.loginId, body.login_id);
    assert.deepEqual(JSON.parse(relay.requests[0].body), { token: 'magic-token' });
  }
});

test('confirm rejects unreadable responses', async () => {
  const bodies = [
    { kind: 'phone', totp_required: false, login_id: 'lgn_1' },
    { kind: 'browser', totp_required: 'no', login_id: 'lgn_1' },
    { kind: 'browser', totp_required: false },
    'not json',
    '',
  ];
  for (const body of bodies) {
    const relay = await startRelay({ 'POST /v1/auth/login/confirm': () => ({ body }) });
    const error = await rejection(clientFor(relay.base).confirm('magic-token'));
    assert.ok(error instanceof AuthError, JSON.stringify(body));
    assert.equal(error.kind, 'bad_response', JSON.stringify(body));
  }
});

test('spent link is an http error with message', async () => {
  const relay = await startRelay({
    'POST /v1/auth/login/confirm': () => ({
      status: 410,
      body: { error: 'gone', message: 'sign-in link expired: request a new one' },
    }),
  });
  const error = await rejection(clientFor(relay.base).confirm('magic-token'));

  assert.equal(error.kind, 'http');
  assert.equal(error.status, 410);
  assert.equal(error.serverMessage, 'sign-in link expired: request a new one');
});

test('throttled request reads retry after', async () => {
  const relay = await startRelay({
    'POST /v1/auth/login': () => ({
      status: 429,
      headers: { 'Retry-After': '17' },
      body: { error: 'too_many_requests', message: 'retry in 17 s' },
    }),
  });
  const error = await rejection(clientFor(relay.base).requestLink('ana@clinic.example'));

  assert.equal(error.status, 429);
  assert.equal(error.retryAfter, 17);
});

test('proxy error page has no message', async () => {
  const relay = await startRelay({
    'GET /v1/me': () => ({ status: 502, body: '<html>Bad Gateway</html>' }),
  });
  const error = await rejection(clientFor(relay.base).currentUser());

  assert.equal(error.kind, 'http');
  assert.equal(error.status, 502);
  assert.equal(error.serverMessage, null);
});

test('unreachable relay is a network error', async () => {
  const relay = await startRelay({});
  servers.pop().close();
  await new Promise((resolve) => setTimeout(resolve, 50));
  const error = await rejection(clientFor(relay.base).requestLink('ana@clinic.example'));

  assert.ok(error instanceof AuthError);
  assert.equal(error.kind, 'network');
});

test('second factor sends login id and code', async () => {
  const relay = await startRelay({ 'POST /v1/auth/login/totp': () => ({ body: {} }) });
  await clientFor(relay.base).submitSecondFactor('lgn_1', '123456');

  assert.deepEqual(JSON.parse(relay.requests[0].body), { login_id: 'lgn_1', code: '123456' });
});

test('sign out echoes csrf cookie', async () => {
  const relay = await startRelay({ 'POST /v1/auth/logout': () => ({ status: 204, body: '' }) });
  const cookies = `theme=dark; ${CSRF_COOKIE}=csrf-123`;
  await clientFor(relay.base, cookies).signOut();

  const [request] = relay.requests;
  assert.equal(request.method, 'POST');
  assert.equal(request.headers['x-csrf-token'], 'csrf-123');
  assert.equal(request.body, '');
  assert.equal(request.headers['content-type'], undefined);
});

test('current user reads role and totp', async () => {
  const relay = await startRelay({ 'GET /v1/me': () => ({ body: USER }) });
  const user = await clientFor(relay.base).currentUser();

  assert.deepEqual(user, { email: USER.email, role: 'admin', totpEnabled: false });
  assert.equal(relay.requests.length, 1);
});

test('current user rejects unknown role', async () => {
  const relay = await startRelay({ 'GET /v1/me': () => ({ body: { ...USER, role: 'root' } }) });
  const error = await rejection(clientFor(relay.base).currentUser());

  assert.equal(error.kind, 'bad_response');
});

test('expired access refreshes once', async () => {
  let signedIn = false;
  const relay = await startRelay({
    'GET /v1/me': () =>
      signedIn ? { body: USER } : { status: 401, body: { error: 'unauthorized', message: 'x' } },
    'POST /v1/auth/refresh': () => {
      signedIn = true;
      return { status: 204, body: '' };
    },
  });
  const user = await clientFor(relay.base, `${CSRF_COOKIE}=csrf-123`).currentUser();

  assert.equal(user.email, USER.email);
  const calls = relay.requests.map((request) => `${request.method} ${request.path}`);
  assert.deepEqual(calls, ['GET /v1/me', 'POST /v1/auth/refresh', 'GET /v1/me']);
  assert.equal(relay.requests[1].headers['x-csrf-token'], 'csrf-123');
});

test('failed refresh stops after one try', async () => {
  const unauthorized = () => ({ status: 401, body: { error: 'unauthorized', message: 'x' } });
  const relay = await startRelay({
    'GET /v1/me': unauthorized,
    'POST /v1/auth/refresh': unauthorized,
  });
  const error = await rejection(clientFor(relay.base, `${CSRF_COOKIE}=csrf-123`).currentUser());

  assert.equal(error.status, 401);
  assert.equal(relay.requests.length, 2);
});

test('no csrf cookie means no refresh', async () => {
  const relay = await startRelay({
    'GET /v1/me': () => ({ status: 401, body: { error: 'unauthorized', message: 'x' } }),
  });
  const error = await rejection(clientFor(relay.base).currentUser());

  assert.equal(error.status, 401);
  assert.equal(relay.requests.length, 1);
});

test('totp enrolment reads secret and uri', async () => {
  const relay = await startRelay({
    'POST /v1/auth/totp/enrol': () => ({
      body: {
        otpauth_uri: 'otpauth://totp/sealcast:ana?secret=JBSWY3DPEHPK3PXP&issuer=sealcast',
        secret_base32: 'JBSWY3DPEHPK3PXP',
        qr_svg: '<svg onload="alert(1)"></svg>',
      },
    }),
  });
  const enrolment = await clientFor(relay.base, `${CSRF_COOKIE}=csrf-123`).enrolTotp();

  assert.deepEqual(Object.keys(enrolment).sort(), ['otpauthUri', 'secretBase32']);
  assert.equal(enrolment.secretBase32, 'JBSWY3DPEHPK3PXP');
  assert.match(enrolment.otpauthUri, /^otpauth:\/\/totp\//);
  assert.equal(relay.requests[0].headers['x-csrf-token'], 'csrf-123');
});

test('totp activation returns recovery codes', async () => {
  const relay = await startRelay({
    'POST /v1/auth/totp/activate': () => ({ body: { recovery_codes: ['aaaa-bbbb', 'cccc-dddd'] } }),
  });
  const activated = await clientFor(relay.base, `${CSRF_COOKIE}=c`).activateTotp('123456');

  assert.deepEqual(activated.recoveryCodes, ['aaaa-bbbb', 'cccc-dddd']);
  assert.deepEqual(JSON.parse(relay.requests[0].body), { code: '123456' });
});

test('totp activation needs recovery codes', async () => {
  for (const codes of [[], [''], [7], undefined]) {
    const relay = await startRelay({
      'POST /v1/auth/totp/activate': () => ({ body: { recovery_codes: codes } }),
    });
    const error = await rejection(clientFor(relay.base).activateTotp('123456'));
    assert.equal(error.kind, 'bad_response', JSON.stringify(codes));
  }
});
