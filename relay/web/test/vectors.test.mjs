// Checks the browser code against the known-answer vectors, invite cases and word list in
// docs/protocol.md, which the Rust test suite checks against the protocol crate, so the page and
// the crate cannot drift apart.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  AuthorshipVerifier,
  CHECKPOINT_LABEL,
  ENDORSEMENT_LABEL,
  describeVerdict,
  encodeEndorsement,
  encodeStatement,
  importPublisherKey,
  parseSignedContent,
} from '../authorship.js';
import { redeemInvite } from '../invite.js';
import { parseJson } from '../json.js';
import { StreamOpener } from '../opener.js';
import {
  PAIRING_LABELS,
  WRAPPED_KEY_LEN,
  agreeSharedSecret,
  checkCommitment,
  commitmentOf,
  deriveWrapKeyBytes,
  pairingCode,
  unwrapSessionKey,
} from '../pairing.js';
import {
  LABELS,
  bytesToHex,
  computeInviteProof,
  decodeDelivery,
  decodeFrameHeader,
  decryptFrame,
  deriveFingerprint,
  deriveInviteAuthKey,
  deriveStreamKey,
  encodeBase64url,
  fingerprintWords,
  frameHash,
  hexToBytes,
  importSessionKey,
  nonceForSeq,
  parseEndOfSession,
  parseInvite,
  parseSegment,
  splitInviteAddress,
  unpad,
} from '../protocol.js';
import { WORDS } from '../words.js';
import { importX25519Secret } from '../test-support/pairing.mjs';
import { TestStream, importSigningKey, segmentJson } from '../test-support/seal.mjs';

// Document parsing, in the block format that protocol/tests/vectors.rs reads too.

/** Path of a file relative to the repository root. */
function repoPath(relative) {
  return fileURLToPath(new URL(`../../../${relative}`, import.meta.url));
}

/** Text of docs/protocol.md. */
function readProtocolDoc() {
  return readFileSync(repoPath('docs/protocol.md'), 'utf8');
}

/** Bodies of the fenced blocks whose info string is exactly `info`. */
function fencedBlocks(markdown, info) {
  const blocks = [];
  let body = null;
  for (const line of markdown.split('\n')) {
    if (body === null && line.trimEnd() === '```' + info) {
      body = [];
    } else if (body !== null && line.trimEnd() === '```') {
      blocks.push(body);
      body = null;
    } else if (body !== null) {
      body.push(line.trimEnd());
    }
  }
  if (body !== null) {
    throw new Error(`a \`\`\`${info} block is not closed`);
  }
  return blocks;
}

/**
 * Parses every `vectors` block into a Map. A line `name: value` starts a value and a line
 * starting with two spaces continues the value above it, with the spaces removed.
 */
function parseVectors(markdown) {
  const values = new Map();
  for (const block of fencedBlocks(markdown, 'vectors')) {
    let name = null;
    for (const line of block) {
      if (line.trim() === '') {
        continue;
      }
      if (line.startsWith('  ')) {
        if (name === null) {
          throw new Error(`continuation line without a value: ${line}`);
        }
        values.set(name, values.get(name) + line.trim());
        continue;
      }
      const colon = line.indexOf(':');
      if (colon <= 0) {
        throw new Error(`vector line has no name: ${line}`);
      }
      name = line.slice(0, colon);
      if (values.has(name)) {
        throw new Error(`vector ${name} appears twice`);
      }
      values.set(name, line.slice(colon + 1).replace(/^ /, ''));
    }
  }
  return values;
}

/** Parses the `invite-cases` blocks into `{ expected, link }` rows. */
function parseInviteCases(markdown) {
  return fencedBlocks(markdown, 'invite-cases')
    .flat()
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const bar = line.indexOf('|');
      return { expected: line.slice(0, bar).trim(), link: line.slice(bar + 1).trim() };
    });
}

/** Parses the `words` block: lines `HEX: word word ...`, returned as one list in index order. */
function parseWordList(markdown) {
  const words = [];
  for (const line of fencedBlocks(markdown, 'words').flat()) {
    if (line.trim() === '') {
      continue;
    }
    const [index, rest] = line.split(':');
    if (Number.parseInt(index, 16) !== words.length) {
      throw new Error(`word list line starts at ${index}, expected ${words.length.toString(16)}`);
    }
    words.push(...rest.trim().split(/\s+/));
  }
  return words;
}

/** Converts a Rust variant name such as `InvalidSecretLength` to `invalid_secret_length`. */
function snakeCase(name) {
  return name.replace(/(?<!^)([A-Z])/g, '_$1').toLowerCase();
}

// Checks against the vectors

const doc = readProtocolDoc();
const vectors = parseVectors(doc);
const used = new Set();

function vector(name) {
  assert.ok(vectors.has(name), `docs/protocol.md has no vector named ${name}`);
  used.add(name);
  return vectors.get(name);
}

const bytes = (name) => hexToBytes(vector(name));
const hexOf = async (key) => bytesToHex(new Uint8Array(await crypto.subtle.exportKey('raw', key)));
const sessionKey = await importSessionKey(bytes('session_key'));
const sessionId = bytes('session_id');
const streamId = bytes('stream_id');
const plaintexts = [vector('segment_0'), vector('segment_1'), vector('end_2')];
const kinds = [2, 1, 3];
const finalCounts = [1n, 1n, 2n];

test('labels match the document', () => {
  assert.equal(vector('stream_key_label'), LABELS.streamKey);
  assert.equal(vector('fingerprint_label'), LABELS.fingerprint);
  assert.equal(vector('invite_auth_label'), LABELS.inviteAuth);
  assert.equal(vector('invite_proof_label'), LABELS.inviteProof);
});

test('key derivations match', async () => {
  const streamKey = await deriveStreamKey(sessionKey, sessionId, streamId, true);
  assert.equal(await hexOf(streamKey), vector('stream_key'));

  const fingerprint = await deriveFingerprint(sessionKey);
  assert.equal(bytesToHex(fingerprint), vector('fingerprint'));
  assert.equal(encodeBase64url(fingerprint), vector('fingerprint_base64url'));
  assert.equal(fingerprintWords(fingerprint).join(' '), vector('fingerprint_words'));

  const authKey = await deriveInviteAuthKey(sessionKey, true);
  assert.equal(await hexOf(authKey), vector('invite_auth_key'));
  const authBytes = hexToBytes(await hexOf(authKey));
  assert.equal(encodeBase64url(authBytes), vector('invite_auth_key_base64url'));
});

test('invite proof matches', async () => {
  const authKey = await deriveInviteAuthKey(sessionKey);
  const proof = await computeInviteProof(authKey, bytes('challenge'));
  assert.equal(bytesToHex(proof), vector('invite_proof'));
});

for (const index of [0, 1, 2]) {
  test(`frame ${index} header, padding and hash match`, async () => {
    const frame = bytes(`frame_${index}`);
    const header = decodeFrameHeader(frame);
    assert.equal(bytesToHex(frame.subarray(0, 88)), vector(`header_${index}`));
    assert.equal(bytesToHex(nonceForSeq(header.seq)), vector(`nonce_${index}`));
    assert.equal(header.kind, kinds[index]);
    assert.equal(header.seq, BigInt(index));
    assert.equal(header.finalCount, finalCounts[index]);
    assert.equal(header.keyEpoch, 0);
    assert.equal(header.sessionIdHex, vector('session_id'));
    assert.equal(header.streamIdHex, vector('stream_id'));
    const previous = index === 0 ? '00'.repeat(32) : vector(`frame_${index - 1}_hash`);
    assert.equal(bytesToHex(header.prevHash), previous);

    const streamKey = await deriveStreamKey(sessionKey, sessionId, streamId);
    const padded = await decryptFrame(streamKey, frame, header);
    if (index === 0) {
      assert.equal(bytesToHex(padded), vector('padded_0'));
    }
    const paddedHash = new Uint8Array(await crypto.subtle.digest('SHA-256', padded));
    assert.equal(bytesToHex(paddedHash), vector(`padded_${index}_sha256`));
    assert.equal(new TextDecoder().decode(unpad(padded)), plaintexts[index]);
    assert.equal(bytesToHex(await frameHash(frame)), vector(`frame_${index}_hash`));
  });
}

test('test sealer reproduces the frames', async () => {
  const stream = await TestStream.create(bytes('session_key'), sessionId, streamId);
  for (const index of [0, 1, 2]) {
    const frame = await stream.seal(kinds[index], plaintexts[index]);
    assert.equal(bytesToHex(frame), vector(`frame_${index}`));
  }
  for (const index of [0, 1]) {
    const segment = parseSegment(new TextEncoder().encode(plaintexts[index]));
    assert.equal(segmentJson(segment), plaintexts[index]);
  }
});

test('frame contents parse as the document states', async () => {
  const opener = new StreamOpener(sessionKey, sessionId);
  const contents = [];
  for (const index of [0, 1, 2]) {
    contents.push((await opener.open(bytes(`frame_${index}`))).content);
  }
  const expected = JSON.parse(plaintexts[0]);
  const segment = parseSegment(contents[0]);
  assert.equal(segment.segmentId, BigInt(expected.segment_id));
  assert.equal(segment.revision, expected.revision);
  assert.equal(segment.speaker, expected.speaker);
  assert.equal(segment.startMs, expected.start_ms);
  assert.equal(segment.endMs, expected.end_ms);
  assert.equal(segment.text, expected.text);
  assert.equal(segment.final, true);
  assert.equal(parseSegment(contents[1]).final, false);
  assert.equal(parseEndOfSession(contents[2]).finalSegments, 1n);
});

test('receiver results match', async () => {
  const names = [...vectors.keys()].filter((name) => name.startsWith('receive_'));
  assert.ok(names.length >= 5, `expected receiver vectors, found ${names.length}`);
  for (const name of names) {
    const opener = new StreamOpener(sessionKey, sessionId);
    const results = [];
    for (const digit of name.slice('receive_'.length).split('_')) {
      results.push(await receiveResult(opener, bytes(`frame_${digit}`)));
    }
    assert.equal(results.join(' '), vector(name), name);
  }
});

test('checkpoints open and do not count as final', async () => {
  const whole = new StreamOpener(sessionKey, sessionId);
  const results = [];
  for (const name of ['frame_0', 'checkpoint_frame_1', 'signed_end_frame_2']) {
    results.push(await receiveResult(whole, bytes(name)));
  }
  assert.equal(results.join(' '), '0/0/verified 0/0/verified 0/0/verified');

  // Opened alone, the checkpoint shows that the final frame before it is missing.
  const late = new StreamOpener(sessionKey, sessionId);
  assert.equal(await receiveResult(late, bytes('checkpoint_frame_1')), '1/1/unchecked');
});

async function receiveResult(opener, frame) {
  try {
    const opened = await opener.open(frame);
    const chain = { true: 'verified', false: 'broken', null: 'unchecked' }[opened.chainVerified];
    return `${opened.skippedFrames}/${opened.skippedFinal}/${chain}`;
  } catch (error) {
    return vectorErrorName(error.kind);
  }
}

function vectorErrorName(kind) {
  return kind.replace(/(^|_)([a-z])/g, (_, __, letter) => letter.toUpperCase());
}

test('invite link parses to the vector key and token', () => {
  assert.equal(encodeBase64url(bytes('invite_token_bytes')), vector('invite_token'));
  assert.equal(encodeBase64url(bytes('session_key')), vector('session_key_base64url'));
  const link = new URL(vector('invite_link'));
  assert.equal(link.origin + '/', vector('relay_url'));
  const invite = parseInvite(splitInviteAddress(link));
  assert.equal(invite.token, vector('invite_token'));
  assert.equal(bytesToHex(invite.key), vector('session_key'));
});

// The browser only receives links that opened the page, so URL, scheme and path errors belong to
// the relay's routing, not to the page. A mail client hands over the link without the wrapping
// characters, and the URL parser drops line breaks, which the document writes as spaces.
const ROUTING_ERRORS = new Set(['InvalidUrl', 'InvalidScheme', 'InvalidPath']);

test('invite cases parse as the document expects', () => {
  const cases = parseInviteCases(doc);
  const checked = cases.filter((row) => !ROUTING_ERRORS.has(row.expected));
  assert.ok(checked.length >= 15, `expected invite cases, found ${checked.length}`);
  for (const { expected, link } of checked) {
    const text = link.replace(/^[<"']+|[>"']+$/g, '').replaceAll(' ', '\n');
    const address = splitInviteAddress(new URL(text));
    if (expected === 'ok') {
      const invite = parseInvite(address);
      assert.equal(invite.token, vector('invite_token'), link);
      assert.equal(bytesToHex(invite.key), vector('session_key'), link);
      continue;
    }
    const [, variant, length] = /^(\w+)(?:\((\d+)\))?$/.exec(expected);
    assert.throws(
      () => parseInvite(address),
      (error) => error.kind === snakeCase(variant),
      link,
    );
    if (length !== undefined) {
      assert.throws(
        () => parseInvite(address),
        (error) => error.decodedLength === Number(length),
      );
    }
  }
});

test('follower messages decode', async () => {
  const welcome = parseJson(vector('follower_welcome'));
  const fingerprint = await deriveFingerprint(sessionKey);
  assert.equal(welcome.type, 'welcome');
  assert.equal(welcome.session_id, vector('session_id'));
  assert.equal(welcome.fingerprint, encodeBase64url(fingerprint));
  assert.equal(welcome.from_offset, BigInt(vector('delivery_offset')));
  assert.equal(welcome.ended, false);
  assert.equal(parseJson(vector('follower_committed')).offset, 8n);
  assert.equal(parseJson(vector('follower_ended')).type, 'ended');
  assert.equal(typeof parseJson(vector('error_body')).message, 'string');

  const frame = bytes('frame_0');
  const delivery = new Uint8Array(8 + frame.length);
  new DataView(delivery.buffer).setBigUint64(0, BigInt(vector('delivery_offset')));
  delivery.set(frame, 8);
  assert.equal(bytesToHex(delivery.subarray(0, 24)), vector('delivery_0_head'));
  const decoded = decodeDelivery(delivery);
  assert.equal(decoded.offset, 7n);
  assert.equal(bytesToHex(decoded.frame), vector('frame_0'));
});

test('publisher and session messages parse', () => {
  const request = parseJson(vector('create_session_request'));
  assert.equal(request.fingerprint, vector('fingerprint_base64url'));
  assert.equal(request.invite_verifier, vector('invite_auth_key_base64url'));
  const response = parseJson(vector('create_session_response'));
  assert.equal(response.session_id, vector('session_id'));
  assert.equal(response.invite_token, vector('invite_token'));
  assert.equal(typeof parseJson(vector('publisher_welcome')).epoch, 'bigint');
  assert.equal(parseJson(vector('publisher_ack')).stream_id, vector('stream_id'));
});

test('invite redemption sends and reads the documented bodies', async () => {
  const expected = {
    '/v1/invites/challenge': [
      vector('invite_challenge_request'),
      vector('invite_challenge_response'),
    ],
    '/v1/invites/redeem': [vector('invite_redeem_request'), vector('invite_redeem_response')],
  };
  const sent = [];
  const fetchFn = async (url, init) => {
    const path = new URL(url).pathname;
    sent.push(path);
    assert.equal(init.body, expected[path][0], `body of ${path}`);
    return new Response(expected[path][1], { status: 200 });
  };
  const result = await redeemInvite({
    fetchFn,
    origin: 'https://relay.example:8443',
    token: vector('invite_token'),
    fingerprint: hexToBytes(vector('fingerprint')),
    inviteAuthKey: await deriveInviteAuthKey(sessionKey),
  });
  assert.deepEqual(sent, ['/v1/invites/challenge', '/v1/invites/redeem']);
  assert.deepEqual(result, { outcome: 'ok', sessionId: vector('session_id'), epoch: 1n });
  assert.equal(encodeBase64url(bytes('challenge')), vector('challenge_base64url'));
  assert.equal(encodeBase64url(bytes('invite_proof')), vector('invite_proof_base64url'));
});

test('word lists agree', () => {
  assert.deepEqual(parseWordList(doc), [...WORDS]);
  const rust = readFileSync(repoPath('protocol/src/words.rs'), 'utf8');
  const rustWords = [...rust.slice(rust.indexOf('= [')).matchAll(/"([a-z]+)"/g)].map((m) => m[1]);
  assert.deepEqual(rustWords, [...WORDS]);
  assert.equal(new Set(WORDS).size, 256);
});

// Authorship (section 10.8): the signed statements, contents and frames, and the verdicts.

const SIGNED = [
  { name: 'checkpoint', seq: 1, kind: 4 },
  { name: 'signed_end', seq: 2, kind: 3 },
];

test('checkpoint statements and signatures match', async () => {
  assert.equal(vector('checkpoint_label'), CHECKPOINT_LABEL);
  const publisher = await importPublisherKey(bytes('publisher_key'));
  const opener = new StreamOpener(sessionKey, sessionId);
  await opener.open(bytes('frame_0'));
  for (const { name, seq, kind } of SIGNED) {
    const opened = await opener.open(bytes(`${name}_frame_${seq}`));
    assert.equal(opened.header.kind, kind, name);
    assert.equal(new TextDecoder().decode(opened.content), vector(`${name}_content_${seq}`));
    const { statement, signature } = parseSignedContent(opened);
    assert.equal(bytesToHex(await encodeStatement(statement)), vector(`${name}_statement_${seq}`));
    assert.equal(bytesToHex(signature), vector(`${name}_signature_${seq}`));
    const message = await encodeStatement(statement);
    assert.ok(await crypto.subtle.verify('Ed25519', publisher, signature, message), name);
  }
});

test('test sealer reproduces the signed frames', async () => {
  const signingKey = await importSigningKey(bytes('publisher_secret'), bytes('publisher_key'));
  const stream = await TestStream.create(bytes('session_key'), sessionId, streamId);
  assert.equal(bytesToHex(await stream.seal(2, plaintexts[0])), vector('frame_0'));
  const checkpoint = await stream.sealSigned(signingKey);
  assert.equal(bytesToHex(checkpoint), vector('checkpoint_frame_1'));
  const end = await stream.sealSigned(signingKey, { kind: 3, finalSegments: 1 });
  assert.equal(bytesToHex(end), vector('signed_end_frame_2'));
});

test('authorship verdicts match', async () => {
  const frames = [bytes('frame_0'), bytes('checkpoint_frame_1'), bytes('signed_end_frame_2')];
  const publisher = await importPublisherKey(bytes('publisher_key'));
  const names = [...vectors.keys()].filter((name) => name.startsWith('authorship_'));
  assert.equal(names.length, 5);
  for (const name of names) {
    const opener = new StreamOpener(sessionKey, sessionId);
    const verifier = new AuthorshipVerifier(publisher);
    for (const digit of name.slice('authorship_'.length).split('_')) {
      const frame = frames[Number(digit)];
      await verifier.observe(frame, await opener.open(frame));
    }
    const verdict = verifier.verdict(vector('stream_id'));
    assert.equal(describeVerdict(verdict), vector(name), name);
  }
});

test('links with a publisher key parse', () => {
  assert.equal(encodeBase64url(bytes('publisher_key')), vector('publisher_key_base64url'));
  const invite = parseInvite(splitInviteAddress(new URL(vector('invite_link_publisher'))));
  assert.equal(invite.token, vector('invite_token'));
  assert.equal(bytesToHex(invite.key), vector('session_key'));
  assert.equal(bytesToHex(invite.publisher), vector('publisher_key'));

  // The page does not rotate keys, but it reads the key and publisher of a rotated link.
  const rotated = parseInvite(splitInviteAddress(new URL(vector('invite_link_epoch_1'))));
  assert.equal(encodeBase64url(rotated.key), vector('rotated_session_key_base64url'));
  assert.equal(bytesToHex(rotated.publisher), vector('publisher_key'));
});

// Section 10.7: the joining device's side of pairing. The clinician device's secret gives the
// clinician public key, which the page receives in step 2.
test('pairing vectors match', async () => {
  assert.equal(vector('pairing_commit_label'), PAIRING_LABELS.commit);
  assert.equal(vector('pairing_code_label'), PAIRING_LABELS.code);
  assert.equal(vector('wrap_label'), PAIRING_LABELS.wrap);

  const joiner = await importX25519Secret(bytes('joiner_secret'));
  const clinician = await importX25519Secret(bytes('clinician_secret'));
  assert.equal(bytesToHex(joiner.publicKey), vector('joiner_public'));
  assert.equal(bytesToHex(clinician.publicKey), vector('clinician_public'));

  const commitment = await commitmentOf(joiner.publicKey);
  assert.equal(bytesToHex(commitment), vector('pairing_commitment'));
  await checkCommitment(commitment, joiner.publicKey);

  const shared = await agreeSharedSecret(joiner.privateKey, clinician.publicKey);
  assert.equal(bytesToHex(shared), vector('pairing_shared_secret'));
  const fromClinician = await agreeSharedSecret(clinician.privateKey, joiner.publicKey);
  assert.equal(bytesToHex(fromClinician), vector('pairing_shared_secret'));

  const code = await pairingCode(joiner.publicKey, clinician.publicKey);
  assert.equal(bytesToHex(code.bytes), vector('pairing_code'));
  assert.equal(code.words.join(' '), vector('pairing_code_words'));
  assert.equal(code.digits, vector('pairing_code_digits'));
});

for (const epoch of [0, 1]) {
  test(`wrapped key of epoch ${epoch} opens to the vector payload`, async () => {
    const joiner = await importX25519Secret(bytes('joiner_secret'));
    const clinician = await importX25519Secret(bytes('clinician_secret'));
    const shared = await agreeSharedSecret(joiner.privateKey, clinician.publicKey);
    const link = { shared, joinerPublic: joiner.publicKey, clinicianPublic: clinician.publicKey };

    const wrapKey = await deriveWrapKeyBytes(link, epoch);
    assert.equal(bytesToHex(wrapKey), vector(`wrap_key_${epoch}`));
    const wrapped = bytes(`wrapped_key_${epoch}`);
    assert.equal(wrapped.length, WRAPPED_KEY_LEN);
    assert.equal(bytesToHex(wrapped.subarray(4, 16)), vector(`wrap_nonce_${epoch}`));

    const grant = await unwrapSessionKey(link, wrapped);
    const expectedKey = epoch === 0 ? vector('session_key') : vector('rotated_session_key');
    assert.equal(grant.epoch, epoch);
    assert.equal(grant.sessionIdHex, vector('session_id'));
    assert.equal(bytesToHex(grant.sessionKey), expectedKey);
    assert.equal(bytesToHex(grant.publisher), vector('publisher_key'));
  });
}

// Section 10.10: a second device of the clinician. The page does not take sessions over, so the
// device pairing and grant are computed here with WebCrypto from the document's own labels, and
// the page's verifier checks the endorsed stream.

async function hkdfBytes(salt, ikm, info, length) {
  const key = await crypto.subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  const params = { name: 'HKDF', hash: 'SHA-256', salt, info };
  return new Uint8Array(await crypto.subtle.deriveBits(params, key, length * 8));
}

const encoder = new TextEncoder();
const concat = (...parts) => new Uint8Array(parts.flatMap((part) => [...part]));

test('second device pairing vectors match', async () => {
  const secret = bytes('second_device_secret');
  const signing = await importSigningKey(secret, bytes('second_device_key'));
  assert.ok(signing, 'the second device key imports with its secret');
  assert.equal(encodeBase64url(bytes('second_device_key')), vector('second_device_key_base64url'));

  const joinerPublic = bytes('joiner_public');
  const clinicianPublic = bytes('clinician_public');
  const deviceKey = bytes('second_device_key');
  const commitLabel = encoder.encode(vector('device_commit_label'));
  const commitment = await crypto.subtle.digest(
    'SHA-256',
    concat(commitLabel, joinerPublic, deviceKey),
  );
  assert.equal(bytesToHex(new Uint8Array(commitment)), vector('device_pairing_commitment'));

  const codeLabel = encoder.encode(vector('device_code_label'));
  const ikm = concat(joinerPublic, clinicianPublic, deviceKey);
  const code = await hkdfBytes(new Uint8Array(0), ikm, codeLabel, 4);
  assert.equal(bytesToHex(code), vector('device_pairing_code'));
  const words = [...code].map((byte) => WORDS[byte]).join(' ');
  assert.equal(words, vector('device_pairing_code_words'));
  const digits = new DataView(code.buffer).getUint32(0) % 1_000_000;
  assert.equal(String(digits).padStart(6, '0'), vector('device_pairing_code_digits'));
});

test('device grant opens to the vector payload', async () => {
  const salt = concat(bytes('joiner_public'), bytes('clinician_public'));
  const info = concat(encoder.encode(vector('device_wrap_label')), new Uint8Array(4));
  const wrapKey = await hkdfBytes(salt, bytes('pairing_shared_secret'), info, 32);
  assert.equal(bytesToHex(wrapKey), vector('device_wrap_key_0'));

  const wrapped = bytes('wrapped_device_grant_0');
  assert.equal(bytesToHex(wrapped.subarray(4, 16)), vector('device_wrap_nonce_0'));
  const key = await crypto.subtle.importKey('raw', wrapKey, 'AES-GCM', false, ['decrypt']);
  const params = {
    name: 'AES-GCM',
    iv: wrapped.subarray(4, 16),
    additionalData: wrapped.subarray(0, 4),
  };
  const payload = new Uint8Array(await crypto.subtle.decrypt(params, key, wrapped.subarray(16)));
  assert.equal(bytesToHex(payload), vector('device_grant_payload'));

  const token = encoder.encode(vector('invite_token'));
  const epoch = new Uint8Array(8);
  new DataView(epoch.buffer).setBigUint64(0, BigInt(vector('device_grant_history_epoch')));
  const expected = concat(
    bytes('session_id'),
    bytes('session_key'),
    bytes('publisher_key'),
    new Uint8Array(4),
    bytes('second_device_key'),
    bytes('endorsement_signature'),
    epoch,
    [token.length],
    token,
    [1],
    bytes('pairing_shared_secret'),
    bytes('joiner_public'),
    bytes('clinician_public'),
  );
  assert.equal(bytesToHex(payload), bytesToHex(expected));
});

test('endorsement and endorsed stream match', async () => {
  assert.equal(vector('endorsement_label'), ENDORSEMENT_LABEL);
  const statement = encodeEndorsement(sessionId, 0, bytes('second_device_key'));
  assert.equal(bytesToHex(statement), vector('endorsement_statement'));
  const publisher = await importPublisherKey(bytes('publisher_key'));
  const signature = bytes('endorsement_signature');
  assert.ok(await crypto.subtle.verify('Ed25519', publisher, signature, statement));

  const frames = [bytes('frame_0'), bytes('endorsed_end_frame_1')];
  const opener = new StreamOpener(sessionKey, sessionId);
  const verifier = new AuthorshipVerifier(publisher);
  let contentChecked = false;
  for (const frame of frames) {
    const opened = await opener.open(frame);
    if (opened.header.seq === 1n) {
      contentChecked = true;
      assert.equal(new TextDecoder().decode(opened.content), vector('endorsed_end_content_1'));
      const { endorsement } = parseSignedContent(opened);
      assert.equal(bytesToHex(endorsement.device), vector('second_device_key'));
      assert.equal(bytesToHex(endorsement.signature), vector('endorsement_signature'));
    }
    await verifier.observe(frame, opened);
  }
  assert.ok(contentChecked, 'the endorsed end frame was opened');
  const verdict = verifier.verdict(vector('stream_id'));
  assert.equal(describeVerdict(verdict), vector('endorsed_verdict_0_1'));
  assert.equal(bytesToHex(verdict.endorsedDevice), vector('second_device_key'));
});

// Registered last, so it runs after every test that reads vectors.
test('every vector is checked', () => {
  const unchecked = [...vectors.keys()].filter((name) => !used.has(name));
  assert.deepEqual(unchecked, [], 'vectors this suite does not check yet');
});
