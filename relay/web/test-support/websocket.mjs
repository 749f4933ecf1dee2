// A small RFC 6455 WebSocket client with the browser's interface, and the server side of the
// handshake, for tests on loopback. Node 20 has no WebSocket client without a flag, and the
// page's connection code expects the browser's API: `open`, `message` and `close` events,
// `binaryType` and `close(code)`. Messages are never fragmented by either side here.

import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const OPCODES = { text: 1, binary: 2, close: 8, ping: 9, pong: 10 };

/** Returns the Sec-WebSocket-Accept value for a key. */
export function acceptValue(key) {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64');
}

/** Encodes one unfragmented frame; clients mask, servers do not. */
export function encodeFrame(opcode, payload, masked) {
  const body = Buffer.from(payload);
  let lengthBytes = 0;
  let lengthCode = body.length;
  if (body.length >= 65536) {
    lengthBytes = 8;
    lengthCode = 127;
  } else if (body.length >= 126) {
    lengthBytes = 2;
    lengthCode = 126;
  }
  const head = Buffer.alloc(2 + lengthBytes + (masked ? 4 : 0));
  head[0] = 0x80 | opcode;
  head[1] = (masked ? 0x80 : 0) | lengthCode;
  if (lengthBytes === 2) {
    head.writeUInt16BE(body.length, 2);
  } else if (lengthBytes === 8) {
    head.writeBigUInt64BE(BigInt(body.length), 2);
  }
  if (masked) {
    const mask = randomBytes(4);
    mask.copy(head, 2 + lengthBytes);
    body.forEach((byte, i) => {
      body[i] = byte ^ mask[i % 4];
    });
  }
  return Buffer.concat([head, body]);
}

/** Splits complete frames off the front of `buffer`. Returns `{ frames, rest }`. */
export function decodeFrames(buffer) {
  const frames = [];
  let rest = buffer;
  for (;;) {
    if (rest.length < 2) {
      break;
    }
    const masked = (rest[1] & 0x80) !== 0;
    let length = rest[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      length = rest.length >= 4 ? rest.readUInt16BE(2) : Infinity;
      offset = 4;
    } else if (length === 127) {
      length = rest.length >= 10 ? Number(rest.readBigUInt64BE(2)) : Infinity;
      offset = 10;
    }
    const maskAt = offset;
    offset += masked ? 4 : 0;
    if (rest.length < offset + length) {
      break;
    }
    const payload = Buffer.from(rest.subarray(offset, offset + length));
    if (masked) {
      payload.forEach((byte, i) => {
        payload[i] = byte ^ rest[maskAt + (i % 4)];
      });
    }
    frames.push({ opcode: rest[0] & 0x0f, payload });
    rest = rest.subarray(offset + length);
  }
  return { frames, rest };
}

function closePayload(code, reason = '') {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return payload;
}

function closeEvent(code, reason) {
  return Object.assign(new Event('close'), { code, reason, wasClean: code !== 1006 });
}

/**
 * Browser-style WebSocket client for `ws://127.0.0.1:PORT/...` URLs. `headers` adds request
 * headers, which is how a test passes the cookie a browser would send.
 */
export class LoopbackWebSocket extends EventTarget {
  binaryType = 'blob';
  #socket;
  #buffer = Buffer.alloc(0);
  #open = false;
  #closed = false;

  constructor(url, headers = {}) {
    super();
    const target = new URL(url);
    const key = randomBytes(16).toString('base64');
    this.#socket = net.connect(Number(target.port), target.hostname, () => {
      const lines = [
        `GET ${target.pathname}${target.search} HTTP/1.1`,
        `Host: ${target.host}`,
        'Upgrade: websocket',
        'Connection: Upgrade',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
        `Origin: http://${target.host}`,
        ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
      ];
      this.#socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    });
    this.#socket.on('data', (chunk) => this.#receive(chunk, key));
    this.#socket.on('error', () => this.#finish(1006, ''));
    this.#socket.on('close', () => this.#finish(1006, ''));
  }

  /** Sends a close frame; the close event follows when the server responds or hangs up. */
  close(code = 1000, reason = '') {
    if (this.#open && !this.#closed) {
      this.#socket.write(encodeFrame(OPCODES.close, closePayload(code, reason), true));
    } else {
      this.#socket.destroy();
    }
  }

  #receive(chunk, key) {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    if (!this.#open && !this.#handshake(key)) {
      return;
    }
    const { frames, rest } = decodeFrames(this.#buffer);
    this.#buffer = rest;
    for (const frame of frames) {
      this.#dispatchFrame(frame);
    }
  }

  // Returns whether the handshake completed; on a refusal the socket closes with 1006, as in
  // browsers, which never show the HTTP status to the page.
  #handshake(key) {
    const end = this.#buffer.indexOf('\r\n\r\n');
    if (end < 0) {
      return false;
    }
    const head = this.#buffer.subarray(0, end).toString('latin1');
    this.#buffer = this.#buffer.subarray(end + 4);
    const accepted = head.startsWith('HTTP/1.1 101') && head.includes(acceptValue(key));
    if (!accepted) {
      this.#socket.destroy();
      return false;
    }
    this.#open = true;
    this.dispatchEvent(new Event('open'));
    return true;
  }

  #dispatchFrame({ opcode, payload }) {
    if (opcode === OPCODES.text) {
      this.dispatchEvent(new MessageEvent('message', { data: payload.toString('utf8') }));
    } else if (opcode === OPCODES.binary) {
      const data = payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.length);
      this.dispatchEvent(new MessageEvent('message', { data }));
    } else if (opcode === OPCODES.ping) {
      this.#socket.write(encodeFrame(OPCODES.pong, payload, true));
    } else if (opcode === OPCODES.close) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this.#finish(code, payload.subarray(2).toString('utf8'));
      this.#socket.end();
    }
  }

  #finish(code, reason) {
    if (this.#closed) {
      return;
    }
    this.#closed = true;
    this.dispatchEvent(closeEvent(code, reason));
  }
}

/**
 * Completes the server side of an upgrade on a node:http `upgrade` event and returns
 * `{ sendText, sendBinary, close }`. Client frames are read only to respond to a close.
 */
export function acceptUpgrade(request, socket) {
  const accept = acceptValue(request.headers['sec-websocket-key']);
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  let buffer = Buffer.alloc(0);
  let closed = false;
  const close = (code, reason = '') => {
    if (!closed) {
      closed = true;
      socket.end(encodeFrame(OPCODES.close, closePayload(code, reason), false));
    }
  };
  socket.on('data', (chunk) => {
    const decoded = decodeFrames(Buffer.concat([buffer, chunk]));
    buffer = decoded.rest;
    if (decoded.frames.some((frame) => frame.opcode === OPCODES.close)) {
      close(decoded.frames.find((frame) => frame.opcode === OPCODES.close).payload.readUInt16BE(0));
    }
  });
  socket.on('error', () => undefined);
  return {
    sendText: (text) => closed || socket.write(encodeFrame(OPCODES.text, Buffer.from(text), false)),
    sendBinary: (bytes) => closed || socket.write(encodeFrame(OPCODES.binary, bytes, false)),
    close,
    get closed() {
      return closed;
    },
  };
}
