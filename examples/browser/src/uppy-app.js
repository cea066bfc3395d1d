// Browser uploads to MediaFlow with Uppy's AwsS3 plugin and custom functions.
//
// MediaFlow, not the page, decides single or multipart and the part size, and
// Uppy cuts a file into parts before it calls createMultipartUpload. So the
// presign happens first, in a preprocessor (one call per file, to MediaFlow in
// development or to your backend in production), and the plugin's functions
// then hand out that answer:
//
//   shouldUseMultipart       the answer has `upload.multipart`
//   getChunkSize             its `part_size` (each part URL binds that length)
//   getUploadParameters      single: `upload.single` → {method, url, headers}
//   createMultipartUpload    multipart: {uploadId: upload_id, key: object_key}
//   signPart                 the part's URL from the answer; later batches from
//                            POST /v1/uploads/presign/parts (with the token)
//   listParts                GET /v1/uploads/{key}/parts/{id}?token=
//   completeMultipartUpload  POST the answer's `complete` URL (carries the token)
//   abortMultipartUpload     DELETE the answer's `abort` URL (carries the token)
import Uppy from '@uppy/core';
import Dashboard from '@uppy/dashboard';
import AwsS3 from '@uppy/aws-s3';
import '@uppy/core/css/style.min.css';
import '@uppy/dashboard/css/style.min.css';
import * as mf from './mediaflow.js';

const cfg = mf.settings();
document.querySelector('#api').textContent = cfg.api;
const options = document.querySelector('#options');
const results = document.querySelector('#results');

/** Per Uppy file id: the presign answer and what the page derived from it. */
const uploads = new Map();
/** Uppy calls getChunkSize with the file's Blob, not the file: the part size by Blob. */
const partSizes = new WeakMap();
/** How often each custom function was called, and how often it succeeded (the test reads both). */
const calls = {};
const finished = {};
const counted = (name, fn) => async (...args) => {
  calls[name] = (calls[name] ?? 0) + 1;
  const out = await fn(...args);
  finished[name] = (finished[name] ?? 0) + 1;
  return out;
};

const uppy = new Uppy({ restrictions: { allowedFileTypes: ['image/*'] } });
uppy.use(Dashboard, {
  inline: true,
  target: '#uppy',
  height: 340,
  proudlyDisplayPoweredByUppy: false,
  note: 'Images; uploaded straight to the store through MediaFlow presigned URLs',
});
uppy.use(AwsS3, {
  shouldUseMultipart: (file) => uploads.get(file.id)?.multipart != null,
  getChunkSize: (blob) => partSizes.get(blob),
  getUploadParameters: counted('getUploadParameters', async (file) => {
    const { single } = uploads.get(file.id);
    return { method: single.method, url: single.url, headers: mf.browserHeaders(single.headers) };
  }),
  createMultipartUpload: counted('createMultipartUpload', async (file) => {
    const u = uploads.get(file.id);
    return { uploadId: u.multipart.upload_id, key: u.objectKey };
  }),
  signPart: counted('signPart', async (file, { partNumber }) => {
    const part = await partUrl(uploads.get(file.id), partNumber);
    return { method: part.method, url: part.url, headers: mf.browserHeaders(part.headers) };
  }),
  listParts: counted('listParts', async (file) => {
    const u = uploads.get(file.id);
    const parts = await mf.listParts(cfg, u.objectKey, u.multipart);
    return parts.map((p) => ({ PartNumber: p.part_number, ETag: p.etag, Size: p.size }));
  }),
  completeMultipartUpload: counted('completeMultipartUpload', async (file, { parts }) => {
    const u = uploads.get(file.id);
    await mf.complete(u.multipart, parts.map((p) => ({ part_number: p.PartNumber, etag: p.ETag })));
    return { location: mf.thumbUrl(cfg, u.profile, u.keyBase) };
  }),
  abortMultipartUpload: counted('abortMultipartUpload', async (file) => {
    await mf.abort(uploads.get(file.id).multipart);
  }),
});

// Runs on every upload and retry: a retried file gets a fresh presign, since a
// failed multipart upload has been aborted.
uppy.addPreProcessor(async (fileIDs) => {
  const profile = options.elements.profile.value;
  const multipart = options.elements.force.checked ? 'force' : 'auto';
  await Promise.all(fileIDs.map(async (id) => {
    const file = uppy.getFile(id);
    try {
      calls.presign = (calls.presign ?? 0) + 1;
      const answer = await mf.presign(cfg, {
        file: { type: file.type, size: file.size }, profile, keyBase: mf.keyBaseFor(file.name), multipart,
      });
      const u = {
        profile: answer.profile, keyBase: answer.key_base, objectKey: answer.object_key, ...answer.upload,
        urls: new Map(), fetching: null,
      };
      if (u.multipart) {
        for (const p of u.multipart.parts) u.urls.set(p.part_number, p);
        partSizes.set(file.data, u.multipart.part_size);
      }
      uploads.set(id, u);
    } catch (err) {
      // Marks this file failed; the uploader skips it, the others go on.
      uppy.emit('upload-error', file, err);
    }
  }));
});

/** A part's presigned URL: from the presign answer, else one presign/parts call for the next batch. */
async function partUrl(u, n) {
  const mp = u.multipart;
  while (!u.urls.has(n)) {
    const count = Math.min(Math.max(1, mp.batch_info.parts_in_batch), mp.total_parts - n + 1);
    u.fetching ??= mf.presignParts(cfg, u.objectKey, mp, n, count)
      .then((b) => b.parts.forEach((p) => u.urls.set(p.part_number, p)))
      .finally(() => { u.fetching = null; });
    await u.fetching;
  }
  return u.urls.get(n);
}

uppy.on('upload-success', (file) => {
  const u = uploads.get(file.id);
  const li = result(file);
  Object.assign(li.dataset, {
    state: 'done', mode: u.multipart ? 'multipart' : 'single', objectKey: u.objectKey,
    keyBase: u.keyBase, profile: u.profile, parts: u.multipart?.total_parts ?? 1,
  });
  li.querySelector('span').textContent = `done (${li.dataset.mode})`;
  const img = document.createElement('img');
  img.className = 'thumb';
  img.alt = `thumbnail of ${file.name}`;
  img.src = mf.thumbUrl(cfg, u.profile, u.keyBase);
  li.append(img);
});

uppy.on('upload-error', (file, err) => {
  const li = result(file);
  li.dataset.state = 'error';
  li.dataset.status = err.status ?? err.source?.status ?? '';
  li.dataset.code = err.code ?? '';
  li.querySelector('span').textContent = `failed: ${err.message}`;
});

function result(file) {
  let li = results.querySelector(`li[data-id="${CSS.escape(file.id)}"]`);
  if (!li) {
    li = document.createElement('li');
    li.dataset.id = file.id;
    li.dataset.file = file.name;
    const title = document.createElement('strong');
    title.textContent = file.name;
    li.append(title, ' ', document.createElement('span'));
    results.append(li);
  }
  return li;
}

window.mediaflowExample = { uppy, calls, finished, uploads };
