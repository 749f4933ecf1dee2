// Headless Chromium from Debian's package, driven by playwright-core, and a recorder of
// everything the patient page sends and receives.

import { chromium } from 'playwright-core';

/** Debian's Chromium; scripts/test.sh installs it when missing. */
export const CHROMIUM = '/usr/bin/chromium';

/**
 * Launches Chromium. Playwright starts it with a fresh temporary --user-data-dir of its own and
 * removes it on close. Every context the test opens has its own cookies and storage.
 */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // The relay's development certificate is self-signed.
      '--ignore-certificate-errors',
    ],
  });
}

/** Records requests, WebSockets, invite challenges and proofs, and console errors of contexts. */
export class Traffic {
  requests = [];
  sockets = [];
  challenges = [];
  proofs = [];
  consoleErrors = [];
  #pending = [];

  /** Opens a new context and records its traffic. */
  async newContext(browser, viewport = { width: 1280, height: 800 }) {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
    context.on('request', (request) => this.#pending.push(this.#recordRequest(request)));
    context.on('response', (response) => this.#pending.push(this.#recordResponse(response)));
    context.on('page', (page) => this.#watchPage(page));
    return context;
  }

  /** Waits until every request seen so far is recorded. */
  async settle() {
    await Promise.all(this.#pending.splice(0));
  }

  /** Sockets opened after `index`, for example since a relay restart. */
  socketsSince(index) {
    return this.sockets.slice(index);
  }

  async #recordRequest(request) {
    const headers = await request.allHeaders().catch(() => request.headers());
    const body = request.postData() ?? '';
    this.requests.push({ url: request.url(), headers, body });
    if (request.url().endsWith('/v1/invites/redeem') && body !== '') {
      const { challenge, proof } = JSON.parse(body);
      this.challenges.push(challenge);
      this.proofs.push(proof);
    }
  }

  async #recordResponse(response) {
    if (!response.url().endsWith('/v1/invites/challenge') || response.status() !== 200) {
      return;
    }
    const body = await response.json().catch(() => null);
    if (typeof body?.challenge === 'string') {
      this.challenges.push(body.challenge);
    }
  }

  #watchPage(page) {
    page.on('console', (message) => {
      if (message.type() === 'error') {
        const { url } = message.location();
        this.consoleErrors.push(url ? `${message.text()} (${url})` : message.text());
      }
    });
    page.on('websocket', (socket) => {
      const record = { url: socket.url(), offsets: [], events: [], sent: [] };
      this.sockets.push(record);
      socket.on('framereceived', ({ payload }) => {
        if (typeof payload === 'string') {
          record.events.push(JSON.parse(payload));
        } else {
          record.offsets.push(payload.readBigUInt64BE(0));
        }
      });
      socket.on('framesent', ({ payload }) => record.sent.push(String(payload)));
    });
  }
}

/**
 * Returns the page's connection state: `connecting`, `live`, `reconnecting`, `ended` or
 * `stopped`.
 */
export function pageState(page) {
  return page.locator('#status').getAttribute('data-state');
}

/** Waits until the page shows the connection state `state`. */
export function waitForState(page, state, timeout = 20000) {
  return page.waitForFunction(
    (expected) => document.getElementById('status')?.dataset.state === expected,
    state,
    { timeout },
  );
}

/** Waits until the page shows at least `count` final segments. */
export function waitForFinals(page, count, timeout = 60000) {
  return page.waitForFunction(
    (expected) => document.querySelectorAll('#transcript li.segment.final').length >= expected,
    count,
    { timeout, polling: 100 },
  );
}

/** Returns the segments the page shows, in order: `{ speaker, text, final }`. */
export function shownSegments(page) {
  return page.$$eval('#transcript li.segment', (items) =>
    items.map((item) => ({
      speaker: item.dataset.speaker,
      text: item.querySelector('.segment-text').textContent,
      final: item.classList.contains('final'),
    })),
  );
}

/** Returns the text of the page's alert region. */
export function messageText(page) {
  return page.locator('#message').textContent();
}
