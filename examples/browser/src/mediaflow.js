// MediaFlow's upload API for a browser page: no dependencies, no API key.
//
// The page never holds the API key. Presigning is the one call that needs it
// in production, so it goes through `presign()`, which posts to your backend
// when the page is given one (`?presign=URL`); everything after presign
// (more part URLs, the parts already stored, complete, abort) is authorised by
// the upload token that the presign answer carries.
//
// Used by both examples: fetch-app.js (plain fetch) and uppy-app.js (Uppy's
// AwsS3 plugin with custom functions).

/** An error answer, readable cross-origin: HTTP status, MediaFlow's (or the store's) code and message. */
export class UploadError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.name = 'UploadError';
    this.status = status;
    this.code = code;
  }
}

/** Page settings from the query string: `?api=` MediaFlow's base URL, `?presign=` your backend's presign route. */
export function settings(search = location.search) {
  const q = new URLSearchParams(search);
  return {
    api: (q.get('api') || 'http://127.0.0.1:8080').replace(/\/+$/, ''),
    presignUrl: q.get('presign') || null,
  };
}

/**
 * A key_base for a file: its name reduced to MediaFlow's `[A-Za-z0-9_-]`, plus a
 * random suffix so that two uploads of one name never meet (an existing key is
 * refused, not overwritten).
 */
export function keyBaseFor(fileName) {
  const stem = fileName.replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9_-]+/g, '-').slice(0, 60) || 'file';
  const rand = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
  return `${stem}-${rand}`;
}

/**
 * POST /v1/uploads/presign. With `presignUrl` set (production), the same JSON
 * goes to your backend, which adds the API key, forwards it to MediaFlow and
 * returns MediaFlow's answer unchanged; without it (development: MediaFlow on
 * loopback without API_KEY) the page asks MediaFlow itself.
 *
 * `multipart` is MediaFlow's `auto` | `force` | `off`. The answer carries
 * `key_base` and `profile` (the backend's, when it sent them) for the
 * thumbnail URL.
 */
export async function presign(cfg, { file, profile, keyBase, multipart = 'auto' }) {
  const body = { key_base: keyBase, mime: file.type, size_bytes: file.size, profile, multipart };
  const answer = await requestJson('POST', cfg.presignUrl || `${cfg.api}/v1/uploads/presign`, body);
  // A backend that chooses the key_base and profile itself returns them beside MediaFlow's answer.
  return { key_base: keyBase, profile, ...answer };
}

/** POST /v1/uploads/presign/parts: URLs for parts `start`..`start+count-1`, authorised by the token. */
export async function presignParts(cfg, objectKey, multipart, start, count) {
  return requestJson('POST', `${cfg.api}/v1/uploads/presign/parts`, {
    object_key: objectKey,
    upload_id: multipart.upload_id,
    upload_token: multipart.upload_token,
    start_part: start,
    count,
  });
}

/** GET /v1/uploads/{key}/parts/{id}?token=: the parts the store already holds (to resume). */
export async function listParts(cfg, objectKey, multipart) {
  const url = `${cfg.api}/v1/uploads/${encodeURIComponent(objectKey)}/parts/${encodeURIComponent(multipart.upload_id)}` +
    `?token=${encodeURIComponent(multipart.upload_token)}`;
  const answer = await requestJson('GET', url);
  return answer.parts; // [{part_number, etag, size}]
}

/** The presign answer's `complete` action (its URL carries the token): MediaFlow completes and verifies. */
export async function complete(multipart, parts) {
  const { method, url } = multipart.complete;
  return requestJson(method, url, { parts });
}

/** The presign answer's `abort` action: the store drops the parts. */
export async function abort(multipart) {
  const { method, url } = multipart.abort;
  return requestJson(method, url);
}

/**
 * The headers a presigned URL was signed with, less those a page may not set:
 * the browser sets Content-Length itself from the body (a Blob's exact size,
 * which is what the URL binds).
 */
export function browserHeaders(headers = {}) {
  const out = {};
  for (const [name, value] of Object.entries(headers)) {
    if (!/^(content-length|host)$/i.test(name)) out[name] = value;
  }
  return out;
}

/** PUT bytes to a presigned URL (the store's, or MediaFlow's own with the fs backend); returns the ETag. */
export async function putBytes(url, headers, body, signal) {
  const res = await fetch(url, { method: 'PUT', headers: browserHeaders(headers), body, signal });
  if (!res.ok) throw await errorOf(res);
  const etag = res.headers.get('ETag');
  if (etag == null) {
    // Without `Access-Control-Expose-Headers: ETag` the header is invisible here.
    throw new UploadError(res.status, 'etag_not_exposed', `no ETag readable from ${new URL(url).origin}: check its CORS rule`);
  }
  return etag;
}

/** URL of a thumbnail of an uploaded image. */
export function thumbUrl(cfg, profile, keyBase, width = 256) {
  return `${cfg.api}/thumb/${encodeURIComponent(profile)}/${encodeURIComponent(keyBase)}?width=${width}`;
}

async function requestJson(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

/** MediaFlow answers errors as JSON `{code, message}`; S3 as XML `<Code>`/`<Message>`. */
async function errorOf(res) {
  const text = await res.text().catch(() => '');
  try {
    const j = JSON.parse(text);
    return new UploadError(res.status, j.code || 'error', j.message || text);
  } catch {
    const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] || 'error';
    const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] || text.slice(0, 200) || res.statusText;
    return new UploadError(res.status, code, message);
  }
}
