// The page's reading of the invite link from its own address: the fragment, the escaped `%23`
// form, and the address left in the address bar afterwards.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { bytesToHex, parseInvite, parseInviteToken, splitInviteAddress } from '../protocol.js';

const TOKEN = 'ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8';
const SECRET = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8';
const KEY_HEX = '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';

// What a browser reports in location for a link, including its own percent-encoding.
function locationOf(link) {
  const url = new URL(link);
  return { pathname: url.pathname, search: url.search, hash: url.hash };
}

function readLink(link) {
  return parseInvite(splitInviteAddress(locationOf(link)));
}

function errorKind(link) {
  try {
    readLink(link);
  } catch (error) {
    return error.kind;
  }
  return 'ok';
}

const base = `https://relay.example/join?token=${TOKEN}`;

test('fragment parsing table', () => {
  const cases = [
    ['plain', `${base}#secret=${SECRET}`, 'ok'],
    ['padded', `${base}#secret=${SECRET}=`, 'ok'],
    ['escaped padding', `${base}#secret=${SECRET}%3D`, 'ok'],
    ['line breaks', `${base}#secret=${SECRET.slice(0, 20)}\n${SECRET.slice(20)}`, 'ok'],
    ['spaces', `${base}#secret=${SECRET.slice(0, 20)} ${SECRET.slice(20)} `, 'ok'],
    ['escaped marker', `${base}%23secret=${SECRET}`, 'ok'],
    ['escaped marker capital', `${base}%23Secret=${SECRET}`, 'ok'],
    ['other fragment parts', `${base}#view=large&secret=${SECRET}`, 'ok'],
    ['trailing angle bracket', `${base}#secret=${SECRET}>`, 'ok'],
    ['trailing quote', `${base}#secret=${SECRET}"`, 'ok'],
    ['missing', base, 'missing_secret'],
    ['empty', `${base}#secret=`, 'missing_secret'],
    ['other name', `${base}#key=${SECRET}`, 'missing_secret'],
    ['truncated', `${base}#secret=${SECRET.slice(0, 40)}`, 'invalid_secret_length'],
    ['cut inside a group', `${base}#secret=${SECRET.slice(0, 41)}`, 'invalid_secret_encoding'],
    ['too long', `${base}#secret=${SECRET}AAAA`, 'invalid_secret_length'],
    [
      'standard alphabet',
      `${base}#secret=${SECRET.slice(0, 42).replace(/A/g, '+')}8`,
      'invalid_secret_encoding',
    ],
    ['slash', `${base}#secret=A/${SECRET.slice(2)}`, 'invalid_secret_encoding'],
    ['over-padded', `${base}#secret=${SECRET}==`, 'invalid_secret_encoding'],
    ['trailing bits', `${base}#secret=${SECRET.slice(0, 42)}9`, 'invalid_secret_encoding'],
    ['no token', `https://relay.example/join#secret=${SECRET}`, 'missing_token'],
    ['short token', `https://relay.example/join?token=abc#secret=${SECRET}`, 'invalid_token'],
    [
      'plus in token',
      `https://relay.example/join?token=${TOKEN.replace('I', '+')}#secret=${SECRET}`,
      'invalid_token',
    ],
  ];
  for (const [name, link, expected] of cases) {
    assert.equal(errorKind(link), expected, name);
  }
});

test('parsed key and token are exact', () => {
  for (const link of [
    `${base}#secret=${SECRET}`,
    `${base}%23secret=${SECRET}`,
    `${base}=#secret=${SECRET}=`,
  ]) {
    const invite = readLink(link);
    assert.equal(invite.token, TOKEN, link);
    assert.equal(bytesToHex(invite.key), KEY_HEX, link);
  }
});

test('truncated secret reports its length', () => {
  assert.throws(() => readLink(`${base}#secret=${SECRET.slice(0, 40)}`), { decodedLength: 30 });
});

test('clean address never holds the key', () => {
  const links = [
    [`${base}#secret=${SECRET}`, `/join?token=${TOKEN}`],
    [`${base}%23secret=${SECRET}`, `/join?token=${TOKEN}`],
    [`${base}&lang=en%23secret=${SECRET}&x=1`, `/join?token=${TOKEN}&lang=en`],
    [base, `/join?token=${TOKEN}`],
  ];
  for (const [link, expected] of links) {
    const address = splitInviteAddress(locationOf(link));
    assert.equal(address.cleanUrl, expected, link);
    assert.ok(!address.cleanUrl.includes(SECRET.slice(0, 10)), link);
  }
});

test('real fragment wins over an escaped marker', () => {
  const address = splitInviteAddress(locationOf(`${base}%23secret=${SECRET}#secret=AAAA`));
  assert.equal(address.fragment, 'secret=AAAA');
  assert.equal(address.cleanUrl, `/join?token=${TOKEN}`);
});

test('token alone parses for a reload', () => {
  assert.equal(parseInviteToken(`?token=${TOKEN}`), TOKEN);
  assert.equal(parseInviteToken(`?token=${TOKEN}=`), TOKEN);
  assert.throws(() => parseInviteToken('?other=1'), { kind: 'missing_token' });
});
