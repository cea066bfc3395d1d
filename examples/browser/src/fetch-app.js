// Browser uploads to MediaFlow with plain fetch: no library, no build step.
//
// presign → single PUT, or multipart: PUT each part (its URL from the presign
// answer, later batches from presign/parts) → complete; abort on failure.
// Then show the thumbnail.
import * as mf from './mediaflow.js';

const cfg = mf.settings();
const PARALLEL_PARTS = 4;

const form = document.querySelector('#upload-form');
const results = document.querySelector('#results');
document.querySelector('#api').textContent = cfg.api;

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const files = [...form.elements.files.files];
  const profile = form.elements.profile.value;
  const multipart = form.elements.force.checked ? 'force' : 'auto';
  form.elements.files.value = '';
  await Promise.all(files.map((file) => uploadOne(file, profile, multipart)));
});

async function uploadOne(file, profile, multipart) {
  const item = addResult(file.name);
  try {
    item.status('presigning');
    const answer = await mf.presign(cfg, { file, profile, keyBase: mf.keyBaseFor(file.name), multipart });
    const { single, multipart: mp } = answer.upload;
    if (single) {
      item.set({ mode: 'single', objectKey: answer.object_key });
      item.status('uploading');
      await mf.putBytes(single.url, single.headers, file);
    } else {
      item.set({ mode: 'multipart', objectKey: answer.object_key, parts: mp.total_parts });
      try {
        const parts = await uploadParts(file, answer.object_key, mp, item);
        item.status('completing and verifying');
        await mf.complete(mp, parts);
      } catch (err) {
        // Frees the parts now instead of when the store's lifecycle rule expires them.
        await mf.abort(mp).catch(() => {});
        throw err;
      }
    }
    item.done(answer.profile, answer.key_base, mf.thumbUrl(cfg, answer.profile, answer.key_base));
  } catch (err) {
    item.fail(err);
  }
}

/** PUTs every part, a few at a time; returns `[{part_number, etag}]` for complete. */
async function uploadParts(file, objectKey, mp, item) {
  const urls = new Map(mp.parts.map((p) => [p.part_number, p]));
  const batch = Math.max(1, mp.batch_info.parts_in_batch);
  let fetching = null;
  async function partUrl(n) {
    while (!urls.has(n)) {
      // One presign/parts call at a time; it brings the next `batch` URLs.
      fetching ??= mf.presignParts(cfg, objectKey, mp, n, Math.min(batch, mp.total_parts - n + 1))
        .then((b) => b.parts.forEach((p) => urls.set(p.part_number, p)))
        .finally(() => { fetching = null; });
      await fetching;
    }
    return urls.get(n);
  }

  const etags = new Array(mp.total_parts);
  let next = 1;
  let uploaded = 0;
  let failed = false;
  async function worker() {
    while (next <= mp.total_parts && !failed) {
      const n = next++;
      const part = await partUrl(n);
      const start = (n - 1) * mp.part_size;
      const body = file.slice(start, Math.min(start + mp.part_size, file.size));
      etags[n - 1] = { part_number: n, etag: await mf.putBytes(part.url, part.headers, body) };
      item.status(`uploaded part ${++uploaded} of ${mp.total_parts}`);
    }
  }
  const run = () => worker().catch((err) => { failed = true; throw err; });
  await Promise.all(Array.from({ length: Math.min(PARALLEL_PARTS, mp.total_parts) }, run));
  return etags;
}

function addResult(name) {
  const li = document.createElement('li');
  li.dataset.file = name;
  li.dataset.state = 'started';
  const title = document.createElement('strong');
  title.textContent = name;
  const text = document.createElement('span');
  li.append(title, ' ', text);
  results.append(li);
  return {
    status(s) { text.textContent = s; },
    set(data) { Object.assign(li.dataset, data); },
    done(profile, keyBase, src) {
      const img = document.createElement('img');
      img.className = 'thumb';
      img.alt = `thumbnail of ${name}`;
      img.src = src;
      li.dataset.keyBase = keyBase;
      li.dataset.profile = profile;
      li.dataset.state = 'done';
      text.textContent = `done (${li.dataset.mode})`;
      li.append(img);
    },
    fail(err) {
      li.dataset.state = 'error';
      li.dataset.status = err.status ?? '';
      li.dataset.code = err.code ?? '';
      text.textContent = `failed: ${err.message}`;
    },
  };
}
