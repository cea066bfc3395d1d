//! Thumbnails on demand, on both backends, checked on decoded pixels.

use std::time::{Duration, Instant};

use crate::common::images::{self, decode, near};
use crate::common::{API_KEY, Backend, TestApp, error_of, spawn_secured, spawn_secured_with, unique};
use bytes::Bytes;
use image::GenericImageView;
use mediaflow::storage::keys::{KeyBase, Shard};
use mediaflow::storage::{ObjectKey, PutOptions, StorageError};

async fn put(app: &TestApp, key: String, data: Vec<u8>, ct: &str) {
    let opts = PutOptions { content_type: Some(ct.into()), if_none_match: false };
    app.state.store.put(&ObjectKey::parse(key).unwrap(), Bytes::from(data).into(), opts).await.unwrap();
}

/// Stores an avatar original (sharded like an upload would be).
async fn put_avatar(app: &TestApp, id: &str, data: Vec<u8>, ct: &str) {
    let shard = Shard::of(&KeyBase::parse(id).unwrap());
    put(app, format!("originals/avatars/{}/{id}", shard.as_str()), data, ct).await;
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

/// Waits until the background write of a variant lands in the store.
async fn stored(app: &TestApp, key: &str) -> bool {
    let key = ObjectKey::parse(key).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match app.state.store.head(&key).await {
            Ok(_) => return true,
            Err(StorageError::NotFound) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn widths_formats_and_stored_variants(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("t");
    put_avatar(&app, &id, images::jpeg(800, 600), "image/jpeg").await;
    for (query, width, height) in [("?width=128", 128, 96), ("?width=256", 256, 192), ("", 256, 192)] {
        let r = get(&app, &format!("/thumb/avatar/{id}{query}")).await;
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(r.headers()["content-type"], "image/webp");
        assert_eq!(r.headers()["cache-control"], "public, max-age=86400");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && !etag.starts_with("W/"));
        let bytes = r.bytes().await.unwrap();
        assert!(bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP", "WebP magic");
        let img = decode(&bytes);
        assert_eq!(img.dimensions(), (width, height), "{query}");
        // The red corner is still there, top left.
        assert!(near(img.get_pixel(2, 2).0, [255, 0, 0], 40), "{:?}", img.get_pixel(2, 2));
    }
    assert!(stored(&app, &format!("thumbnails/avatars/{id}_128.webp")).await, "the seed's key");
    assert!(stored(&app, &format!("thumbnails/avatars/{id}_256.webp")).await);

    let r = get(&app, &format!("/thumb/avatar/{id}?width=128&format=jpeg&quality=40")).await;
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(&[0xff, 0xd8, 0xff]), "JPEG magic");
    assert_eq!(decode(&bytes).dimensions(), (128, 96));
    assert!(stored(&app, &format!("thumbnails/avatars/{id}_128_q40.jpeg")).await, "quality in the key");

    let r = get(&app, &format!("/thumb/avatar/{id}?width=128&format=png")).await;
    assert_eq!(r.headers()["content-type"], "image/png");
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG magic");
    assert_eq!(decode(&bytes).dimensions(), (128, 96));
    assert!(stored(&app, &format!("thumbnails/avatars/{id}_128.png")).await);

    // AVIF: no AV1 decoder in the tree, so the container is checked (brand,
    // the `ispe` dimensions) rather than the pixels.
    let r = get(&app, &format!("/thumb/avatar/{id}?width=128&format=avif")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/avif");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[4..12], b"ftypavif", "AVIF brand");
    let info = mediaflow::image::probe(&bytes).unwrap();
    assert_eq!((info.width, info.height), (128, 96));
    assert!(stored(&app, &format!("thumbnails/avatars/{id}_128.avif")).await);

    // HEAD: the headers, no body.
    let r = app.client.head(app.url(&format!("/thumb/avatar/{id}?width=128"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-length"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(r.bytes().await.unwrap().is_empty());
}

async fn no_upscaling_and_profile_spelling(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("s");
    put(&app, format!("originals/gallery/{id}"), images::png(90, 60), "image/png").await;
    let r = get(&app, &format!("/thumb/gallery/{id}?width=200")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["cache-control"], "public, max-age=3600");
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (90, 60), "never upscaled");
    // convert_to "jpg" keeps its spelling in the key; any width is allowed here.
    assert!(stored(&app, &format!("thumbnails/gallery/{id}_200.jpg")).await);
    let r = get(&app, &format!("/thumb/gallery/{id}?width=45")).await;
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (45, 30));
}

async fn exif_orientation_applied_and_metadata_stripped(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("o");
    // Stored 200×100 with red top-left; orientation 6 shows it rotated 90° clockwise.
    let source = images::with_exif(&images::jpeg(200, 100), 6);
    assert!(source.windows(4).any(|w| w == b"Exif"));
    put_avatar(&app, &id, source, "image/jpeg").await;
    for format in ["webp", "jpeg", "png"] {
        let r = get(&app, &format!("/thumb/avatar/{id}?width=128&format={format}")).await;
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        for marker in [&b"Exif"[..], b"GPS", b"http://ns.adobe.com/xap", b"ICC_PROFILE", b"iCCP", b"eXIf"] {
            assert!(!bytes.windows(marker.len()).any(|w| w == marker), "{format} output carries {marker:?}");
        }
        let img = decode(&bytes);
        // Displayed 100×200: narrower than 128, so not upscaled.
        assert_eq!(img.dimensions(), (100, 200), "{format}");
        assert!(near(img.get_pixel(97, 2).0, [255, 0, 0], 50), "red lands top right: {:?}", img.get_pixel(97, 2));
        assert!(!near(img.get_pixel(2, 2).0, [255, 0, 0], 50), "not top left");
    }
    // A real photo with orientation 6 from Pillow's test suite.
    let id = unique("h");
    let hopper =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hopper_orientation_6.jpg")).unwrap();
    put_avatar(&app, &id, hopper, "image/jpeg").await;
    let r = get(&app, &format!("/thumb/avatar/{id}?width=128&format=png")).await;
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (128, 128));
}

async fn alpha_kept_or_flattened(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("a");
    put_avatar(&app, &id, images::png_rgba(256, 128), "image/png").await;
    for format in ["webp", "png"] {
        let img =
            decode(&get(&app, &format!("/thumb/avatar/{id}?width=128&format={format}")).await.bytes().await.unwrap());
        assert_eq!(img.dimensions(), (128, 64));
        assert_eq!(img.get_pixel(5, 30).0[3], 0, "{format}: transparent stays transparent");
        let right = img.get_pixel(120, 30).0;
        assert_eq!(right[3], 255, "{format}");
        assert!(near(right, [0, 0, 255], 30), "{format}: {right:?}");
    }
    let img = decode(&get(&app, &format!("/thumb/avatar/{id}?width=128&format=jpeg")).await.bytes().await.unwrap());
    assert!(near(img.get_pixel(5, 30).0, [255, 255, 255], 8), "JPEG flattens on white: {:?}", img.get_pixel(5, 30));
}

async fn conditional_requests_and_auto_format(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("c");
    put_avatar(&app, &id, images::jpeg(300, 200), "image/jpeg").await;
    let url = app.url(&format!("/thumb/avatar/{id}?width=128"));
    let first = app.client.get(&url).send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body = first.bytes().await.unwrap();
    let r = app.client.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    // The same bytes and ETag again (from memory now).
    let again = app.client.get(&url).send().await.unwrap();
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert_eq!(again.bytes().await.unwrap(), body);

    let auto = app.url(&format!("/thumb/avatar/{id}?width=128&format=auto"));
    let r = app.client.get(&auto).header("accept", "image/avif,image/webp,*/*").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/webp");
    assert_eq!(r.headers()["vary"], "Accept");
    let r = app.client.get(&auto).header("accept", "image/jpeg,*/*").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["vary"], "Accept");
}

async fn request_errors(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("e");
    put_avatar(&app, &id, images::jpeg(300, 200), "image/jpeg").await;
    let r = get(&app, &format!("/thumb/avatar/{id}?width=300")).await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "bad_request"));
    assert!(body["message"].as_str().unwrap().contains("128, 256"), "{body}");
    for q in ["width=abc", "quality=0", "quality=101", "format=gif", "format=heic"] {
        let r = get(&app, &format!("/thumb/avatar/{id}?{q}")).await;
        assert_eq!(error_of(r).await, (400, "bad_request".into()), "{q}");
    }
    assert_eq!(error_of(get(&app, &format!("/thumb/nope/{id}")).await).await, (404, "not_found".into()));
    assert_eq!(error_of(get(&app, "/thumb/avatar/missing-one").await).await, (404, "not_found".into()));
    // Video profiles: a missing original is a 404 like any other; an existing
    // video is a 415 (poster frames are not made).
    let r = get(&app, &format!("/thumb/clip/{id}")).await;
    assert_eq!(error_of(r).await, (404, "not_found".into()), "missing video");
    let shard = Shard::of(&KeyBase::parse(&id).unwrap());
    let mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    put(&app, format!("originals/clips/{}/{id}", shard.as_str()), mp4, "video/mp4").await;
    let r = get(&app, &format!("/thumb/clip/{id}")).await;
    assert_eq!(error_of(r).await, (415, "unsupported_media".into()), "existing video");
    // POST to a video profile: the type check comes first.
    let r = app
        .client
        .post(app.url(&format!("/thumb/clip/{id}x")))
        .bearer_auth(API_KEY)
        .header("content-type", "image/png")
        .body(images::png(10, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "mime_not_allowed".into()), "an image to a video profile");
}

async fn bad_sources(backend: Backend) {
    let app = spawn_secured(backend).await;
    // A PNG claiming 40000×40000 pixels: refused from its header, fast.
    let huge = unique("g");
    put_avatar(&app, &huge, images::png_header_only(40_000, 40_000), "image/png").await;
    let started = Instant::now();
    let r = get(&app, &format!("/thumb/avatar/{huge}")).await;
    assert_eq!(error_of(r).await, (422, "image_too_large".into()));
    assert!(started.elapsed() < Duration::from_secs(5), "refused from the header");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"hello, I am not an image at all".to_vec()),
        ("html", b"<html><body>no</body></html>".to_vec()),
        ("empty", Vec::new()),
        ("truncated jpeg", images::jpeg(400, 300)[..3000].to_vec()),
        ("truncated png", images::png(400, 300)[..200].to_vec()),
        ("jpeg header only", images::jpeg(400, 300)[..20].to_vec()),
    ];
    for (what, data) in cases {
        let id = unique("b");
        put_avatar(&app, &id, data, "image/jpeg").await;
        let r = get(&app, &format!("/thumb/avatar/{id}")).await;
        assert_eq!(error_of(r).await, (415, "unsupported_media".into()), "{what}");
    }
}

async fn concurrent_cold_requests_render_once(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("f");
    put_avatar(&app, &id, images::jpeg(1600, 1200), "image/jpeg").await;
    let before = app.state.thumbs.renders();
    let url = app.url(&format!("/thumb/avatar/{id}?width=256&quality=77"));
    let requests = (0..20).map(|_| {
        let client = app.client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        })
    });
    let bodies: Vec<Bytes> = futures::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]), "identical bytes");
    assert_eq!(decode(&bodies[0]).dimensions(), (256, 192));
    assert_eq!(app.state.thumbs.renders() - before, 1, "made once");
}

/// The window the CI run of 04e4ca8 hit by chance: a request that looked in
/// memory and the store while the first render was ending, and found the
/// variant in neither (not in memory: the cache is off here; not in the
/// store: its write is held), joins the finished render instead of making
/// the variant again.
async fn a_variant_not_yet_stored_is_not_made_again(backend: Backend) {
    let (app, faulty) = crate::common::spawn_faulty_with(
        backend,
        |c| c.cache.memory_bytes = 0,
        |f| *f.hold_puts_under.lock().unwrap() = Some("thumbnails/".into()),
    )
    .await;
    let id = unique("held");
    let path = format!("/thumb/avatar/{id}?width=128");
    // A failed render is not kept: asked for before its original exists, then after.
    assert_eq!(error_of(get(&app, &path).await).await, (404, "not_found".into()));
    put_avatar(&app, &id, images::jpeg(800, 600), "image/jpeg").await;
    let before = app.state.thumbs.renders();
    let first = get(&app, &path).await;
    assert_eq!(first.status(), 200);
    let first = first.bytes().await.unwrap();
    assert_eq!(decode(&first).dimensions(), (128, 96));
    faulty.put_held.notified().await;
    let variant = format!("thumbnails/avatars/{id}_128.webp");
    let head = app.state.store.head(&ObjectKey::parse(variant.as_str()).unwrap()).await;
    assert!(matches!(head, Err(StorageError::NotFound)), "the write is still held");

    let second = get(&app, &path).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.bytes().await.unwrap(), first, "the same variant");
    assert_eq!(app.state.thumbs.renders() - before, 1, "not made again while its write is pending");

    faulty.release_puts.add_permits(1);
    assert!(stored(&app, &variant).await);
    assert!(app.state.lifecycle.wait_for_tasks(Duration::from_secs(20)).await, "the flight ends after the write");
    let third = get(&app, &path).await;
    assert_eq!(third.status(), 200);
    assert_eq!(third.bytes().await.unwrap(), first, "from the store");
    assert_eq!(app.state.thumbs.renders() - before, 1, "from the store, not made again");
}

/// The red quarter of [`images::marked`] is where `at` says, the opposite
/// corner is not red.
fn red_corner(img: &image::DynamicImage, at_left: bool) -> bool {
    let (w, h) = img.dimensions();
    let (x, other) = if at_left { (1, w - 2) } else { (w - 2, 1) };
    near(img.get_pixel(x, 1).0, [255, 0, 0], 40) && !near(img.get_pixel(other, 1).0, [255, 0, 0], 60) && h > 2
}

async fn a_burst_of_sizes_decodes_the_source_once(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("burst");
    let key = format!("originals/gallery/{id}");
    put(&app, key.clone(), images::jpeg(1600, 1200), "image/jpeg").await;
    let thumb = |w: u32| {
        let app = &app;
        let id = id.clone();
        async move {
            let r = get(app, &format!("/thumb/gallery/{id}?width={w}&format=png")).await;
            assert_eq!(r.status(), 200, "width {w}");
            decode(&r.bytes().await.unwrap())
        }
    };
    let before = app.state.thumbs.renders();
    // The first size of a source is decoded the streaming way; the second,
    // asked for within seconds, decodes a master (at 5/8 scale, 1000 px)
    // that covers the others.
    for w in [600u32, 600 - 8, 300, 160, 64] {
        let img = thumb(w).await;
        assert_eq!(img.dimensions(), (w, w * 3 / 4), "width {w}");
        assert!(red_corner(&img, true), "width {w}: the source's red corner, top left");
    }
    assert_eq!(app.state.thumbs.renders() - before, 2, "five sizes, two decodes");
    // Larger than the kept decode covers: decoded again, at full size.
    assert_eq!(thumb(1200).await.dimensions(), (1200, 900));
    assert_eq!(app.state.thumbs.renders() - before, 3, "a larger size decodes again");

    // A new version of the original (mirrored: red at the top right) is
    // never made from the old one's decode, even within its lifetime.
    let mirrored = image::DynamicImage::ImageRgb8(images::marked(1600, 1200)).fliph();
    put(&app, key, images::encode(&mirrored, image::ImageFormat::Jpeg), "image/jpeg").await;
    let img = thumb(400).await;
    assert_eq!(img.dimensions(), (400, 300));
    assert!(red_corner(&img, false), "the new version's red corner, top right");
    assert_eq!(app.state.thumbs.renders() - before, 4, "the new version is decoded");
}

/// Several sizes of one new original asked for at the same moment (a page
/// with the same picture at several sizes, an eager client): every answer is
/// right, none waits on another forever, and the second time nothing is
/// decoded. Concurrent first requests at different DCT scales may each
/// decode (bench/README.md, "Decode once"): the bound is one per size.
async fn a_concurrent_burst_of_sizes_is_right_and_made_once(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("cburst");
    put(&app, format!("originals/gallery/{id}"), images::jpeg(1600, 1200), "image/jpeg").await;
    let widths = [600u32, 592, 300, 160, 64];
    let burst = || {
        futures::future::join_all(widths.map(|w| {
            let client = app.client.clone();
            let url = app.url(&format!("/thumb/gallery/{id}?width={w}&format=png"));
            tokio::spawn(async move {
                let r = client.get(url).send().await.unwrap();
                assert_eq!(r.status(), 200, "width {w}");
                (w, decode(&r.bytes().await.unwrap()))
            })
        }))
    };
    let before = app.state.thumbs.renders();
    // The first size marks the source as seen, so the burst may use masters.
    assert_eq!(
        decode(&get(&app, &format!("/thumb/gallery/{id}?width=400&format=png")).await.bytes().await.unwrap())
            .dimensions(),
        (400, 300)
    );
    for done in burst().await {
        let (w, img) = done.unwrap();
        assert_eq!(img.dimensions(), (w, w * 3 / 4), "width {w}");
        assert!(red_corner(&img, true), "width {w}: the source's red corner, top left");
    }
    let made = app.state.thumbs.renders() - before;
    assert!((2..=1 + widths.len() as u64).contains(&made), "{made} decodes for 1 + {} sizes", widths.len());
    for done in burst().await {
        let (w, img) = done.unwrap();
        assert_eq!(img.dimensions(), (w, w * 3 / 4), "width {w}, again");
    }
    assert_eq!(app.state.thumbs.renders() - before, made, "the same sizes again decode nothing");
}

async fn without_a_decode_cache_every_size_decodes(backend: Backend) {
    let app = spawn_secured_with(backend, |c| c.transforms.decode_cache = 0).await;
    let id = unique("nocache");
    put(&app, format!("originals/gallery/{id}"), images::jpeg(1600, 1200), "image/jpeg").await;
    let before = app.state.thumbs.renders();
    for w in [600u32, 300] {
        let r = get(&app, &format!("/thumb/gallery/{id}?width={w}&format=png")).await;
        assert_eq!(r.status(), 200);
        let img = decode(&r.bytes().await.unwrap());
        assert_eq!(img.dimensions(), (w, w * 3 / 4));
        assert!(red_corner(&img, true));
    }
    assert_eq!(app.state.thumbs.renders() - before, 2);
}

async fn memory_cache_trusts_for_ttl_and_deletes_invalidate(backend: Backend) {
    let app = spawn_secured_with(backend, |c| c.cache.memory_ttl = Duration::from_secs(1)).await;
    let id = unique("m");
    put_avatar(&app, &id, images::jpeg(300, 200), "image/jpeg").await;
    let path = format!("/thumb/avatar/{id}?width=128");
    assert_eq!(get(&app, &path).await.status(), 200);
    let variant = format!("thumbnails/avatars/{id}_128.webp");
    assert!(stored(&app, &variant).await);
    // Removed behind this instance's back (as another instance's delete would):
    // served from memory until the TTL runs out, then 404.
    let shard = Shard::of(&KeyBase::parse(&id).unwrap());
    for key in [variant.clone(), format!("originals/avatars/{}/{id}", shard.as_str())] {
        app.state.store.delete(&ObjectKey::parse(key).unwrap()).await.unwrap();
    }
    assert_eq!(get(&app, &path).await.status(), 200, "from memory");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get(&app, &path).await.status();
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "still served after the TTL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A delete through this instance stops serving at once.
    let id = unique("n");
    put_avatar(&app, &id, images::jpeg(300, 200), "image/jpeg").await;
    let path = format!("/thumb/avatar/{id}?width=128");
    assert_eq!(get(&app, &path).await.status(), 200);
    assert!(stored(&app, &format!("thumbnails/avatars/{id}_128.webp")).await);
    let r = app.client.delete(app.url(&format!("/v1/assets/avatar/{id}"))).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&app, &path).await.status(), 404);
}

async fn post_stores_original_and_every_size(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("p");
    let url = app.url(&format!("/thumb/avatar/{id}"));
    let before = app.state.thumbs.renders();
    // Raw body.
    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "image/png")
        .body(images::png(640, 480))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(app.state.thumbs.renders() - before, 1, "both sizes from one decode");
    let body: serde_json::Value = r.json().await.unwrap();
    let shard = Shard::of(&KeyBase::parse(&id).unwrap());
    assert_eq!(body["object_key"], format!("originals/avatars/{}/{id}", shard.as_str()));
    assert_eq!(body["thumbnails"]["128"], format!("thumbnails/avatars/{id}_128.webp"));
    assert_eq!(body["thumbnails"]["256"], format!("thumbnails/avatars/{id}_256.webp"));
    for (w, h) in [(128, 96), (256, 192)] {
        let key = ObjectKey::parse(body["thumbnails"][w.to_string()].as_str().unwrap()).unwrap();
        let stored = app.state.store.get(&key, None).await.unwrap().collect(1 << 24).await.unwrap();
        assert_eq!(decode(&stored).dimensions(), (w, h));
    }
    let r = get(&app, &format!("/originals/avatar/{id}")).await;
    assert_eq!(r.headers()["content-type"], "image/png", "sniffed type stored");

    // Multipart form, replacing the original: the old variants (all formats) go.
    let extra = format!("thumbnails/avatars/{id}_128_q10.jpeg");
    put(&app, extra.clone(), b"old".to_vec(), "image/jpeg").await;
    let form = reqwest::multipart::Form::new()
        .text("note", "ignored")
        .part("file", reqwest::multipart::Part::bytes(images::jpeg(400, 400)).file_name("x.jpg"));
    let r = app.client.post(&url).bearer_auth(API_KEY).multipart(form).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(matches!(app.state.store.head(&ObjectKey::parse(extra).unwrap()).await, Err(StorageError::NotFound)));
    let img = decode(&get(&app, &format!("/thumb/avatar/{id}?width=128")).await.bytes().await.unwrap());
    assert_eq!(img.dimensions(), (128, 128), "the new original's variant, not a cached old one");

    // Errors: auth first, a non-image, an oversize body, no file field.
    let r = app.client.post(&url).header("content-type", "image/png").body(images::png(10, 10)).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "image/png")
        .body("plain text")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "mime_not_allowed".into()));
    let gif = images::encode(&image::DynamicImage::ImageRgb8(images::marked(20, 20)), image::ImageFormat::Gif);
    let r =
        app.client.post(&url).bearer_auth(API_KEY).header("content-type", "image/gif").body(gif).send().await.unwrap();
    assert_eq!(error_of(r).await, (400, "mime_not_allowed".into()), "avatar does not allow GIF");
    let big = vec![0u8; 5_242_881];
    let r =
        app.client.post(&url).bearer_auth(API_KEY).header("content-type", "image/jpeg").body(big).send().await.unwrap();
    assert_eq!(error_of(r).await, (413, "size_too_large".into()));
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(vec![0u8; 5_300_000]));
    let r = app.client.post(&url).bearer_auth(API_KEY).multipart(form).send().await.unwrap();
    assert_eq!(error_of(r).await, (413, "size_too_large".into()), "multipart over the limit");
    let form = reqwest::multipart::Form::new().text("other", "x");
    let r = app.client.post(&url).bearer_auth(API_KEY).multipart(form).send().await.unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "image/jpeg")
        .body(images::jpeg(400, 300)[..3000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (415, "unsupported_media".into()), "truncated: nothing stored");
}

/// A `{ext}` profile: an id without its extension finds the stored original
/// (one list call) for thumbnails, originals and deletion.
async fn ext_profiles_find_the_original_without_its_extension(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("x");
    let png = images::png(300, 200);
    put(&app, format!("originals/scans/{id}.png"), png.clone(), "image/png").await;
    for path in [format!("/originals/scan/{id}"), format!("/originals/scan/{id}.png")] {
        let r = get(&app, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.bytes().await.unwrap(), Bytes::from(png.clone()), "{path}");
    }
    let r = get(&app, &format!("/thumb/scan/{id}?width=64")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (64, 43));
    assert_eq!(error_of(get(&app, &format!("/originals/scan/{id}-other")).await).await, (404, "not_found".into()));
    assert_eq!(error_of(get(&app, &format!("/thumb/scan/{id}-other?width=64")).await).await, (404, "not_found".into()));
    assert!(stored(&app, &format!("thumbnails/scans/{id}_64.webp")).await);
    let r = app.client.delete(app.url(&format!("/v1/assets/scan/{id}"))).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let gone = app.state.store.head(&ObjectKey::parse(format!("originals/scans/{id}.png")).unwrap()).await;
    assert!(matches!(gone, Err(StorageError::NotFound)), "the original is deleted");
    assert_eq!(error_of(get(&app, &format!("/originals/scan/{id}")).await).await, (404, "not_found".into()));
}

both_backends!(
    widths_formats_and_stored_variants,
    no_upscaling_and_profile_spelling,
    exif_orientation_applied_and_metadata_stripped,
    alpha_kept_or_flattened,
    conditional_requests_and_auto_format,
    request_errors,
    bad_sources,
    concurrent_cold_requests_render_once,
    a_variant_not_yet_stored_is_not_made_again,
    a_burst_of_sizes_decodes_the_source_once,
    a_concurrent_burst_of_sizes_is_right_and_made_once,
    without_a_decode_cache_every_size_decodes,
    memory_cache_trusts_for_ttl_and_deletes_invalidate,
    post_stores_original_and_every_size,
    ext_profiles_find_the_original_without_its_extension,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let app = spawn_secured_with(Backend::Fs, |c| {
        c.transforms.concurrency = 1;
        c.transforms.queue = 0;
    })
    .await;
    let id = unique("q");
    put(&app, format!("originals/gallery/{id}"), images::jpeg(2400, 1600), "image/jpeg").await;
    let requests = (0..10).map(|i| {
        let client = app.client.clone();
        let url = app.url(&format!("/thumb/gallery/{id}?width={}", 300 + i));
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    });
    let mut ok = 0;
    let mut overloaded = 0;
    for r in futures::future::join_all(requests).await {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                assert_eq!(error_of(r).await.1, "overloaded");
                overloaded += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(ok >= 1 && overloaded >= 1, "ok {ok}, overloaded {overloaded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_photo_formats_decode() {
    let app = spawn_secured(Backend::Fs).await;
    let read = |file: &str| std::fs::read(format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    // Photoshop CMYK (YCCK) JPEG: red "RED" lettering and frame on black.
    let id = unique("k");
    put(&app, format!("originals/gallery/{id}"), read("cmyk.jpg"), "image/jpeg").await;
    let img = decode(&get(&app, &format!("/thumb/gallery/{id}?width=200&format=png")).await.bytes().await.unwrap());
    assert_eq!(img.dimensions(), (100, 100));
    assert!(near(img.get_pixel(50, 50).0, [0, 0, 0], 40), "black background: {:?}", img.get_pixel(50, 50));
    let red = img.pixels().filter(|(_, _, p)| p.0[0] > 180 && p.0[1] < 90 && p.0[2] < 90).count();
    assert!(red > 300, "red lettering, not inverted or grey: {red} red pixels");
    // Lossy WebP photo.
    let id = unique("w");
    put(&app, format!("originals/gallery/{id}"), read("flower.webp"), "image/webp").await;
    let img = decode(&get(&app, &format!("/thumb/gallery/{id}?width=200&format=png")).await.bytes().await.unwrap());
    assert_eq!(img.dimensions(), (200, 150));
    let px = img.get_pixel(100, 75).0;
    assert!(px[..3].iter().any(|&c| c > 30) && px[..3].iter().any(|&c| c < 230), "a photo, not blank: {px:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversize_body_is_refused_before_it_is_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_secured(Backend::Fs).await;
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /thumb/avatar/x1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: image/jpeg\r\nContent-Length: 100000000\r\nExpect: 100-continue\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "413 without asking for the body (no 100 Continue): {text}");
}

/// A hit is answered before the router (`http::hits`); its answer must be
/// the one the router gives for the same request: same status, headers and
/// body, but for the request id and date.
#[tokio::test]
async fn a_hit_answers_as_the_router_does() {
    // CORS for any origin (the default), and for a list of origins: the hit
    // path works the CORS headers out at start-up, per listed origin.
    hit_matches_router(spawn_secured(Backend::Fs).await, &[]).await;
    let listed = "https://app.example";
    let app = spawn_secured_with(Backend::Fs, |c| c.http.cors_origins = vec![listed.into()]).await;
    hit_matches_router(app, &[listed, "https://other.example"]).await;
}

async fn hit_matches_router(app: TestApp, origins: &[&str]) {
    use axum::body::Body;
    use tower::ServiceExt;
    let id = unique("h");
    put_avatar(&app, &id, images::jpeg(300, 200), "image/jpeg").await;
    for path in [format!("/thumb/avatar/{id}?width=128"), format!("/thumb/avatar/{id}?width=128&format=auto")] {
        assert_eq!(app.client.get(app.url(&path)).header("accept", "image/webp").send().await.unwrap().status(), 200);
    }
    let fast = mediaflow::app(app.state.clone());
    let slow = mediaflow::http::router(app.state.clone());
    let first = fast
        .clone()
        .oneshot(axum::http::Request::get(format!("/thumb/avatar/{id}?width=128")).body(Body::empty()).unwrap());
    let etag = first.await.unwrap().headers()["etag"].to_str().unwrap().to_owned();
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("GET", format!("/thumb/avatar/{id}?width=128"), vec![]),
        ("HEAD", format!("/thumb/avatar/{id}?width=128"), vec![]),
        ("GET", format!("/thumb/avatar/{id}?width=128"), vec![("origin", "https://app.example")]),
        ("HEAD", format!("/thumb/avatar/{id}?width=128"), vec![("origin", "https://other.example")]),
        ("GET", format!("/thumb/avatar/{id}?width=128"), vec![("origin", "null")]),
        ("GET", format!("/thumb/avatar/{id}?width=128&format=auto"), vec![("accept", "image/webp,*/*")]),
        ("GET", format!("/thumb/avatar/{id}?width=128"), vec![("if-none-match", etag.as_str())]),
        ("HEAD", format!("/thumb/avatar/{id}?width=128&unknown=1"), vec![("if-none-match", "\"other\"")]),
    ];
    let mut expected_hits = fast.hits_answered();
    for (method, path, headers) in cases {
        let request = || {
            let mut r = axum::http::Request::builder().method(method).uri(&path);
            for (k, v) in &headers {
                r = r.header(*k, *v);
            }
            r.body(Body::empty()).unwrap()
        };
        let routed = slow.clone().oneshot(request()).await.unwrap();
        let hit = fast.clone().oneshot(request()).await.unwrap();
        expected_hits += 1;
        assert_eq!(fast.hits_answered(), expected_hits, "{method} {path} {headers:?} was not a hit");
        assert_eq!(hit.status(), routed.status(), "{method} {path} {headers:?}");
        // axum adds `content-length: 0` to the router's 304 in process; hyper
        // drops it on the wire, where the two answers are the same.
        let shown = |r: &axum::http::Response<Body>| {
            let not_modified = r.status() == 304;
            let mut h: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "x-request-id" | "date"))
                .filter(|(k, _)| !(not_modified && *k == "content-length"))
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            h.sort();
            h
        };
        assert_eq!(shown(&hit), shown(&routed), "{method} {path} {headers:?}");
        // The CORS headers are there, and allow what the configuration does.
        assert!(hit.headers().contains_key("vary"), "{method} {path} {headers:?}");
        let origin = headers.iter().find(|(k, _)| *k == "origin").map(|(_, v)| *v);
        let allowed = hit.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap());
        let expected = match (origins.is_empty(), origin) {
            (true, _) => Some("*"),
            (false, Some(o)) if origins[0] == o => Some(o),
            (false, _) => None,
        };
        assert_eq!(allowed, expected, "{method} {path} {headers:?}");
        assert_eq!(hit.headers()["x-request-id"].len(), 24, "a request id is made");
        let (hit_body, routed_body) = (
            axum::body::to_bytes(hit.into_body(), 1 << 20).await.unwrap(),
            axum::body::to_bytes(routed.into_body(), 1 << 20).await.unwrap(),
        );
        assert_eq!(hit_body, routed_body);
        if method == "GET" && !headers.iter().any(|(k, _)| *k == "if-none-match") {
            assert_eq!(decode(&hit_body).dimensions(), (128, 85));
        }
    }
    // Not hits: a size not made yet, a repeated parameter (the router's 400),
    // a miss of another id; all answered by the router as before.
    for (path, status) in [
        (format!("/thumb/avatar/{id}?width=256"), 200),
        (format!("/thumb/avatar/{id}?width=128&width=256"), 400),
        ("/thumb/avatar/nope?width=128".to_owned(), 404),
    ] {
        let r = fast.clone().oneshot(axum::http::Request::get(&path).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(fast.hits_answered(), expected_hits, "{path} is not a hit");
    }
}
