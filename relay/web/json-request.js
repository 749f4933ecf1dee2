// JSON requests of the patient page to the relay that served it.

import { parseJson } from './json.js';

/**
 * Sends a `method` request to a relay route, with `payload` as a JSON body when it is given and
 * `headers` added, and returns `{ status, body }`. The body is null when the response is not
 * JSON. Throws only when no response arrives, such as on a network failure or a redirect.
 */
export async function requestJson(
  fetchFn,
  method,
  url,
  { payload = undefined, headers = {} } = {},
) {
  const response = await fetchFn(url, {
    method,
    headers: payload === undefined ? headers : { ...headers, 'Content-Type': 'application/json' },
    body: payload === undefined ? undefined : JSON.stringify(payload),
    credentials: 'same-origin',
    cache: 'no-store',
    redirect: 'error',
    referrerPolicy: 'no-referrer',
  });
  let body = null;
  try {
    body = parseJson(await response.text());
  } catch {
    body = null;
  }
  return { status: response.status, body };
}

/** Sends a JSON POST to a relay route and returns `{ status, body }`, as `requestJson` does. */
export function postJson(fetchFn, url, payload) {
  return requestJson(fetchFn, 'POST', url, { payload });
}
