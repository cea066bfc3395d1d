//! Direct uploads end to end, on both backends, with a real HTTP client doing
//! the PUTs to the presigned URLs (SeaweedFS's, or the fs backend's own).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{API_KEY, Backend, TestApp, error_of, images, spawn_secured, spawn_secured_with, unique};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

/// Bytes that sniff as JPEG (a JFIF header) followed by a pattern.
fn jpeg_like(len: usize) -> Vec<u8> {
    let mut v = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00];
    v.extend((0..len - v.len()).map(|i| (i % 253) as u8));
    v
}

/// Bytes that sniff as MP4 (an ftyp box) followed by a pattern.
fn mp4_like(len: usize) -> Vec<u8> {
    let mut v = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    v.extend((0..len - v.len()).map(|i| (i * 7 % 251) as u8));
    v
}

fn random_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

async fn presign(app: &TestApp, body: Value) -> reqwest::Response {
    app.client.post(app.url("/v1/uploads/presign")).bearer_auth(API_KEY).json(&body).send().await.unwrap()
}

async fn presign_ok(app: &TestApp, body: Value) -> Value {
    let r = presign(app, body).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// PUTs `body` to a presigned action with exactly its headers (the client
/// computes Content-Length from the body itself).
async fn put_to(client: &reqwest::Client, action: &Value, body: Vec<u8>) -> reqwest::Response {
    assert_eq!(action["method"], "PUT");
    let mut req = client.put(action["url"].as_str().unwrap());
    for (name, value) in action["headers"].as_object().unwrap() {
        if !name.eq_ignore_ascii_case("content-length") {
            req = req.header(name, value.as_str().unwrap());
        }
    }
    req.body(body).send().await.unwrap()
}

async fn single_upload_end_to_end(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("u");
    let data = jpeg_like(100_000);
    let answer = presign_ok(
        &app,
        json!({"key_base": id, "mime": "image/jpeg", "size_bytes": data.len(), "kind": "image", "profile": "avatar"}),
    )
    .await;
    let key = answer["object_key"].as_str().unwrap();
    assert!(key.starts_with("originals/avatars/") && key.ends_with(&id), "{key}");
    let single = &answer["upload"]["single"];
    assert_eq!(single["headers"]["Content-Type"], "image/jpeg");
    assert_eq!(single["headers"]["Content-Length"], data.len().to_string());
    assert_eq!(single["headers"]["If-None-Match"], "*");
    let expires = single["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.len() == 20, "RFC 3339 seconds: {expires}");

    // Another length or type is refused by the store, and nothing is stored.
    let mut wrong_len = single.clone();
    wrong_len["headers"]["Content-Length"] = json!("1");
    assert_eq!(put_to(&app.client, &wrong_len, data[..99_999].to_vec()).await.status(), 403);
    let mut wrong_type = single.clone();
    wrong_type["headers"]["Content-Type"] = json!("image/png");
    assert_eq!(put_to(&app.client, &wrong_type, data.clone()).await.status(), 403);
    let mut no_inm = single.clone();
    no_inm["headers"].as_object_mut().unwrap().remove("If-None-Match");
    assert_eq!(put_to(&app.client, &no_inm, data.clone()).await.status(), 403);
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 404, "refused PUTs store nothing");

    let put = put_to(&app.client, single, data.clone()).await;
    assert_eq!(put.status(), 200);
    assert!(put.headers().contains_key("etag"));
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}.jpg"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap(), data);

    // A second upload to the same key never overwrites.
    let again =
        presign_ok(&app, json!({"key_base": id, "mime": "image/jpeg", "size_bytes": data.len(), "profile": "avatar"}))
            .await;
    let other = jpeg_like(100_000).into_iter().rev().collect::<Vec<u8>>();
    assert_eq!(put_to(&app.client, &again["upload"]["single"], other).await.status(), 412);
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);
}

async fn presign_error_paths(backend: Backend) {
    let app = spawn_secured(backend).await;
    let url = app.url("/v1/uploads/presign");
    let good =
        json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 1000, "kind": "image", "profile": "avatar"});
    // Auth first: even a malformed body is 401 without the key.
    let r = app.client.post(&url).body("{not json").send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app.client.post(&url).header("x-api-key", "wrong").json(&good).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app.client.post(&url).header("x-api-key", API_KEY).json(&good).send().await.unwrap();
    assert_eq!(r.status(), 200, "X-API-Key works too");

    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    let r = app
        .client
        .post(&url)
        .bearer_auth(API_KEY)
        .json(&json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": "big"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));

    let cases = [
        (json!({"mime": "image/jpeg", "size_bytes": 10, "profile": "avatar"}), 400, "bad_request"),
        (json!({"key_base": "k1", "size_bytes": 10, "profile": "avatar"}), 400, "bad_request"),
        (json!({"key_base": "k1", "mime": "image/jpeg", "profile": "avatar"}), 400, "bad_request"),
        (json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 0, "profile": "avatar"}), 400, "bad_request"),
        (json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": -5, "profile": "avatar"}), 400, "bad_request"),
        (json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 10, "profile": "nope"}), 400, "bad_request"),
        (
            json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 10, "profile": "avatar", "kind": "video"}),
            400,
            "bad_request",
        ),
        (
            json!({"key_base": "k1", "mime": "image/gif", "size_bytes": 10, "profile": "avatar"}),
            400,
            "mime_not_allowed",
        ),
        (
            json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 5_242_881, "profile": "avatar"}),
            400,
            "size_too_large",
        ),
        (
            json!({"key_base": "k1", "mime": "video/mp4", "size_bytes": 6_000_000_000u64, "profile": "huge", "multipart": "off"}),
            400,
            "bad_request",
        ),
        (
            json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 10, "profile": "avatar", "multipart": "sometimes"}),
            400,
            "bad_request",
        ),
        (json!({"key_base": "../k1", "mime": "image/jpeg", "size_bytes": 10, "profile": "avatar"}), 400, "bad_request"),
        (
            json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 10, "profile": "avatar", "shard": "../x"}),
            400,
            "bad_request",
        ),
        (
            json!({"key_base": "k1", "mime": "image/jpeg", "size_bytes": 10, "profile": "scan", "ext": "j/g"}),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let r = presign(&app, body.clone()).await;
        assert_eq!(error_of(r).await, (status, code.to_owned()), "{body}");
    }
    // Without a profile, `default` is used.
    let a = presign_ok(&app, json!({"key_base": "d1", "mime": "image/png", "size_bytes": 10})).await;
    assert!(a["object_key"].as_str().unwrap().starts_with("originals/"), "{a}");
    // {ext} templates take the extension from the MIME type when none is sent.
    let a = presign_ok(&app, json!({"key_base": "s1", "mime": "image/png", "size_bytes": 10, "profile": "scan"})).await;
    assert_eq!(a["object_key"], "originals/scans/s1.png");
}

/// Uploads `data` through a presigned multipart upload of the `clip` profile
/// using rolling batches, without the API key after the presign.
async fn multipart_upload(
    app: &TestApp,
    other: &TestApp,
    id: &str,
    data: &[u8],
    mime: &str,
    profile: &str,
) -> (Value, reqwest::Response) {
    let answer = presign_ok(
        app,
        json!({"key_base": id, "mime": mime, "size_bytes": data.len(), "profile": profile, "multipart": "force"}),
    )
    .await;
    let mp = &answer["upload"]["multipart"];
    let part_size = mp["part_size"].as_u64().unwrap() as usize;
    let total = mp["total_parts"].as_u64().unwrap() as u32;
    assert_eq!(total as usize, data.len().div_ceil(part_size));
    let token = mp["upload_token"].as_str().unwrap();
    let upload_id = mp["upload_id"].as_str().unwrap();
    let key = answer["object_key"].as_str().unwrap();
    let mut parts: Vec<Value> = mp["parts"].as_array().unwrap().clone();
    let mut info = mp["batch_info"].clone();
    let mut etags = Vec::new();
    let mut n = 1u32;
    loop {
        for part in &parts {
            assert_eq!(part["part_number"], n);
            let start = (n as usize - 1) * part_size;
            let chunk = data[start..(start + part_size).min(data.len())].to_vec();
            assert_eq!(part["headers"]["Content-Length"], chunk.len().to_string(), "each part URL binds its length");
            let r = put_to(&app.client, part, chunk).await;
            assert_eq!(r.status(), 200, "part {n}");
            etags.push(json!({"part_number": n, "etag": r.headers()["etag"].to_str().unwrap()}));
            n += 1;
        }
        if !info["has_more_parts"].as_bool().unwrap() {
            break;
        }
        // The next batch, from the other instance, authorised by the token alone.
        let r = other
            .client
            .post(other.url("/v1/uploads/presign/parts"))
            .json(&json!({"object_key": key, "upload_id": upload_id, "upload_token": token, "start_part": info["next_part_number"], "count": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let batch: Value = r.json().await.unwrap();
        parts = batch["parts"].as_array().unwrap().clone();
        info = batch["batch_info"].clone();
    }
    assert_eq!(n - 1, total);
    // Resume listing, token in the header, no API key.
    let encoded = key.replace('/', "%2F");
    let r = other
        .client
        .get(other.url(&format!("/v1/uploads/{encoded}/parts/{upload_id}")))
        .header("x-upload-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed["parts"].as_array().unwrap().len(), total as usize);
    assert_eq!(listed["parts"][0]["size"], part_size);
    // Complete with the complete action's URL (token in the query), on the other instance.
    let complete = &mp["complete"];
    assert_eq!(complete["method"], "POST");
    let url = complete["url"].as_str().unwrap().replace(&app.base, &other.base);
    let r = other.client.post(url).json(&json!({"parts": etags})).send().await.unwrap();
    (answer, r)
}

async fn multipart_rolling_batches_end_to_end(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("m");
    let data = mp4_like(12 * MIB + 12345);
    let (answer, r) = multipart_upload(&app, &app, &id, &data, "video/mp4", "clip").await;
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done, json!({"status": "completed", "object_key": answer["object_key"]}));
    let r = app.client.get(app.url(&format!("/originals/clip/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let got = r.bytes().await.unwrap();
    assert!(got.len() == data.len() && got == data, "the original is the uploaded bytes");
    // Completing again (a client that lost the answer): the stored object
    // carries this upload id, so the same answer, with the token or the key.
    let complete = answer["upload"]["multipart"]["complete"]["url"].as_str().unwrap();
    let r =
        app.client.post(complete).json(&json!({"parts": [{"part_number": 1, "etag": "\"x\""}]})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), done);
    let without_token = complete.split('?').next().unwrap();
    let r = app
        .client
        .post(without_token)
        .bearer_auth(API_KEY)
        .json(&json!({"parts": [{"part_number": 1, "etag": "\"x\""}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn upload_continues_on_another_instance(backend: Backend) {
    let a = spawn_secured_with(backend, |c| {
        c.signing_secret = mediaflow::config::Secret::new("shared-secret-for-two-instances")
    })
    .await;
    let data_dir = match &a.state.config.storage {
        mediaflow::config::StorageConfig::Fs { data_dir } => Some(data_dir.clone()),
        _ => None,
    };
    let b = spawn_secured_with(backend, |c| {
        c.signing_secret = mediaflow::config::Secret::new("shared-secret-for-two-instances");
        if let Some(dir) = data_dir {
            c.storage = mediaflow::config::StorageConfig::Fs { data_dir: dir };
        }
    })
    .await;
    let id = unique("x");
    let data = mp4_like(11 * MIB);
    let (_, r) = multipart_upload(&a, &b, &id, &data, "video/mp4", "clip").await;
    assert_eq!(r.status(), 200);
    let r = b.client.get(b.url(&format!("/originals/clip/{id}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);

    // An instance with another secret refuses the token.
    let c = spawn_secured(backend).await;
    let answer = presign_ok(&a, json!({"key_base": unique("y"), "mime": "video/mp4", "size_bytes": 100, "profile": "clip", "multipart": "force"})).await;
    let mp = &answer["upload"]["multipart"];
    let r = c
        .client
        .post(c.url("/v1/uploads/presign/parts"))
        .json(&json!({"object_key": answer["object_key"], "upload_id": mp["upload_id"], "upload_token": mp["upload_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
}

async fn verification_failure_deletes_the_object(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("v");
    // Random bytes declared image/jpeg: every part URL accepts them, the check after completion does not.
    let data = random_bytes(6 * MIB);
    let (answer, r) = multipart_upload(&app, &app, &id, &data, "image/jpeg", "scan").await;
    let (status, code) = error_of(r).await;
    assert_eq!((status, code.as_str()), (422, "upload_verification_failed"));
    let key = mediaflow::storage::ObjectKey::parse(answer["object_key"].as_str().unwrap()).unwrap();
    assert!(matches!(app.state.store.head(&key).await, Err(mediaflow::storage::StorageError::NotFound)), "deleted");

    // An MP4 declared as JPEG: the content is checked, not the declaration.
    let (_, r) = multipart_upload(&app, &app, &unique("w"), &mp4_like(5 * MIB + 10), "image/jpeg", "scan").await;
    assert_eq!(error_of(r).await, (422, "upload_verification_failed".into()));
    // A real JPEG passes (padded after its end, as camera files often are).
    let mut real = images::jpeg(640, 480);
    real.resize(5 * MIB + 10, 0);
    let (_, r) = multipart_upload(&app, &app, &unique("j"), &real, "image/jpeg", "scan").await;
    assert_eq!(r.status(), 200);
}

async fn abort_and_part_errors(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("a");
    let answer =
        presign_ok(&app, json!({"key_base": id, "mime": "video/mp4", "size_bytes": 12 * MIB, "profile": "clip"})).await;
    let mp = &answer["upload"]["multipart"];
    let key = answer["object_key"].as_str().unwrap();
    let upload_id = mp["upload_id"].as_str().unwrap();
    let token = mp["upload_token"].as_str().unwrap();
    assert_eq!(mp["total_parts"], 3);
    assert_eq!(mp["parts"].as_array().unwrap().len(), 1, "initial_batch_size");
    assert_eq!(mp["batch_info"], json!({"parts_in_batch": 1, "next_part_number": 2, "has_more_parts": true}));
    let r = put_to(&app.client, &mp["parts"][0], mp4_like(5 * MIB)).await;
    assert_eq!(r.status(), 200);
    // A part of the wrong length is refused.
    let r = put_to(&app.client, &mp["parts"][0], mp4_like(5 * MIB - 1)).await;
    assert_eq!(r.status(), 403);

    let parts_url = app.url("/v1/uploads/presign/parts");
    let ask = |body: Value| app.client.post(&parts_url).json(&body).send();
    let base = json!({"object_key": key, "upload_id": upload_id, "upload_token": token});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    assert_eq!(error_of(ask(with(json!({"start_part": 4}))).await.unwrap()).await, (400, "invalid_part_range".into()));
    assert_eq!(error_of(ask(with(json!({"start_part": 0}))).await.unwrap()).await, (400, "invalid_part_range".into()));
    assert_eq!(
        error_of(ask(with(json!({"start_part": 2, "count": 3}))).await.unwrap()).await,
        (400, "batch_size_exceeded".into())
    );
    let r = ask(json!({"object_key": key, "upload_id": upload_id})).await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()), "no token and no key");
    // Another action's method: 405 naming the one that works.
    let r = app.client.get(app.url("/v1/uploads/k%2Fx/complete/some-id")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(error_of(r).await, (405, "method_not_allowed".into()));
    let r =
        app.client.post(&parts_url).header("content-type", "application/json").body("garbage").send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()), "a bad body and no credentials");
    let r = app.client.post(&parts_url).bearer_auth(API_KEY).body("garbage").send().await.unwrap();
    assert_eq!(error_of(r).await.0, 400, "a bad body with the key");
    let r = app
        .client
        .post(&parts_url)
        .bearer_auth(API_KEY)
        .json(&json!({"object_key": key, "upload_id": upload_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()), "the token carries the sizes");
    let r = ask(with(json!({"upload_token": format!("{token}x")}))).await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()), "forged token");
    let r = ask(with(json!({"upload_id": "another-upload"}))).await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()), "token of another upload");
    let r = ask(with(json!({"start_part": 2, "count": 2}))).await.unwrap();
    let batch: Value = r.json().await.unwrap();
    assert_eq!(batch["parts"].as_array().unwrap().len(), 2);
    assert_eq!(batch["parts"][1]["headers"]["Content-Length"], (2 * MIB).to_string(), "the last part is the remainder");
    assert_eq!(batch["batch_info"], json!({"parts_in_batch": 2, "next_part_number": 4, "has_more_parts": false}));

    // Complete with no parts or bad JSON.
    let complete = mp["complete"]["url"].as_str().unwrap();
    let r = app.client.post(complete).json(&json!({"parts": []})).send().await.unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));
    let r = app.client.post(complete).body("nope").send().await.unwrap();
    assert_eq!(error_of(r).await, (400, "bad_request".into()));

    // Abort through the abort action; afterwards the upload is gone everywhere.
    let abort = &mp["abort"];
    assert_eq!(abort["method"], "DELETE");
    let r = app.client.delete(abort["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "aborted", "upload_id": upload_id}));
    let list = app.url(&format!("/v1/uploads/{key}/parts/{upload_id}"));
    let r = app.client.get(&list).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "invalid_upload_id".into()), "raw key form, API key");
    assert_eq!(error_of(ask(with(json!({"start_part": 2}))).await.unwrap()).await, (404, "invalid_upload_id".into()));
    let r = app.client.delete(abort["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "invalid_upload_id".into()));
    let r =
        app.client.post(complete).json(&json!({"parts": [{"part_number": 1, "etag": "\"x\""}]})).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "invalid_upload_id".into()));
    // Nothing to list or complete without any credentials.
    let r = app.client.get(&list).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
}

async fn delete_asset_removes_original_and_variants(backend: Backend) {
    use bytes::Bytes;
    use mediaflow::storage::{ObjectKey, PutOptions};
    let app = spawn_secured(backend).await;
    let id = unique("d");
    let data = jpeg_like(1000);
    let answer =
        presign_ok(&app, json!({"key_base": id, "mime": "image/jpeg", "size_bytes": data.len(), "profile": "avatar"}))
            .await;
    assert_eq!(put_to(&app.client, &answer["upload"]["single"], data).await.status(), 200);
    let put = |k: String| {
        let store = app.state.store.clone();
        async move {
            store
                .put(&ObjectKey::parse(k).unwrap(), Bytes::from_static(b"v").into(), PutOptions::default())
                .await
                .unwrap();
        }
    };
    for name in
        [format!("{id}_128.webp"), format!("{id}_256.webp"), format!("{id}_256_q40.jpeg"), format!("{id}_b_128.webp")]
    {
        put(format!("thumbnails/avatars/{name}")).await;
    }
    let url = app.url(&format!("/v1/assets/avatar/{id}"));
    let r = app.client.delete(&url).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = app.client.delete(&url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "deleted", "profile": "avatar", "key_base": id, "objects_deleted": 4})
    );
    let r = app.client.get(app.url(&format!("/originals/avatar/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Another id sharing the prefix is untouched.
    let decoy = ObjectKey::parse(format!("thumbnails/avatars/{id}_b_128.webp")).unwrap();
    assert!(app.state.store.head(&decoy).await.is_ok());
    let r = app.client.delete(&url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    let r = app.client.delete(app.url("/v1/assets/nope/x")).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    // Custom shards.
    let id2 = unique("e");
    put(format!("originals/avatars/tenant-1/{id2}")).await;
    let r = app
        .client
        .delete(app.url(&format!("/v1/assets/avatar/{id2}?shard=tenant-1")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["objects_deleted"], 1);
}

both_backends!(
    single_upload_end_to_end,
    presign_error_paths,
    multipart_rolling_batches_end_to_end,
    upload_continues_on_another_instance,
    verification_failure_deletes_the_object,
    abort_and_part_errors,
    delete_asset_removes_original_and_variants,
);

#[tokio::test]
async fn fs_upload_urls_answer_cors_preflight_and_expire() {
    let app = spawn_secured_with(Backend::Fs, |c| c.http.cors_origins = vec!["https://app.example".into()]).await;
    let answer =
        presign_ok(&app, json!({"key_base": "c1", "mime": "image/jpeg", "size_bytes": 10, "profile": "avatar"})).await;
    let url = answer["upload"]["single"]["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/_upload/", app.base)), "{url}");
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type,if-none-match")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let methods = r.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("PUT"), "{methods}");
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // A tampered or expired URL is refused.
    let tampered = url.replace("X-Mf-Length=10", "X-Mf-Length=11");
    let r = app
        .client
        .put(&tampered)
        .header("content-type", "image/jpeg")
        .header("if-none-match", "*")
        .body(vec![0u8; 11])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let signer = app.state.fs_signer.clone().unwrap();
    let grant = mediaflow::storage::signing::UploadGrant {
        key: mediaflow::storage::ObjectKey::parse("originals/avatars/x/c2").unwrap(),
        part: None,
        expires: 1,
        content_length: 1,
        content_type: Some("image/jpeg".into()),
        if_none_match: false,
    };
    let expired = signer.url(&app.base, &grant);
    let r = app.client.put(&expired).header("content-type", "image/jpeg").body(vec![0u8; 1]).send().await.unwrap();
    assert_eq!(error_of(r).await.0, 403);
}

#[tokio::test]
async fn public_base_url_is_used_for_service_urls() {
    let app = spawn_secured_with(Backend::Fs, |c| c.public_base_url = Some("https://media.example.com".into())).await;
    let a = presign_ok(
        &app,
        json!({"key_base": "p1", "mime": "video/mp4", "size_bytes": 10, "profile": "clip", "multipart": "force"}),
    )
    .await;
    let mp = &a["upload"]["multipart"];
    assert!(mp["parts"][0]["url"].as_str().unwrap().starts_with("https://media.example.com/_upload/originals/clips/"));
    let complete = mp["complete"]["url"].as_str().unwrap();
    let key = a["object_key"].as_str().unwrap().replace('/', "%2F");
    assert!(complete.starts_with(&format!("https://media.example.com/v1/uploads/{key}/complete/")), "{complete}");
    assert!(complete.contains("?token="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_does_not_cancel_a_valid_api_key() {
    use mediaflow::uploads::{TokenSigner, UploadClaims};
    let app = spawn_secured(Backend::Fs).await;
    let a = presign_ok(&app, json!({"key_base": unique("t"), "mime": "video/mp4", "size_bytes": 100, "profile": "clip", "multipart": "force"})).await;
    let key = a["object_key"].as_str().unwrap();
    let upload_id = a["upload"]["multipart"]["upload_id"].as_str().unwrap();
    let expired = TokenSigner::new(app.state.config.signing_secret.expose().as_bytes()).issue(&UploadClaims {
        object_key: key.into(),
        upload_id: upload_id.into(),
        profile: "clip".into(),
        mime: "video/mp4".into(),
        size: 100,
        part_size: 5 << 20,
        expires: 1,
    });
    let url = app.url(&format!("/v1/uploads/{}/parts/{upload_id}", key.replace('/', "%2F")));
    let r = app.client.get(&url).header("x-upload-token", &expired).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()), "expired token alone");
    let r = app.client.get(&url).header("x-upload-token", &expired).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()), "expired token and a wrong key");
    let r = app.client.get(&url).header("x-upload-token", &expired).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200, "the API key still works");
}

/// A multipart upload presigned and fully sent, not yet completed.
struct Sent {
    key: String,
    upload_id: String,
    token: String,
    complete_url: String,
    parts: Value,
}

/// Presigns a forced multipart upload of `data` and sends every part.
async fn send_parts(app: &TestApp, key_base: &str, data: &[u8], mime: &str, profile: &str) -> Sent {
    let answer = presign_ok(
        app,
        json!({"key_base": key_base, "mime": mime, "size_bytes": data.len(), "profile": profile, "multipart": "force"}),
    )
    .await;
    let mp = &answer["upload"]["multipart"];
    let part_size = mp["part_size"].as_u64().unwrap() as usize;
    let total = mp["total_parts"].as_u64().unwrap() as usize;
    let mut sent = Sent {
        key: answer["object_key"].as_str().unwrap().to_owned(),
        upload_id: mp["upload_id"].as_str().unwrap().to_owned(),
        token: mp["upload_token"].as_str().unwrap().to_owned(),
        complete_url: mp["complete"]["url"].as_str().unwrap().to_owned(),
        parts: Value::Null,
    };
    let mut urls = mp["parts"].as_array().unwrap().clone();
    while urls.len() < total {
        let r = app
            .client
            .post(app.url("/v1/uploads/presign/parts"))
            .json(&json!({"object_key": sent.key, "upload_id": sent.upload_id, "upload_token": sent.token, "start_part": urls.len() + 1, "count": 1}))
            .send()
            .await
            .unwrap();
        urls.extend(r.json::<Value>().await.unwrap()["parts"].as_array().unwrap().clone());
    }
    let mut etags = Vec::new();
    for (i, part) in urls.iter().enumerate() {
        let chunk = data[i * part_size..((i + 1) * part_size).min(data.len())].to_vec();
        let r = put_to(&app.client, part, chunk).await;
        assert_eq!(r.status(), 200);
        etags.push(json!({"part_number": i + 1, "etag": r.headers()["etag"].to_str().unwrap()}));
    }
    sent.parts = json!({ "parts": etags });
    sent
}

async fn complete(app: &TestApp, sent: &Sent) -> reqwest::Response {
    app.client.post(&sent.complete_url).json(&sent.parts).send().await.unwrap()
}

/// `GET …/parts/{id}` with the upload's token.
async fn stored_parts(app: &TestApp, sent: &Sent) -> reqwest::Response {
    let url = app.url(&format!("/v1/uploads/{}/parts/{}", sent.key.replace('/', "%2F"), sent.upload_id));
    app.client.get(url).header("x-upload-token", &sent.token).send().await.unwrap()
}

/// A distinct MP4-like body per upload.
fn clip_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut v = mp4_like(len);
    let n = v.len();
    v[n - 8..].fill(seed);
    v
}

async fn original(app: &TestApp, profile: &str, id: &str) -> reqwest::Response {
    app.client.get(app.url(&format!("/originals/{profile}/{id}"))).send().await.unwrap()
}

async fn racing_completes_have_exactly_one_winner(backend: Backend) {
    let app = spawn_secured(backend).await;
    // MEDIAFLOW_RACE_TRIALS=200 for a measurement: 20 rounds.
    let rounds =
        std::env::var("MEDIAFLOW_RACE_TRIALS").ok().and_then(|v| v.parse::<usize>().ok()).map_or(3, |t| t / 10);
    for round in 0..rounds.max(3) {
        let id = unique("race");
        let mut uploads = Vec::new();
        for i in 0..4u8 {
            let data = clip_bytes(200_000, i);
            uploads.push((send_parts(&app, &id, &data, "video/mp4", "clip").await, data));
        }
        let answers = futures::future::join_all(uploads.iter().map(|(sent, _)| complete(&app, sent))).await;
        let mut winners = Vec::new();
        for (i, r) in answers.into_iter().enumerate() {
            match r.status().as_u16() {
                200 => winners.push(i),
                _ => assert_eq!(error_of(r).await, (409, "conflict".into()), "round {round}, upload {i}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one complete wins");
        let (winner, data) = &uploads[winners[0]];
        assert_eq!(original(&app, "clip", &id).await.bytes().await.unwrap(), *data, "the winner's bytes");
        // Losers are told so again on a retry, and their parts are gone.
        for (i, (sent, _)) in uploads.iter().enumerate().filter(|(i, _)| *i != winners[0]) {
            assert_eq!(error_of(complete(&app, sent).await).await, (409, "conflict".into()), "loser {i} retried");
            assert_eq!(error_of(stored_parts(&app, sent).await).await, (404, "invalid_upload_id".into()));
        }
        assert_eq!(complete(&app, winner).await.status(), 200, "the winner retried");
    }
    eprintln!("{} rounds of 4 completes racing on {backend:?}: one winner each", rounds.max(3));
}

async fn a_complete_after_another_upload_won_is_409(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("seq");
    let a = send_parts(&app, &id, &clip_bytes(1000, 1), "video/mp4", "clip").await;
    let b = send_parts(&app, &id, &clip_bytes(1000, 2), "video/mp4", "clip").await;
    let r = complete(&app, &a).await;
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    let r = complete(&app, &a).await;
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()), (200, first), "a retry: same answer");
    let r = complete(&app, &b).await;
    let (status, code) = error_of(r).await;
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert_eq!(error_of(stored_parts(&app, &b).await).await, (404, "invalid_upload_id".into()), "B's parts are gone");
    assert_eq!(error_of(complete(&app, &b).await).await, (409, "conflict".into()), "B retried");
    assert_eq!(original(&app, "clip", &id).await.bytes().await.unwrap(), clip_bytes(1000, 1));
}

/// A single PUT and a complete racing to one key. The filesystem backend
/// installs both with a no-replace link, so exactly one wins. A direct PUT
/// never passes through the service, so on S3 only the store's conditional
/// writes decide: atomic on AWS S3, not on SeaweedFS 4.48, where both may
/// succeed; there the outcome is measured and reported, not asserted.
async fn a_put_racing_a_complete(backend: Backend) {
    let app = spawn_secured(backend).await;
    // MEDIAFLOW_RACE_TRIALS=200 for a measurement (docs/uploads-integrity.md).
    let trials: u64 = std::env::var("MEDIAFLOW_RACE_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let (mut put_won, mut complete_won, mut both) = (0, 0, 0);
    for trial in 0..trials {
        // The complete first does a few calls of its own (list, claim, head)
        // before it writes: the PUT starts 0 to 15 ms later to meet it.
        let lag = Duration::from_micros(trial % 31 * 500);
        let id = unique("pr");
        let multipart = send_parts(&app, &id, &clip_bytes(1000, 1), "video/mp4", "clip").await;
        let single = presign_ok(
            &app,
            json!({"key_base": id, "mime": "video/mp4", "size_bytes": 1000, "profile": "clip", "multipart": "off"}),
        )
        .await;
        assert_eq!(single["object_key"], multipart.key.as_str());
        let put_data = clip_bytes(1000, 2);
        let (put, done) = tokio::join!(
            async {
                tokio::time::sleep(lag).await;
                put_to(&app.client, &single["upload"]["single"], put_data.clone()).await
            },
            complete(&app, &multipart)
        );
        let (put_ok, complete_ok) = (put.status() == 200, done.status() == 200);
        if !put_ok {
            assert_eq!(put.status(), 412, "a losing PUT is 412");
        }
        if !complete_ok {
            assert_eq!(error_of(done).await, (409, "conflict".into()), "a losing complete is 409");
        }
        let stored = original(&app, "clip", &id).await.bytes().await.unwrap();
        match (put_ok, complete_ok) {
            (true, false) => put_won += 1,
            (false, true) => complete_won += 1,
            (true, true) => both += 1,
            (false, false) => panic!("trial {trial}: nobody won"),
        }
        if put_ok != complete_ok {
            let winner = if put_ok { put_data } else { clip_bytes(1000, 1) };
            assert_eq!(stored, winner, "trial {trial}: the winner's bytes");
        }
    }
    eprintln!(
        "PUT racing a complete on {backend:?} ({}): PUT won {put_won}, complete won {complete_won}, both answered 200 in {both} of {trials}",
        app.state.store.name()
    );
    if backend == Backend::Fs {
        assert_eq!(both, 0, "the filesystem backend never lets both win");
    }
}

/// Whether `key` is stored within 10 s.
async fn appears(app: &TestApp, key: &mediaflow::storage::ObjectKey) -> bool {
    for _ in 0..100 {
        if app.state.store.head(key).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn a_dropped_complete_runs_to_its_end(backend: Backend) {
    let (app, faulty) = crate::common::spawn_faulty(backend, |f| {
        *f.complete_delay.lock().unwrap() = Duration::from_millis(500);
    })
    .await;
    let id = unique("cx");
    let data = clip_bytes(5 * MIB + 1000, 3);
    let sent = send_parts(&app, &id, &data, "video/mp4", "clip").await;
    // The client gives up (Ctrl-C) once the server has started completing.
    let request = tokio::spawn({
        let (client, url, body) = (app.client.clone(), sent.complete_url.clone(), sent.parts.clone());
        async move { client.post(url).json(&body).send().await }
    });
    faulty.complete_started.notified().await;
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    // The complete goes on without it: the object appears, whole.
    let key = mediaflow::storage::ObjectKey::parse(sent.key.clone()).unwrap();
    assert!(appears(&app, &key).await, "the abandoned complete still stored the object");
    // A rerun's complete gets the answer the first one would have had.
    let r = complete(&app, &sent).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "completed", "object_key": sent.key}));
    assert_eq!(original(&app, "clip", &id).await.bytes().await.unwrap(), data);

    // The request's own future dropped mid-way (a request timeout, a
    // connection the server closes): the complete still runs to its end.
    let id = unique("cy");
    let sent = send_parts(&app, &id, &data, "video/mp4", "clip").await;
    let parts: Vec<_> = sent.parts["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| mediaflow::storage::CompletedPart {
            part_number: p["part_number"].as_u64().unwrap() as u32,
            etag: p["etag"].as_str().unwrap().to_owned(),
        })
        .collect();
    let key = mediaflow::storage::ObjectKey::parse(sent.key.clone()).unwrap();
    let auth = mediaflow::uploads::UploadAuth::ApiKey;
    tokio::select! {
        r = app.state.uploads.complete(&key, &sent.upload_id, parts, &auth) => panic!("finished too soon: {r:?}"),
        () = faulty.complete_started.notified() => {}
    }
    assert!(appears(&app, &key).await, "the dropped complete still stored the object");
    let r = complete(&app, &sent).await;
    assert_eq!(r.status(), 200);
    assert_eq!(original(&app, "clip", &id).await.bytes().await.unwrap(), data);
    if backend == Backend::Fs {
        // The completed clip queues a proxy job, whose writes (lease,
        // failure record) pass through the temp folder while it runs: wait
        // for it to be empty; a temp file the dropped complete leaked would
        // stay for good.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !crate::common::temp_entries(&app).is_empty() {
            assert!(std::time::Instant::now() < deadline, "left behind: {:?}", crate::common::temp_entries(&app));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let uploads = crate::common::data_dir(&app).join(".mediaflow/uploads");
        assert_eq!(std::fs::read_dir(uploads).unwrap().count(), 0, "no upload folder left");
    }
}

async fn a_store_error_after_completing_does_not_skip_verification(backend: Backend) {
    let (app, faulty) = crate::common::spawn_faulty(backend, |_| {}).await;
    // HTML declared image/jpeg; the store completes it, then the answer is lost.
    let id = unique("html");
    let html = b"<!doctype html><html><body>not a picture</body></html>".repeat(200);
    let sent = send_parts(&app, &id, &html, "image/jpeg", "scan").await;
    faulty.lose_complete_answer.store(true, Ordering::SeqCst);
    assert_eq!(error_of(complete(&app, &sent).await).await, (502, "storage_error".into()));
    // The retry verifies what the store holds before it answers: refused and deleted.
    assert_eq!(error_of(complete(&app, &sent).await).await, (422, "upload_verification_failed".into()));
    let r = app.client.get(app.url(&format!("/originals/scan/{id}.jpg"))).send().await.unwrap();
    assert_eq!(r.status(), 404, "never served");
    assert_eq!(error_of(complete(&app, &sent).await).await, (404, "invalid_upload_id".into()));

    // A real JPEG in the same situation: the retry verifies it and answers 200.
    let id = unique("jpg");
    let jpeg = images::jpeg(64, 48);
    let sent = send_parts(&app, &id, &jpeg, "image/jpeg", "scan").await;
    faulty.lose_complete_answer.store(true, Ordering::SeqCst);
    assert_eq!(error_of(complete(&app, &sent).await).await, (502, "storage_error".into()));
    assert_eq!(complete(&app, &sent).await.status(), 200);
    let r = app.client.get(app.url(&format!("/originals/scan/{id}.jpg"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), jpeg);
}

/// A JPEG whose frame header lies beyond the first 256 KiB (five 64 KiB
/// APP2 segments, as a large ICC profile is stored).
fn jpeg_with_late_header() -> Vec<u8> {
    let jpeg = images::jpeg(64, 48);
    let mut out = jpeg[..2].to_vec();
    for _ in 0..5 {
        out.extend([0xff, 0xe2, 0xff, 0xff]);
        out.extend(std::iter::repeat_n(0x20u8, 0xffff - 2));
    }
    out.extend(&jpeg[2..]);
    out
}

async fn image_headers_are_probed_at_complete(backend: Backend) {
    let app = spawn_secured(backend).await;
    let refused = |name: &'static str, bytes: Vec<u8>, mime: &'static str| {
        let app = &app;
        async move {
            let id = unique("probe");
            let sent = send_parts(app, &id, &bytes, mime, "scan").await;
            let r = complete(app, &sent).await;
            assert_eq!(error_of(r).await, (422, "upload_verification_failed".into()), "{name}");
            let key = mediaflow::storage::ObjectKey::parse(sent.key).unwrap();
            assert!(app.state.store.head(&key).await.is_err(), "{name}: deleted");
        }
    };
    // Truncated before the frame header: the magic bytes alone are not enough.
    let jpeg = images::jpeg(64, 48);
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    refused("truncated JPEG", jpeg[..sof + 4].to_vec(), "image/jpeg").await;
    // A PNG whose header says 0 pixels wide.
    let mut png = images::png(64, 48);
    png[16..20].fill(0);
    refused("corrupt PNG", png, "image/png").await;
    // A header claiming 20 000 x 20 000: over the default MAX_SOURCE_PIXELS.
    refused("too many pixels", images::png_header_only(20_000, 20_000), "image/png").await;

    for (name, bytes) in [("real JPEG", images::jpeg(64, 48)), ("header past 256 KiB", jpeg_with_late_header())] {
        let sent = send_parts(&app, &unique("ok"), &bytes, "image/jpeg", "scan").await;
        assert_eq!(complete(&app, &sent).await.status(), 200, "{name}");
    }
    // The limit is MAX_SOURCE_PIXELS as configured.
    let small = spawn_secured_with(backend, |c| c.transforms.max_pixels = 1000).await;
    let sent = send_parts(&small, &unique("big"), &images::jpeg(64, 48), "image/jpeg", "scan").await;
    let r = complete(&small, &sent).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "upload_verification_failed");
    assert!(body["message"].as_str().unwrap().contains("64x48"), "{body}");
}

async fn parts_lists_a_reuploaded_part_once(backend: Backend) {
    let app = spawn_secured(backend).await;
    let id = unique("re");
    let answer = presign_ok(
        &app,
        json!({"key_base": id, "mime": "video/mp4", "size_bytes": 1000, "profile": "clip", "multipart": "force"}),
    )
    .await;
    let mp = &answer["upload"]["multipart"];
    let part = &mp["parts"][0];
    // The same bytes again (a client's retry), then other bytes. SeaweedFS
    // 4.48 dates parts to the second, so the last upload is a second later.
    for _ in 0..2 {
        assert_eq!(put_to(&app.client, part, clip_bytes(1000, 1)).await.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = put_to(&app.client, part, clip_bytes(1000, 2)).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let sent = Sent {
        key: answer["object_key"].as_str().unwrap().to_owned(),
        upload_id: mp["upload_id"].as_str().unwrap().to_owned(),
        token: mp["upload_token"].as_str().unwrap().to_owned(),
        complete_url: mp["complete"]["url"].as_str().unwrap().to_owned(),
        parts: json!({"parts": [{"part_number": 1, "etag": etag}]}),
    };
    let listed: Value = stored_parts(&app, &sent).await.json().await.unwrap();
    assert_eq!(listed["parts"], json!([{"part_number": 1, "etag": etag, "size": 1000}]), "once, the latest");
    assert_eq!(complete(&app, &sent).await.status(), 200);
    assert_eq!(original(&app, "clip", &id).await.bytes().await.unwrap(), clip_bytes(1000, 2));
}

both_backends!(
    racing_completes_have_exactly_one_winner,
    a_complete_after_another_upload_won_is_409,
    a_put_racing_a_complete,
    a_dropped_complete_runs_to_its_end,
    a_store_error_after_completing_does_not_skip_verification,
    image_headers_are_probed_at_complete,
    parts_lists_a_reuploaded_part_once,
);
