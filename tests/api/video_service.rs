//! Videos through the service, on both backends: poster frames from
//! `/thumb` (decoded and checked: the clip is red for 2 s, then blue),
//! `/proxy` from "pending" to a web-playable MP4, the asset description,
//! and what a video the service cannot read, or a service without ffmpeg,
//! answers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mediaflow::storage::{ObjectKey, PutOptions};
use serde_json::Value;

use crate::common::images::{decode, near};
use crate::common::*;
use crate::video::{ffmpeg, red_then_blue};

/// Stores `data` as the `clip` profile's original `id`.
async fn put_clip(app: &TestApp, id: &str, data: Vec<u8>) {
    let shard = mediaflow::storage::keys::Shard::of(&mediaflow::storage::keys::KeyBase::parse(id).unwrap());
    let key = ObjectKey::parse(format!("originals/clips/{}/{id}", shard.as_str())).unwrap();
    let opts = PutOptions { content_type: Some("video/mp4".into()), if_none_match: false };
    app.state.store.put(&key, Bytes::from(data).into(), opts).await.unwrap();
}

/// Asks for the proxy until it is no longer pending (the job runs in the
/// background); returns the last answer.
async fn proxy_when_settled(app: &TestApp, path: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    loop {
        let r = client.get(app.url(path)).send().await.unwrap();
        let pending = r.headers().get("x-proxy-status").is_some_and(|v| v == "pending");
        if !pending || Instant::now() > deadline {
            return r;
        }
        // Polling a condition the job's completion makes true; nothing to subscribe to over HTTP.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn posters_proxies_and_descriptions(backend: Backend) {
    let Some(_) = ffmpeg() else { return };
    let app = spawn_secured(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(red_then_blue(dir.path())).unwrap();
    let id = unique("clip");
    put_clip(&app, &id, clip.clone()).await;

    // The poster: the frame at poster_time (1 s: red), as every size and format.
    let r = app.client.get(app.url(&format!("/thumb/clip/{id}?width=320"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
    assert!(r.headers()["etag"].to_str().unwrap().starts_with('"'));
    let poster = decode(&r.bytes().await.unwrap());
    assert_eq!((poster.width(), poster.height()), (320, 240));
    assert!(near(poster.to_rgba8().get_pixel(160, 120).0, [255, 0, 0], 40), "the frame at 1 s is red");
    let r = app.client.get(app.url(&format!("/thumb/clip/{id}?width=320&format=png"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    // Stored in the variant layout under the profile's thumb_folder.
    assert!(app.state.lifecycle.wait_for_tasks(Duration::from_secs(20)).await);
    let variant = ObjectKey::parse(format!("posters/clips/{id}_320.webp")).unwrap();
    app.state.store.head(&variant).await.expect("the poster variant is stored");

    // The proxy: pending at first (307 to the original, not cached), then a
    // web-playable MP4 served like an original.
    let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let first = client.get(app.url(&format!("/proxy/clip/{id}?format=mp4"))).send().await.unwrap();
    if first.status() == 307 {
        assert_eq!(first.headers()["x-proxy-status"], "pending");
        assert_eq!(first.headers()["cache-control"], "no-store");
        assert!(first.headers()["location"].to_str().unwrap().contains(&format!("/originals/clip/{id}")));
    } else {
        assert_eq!(first.status(), 200, "ready at once (a remux of this small clip can be that fast)");
    }
    let r = proxy_when_settled(&app, &format!("/proxy/clip/{id}?format=mp4")).await;
    assert_eq!(r.status(), 200, "the proxy was made: {:?}", r.headers());
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let proxy = r.bytes().await.unwrap();
    let pos = |tag: &[u8]| proxy.windows(4).position(|w| w == tag).unwrap();
    assert!(pos(b"moov") < pos(b"mdat"), "+faststart: the index comes first");
    let stored = ObjectKey::parse(format!("proxies/clips/{id}.mp4")).unwrap();
    assert_eq!(app.state.store.head(&stored).await.unwrap().size, proxy.len() as u64);
    let ranged = client
        .get(app.url(&format!("/proxy/clip/{id}?format=mp4")))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap(), proxy.slice(0..100));

    // The description: as displayed, with the video's facts and the proxy's state.
    let r = app.client.get(app.url(&format!("/v1/assets/clip/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["profile"], "clip");
    assert_eq!(d["key_base"], id.as_str());
    assert_eq!(d["mime"], "video/mp4");
    assert_eq!(d["size_bytes"], clip.len() as u64);
    assert_eq!((d["width"].as_u64(), d["height"].as_u64()), (Some(320), Some(240)), "{d}");
    assert!((d["duration_s"].as_f64().unwrap() - 4.0).abs() < 0.3, "{d}");
    assert_eq!(d["video_codec"], "h264");
    assert_eq!(d["audio_codec"], "aac");
    assert!((d["frame_rate"].as_f64().unwrap() - 25.0).abs() < 0.01, "{d}");
    assert_eq!(d["proxies"], serde_json::json!({"mp4": "ready"}));
    let hash =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, d["placeholder"].as_str().unwrap()).unwrap();
    let (r, g, b, _) = thumbhash::thumb_hash_to_average_rgba(&hash).unwrap();
    assert!(r > 0.7 && g < 0.3 && b < 0.3, "the placeholder is the red poster: {r} {g} {b}");

    // Deleting the asset deletes the poster and the proxy with it.
    let r = app.client.delete(app.url(&format!("/v1/assets/clip/{id}"))).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.state.store.head(&stored).await.is_err());
    assert!(app.state.store.head(&variant).await.is_err());
    let r = app.client.get(app.url(&format!("/v1/assets/clip/{id}"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
}

async fn what_is_not_a_video_says_so(backend: Backend) {
    let Some(_) = ffmpeg() else { return };
    let app = spawn_secured(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(red_then_blue(dir.path())).unwrap();
    let id = unique("bad");
    // Truncated: the first 30 % of an MP4 whose index is at the end.
    put_clip(&app, &id, clip[..clip.len() * 3 / 10].to_vec()).await;
    let r = app.client.get(app.url(&format!("/thumb/clip/{id}?width=320"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (415, "unsupported_media".into()));
    // Its proxy job fails, and the answer says so (still playable: the original).
    let r = proxy_when_settled(&app, &format!("/proxy/clip/{id}?format=mp4")).await;
    assert_eq!(r.status(), 307);
    assert_eq!(r.headers()["x-proxy-status"], "failed");
    let r = app.client.get(app.url(&format!("/v1/assets/clip/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert!(d["width"].is_null() && d["duration_s"].is_null(), "no facts of an unreadable video: {d}");
    assert_eq!(d["proxies"], serde_json::json!({"mp4": "failed"}));
    // Random bytes.
    let id = unique("noise");
    put_clip(&app, &id, (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()).await;
    let r = app.client.get(app.url(&format!("/thumb/clip/{id}?width=320"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (415, "unsupported_media".into()));
    // No original.
    let r = app.client.get(app.url(&format!("/thumb/clip/{}?width=320", unique("none")))).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
}

both_backends!(posters_proxies_and_descriptions, what_is_not_a_video_says_so);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ffmpeg_video_features_answer_501() {
    let app = spawn_secured_with(Backend::Fs, |c| c.video.ffmpeg_path = Some("/nonexistent/ffmpeg".into())).await;
    let id = unique("clip");
    put_clip(&app, &id, b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec()).await;
    let r = app.client.get(app.url(&format!("/thumb/clip/{id}?width=320"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (501, "not_implemented".into()));
    let r = app.client.get(app.url(&format!("/proxy/clip/{id}?format=mp4"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (501, "not_implemented".into()));
    // The description still answers, without the video's fields.
    let r = app.client.get(app.url(&format!("/v1/assets/clip/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["mime"], "video/mp4");
    assert!(d["width"].is_null() && d.get("duration_s").is_none(), "{d}");
}

/// Waits until `key` exists in `app`'s store.
async fn until_stored(app: &TestApp, key: &ObjectKey, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while app.state.store.head(key).await.is_err() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job queued by an instance that stops before running it is run by the
/// next instance over the same store, with no request asking for it; a
/// lease left by a dead instance is taken over.
async fn proxy_jobs_survive_a_restart(backend: Backend) {
    use mediaflow::config::{ProxyFormat, StorageConfig};
    use mediaflow::video::jobs;
    let Some(_) = ffmpeg() else { return };
    // The first instance has no ffmpeg, so it queues but never runs.
    let first = spawn_secured_with(backend, |c| c.video.ffmpeg_path = Some("/nonexistent/ffmpeg".into())).await;
    let dir = tempfile::tempdir().unwrap();
    let id = unique("restart");
    put_clip(&first, &id, std::fs::read(red_then_blue(dir.path())).unwrap()).await;
    let asset = mediaflow::assets::AssetKey::resolve(&first.state.profiles, "clip", &id, None).unwrap();
    let original = asset.locate_original(&*first.state.store).await.unwrap();
    first.state.videos.enqueue(&asset, &original, ProxyFormat::Mp4).await.unwrap();
    let proxy = ObjectKey::parse(format!("proxies/clips/{id}.mp4")).unwrap();
    assert!(jobs::is_queued(&first.state.store, &proxy).await.unwrap());
    // Its holder died mid-transcode: an expired lease.
    let lease = ObjectKey::internal(mediaflow::storage::InternalKey::ProxyLease(&proxy));
    let expired = serde_json::json!({"owner": "dead-instance", "expires": 1});
    let opts = PutOptions { content_type: Some("application/json".into()), if_none_match: false };
    first.state.store.put(&lease, Bytes::from(expired.to_string()).into(), opts).await.unwrap();
    // `first` stays up (it owns the fs data directory) but runs no jobs.
    let shared = first.state.config.storage.clone();

    let second = spawn_secured_with(backend, |c| {
        if let StorageConfig::Fs { .. } = shared {
            c.storage = shared;
        }
    })
    .await;
    until_stored(&second, &proxy, "the restarted service ran the queued job").await;
    let made = second.state.store.head(&proxy).await.unwrap();
    assert!(made.size > 1000);
    // The job is done: no marker, no lease left behind.
    let deadline = Instant::now() + Duration::from_secs(30);
    while jobs::is_queued(&second.state.store, &proxy).await.unwrap() || second.state.store.head(&lease).await.is_ok() {
        assert!(Instant::now() < deadline, "the job's marker and lease are removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One lease per job: a live one keeps others out, an expired one is taken over.
async fn a_job_lease_has_one_holder(backend: Backend) {
    use mediaflow::video::jobs;
    let (store, _dir) = store(backend).await;
    let proxy = ObjectKey::parse(format!("proxies/clips/{}.mp4", unique("lease"))).unwrap();
    let held = jobs::acquire(&store, &proxy, "instance-a").await.unwrap().expect("a free lease is taken");
    assert!(jobs::acquire(&store, &proxy, "instance-b").await.unwrap().is_none(), "a live lease keeps others out");
    jobs::renew(&store, &held).await.unwrap();
    assert!(jobs::acquire(&store, &proxy, "instance-b").await.unwrap().is_none());
    jobs::release(&store, held).await;
    let b = jobs::acquire(&store, &proxy, "instance-b").await.unwrap().expect("released: free again");
    // B dies; its lease expires; A takes over.
    let lease = ObjectKey::internal(mediaflow::storage::InternalKey::ProxyLease(&proxy));
    let expired = serde_json::json!({"owner": "instance-b", "expires": 1});
    store.put(&lease, Bytes::from(expired.to_string()).into(), PutOptions::default()).await.unwrap();
    let a = jobs::acquire(&store, &proxy, "instance-a").await.unwrap().expect("an expired lease is taken over");
    // B's late release does not free A's lease.
    jobs::release(&store, b).await;
    assert!(jobs::acquire(&store, &proxy, "instance-c").await.unwrap().is_none(), "A still holds it");
    jobs::release(&store, a).await;
}

both_backends!(proxy_jobs_survive_a_restart, a_job_lease_has_one_holder);

/// On the filesystem backend the single PUT passes through the service: a
/// video's proxies are queued when it is stored, before any `/proxy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_upload_queues_its_proxies() {
    let Some(_) = ffmpeg() else { return };
    let app = spawn_secured(Backend::Fs).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(red_then_blue(dir.path())).unwrap();
    let id = unique("up");
    let body = serde_json::json!({"profile": "clip", "key_base": id, "mime": "video/mp4", "size_bytes": clip.len()});
    presign_and_put(&app, &body, clip).await;
    let proxy = ObjectKey::parse(format!("proxies/clips/{id}.mp4")).unwrap();
    until_stored(&app, &proxy, "the proxy is made without being asked for").await;
}
