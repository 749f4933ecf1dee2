// Redemption and the follow socket against a scripted relay on loopback: real HTTP requests and
// real WebSocket framing, with frames sealed by the test. The relay here implements only what
// each test needs of the relay's contract.

import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import { after, test } from 'node:test';

import {
  FollowSession,
  MAX_PAIRED_REFUSALS,
  backoffDelay,
  followUrl,
  resumeOffset,
} from '../connection.js';
import { classifyInviteStatus, redeemInvite } from '../invite.js';
import {
  deriveFingerprint,
  deriveInviteAuthKey,
  encodeBase64url,
  importSessionKey,
} from '../protocol.js';
import { TestStream, segmentJson } from '../test-support/seal.mjs';
import { LoopbackWebSocket, acceptUpgrade } from '../test-support/websocket.mjs';

const keyBytes = randomBytes(32);
const sessionIdHex = 'c0ffee00112233445566778899aabbcc';
const sessionId = Buffer.from(sessionIdHex, 'hex');
const token = encodeBase64url(randomBytes(32));
const epoch = 18446744073709551557n;
const sessionKey = await importSessionKey(keyBytes);
const fingerprint = await deriveFingerprint(sessionKey);
const inviteAuthKey = await deriveInviteAuthKey(sessionKey);
const authKeyBytes = Buffer.from(
  await crypto.subtle.exportKey('raw', await deriveInviteAuthKey(sessionKey, true)),
);
const relays = [];
// A broken reconnect loop would otherwise spin until the whole run times out.
const LIMIT = { timeout: 10_000 };

after(() => relays.forEach((relay) => relay.close()));

function segment(id, revision, final) {
  const text = `line ${id} revision ${revision}`;
  return {
    segmentId: id,
    revision,
    speaker: 'doctor',
    startMs: id * 1000,
    endMs: id * 1000 + 800,
    text,
    final,
  };
}

// Frames of one stream: segments 1 to 3, each an interim then a final revision, then the end.
async function sealScript() {
  const stream = await TestStream.create(keyBytes, sessionId, randomBytes(16));
  const frames = [];
  for (const id of [1, 2, 3]) {
    frames.push(await stream.sealSegment(segment(id, 0, false)));
    frames.push(await stream.sealSegment(segment(id, 1, true)));
  }
  frames.push(await stream.sealEnd(3));
  return frames;
}

function welcome(overrides = {}) {
  const fields = {
    session_id: `"${sessionIdHex}"`,
    epoch: String(epoch),
    fingerprint: `"${encodeBase64url(fingerprint)}"`,
    from_offset: '0',
    ended: 'false',
    ...overrides,
  };
  const members = Object.entries(fields).map(([name, value]) => `"${name}":${value}`);
  return `{"type":"welcome",${members.join(',')}}`;
}

function delivery(offset, frame) {
  const message = Buffer.alloc(8 + frame.length);
  message.writeBigUInt64BE(BigInt(offset));
  Buffer.from(frame).copy(message, 8);
  return message;
}

/**
 * Starts a relay that redeems invites like the real one and runs `follow` for every accepted
 * upgrade.
 */
async function startRelay({ follow, inviteStatus = null, challengeFingerprint = null }) {
  const relay = {
    cookie: null,
    redeemed: false,
    challenges: new Set(),
    requests: [],
    upgrades: [],
  };
  const server = http.createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      relay.requests.push(request.url);
      const [status, reply, headers] = answerInvite(relay, request, JSON.parse(body || '{}'), {
        inviteStatus,
        challengeFingerprint,
      });
      response.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      response.end(reply);
    });
  });
  server.on('upgrade', (request, socket) => {
    relay.upgrades.push(request.url);
    if (relay.cookie === null || request.headers.cookie !== relay.cookie) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const url = new URL(request.url, 'http://relay');
    follow(acceptUpgrade(request, socket), { url, index: relay.upgrades.length - 1 });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.port = server.address().port;
  relay.close = () => {
    server.closeAllConnections();
    server.close();
  };
  relays.push(relay);
  return relay;
}

function answerInvite(relay, request, body, { inviteStatus, challengeFingerprint }) {
  if (inviteStatus !== null) {
    return [inviteStatus, '{"error":"scripted","message":"scripted refusal"}', {}];
  }
  if (request.url === '/v1/invites/challenge') {
    const challenge = randomBytes(32).toString('base64url');
    relay.challenges.add(challenge);
    const offered = challengeFingerprint ?? encodeBase64url(fingerprint);
    return [200, JSON.stringify({ challenge, session_id: sessionIdHex, fingerprint: offered }), {}];
  }
  const label = Buffer.from('sealcast v1 invite proof');
  const challengeBytes = Buffer.from(body.challenge, 'base64url');
  const expected = createHmac('sha256', authKeyBytes).update(
    Buffer.concat([label, challengeBytes]),
  );
  if (!relay.challenges.delete(body.challenge) || body.proof !== expected.digest('base64url')) {
    return [401, '{"error":"unauthorized","message":"invalid proof"}', {}];
  }
  relay.redeemed = true;
  relay.cookie = `follow=${randomBytes(8).toString('hex')}`;
  const cookie = { 'Set-Cookie': `${relay.cookie}; HttpOnly; SameSite=Strict` };
  return [200, `{"session_id":"${sessionIdHex}","epoch":${epoch}}`, cookie];
}

// The browser side: fetch and WebSocket share one cookie, as a browser's cookie jar does.
// Timers fire at once, and the requested delays are recorded.
function browserEnv(relay) {
  const jar = { cookie: null };
  const delays = [];
  const origin = `http://127.0.0.1:${relay.port}`;
  const env = {
    fetch: async (url, init) => {
      const headers = { ...init.headers, ...(jar.cookie ? { Cookie: jar.cookie } : {}) };
      const response = await fetch(url, { ...init, headers });
      jar.cookie = response.headers.get('set-cookie')?.split(';')[0] ?? jar.cookie;
      return response;
    },
    WebSocket: class extends LoopbackWebSocket {
      constructor(url) {
        super(url, jar.cookie ? { Cookie: jar.cookie } : {});
      }
    },
    location: { protocol: 'http:', host: `127.0.0.1:${relay.port}`, origin },
    setTimeout: (callback, delay) => {
      delays.push(delay);
      return setTimeout(callback, 0);
    },
    clearTimeout: (timer) => clearTimeout(timer),
    random: () => 0.5,
  };
  return { env, jar, delays };
}

function recordingListener() {
  const record = { statuses: [], segments: [], notices: [], ended: 0, failures: [], sessions: [] };
  record.listener = {
    status: (state) => record.statuses.push(state),
    session: (info) => record.sessions.push(info),
    segment: (item) =>
      record.segments.push(`${item.segmentId}.${item.revision}${item.final ? 'f' : 'i'}`),
    notice: (counters) => record.notices.push(counters),
    ended: () => (record.ended += 1),
    failed: (kind) => record.failures.push(kind),
  };
  return record;
}

async function follow(relay, { socketFirst = false, env = browserEnv(relay) } = {}) {
  const record = recordingListener();
  const session = new FollowSession({
    token,
    sessionKey,
    fingerprint,
    inviteAuthKey,
    env: env.env,
    listener: record.listener,
  });
  await session.run({ socketFirst });
  return { record, delays: env.delays };
}

const ALL_SEGMENTS = ['1.0i', '1.1f', '2.0i', '2.1f', '3.0i', '3.1f'];

test('backoff grows with jitter within bounds', LIMIT, () => {
  assert.equal(
    backoffDelay(0, () => 0),
    1000,
  );
  assert.ok(backoffDelay(0, () => 0.999) < 2000);
  assert.equal(
    backoffDelay(2, () => 0),
    4000,
  );
  assert.equal(
    backoffDelay(5, () => 0.5),
    30000,
  );
  assert.equal(
    backoffDelay(60, () => 0),
    30000,
  );
});

test('resume offset takes the lower bound', LIMIT, () => {
  assert.equal(resumeOffset(null, null), 0n);
  assert.equal(resumeOffset(9n, null), 0n);
  assert.equal(resumeOffset(9n, 5n), 6n);
  assert.equal(resumeOffset(4n, 5n), 5n);
  assert.equal(resumeOffset(18446744073709551614n, 18446744073709551614n), 18446744073709551615n);
});

test('follow url uses the page host', LIMIT, () => {
  const secure = { protocol: 'https:', host: 'relay.example:8443' };
  assert.equal(followUrl(secure, null, 0n), 'wss://relay.example:8443/v1/follow?from=0');
  assert.equal(
    followUrl(secure, epoch, 12n),
    `wss://relay.example:8443/v1/follow?epoch=${epoch}&from=12`,
  );
  assert.equal(
    followUrl({ protocol: 'http:', host: 'localhost:1' }, 3n, 0n),
    'ws://localhost:1/v1/follow?epoch=3&from=0',
  );
});

test('invite statuses classify', LIMIT, () => {
  const expected = {
    404: 'not_found',
    409: 'already_used',
    410: 'ended',
    429: 'retry',
    503: 'retry',
    400: 'refused',
    403: 'refused',
  };
  for (const [status, kind] of Object.entries(expected)) {
    assert.equal(classifyInviteStatus(Number(status)), kind, status);
  }
});

test('redeem proves the key and gets the cookie', LIMIT, async () => {
  const relay = await startRelay({ follow: () => undefined });
  const { env, jar } = browserEnv(relay);
  const origin = env.location.origin;
  const result = await redeemInvite({
    fetchFn: env.fetch,
    origin,
    token,
    fingerprint,
    inviteAuthKey,
  });
  assert.deepEqual(result, { outcome: 'ok', sessionId: sessionIdHex, epoch });
  assert.equal(relay.redeemed, true);
  assert.equal(jar.cookie, relay.cookie);
});

test('redeem stops at a fingerprint mismatch', LIMIT, async () => {
  const relay = await startRelay({
    follow: () => undefined,
    challengeFingerprint: 'AAAAAAAAAAAAAAAAAAAAAA',
  });
  const { env } = browserEnv(relay);
  const origin = env.location.origin;
  const result = await redeemInvite({
    fetchFn: env.fetch,
    origin,
    token,
    fingerprint,
    inviteAuthKey,
  });
  assert.deepEqual(result, { outcome: 'failed', kind: 'fingerprint_mismatch' });
  assert.deepEqual(relay.requests, ['/v1/invites/challenge']);
});

test('redeem maps refusals and network failures', LIMIT, async () => {
  const cases = [
    [409, 'already_used'],
    [410, 'ended'],
    [404, 'not_found'],
    [400, 'refused'],
  ];
  for (const [status, kind] of cases) {
    const relay = await startRelay({ follow: () => undefined, inviteStatus: status });
    const { env } = browserEnv(relay);
    const result = await redeemInvite({
      fetchFn: env.fetch,
      origin: env.location.origin,
      token,
      fingerprint,
      inviteAuthKey,
    });
    assert.deepEqual(result, { outcome: 'failed', kind }, String(status));
  }
  const busy = await startRelay({ follow: () => undefined, inviteStatus: 503 });
  const { env } = browserEnv(busy);
  const retry = await redeemInvite({
    fetchFn: env.fetch,
    origin: env.location.origin,
    token,
    fingerprint,
    inviteAuthKey,
  });
  assert.deepEqual(retry, { outcome: 'retry' });
  busy.close();
  const offline = await redeemInvite({
    fetchFn: env.fetch,
    origin: env.location.origin,
    token,
    fingerprint,
    inviteAuthKey,
  });
  assert.deepEqual(offline, { outcome: 'retry' });
});

test('follows a session to its end frame', LIMIT, async () => {
  const frames = await sealScript();
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      frames.forEach((frame, offset) => socket.sendBinary(delivery(offset, frame)));
    },
  });
  const { record } = await follow(relay);
  assert.deepEqual(record.segments, ALL_SEGMENTS);
  assert.deepEqual(record.statuses, ['connecting', 'live', 'ended']);
  assert.equal(record.ended, 1);
  assert.deepEqual(relay.requests, ['/v1/invites/challenge', '/v1/invites/redeem']);
  assert.deepEqual(relay.upgrades, ['/v1/follow?from=0']);
  assert.equal(record.sessions.at(-1).epoch, epoch);
});

test('resumes after a drop without duplicates', LIMIT, async () => {
  const frames = await sealScript();
  const relay = await startRelay({
    follow: (socket, { url, index }) => {
      const from = Number(url.searchParams.get('from'));
      socket.sendText(welcome({ from_offset: String(from) }));
      const end = index === 0 ? 4 : frames.length;
      for (let offset = from; offset < end; offset += 1) {
        socket.sendBinary(delivery(offset, frames[offset]));
      }
      if (index === 0) {
        socket.sendText('{"type":"committed","offset":1}');
        socket.close(1001, 'restart');
      }
    },
  });
  const { record, delays } = await follow(relay);
  assert.deepEqual(record.segments, ALL_SEGMENTS);
  assert.deepEqual(relay.upgrades, ['/v1/follow?from=0', `/v1/follow?epoch=${epoch}&from=2`]);
  assert.deepEqual(record.statuses, ['connecting', 'live', 'reconnecting', 'live', 'ended']);
  assert.deepEqual(delays, [1500]);
  assert.deepEqual(record.notices, [], 'frames sent again after the resume are dropped silently');
});

test('cannot recover restarts from zero without epoch', LIMIT, async () => {
  const frames = await sealScript();
  const relay = await startRelay({
    follow: (socket, { url, index }) => {
      if (index === 1) {
        socket.close(4006, 'history lost');
        return;
      }
      socket.sendText(welcome());
      const end = index === 0 ? 3 : frames.length;
      for (let offset = Number(url.searchParams.get('from')); offset < end; offset += 1) {
        socket.sendBinary(delivery(offset, frames[offset]));
      }
      if (index === 0) {
        socket.sendText('{"type":"committed","offset":2}');
        socket.close(1011, 'commit failed');
      }
    },
  });
  const { record } = await follow(relay);
  assert.deepEqual(relay.upgrades, [
    '/v1/follow?from=0',
    `/v1/follow?epoch=${epoch}&from=3`,
    '/v1/follow?from=0',
  ]);
  assert.deepEqual(record.segments, ALL_SEGMENTS);
  assert.equal(record.notices.at(-1).historyLost, true);
  assert.equal(record.ended, 1);
});

test('session ended close code ends', LIMIT, async () => {
  const frames = await sealScript();
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      socket.sendBinary(delivery(0, frames[0]));
      socket.sendText('{"type":"ended"}');
      socket.close(4004, 'session ended');
    },
  });
  const { record } = await follow(relay);
  assert.deepEqual(record.segments, ['1.0i']);
  assert.equal(record.ended, 1);
  assert.equal(record.statuses.at(-1), 'ended');
});

test('welcome with another fingerprint stops', LIMIT, async () => {
  const relay = await startRelay({
    follow: (socket) => socket.sendText(welcome({ fingerprint: '"AAAAAAAAAAAAAAAAAAAAAA"' })),
  });
  const { record } = await follow(relay);
  assert.deepEqual(record.failures, ['fingerprint_mismatch']);
  assert.deepEqual(record.statuses, ['connecting', 'stopped']);
});

test('socket first redeems only when refused', LIMIT, async () => {
  const frames = await sealScript();
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      frames.forEach((frame, offset) => socket.sendBinary(delivery(offset, frame)));
    },
  });
  const { record } = await follow(relay, { socketFirst: true });
  assert.deepEqual(relay.upgrades, ['/v1/follow?from=0', '/v1/follow?from=0']);
  assert.deepEqual(relay.requests, ['/v1/invites/challenge', '/v1/invites/redeem']);
  assert.equal(record.ended, 1);

  // A second page in the same browser still has the cookie and never redeems.
  const env = browserEnv(relay);
  env.jar.cookie = relay.cookie;
  const again = await follow(relay, { socketFirst: true, env });
  assert.equal(again.record.ended, 1);
  assert.equal(relay.requests.length, 2);
});

test('bad frames count and gaps are reported', LIMIT, async () => {
  const frames = await sealScript();
  const tampered = frames[2].slice();
  tampered[200] ^= 1;
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      socket.sendBinary(delivery(0, frames[0]));
      socket.sendBinary(delivery(1, tampered.subarray(0, 100)));
      socket.sendBinary(delivery(2, tampered));
      // Offsets 3 and 4 (final of segment 2, interim of segment 3) are withheld.
      socket.sendBinary(delivery(5, frames[5]));
      socket.sendBinary(delivery(6, frames[6]));
    },
  });
  const { record } = await follow(relay);
  assert.deepEqual(record.segments, ['1.0i', '3.1f']);
  const last = record.notices.at(-1);
  assert.equal(last.failed, 2);
  assert.equal(last.missedFinal, 2);
  assert.equal(record.ended, 1);
});

test('frame kind decides finality', LIMIT, async () => {
  const stream = await TestStream.create(keyBytes, sessionId, randomBytes(16));
  const claimsFinal = segmentJson({ ...segment(1, 0, true), startMs: 0 });
  const interimClaimingFinal = await stream.seal(1, claimsFinal);
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      socket.sendBinary(delivery(0, interimClaimingFinal));
      socket.close(4004, 'session ended');
    },
  });
  const { record } = await follow(relay);
  assert.deepEqual(record.segments, ['1.0i']);
});

test('repeated policy closes stop', LIMIT, async () => {
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      socket.close(1008, 'not allowed');
    },
  });
  const { record } = await follow(relay);
  assert.deepEqual(record.failures, ['refused']);
  assert.equal(
    relay.requests.length,
    4,
    'one redemption at the start and one after the first close',
  );
});

// A paired page (token null) has its cookie from the pairing and no invite to redeem.
async function followPaired(relay, env) {
  const record = recordingListener();
  const session = new FollowSession({
    token: null,
    sessionKey,
    fingerprint,
    inviteAuthKey: null,
    sessionId: sessionIdHex,
    env: env.env,
    listener: record.listener,
  });
  await session.run({ socketFirst: true });
  return record;
}

test('paired page follows with its cookie', LIMIT, async () => {
  const frames = await sealScript();
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      frames.forEach((frame, offset) => socket.sendBinary(delivery(offset, frame)));
    },
  });
  relay.cookie = 'follow=paired';
  const env = browserEnv(relay);
  env.jar.cookie = relay.cookie;
  const record = await followPaired(relay, env);
  assert.deepEqual(record.segments, ALL_SEGMENTS);
  assert.equal(record.ended, 1);
  assert.deepEqual(relay.requests, []);
});

test('paired page stops when removed', LIMIT, async () => {
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      socket.close(4009, 'this device was removed from the session: pair it again');
    },
  });
  relay.cookie = 'follow=paired';
  const env = browserEnv(relay);
  env.jar.cookie = relay.cookie;
  const record = await followPaired(relay, env);
  assert.deepEqual(record.failures, ['removed']);
  assert.equal(relay.upgrades.length, 1, 'the page reconnected after its removal');
});

test('paired page stops after refused upgrades', LIMIT, async () => {
  const relay = await startRelay({ follow: () => assert.fail('the upgrade was accepted') });
  relay.cookie = 'follow=paired';
  const env = browserEnv(relay);
  env.jar.cookie = 'follow=deleted';
  const record = await followPaired(relay, env);
  assert.deepEqual(record.failures, ['not_paired']);
  assert.equal(relay.upgrades.length, MAX_PAIRED_REFUSALS);
  assert.deepEqual(relay.requests, [], 'a paired page sent an invite request');
});

test('paired page opens later epoch after its key', LIMIT, async () => {
  const laterKeyBytes = randomBytes(32);
  const first = await TestStream.create(keyBytes, sessionId, randomBytes(16));
  const rotated = await TestStream.create(
    laterKeyBytes,
    sessionId,
    randomBytes(16),
    new Uint8Array(32),
    1,
  );
  const frames = [
    await first.sealSegment(segment(1, 1, true)),
    await rotated.sealSegment(segment(2, 1, true)),
    await rotated.sealSegment(segment(3, 1, true)),
    await rotated.sealEnd(2),
  ];
  let sent;
  const allSent = new Promise((resolve) => (sent = resolve));
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      frames.forEach((frame, offset) => socket.sendBinary(delivery(offset, frame)));
      sent();
    },
  });
  relay.cookie = 'follow=paired';
  const env = browserEnv(relay);
  env.jar.cookie = relay.cookie;
  const record = recordingListener();
  const session = new FollowSession({
    token: null,
    sessionKey,
    fingerprint,
    inviteAuthKey: null,
    sessionId: sessionIdHex,
    env: env.env,
    listener: record.listener,
  });
  const running = session.run({ socketFirst: true });

  await allSent;
  // Frames of key epoch 1 wait for their key instead of counting as failed.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(record.segments, ['1.1f']);
  assert.equal(record.ended, 0);
  assert.ok(record.notices.every((notice) => notice.failed === 0), 'a frame counted as failed');

  session.addKey(1, await importSessionKey(laterKeyBytes));
  await running;
  assert.deepEqual(record.segments, ['1.1f', '2.1f', '3.1f']);
  assert.equal(record.ended, 1);
});

test('page with a later epoch key skips fingerprint check', LIMIT, async () => {
  const laterKeyBytes = randomBytes(32);
  const rotated = await TestStream.create(
    laterKeyBytes,
    sessionId,
    randomBytes(16),
    new Uint8Array(32),
    3,
  );
  const frames = [await rotated.sealSegment(segment(1, 1, true)), await rotated.sealEnd(1)];
  const relay = await startRelay({
    follow: (socket) => {
      socket.sendText(welcome());
      frames.forEach((frame, offset) => socket.sendBinary(delivery(offset, frame)));
    },
  });
  relay.cookie = 'follow=paired';
  const env = browserEnv(relay);
  env.jar.cookie = relay.cookie;
  const record = recordingListener();
  const laterKey = await importSessionKey(laterKeyBytes);
  const session = new FollowSession({
    token: null,
    sessionKey: laterKey,
    fingerprint: await deriveFingerprint(laterKey),
    inviteAuthKey: null,
    sessionId: sessionIdHex,
    keyEpoch: 3,
    env: env.env,
    listener: record.listener,
  });
  await session.run({ socketFirst: true });
  assert.deepEqual(record.failures, []);
  assert.deepEqual(record.segments, ['1.1f']);
  assert.equal(record.ended, 1);
});
