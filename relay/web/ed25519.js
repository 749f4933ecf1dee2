// Ed25519 point checks that WebCrypto does not make: a publisher key must be a canonical
// encoding of a curve point (RFC 8032 section 5.1.3) and not of small order, and a signature
// whose R has small order is rejected. The Rust crate gets the same rules from ed25519-dalek
// (`VerifyingKey::from_bytes`, `is_weak` and `verify_strict`). WebCrypto still does the
// signature check itself.

/** The field prime 2^255 - 19. */
const P = (1n << 255n) - 19n;
/** The curve constant d = -121665 / 121666 mod p. */
const D = mod(-121665n * modPow(121666n, P - 2n));

/**
 * The y-coordinate of the two points of order 8 with an even x-coordinate (little-endian
 * encoding of y). The other two points of order 8 have y = p - Y8. The tests check that it
 * solves d y^4 + 2 y^2 - 1 = 0, the condition for a point whose double has y = 0.
 */
export const Y8 = decodeLittleEndian(
  Uint8Array.from(
    '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05'.match(/../g),
    (pair) => Number.parseInt(pair, 16),
  ),
);

// Every point of order 1, 2, 4 or 8 has one of these y-coordinates: the identity (0, 1), the
// point (0, -1) of order 2, the two points (±sqrt(-1), 0) of order 4 and the four of order 8.
const SMALL_ORDER_Y = new Set([0n, 1n, P - 1n, Y8, P - Y8]);

/** Returns whether 32 bytes are a valid Ed25519 public key: canonical, on the curve, not weak. */
export function isValidPublicKey(bytes) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 32) {
    return false;
  }
  const y = decodeY(bytes);
  if (y >= P || SMALL_ORDER_Y.has(y)) {
    return false;
  }
  return isOnCurve(y, bytes[31] >> 7);
}

/**
 * Returns whether a point encoding has small order, after reducing y modulo p as ed25519-dalek
 * does. Used for the R half of a signature, where a small-order R lets a forger cancel terms.
 */
export function hasSmallOrder(bytes) {
  return SMALL_ORDER_Y.has(decodeY(bytes) % P);
}

/** Returns d y^4 + 2 y^2 - 1 mod p, which is zero for the y-coordinates of order-8 points. */
export function orderEightEquation(y) {
  const square = mod(y * y);
  return mod(D * square * square + 2n * square - 1n);
}

// The curve -x^2 + y^2 = 1 + d x^2 y^2 gives x^2 = (y^2 - 1) / (d y^2 + 1). A point exists when
// that is a square modulo p (Euler's criterion), and x = 0 has no negative form.
function isOnCurve(y, sign) {
  const square = mod(y * y);
  const xSquared = mod((square - 1n) * modPow(mod(D * square + 1n), P - 2n));
  if (xSquared === 0n) {
    return sign === 0;
  }
  return modPow(xSquared, (P - 1n) / 2n) === 1n;
}

function decodeY(bytes) {
  const copy = Uint8Array.from(bytes);
  copy[31] &= 0x7f;
  return decodeLittleEndian(copy);
}

function decodeLittleEndian(bytes) {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i -= 1) {
    value = (value << 8n) | BigInt(bytes[i]);
  }
  return value;
}

function mod(value) {
  const rest = value % P;
  return rest >= 0n ? rest : rest + P;
}

function modPow(base, exponent) {
  let result = 1n;
  let factor = mod(base);
  let remaining = exponent;
  while (remaining > 0n) {
    if (remaining & 1n) {
      result = (result * factor) % P;
    }
    factor = (factor * factor) % P;
    remaining >>= 1n;
  }
  return result;
}
