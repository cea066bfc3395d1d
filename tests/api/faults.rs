//! Faults: the store going away and coming back, clients that vanish or
//! stall mid-request.

use std::time::{Duration, Instant};

use crate::common::images;
use crate::common::{API_KEY, Backend, PrivateSeaweed, error_of, spawn_config, spawn_secured_with, unique};
use bytes::Bytes;
use mediaflow::config::{Config, Secret, StorageConfig};
use mediaflow::storage::keys::{KeyBase, Shard};
use mediaflow::storage::{ObjectKey, PutOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn avatar_key(id: &str) -> ObjectKey {
    let shard = Shard::of(&KeyBase::parse(id).unwrap());
    ObjectKey::parse(format!("originals/avatars/{}/{id}", shard.as_str())).unwrap()
}

/// Polls `check` until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_goes_away_and_comes_back() {
    let Some(weed) = PrivateSeaweed::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_fs(dir.path().join("unused"));
    config.storage = StorageConfig::S3(weed.settings.clone());
    config.api_key = Some(Secret::new(API_KEY));
    let app = spawn_config(config, dir).await;
    let id = unique("f");
    let opts = PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false };
    app.state.store.put(&avatar_key(&id), Bytes::from(images::jpeg(400, 300)).into(), opts).await.unwrap();
    let thumb = app.url(&format!("/thumb/avatar/{id}?width=128"));
    let first = app.client.get(&thumb).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].clone();

    weed.kill();
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (502, "storage_error".into()));
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    // What it can still serve, it serves: the process is up, hot variants come from memory.
    assert_eq!(app.client.get(app.url("/health")).send().await.unwrap().status(), 200);
    let cached = app.client.get(&thumb).send().await.unwrap();
    assert_eq!(cached.status(), 200);
    assert_eq!(cached.headers()["etag"], etag);
    let r = app
        .client
        .post(app.url("/v1/uploads/presign"))
        .bearer_auth(API_KEY)
        .json(&json!({"key_base": unique("p"), "mime": "video/mp4", "size_bytes": 20_000_000, "profile": "video", "multipart": "force"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (502, "storage_error".into()), "multipart presign needs the store");

    weed.restart();
    let ready = eventually(Duration::from_secs(30), || async {
        app.client.get(app.url("/ready")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "ready again once the store is back");
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_upload_leaves_nothing() {
    let app = spawn_secured_with(Backend::Fs, |_| {}).await;
    let id = unique("v");
    let size = 2_000_000usize;
    let r = app
        .client
        .post(app.url("/v1/uploads/presign"))
        .bearer_auth(API_KEY)
        .json(&json!({"key_base": id, "mime": "image/jpeg", "size_bytes": size, "profile": "avatar"}))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = r.json().await.unwrap();
    let url = answer["upload"]["single"]["url"].as_str().unwrap();
    let path = url.strip_prefix(&app.base).unwrap();
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: {size}\r\nIf-None-Match: *\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![0xffu8; size / 2]).await.unwrap();
    drop(conn);

    let data = match &app.state.config.storage {
        StorageConfig::Fs { data_dir } => data_dir.clone(),
        _ => unreachable!(),
    };
    let tmp = data.join(".mediaflow/tmp");
    let clean = eventually(Duration::from_secs(10), || async {
        std::fs::read_dir(&tmp).map(|d| d.count() == 0).unwrap_or(false)
    })
    .await;
    assert!(clean, "the partial body's temp file is removed");
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 404, "no partial object");
    // The URL still works for a complete upload afterwards.
    let put = app
        .client
        .put(url)
        .header("content-type", "image/jpeg")
        .header("if-none-match", "*")
        .body(vec![0xffu8; size])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out() {
    let app = spawn_secured_with(Backend::Fs, |c| c.http.client_idle_timeout = Duration::from_secs(1)).await;
    // Headers that never finish (slowloris): the server hangs up.
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ").await.unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "the connection is closed after the idle timeout");

    // A body that stalls: the upload is abandoned and nothing is stored.
    let id = unique("s");
    let r = app
        .client
        .post(app.url("/v1/uploads/presign"))
        .bearer_auth(API_KEY)
        .json(&json!({"key_base": id, "mime": "image/jpeg", "size_bytes": 1000, "profile": "avatar"}))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = r.json().await.unwrap();
    let path = answer["upload"]["single"]["url"].as_str().unwrap().strip_prefix(&app.base).unwrap().to_owned();
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\nIf-None-Match: *\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[0xffu8; 10]).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(14), "the server gave up on the stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(app.state.store.head(&avatar_key(&id)).await.is_err(), "nothing stored");
}

/// Sends `head` and `body` on a raw connection, half-closes it
/// (shutdown(SHUT_WR), as `curl -T` and some SDKs do once the body is sent),
/// and reads the answer.
async fn half_closed_request(app: &crate::common::TestApp, head: &str, body: &[u8]) -> String {
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server answers a half-closed request (got {:?})", String::from_utf8_lossy(&answer));
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_upload_is_answered_and_leaves_no_temp_file() {
    let app = spawn_secured_with(Backend::Fs, |_| {}).await;
    let presign = |body: serde_json::Value| {
        app.client.post(app.url("/v1/uploads/presign")).bearer_auth(API_KEY).json(&body).send()
    };
    // A single PUT: the whole body, then the client's write side closes.
    let id = unique("h");
    let data = images::jpeg(64, 48);
    let r = presign(json!({"key_base": id, "mime": "image/jpeg", "size_bytes": data.len(), "profile": "avatar"}));
    let answer: serde_json::Value = r.await.unwrap().json().await.unwrap();
    let path = answer["upload"]["single"]["url"].as_str().unwrap().strip_prefix(&app.base).unwrap().to_owned();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nIf-None-Match: *\r\n\r\n",
        data.len()
    );
    let text = half_closed_request(&app, &head, &data).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data, "stored");
    assert_eq!(crate::common::temp_entries(&app), Vec::<std::path::PathBuf>::new());

    // A multipart part URL, the same way.
    let r = presign(
        json!({"key_base": unique("hp"), "mime": "video/mp4", "size_bytes": 1000, "profile": "clip", "multipart": "force"}),
    );
    let answer: serde_json::Value = r.await.unwrap().json().await.unwrap();
    let part = &answer["upload"]["multipart"]["parts"][0];
    let path = part["url"].as_str().unwrap().strip_prefix(&app.base).unwrap().to_owned();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n");
    let text = half_closed_request(&app, &head, &[7u8; 1000]).await;
    assert!(text.starts_with("HTTP/1.1 200") && text.to_ascii_lowercase().contains("etag:"), "{text}");
    assert_eq!(crate::common::temp_entries(&app), Vec::<std::path::PathBuf>::new());

    // Half-closed before the whole body: a clear 400, nothing stored, nothing left.
    let id = unique("hs");
    let r = presign(json!({"key_base": id, "mime": "image/jpeg", "size_bytes": 5000, "profile": "avatar"}));
    let answer: serde_json::Value = r.await.unwrap().json().await.unwrap();
    let path = answer["upload"]["single"]["url"].as_str().unwrap().strip_prefix(&app.base).unwrap().to_owned();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\nIf-None-Match: *\r\n\r\n"
    );
    let text = half_closed_request(&app, &head, &[0xff; 1000]).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(app.state.store.head(&avatar_key(&id)).await.is_err(), "nothing stored");
    assert_eq!(crate::common::temp_entries(&app), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_store_fails_fast_with_502() {
    let Some(weed) = PrivateSeaweed::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_fs(dir.path().join("unused"));
    config.storage = StorageConfig::S3(weed.settings.clone());
    config.api_key = Some(Secret::new(API_KEY));
    let app = spawn_config(config, dir).await;
    assert_eq!(app.state.config.http.request_timeout, Duration::from_secs(60), "the default REQUEST_TIMEOUT");
    let id = unique("z");
    let opts = PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false };
    app.state.store.put(&avatar_key(&id), Bytes::from(images::jpeg(40, 30)).into(), opts).await.unwrap();

    /// Thaws the store however the test ends.
    struct Thaw<'a>(&'a PrivateSeaweed);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            self.0.freeze(false);
        }
    }
    weed.freeze(true);
    let thaw = Thaw(&weed);
    let started = Instant::now();
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(error_of(r).await, (502, "storage_error".into()));
    assert!(took < Duration::from_secs(20), "a frozen store is a quick 502, not a hang ({took:?})");
    eprintln!("frozen store: GET /originals answered 502 after {took:?}");
    drop(thaw);
    let back = eventually(Duration::from_secs(30), || async {
        app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(back, "serving again once the store answers");
}
