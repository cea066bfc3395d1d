// Browser uploads through MediaFlow in a real browser (headless Chromium driven
// by playwright-core), on both backends, with both example pages.
//
// The pages come from a static server on one loopback origin; MediaFlow (the
// debug binary, no API key, CORS_ALLOWED_ORIGINS = that origin) and SeaweedFS
// listen on others, so every call is cross-origin as in production. Each page
// uploads a small PNG with a single PUT and a 16.5 MiB PNG as a forced
// multipart upload (3 parts: 8 + 8 + 0.5 MiB), then shows the thumbnails; the
// test checks the <img> decoded, fetches the thumbnail itself and decodes it,
// compares the stored original byte for byte, counts the CORS preflights, and
// keeps a screenshot of each page in target/browser/.
//
//   npm test                         (from examples/browser; scripts/browser-test.sh does the setup)
//   MEDIAFLOW_TEST_S3_ENDPOINT=…     reuse a running SeaweedFS (scripts/seaweedfs.sh's env file)
//   BROWSER_TEST_RTT_MS=50           the browser reaches MediaFlow and the store through a proxy that
//                                    delays each way by half that: the preflight cost over a network
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { serve } from '../serve.mjs';
import { quadrantAt, quadrantPng } from './images.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../..');
const targetDir = path.resolve(repo, process.env.CARGO_TARGET_DIR || 'target');
const BIN = process.env.MEDIAFLOW_BIN || path.join(targetDir, 'debug', 'mediaflow');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = process.env.BROWSER_ARTIFACTS || path.join(targetDir, 'browser');
const RTT_MS = Number(process.env.BROWSER_TEST_RTT_MS || 0);
// Without the background-networking flags Chromium keeps calling out to
// Google's hosts, which a closed network refuses; each launch gets a fresh
// temporary profile from playwright.
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
const PROFILE = 'photo'; // bundled profile: webp thumbnails, part_size 8 MiB
const PART_SIZE = 8 * 1024 * 1024;
const WAIT = { timeout: 90_000 };

fs.mkdirSync(ARTIFACTS, { recursive: true });
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mediaflow-browser-'));
const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn();
  fs.rmSync(work, { recursive: true, force: true });
});

// ---- can the browser run here? --------------------------------------------

let chromium;
let browser;
let skip = false;
try {
  ({ chromium } = await import('playwright-core'));
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  cleanups.push(() => browser.close());
} catch (err) {
  const why = err.message.split('\n')[0];
  // In CI the browser test must run: a skip there would hide a broken setup.
  if (process.env.CI) throw new Error(`browser test cannot run in CI: ${why}`);
  skip = `SKIPPED browser test: ${why}`;
  console.log(`\n${'*'.repeat(78)}\n*** ${skip}\n${'*'.repeat(78)}\n`);
}
if (!skip && !fs.existsSync(BIN)) throw new Error(`${BIN} is missing: run cargo build first`);

// ---- test files -----------------------------------------------------------

const SMALL = { path: path.join(work, 'small.png'), width: 640, height: 480, thumb: [256, 192] };
const BIG = { path: path.join(work, 'big.png'), width: 2400, height: 2400, thumb: [256, 256] };
const MID = { path: path.join(work, 'mid.png'), width: 1800, height: 1800, thumb: [256, 256] };
fs.writeFileSync(SMALL.path, quadrantPng(SMALL.width, SMALL.height));
// Stored, not compressed: 16.5 MiB of real image, 2 full parts and a remainder.
fs.writeFileSync(BIG.path, quadrantPng(BIG.width, BIG.height, 0));
// 9.3 MiB: 2 parts of 5 MiB (the production-shape profile below).
fs.writeFileSync(MID.path, quadrantPng(MID.width, MID.height, 0));
for (const f of [SMALL, BIG, MID]) f.sha256 = sha256(fs.readFileSync(f.path));
assert.ok(fs.statSync(BIG.path).size > 2 * PART_SIZE, 'the multipart file must make at least 2 full parts');

/** A copy of a test file under another name (pages key their results by file name). */
function copyAs(file, name) {
  const p = path.join(work, name);
  fs.copyFileSync(file.path, p);
  return { ...file, path: p };
}

// ---- the pages' origin ----------------------------------------------------

// The pages' server is also "your backend": its presign route adds the API
// key (see `productionShape`), as an application's server would.
let backendPresign = (req, res) => { res.writeHead(503); res.end(); };
const pages = await serve(0, '127.0.0.1', { routes: { '/api/uploads/presign': (req, res) => backendPresign(req, res) } });
cleanups.push(() => new Promise((r) => pages.close(r)));
const ORIGIN = `http://127.0.0.1:${pages.address().port}`;

// ---- summary of the preflights seen (written at the end) -------------------

const measurements = [];
after(() => {
  if (measurements.length === 0) return;
  fs.writeFileSync(path.join(ARTIFACTS, 'preflights.json'), `${JSON.stringify(measurements, null, 2)}\n`);
  console.log(`\nCORS preflights (OPTIONS) per upload, on loopback${RTT_MS ? ` with ${RTT_MS} ms round trips` : ''}:`);
  for (const m of measurements) {
    const what = `${m.upload}${m.presign === 'backend' ? ' (backend presigns)' : ''}`;
    console.log(`  ${m.backend.padEnd(3)} ${m.client.padEnd(6)} ${what.padEnd(28)} ${String(m.puts).padStart(2)} PUTs, ` +
      `${String(m.preflights).padStart(2)} preflights (${Object.entries(m.by_kind).map(([k, v]) => `${k} ${v}`).join(', ')}), ` +
      `each ${m.preflight_median_ms.toFixed(1)} ms (median; max ${m.preflight_max_ms.toFixed(1)}), upload ${m.wall_ms.toFixed(0)} ms`);
  }
});

// ---- the tests ------------------------------------------------------------

for (const backend of ['fs', 's3']) {
  describe(`${backend} backend`, { skip }, () => {
    let mf; // the running MediaFlow: { url } (and s3Env, to start a second one on the same bucket)
    let store; // S3 only

    before(async () => {
      if (backend === 'fs') {
        mf = await startMediaflow(backend, { DATA_DIR: path.join(work, 'data') });
      } else {
        store = await s3Store();
        applyReadmeCorsRule(store, ORIGIN);
        const s3Env = {
          S3_BUCKET: store.bucket, S3_ENDPOINT: store.endpoint, S3_REGION: store.region,
          PUBLIC_S3_ENDPOINT: RTT_MS ? await delayProxy(store.endpoint) : store.endpoint,
          AWS_ACCESS_KEY_ID: store.access, AWS_SECRET_ACCESS_KEY: store.secret,
        };
        mf = await startMediaflow(backend, s3Env);
        mf.s3Env = s3Env;
      }
      // Upload URLs of the fs backend follow the Host the page used: the proxy's.
      if (RTT_MS) mf.url = await delayProxy(mf.url);
    });

    for (const client of ['uppy', 'fetch']) {
      it(`${client}: single PUT and forced multipart upload, thumbnails shown`, WAIT, async () => {
        const { page, net } = await openPage(client, mf);
        const single = await upload(page, client, SMALL, { force: false }, net, backend);
        assert.equal(single.mode, 'single');
        const multi = await upload(page, client, BIG, { force: true }, net, backend);
        assert.equal(multi.mode, 'multipart');
        assert.equal(multi.parts, '3');
        await checkUpload(page, mf, single, SMALL);
        await checkUpload(page, mf, multi, BIG);
        if (client === 'uppy') {
          assert.deepEqual(await page.evaluate(() => window.mediaflowExample.finished), {
            getUploadParameters: 1, createMultipartUpload: 1, signPart: 3, completeMultipartUpload: 1,
          });
        }
        await page.screenshot({ path: path.join(ARTIFACTS, `${backend}-${client}.png`), fullPage: true });
        await page.context().close();
      });
    }

    it('uppy: pause and resume lists the stored parts; removing a file aborts its upload', WAIT, async () => {
      const { page, net } = await openPage('uppy', mf);
      // Pause when the first part is stored and resume at once: Uppy asks
      // listParts which parts the store holds and sends only the others.
      await page.evaluate(() => {
        const { uppy } = window.mediaflowExample;
        uppy.once('s3-multipart:part-uploaded', (file) => {
          uppy.pauseResume(file.id);
          queueMicrotask(() => uppy.pauseResume(file.id));
        });
      });
      const resumed = copyAs(BIG, 'resumed.png');
      const done = await upload(page, 'uppy', resumed, { force: true, paused: true }, net, backend);
      const counts = await page.evaluate(() => ({ calls: window.mediaflowExample.calls, finished: window.mediaflowExample.finished }));
      assert.equal(counts.finished.listParts, 1, JSON.stringify(counts));
      await checkUpload(page, mf, done, resumed);

      // Removing a file mid-upload calls abortMultipartUpload: the store drops the parts.
      await page.evaluate(() => {
        const { uppy } = window.mediaflowExample;
        uppy.once('s3-multipart:part-uploaded', (file) => uppy.removeFile(file.id));
      });
      await page.locator('input.uppy-Dashboard-input:not([webkitdirectory])').setInputFiles(copyAs(BIG, 'removed.png').path);
      await page.click('.uppy-StatusBar-actionBtn--upload');
      await page.waitForFunction(() => window.mediaflowExample.finished.abortMultipartUpload === 1);
      const aborted = await page.evaluate(() => {
        const u = [...window.mediaflowExample.uploads.values()].find((x) => x.keyBase.startsWith('removed-'));
        return { objectKey: u.objectKey, keyBase: u.keyBase, uploadId: u.multipart.upload_id, token: u.multipart.upload_token };
      });
      const parts = await fetch(`${mf.url}/v1/uploads/${encodeURIComponent(aborted.objectKey)}/parts/${aborted.uploadId}?token=${aborted.token}`);
      assert.equal(parts.status, 404);
      assert.equal((await parts.json()).code, 'invalid_upload_id');
      assert.equal((await fetch(`${mf.url}/originals/${PROFILE}/${aborted.keyBase}`)).status, 404);
      await page.screenshot({ path: path.join(ARTIFACTS, `${backend}-uppy-resume-abort.png`), fullPage: true });
      await page.context().close();
    });

    it('errors are readable cross-origin: 400 presign, 403 wrong length, 412 existing key, 422 verification', WAIT, async () => {
      const { page } = await openPage('fetch', mf);
      const out = await page.evaluate(async ({ api, bytes, profile }) => {
        const mf = await import('/src/mediaflow.js');
        const cfg = { api };
        const attempt = (p) => p.then(() => ({ ok: true }), (e) => ({ name: e.name, status: e.status, code: e.code, message: e.message }));
        const png = new File([new Uint8Array(bytes)], 'e.png', { type: 'image/png' });
        const text = new File(['not an image'], 'e.txt', { type: 'text/plain' });
        const res = {};
        res.presign = await attempt(mf.presign(cfg, { file: text, profile, keyBase: mf.keyBaseFor('e') }));
        const { upload } = await mf.presign(cfg, { file: png, profile, keyBase: mf.keyBaseFor('e') });
        const { url, headers } = upload.single;
        // The browser sets Content-Length from the body: one byte short is not what the URL signed.
        res.short = await attempt(mf.putBytes(url, headers, png.slice(0, png.size - 1, 'image/png')));
        res.put = await attempt(mf.putBytes(url, headers, png));
        res.again = await attempt(mf.putBytes(url, headers, png));
        // Bytes that are no image, declared as PNG: complete verifies them and refuses.
        const junk = new File([new Uint8Array(png.size).fill(7)], 'junk.png', { type: 'image/png' });
        const mp = (await mf.presign(cfg, { file: junk, profile, keyBase: mf.keyBaseFor('junk'), multipart: 'force' })).upload.multipart;
        const etag = await mf.putBytes(mp.parts[0].url, mp.parts[0].headers, junk);
        res.complete = await attempt(mf.complete(mp, [{ part_number: 1, etag }]));
        return res;
      }, { api: mf.url, bytes: [...fs.readFileSync(SMALL.path)], profile: PROFILE });
      assert.deepEqual([out.presign.status, out.presign.code], [400, 'mime_not_allowed'], JSON.stringify(out.presign));
      assert.equal(out.short.status, 403, JSON.stringify(out.short));
      assert.ok(out.put.ok, JSON.stringify(out.put));
      assert.equal(out.again.status, 412, JSON.stringify(out.again));
      assert.deepEqual([out.complete.status, out.complete.code], [422, 'upload_verification_failed'], JSON.stringify(out.complete));
      await page.context().close();
    });

    it('production shape: the backend presigns with the API key, the page uses the token for the rest', WAIT, async () => {
      // A second MediaFlow on the same store, with API_KEY and a profile whose
      // part URLs come one per batch: the second part's URL is fetched by the
      // page from presign/parts with the upload token.
      const apiKey = 'browser-test-key-0123456789';
      const profiles = path.join(work, `profiles-${backend}.yaml`);
      fs.writeFileSync(profiles, PRODUCTION_PROFILES);
      const env = { API_KEY: apiKey, STORAGE_CONFIG_PATH: profiles };
      const prod = await startMediaflow(`${backend}-api-key`, backend === 'fs'
        ? { ...env, DATA_DIR: path.join(work, 'data-api-key') }
        : { ...env, ...mf.s3Env });
      if (RTT_MS) prod.url = await delayProxy(prod.url);
      backendPresign = productionShape(prod.url, apiKey);
      for (const client of ['uppy', 'fetch']) {
        const { page, net } = await openPage(client, prod, '&presign=/api/uploads/presign');
        const file = copyAs(MID, `mid-${client}.png`);
        const data = await upload(page, client, file, { force: true }, net, backend, 'backend');
        assert.deepEqual([data.mode, data.parts, data.profile], ['multipart', '2', 'browser']);
        assert.match(data.keyBase, /^app-chosen-/, 'the backend chose the key');
        assert.equal(net.requests().parts, 1, 'the second part URL came from presign/parts');
        await checkUpload(page, prod, data, file);
        await page.screenshot({ path: path.join(ARTIFACTS, `${backend}-${client}-backend-presign.png`), fullPage: true });
        // The page alone cannot presign: MediaFlow wants the key it does not have.
        const direct = await page.evaluate(async (api) => {
          const mf = await import('/src/mediaflow.js');
          const png = new File([new Uint8Array(8)], 'x.png', { type: 'image/png' });
          return mf.presign({ api }, { file: png, profile: 'browser', keyBase: 'x' }).then(() => 'ok', (e) => [e.status, e.code]);
        }, prod.url);
        assert.deepEqual(direct, [401, 'unauthorized']);
        await page.context().close();
      }
    });

    it('a page from an origin not allowed can neither call MediaFlow nor PUT to the store', WAIT, async () => {
      const other = await serve(0);
      try {
        const context = await browser.newContext();
        const page = await context.newPage();
        await page.goto(`http://127.0.0.1:${other.address().port}/fetch.html?api=${encodeURIComponent(mf.url)}`);
        // Presigned from outside the browser (as a backend would): only the PUT is the page's.
        const answer = await (await fetch(`${mf.url}/v1/uploads/presign`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ key_base: `cors-${Date.now()}`, mime: 'image/png', size_bytes: fs.statSync(SMALL.path).size, profile: PROFILE }),
        })).json();
        const out = await page.evaluate(async ({ api, single, bytes }) => {
          const mf = await import('/src/mediaflow.js');
          const attempt = (p) => p.then(() => ({ ok: true }), (e) => ({ name: e.name, message: e.message }));
          const png = new File([new Uint8Array(bytes)], 'e.png', { type: 'image/png' });
          return {
            presign: await attempt(mf.presign({ api }, { file: png, profile: 'photo', keyBase: 'x' })),
            put: await attempt(mf.putBytes(single.url, single.headers, png)),
          };
        }, { api: mf.url, single: answer.upload.single, bytes: [...fs.readFileSync(SMALL.path)] });
        // A CORS refusal is a network error to the page (fetch's TypeError), not a status.
        assert.equal(out.presign.name, 'TypeError', JSON.stringify(out.presign));
        assert.equal(out.put.name, 'TypeError', JSON.stringify(out.put));
        await context.close();
      } finally {
        await new Promise((r) => other.close(r));
      }
    });
  });
}

// ---- production shape -----------------------------------------------------

const PRODUCTION_PROFILES = `profiles:
  browser:
    kind: "image"
    allowed_mimes: ["image/png", "image/jpeg", "image/webp"]
    size_max_bytes: 67108864
    multipart_threshold_mb: 15
    part_size_mb: 5
    initial_batch_size: 1
    max_batch_size: 2
    token_ttl_seconds: 900
    storage_path: "originals/browser/{key_base}"
    enable_sharding: false
    thumb_folder: "thumbnails/browser"
    sizes: ["256"]
    default_size: "256"
    quality: 85
    convert_to: "webp"
`;

/**
 * "Your backend"'s presign route (docs/browser.md): it chooses the profile and
 * key itself, presigns with the API key and returns MediaFlow's answer, plus
 * the key and profile, to the page.
 */
function productionShape(mediaflowUrl, apiKey) {
  let n = 0;
  return async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const { mime, size_bytes, multipart } = JSON.parse(body);
    const key_base = `app-chosen-${Date.now()}-${n++}`;
    const profile = 'browser';
    const answer = await fetch(`${mediaflowUrl}/v1/uploads/presign`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${apiKey}` },
      body: JSON.stringify({ key_base, profile, mime, size_bytes, multipart }),
    });
    res.writeHead(answer.status, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ ...(await answer.json()), key_base, profile }));
  };
}

// ---- helpers: browser -----------------------------------------------------

/** A fresh browser context (empty preflight cache) on one of the example pages, recording its network. */
async function openPage(client, mf, query = '') {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const net = await recordNetwork(context, page);
  await page.goto(`${ORIGIN}/${client}.html?api=${encodeURIComponent(mf.url)}${query}`);
  assert.deepEqual(errors, [], 'the page loads without script errors');
  return { page, net };
}

/**
 * Uploads one file through a page and waits for its result. Returns the result
 * item's data (mode, parts, keyBase, …) and records the preflights it cost.
 */
async function upload(page, client, file, { force, paused = false }, net, backend, presign = 'page') {
  const name = path.basename(file.path);
  await page.locator('input[name=force]').setChecked(force);
  net.reset();
  const t0 = Date.now();
  if (client === 'uppy') {
    await page.locator('input.uppy-Dashboard-input:not([webkitdirectory])').setInputFiles(file.path);
    await page.click('.uppy-StatusBar-actionBtn--upload');
  } else {
    await page.setInputFiles('#upload-form input[name=files]', file.path);
    await page.click('#upload-form button[type=submit]');
  }
  const item = page.locator(`#results li[data-file="${name}"]:is([data-state=done], [data-state=error])`);
  await item.waitFor(WAIT);
  const wallMs = Date.now() - t0;
  const data = await item.evaluate((el) => ({ ...el.dataset, text: el.textContent }));
  assert.equal(data.state, 'done', `${client} upload of ${name}: ${data.text}`);
  if (client === 'uppy') await page.click('.uppy-StatusBar-actionBtn--done'); // clears the Dashboard for the next file
  const pf = net.preflights();
  const byKind = {};
  for (const p of pf) byKind[p.kind] = (byKind[p.kind] ?? 0) + 1;
  measurements.push({
    rtt_ms: RTT_MS, backend, client, presign, upload: paused ? 'resumed' : data.mode, file: name, puts: net.puts(), preflights: pf.length, by_kind: byKind,
    preflight_median_ms: median(pf.map((p) => p.ms)), preflight_max_ms: Math.max(0, ...pf.map((p) => p.ms)), wall_ms: wallMs,
  });
  if (paused) return data; // parts cut short by the pause are sent again
  // Each presigned URL is unique, so each PUT needs its own preflight.
  assert.equal(byKind.part ?? 0, data.mode === 'multipart' ? Number(data.parts) : 0, JSON.stringify(byKind));
  assert.equal(byKind.single ?? 0, data.mode === 'single' ? 1 : 0, JSON.stringify(byKind));
  return data;
}

/** The thumbnail decoded in the page and here; the stored original equals the file. */
async function checkUpload(page, mf, data, file) {
  const img = page.locator(`#results li[data-key-base="${data.keyBase}"] img.thumb`);
  await img.evaluate((el) => el.decode()); // rejects when the image does not load or decode
  const natural = await img.evaluate((el) => [el.naturalWidth, el.naturalHeight]);
  assert.deepEqual(natural, file.thumb, `${data.file}: <img> natural size`);

  const res = await fetch(await img.getAttribute('src'));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/webp');
  const thumb = await decodeWebp(Buffer.from(await res.arrayBuffer()));
  assert.deepEqual([thumb.width, thumb.height], file.thumb, `${data.file}: decoded thumbnail size`);
  for (const [fx, fy] of [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]]) {
    const x = Math.floor(fx * thumb.width);
    const y = Math.floor(fy * thumb.height);
    const i = (y * thumb.width + x) * 4;
    const got = [...thumb.data.slice(i, i + 3)];
    const want = quadrantAt(x, y, thumb.width, thumb.height);
    assert.ok(got.every((v, k) => Math.abs(v - want[k]) <= 12), `${data.file}: thumbnail pixel (${x},${y}) is ${got}, want ${want}`);
  }

  const original = await fetch(`${mf.url}/originals/${data.profile}/${data.keyBase}`);
  assert.equal(original.status, 200);
  assert.equal(sha256(Buffer.from(await original.arrayBuffer())), file.sha256, `${data.file}: stored original differs`);
}

/** CORS preflights (OPTIONS) and PUTs the page sends, from Chromium's DevTools protocol. */
async function recordNetwork(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  let open = new Map();
  let preflights = [];
  let puts = 0;
  let requests = {};
  cdp.on('Network.requestWillBeSent', ({ requestId, request, timestamp }) => {
    const kind = kindOf(request.url);
    if (request.method === 'OPTIONS') open.set(requestId, { kind, t0: timestamp });
    else requests[kind] = (requests[kind] ?? 0) + 1;
    if (request.method === 'PUT') puts++;
  });
  const finish = ({ requestId, timestamp }) => {
    const p = open.get(requestId);
    if (p) preflights.push({ kind: p.kind, ms: (timestamp - p.t0) * 1000 });
    open.delete(requestId);
  };
  cdp.on('Network.loadingFinished', finish);
  cdp.on('Network.loadingFailed', finish);
  return {
    reset() { open = new Map(); preflights = []; puts = 0; requests = {}; },
    preflights: () => preflights,
    requests: () => requests,
    puts: () => puts,
  };
}

function kindOf(url) {
  const u = new URL(url);
  if (u.origin === ORIGIN) return u.pathname.startsWith('/api/') ? 'backend' : 'page';
  if (u.searchParams.has('partNumber')) return 'part';
  if (u.pathname.includes('/complete/')) return 'complete';
  if (u.pathname.includes('/abort/')) return 'abort';
  if (u.pathname.endsWith('/presign/parts')) return 'parts';
  if (u.pathname.endsWith('/presign')) return 'presign';
  if (u.pathname.includes('/parts/')) return 'list';
  return 'single';
}

let webp;
async function decodeWebp(buf) {
  if (!webp) {
    const require = createRequire(import.meta.url);
    const { default: decode, init } = await import('@jsquash/webp/decode.js');
    await init(await WebAssembly.compile(fs.readFileSync(require.resolve('@jsquash/webp/codec/dec/webp_dec.wasm'))));
    webp = decode;
  }
  return webp(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
}

// ---- helpers: services ----------------------------------------------------

/** Starts target/debug/mediaflow on a free loopback port, without API key, allowing the pages' origin. */
async function startMediaflow(name, env) {
  const cwd = fs.mkdtempSync(path.join(work, `${name}-`)); // no stray .env is read
  const log = fs.createWriteStream(path.join(ARTIFACTS, `mediaflow-${name}.log`));
  const child = spawn(BIN, [], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH, PORT: '0', BIND_ADDR: '127.0.0.1', LOG_FORMAT: 'json', RUST_LOG: 'info',
      CORS_ALLOWED_ORIGINS: ORIGIN, ...env,
    },
  });
  child.stderr.pipe(log);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const addr = await new Promise((resolve, reject) => {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      log.write(`${line}\n`);
      try {
        const v = JSON.parse(line);
        if (v.message === 'listening') resolve(v.addr);
      } catch { /* not JSON */ }
    });
    exited.then((code) => reject(new Error(`mediaflow (${name}) exited with ${code} before listening: see ${log.path}`)));
    setTimeout(() => reject(new Error(`mediaflow (${name}) did not listen within 60 s: see ${log.path}`)), 60_000).unref();
  });
  cleanups.push(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  const url = `http://${addr}`;
  const ready = await fetch(`${url}/ready`);
  assert.equal(ready.status, 200, `mediaflow (${name}) /ready: ${await ready.text()}`);
  return { url };
}

/**
 * The S3 store: the SeaweedFS named by MEDIAFLOW_TEST_S3_* (scripts/test.sh
 * starts one), else one of our own from scripts/seaweedfs.sh. A bucket of its
 * own, so its CORS rule touches no other test.
 */
async function s3Store() {
  let env = process.env;
  if (!env.MEDIAFLOW_TEST_S3_ENDPOINT) {
    const dir = path.join(work, 'seaweedfs');
    fs.mkdirSync(dir);
    const script = path.join(repo, 'scripts', 'seaweedfs.sh');
    execFileSync(script, ['start', dir], { stdio: ['ignore', 'inherit', 'inherit'] });
    cleanups.push(() => execFileSync(script, ['stop', dir], { stdio: 'inherit' }));
    env = Object.fromEntries(fs.readFileSync(path.join(dir, 'env'), 'utf8').split('\n')
      .map((l) => /^export (\w+)=(.*)$/.exec(l)).filter(Boolean).map((m) => [m[1], m[2]]));
  }
  const store = {
    endpoint: env.MEDIAFLOW_TEST_S3_ENDPOINT, access: env.MEDIAFLOW_TEST_S3_ACCESS_KEY,
    secret: env.MEDIAFLOW_TEST_S3_SECRET_KEY, region: env.MEDIAFLOW_TEST_S3_REGION || 'us-east-1',
    bucket: 'mediaflow-browser-test',
  };
  const made = s3(store, 'PUT', `/${store.bucket}`);
  assert.ok([200, 409].includes(made.status), `create bucket: ${made.status} ${made.body}`);
  return store;
}

/**
 * The bucket CORS rule README.md documents ("Browser uploads"), for the pages'
 * origin, put with PutBucketCors; then checked: a preflight from the page's
 * origin is allowed, one from elsewhere is not (SeaweedFS allows every origin
 * on a bucket without a rule, so this shows the rule is what the test uses).
 */
function applyReadmeCorsRule(store, origin) {
  const rule = {
    AllowedOrigins: [origin], AllowedMethods: ['PUT'], AllowedHeaders: ['Content-Type', 'If-None-Match'],
    ExposeHeaders: ['ETag'], MaxAgeSeconds: 3600,
  };
  const tag = (name, v) => `<${name}>${v}</${name}>`;
  const xml = `<CORSConfiguration><CORSRule>${[
    ...rule.AllowedOrigins.map((v) => tag('AllowedOrigin', v)), ...rule.AllowedMethods.map((v) => tag('AllowedMethod', v)),
    ...rule.AllowedHeaders.map((v) => tag('AllowedHeader', v)), ...rule.ExposeHeaders.map((v) => tag('ExposeHeader', v)),
    tag('MaxAgeSeconds', rule.MaxAgeSeconds),
  ].join('')}</CORSRule></CORSConfiguration>`;
  const md5 = createHash('md5').update(xml).digest('base64');
  const put = s3(store, 'PUT', `/${store.bucket}?cors=`, { body: xml, headers: { 'Content-MD5': md5, 'Content-Type': 'application/xml' } });
  assert.equal(put.status, 200, `PutBucketCors: ${put.body}`);
  const preflight = (from) => execFileSync('curl', ['-s', '-o', '/dev/null', '-D', '-', '-X', 'OPTIONS',
    '-H', `Origin: ${from}`, '-H', 'Access-Control-Request-Method: PUT', '-H', 'Access-Control-Request-Headers: content-type,if-none-match',
    `${store.endpoint}/${store.bucket}/probe`]).toString().toLowerCase();
  assert.match(preflight(origin), new RegExp(`access-control-allow-origin: ${origin}`));
  assert.doesNotMatch(preflight('http://127.0.0.1:1'), /access-control-allow-origin/);
}

/** One S3 request signed with SigV4 by curl (as scripts/seaweedfs.sh does). */
function s3(store, method, pathAndQuery, { body, headers = {} } = {}) {
  const args = ['-s', '-o', '-', '-w', '\n%{http_code}', '-X', method, '--aws-sigv4', `aws:amz:${store.region}:s3`,
    '--user', `${store.access}:${store.secret}`, '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD'];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  if (body != null) args.push('--data-binary', '@-');
  args.push(`${store.endpoint}${pathAndQuery}`);
  const out = execFileSync('curl', args, { input: body ?? '' }).toString();
  const nl = out.lastIndexOf('\n');
  return { status: Number(out.slice(nl + 1)), body: out.slice(0, nl) };
}

/**
 * A TCP proxy on loopback that holds every chunk for half of RTT_MS each way:
 * each request/answer exchange (a preflight, a PUT) then costs at least one
 * round trip, as over a network. Returns its URL.
 */
async function delayProxy(targetUrl) {
  const target = new URL(targetUrl);
  const half = RTT_MS / 2;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    const pipe = (from, to) => {
      from.on('data', (chunk) => setTimeout(() => to.write(chunk), half));
      from.on('end', () => setTimeout(() => to.end(), half));
      from.on('error', () => to.destroy());
    };
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${server.address().port}`;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}
