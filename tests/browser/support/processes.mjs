// The real binaries the browser test drives: the relay and the sealcast CLI, built by
// `cargo build` into target/debug.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

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
  apiKey = null;
  port = 0;
  #child = null;

  constructor(dataDir) {
    this.dataDir = dataDir;
  }

  get url() {
    return `https://127.0.0.1:${this.port}`;
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
    const firstStart = this.apiKey === null;
    const stdout = [];
    collectLines(child.stdout, (line) => stdout.push(line));

    await waitFor(() => {
      const listening = stdout.find((line) => line.startsWith('sealcast-relay listening on '));
      const key = stdout.find((line) => line.startsWith('clinic API key (shown once): '));
      if (listening === undefined || (firstStart && key === undefined)) {
        return false;
      }
      this.port = Number(new URL(listening.split(' ').at(-1)).port);
      if (firstStart) {
        this.apiKey = key.slice('clinic API key (shown once): '.length).trim();
      }
      return true;
    }, `the relay did not start: ${this.logLines.slice(-5).join(' | ')}`, child);
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
        reject(new Error(`sealcast ${args.join(' ')} exited with ${code}: ${stderr.trim()}`));
      }
    });
  });
}

/** Starts a session with `sealcast session start` and returns its invite link. */
export async function startSession(stateDir, relay) {
  const { stdout } = await runCli(stateDir, [
    'session',
    'start',
    '--relay',
    relay.url,
    '--api-key',
    relay.apiKey,
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
