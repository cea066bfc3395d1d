//! The client (`mediaflow upload`, `download`, `delete`) against an
//! in-process server on both backends: single and multipart uploads, rolling
//! URL batches, retries, an interrupted upload resumed or aborted, clear
//! errors, downloads and deletes; and the real binary: its output, exit
//! codes, and memory that does not grow with the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{API_KEY, Backend, TestApp, spawn_secured, unique};
use mediaflow::client::state::{ResumeState, StateFile};
use mediaflow::client::{
    AbortOptions, ClientError, DeleteOptions, DownloadOptions, Fault, Multipart, ProgressMode, Retry, UploadOptions,
    Uploaded, abort, delete, download, upload,
};
use serde_json::Value;

const MIB: usize = 1024 * 1024;
const BIN: &str = env!("CARGO_BIN_EXE_mediaflow");

/// Bytes that sniff as MP4 (an ftyp box) followed by a pattern.
fn mp4_like(len: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    v.extend((0..len - v.len()).map(|i| (i * 7 % 251) as u8));
    v
}

/// A folder for input files and one for resume files, kept apart so a test
/// can tell where the resume file went.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
}

/// Options for `file` against `app`, quiet, with fast retries.
fn options(app: &TestApp, files: &Files, file: &Path, profile: &str, key_base: &str) -> UploadOptions {
    let mut opts = UploadOptions::new(file, app.base.clone(), profile);
    opts.key_base = Some(key_base.to_owned());
    opts.api_key = Some(API_KEY.to_owned());
    opts.progress = ProgressMode::Quiet;
    opts.cache_dir = Some(files.cache());
    opts.retry = Retry { attempts: 3, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) };
    opts
}

/// A fault hook that records every (part, attempt) it is asked about and
/// answers with `decide`.
type Calls = Arc<Mutex<Vec<(u32, u32)>>>;

fn recording(
    decide: impl Fn(u32, u32) -> Option<Fault> + Send + Sync + 'static,
) -> (mediaflow::client::FaultHook, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let hook = Arc::new(move |part, attempt| {
        seen.lock().unwrap().push((part, attempt));
        decide(part, attempt)
    });
    (hook, calls)
}

fn parts_tried(calls: &Calls) -> Vec<u32> {
    let mut parts: Vec<u32> = calls.lock().unwrap().iter().map(|(p, _)| *p).collect();
    parts.sort();
    parts
}

async fn get(app: &TestApp, url: &str) -> reqwest::Response {
    app.client.get(url).send().await.unwrap()
}

/// Asserts the uploaded original reads back as `data`.
async fn assert_stored(app: &TestApp, done: &Uploaded, data: &[u8], mime: &str) {
    let r = get(app, &done.original_url).await;
    assert_eq!(r.status(), 200, "{}", done.original_url);
    assert_eq!(r.headers()["content-type"], mime);
    let got = r.bytes().await.unwrap();
    assert!(got.len() == data.len() && got == data, "the original is the file's bytes");
}

async fn single_upload_and_thumbnail(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    let data = crate::common::images::png(640, 480);
    let file = files.write("photo.png", &data);
    let id = unique("p");
    let done = upload(&options(&app, &files, &file, "avatar", &id)).await.unwrap();
    assert_eq!((done.method, done.parts, done.parts_sent, done.resumed), ("single", 1, 1, false));
    assert_eq!(done.mime, "image/png");
    assert!(done.object_key.starts_with("originals/avatars/") && done.object_key.ends_with(&id), "{done:?}");
    assert_eq!(done.original_url, format!("{}/originals/avatar/{id}", app.base));
    assert_eq!(done.thumbnail_url, Some(format!("{}/thumb/avatar/{id}", app.base)));
    assert_eq!((&done.poster_url, &done.proxy_urls), (&None, &None), "an image has no poster or proxies");
    assert_stored(&app, &done, &data, "image/png").await;
    let thumb = get(&app, &format!("{}?width=128", done.thumbnail_url.as_deref().unwrap())).await;
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/webp");
    assert!(StateFile::find(&file, Some(&files.cache())).is_none(), "single uploads keep no resume file");

    // The same id again: refused before anything is sent, naming the URL
    // the first upload printed (not another form of it).
    let again = upload(&options(&app, &files, &file, "avatar", &id)).await.unwrap_err();
    let ClientError::AlreadyExists { url, .. } = &again else { panic!("{again}") };
    assert_eq!(url, &done.original_url);
    assert!(again.to_string().contains("never overwrites"), "{again}");

    // A profile whose keys carry the extension: its URLs do, everywhere.
    let done = upload(&options(&app, &files, &file, "scan", &id)).await.unwrap();
    assert_eq!(done.original_url, format!("{}/originals/scan/{id}.png", app.base));
    let again = upload(&options(&app, &files, &file, "scan", &id)).await.unwrap_err();
    let ClientError::AlreadyExists { url, .. } = &again else { panic!("{again}") };
    assert_eq!(url, &done.original_url);
}

async fn multipart_upload_12_mb(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    // `clip`: 5 MiB parts, 1 URL in the presign answer, at most 2 per batch.
    let data = mp4_like(12 * 1000 * 1000);
    let file = files.write("clip.mp4", &data);
    let id = unique("m");
    let (hook, calls) = recording(|_, _| None);
    let mut opts = options(&app, &files, &file, "clip", &id);
    opts.fault = Some(hook);
    let done = upload(&opts).await.unwrap();
    assert_eq!((done.method, done.parts, done.parts_sent, done.resumed), ("multipart", 3, 3, false));
    assert_eq!(parts_tried(&calls), [1, 2, 3], "each part sent once");
    assert_stored(&app, &done, &data, "video/mp4").await;
    assert!(StateFile::find(&file, Some(&files.cache())).is_none(), "the resume file goes once completed");
}

async fn rolling_batches_retries_and_refreshed_urls(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    // 6 parts: more than `clip`'s max_batch_size of 2, so the client learns
    // the limit from batch_size_exceeded and asks in pairs.
    let data = mp4_like(26 * MIB);
    let file = files.write("long.mp4", &data);
    let (hook, calls) = recording(|part, attempt| match (part, attempt) {
        (2, 0) | (2, 1) => Some(Fault::Transient),
        (4, 0) => Some(Fault::Forbidden),
        _ => None,
    });
    let mut opts = options(&app, &files, &file, "clip", &unique("r"));
    opts.fault = Some(hook);
    opts.parallel = 3;
    let done = upload(&opts).await.unwrap();
    assert_eq!((done.parts, done.parts_sent), (6, 6));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.iter().filter(|(p, _)| *p == 2).count(), 3, "two network failures, then success: {calls:?}");
    assert_eq!(calls.iter().filter(|(p, _)| *p == 4).count(), 2, "a 403, a fresh URL, success: {calls:?}");
    assert_stored(&app, &done, &data, "video/mp4").await;

    // Failures beyond the retry budget stop the upload, resumably.
    let file = files.write("flaky.mp4", &mp4_like(11 * MIB));
    let mut opts = options(&app, &files, &file, "clip", &unique("f"));
    opts.fault = Some(Arc::new(|part, _| (part == 2).then_some(Fault::Transient)));
    let err = upload(&opts).await.unwrap_err();
    let ClientError::Incomplete { stored, total: 3, source, .. } = &err else { panic!("{err}") };
    assert!(matches!(**source, ClientError::Simulated { fault: Fault::Transient, .. }), "{err}");
    assert_eq!(*stored, 2, "parts 1 and 3 landed: {err}");
    assert_eq!(err.exit_code(), 3);
}

async fn interrupted_upload_resumes(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    let data = mp4_like(12 * 1000 * 1000);
    let file = files.write("movie.mp4", &data);
    let id = unique("i");

    // Stop at part 3, as a kill after two parts would.
    let mut opts = options(&app, &files, &file, "clip", &id);
    opts.fault = Some(Arc::new(|part, _| (part == 3).then_some(Fault::Interrupt)));
    let err = upload(&opts).await.unwrap_err();
    let ClientError::Incomplete { stored: 2, total: 3, source, state_file } = &err else { panic!("{err}") };
    assert!(matches!(**source, ClientError::Interrupted));
    assert_eq!(state_file, &files.dir.path().join("movie.mp4.mediaflow-upload.json"), "beside the input");
    assert!(err.to_string().contains("run the same command again to resume"), "{err}");
    let r = get(&app, &format!("{}/originals/clip/{id}", app.base)).await;
    assert_eq!(r.status(), 404, "nothing completed");

    // The resume file claims part 3 too; the server's list says otherwise and wins.
    let state_path = state_file.clone();
    let mut state: ResumeState = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state.parts.keys().copied().collect::<Vec<_>>(), [1, 2]);
    state.parts.insert(3, "\"not-really-stored\"".into());
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    // Re-run the same command (no --resume): only part 3 is sent.
    let (hook, calls) = recording(|_, _| None);
    let mut opts = options(&app, &files, &file, "clip", &id);
    opts.fault = Some(hook);
    let done = upload(&opts).await.unwrap();
    assert_eq!((done.method, done.parts, done.parts_sent, done.resumed), ("multipart", 3, 1, true));
    assert_eq!(parts_tried(&calls), [3]);
    assert_stored(&app, &done, &data, "video/mp4").await;
    assert!(!state_path.exists(), "the resume file goes once completed");
}

/// Ctrl-C while the server completes (every part sent), then the same
/// command again: the server finished the complete without the client, and
/// the rerun learns so instead of starting over.
async fn a_complete_interrupted_is_finished_by_a_rerun(backend: Backend) {
    let (app, faulty) = crate::common::spawn_faulty(backend, |f| {
        *f.complete_delay.lock().unwrap() = Duration::from_millis(800);
    })
    .await;
    let files = Files::new();
    let data = mp4_like(6 * 1000 * 1000);
    let file = files.write("movie.mp4", &data);
    let id = unique("ci");
    let opts = options(&app, &files, &file, "clip", &id);
    let first = tokio::spawn({
        let opts = opts.clone();
        async move { upload(&opts).await }
    });
    faulty.complete_started.notified().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled(), "interrupted while the server completes");
    assert!(StateFile::find(&file, Some(&files.cache())).is_some(), "the resume file stays");
    // The server finishes the complete on its own; the rerun comes after.
    let key = mediaflow::storage::ObjectKey::parse(format!("originals/clips/{}/{id}", shard_of(&id))).unwrap();
    let mut stored = false;
    for _ in 0..100 {
        if app.state.store.head(&key).await.is_ok() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "the server completed the upload without the client");

    let (hook, calls) = recording(|_, _| None);
    let mut again = opts.clone();
    again.fault = Some(hook);
    let done = upload(&again).await.unwrap();
    assert_eq!((done.method, done.parts, done.parts_sent, done.resumed), ("multipart", 2, 0, true));
    assert!(calls.lock().unwrap().is_empty(), "no part sent again");
    assert_stored(&app, &done, &data, "video/mp4").await;
    assert!(StateFile::find(&file, Some(&files.cache())).is_none(), "the resume file goes once completed");
}

/// An interrupted upload whose key another upload took meanwhile: the rerun
/// is told so (409) and drops its resume file, as the upload is spent.
async fn a_rerun_after_another_upload_took_the_key_is_told_so(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    let data = mp4_like(12 * 1000 * 1000);
    let file = files.write("movie.mp4", &data);
    let id = unique("k");
    let mut opts = options(&app, &files, &file, "clip", &id);
    opts.fault = Some(Arc::new(|part, _| (part == 3).then_some(Fault::Interrupt)));
    let err = upload(&opts).await.unwrap_err();
    let ClientError::Incomplete { state_file, .. } = &err else { panic!("{err}") };
    let state_file = state_file.clone();

    let other_files = Files::new();
    let other = other_files.write("other.mp4", &mp4_like(6 * 1000 * 1000));
    upload(&options(&app, &other_files, &other, "clip", &id)).await.unwrap();

    let err = upload(&options(&app, &files, &file, "clip", &id)).await.unwrap_err();
    assert_eq!((err.code(), err.status()), (Some("conflict"), Some(409)), "{err}");
    assert!(!state_file.exists(), "the spent upload's resume file is gone");
    let r = get(&app, &format!("{}/originals/clip/{id}", app.base)).await;
    assert_eq!(r.bytes().await.unwrap().len(), 6 * 1000 * 1000, "the other upload's object stays");
}

fn shard_of(id: &str) -> String {
    let key_base = mediaflow::storage::keys::KeyBase::parse(id).unwrap();
    mediaflow::storage::keys::Shard::of(&key_base).as_str().to_owned()
}

async fn server_errors_read_clearly(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    let file = files.write("clip.mp4", &mp4_like(1000));
    let err = upload(&options(&app, &files, &file, "avatar", "v1")).await.unwrap_err();
    assert_eq!((err.code(), err.status(), err.exit_code()), (Some("mime_not_allowed"), Some(400), 1));
    let text = err.to_string();
    assert!(text.starts_with("the server refused the presign: mime type 'video/mp4' is not allowed"), "{text}");
    assert!(text.ends_with("[mime_not_allowed, HTTP 400]"), "{text}");

    // A 401 says what to type, not which header to send.
    let mut opts = options(&app, &files, &file, "clip", "v1");
    opts.api_key = Some("wrong".into());
    let err = upload(&opts).await.unwrap_err();
    assert_eq!(err.code(), Some("unauthorized"), "{err}");
    let text = err.to_string();
    assert!(
        text.ends_with(
            "Hint: the server refused the API key: check --api-key or MEDIAFLOW_API_KEY (it must be the server's API_KEY)"
        ),
        "{text}"
    );
    opts.api_key = None;
    let text = upload(&opts).await.unwrap_err().to_string();
    assert!(
        text.ends_with("Hint: this server requires its API key: pass --api-key KEY or set MEDIAFLOW_API_KEY"),
        "{text}"
    );
    assert!(!text.contains("Bearer"), "{text}");
    let err = upload(&options(&app, &files, &file, "nope", "v1")).await.unwrap_err();
    assert!(err.to_string().contains("unknown profile 'nope'"), "{err}");

    // Sizes read as sizes (the server's exact numbers stay).
    let mut big = crate::common::images::png(64, 48);
    big.resize(6 * MIB, 0);
    let file = files.write("big.png", &big);
    let err = upload(&options(&app, &files, &file, "avatar", "b1")).await.unwrap_err();
    assert_eq!(err.code(), Some("size_too_large"), "{err}");
    assert!(err.to_string().contains("exceeds the limit of 5242880 bytes (6 MiB > 5 MiB)"), "{err}");

    // `--server` without a scheme is http://; one that cannot be a base URL is refused.
    let file = files.write("p.png", &crate::common::images::png(64, 48));
    let mut opts = options(&app, &files, &file, "avatar", &unique("n"));
    opts.server = app.base.trim_start_matches("http://").to_owned();
    let done = upload(&opts).await.unwrap();
    assert!(done.original_url.starts_with(&app.base), "{done:?}");
    opts.server = format!("ftp://{}", opts.server);
    let err = upload(&opts).await.unwrap_err();
    assert!(matches!(err, ClientError::BadServer { .. }), "{err}");
    assert_eq!(err.exit_code(), 2);
}

async fn multipart_can_be_forced_or_turned_off(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    // `clip` goes multipart above 5 MiB.
    let small = mp4_like(1000 * 1000);
    let file = files.write("small.mp4", &small);
    let mut opts = options(&app, &files, &file, "clip", &unique("f"));
    opts.multipart = Multipart::Force;
    let done = upload(&opts).await.unwrap();
    assert_eq!((done.method, done.parts), ("multipart", 1));
    assert_stored(&app, &done, &small, "video/mp4").await;

    let large = mp4_like(12 * 1000 * 1000);
    let file = files.write("large.mp4", &large);
    let mut opts = options(&app, &files, &file, "clip", &unique("o"));
    opts.multipart = Multipart::Off;
    let done = upload(&opts).await.unwrap();
    assert_eq!((done.method, done.parts), ("single", 1));
    assert_stored(&app, &done, &large, "video/mp4").await;
}

/// An interrupted upload, aborted: the store drops its parts and the resume
/// file goes; with its token expired the API key aborts it; one the server
/// no longer knows only has its file removed.
async fn an_interrupted_upload_is_aborted(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    let file = files.write("movie.mp4", &mp4_like(12 * 1000 * 1000));
    let interrupt = |id: &str| {
        let mut opts = options(&app, &files, &file, "clip", id);
        opts.fault = Some(Arc::new(|part, _| (part == 3).then_some(Fault::Interrupt)));
        opts
    };
    let parts_listed = |state: &ResumeState, token: &str| {
        let url = app.url(&format!("/v1/uploads/{}/parts/{}", state.object_key.replace('/', "%2F"), state.upload_id));
        let req = app.client.get(url).header("x-upload-token", token.to_owned());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let mut ab = AbortOptions::new(&file);
    ab.cache_dir = Some(files.cache());

    let id = unique("a");
    assert!(matches!(upload(&interrupt(&id)).await, Err(ClientError::Incomplete { .. })));
    let state_file = StateFile::find(&file, Some(&files.cache())).unwrap();
    let state = state_file.load().unwrap();
    let saved = std::fs::read(state_file.path()).unwrap();
    assert_eq!(parts_listed(&state, &state.upload_token).await, 200);

    // Arguments that are not the interrupted upload's are refused.
    ab.profile = Some("avatar".into());
    let err = abort(&ab).await.unwrap_err();
    assert!(err.to_string().contains(&format!("--profile clip --key-base {id}")), "{err}");
    ab.profile = Some("clip".into());
    ab.server = Some(app.base.trim_start_matches("http://").to_owned());
    let done = abort(&ab).await.unwrap();
    assert_eq!(
        (done.status, done.key_base.as_str(), done.upload_id.as_str()),
        ("aborted", id.as_str(), state.upload_id.as_str())
    );
    assert_eq!(done.resume_file, state_file.path());
    assert!(!state_file.path().exists(), "the resume file is removed");
    assert_eq!(parts_listed(&state, &state.upload_token).await, 404, "the store dropped the parts");

    // Nothing left to abort.
    let err = abort(&ab).await.unwrap_err();
    assert!(matches!(err, ClientError::NothingToAbort { .. }), "{err}");
    assert!(err.to_string().starts_with("--abort: there is no interrupted upload of"), "{err}");

    // The same resume file again: the server no longer knows the upload.
    std::fs::write(state_file.path(), &saved).unwrap();
    let done = abort(&ab).await.unwrap();
    assert_eq!(done.status, "gone");
    assert!(!state_file.path().exists());

    // A token the server no longer accepts: the API key aborts it.
    let id = unique("t");
    assert!(upload(&interrupt(&id)).await.is_err());
    let state_file = StateFile::find(&file, Some(&files.cache())).unwrap();
    let mut state = state_file.load().unwrap();
    let good_token = state.upload_token.clone();
    state.upload_token = "forged.token".into();
    state.abort.url = state.abort.url.replace(&good_token, "forged.token");
    state_file.save(&state).unwrap();
    ab.key_base = None;
    let err = abort(&ab).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "no API key: {err}");
    assert!(err.to_string().contains("pass --api-key KEY or set MEDIAFLOW_API_KEY"), "{err}");
    assert!(state_file.path().exists(), "kept while the upload is still open");
    ab.api_key = Some(API_KEY.into());
    assert_eq!(abort(&ab).await.unwrap().status, "aborted");
    assert_eq!(parts_listed(&state, &good_token).await, 404);
}

/// `download` streams an original or a thumbnail to a file, never over an
/// existing one unless forced, and leaves nothing behind on failure;
/// `delete` removes the asset with its variants.
async fn download_and_delete(backend: Backend) {
    let app = spawn_secured(backend).await;
    let files = Files::new();
    let data = crate::common::images::png(640, 480);
    let file = files.write("photo.png", &data);
    let id = unique("d");
    upload(&options(&app, &files, &file, "avatar", &id)).await.unwrap();

    let out = files.dir.path().join("copy.png");
    let mut opts = DownloadOptions::new(app.base.trim_start_matches("http://"), "avatar", &id);
    opts.output = Some(out.clone());
    opts.progress = ProgressMode::Quiet;
    let done = download(&opts).await.unwrap();
    assert_eq!((done.size_bytes, done.content_type.as_str()), (data.len() as u64, "image/png"));
    assert_eq!(done.url, format!("{}/originals/avatar/{id}", app.base));
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let err = download(&opts).await.unwrap_err();
    assert!(matches!(err, ClientError::OutputExists(_)), "{err}");
    opts.force = true;
    download(&opts).await.unwrap();

    opts.width = Some(128);
    opts.output = Some(files.dir.path().join("thumb.webp"));
    let done = download(&opts).await.unwrap();
    assert_eq!(done.content_type, "image/webp");
    let thumb = crate::common::images::decode(&std::fs::read(files.dir.path().join("thumb.webp")).unwrap());
    assert_eq!((thumb.width(), thumb.height()), (128, 96));

    let mut missing = opts.clone();
    missing.id = unique("none");
    missing.width = None;
    missing.output = Some(files.dir.path().join("missing.png"));
    let err = download(&missing).await.unwrap_err();
    assert_eq!((err.status(), err.exit_code()), (Some(404), 1), "{err}");
    let left: Vec<_> = std::fs::read_dir(files.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().contains("missing")), "nothing left behind: {left:?}");

    let mut del = DeleteOptions {
        server: app.base.clone(),
        profile: "avatar".into(),
        key_base: id.clone(),
        shard: None,
        api_key: None,
        retry: Retry::default(),
    };
    let err = delete(&del).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("pass --api-key KEY or set MEDIAFLOW_API_KEY"), "{err}");
    del.api_key = Some(API_KEY.into());
    let done = delete(&del).await.unwrap();
    assert_eq!(
        (done.status.as_str(), done.profile.as_str(), done.key_base.as_str()),
        ("deleted", "avatar", id.as_str())
    );
    assert!(done.objects_deleted >= 1, "{done:?}");
    assert_eq!(get(&app, &format!("{}/originals/avatar/{id}", app.base)).await.status(), 404);
    let err = delete(&del).await.unwrap_err();
    assert_eq!((err.status(), err.exit_code()), (Some(404), 1), "{err}");
}

/// Videos get their poster and proxy URLs, images their thumbnail, from
/// what `GET /v1/profiles` says of the profile (the bundled profiles:
/// `video` makes mp4 and webm proxies).
async fn videos_get_poster_and_proxy_urls(backend: Backend) {
    let app = crate::common::spawn_secured_with(backend, |c| {
        c.profiles_source = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/config/profiles.yaml").into());
    })
    .await;
    let files = Files::new();
    let file = files.write("movie.mp4", &mp4_like(100_000));
    let id = unique("v");
    let done = upload(&options(&app, &files, &file, "video", &id)).await.unwrap();
    assert_eq!(done.thumbnail_url, None);
    assert_eq!(done.poster_url, Some(format!("{}/thumb/video/{id}", app.base)));
    let proxy = |f: &str| format!("{}/proxy/video/{id}?format={f}", app.base);
    assert_eq!(done.proxy_urls, Some(vec![proxy("mp4"), proxy("webm")]));
    let file = files.write("photo.png", &crate::common::images::png(64, 48));
    let done = upload(&options(&app, &files, &file, "photo", &id)).await.unwrap();
    assert_eq!(done.thumbnail_url, Some(format!("{}/thumb/photo/{id}", app.base)));
    assert_eq!((done.poster_url, done.proxy_urls), (None, None));
}

both_backends!(
    single_upload_and_thumbnail,
    multipart_upload_12_mb,
    rolling_batches_retries_and_refreshed_urls,
    interrupted_upload_resumes,
    a_complete_interrupted_is_finished_by_a_rerun,
    a_rerun_after_another_upload_took_the_key_is_told_so,
    server_errors_read_clearly,
    multipart_can_be_forced_or_turned_off,
    an_interrupted_upload_is_aborted,
    download_and_delete,
    videos_get_poster_and_proxy_urls,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_file_problems_are_explained() {
    let app = spawn_secured(Backend::Fs).await;
    let files = Files::new();
    let data = mp4_like(11 * MIB);
    let file = files.write("a.mp4", &data);
    let id = unique("s");

    let mut opts = options(&app, &files, &file, "clip", &id);
    opts.resume = true;
    let err = upload(&opts).await.unwrap_err();
    assert!(err.to_string().starts_with("--resume: there is no interrupted upload of"), "{err}");

    let mut opts = options(&app, &files, &file, "clip", &id);
    opts.fault = Some(Arc::new(|part, _| (part == 2).then_some(Fault::Interrupt)));
    opts.parallel = 1;
    assert!(matches!(upload(&opts).await, Err(ClientError::Incomplete { stored: 1, .. })));

    // Other arguments: refused, naming the ones that would resume it.
    let err = upload(&options(&app, &files, &file, "clip", "other")).await.unwrap_err();
    assert!(err.to_string().contains(&format!("--profile clip --key-base {id}")), "{err}");

    // A token the server no longer accepts: the old upload is abandoned and a new one made.
    let state_file = StateFile::find(&file, None).unwrap();
    let mut state = state_file.load().unwrap();
    let good_token = state.upload_token.clone();
    state.upload_token = "forged.token".into();
    state_file.save(&state).unwrap();
    let done = upload(&options(&app, &files, &file, "clip", &id)).await.unwrap();
    assert_eq!((done.resumed, done.parts_sent), (false, 3));
    assert_stored(&app, &done, &data, "video/mp4").await;
    // ...and the abandoned one was aborted with the API key.
    let key = done.object_key.replace('/', "%2F");
    let r = app
        .client
        .get(app.url(&format!("/v1/uploads/{key}/parts/{}", state.upload_id)))
        .header("x-upload-token", good_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A file changed since its upload was interrupted is not resumed.
    let file = files.write("b.mp4", &data);
    let mut opts = options(&app, &files, &file, "clip", &unique("c"));
    opts.fault = Some(Arc::new(|part, _| (part == 2).then_some(Fault::Interrupt)));
    opts.parallel = 1;
    assert!(upload(&opts).await.is_err());
    files.write("b.mp4", &mp4_like(11 * MIB + 1));
    opts.fault = None;
    let err = upload(&opts).await.unwrap_err();
    assert!(err.to_string().contains("changed since its upload was interrupted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_file_falls_back_to_the_cache_folder() {
    let app = spawn_secured(Backend::Fs).await;
    let files = Files::new();
    // No sibling file can have this name plus the suffix (NAME_MAX), even as root.
    let file = files.write(&format!("{}.mp4", "n".repeat(240)), &mp4_like(11 * MIB));
    let mut opts = options(&app, &files, &file, "clip", &unique("n"));
    opts.fault = Some(Arc::new(|part, _| (part == 2).then_some(Fault::Interrupt)));
    let err = upload(&opts).await.unwrap_err();
    let ClientError::Incomplete { state_file, .. } = &err else { panic!("{err}") };
    assert!(state_file.starts_with(files.cache()), "{}", state_file.display());
    opts.fault = None;
    let done = upload(&opts).await.unwrap();
    assert!(done.resumed);
    assert!(!state_file.exists());
}

/// Runs `mediaflow upload ARGS --server BASE` against `app` and returns
/// (exit code, stdout, stderr).
async fn run_bin(app: &TestApp, files: &Files, args: &[&str]) -> (i32, String, String) {
    let args: Vec<&str> = ["upload"].iter().chain(args).chain(&["--server", &app.base]).copied().collect();
    run_cmd(files, &args).await
}

/// Runs `mediaflow ARGS` in `files`' folder, with the test API key.
async fn run_cmd(files: &Files, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("MEDIAFLOW_API_KEY", API_KEY)
        .env("XDG_CACHE_HOME", files.cache())
        .env_remove("API_KEY")
        .current_dir(files.dir.path())
        .output()
        .await
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_uploads_prints_and_fails_clearly() {
    let app = spawn_secured(Backend::Fs).await;
    let files = Files::new();
    files.write("holiday photo.jpg", &crate::common::images::jpeg(800, 600));

    let (code, stdout, stderr) = run_bin(&app, &files, &["holiday photo.jpg", "--profile", "avatar", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let done: Value = serde_json::from_str(&stdout).unwrap();
    // The documented fields of an image, no more and no fewer (docs/client.md: a stable interface).
    let mut keys: Vec<&str> = done.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "asset",
            "key_base",
            "method",
            "mime",
            "object_key",
            "original_url",
            "parts",
            "parts_sent",
            "profile",
            "resumed",
            "size_bytes",
            "thumbnail_url"
        ],
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert_eq!(done["key_base"], "holiday_photo", "from the file name");
    assert_eq!(done["mime"], "image/jpeg");
    assert_eq!(done["method"], "single");
    assert_eq!(done["thumbnail_url"], format!("{}/thumb/avatar/holiday_photo", app.base));
    // The service's description of what was stored.
    assert_eq!((done["asset"]["width"].as_u64(), done["asset"]["height"].as_u64()), (Some(800), Some(600)), "{stdout}");
    assert!(done["asset"]["placeholder"].as_str().is_some_and(|p| !p.is_empty()), "{stdout}");
    let thumb = get(&app, done["thumbnail_url"].as_str().unwrap()).await;
    assert_eq!((thumb.status().as_u16(), thumb.headers()["content-type"].to_str().unwrap()), (200, "image/webp"));
    // Not a terminal: plain progress lines on stderr, ending at 100%.
    assert!(stderr.lines().last().is_some_and(|l| l.starts_with("mediaflow: ") && l.contains("(100%)")), "{stderr}");

    // Text output, quiet, multipart.
    files.write("clip.mp4", &mp4_like(12 * MIB));
    let (code, stdout, stderr) = run_bin(&app, &files, &["clip.mp4", "--profile", "clip", "--quiet"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "--quiet: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("object_key: originals/clips/") && lines[0].ends_with("/clip"), "{stdout}");
    assert_eq!(lines[1], format!("original:   {}/originals/clip/clip", app.base));
    // A video: its poster (a thumbnail of the video) and its proxy. These
    // bytes only look like an MP4, so there is no size line: ffprobe cannot read them.
    assert_eq!(lines[2], format!("poster:     {}/thumb/clip/clip", app.base));
    assert_eq!(lines[3], format!("proxy:      {}/proxy/clip/clip?format=mp4", app.base));
    assert_eq!(lines.len(), 4, "{stdout}");

    // A server error: one sentence on stderr, nothing on stdout, exit 1.
    let (code, stdout, stderr) = run_bin(&app, &files, &["clip.mp4", "--profile", "avatar", "--key-base", "x"]).await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim_end(),
        "mediaflow upload: the server refused the presign: mime type 'video/mp4' is not allowed for profile \
         'avatar' (allowed: image/jpeg, image/png, image/webp) [mime_not_allowed, HTTP 400]"
    );
    let (code, _, stderr) = run_bin(&app, &files, &["clip.mp4", "--profile", "clip", "--resume"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("--resume: there is no interrupted upload"), "{stderr}");
    let (code, _, stderr) = run_bin(&app, &files, &["missing.jpg", "--profile", "avatar"]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("mediaflow upload: cannot read missing.jpg: "), "{stderr}");
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Uploads `name` with the real binary and returns its peak RSS in KiB.
async fn upload_peak_kib(app: &TestApp, files: &Files, name: &str) -> u64 {
    let mut child = tokio::process::Command::new(BIN)
        .args(["upload", name, "--profile", "clip", "--quiet", "--parallel", "4", "--server", &app.base])
        .env("MEDIAFLOW_API_KEY", API_KEY)
        .env("XDG_CACHE_HOME", files.cache())
        .current_dir(files.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // The high-water mark only grows: the last reading before exit is the peak.
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(status.success());
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_streams_parts_from_disk() {
    // The server runs in this process; the client is the child measured.
    let app = spawn_secured(Backend::Fs).await;
    let files = Files::new();
    let size = 96 * MIB;
    files.write("small.mp4", &mp4_like(6 * MIB));
    files.write("big.mp4", &mp4_like(size));
    let small = upload_peak_kib(&app, &files, "small.mp4").await;
    let big = upload_peak_kib(&app, &files, "big.mp4").await;
    let r = get(&app, &format!("{}/originals/clip/big", app.base)).await;
    assert_eq!(r.headers()["content-length"], size.to_string().as_str());
    // Memory does not grow with the file: 16 times the bytes, about the same
    // peak. Four 5 MiB parts held in memory would add 20 MiB.
    let growth = big.saturating_sub(small) / 1024;
    assert!(
        growth < 10,
        "peak RSS {} MiB for 96 MiB vs {} MiB for 6 MiB: parts are not streamed",
        big / 1024,
        small / 1024
    );
}

/// The binary: no scheme in `--server`, the wait for the completion named,
/// durations and sizes readable, `--abort`, `download` and `delete` with
/// their output and exit codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_downloads_deletes_and_aborts() {
    let app = spawn_secured(Backend::Fs).await;
    let files = Files::new();
    let server = app.base.trim_start_matches("http://").to_owned();
    files.write("clip.mp4", &mp4_like(12 * MIB));
    let (code, stdout, stderr) =
        run_cmd(&files, &["upload", "clip.mp4", "--profile", "clip", "--server", &server]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("original:   {}/originals/clip/clip", app.base)), "{stdout}");
    // Not a terminal: a plain line says what the full bar waits for.
    let lines: Vec<&str> = stderr.lines().collect();
    let waiting = lines.iter().position(|l| *l == "mediaflow: 12 MiB sent; completing and verifying…");
    assert_eq!(waiting, Some(lines.len() - 2), "{stderr}");
    let last = lines[lines.len() - 1];
    assert!(last.starts_with("mediaflow: 12 MiB of 12 MiB (100%), "), "{stderr}");
    let took = last.rsplit_once(", done in ").map(|(_, t)| t).unwrap_or_default();
    let number = took.trim_end_matches(" ms").trim_end_matches(" s");
    assert!(number != took && number.parse::<f64>().is_ok(), "a duration in ms or s: {last}");

    // Downloads: under the server's name, never over a file.
    let (code, _, stderr) = run_cmd(&files, &["download", "clip", "--profile", "clip", "--server", &server]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim_end(),
        "mediaflow download: clip.mp4 already exists: pass --force to overwrite it, or -o another name"
    );
    let (code, stdout, stderr) =
        run_cmd(&files, &["download", "clip", "--profile", "clip", "--server", &server, "-o", "copy.mp4", "-q"]).await;
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "copy.mp4 (12 MiB, video/mp4)\n", ""));
    assert_eq!(std::fs::read(files.dir.path().join("copy.mp4")).unwrap(), mp4_like(12 * MIB));
    files.write("pic.jpg", &crate::common::images::jpeg(400, 300));
    let (code, _, stderr) =
        run_bin(&app, &files, &["pic.jpg", "--profile", "avatar", "--key-base", "shot", "-q"]).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) =
        run_cmd(&files, &["download", "shot", "--profile", "avatar", "--server", &server, "--width", "128", "--json"])
            .await;
    assert_eq!(code, 0);
    let done: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((done["file"].as_str(), done["content_type"].as_str()), (Some("shot_128.webp"), Some("image/webp")));
    let thumb = crate::common::images::decode(&std::fs::read(files.dir.path().join("shot_128.webp")).unwrap());
    assert_eq!(thumb.width(), 128);
    let (code, _, stderr) = run_cmd(&files, &["download", "nothing", "--profile", "avatar", "--server", &server]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("mediaflow download: the server refused the download: "), "{stderr}");
    assert!(stderr.trim_end().ends_with("[not_found, HTTP 404]"), "{stderr}");

    // Delete: objects_deleted, then a 404.
    let (code, stdout, stderr) = run_cmd(&files, &["delete", "shot", "--profile", "avatar", "--server", &server]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("deleted avatar/shot: objects_deleted "), "{stdout}");
    let (code, _, stderr) =
        run_cmd(&files, &["delete", "shot", "--profile", "avatar", "--server", &server, "--json"]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("mediaflow delete: the server refused the delete: "), "{stderr}");

    // --abort: the interrupted upload recorded beside the file, then nothing.
    let movie = files.write("movie.mp4", &mp4_like(12 * 1000 * 1000));
    let mut opts = options(&app, &files, &movie, "clip", "movie");
    opts.fault = Some(Arc::new(|part, _| (part == 3).then_some(Fault::Interrupt)));
    assert!(upload(&opts).await.is_err());
    let (code, stdout, stderr) = run_bin(&app, &files, &["movie.mp4", "--abort"]).await;
    assert_eq!(code, 0, "{stderr}");
    // The resume file is named as the user named the file: relative to where they are.
    assert_eq!(
        stdout.trim_end(),
        format!(
            "aborted the interrupted upload of movie.mp4 to {} (profile clip, key base movie); \
             removed movie.mp4.mediaflow-upload.json",
            app.base
        )
    );
    assert!(!files.dir.path().join("movie.mp4.mediaflow-upload.json").exists());
    let (code, _, stderr) = run_bin(&app, &files, &["movie.mp4", "--abort"]).await;
    assert_eq!(code, 1);
    assert!(stderr.starts_with("mediaflow upload: --abort: there is no interrupted upload of movie.mp4"), "{stderr}");

    // A --server that cannot be a base URL: a bad command line.
    let (code, _, stderr) = run_cmd(&files, &["upload", "clip.mp4", "--profile", "clip", "--server", "ftp://x"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("--server 'ftp://x' is not a usable base URL"), "{stderr}");
}
