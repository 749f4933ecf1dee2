// Finding secrets in text: a session key in every encoding a careless log line or URL would
// use, and opaque values (tokens, cookies, challenges, proofs) as they are.

/** Reads the session key bytes from the `secret=` part of an invite link's fragment. */
export function keyOfLink(link) {
  const fragment = new URL(link).hash.slice(1);
  const secret = new URLSearchParams(fragment).get('secret');
  return Buffer.from(secret, 'base64url');
}

/** Returns the invite token of a link. */
export function tokenOfLink(link) {
  return new URL(link).searchParams.get('token');
}

/**
 * Returns the texts that reveal `key`: unpadded base64url, standard base64 with and without
 * padding, percent-encoded standard base64, and hex in both cases.
 */
export function keyForms(key) {
  const base64 = key.toString('base64');
  const hex = key.toString('hex');
  return [
    key.toString('base64url'),
    base64,
    base64.replace(/=+$/, ''),
    encodeURIComponent(base64),
    hex,
    hex.toUpperCase(),
  ];
}

/**
 * Returns a description of every place where one of `needles` (`{ label, text }`) occurs in one
 * of `haystacks` (`{ where, text }`), or an empty list.
 */
export function findLeaks(needles, haystacks) {
  const leaks = [];
  for (const { where, text } of haystacks) {
    for (const needle of needles) {
      if (needle.text.length >= 16 && text.includes(needle.text)) {
        leaks.push(`${needle.label} in ${where}: ${text.slice(0, 200)}`);
      }
    }
  }
  return leaks;
}
