// The real binaries the browser test drives: the relay and the sealcast CLI, built by
// `cargo build` into target/debug.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

import { repoPath } from './paths.mjs';

/** Path of a binary in target/debug. */
export function binary(name) {
  const path = repoPath(join('target', 'debug', name));
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: run cargo build --workspace --bins first`);
  }
  return path;
}

/**
 * A sealcast-relay process on 127.0.0.1. Every line it writes to stderr (its log, at debug
 * level) is kept in `logLines` across restarts, so the test can check all of them.
 */
export class Relay {
  logLines = [];
  port = 0;
  organization = null;
  #child = null;

  constructor(dataDir) {
    this.dataDir = dataDir;
  }

  // The relay's default public URL, which the proofs of staff devices must name.
  get url() {
    return `https://localhost:${this.port}`;
  }

  /** The folder where this development relay writes its mail. */
  get outbox() {
    return join(this.dataDir, 'outbox');
  }

  get devCert() {
    return join(this.dataDir, 'dev-cert.pem');
  }

  /** Starts the relay on `this.port` (0 on the first start) and waits until it listens. */
  async start() {
    const args = ['--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir];
    const child = spawn(binary('sealcast-relay'), args, {
      env: { ...process.env, RUST_LOG: 'debug', SEALCAST_LOG_FORMAT: 'text' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.#child = child;
    collectLines(child.stderr, (line) => this.logLines.push(line));
    const stdout = [];
    collectLines(child.stdout, (line) => stdout.push(line));

    await waitFor(() => {
      const listening = stdout.find((line) => line.startsWith('sealcast-relay listening on '));
      if (listening === undefined) {
        return false;
      }
      this.port = Number(new URL(listening.split(' ').at(-1)).port);
      return true;
    }, `the relay did not start: ${this.logLines.slice(-5).join(' | ')}`, child);
  }

  /** Runs `sealcast-relay admin` on this relay's data directory and returns its output. */
  async admin(args) {
    const child = spawn(binary('sealcast-relay'), ['admin', '--data-dir', this.dataDir, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const { stdout } = await finished(child, `sealcast-relay admin ${args.join(' ')}`);
    return stdout.trim();
  }

  /** Creates a clinician of this relay's test organization and returns the email address. */
  async createClinician(name) {
    if (this.organization === null) {
      this.organization = await this.admin(['create-org', '--name', 'Browser test clinic']);
    }
    const email = `${name}@clinic.example`;
    await this.admin([
      'create-user',
      '--org',
      this.organization,
      '--email',
      email,
      '--role',
      'clinician',
    ]);
    return email;
  }

  /** Stops the relay with a signal and waits for it to exit. */
  async stop(signal = 'SIGTERM') {
    const child = this.#child;
    this.#child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) {
      return;
    }
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await exited;
  }
}

/**
 * Runs the sealcast CLI with a key store in `stateDir` and resolves to its output. Rejects when
 * it exits with an error, with its stderr in the message.
 */
export function runCli(stateDir, args) {
  const child = spawn(binary('sealcast'), ['--state-dir', stateDir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return finished(child, `sealcast ${args.join(' ')}`);
}

/** Resolves to a child's output once it exits with 0, and rejects with its stderr otherwise. */
function finished(child, what) {
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
  });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0) {
        resolve({ stdout, stderr });
      } else {
        reject(new Error(`${what} exited with ${code}: ${stderr.trim()}`));
      }
    });
  });
}

/**
 * Signs the clinician device of `stateDir` in with `sealcast login`: waits for the sign-in mail in
 * the relay's outbox, hands its link to `confirmLink` (which opens it as the clinician would)
 * and waits for the CLI to receive its tokens. Returns the link.
 */
export async function signIn(stateDir, relay, confirmLink) {
  const email = await relay.createClinician(basename(stateDir));
  const requested = Date.now();
  const login = runCli(stateDir, [
    'login',
    '--relay',
    relay.url,
    '--email',
    email,
    '--ca-cert',
    relay.devCert,
    '--device-name',
    'browser test',
  ]);
  let link;
  await waitFor(() => {
    link = findSignInLink(relay.outbox, email, requested);
    return link !== undefined;
  }, `no sign-in mail to ${email} in ${relay.outbox}`);
  await confirmLink(link);
  await login;
  return link;
}

/** Returns the link of the newest mail to `email` in `outbox` written since `sinceMs`. */
function findSignInLink(outbox, email, sinceMs) {
  if (!existsSync(outbox)) {
    return undefined;
  }
  const mails = readdirSync(outbox)
    .filter((name) => name.endsWith('.eml'))
    // Names start with the Unix time in milliseconds, so this sorts them oldest first.
    .sort()
    .map((name) => join(outbox, name))
    .filter((path) => statSync(path).mtimeMs >= sinceMs - 1000)
    .map((path) => readFileSync(path, 'utf8'))
    .filter((mail) => mail.match(/^To: (.*)$/im)?.[1].includes(email));
  const link = mails.at(-1)?.match(/https:\/\/\S+#token=[A-Za-z0-9_-]+/);
  return link?.[0];
}

/** Starts a session with `sealcast session start` and returns its invite link. */
export async function startSession(stateDir, relay) {
  const { stdout } = await runCli(stateDir, [
    'session',
    'start',
    '--relay',
    relay.url,
    '--ca-cert',
    relay.devCert,
    '--no-qr',
  ]);
  const isLink = (line) => line.startsWith('https://') && line.includes('/join?token=');
  const link = stdout.split('\n').find(isLink);
  if (link === undefined) {
    throw new Error(`session start printed no invite link:\n${stdout}`);
  }
  return link.trim();
}

/** Calls `check` every 50 ms until it returns true, for at most `timeoutMs`. */
export async function waitFor(check, message, child = null, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (child !== null && child.exitCode !== null) {
      throw new Error(`${message} (the process exited with ${child.exitCode})`);
    }
    if (Date.now() > deadline) {
      throw new Error(`${message} (timed out after ${timeoutMs} ms)`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function collectLines(stream, onLine) {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop();
    lines.forEach(onLine);
  });
  stream.on('end', () => {
    if (pending !== '') {
      onLine(pending);
    }
  });
}
