//! The HTTP foundation in process: originals (headers, ranges, conditionals,
//! shards, sniffing), health and readiness, and the JSON error shape.

use crate::common::{Backend, TestApp, spawn_app, unique};
use axum::body::Body;
use bytes::Bytes;
use mediaflow::storage::keys::{KeyBase, Shard};
use mediaflow::storage::{ObjectKey, PutOptions};
use serde_json::Value;
use tower::ServiceExt;

/// A real 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d,
    0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Stores `data` as the avatar original of `key_base` and returns its key.
async fn put_avatar(app: &TestApp, key_base: &str, data: &[u8], content_type: Option<&str>) -> ObjectKey {
    let kb = KeyBase::parse(key_base).unwrap();
    let key = ObjectKey::parse(format!("originals/avatars/{}/{key_base}", Shard::of(&kb).as_str())).unwrap();
    let opts = PutOptions { content_type: content_type.map(str::to_owned), if_none_match: false };
    app.state.store.put(&key, Bytes::copy_from_slice(data).into(), opts).await.unwrap();
    key
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json", "errors are JSON");
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (status, body["code"].as_str().unwrap().to_owned())
}

async fn original_headers_and_body(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = unique("o");
    let data: Vec<u8> = [PNG, &[0u8; 1000]].concat();
    put_avatar(&app, &id, &data, Some("image/png")).await;
    let resp = app.client.get(app.url(&format!("/originals/avatar/{id}.png"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["cache-control"], "public, max-age=86400");
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "strong ETag: {etag}");
    assert!(httpdate::parse_http_date(h["last-modified"].to_str().unwrap()).is_ok());
    assert_eq!(resp.bytes().await.unwrap(), data);

    // HEAD: same headers, no body.
    let head = app.client.head(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], data.len().to_string().as_str());
    assert_eq!(head.headers()["etag"], etag.as_str());
    assert_eq!(head.headers()["content-type"], "image/png");
    assert!(head.bytes().await.unwrap().is_empty());

    // 304 for a matching If-None-Match, with the ETag; 200 for another.
    let url = app.url(&format!("/originals/avatar/{id}"));
    let r = app.client.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    let r = app.client.get(&url).header("if-none-match", "\"other\"").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.client.head(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
}

async fn original_ranges(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = unique("r");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    put_avatar(&app, &id, &data, Some("video/mp4")).await;
    let url = app.url(&format!("/originals/avatar/{id}"));
    let get = |range: &'static str| app.client.get(&url).header("range", range).send();

    let r = get("bytes=100-199").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/5000");
    assert_eq!(r.headers()["content-length"], "100");
    assert_eq!(r.bytes().await.unwrap(), &data[100..200]);

    let r = get("bytes=-10").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 4990-4999/5000");
    assert_eq!(r.bytes().await.unwrap(), &data[4990..]);

    let r = get("bytes=4000-").await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &data[4000..]);

    let r = get("bytes=5000-6000").await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */5000");

    // Several ranges or garbage: the whole object, as RFC 9110 allows.
    let r = get("bytes=0-1,5-6").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 5000);

    // If-Range with another ETag: the whole object.
    let r = app.client.get(&url).header("range", "bytes=0-9").header("if-range", "\"stale\"").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn content_type_is_never_a_document(backend: Backend) {
    let app = spawn_app(backend).await;
    // A PNG stored as text/html is served as what it is.
    let id = unique("s");
    put_avatar(&app, &id, PNG, Some("text/html")).await;
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    // HTML bytes with no usable type are opaque bytes.
    let id = unique("h");
    put_avatar(&app, &id, b"<html><script>alert(1)</script></html>", Some("text/html")).await;
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // No stored type at all: sniffed.
    let id = unique("n");
    put_avatar(&app, &id, PNG, None).await;
    let r = app.client.head(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
}

async fn shards_and_lookup_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = unique("c");
    let key = ObjectKey::parse(format!("originals/avatars/tenant-7/{id}")).unwrap();
    app.state.store.put(&key, Bytes::from_static(PNG).into(), PutOptions::default()).await.unwrap();
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}?shard=tenant-7"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), PNG);
    // Without the shard the hash shard is used: not there.
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "not_found".into()));
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}?shard=BAD!"))).send().await.unwrap();
    assert_eq!(error_code(r).await, (400, "bad_request".into()));
    let r = app.client.get(app.url("/originals/nope/x")).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "not_found".into()));
    for bad in
        ["/originals/avatar/..", "/originals/avatar/a%2Fb", "/originals/avatar/a%00b", "/originals/avatar/%2e%2e"]
    {
        let r = app.client.get(app.url(bad)).send().await.unwrap();
        let (status, code) = error_code(r).await;
        assert!(status == 400 || status == 404, "{bad}: {status}");
        assert!(code == "bad_request" || code == "not_found", "{bad}: {code}");
    }
}

async fn errors_are_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app.client.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(error_code(r).await, (404, "not_found".into()));
    let r = app.client.post(app.url("/health")).send().await.unwrap();
    assert_eq!(error_code(r).await, (405, "method_not_allowed".into()));
    let r = app.client.delete(app.url("/originals/avatar/x")).send().await.unwrap();
    assert_eq!(error_code(r).await, (405, "method_not_allowed".into()));
}

async fn health_and_readiness(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), serde_json::json!({"message": "OK"}));
    let r = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // While draining, /ready is 503 (asked through the router: the listener is closed by then).
    let router = mediaflow::app(app.state.clone());
    app.state.lifecycle.shut_down();
    let resp = router.oneshot(axum::http::Request::get("/ready").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["message"].as_str().unwrap().contains("shutting down"));
}

both_backends!(
    original_headers_and_body,
    original_ranges,
    content_type_is_never_a_document,
    shards_and_lookup_errors,
    errors_are_json,
    health_and_readiness,
);

#[tokio::test]
async fn ready_is_503_when_the_store_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = mediaflow::config::Config::for_fs(dir.path().join("data"));
    config.http.shutdown_timeout = std::time::Duration::from_secs(1);
    let state = mediaflow::startup::build_state(config).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let resp =
        mediaflow::app(state).oneshot(axum::http::Request::get("/ready").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 503);
}
