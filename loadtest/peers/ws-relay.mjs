// A relay written the way many teams would write one by hand: Node.js, the
// `ws` package, TLS from Node's `https` module, sessions and tokens in
// memory, no store. It speaks the sealcast relay API's routes and framing so
// that sealcast-loadtest can drive it as a baseline. It is a benchmark peer,
// not a relay to deploy: it keeps no history and loses everything on exit.
//
// Usage: WS_RELAY_API_KEY=KEY node ws-relay.mjs --cert CERT.pem --key KEY.pem [--port 0]
// Prints "ws relay listening on 127.0.0.1:PORT" once it listens.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import { parseArgs } from "node:util";

import { WebSocketServer } from "ws";

const { values: options } = parseArgs({
  options: {
    cert: { type: "string" },
    key: { type: "string" },
    port: { type: "string", default: "0" },
  },
});
if (!options.cert || !options.key) {
  console.error("error: --cert and --key are required: pass a PEM certificate and its key");
  process.exit(2);
}

// Largest delivery: an 8-byte offset and a 65,640-byte frame, rounded up.
const MAX_PAYLOAD = 66 * 1024;
// Frame header offsets of the stream id and the sequence number.
const STREAM_ID_START = 24;
const SEQ_START = 40;
const HEADER_LEN = 88;

// Clinic API key that the clinician's requests (create, publish, end) must
// present as a bearer token.
const API_KEY = process.env.WS_RELAY_API_KEY;
if (!API_KEY) {
  console.error("error: WS_RELAY_API_KEY is not set: set it to the clinic API key to accept");
  process.exit(2);
}

const sessionsById = new Map();
const sessionsByInvite = new Map();

function token() {
  return randomBytes(32).toString("base64url");
}

function bearer(request) {
  const header = request.headers.authorization ?? "";
  return header.startsWith("Bearer ") ? header.slice("Bearer ".length) : null;
}

function sendJson(response, status, body) {
  response.writeHead(status, { "content-type": "application/json" });
  response.end(body === undefined ? undefined : JSON.stringify(body));
}

function createSession(request, response) {
  if (bearer(request) !== API_KEY) {
    sendJson(response, 401, { error: "unauthorized", message: "API key is invalid" });
    request.resume();
    return;
  }
  let body = "";
  request.on("data", (chunk) => {
    body += chunk;
  });
  request.on("end", () => {
    let fingerprint;
    try {
      fingerprint = JSON.parse(body).fingerprint;
    } catch {
      sendJson(response, 400, { error: "bad_request", message: "body is not JSON" });
      return;
    }
    const session = {
      id: randomBytes(16).toString("hex"),
      fingerprint,
      inviteToken: token(),
      nextOffset: 0,
      followers: new Set(),
    };
    sessionsById.set(session.id, session);
    sessionsByInvite.set(session.inviteToken, session);
    sendJson(response, 201, {
      session_id: session.id,
      epoch: 1,
      invite_token: session.inviteToken,
    });
  });
}

function endSession(request, response, id) {
  const session = sessionsById.get(id);
  if (!session || bearer(request) !== API_KEY) {
    sendJson(response, 401, { error: "unauthorized", message: "API key is invalid" });
    return;
  }
  for (const follower of session.followers) {
    follower.send(JSON.stringify({ type: "ended" }));
    follower.close(4004, "session ended");
  }
  sessionsByInvite.delete(session.inviteToken);
  sendJson(response, 204);
}

function handleRequest(request, response) {
  const url = new URL(request.url, "https://localhost");
  const end = url.pathname.match(/^\/v1\/sessions\/([0-9a-f]{32})\/end$/);
  if (request.method === "POST" && url.pathname === "/v1/sessions") {
    createSession(request, response);
  } else if (request.method === "POST" && end) {
    endSession(request, response, end[1]);
  } else {
    sendJson(response, 404, { error: "not_found", message: "no such route" });
  }
}

function publish(socket, session) {
  socket.send(JSON.stringify({ type: "welcome", session_id: session.id, epoch: 1 }));
  socket.on("message", (frame, isBinary) => {
    if (!isBinary || frame.length < HEADER_LEN) {
      socket.close(4000, "malformed frame");
      return;
    }
    const offset = session.nextOffset++;
    const delivery = Buffer.allocUnsafe(8 + frame.length);
    delivery.writeBigUInt64BE(BigInt(offset), 0);
    frame.copy(delivery, 8);
    for (const follower of session.followers) {
      follower.send(delivery);
    }
    socket.send(
      JSON.stringify({
        type: "ack",
        stream_id: frame.subarray(STREAM_ID_START, SEQ_START).toString("hex"),
        seq: Number(frame.readBigUInt64BE(SEQ_START)),
        offset,
      }),
    );
  });
}

function follow(socket, session) {
  socket.send(
    JSON.stringify({
      type: "welcome",
      session_id: session.id,
      epoch: 1,
      fingerprint: session.fingerprint,
      from_offset: session.nextOffset,
      ended: false,
    }),
  );
  session.followers.add(socket);
  socket.on("close", () => session.followers.delete(socket));
}

const server = createServer({
  cert: readFileSync(options.cert),
  key: readFileSync(options.key),
});
const sockets = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD });
server.on("request", handleRequest);
server.on("upgrade", (request, stream, head) => {
  const url = new URL(request.url, "https://localhost");
  const publishMatch = url.pathname.match(/^\/v1\/sessions\/([0-9a-f]{32})\/publish$/);
  let session;
  let role;
  if (publishMatch) {
    session = sessionsById.get(publishMatch[1]);
    role = session && bearer(request) === API_KEY ? publish : null;
  } else if (url.pathname === "/v1/follow") {
    session = sessionsByInvite.get(bearer(request));
    role = session ? follow : null;
  }
  if (!role) {
    stream.end("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n");
    return;
  }
  sockets.handleUpgrade(request, stream, head, (socket) => {
    socket.on("error", () => socket.terminate());
    role(socket, session);
  });
});
server.listen(Number(options.port), "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`ws relay listening on ${address}:${port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
