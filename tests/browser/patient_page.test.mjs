// The patient page in real headless Chromium against the real relay and sealcast CLI.
//
// One relay serves every scenario. A clinician session publishes a consultation at a multiple
// of its real pace while the page follows it. Mid-session the page is reloaded, and the relay
// is killed and started again, and at the end the page shows that the transcript is complete
// and signed by the clinician's device. Then come a stream forged by a second device that
// has the session key, fetching a link without scripts, a wrong key, a damaged link and an
// ended session, and last a scan of every browser request and relay log line for secrets.
//
// Run from the repository root after `cargo build --workspace --bins`:
//   node --test tests/browser/
// SEALCAST_UPDATE_SCREENSHOTS=1 also copies the screenshots to docs/screenshots/.

import assert from 'node:assert/strict';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  Traffic,
  launchChromium,
  messageText,
  pageState,
  shownSegments,
  waitForFinals,
  waitForState,
} from './support/browser.mjs';
import { repoPath } from './support/paths.mjs';
import { Relay, runCli, signIn, startSession, waitFor } from './support/processes.mjs';
import { findLeaks, keyForms, keyOfLink, tokenOfLink } from './support/secrets.mjs';
import { chooseConsultation } from './support/transcript.mjs';

// How long the published consultation lasts at the chosen speed, in milliseconds.
const LIVE_MS = 24000;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const SCREENSHOTS = repoPath('artifacts/screenshots');

const MESSAGES = {
  ended: 'The session has ended.',
  endedBeforeJoin: 'This session has ended.',
  wrongKey: 'This link does not match the session. Ask the clinic for a new link.',
  damaged: 'This link is damaged or incomplete. Ask the clinic for a new link.',
  alreadyUsed: 'This link has already been used on another device. Ask the clinic for a new link.',
  signed: "The transcript is complete and signed by the clinician's device.",
};

const consultation = chooseConsultation();
const traffic = new Traffic();
// Links the test opened and follow cookies it received. No relay log line may contain their keys,
// tokens or cookie values.
const links = [];
const cookies = [];
// Sign-in links the clinicians opened. No relay log line may contain their tokens.
const signInLinks = [];
let workDir;
let relay;
let browser;
let endedLink;
let freshLink;

before(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'sealcast-browser-'));
  relay = new Relay(join(workDir, 'relay'));
  await relay.start();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await relay?.stop();
  if (workDir !== undefined) {
    rmSync(workDir, { recursive: true, force: true });
  }
});

const LIVE_TEST = 'live session arrives whole through a reload and a relay restart';
test(LIVE_TEST, { timeout: 100000 }, async () => {
  const stateDir = join(workDir, 'clinician-live');
  const link = await signedInSession(stateDir);
  links.push(link);
  endedLink = link;
  const expected = consultation.segments;
  console.log(`publishing ${consultation.name}: ${expected.length} final segments`);

  const context = await traffic.newContext(browser, DESKTOP);
  const page = await context.newPage();
  await page.goto(link);
  await waitForState(page, 'live');
  await assertNoFragment(page);
  await assertFollowCookie(context);

  const publishing = runCli(stateDir, [
    'publish',
    '--speed',
    String(publishSpeed(expected)),
    '--interim',
    ...consultation.files,
  ]);

  // A reload mid-session: the key comes from this tab's session storage, the credential from
  // the cookie.
  await waitForFinals(page, Math.ceil(expected.length * 0.25));
  await page.reload();
  await waitForState(page, 'live');

  await waitForFinals(page, Math.ceil(expected.length * 0.45));
  await screenshotWholePage(page, 'live-session.png');
  await restartRelayMidSession();

  await waitForFinals(page, Math.ceil(expected.length * 0.7));
  await page.setViewportSize(PHONE);
  await screenshot(page, 'phone-390x844.png');
  await page.setViewportSize(DESKTOP);

  await publishing;
  await waitForFinals(page, expected.length);
  await runCli(stateDir, ['session', 'end']);
  await page.waitForFunction(
    (text) => document.getElementById('message')?.textContent === text,
    MESSAGES.ended,
  );
  assert.equal(await pageState(page), 'ended');

  const shown = await shownSegments(page);
  assert.deepEqual(
    shown.map((segment) => segment.text),
    expected.map((segment) => segment.text),
    'final segments differ from the consultation',
  );
  assert.deepEqual(
    shown.map((segment) => segment.speaker),
    expected.map((segment) => segment.speaker),
  );
  assert.ok(shown.every((segment) => segment.final), 'an interim segment was left on the page');
  const notices = page.locator('#notices');
  assert.equal(await notices.isHidden(), true, await notices.textContent());
  assert.equal(await authorshipState(page), 'complete');
  assert.equal(await page.locator('#authorship').textContent(), MESSAGES.signed);
  await context.close();
});

const FORGED_TEST = 'stream forged by a second device shows a warning';
test(FORGED_TEST, { timeout: 60000 }, async () => {
  const clinician = join(workDir, 'clinician-signed');
  const link = await signedInSession(clinician);
  links.push(link);
  assert.match(link, /#publisher=[A-Za-z0-9_-]{43}&secret=/);

  const context = await traffic.newContext(browser, DESKTOP);
  const page = await context.newPage();
  await page.goto(link);
  await waitForState(page, 'live');
  const sample = repoPath('relay/demo/sample-consultation.jsonl');
  await runCli(clinician, ['publish', sample]);
  await page.waitForFunction(
    () => document.getElementById('authorship')?.dataset.state === 'signed_so_far',
  );
  assert.match(
    await page.locator('#authorship').textContent(),
    /^Signed by the clinician's device up to the line at \d+:\d\d\.$/,
  );

  // A second device, signed in to the same organization, has the session key and publishes
  // a stream that it signs with its own device key.
  const forger = join(workDir, 'second-device');
  await signIn(forger, relay, confirmInBrowser);
  copySessionKeys(clinician, forger);
  const forgedLines = join(workDir, 'forged.jsonl');
  const forged = { speaker: 'doctor', start_ms: 600000, end_ms: 603000, text: 'Forged line.' };
  writeFileSync(forgedLines, `${JSON.stringify(forged)}\n`);
  await runCli(forger, ['publish', '--session', sessionIdOf(clinician), forgedLines]);

  await page.waitForFunction(
    () => document.getElementById('authorship')?.dataset.state === 'warning',
  );
  await runCli(clinician, ['session', 'end']);
  await page.waitForFunction(
    (text) => document.getElementById('message')?.textContent === text,
    MESSAGES.ended,
  );
  assert.equal(await authorshipState(page), 'warning');
  const warning = await page.locator('#authorship').textContent();
  assert.match(warning, /^Warning: this transcript could not be fully checked\./);
  assert.match(warning, /The line at 10:00 is not signed by the clinician's device/);
  assert.match(warning, /1 signature did not match the clinician's device\./);
  await context.close();
});

test('fetching the invite link without scripts redeems nothing', { timeout: 30000 }, async () => {
  const link = await signedInSession(join(workDir, 'clinician-fresh'));
  links.push(link);
  freshLink = link;

  // What a mail scanner or link preview does, also with the # escaped as %23 by a mail client,
  // which puts the key into the query.
  for (const url of [link, link.replace('#', '%23')]) {
    const response = await plainGet(url);
    assert.equal(response.status, 200, url);
    assert.equal(response.headers['set-cookie'], undefined);
    assert.match(response.body, /<script type="module" src="\/join\/app.js">/);
  }

  const context = await traffic.newContext(browser);
  const page = await context.newPage();
  await page.goto(link);
  await waitForState(page, 'live');
  await assertNoFragment(page);
  await assertFollowCookie(context);

  // The invite admits one browser, which the page above took.
  await expectMessage(link, MESSAGES.alreadyUsed);
  await context.close();
});

const MESSAGES_TEST = 'wrong key, damaged link and ended session show their messages';
test(MESSAGES_TEST, { timeout: 30000 }, async () => {
  const url = new URL(freshLink);
  url.hash = `secret=${Buffer.alloc(32, 7).toString('base64url')}`;
  const wrongKey = url.toString();
  links.push(wrongKey);

  await expectMessage(wrongKey, MESSAGES.wrongKey);
  await expectMessage(freshLink.slice(0, -10), MESSAGES.damaged);
  await expectMessage(endedLink, MESSAGES.endedBeforeJoin);
});

test('no key in browser requests, no secret in relay logs', async () => {
  await traffic.settle();
  const keys = links.flatMap((link) =>
    keyForms(keyOfLink(link)).map((text) => ({ label: 'session key', text })),
  );
  assert.ok(traffic.requests.length > 20, `only ${traffic.requests.length} requests recorded`);

  const requests = [
    ...traffic.requests.map((request) => ({
      where: `request ${request.url}`,
      text: `${request.url}\n${JSON.stringify(request.headers)}\n${request.body}`,
    })),
    ...traffic.sockets.map((socket) => ({
      where: `WebSocket ${socket.url}`,
      text: `${socket.url}\n${socket.sent.join('\n')}`,
    })),
  ];
  assert.deepEqual(findLeaks(keys, requests), []);

  const secrets = [
    ...keys,
    ...links.map((link) => ({ label: 'invite token', text: tokenOfLink(link) })),
    ...signInLinks.map((link) => ({ label: 'sign-in token', text: link.split('#token=')[1] })),
    ...cookies.map((text) => ({ label: 'follow cookie', text })),
    ...traffic.challenges.map((text) => ({ label: 'challenge', text })),
    ...traffic.proofs.map((text) => ({ label: 'proof', text })),
  ];
  assert.ok(traffic.challenges.length >= 4, 'too few invite challenges recorded');
  assert.ok(traffic.proofs.length >= 2, 'too few invite proofs recorded');
  assert.ok(signInLinks.length >= 2, 'too few sign-in links recorded');
  const logs = relay.logLines.map((line, index) => ({
    where: `relay log line ${index + 1}`,
    text: line,
  }));
  assert.ok(
    relay.logLines.some((line) => line.includes('browser redeemed the invite')),
    'the relay logged no redemption: is its log captured at debug level?',
  );
  assert.deepEqual(findLeaks(secrets, logs), []);

  const policyErrors = traffic.consoleErrors.filter((text) =>
    /Content Security Policy/i.test(text),
  );
  assert.deepEqual(policyErrors, [], 'the page broke its Content-Security-Policy');
});

/** Returns the `data-state` of the page's authorship line. */
function authorshipState(page) {
  return page.locator('#authorship').getAttribute('data-state');
}

/** Copies the stored session keys of one CLI state directory into another. */
function copySessionKeys(fromStateDir, toStateDir) {
  const from = join(fromStateDir, 'sessions');
  const to = join(toStateDir, 'sessions');
  mkdirSync(to, { recursive: true, mode: 0o700 });
  for (const name of readdirSync(from)) {
    copyFileSync(join(from, name), join(to, name));
  }
}

/** Returns the id of the one session stored in a CLI state directory. */
function sessionIdOf(stateDir) {
  const names = readdirSync(join(stateDir, 'sessions'));
  assert.equal(names.length, 1, `expected one stored session: ${names.join(', ')}`);
  return names[0].split('.')[0];
}

/**
 * Kills the relay with SIGKILL mid-session, starts it again on the same port and data
 * directory, and checks that the page resumed where it was, without starting over.
 */
async function restartRelayMidSession() {
  const before = traffic.sockets.length;
  await relay.stop('SIGKILL');
  await relay.start();

  const welcomed = (socket) => socket.events.some((event) => event.type === 'welcome');
  await waitFor(
    () => traffic.socketsSince(before).some(welcomed),
    'the page did not reconnect after the relay restart',
    null,
    30000,
  );
  const resumed = traffic.socketsSince(before).find(welcomed);
  const query = new URL(resumed.url).searchParams;
  const from = BigInt(query.get('from'));
  // The sockets from before the restart are closed by now, so their offsets are complete.
  const delivered = traffic.sockets.slice(0, before).flatMap((socket) => socket.offsets);
  const lastBefore = delivered.reduce((max, offset) => (offset > max ? offset : max), -1n);
  assert.ok(query.has('epoch'), `resumed without an epoch: ${resumed.url}`);
  assert.ok(from > 0n, `the page started over from offset 0: ${resumed.url}`);
  assert.ok(from <= lastBefore + 1n, `offset ${from} skips past ${lastBefore}, a gap`);
  const welcome = resumed.events.find((event) => event.type === 'welcome');
  assert.equal(BigInt(welcome.from_offset), from);
}

/** Signs a clinician device in through the sign-in page, then starts a session on it. */
async function signedInSession(stateDir) {
  await signIn(stateDir, relay, confirmInBrowser);
  return startSession(stateDir, relay);
}

/**
 * Opens a sign-in link as a clinician would: a mail scanner's fetch first, which must change
 * nothing, then the page in Chromium, where pressing "Sign in" approves the waiting device.
 */
async function confirmInBrowser(link) {
  signInLinks.push(link);
  const scanned = await plainGet(link);
  assert.equal(scanned.status, 200, 'the sign-in page did not load without scripts');

  const context = await traffic.newContext(browser, DESKTOP);
  const page = await context.newPage();
  await page.goto(link);
  await page.locator('#confirm-button').waitFor({ state: 'visible' });
  await assertNoFragment(page);
  await page.click('#confirm-button');
  await page.locator('#step-device').waitFor({ state: 'visible' });
  await context.close();
}

/** Checks that the page removed the fragment, which contains the key, from the address bar. */
async function assertNoFragment(page) {
  const href = await page.evaluate(() => window.location.href);
  assert.ok(!href.includes('#'), `fragment left in the address bar: ${href}`);
}

/** Checks the follow cookie the relay set in `context`, and keeps its value for the log scan. */
async function assertFollowCookie(context) {
  const all = await context.cookies();
  const cookie = all.find((candidate) => candidate.name === 'sealcast_follow');
  assert.ok(cookie !== undefined, 'no follow cookie was set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.secure, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/v1');
  cookies.push(cookie.value);
}

/** Opens `link` in a fresh browser context and checks the message the page settles on. */
async function expectMessage(link, expected) {
  const context = await traffic.newContext(browser);
  const page = await context.newPage();
  await page.goto(link);
  await page.waitForFunction(() => document.getElementById('message')?.textContent !== '', null, {
    timeout: 15000,
  });
  assert.equal(await messageText(page), expected, link);
  assert.notEqual(await pageState(page), 'live');
  await context.close();
}

/** Fetches a URL with Node's HTTPS client, as a link scanner would: no scripts, no cookies. */
function plainGet(url) {
  return new Promise((resolve, reject) => {
    const request = httpsGet(url, { ca: readFileSync(relay.devCert) }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => {
        body += chunk;
      });
      response.on('end', () => {
        resolve({ status: response.statusCode, headers: response.headers, body });
      });
    });
    request.on('error', reject);
  });
}

/** Returns the --speed factor that plays the consultation in about LIVE_MS. */
function publishSpeed(segments) {
  const start = Math.min(...segments.map((segment) => segment.startMs));
  const end = Math.max(...segments.map((segment) => segment.endMs));
  return Math.max(1, Math.round(((end - start) / LIVE_MS) * 10) / 10);
}

/**
 * Takes a desktop screenshot with the viewport grown to the page's height, up to a limit.
 * Playwright's full-page option would draw the sticky top bar where the page was scrolled to.
 */
async function screenshotWholePage(page, name) {
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  // Room for the segment that may arrive meanwhile, so the page need not scroll.
  const viewport = { width: DESKTOP.width, height: Math.min(Math.max(height + 120, 800), 2400) };
  await page.setViewportSize(viewport);
  await screenshot(page, name);
  await page.setViewportSize(DESKTOP);
  // Back at the bottom, the page follows new lines again as a patient's would.
  await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
}

async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, name);
  await page.screenshot({ path });
  if (process.env.SEALCAST_UPDATE_SCREENSHOTS === '1') {
    mkdirSync(repoPath('docs/screenshots'), { recursive: true });
    copyFileSync(path, repoPath(`docs/screenshots/${name}`));
  }
}
