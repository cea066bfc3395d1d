//! /metrics, request ids.

use crate::common::images;
use crate::common::{API_KEY, Backend, spawn_secured, unique};
use serde_json::json;

/// The value of one sample line, e.g. `name{a="b"} 3`.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name_and_labels)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_renders_storage_and_uploads() {
    let app = spawn_secured(Backend::Fs).await;
    let metrics = || async { app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let before = metrics().await;
    let health = r#"mediaflow_http_requests_total{method="GET",route="/health",status="200"}"#;
    let n0 = sample(&before, health).unwrap_or(0.0);
    for _ in 0..3 {
        app.client.get(app.url("/health")).send().await.unwrap();
    }
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(sample(&text, health).unwrap() >= n0 + 3.0, "{text}");
    assert!(text.contains("# TYPE mediaflow_http_request_duration_seconds histogram"));
    assert!(
        text.contains(r#"mediaflow_http_request_duration_seconds_bucket{method="GET",route="/health",le="0.005"}"#)
    );

    // A thumbnail: a cache miss, a render, storage operations.
    let id = unique("m");
    let r = app
        .client
        .post(app.url(&format!("/thumb/gallery/{id}")))
        .bearer_auth(API_KEY)
        .header("content-type", "image/jpeg")
        .body(images::jpeg(300, 200))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.client.get(app.url(&format!("/thumb/gallery/{id}?width=77"))).send().await.unwrap();
    app.client.get(app.url(&format!("/thumb/gallery/{id}?width=77"))).send().await.unwrap();
    let r = app
        .client
        .post(app.url("/v1/uploads/presign"))
        .bearer_auth(API_KEY)
        .json(&json!({"key_base": unique("u"), "mime": "image/png", "size_bytes": 10, "profile": "avatar"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = metrics().await;
    for needle in [
        r#"mediaflow_thumbnail_renders_total{result="ok"}"#,
        r#"mediaflow_cache_requests_total{result="hit"}"#,
        r#"mediaflow_cache_requests_total{result="miss"}"#,
        r#"mediaflow_storage_operations_total{backend="fs",op="put",result="ok"}"#,
        r#"mediaflow_storage_operations_total{backend="fs",op="get",result="not_found"}"#,
        r#"mediaflow_uploads_presigned_total{profile="avatar",mode="single"}"#,
        r#"mediaflow_http_requests_total{method="GET",route="/thumb/{profile}/{image_id}",status="200"}"#,
        "mediaflow_thumbnail_queue_depth",
        "mediaflow_cache_bytes",
        "mediaflow_process_resident_memory_bytes",
    ] {
        assert!(sample(&text, needle).is_some_and(|v| v >= 0.0), "missing {needle}\n{text}");
    }
    assert!(sample(&text, r#"mediaflow_thumbnail_renders_total{result="ok"}"#).unwrap() >= 3.0);
    // Unknown paths are one label value, not one per path.
    app.client.get(app.url(&format!("/nope/{}", unique("x")))).send().await.unwrap();
    let text = metrics().await;
    assert!(text.contains(r#"route="unmatched",status="404""#));
    assert!(!text.contains("/nope/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_returned() {
    let app = spawn_secured(Backend::Fs).await;
    let r = app.client.get(app.url("/health")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let a = app.client.get(app.url("/health")).send().await.unwrap();
    let b = app.client.get(app.url("/nope")).send().await.unwrap();
    let (a, b) = (
        a.headers()["x-request-id"].to_str().unwrap().to_owned(),
        b.headers()["x-request-id"].to_str().unwrap().to_owned(),
    );
    assert_eq!(a.len(), 24);
    assert_ne!(a, b);
    // A hostile id is replaced.
    let r = app.client.get(app.url("/health")).header("x-request-id", "x".repeat(500)).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 24);
}
