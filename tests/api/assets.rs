//! `GET /v1/assets/…` of images: dimensions as displayed, a ThumbHash of the
//! right colour, facts stored once per version and remade for a new one.

use bytes::Bytes;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use mediaflow::storage::{ObjectKey, PutOptions};
use serde_json::Value;

use crate::common::images::{encode, with_exif};
use crate::common::*;

fn solid_jpeg(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    encode(&DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(rgb))), ImageFormat::Jpeg)
}

async fn put_original(app: &TestApp, id: &str, data: Vec<u8>) {
    let key = ObjectKey::parse(format!("originals/gallery/{id}")).unwrap();
    let opts = PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false };
    app.state.store.put(&key, Bytes::from(data).into(), opts).await.unwrap();
}

fn average_rgb(placeholder: &Value) -> [f32; 3] {
    let hash = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, placeholder.as_str().unwrap())
        .expect("base64");
    let (r, g, b, _) = thumbhash::thumb_hash_to_average_rgba(&hash).expect("a ThumbHash");
    [r, g, b]
}

async fn images_are_described_for_layout(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("desc");
    // 600x400 stored, rotated 90° by its EXIF orientation: 400x600 displayed.
    let data = with_exif(&solid_jpeg(600, 400, [0, 0, 255]), 6);
    put_original(&app, &id, data.clone()).await;
    let r = app.client.get(app.url(&format!("/v1/assets/gallery/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["profile"], "gallery");
    assert_eq!(d["object_key"], format!("originals/gallery/{id}"));
    assert_eq!(d["mime"], "image/jpeg");
    assert_eq!(d["size_bytes"], data.len() as u64);
    assert_eq!((d["width"].as_u64(), d["height"].as_u64()), (Some(400), Some(600)), "orientation applied: {d}");
    let original = app.client.head(app.url(&format!("/originals/gallery/{id}"))).send().await.unwrap();
    assert_eq!(d["etag"], original.headers()["etag"].to_str().unwrap());
    assert!(d["last_modified"].as_str().unwrap().ends_with('Z'), "{d}");
    let [r, g, b] = average_rgb(&d["placeholder"]);
    assert!(b > 0.7 && r < 0.3 && g < 0.3, "a blue placeholder: {r} {g} {b}");
    assert!(d.get("proxies").is_none() && d.get("duration_s").is_none(), "no video fields: {d}");

    // Stored beside the variants, and remade when the original changes.
    let facts = ObjectKey::parse(format!("thumbnails/gallery/{id}_facts.json")).unwrap();
    app.state.store.head(&facts).await.expect("facts stored");
    put_original(&app, &id, solid_jpeg(100, 50, [255, 0, 0])).await;
    let d: Value =
        app.client.get(app.url(&format!("/v1/assets/gallery/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!((d["width"].as_u64(), d["height"].as_u64()), (Some(100), Some(50)), "a new version, new facts");
    let [r, _, b] = average_rgb(&d["placeholder"]);
    assert!(r > 0.7 && b < 0.3, "a red placeholder now");

    // Not there, unknown profile, bad id.
    let r = app.client.get(app.url(&format!("/v1/assets/gallery/{}", unique("none")))).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    let r = app.client.get(app.url("/v1/assets/nope/x1")).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    let r = app.client.get(app.url("/v1/assets/gallery/..%2Fetc")).send().await.unwrap();
    assert_eq!(error_of(r).await.0, 400);
    // An original that is not an image the service reads.
    let id = unique("junk");
    put_original(&app, &id, b"not an image at all".to_vec()).await;
    let r = app.client.get(app.url(&format!("/v1/assets/gallery/{id}"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (415, "unsupported_media".into()));
}

both_backends!(images_are_described_for_layout);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_are_public_and_deleting_still_needs_the_key() {
    let app = spawn_secured(Backend::Fs).await;
    let id = unique("pub");
    put_original(&app, &id, solid_jpeg(64, 64, [0, 255, 0])).await;
    let r = app.client.get(app.url(&format!("/v1/assets/gallery/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200, "no key needed to describe");
    let r = app.client.delete(app.url(&format!("/v1/assets/gallery/{id}"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
}
