//! Render limits over HTTP, on both backends: outputs over a format's own
//! size (422 with a hint), sources over the side limit, the memory budget
//! (422 when a render can never fit, waiting when it can), and the
//! transform timeout (503 with Retry-After, the work stopping and giving its
//! memory back).

use std::time::{Duration, Instant};

use crate::common::images::{self, decode};
use crate::common::{API_KEY, Backend, TestApp, bombs, spawn_secured, spawn_secured_with, unique};
use bytes::Bytes;
use image::GenericImageView;
use mediaflow::storage::keys::{KeyBase, Shard};
use mediaflow::storage::{ObjectKey, PutOptions, StorageError};

async fn put(app: &TestApp, key: String, data: Vec<u8>, ct: &str) {
    let opts = PutOptions { content_type: Some(ct.into()), if_none_match: false };
    app.state.store.put(&ObjectKey::parse(key).unwrap(), Bytes::from(data).into(), opts).await.unwrap();
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, ct: &str, body: Vec<u8>) -> reqwest::Response {
    let req = app.client.post(app.url(path)).bearer_auth(API_KEY).header("content-type", ct).body(body);
    req.send().await.unwrap()
}

/// Status, code and hint of a JSON error answer.
async fn error(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json", "status {status}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let hint = body["hint"].as_str().unwrap_or_default().to_owned();
    (status, body["code"].as_str().unwrap().to_owned(), hint)
}

async fn metrics(app: &TestApp) -> String {
    app.client.get(app.url("/metrics")).bearer_auth(API_KEY).send().await.unwrap().text().await.unwrap()
}

/// The value of one sample in the Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn outputs_over_the_formats_limit_are_422_with_a_hint(backend: Backend) {
    let app = spawn_secured(backend).await;
    // 300x20000 at 256 wide is 256x17067: over WebP's 16383, fine in JPEG.
    let tall = images::png(300, 20_000);
    let id = unique("tall");
    put(&app, format!("originals/gallery/{id}"), tall.clone(), "image/png").await;
    let started = Instant::now();
    let (status, code, hint) = error(get(&app, &format!("/thumb/gallery/{id}?width=256&format=webp")).await).await;
    assert_eq!((status, code.as_str()), (422, "image_too_large"));
    assert!(hint.contains("16383") && hint.contains("jpeg") && hint.contains("png"), "{hint}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused from the header");
    // The profile's own format (jpg) holds it.
    let r = get(&app, &format!("/thumb/gallery/{id}?width=256")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (256, 17_067));
    assert!(metrics(&app).await.contains(r#"mediaflow_thumbnail_rejections_total{reason="output_too_large"}"#));

    // POST makes every size: the 256 px WebP cannot exist, so nothing is stored.
    let id = unique("tallp");
    let (status, code, hint) = error(post(&app, &format!("/thumb/avatar/{id}"), "image/png", tall).await).await;
    assert_eq!((status, code.as_str()), (422, "image_too_large"));
    assert!(hint.contains("16383"), "{hint}");
    let shard = Shard::of(&KeyBase::parse(&id).unwrap());
    let original = ObjectKey::parse(format!("originals/avatars/{}/{id}", shard.as_str())).unwrap();
    assert!(matches!(app.state.store.head(&original).await, Err(StorageError::NotFound)), "nothing stored");
}

async fn bombs_are_refused_from_the_header_or_made_cheaply(backend: Backend) {
    let app = spawn_secured(backend).await;
    // 97 KB, 100 000 000 x 1: a side over 65 535.
    let id = unique("wide");
    put(&app, format!("originals/gallery/{id}"), bombs::png_100m_by_1(), "image/png").await;
    let started = Instant::now();
    let (status, code, hint) = error(get(&app, &format!("/thumb/gallery/{id}?width=256")).await).await;
    assert_eq!((status, code.as_str()), (422, "image_too_large"));
    assert!(hint.contains("65535"), "{hint}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // 35 bytes, a 10 000 x 10 000 canvas: made from rows, never held whole.
    let id = unique("canvas");
    put(&app, format!("originals/gallery/{id}"), bombs::gif_canvas(10_000, 10_000), "image/gif").await;
    let r = get(&app, &format!("/thumb/gallery/{id}?width=200&format=png")).await;
    assert_eq!(r.status(), 200);
    let img = decode(&r.bytes().await.unwrap());
    assert_eq!(img.dimensions(), (200, 200));
    assert!(img.to_rgba8().pixels().all(|p| p.0[3] <= 2), "a transparent canvas");
}

async fn a_render_over_the_memory_budget_is_422_and_others_wait_their_turn(backend: Backend) {
    let app = spawn_secured_with(backend, |c| c.transforms.max_render_memory = 16 << 20).await;
    assert_eq!(app.state.thumbs.budget().total_bytes(), 16 << 20);
    // Progressive 3000x3000: libjpeg keeps 27 MB of coefficients, whatever the size asked.
    let id = unique("prog");
    put(&app, format!("originals/gallery/{id}"), bombs::jpeg(3000, 3000, true), "image/jpeg").await;
    let (status, code, hint) = error(get(&app, &format!("/thumb/gallery/{id}?width=100")).await).await;
    assert_eq!((status, code.as_str()), (422, "image_too_large"));
    assert!(hint.contains("MAX_RENDER_MEMORY_MB"), "{hint}");
    let text = metrics(&app).await;
    assert!(text.contains(r#"mediaflow_thumbnail_rejections_total{reason="over_budget"}"#), "{text}");
    // Gauges are process-wide (tests in this binary run side by side): present, not exact.
    for gauge in
        ["mediaflow_render_budget_bytes", "mediaflow_render_budget_in_use_bytes", "mediaflow_render_budget_waiting"]
    {
        assert!(sample(&text, gauge).is_some(), "missing {gauge}");
    }

    // Progressive 1500x1500: about 11 MB a render. POST makes both avatar
    // sizes at once; together they are over the budget, so one waits.
    let id = unique("twice");
    let r = post(&app, &format!("/thumb/avatar/{id}"), "image/jpeg", bombs::jpeg(1500, 1500, true)).await;
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    for w in [128u32, 256] {
        let key = ObjectKey::parse(body["thumbnails"][w.to_string()].as_str().unwrap()).unwrap();
        let stored = app.state.store.get(&key, None).await.unwrap().collect(1 << 24).await.unwrap();
        assert_eq!(decode(&stored).dimensions(), (w, w));
    }
    assert_eq!(app.state.thumbs.budget().in_use_bytes(), 0, "every reservation given back");
    assert_eq!(app.state.thumbs.budget().waiting(), 0);
}

async fn a_render_past_the_timeout_is_503_and_its_work_stops(backend: Backend) {
    let app = spawn_secured_with(backend, |c| {
        c.transforms.timeout = Duration::from_millis(300);
        c.transforms.concurrency = 1;
    })
    .await;
    // Seconds of decoding: 16-bit RGBA, every row Paeth-filtered.
    let slow = bombs::png_zeros(7000, 7000, png::ColorType::Rgba, png::BitDepth::Sixteen, true);
    let id = unique("slow");
    put(&app, format!("originals/gallery/{id}"), slow, "image/png").await;
    let started = Instant::now();
    let r = get(&app, &format!("/thumb/gallery/{id}?width=200")).await;
    let answered = started.elapsed();
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error(r).await.0, 503);
    assert!(answered < Duration::from_secs(3), "answered after {answered:?}");

    // The worker notices the cancel flag and gives its memory back.
    let budget = app.state.thumbs.budget();
    let deadline = Instant::now() + Duration::from_secs(5);
    while budget.in_use_bytes() > 0 {
        assert!(Instant::now() < deadline, "the abandoned render still holds {} bytes", budget.in_use_bytes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = started.elapsed();

    // A normal thumbnail right after is made on the (single) render thread,
    // not queued behind the abandoned work.
    let id = unique("next");
    put(&app, format!("originals/gallery/{id}"), images::jpeg(400, 300), "image/jpeg").await;
    let r = get(&app, &format!("/thumb/gallery/{id}?width=100")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (100, 75));
    eprintln!("503 after {answered:?}, work stopped after {stopped:?}, next render done after {:?}", started.elapsed());
    assert!(metrics(&app).await.contains(r#"mediaflow_thumbnail_rejections_total{reason="timeout"}"#));
}

both_backends!(
    outputs_over_the_formats_limit_are_422_with_a_hint,
    bombs_are_refused_from_the_header_or_made_cheaply,
    a_render_over_the_memory_budget_is_422_and_others_wait_their_turn,
    a_render_past_the_timeout_is_503_and_its_work_stops,
);
