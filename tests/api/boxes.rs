//! Boxes (`height`, `fit`), gravity (including `smart`) and animated GIF →
//! animated WebP over HTTP, on both backends, checked on decoded pixels and
//! on the WebP chunks themselves. The `cards` profile of
//! tests/fixtures/profiles.yaml lists `300`, `128x128`, `256x256` (its
//! default) and `400x225`.

use std::time::Duration;

use crate::common::images::{self, decode, near};
use crate::common::{API_KEY, Backend, TestApp, error_of, spawn_secured, spawn_secured_with, unique};
use bytes::Bytes;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{AnimationDecoder, DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use mediaflow::storage::{ObjectKey, PutOptions, StorageError};
use serde_json::Value;

const RED: [u8; 3] = [230, 20, 20];
const GREEN: [u8; 3] = [20, 200, 40];
const BLUE: [u8; 3] = [20, 40, 220];

async fn put_card(app: &TestApp, id: &str, data: Vec<u8>, ct: &str) {
    let opts = PutOptions { content_type: Some(ct.into()), if_none_match: false };
    let key = ObjectKey::parse(format!("originals/cards/{id}")).unwrap();
    app.state.store.put(&key, Bytes::from(data).into(), opts).await.unwrap();
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

/// GETs a thumbnail that must be there, decoded.
async fn thumb(app: &TestApp, path: &str) -> DynamicImage {
    let r = get(app, path).await;
    assert_eq!(r.status(), 200, "{path}");
    decode(&r.bytes().await.unwrap())
}

/// Whether a variant is in the store, once the background writes of the
/// renders so far have finished (the lifecycle tracks them: no polling).
async fn stored(app: &TestApp, key: &str) -> bool {
    assert!(app.state.lifecycle.wait_for_tasks(Duration::from_secs(20)).await, "background writes finish");
    match app.state.store.head(&ObjectKey::parse(key).unwrap()).await {
        Ok(_) => true,
        Err(StorageError::NotFound) => false,
        Err(e) => panic!("{e}"),
    }
}

/// `w`×`h` in three bands of [`RED`], [`GREEN`], [`BLUE`]: side by side
/// (`vertical` bands, left to right) or stacked (top to bottom).
fn bands(w: u32, h: u32, vertical: bool) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let third = if vertical { x * 3 / w } else { y * 3 / h };
        Rgb([RED, GREEN, BLUE][third as usize])
    })
}

fn png(img: RgbImage) -> Vec<u8> {
    images::encode(&DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

fn is(img: &DynamicImage, x: u32, y: u32, want: [u8; 3]) -> bool {
    near(img.get_pixel(x, y).0, want, 30)
}

async fn gravity_keeps_the_side_it_names(backend: Backend) {
    let app = spawn_secured(backend).await;
    // 1200x800, bands of 400: covering 256x256 resizes it to 384x256, bands
    // of 128, and the window slides over 128 columns.
    let wide = unique("w");
    put_card(&app, &wide, png(bands(1200, 800, true)), "image/png").await;
    // Sampled at x = 4, 100, 160 and 251 of the window: west keeps 0..256
    // (red to 128, then green), center 64..320, east 128..384.
    for (gravity, colours) in [
        ("west", [RED, RED, GREEN, GREEN]),
        ("center", [RED, GREEN, GREEN, BLUE]),
        ("east", [GREEN, GREEN, BLUE, BLUE]),
    ] {
        let img = thumb(&app, &format!("/thumb/cards/{wide}?width=256&height=256&gravity={gravity}")).await;
        assert_eq!(img.dimensions(), (256, 256), "{gravity}");
        for (x, want) in [4, 100, 160, 251].into_iter().zip(colours) {
            assert!(is(&img, x, 128, want), "{gravity}: x={x} is {:?}, not {want:?}", img.get_pixel(x, 128));
        }
    }
    // North and south on stacked bands; the default gravity is the centre.
    let tall = unique("t");
    put_card(&app, &tall, png(bands(800, 1200, false)), "image/png").await;
    // Sampled at y = 4, 100, 160 and 251 of the window, as above.
    for (query, colours) in [
        ("&gravity=north", [RED, RED, GREEN, GREEN]),
        ("&gravity=south", [GREEN, GREEN, BLUE, BLUE]),
        ("", [RED, GREEN, GREEN, BLUE]),
    ] {
        let img = thumb(&app, &format!("/thumb/cards/{tall}?width=256&height=256{query}")).await;
        assert_eq!(img.dimensions(), (256, 256), "{query}");
        for (y, want) in [4, 100, 160, 251].into_iter().zip(colours) {
            assert!(is(&img, 128, y, want), "{query}: y={y} is {:?}, not {want:?}", img.get_pixel(128, y));
        }
    }
    // Variant keys as SPEC says: gravity after the box, the default left out.
    let dir = "thumbnails/cards";
    assert!(stored(&app, &format!("{dir}/{wide}_256x256_west.webp")).await);
    assert!(stored(&app, &format!("{dir}/{wide}_256x256.webp")).await, "center is the default");
    assert!(stored(&app, &format!("{dir}/{tall}_256x256_south.webp")).await);
}

/// A flat picture with one busy patch near its right edge.
fn flat_with_patch(w: u32, h: u32, patch: std::ops::Range<u32>) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if patch.contains(&x) && (h / 4..h * 3 / 4).contains(&y) {
            let on = (x / 6 + y / 6) % 2 == 0;
            if on { Rgb([250, 200, 40]) } else { Rgb([20, 30, 160]) }
        } else {
            Rgb([128, 128, 128])
        }
    })
}

/// How many pixels of `img` are far from flat grey.
fn busy(img: &DynamicImage) -> usize {
    img.to_rgb8().pixels().filter(|p| p.0.iter().any(|&c| c.abs_diff(128) > 40)).count()
}

async fn smart_keeps_the_detailed_patch(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("s");
    // Resized to 384x256 (as covering 256x256 resizes it) the patch is at
    // 330..378: the centre window (64..320) misses it entirely.
    let source = png(flat_with_patch(1200, 800, 1030..1180));
    put_card(&app, &id, source.clone(), "image/png").await;
    let opts = PutOptions { content_type: Some("image/png".into()), if_none_match: false };
    let key = ObjectKey::parse(format!("originals/gallery/{id}")).unwrap();
    app.state.store.put(&key, Bytes::from(source).into(), opts).await.unwrap();
    // Lossless output, so the crop and the whole resized image compare
    // pixel for pixel: all of the patch that survives the downscale.
    let whole = thumb(&app, &format!("/thumb/gallery/{id}?width=384&format=png")).await;
    assert_eq!(whole.dimensions(), (384, 256));
    assert!(busy(&whole) > 3000, "the patch: {}", busy(&whole));
    let smart = thumb(&app, &format!("/thumb/cards/{id}?width=256&height=256&gravity=smart&format=png")).await;
    let center = thumb(&app, &format!("/thumb/cards/{id}?width=256&height=256&format=png")).await;
    assert_eq!(smart.dimensions(), (256, 256));
    assert_eq!(busy(&center), 0, "the centre crop has none of the patch");
    assert_eq!(busy(&smart), busy(&whole), "smart keeps all of it");
    // The profile's own format, stored under the box's smart key.
    let webp = thumb(&app, &format!("/thumb/cards/{id}?width=256&height=256&gravity=smart")).await;
    assert_eq!(webp.dimensions(), (256, 256));
    assert!(stored(&app, &format!("thumbnails/cards/{id}_256x256_smart.webp")).await);
}

async fn inside_fits_and_small_sources_are_not_upscaled(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("i");
    put_card(&app, &id, png(bands(1200, 800, true)), "image/png").await;
    let img = thumb(&app, &format!("/thumb/cards/{id}?width=400&height=225&fit=inside")).await;
    assert_eq!(img.dimensions(), (338, 225), "the whole image within the box");
    assert!(is(&img, 2, 112, RED) && is(&img, 335, 112, BLUE), "nothing cropped");
    assert!(stored(&app, &format!("thumbnails/cards/{id}_400x225_inside.webp")).await);
    let img = thumb(&app, &format!("/thumb/cards/{id}?width=400&height=225")).await;
    assert_eq!(img.dimensions(), (400, 225), "cover fills it");

    // A 200x100 source is smaller than both boxes: the largest crop of each
    // box's aspect ratio it holds, at its own scale.
    let small = unique("m");
    put_card(&app, &small, png(bands(200, 100, true)), "image/png").await;
    let img = thumb(&app, &format!("/thumb/cards/{small}?width=256&height=256")).await;
    assert_eq!(img.dimensions(), (100, 100));
    assert!(is(&img, 2, 50, RED) && is(&img, 50, 50, GREEN) && is(&img, 97, 50, BLUE), "the middle square");
    let img = thumb(&app, &format!("/thumb/cards/{small}?width=400&height=225&fit=cover&gravity=west")).await;
    assert_eq!(img.dimensions(), (178, 100), "16:9 of 200x100, unscaled");
    assert!(is(&img, 2, 50, RED), "west");
    let img = thumb(&app, &format!("/thumb/cards/{small}?width=400&height=225&fit=inside")).await;
    assert_eq!(img.dimensions(), (200, 100), "inside: the source as it is");
}

async fn exif_orientation_comes_before_the_box(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("o");
    // Stored 1200x800 with bands left to right, EXIF 6 (rotate 90° clockwise):
    // displayed 800x1200 with red at the top and blue at the bottom.
    let jpeg = images::encode(&DynamicImage::ImageRgb8(bands(1200, 800, true)), ImageFormat::Jpeg);
    put_card(&app, &id, images::with_exif(&jpeg, 6), "image/jpeg").await;
    let north = thumb(&app, &format!("/thumb/cards/{id}?width=256&height=256&gravity=north")).await;
    assert_eq!(north.dimensions(), (256, 256));
    assert!(is(&north, 128, 4, RED) && is(&north, 128, 251, GREEN), "{:?}", north.get_pixel(128, 4));
    let south = thumb(&app, &format!("/thumb/cards/{id}?width=256&height=256&gravity=south")).await;
    assert!(is(&south, 128, 4, GREEN) && is(&south, 128, 251, BLUE), "{:?}", south.get_pixel(128, 251));
    let wide = thumb(&app, &format!("/thumb/cards/{id}?width=400&height=225&fit=inside")).await;
    assert_eq!(wide.dimensions(), (150, 225), "the box fits the displayed (portrait) image");
}

/// A GIF of solid frames: `colors`, shown for `delays_ms`, repeated as said.
fn gif(w: u32, h: u32, colors: &[[u8; 3]], delays_ms: &[u32], repeat: Repeat) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        enc.set_repeat(repeat).unwrap();
        for (c, d) in colors.iter().zip(delays_ms) {
            let img = RgbaImage::from_pixel(w, h, Rgba([c[0], c[1], c[2], 255]));
            let delay = image::Delay::from_numer_denom_ms(*d, 1);
            enc.encode_frame(image::Frame::from_parts(img, 0, 0, delay)).unwrap();
        }
    }
    out
}

/// The RIFF chunks of a WebP: (fourcc, payload).
fn chunks(webp: &[u8]) -> Vec<([u8; 4], &[u8])> {
    assert!(webp.starts_with(b"RIFF") && &webp[8..12] == b"WEBP", "a WebP");
    let mut out = Vec::new();
    let mut i = 12;
    while i + 8 <= webp.len() {
        let size = u32::from_le_bytes(webp[i + 4..i + 8].try_into().unwrap()) as usize;
        out.push((webp[i..i + 4].try_into().unwrap(), &webp[i + 8..i + 8 + size]));
        i += 8 + size + (size & 1);
    }
    out
}

fn le24(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

async fn animated_gifs_stay_animated_in_webp(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("a");
    let delays = [100, 250, 400];
    // NETSCAPE2.0 loop count 2: two repeats, three plays.
    put_card(&app, &id, gif(300, 200, &[RED, GREEN, BLUE], &delays, Repeat::Finite(2)), "image/gif").await;
    for (query, size) in [("?width=300", (300, 200)), ("", (200, 200))] {
        let r = get(&app, &format!("/thumb/cards/{id}{query}")).await;
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(r.headers()["content-type"], "image/webp");
        let bytes = r.bytes().await.unwrap();
        let chunks = chunks(&bytes);
        let vp8x = chunks.iter().find(|c| &c.0 == b"VP8X").expect("an extended WebP").1;
        assert_ne!(vp8x[0] & 0x02, 0, "the animation flag");
        assert_eq!((le24(&vp8x[4..]) + 1, le24(&vp8x[7..]) + 1), size, "{query}: the canvas");
        let anim = chunks.iter().find(|c| &c.0 == b"ANIM").expect("ANIM").1;
        assert_eq!(u16::from_le_bytes([anim[4], anim[5]]), 3, "plays as often as the GIF did");
        let frames: Vec<u32> = chunks.iter().filter(|c| &c.0 == b"ANMF").map(|c| le24(&c.1[12..])).collect();
        assert_eq!(frames, delays, "{query}: one ANMF per frame, with its duration");
        // Decoded: each frame's colour.
        let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&bytes[..])).unwrap();
        let decoded: Vec<_> = decoder.into_frames().collect_frames().unwrap();
        assert_eq!(decoded.len(), 3);
        for (frame, want) in decoded.iter().zip([RED, GREEN, BLUE]) {
            let b = frame.buffer();
            assert_eq!(b.dimensions(), size);
            let p = b.get_pixel(size.0 / 2, size.1 / 2).0;
            assert!(near(p, want, 30), "{query}: {p:?} vs {want:?}");
        }
    }
    // Other formats take the first frame.
    let r = get(&app, &format!("/thumb/cards/{id}?width=300&format=jpeg")).await;
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let img = decode(&r.bytes().await.unwrap());
    assert_eq!(img.dimensions(), (300, 200));
    assert!(is(&img, 150, 100, RED));
    let r = get(&app, &format!("/thumb/cards/{id}?width=300&format=png")).await;
    let img = decode(&r.bytes().await.unwrap());
    assert!(is(&img, 150, 100, RED), "png: the first frame");
}

async fn the_frame_cap_answers_422(backend: Backend) {
    let app = spawn_secured_with(backend, |c| c.transforms.max_frames = 2).await;
    let id = unique("c");
    put_card(&app, &id, gif(64, 64, &[RED, GREEN, BLUE], &[50, 50, 50], Repeat::Infinite), "image/gif").await;
    let r = get(&app, &format!("/thumb/cards/{id}?width=300")).await;
    let body: Value = {
        assert_eq!(r.status(), 422);
        r.json().await.unwrap()
    };
    assert_eq!(body["code"], "image_too_large");
    assert!(body["message"].as_str().unwrap().contains("3 frames, more than the 2 allowed"), "{body}");
    assert!(body["hint"].as_str().unwrap().contains("MAX_ANIMATION_FRAMES"), "{body}");
    // The first frame alone is fine.
    assert_eq!(get(&app, &format!("/thumb/cards/{id}?width=300&format=png")).await.status(), 200);
}

async fn boxes_not_allowed_are_400(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("b");
    put_card(&app, &id, png(bands(600, 400, true)), "image/png").await;
    for (query, says) in [
        (
            "width=100&height=100",
            "box 100x100 is not allowed for profile 'cards'; allowed: 300, 128x128, 256x256, 400x225",
        ),
        ("width=300&height=300", "box 300x300 is not allowed"),
        ("width=256", "width 256 is not allowed"),
        ("height=256", "height needs a width"),
        ("width=300&gravity=smart", "fit and gravity apply to boxes"),
        ("width=256&height=256&fit=fill", "fit 'fill' is not one of cover, inside"),
        ("width=256&height=256&gravity=top", "gravity 'top' is not one of"),
        ("width=256&height=0", "box 256x0"),
    ] {
        let r = get(&app, &format!("/thumb/cards/{id}?{query}")).await;
        let body: Value = {
            assert_eq!(r.status(), 400, "{query}");
            r.json().await.unwrap()
        };
        assert_eq!(body["code"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains(says), "{query}: {body}");
    }
    // allow_any_width: boxes up to max_width x max_height (4096 by default).
    put_gallery(&app, &id).await;
    assert_eq!(get(&app, &format!("/thumb/gallery/{id}?width=300&height=100")).await.status(), 200);
    let r = get(&app, &format!("/thumb/gallery/{id}?width=300&height=4097")).await;
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
}

async fn put_gallery(app: &TestApp, id: &str) {
    let opts = PutOptions { content_type: Some("image/png".into()), if_none_match: false };
    let key = ObjectKey::parse(format!("originals/gallery/{id}")).unwrap();
    app.state.store.put(&key, Bytes::from(png(bands(600, 400, true))).into(), opts).await.unwrap();
}

async fn delete_removes_box_variants(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("d");
    put_card(&app, &id, png(bands(600, 400, true)), "image/png").await;
    let names = ["300", "256x256", "256x256_smart", "400x225_inside", "128x128_q50"];
    for query in [
        "width=300",
        "width=256&height=256",
        "width=256&height=256&gravity=smart",
        "width=400&height=225&fit=inside",
        "width=128&height=128&quality=50",
    ] {
        assert_eq!(get(&app, &format!("/thumb/cards/{id}?{query}")).await.status(), 200, "{query}");
    }
    for name in names {
        assert!(stored(&app, &format!("thumbnails/cards/{id}_{name}.webp")).await, "{name}");
    }
    let r = app.client.delete(app.url(&format!("/v1/assets/cards/{id}"))).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["objects_deleted"], 1 + names.len(), "{body}");
    for name in names {
        let key = ObjectKey::parse(format!("thumbnails/cards/{id}_{name}.webp")).unwrap();
        assert!(matches!(app.state.store.head(&key).await, Err(StorageError::NotFound)), "{name} is gone");
    }
    assert_eq!(get(&app, &format!("/thumb/cards/{id}?width=256&height=256")).await.status(), 404);
}

async fn post_makes_every_box(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("p");
    let r = app
        .client
        .post(app.url(&format!("/thumb/cards/{id}")))
        .bearer_auth(API_KEY)
        .header("content-type", "image/png")
        .body(png(bands(1200, 800, true)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let thumbs = body["thumbnails"].as_object().unwrap();
    let mut sizes: Vec<&str> = thumbs.keys().map(String::as_str).collect();
    sizes.sort();
    assert_eq!(sizes, ["128x128", "256x256", "300", "400x225"]);
    assert_eq!(thumbs["400x225"], format!("thumbnails/cards/{id}_400x225.webp"));
    for (size, dims) in [("128x128", (128, 128)), ("400x225", (400, 225)), ("300", (300, 200))] {
        let key = ObjectKey::parse(thumbs[size].as_str().unwrap()).unwrap();
        let found = app.state.store.get(&key, None).await.unwrap().collect(1 << 20).await.unwrap();
        assert_eq!(decode(&found).dimensions(), dims, "{size}");
    }
}

both_backends!(
    gravity_keeps_the_side_it_names,
    smart_keeps_the_detailed_patch,
    inside_fits_and_small_sources_are_not_upscaled,
    exif_orientation_comes_before_the_box,
    animated_gifs_stay_animated_in_webp,
    the_frame_cap_answers_422,
    boxes_not_allowed_are_400,
    delete_removes_box_variants,
    post_makes_every_box,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_boxes_need_a_signature_and_listed_ones_do_not() {
    let app = spawn_secured_with(Backend::Fs, |c| {
        c.thumb_signing_key = Some(mediaflow::config::Secret::new("k-test-0123"));
    })
    .await;
    let id = unique("g");
    put_card(&app, &id, png(bands(600, 400, true)), "image/png").await;
    put_gallery(&app, &id).await;
    // A listed box is public, whatever its fit and gravity.
    for query in ["width=256&height=256", "width=256&height=256&gravity=smart", "width=400&height=225&fit=inside"] {
        assert_eq!(get(&app, &format!("/thumb/cards/{id}?{query}")).await.status(), 200, "{query}");
    }
    // gallery lists widths only: any box needs `sig`, like any other width.
    let r = get(&app, &format!("/thumb/gallery/{id}?width=200&height=200")).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
    let signer = mediaflow::thumbs::UrlSignature::new("k-test-0123");
    let signed = signer.sign_url(&format!("/thumb/gallery/{id}?width=200&height=200&gravity=east"));
    let r = get(&app, &signed).await;
    assert_eq!(r.status(), 200, "{signed}");
    assert_eq!(
        r.headers()["content-disposition"],
        format!("inline; filename=\"{id}_200x200_east.jpeg\"").as_str(),
        "the file name names the box"
    );
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (200, 200));
    // The signature covers the box: another height does not verify.
    let sig = signed.split("sig=").nth(1).unwrap();
    let r = get(&app, &format!("/thumb/gallery/{id}?width=200&height=201&gravity=east&sig={sig}")).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_list_boxes() {
    let app = spawn_secured(Backend::Fs).await;
    let body: Value = get(&app, "/v1/profiles").await.json().await.unwrap();
    let cards = &body["profiles"]["cards"];
    assert_eq!(cards["sizes"], serde_json::json!(["300", "128x128", "256x256", "400x225"]));
    assert_eq!(cards["default_size"], "256x256");
    assert_eq!(cards["max_height"], 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upload_client_prints_a_square_avatar_url() {
    use mediaflow::client::{ProgressMode, UploadOptions, upload};
    let app = spawn_secured(Backend::Fs).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("face.png");
    std::fs::write(&file, png(bands(600, 400, true))).unwrap();
    let run = |profile: &str| {
        let mut opts = UploadOptions::new(&file, app.base.clone(), profile);
        opts.key_base = Some(unique("u"));
        opts.api_key = Some(API_KEY.to_owned());
        opts.progress = ProgressMode::Quiet;
        opts.cache_dir = Some(dir.path().join("cache"));
        opts
    };
    let done = upload(&run("cards")).await.unwrap();
    let avatar = done.avatar_url.clone().expect("cards lists square boxes");
    assert_eq!(
        avatar,
        format!("{}?width=128&height=128", done.thumbnail_url.as_deref().unwrap()),
        "the smallest square box"
    );
    assert_eq!(decode(&app.client.get(&avatar).send().await.unwrap().bytes().await.unwrap()).dimensions(), (128, 128));
    // Widths only: no avatar example.
    let done = upload(&run("avatar")).await.unwrap();
    assert_eq!(done.avatar_url, None);
}
