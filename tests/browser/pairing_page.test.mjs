// Pairing the patient page without a link, in real headless Chromium against the real relay
// and `sealcast pair offer`.
//
// First a clean pairing. The page, opened at /join with no link, takes the pairing id the CLI
// prints, and both show the same code. The page then follows the session, through a reload,
// to a transcript signed by the clinician's device. Then a relay that swaps keys: the browser's
// pairing requests pass through a route that substitutes its own X25519 keys in both
// directions, as a relay in the middle could. The codes then differ, the CLI refuses the
// page's code and the page, told that the codes differ, cancels and never follows. Last, a
// paired page reads on after `sealcast publish` rotates the key on SIGUSR1, with the key the
// CLI wraps for it.
//
// Run from the repository root after `cargo build --workspace --bins`:
//   node --test tests/browser/

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  Traffic,
  launchChromium,
  messageText,
  pageState,
  shownSegments,
  waitForState,
} from './support/browser.mjs';
import { repoPath } from './support/paths.mjs';
import { Relay, binary, runCli, signIn, startSession, waitFor } from './support/processes.mjs';
import { findLeaks, keyForms } from './support/secrets.mjs';

const SAMPLE = repoPath('relay/demo/sample-consultation.jsonl');
const SIGNED = "The transcript is complete and signed by the clinician's device.";
const ENDED = 'The session has ended.';
const CODES_DIFFER = /^The codes differ, so this pairing was stopped/;

const traffic = new Traffic();
let workDir;
let relay;
let browser;

before(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'sealcast-pairing-'));
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

test('page pairs with the CLI and follows the session', { timeout: 90000 }, async () => {
  const stateDir = join(workDir, 'clinician-pairs');
  await signIn(stateDir, relay, confirmInBrowser);
  await startSession(stateDir, relay);
  const offer = new PairOffer(stateDir);
  const pairingId = await offer.pairingId();
  assert.ok(offer.stdout.includes(`${relay.url}/join`), `no page address in:\n${offer.stdout}`);

  const context = await traffic.newContext(browser);
  const page = await context.newPage();
  await page.goto(`${relay.url}/join`);
  await page.locator('#pairing-id').fill(pairingId);
  await page.click('#pairing-start');
  const pageCode = await shownCode(page);
  const cliCode = await offer.code();
  assert.deepEqual(pageCode, cliCode, 'the page and the CLI show different codes');

  // Both people confirm: the clinician types the page's words, the patient presses "match".
  offer.answer(pageCode.words);
  await page.click('#pairing-match');
  assert.equal(await offer.exitCode(), 0, offer.stderr);
  await waitForState(page, 'live');
  assert.equal(await page.locator('#pairing').isHidden(), true);
  const cookie = await assertPairedCookie(context);
  const stored = await page.evaluate(() => window.sessionStorage.getItem('sealcast.paired'));
  const key = Buffer.from(JSON.parse(stored).secret, 'base64url');
  assert.equal(key.length, 32);

  await runCli(stateDir, ['publish', SAMPLE]);
  await page.waitForFunction(
    () => document.getElementById('authorship')?.dataset.state === 'signed_so_far',
  );
  const beforeReload = await shownSegments(page);
  assert.ok(beforeReload.length > 0, 'no segment arrived');

  // A reload keeps the key in this tab's session storage and the credential in the cookie.
  await page.reload();
  await waitForState(page, 'live');
  assert.equal(await page.locator('#pairing').isHidden(), true);
  await page.waitForFunction(
    (count) => document.querySelectorAll('#transcript li.segment').length >= count,
    beforeReload.length,
  );
  assert.deepEqual(await shownSegments(page), beforeReload);

  await runCli(stateDir, ['session', 'end']);
  await page.waitForFunction(
    (text) => document.getElementById('message')?.textContent === text,
    ENDED,
  );
  assert.equal(await pageState(page), 'ended');
  assert.equal(await page.locator('#authorship').textContent(), SIGNED);
  assert.deepEqual(traffic.consoleErrors, []);
  await context.close();

  // The relay logs at debug level and must write neither the key nor the follow token.
  const needles = [
    ...keyForms(key).map((text) => ({ label: 'session key', text })),
    { label: 'follow token', text: cookie.value },
  ];
  const logs = relay.logLines.map((text, index) => ({ where: `relay log line ${index}`, text }));
  assert.deepEqual(findLeaks(needles, logs), []);
  const requests = traffic.requests.map(({ url, headers, body }) => ({
    where: `request ${url}`,
    text: `${url} ${JSON.stringify(headers)} ${body}`,
  }));
  assert.deepEqual(findLeaks(needles.slice(0, -1), requests), [], 'the page sent the key');
});

test('swapped keys make the codes differ and the page refuses', { timeout: 60000 }, async () => {
  const stateDir = join(workDir, 'clinician-swapped');
  await signIn(stateDir, relay, confirmInBrowser);
  await startSession(stateDir, relay);
  const offer = new PairOffer(stateDir);
  const pairingId = await offer.pairingId();

  const socketsBefore = traffic.sockets.length;
  const context = await traffic.newContext(browser);
  const swapper = new KeySwapper();
  await context.route('**/v1/pairings/**', (route) => swapper.handle(route));
  const page = await context.newPage();
  await page.goto(`${relay.url}/join`);
  await page.locator('#pairing-id').fill(pairingId);
  await page.click('#pairing-start');
  const pageCode = await shownCode(page);
  const cliCode = await offer.code();
  assert.equal(swapper.swapped, 3, 'the route did not swap all three messages');
  assert.notDeepEqual(pageCode.words, cliCode.words);
  assert.notEqual(pageCode.digits, cliCode.digits);

  // The clinician types the code the page shows: the CLI refuses it and cancels.
  offer.answer(pageCode.words);
  assert.equal(await offer.exitCode(), 65, offer.stderr);
  assert.match(offer.stderr, /differs/);

  // The patient sees a different code on the clinician's screen and says so.
  await page.click('#pairing-differ');
  await page.waitForFunction(
    () => document.getElementById('pairing')?.dataset.state === 'failed',
  );
  assert.match(await page.locator('#pairing-status').textContent(), CODES_DIFFER);
  assert.notEqual(await pageState(page), 'live');
  assert.equal(await messageText(page), '');
  const cookies = await context.cookies();
  assert.equal(cookies.find((cookie) => cookie.name === 'sealcast_follow'), undefined);
  const stored = await page.evaluate(() => window.sessionStorage.getItem('sealcast.paired'));
  assert.equal(stored, null, 'the page stored a key');
  assert.deepEqual(traffic.socketsSince(socketsBefore), [], 'the page opened a follow socket');
  await context.close();
});

/**
 * `sealcast pair offer --confirm-code -` on a clinician device: prints the pairing id on
 * stdout, the code on stderr, and reads the code the other screen shows from stdin.
 */
class PairOffer {
  stdout = '';
  stderr = '';
  #child;
  #exit;

  constructor(stateDir) {
    this.#child = spawn(
      binary('sealcast'),
      ['--state-dir', stateDir, 'pair', 'offer', '--confirm-code', '-'],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.#child.stdout.on('data', (chunk) => {
      this.stdout += chunk;
    });
    this.#child.stderr.on('data', (chunk) => {
      this.stderr += chunk;
    });
    this.#exit = new Promise((resolve) => this.#child.on('exit', resolve));
  }

  async pairingId() {
    let id;
    await waitFor(() => {
      id = this.stdout.match(/^Pairing id: ([0-9]{4}-[0-9]{4}-[0-9]{4})$/m)?.[1];
      return id !== undefined;
    }, `pair offer printed no pairing id: ${this.stderr}`, this.#child);
    return id;
  }

  async code() {
    let match;
    await waitFor(() => {
      match = this.stderr.match(/^Pairing code: ([a-z ]+) \(digits: ([0-9]{6})\)$/m);
      return match !== null;
    }, `pair offer showed no code: ${this.stderr}`, this.#child);
    return { words: match[1], digits: match[2] };
  }

  answer(text) {
    this.#child.stdin.end(`${text}\n`);
  }

  exitCode() {
    return this.#exit;
  }
}

test('paired page reads on after a key rotation', { timeout: 90000 }, async () => {
  const stateDir = join(workDir, 'clinician-rotates');
  await signIn(stateDir, relay, confirmInBrowser);
  await startSession(stateDir, relay);
  const offer = new PairOffer(stateDir);
  const pairingId = await offer.pairingId();

  const context = await traffic.newContext(browser);
  const page = await context.newPage();
  await page.goto(`${relay.url}/join`);
  await page.locator('#pairing-id').fill(pairingId);
  await page.click('#pairing-start');
  const pageCode = await shownCode(page);
  offer.answer(pageCode.words);
  await page.click('#pairing-match');
  assert.equal(await offer.exitCode(), 0, offer.stderr);
  await waitForState(page, 'live');

  const publish = new StdinPublish(stateDir);
  await publish.write(ROTATION_LINES[0]);
  await waitForTexts(page, [ROTATION_TEXTS[0]]);

  // SIGUSR1 rotates the key: the page must take the new key from the relay, not from a link.
  await publish.rotate();
  for (const line of ROTATION_LINES.slice(1)) {
    await publish.write(line);
  }
  assert.equal(await publish.finish(), 0, publish.stderr);
  await waitForTexts(page, ROTATION_TEXTS);
  await page.waitForFunction(
    (text) => document.getElementById('message')?.textContent === text,
    ENDED,
  );
  assert.deepEqual(
    (await shownSegments(page)).map((segment) => segment.text),
    ROTATION_TEXTS,
  );
  assert.equal(await pageState(page), 'ended');
  // The relay responds with 410 to the key fetch that waits when the session ends, and
  // Chromium logs every 4xx response as a console error.
  const unexpected = traffic.consoleErrors.filter(
    (error) => !(error.includes('status of 410') && error.includes('/v1/paired/keys')),
  );
  assert.deepEqual(unexpected, []);
  const fetched = traffic.requests.filter(({ url }) => url.includes('/v1/paired/keys'));
  assert.ok(fetched.length > 0, 'the page never asked for a later key');
  await context.close();
});

const ROTATION_TEXTS = [
  'Good morning, what brings you in?',
  'My knee hurts when I climb stairs.',
  'Since when?',
];
const ROTATION_LINES = ROTATION_TEXTS.map((text, index) =>
  JSON.stringify({
    speaker: index % 2 === 0 ? 'doctor' : 'patient',
    start_ms: index * 2000,
    end_ms: index * 2000 + 1500,
    text,
  }),
);

/** Waits until the page shows every text of `texts` as a final segment. */
async function waitForTexts(page, texts) {
  await page.waitForFunction(
    (wanted) => {
      const shown = [...document.querySelectorAll('#transcript li.segment.final .segment-text')];
      const shownTexts = shown.map((item) => item.textContent);
      return wanted.every((text) => shownTexts.includes(text));
    },
    texts,
    { timeout: 30000 },
  );
}

/** `sealcast publish --end -`, fed line by line, which rotates the key on SIGUSR1. */
class StdinPublish {
  stderr = '';
  #child;
  #exit;

  constructor(stateDir) {
    this.#child = spawn(binary('sealcast'), ['--state-dir', stateDir, 'publish', '--end', '-'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.#child.stdout.resume();
    this.#child.stderr.on('data', (chunk) => {
      this.stderr += chunk;
    });
    this.#exit = new Promise((resolve) => this.#child.on('exit', resolve));
  }

  async write(line) {
    await waitFor(
      () => this.stderr.includes('kill -USR1'),
      `publish did not start: ${this.stderr}`,
      this.#child,
    );
    this.#child.stdin.write(`${line}\n`);
  }

  async rotate() {
    this.#child.kill('SIGUSR1');
    await waitFor(
      () => /^Sent the key of key epoch 1 to paired device [0-9a-f]{16}\.$/m.test(this.stderr),
      `publish sent no key to the paired page: ${this.stderr}`,
      this.#child,
    );
  }

  finish() {
    this.#child.stdin.end();
    return this.#exit;
  }
}

/**
 * A relay in the middle of the browser's pairing requests. It commits to a key of its own in
 * place of the page's commitment, answers the page with another key of its own in place of the
 * clinician's, and sends its committed key in place of the page's. The relay behind it and the
 * CLI see a consistent pairing with this key, so only the codes give it away.
 */
class KeySwapper {
  swapped = 0;
  #towardsClinician = null;
  #towardsPage = null;

  async handle(route) {
    await this.#ensureKeys();
    const request = route.request();
    const url = new URL(request.url());
    if (request.method() === 'POST' && url.pathname.endsWith('/commitment')) {
      this.swapped += 1;
      const commitment = await commitmentOf(this.#towardsClinician);
      await route.continue({ postData: JSON.stringify({ commitment: base64url(commitment) }) });
      return;
    }
    if (request.method() === 'POST' && url.pathname.endsWith('/joiner-key')) {
      this.swapped += 1;
      const body = JSON.stringify({ public_key: base64url(this.#towardsClinician) });
      await route.continue({ postData: body });
      return;
    }
    const response = await route.fetch();
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    if (typeof body?.clinician_public === 'string') {
      this.swapped += 1;
      body.clinician_public = base64url(this.#towardsPage);
      await route.fulfill({ response, body: JSON.stringify(body) });
      return;
    }
    await route.fulfill({ response, body: text });
  }

  async #ensureKeys() {
    if (this.#towardsClinician !== null) {
      return;
    }
    this.#towardsClinician = await newPublicKey();
    this.#towardsPage = await newPublicKey();
  }
}

async function newPublicKey() {
  const pair = await webcrypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits']);
  return new Uint8Array(await webcrypto.subtle.exportKey('raw', pair.publicKey));
}

async function commitmentOf(publicKey) {
  const label = new TextEncoder().encode('sealcast v1 pairing commit');
  const input = new Uint8Array([...label, ...publicKey]);
  return new Uint8Array(await webcrypto.subtle.digest('SHA-256', input));
}

function base64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

/** Waits for the page to show the pairing code and returns `{ words, digits }`. */
async function shownCode(page) {
  await page.waitForFunction(() => document.getElementById('pairing')?.dataset.state === 'code');
  return {
    words: await page.locator('#pairing-words').textContent(),
    digits: await page.locator('#pairing-digits').textContent(),
  };
}

/** Checks the follow cookie that the pairing status route set, and returns it. */
async function assertPairedCookie(context) {
  const cookies = await context.cookies();
  const cookie = cookies.find((candidate) => candidate.name === 'sealcast_follow');
  assert.ok(cookie !== undefined, 'no follow cookie was set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.secure, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/v1');
  return cookie;
}

/** Opens a sign-in link in Chromium and presses "Sign in", as the clinician would. */
async function confirmInBrowser(link) {
  const context = await traffic.newContext(browser);
  const page = await context.newPage();
  await page.goto(link);
  await page.locator('#confirm-button').waitFor({ state: 'visible' });
  await page.click('#confirm-button');
  await page.locator('#step-device').waitFor({ state: 'visible' });
  await context.close();
}
