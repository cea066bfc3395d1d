//! Trust under abuse (issue 11): tenants cannot see each other's variants,
//! variant floods need signed URLs, one MIME rule, one auth rule, refused
//! requests are answered before the connection closes, and the overlap rules
//! of profiles hold. Both backends where a store is involved.

use std::time::{Duration, Instant};

use crate::common::images::{self, decode, near};
use crate::common::{API_KEY, Backend, TestApp, error_of, presign_and_put, spawn_secured, spawn_secured_with, unique};
use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn solid_jpeg(rgb: [u8; 3]) -> Vec<u8> {
    images::encode(&DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 200, Rgb(rgb))), ImageFormat::Jpeg)
}

/// Presigns and PUTs a single upload; returns the object key.
async fn upload(app: &TestApp, body: Value, data: Vec<u8>) -> String {
    presign_and_put(app, &body, data).await["object_key"].as_str().unwrap().to_owned()
}

async fn thumb_pixel(app: &TestApp, path: &str) -> [u8; 4] {
    let r = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    decode(&r.bytes().await.unwrap()).get_pixel(10, 10).0
}

async fn shards_never_share_variants(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("pic");
    let a = upload(
        &app,
        json!({"profile": "avatar", "key_base": id, "shard": "tenant-a", "mime": "image/jpeg", "size_bytes": solid_jpeg([255, 0, 0]).len()}),
        solid_jpeg([255, 0, 0]),
    )
    .await;
    let b = upload(
        &app,
        json!({"profile": "avatar", "key_base": id, "shard": "tenant-b", "mime": "image/jpeg", "size_bytes": solid_jpeg([0, 0, 255]).len()}),
        solid_jpeg([0, 0, 255]),
    )
    .await;
    assert_eq!(a, format!("originals/avatars/tenant-a/{id}"));
    assert_eq!(b, format!("originals/avatars/tenant-b/{id}"));
    // Each tenant gets its own image, whichever is asked first.
    let red = thumb_pixel(&app, &format!("/thumb/avatar/{id}?shard=tenant-a&width=128")).await;
    assert!(near(red, [255, 0, 0], 40), "tenant-a is red: {red:?}");
    let blue = thumb_pixel(&app, &format!("/thumb/avatar/{id}?shard=tenant-b&width=128")).await;
    assert!(near(blue, [0, 0, 255], 40), "tenant-b is blue, not tenant-a's cached variant: {blue:?}");
    // A shard that holds no original is 404 even though other shards' variants exist.
    let r = app.client.get(app.url(&format!("/thumb/avatar/{id}?shard=nonexistent&width=128"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    let r = app.client.get(app.url(&format!("/thumb/avatar/{id}?width=128"))).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()), "no original under the computed shard");
    // The variants live under the reserved `_shard` folder.
    assert!(app.state.lifecycle.wait_for_tasks(Duration::from_secs(20)).await);
    let key =
        |s: &str| mediaflow::storage::ObjectKey::parse(format!("thumbnails/avatars/_shard/{s}/{id}_128.webp")).unwrap();
    app.state.store.head(&key("tenant-a")).await.expect("tenant-a's variant");
    app.state.store.head(&key("tenant-b")).await.expect("tenant-b's variant");
    // Deleting tenant-a's asset touches only tenant-a's objects.
    let r = app
        .client
        .delete(app.url(&format!("/v1/assets/avatar/{id}?shard=tenant-a")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["objects_deleted"], 2, "the original and its one variant: {body}");
    assert!(app.state.store.head(&key("tenant-a")).await.is_err());
    app.state.store.head(&key("tenant-b")).await.expect("tenant-b's variant survives");
    let blue = thumb_pixel(&app, &format!("/thumb/avatar/{id}?shard=tenant-b&width=128")).await;
    assert!(near(blue, [0, 0, 255], 40));
    let r = app.client.get(app.url(&format!("/thumb/avatar/{id}?shard=tenant-a&width=128"))).send().await.unwrap();
    assert_eq!(r.status(), 404, "no cached copy of the deleted tenant's variant");
}

async fn a_variant_never_outlives_its_deleted_original(backend: Backend) {
    let app = spawn_secured(backend).await;
    for round in 0..8 {
        let id = unique("race");
        let key = format!(
            "originals/avatars/{}/{id}",
            mediaflow::storage::keys::Shard::of(&mediaflow::storage::keys::KeyBase::parse(&id).unwrap()).as_str()
        );
        let opts = mediaflow::storage::PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false };
        app.state
            .store
            .put(&mediaflow::storage::ObjectKey::parse(key).unwrap(), images::jpeg(1600, 1200).into(), opts)
            .await
            .unwrap();
        // A render and a delete at once, with the delete a little later each round.
        let render = app.client.get(app.url(&format!("/thumb/avatar/{id}?width=256"))).send();
        let delete = async {
            tokio::time::sleep(Duration::from_millis(5 * round)).await;
            app.client.delete(app.url(&format!("/v1/assets/avatar/{id}"))).bearer_auth(API_KEY).send().await.unwrap()
        };
        let (_, deleted) = tokio::join!(render, delete);
        assert_eq!(deleted.status(), 200);
        assert!(app.state.lifecycle.wait_for_tasks(Duration::from_secs(20)).await);
        let variant = mediaflow::storage::ObjectKey::parse(format!("thumbnails/avatars/{id}_256.webp")).unwrap();
        assert!(app.state.store.head(&variant).await.is_err(), "round {round}: the variant outlived its original");
    }
}

both_backends!(shards_never_share_variants, a_variant_never_outlives_its_deleted_original);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_urls_outside_the_listed_sizes_need_a_signature() {
    let app = spawn_secured_with(Backend::Fs, |c| {
        c.thumb_signing_key = Some(mediaflow::config::Secret::new("k-test-0123"));
    })
    .await;
    let id = unique("s");
    app.state
        .store
        .put(
            &mediaflow::storage::ObjectKey::parse(format!("originals/gallery/{id}")).unwrap(),
            images::jpeg(800, 600).into(),
            mediaflow::storage::PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false },
        )
        .await
        .unwrap();
    let status = |path: String| {
        let app = &app;
        async move { app.client.get(app.url(&path)).send().await.unwrap() }
    };
    // Listed sizes stay public.
    assert_eq!(status(format!("/thumb/gallery/{id}?width=200")).await.status(), 200);
    assert_eq!(status(format!("/thumb/gallery/{id}?width=100&format=png")).await.status(), 200);
    // Any other width, or any quality, needs `sig`.
    for query in ["width=333", "width=200&quality=50"] {
        let r = status(format!("/thumb/gallery/{id}?{query}")).await;
        assert_eq!(error_of(r).await, (403, "forbidden".into()), "{query}");
    }
    let signer = mediaflow::thumbs::UrlSignature::new("k-test-0123");
    let signed = signer.sign_url(&format!("/thumb/gallery/{id}?width=333&format=png"));
    let r = status(signed.clone()).await;
    assert_eq!(r.status(), 200, "{signed}");
    assert_eq!(decode(&r.bytes().await.unwrap()).dimensions(), (333, 250));
    // Parameters in another order still verify; another value does not.
    let sig = signed.split("sig=").nth(1).unwrap();
    assert_eq!(status(format!("/thumb/gallery/{id}?format=png&sig={sig}&width=333")).await.status(), 200);
    let r = status(format!("/thumb/gallery/{id}?width=334&format=png&sig={sig}")).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
    let r = status(format!("/thumb/gallery/{id}?width=333&format=png&sig=AAAA")).await;
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_auth_header_carrying_the_key_authorizes() {
    let app = spawn_secured(Backend::Fs).await;
    let presign = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let mut r = app
                .client
                .post(app.url("/v1/uploads/presign"))
                .json(&json!({"profile": "avatar", "key_base": unique("a"), "mime": "image/png", "size_bytes": 100}));
            for (name, value) in headers {
                r = r.header(name, value);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    let bearer = |k: &str| ("authorization", format!("Bearer {k}"));
    let header = |k: &str| ("x-api-key", k.to_owned());
    assert_eq!(presign(vec![bearer("wrong"), header(API_KEY)]).await, 200);
    assert_eq!(presign(vec![bearer(API_KEY), header("wrong")]).await, 200);
    assert_eq!(presign(vec![bearer(API_KEY)]).await, 200);
    assert_eq!(presign(vec![header(API_KEY)]).await, 200);
    assert_eq!(presign(vec![bearer("wrong"), header("wrong")]).await, 401);
    assert_eq!(presign(vec![]).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mime_rule_for_presign_and_extensions() {
    let app = spawn_secured(Backend::Fs).await;
    let presign = |body: Value| {
        let app = &app;
        async move { app.client.post(app.url("/v1/uploads/presign")).bearer_auth(API_KEY).json(&body).send().await.unwrap() }
    };
    // An alias a client sends resolves to the canonical type, which the URL binds.
    let r =
        presign(json!({"profile": "avatar", "key_base": unique("m"), "mime": "image/jpg", "size_bytes": 100})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["upload"]["single"]["headers"]["Content-Type"], "image/jpeg");
    // With {ext} in the template, the extension must be the type's.
    let r = presign(
        json!({"profile": "scan", "key_base": unique("m"), "ext": "html", "mime": "image/jpeg", "size_bytes": 100}),
    )
    .await;
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    let r = presign(
        json!({"profile": "scan", "key_base": unique("m"), "ext": "jpeg", "mime": "image/jpeg", "size_bytes": 100}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r =
        presign(json!({"profile": "avatar", "key_base": unique("m"), "mime": "text/html", "size_bytes": 100})).await;
    assert_eq!(error_of(r).await, (400, "mime_not_allowed".into()));
    // A profile listing an alias does not load, and says what to write.
    let yaml =
        "profiles:\n  p:\n    allowed_mimes: [image/jpg]\n    size_max_bytes: 10\n    storage_path: o/{key_base}\n";
    let e = mediaflow::config::Profiles::parse(yaml, "f.yaml").unwrap_err().to_string();
    assert!(e.contains("image/jpeg") && e.contains("allowed_mimes"), "{e}");
    let yaml = yaml.replace("image/jpg", "video/webm");
    assert!(mediaflow::config::Profiles::parse(&yaml, "f.yaml").is_ok(), "video/webm is known");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_naming_another_profiles_folder_is_refused() {
    // tests/fixtures/profiles.yaml has no `default`: the built-in one stores
    // at originals/{shard?}/{key_base}, where shard `avatars` is a profile's folder.
    let app = spawn_secured(Backend::Fs).await;
    let r = app
        .client
        .post(app.url("/v1/uploads/presign"))
        .bearer_auth(API_KEY)
        .json(&json!({"key_base": "x", "mime": "image/png", "size_bytes": 10, "shard": "avatars"}))
        .send()
        .await
        .unwrap();
    let (status, code) = error_of(r).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    let r = app.client.get(app.url("/originals/default/x?shard=gallery")).send().await.unwrap();
    assert_eq!(error_of(r).await.0, 400);
}

/// Reads one HTTP/1.1 answer's head from a raw connection.
async fn read_head(conn: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert!(n > 0, "connection closed without an answer: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_terabyte_is_refused_at_once() {
    let app = spawn_secured(Backend::Fs).await;
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /thumb/avatar/x1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: image/jpeg\r\nContent-Length: 1099511627776\r\n\r\n"
    );
    let started = Instant::now();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[0xff, 0xd8, 0xff, 0xe0]).await.unwrap();
    let answer = read_head(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10), "at once, not after a timeout: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_are_answered_before_the_connection_closes() {
    // A client still sending a body the server refused must read the answer,
    // not a reset: 30 tries, every one answered.
    let app = spawn_secured(Backend::Fs).await;
    let body = vec![7u8; 4 * 1024 * 1024];
    for i in 0..30 {
        let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /thumb/avatar/x1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer wrong\r\n\
             Content-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        // As many clients do: send the whole body first, then read.
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.write_all(&body)).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await.unwrap() {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!("try {i}: {e} after {:?}", String::from_utf8_lossy(&answer)),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 401"), "try {i}: {text}");
        assert!(text.to_ascii_lowercase().contains("connection: close"), "try {i}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_urls_are_built_only_from_a_plain_host() {
    let app = spawn_secured(Backend::Fs).await;
    let presign = |headers: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
            let body = json!({"profile": "avatar", "key_base": unique("h"), "mime": "image/png", "size_bytes": 100})
                .to_string();
            let extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
            let req = format!(
                "POST /v1/uploads/presign HTTP/1.1\r\n{extra}Authorization: Bearer {API_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            conn.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let ok = presign(vec![("Host", "media.example.com:8080")]).await;
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("http://media.example.com:8080/_upload/"), "{ok}");
    let bad = presign(vec![("Host", "evil.example?")]).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    // Forwarded headers are not trusted unless TRUST_FORWARDED_HEADERS says so.
    let fwd = presign(vec![("Host", "media.example.com"), ("X-Forwarded-Host", "evil.example")]).await;
    assert!(fwd.contains("http://media.example.com/_upload/") && !fwd.contains("evil"), "{fwd}");
}

async fn huge_last_byte_positions_clamp(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("r");
    let data = images::jpeg(64, 64);
    let key = format!("originals/gallery/{id}");
    app.state
        .store
        .put(
            &mediaflow::storage::ObjectKey::parse(key).unwrap(),
            data.clone().into(),
            mediaflow::storage::PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false },
        )
        .await
        .unwrap();
    for range in ["bytes=0-18446744073709551615", "bytes=10-99999999999999999999999"] {
        let r =
            app.client.get(app.url(&format!("/originals/gallery/{id}"))).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        let start: usize = range[6..].split('-').next().unwrap().parse().unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[start..], "{range}");
    }
}

both_backends!(huge_last_byte_positions_clamp);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_listed_publicly_without_the_storage_layout() {
    let app = spawn_secured(Backend::Fs).await;
    let r = app.client.get(app.url("/v1/profiles")).send().await.unwrap();
    assert_eq!(r.status(), 200, "public: no API key");
    let body: Value = r.json().await.unwrap();
    let avatar = &body["profiles"]["avatar"];
    assert_eq!(avatar["kind"], "image");
    assert_eq!(avatar["allowed_mimes"], json!(["image/jpeg", "image/png", "image/webp"]));
    assert_eq!(avatar["size_max_bytes"], 5_242_880);
    assert_eq!(avatar["part_size_bytes"], 8 * 1024 * 1024);
    assert_eq!(avatar["sizes"], json!(["128", "256"]));
    assert_eq!(avatar["default_size"], "256");
    assert_eq!(avatar["format"], "webp");
    assert!(avatar["extensions"].as_array().unwrap().contains(&json!("jpg")));
    assert_eq!(body["profiles"]["clip"]["kind"], "video");
    assert_eq!(body["profiles"]["clip"]["max_batch_size"], 2);
    let text = body.to_string();
    assert!(!text.contains("originals/") && !text.contains("thumbnails/"), "no storage layout: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originals_carry_a_file_name_and_unknown_profiles_list_the_known_ones() {
    let app = spawn_secured(Backend::Fs).await;
    let id = unique("n");
    upload(
        &app,
        json!({"profile": "avatar", "key_base": id, "mime": "image/jpeg", "size_bytes": solid_jpeg([1, 2, 3]).len()}),
        solid_jpeg([1, 2, 3]),
    )
    .await;
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.headers()["content-disposition"], format!("inline; filename=\"{id}.jpg\"").as_str());
    let r = app.client.get(app.url(&format!("/thumb/avatar/{id}?width=128"))).send().await.unwrap();
    assert_eq!(r.headers()["content-disposition"], format!("inline; filename=\"{id}_128.webp\"").as_str());
    let r = app.client.get(app.url("/originals/nope/x")).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("avatar, cards, clip"), "{body}");
}
