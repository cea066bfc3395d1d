//! Two instances over one store and one SIGNING_SECRET (SPEC §6).

use std::time::{Duration, Instant};

use crate::common::images;
use crate::common::{API_KEY, Backend, TestApp, spawn_secured_with, unique};
use bytes::Bytes;
use mediaflow::config::{Secret, StorageConfig};
use mediaflow::storage::{ObjectKey, PutOptions};

const SECRET: &str = "one-secret-for-every-instance";

/// Two instances sharing the store (the same DATA_DIR for fs) and the secret.
async fn pair(backend: Backend, ttl: Duration) -> (TestApp, TestApp) {
    let a = spawn_secured_with(backend, |c| {
        c.signing_secret = Secret::new(SECRET);
        c.cache.memory_ttl = ttl;
    })
    .await;
    let shared = a.state.config.storage.clone();
    let b = spawn_secured_with(backend, |c| {
        c.signing_secret = Secret::new(SECRET);
        c.cache.memory_ttl = ttl;
        if let StorageConfig::Fs { .. } = shared {
            c.storage = shared;
        }
    })
    .await;
    (a, b)
}

async fn variant_made_by_one_is_served_by_the_other(backend: Backend) {
    let (a, b) = pair(backend, Duration::from_secs(60)).await;
    let id = unique("v");
    let opts = PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false };
    let original = ObjectKey::parse(format!("originals/gallery/{id}")).unwrap();
    a.state.store.put(&original, Bytes::from(images::jpeg(600, 400)).into(), opts).await.unwrap();
    let path = format!("/thumb/gallery/{id}?width=150&format=webp");
    let from_a = a.client.get(a.url(&path)).send().await.unwrap();
    assert_eq!(from_a.status(), 200);
    let etag = from_a.headers()["etag"].clone();
    let bytes = from_a.bytes().await.unwrap();
    // Wait for A's background store write, then B must not render at all.
    let variant = ObjectKey::parse(format!("thumbnails/gallery/{id}_150.webp")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.state.store.head(&variant).await.is_err() {
        assert!(Instant::now() < deadline, "A stored the variant");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let renders = b.state.thumbs.renders();
    let from_b = b.client.get(b.url(&path)).send().await.unwrap();
    assert_eq!(from_b.status(), 200);
    assert_eq!(from_b.headers()["etag"], etag, "same ETag on both instances");
    assert_eq!(from_b.bytes().await.unwrap(), bytes);
    assert_eq!(b.state.thumbs.renders(), renders, "B served A's variant without rendering");
    // A conditional request to B with A's ETag is a 304.
    let r = b.client.get(b.url(&path)).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(r.status(), 304);
}

async fn a_delete_through_one_stops_the_other_within_the_ttl(backend: Backend) {
    let ttl = Duration::from_secs(2);
    let (a, b) = pair(backend, ttl).await;
    let id = unique("d");
    let r = a
        .client
        .post(a.url(&format!("/thumb/avatar/{id}")))
        .bearer_auth(API_KEY)
        .header("content-type", "image/png")
        .body(images::png(300, 300))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let path = format!("/thumb/avatar/{id}?width=128");
    assert_eq!(b.client.get(b.url(&path)).send().await.unwrap().status(), 200, "B caches it");
    let r = a.client.delete(a.url(&format!("/v1/assets/avatar/{id}"))).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.client.get(a.url(&path)).send().await.unwrap().status(), 404, "A forgets at once");
    let deleted = Instant::now();
    loop {
        let status = b.client.get(b.url(&path)).send().await.unwrap().status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(deleted.elapsed() <= ttl + Duration::from_secs(2), "B still serves after CACHE_MEMORY_TTL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

both_backends!(variant_made_by_one_is_served_by_the_other, a_delete_through_one_stops_the_other_within_the_ttl);
