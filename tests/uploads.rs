//! Direct uploads end to end, on both backends, with a real HTTP client doing
//! the PUTs to the presigned URLs (SeaweedFS's, or the fs backend's own).

mod common;

use common::{API_KEY, Backend, TestApp, error_of, spawn_secured, spawn_secured_with, unique};
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
    // Completing again: the upload id is gone.
    let complete = answer["upload"]["multipart"]["complete"]["url"].as_str().unwrap();
    let r =
        app.client.post(complete).json(&json!({"parts": [{"part_number": 1, "etag": "\"x\""}]})).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, "invalid_upload_id".into()));
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
    // A real JPEG header passes.
    let (_, r) = multipart_upload(&app, &app, &unique("j"), &jpeg_like(5 * MIB + 10), "image/jpeg", "scan").await;
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
