//! The storage conformance suite: every operation of the `ObjectStore` trait,
//! run against the filesystem backend and against a real SeaweedFS.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Backend, store, unique};
use futures::StreamExt;
use mediaflow::storage::{
    ByteRange, CompletedPart, KeyPrefix, ObjectKey, ObjectStore, PresignContext, PresignOp, PutBody, PutOptions,
    StorageError, list_all,
};

const MIB: usize = 1024 * 1024;

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

async fn read_all(store: &dyn ObjectStore, k: &ObjectKey, range: Option<ByteRange>) -> (Vec<u8>, Option<(u64, u64)>) {
    let got = store.get(k, range).await.unwrap();
    let r = got.range;
    (got.collect(u64::MAX).await.unwrap().to_vec(), r)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn put_get_head_roundtrip(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/a/b/photo.jpg", unique("conf-")));
    let data = pattern(100_000, 1);
    let opts = PutOptions { content_type: Some("image/jpeg".into()), if_none_match: false };
    let put = store.put(&k, Bytes::from(data.clone()).into(), opts).await.unwrap();
    assert_eq!(put.size, 100_000);
    let head = store.head(&k).await.unwrap();
    assert_eq!(head.size, 100_000);
    assert_eq!(head.content_type.as_deref(), Some("image/jpeg"));
    assert!(head.etag.starts_with('"') && head.etag.len() > 2, "{}", head.etag);
    assert_eq!(head.etag, put.etag, "put and head agree on the ETag");
    // The ETag is the content MD5, like S3's for single PUTs.
    assert_eq!(head.etag, format!("\"{}\"", hex::encode(md5_of(&data))));
    let (body, range) = read_all(&*store, &k, None).await;
    assert_eq!(body, data);
    assert_eq!(range, None);
    let age = std::time::SystemTime::now().duration_since(head.last_modified).unwrap_or_default();
    assert!(age < Duration::from_secs(600), "last_modified is recent");
}

fn md5_of(data: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(data).into()
}

async fn ranges(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/range.bin", unique("conf-")));
    let data = pattern(1000, 7);
    store.put(&k, Bytes::from(data.clone()).into(), PutOptions::default()).await.unwrap();
    let (body, r) = read_all(&*store, &k, Some(ByteRange::Bounded { start: 10, end: 19 })).await;
    assert_eq!((body.as_slice(), r), (&data[10..20], Some((10, 19))));
    let (body, r) = read_all(&*store, &k, Some(ByteRange::From(990))).await;
    assert_eq!((body.as_slice(), r), (&data[990..], Some((990, 999))));
    let (body, r) = read_all(&*store, &k, Some(ByteRange::Suffix(5))).await;
    assert_eq!((body.as_slice(), r), (&data[995..], Some((995, 999))));
    let (body, r) = read_all(&*store, &k, Some(ByteRange::Bounded { start: 900, end: 5000 })).await;
    assert_eq!((body.as_slice(), r), (&data[900..], Some((900, 999))));
    match store.get(&k, Some(ByteRange::From(1000))).await {
        Err(StorageError::RangeNotSatisfiable { size }) => assert_eq!(size, 1000),
        other => panic!("expected RangeNotSatisfiable, got {other:?}"),
    }
}

async fn missing_objects(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/nothing", unique("conf-")));
    assert!(matches!(store.get(&k, None).await, Err(StorageError::NotFound)));
    assert!(matches!(store.head(&k).await, Err(StorageError::NotFound)));
    store.delete(&k).await.expect("deleting a missing object is fine");
}

async fn conditional_put_never_overwrites(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/once", unique("conf-")));
    let inm = PutOptions { content_type: Some("image/png".into()), if_none_match: true };
    store.put(&k, Bytes::from_static(b"first").into(), inm.clone()).await.unwrap();
    let second = store.put(&k, Bytes::from_static(b"second").into(), inm).await;
    assert!(matches!(second, Err(StorageError::AlreadyExists)), "{second:?}");
    assert_eq!(read_all(&*store, &k, None).await.0, b"first");
    // Without the condition a put replaces the object.
    store.put(&k, Bytes::from_static(b"third").into(), PutOptions::default()).await.unwrap();
    assert_eq!(read_all(&*store, &k, None).await.0, b"third");
    store.delete(&k).await.unwrap();
    assert!(matches!(store.head(&k).await, Err(StorageError::NotFound)));
}

async fn streamed_put_checks_length(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/stream", unique("conf-")));
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..8).map(|i| Ok(Bytes::from(pattern(64 * 1024, i)))).collect();
    let expected: Vec<u8> = (0..8).flat_map(|i| pattern(64 * 1024, i)).collect();
    let body = PutBody::stream(Box::pin(futures::stream::iter(chunks)), expected.len() as u64);
    store.put(&k, body, PutOptions::default()).await.unwrap();
    assert_eq!(read_all(&*store, &k, None).await.0, expected);

    // A body shorter than declared fails and stores nothing.
    let k2 = key(&format!("{}/short", unique("conf-")));
    let short = PutBody::stream(Box::pin(futures::stream::iter(vec![Ok(Bytes::from_static(b"abc"))])), 10);
    assert!(store.put(&k2, short, PutOptions::default()).await.is_err());
    assert!(matches!(store.head(&k2).await, Err(StorageError::NotFound)));

    // A body that fails mid-way stores nothing either.
    let failing =
        futures::stream::iter(vec![Ok(Bytes::from_static(b"abc")), Err(std::io::Error::other("client gone"))]);
    let broken = PutBody::stream(Box::pin(failing), 10);
    assert!(store.put(&k2, broken, PutOptions::default()).await.is_err());
    assert!(matches!(store.head(&k2).await, Err(StorageError::NotFound)));
}

async fn listing_pages_in_key_order(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let root = unique("conf-");
    let names = ["k1_128.webp", "k1_256.webp", "k1_256_q40.jpeg", "k1_512.png", "k10_128.webp", "k1x", "sub/k1_9.webp"];
    for n in names {
        store
            .put(&key(&format!("{root}/t/{n}")), Bytes::from_static(b"x").into(), PutOptions::default())
            .await
            .unwrap();
    }
    let prefix = KeyPrefix::parse(format!("{root}/t/k1_")).unwrap();
    let page = store.list(&prefix, None, 2).await.unwrap();
    let got: Vec<_> = page.objects.iter().map(|o| o.key.as_str().rsplit('/').next().unwrap().to_owned()).collect();
    assert_eq!(got, ["k1_128.webp", "k1_256.webp"]);
    assert!(page.next.is_some());
    let all = list_all(&*store, &prefix).await.unwrap();
    let got: Vec<_> = all.iter().map(|o| o.key.as_str().rsplit('/').next().unwrap().to_owned()).collect();
    assert_eq!(got, ["k1_128.webp", "k1_256.webp", "k1_256_q40.jpeg", "k1_512.png"]);
    assert!(all.iter().all(|o| o.size == 1));
    // A prefix ending in '/' lists the whole subtree.
    let everything = list_all(&*store, &KeyPrefix::parse(format!("{root}/")).unwrap()).await.unwrap();
    assert_eq!(everything.len(), names.len());
    let none = list_all(&*store, &KeyPrefix::parse(format!("{root}/nothing/")).unwrap()).await.unwrap();
    assert!(none.is_empty());
}

async fn multipart_lifecycle(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/big.bin", unique("conf-")));
    let id = store.create_multipart(&k, "video/mp4").await.unwrap();
    let p1 = pattern(5 * MIB, 3);
    let p2 = pattern(1234, 9);
    let e1 = store.upload_part(&k, &id, 1, Bytes::from(p1.clone()).into()).await.unwrap();
    let e2 = store.upload_part(&k, &id, 2, Bytes::from(p2.clone()).into()).await.unwrap();
    assert_eq!(e1, format!("\"{}\"", hex::encode(md5_of(&p1))), "part ETags are quoted MD5s");
    let parts = store.list_parts(&k, &id).await.unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].part_number, parts[0].size, parts[0].etag.as_str()), (1, p1.len() as u64, e1.as_str()));
    assert_eq!((parts[1].part_number, parts[1].size, parts[1].etag.as_str()), (2, p2.len() as u64, e2.as_str()));

    // A wrong ETag is refused and the upload stays usable.
    let wrong =
        [CompletedPart { part_number: 1, etag: e1.clone() }, CompletedPart { part_number: 2, etag: "\"00\"".into() }];
    assert!(matches!(store.complete_multipart(&k, &id, &wrong).await, Err(StorageError::InvalidPart(_))));

    let parts = [CompletedPart { part_number: 1, etag: e1 }, CompletedPart { part_number: 2, etag: e2 }];
    store.complete_multipart(&k, &id, &parts).await.unwrap();
    let head = store.head(&k).await.unwrap();
    assert_eq!(head.size, (p1.len() + p2.len()) as u64);
    assert!(head.etag.trim_matches('"').ends_with("-2"), "multipart ETag: {}", head.etag);
    let (body, _) =
        read_all(&*store, &k, Some(ByteRange::Bounded { start: 5 * MIB as u64 - 2, end: 5 * MIB as u64 + 1 })).await;
    assert_eq!(body, [&p1[p1.len() - 2..], &p2[..2]].concat());
    let (body, _) = read_all(&*store, &k, None).await;
    assert_eq!(body.len(), p1.len() + p2.len());
    assert!(body[..p1.len()] == p1[..] && body[p1.len()..] == p2[..]);
    // Completed: the upload id is gone.
    assert!(matches!(store.list_parts(&k, &id).await, Err(StorageError::NoSuchUpload)));
}

async fn multipart_small_parts_are_refused(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/small.bin", unique("conf-")));
    let id = store.create_multipart(&k, "application/octet-stream").await.unwrap();
    let e1 = store.upload_part(&k, &id, 1, Bytes::from(pattern(1000, 1)).into()).await.unwrap();
    let e2 = store.upload_part(&k, &id, 2, Bytes::from(pattern(1000, 2)).into()).await.unwrap();
    let parts = [CompletedPart { part_number: 1, etag: e1 }, CompletedPart { part_number: 2, etag: e2 }];
    let r = store.complete_multipart(&k, &id, &parts).await;
    assert!(matches!(r, Err(StorageError::InvalidPart(_))), "{r:?}");
    store.abort_multipart(&k, &id).await.unwrap();
}

async fn multipart_abort(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/aborted.bin", unique("conf-")));
    let id = store.create_multipart(&k, "video/mp4").await.unwrap();
    store.upload_part(&k, &id, 1, Bytes::from(pattern(1000, 1)).into()).await.unwrap();
    store.abort_multipart(&k, &id).await.unwrap();
    assert!(matches!(store.list_parts(&k, &id).await, Err(StorageError::NoSuchUpload)));
    let late = store.upload_part(&k, &id, 2, Bytes::from_static(b"x").into()).await;
    assert!(matches!(late, Err(StorageError::NoSuchUpload)), "{late:?}");
    let parts = [CompletedPart { part_number: 1, etag: "\"x\"".into() }];
    assert!(matches!(store.complete_multipart(&k, &id, &parts).await, Err(StorageError::NoSuchUpload)));
    assert!(matches!(store.head(&k).await, Err(StorageError::NotFound)));
}

async fn presigned_put_binds_headers(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/presigned.jpg", unique("conf-")));
    let ctx = PresignContext { base_url: "http://127.0.0.1:9".into(), expires_in: Duration::from_secs(600) };
    let op = PresignOp::Put { content_type: "image/jpeg".into(), content_length: 5, if_none_match: true };
    let req = store.presign(&k, &op, &ctx).await.unwrap();
    assert_eq!(req.method, "PUT");
    let header = |n: &str| req.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(header("Content-Type"), Some("image/jpeg"));
    assert_eq!(header("Content-Length"), Some("5"));
    assert_eq!(header("If-None-Match"), Some("*"));
    let left = req.expires_at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600), "{left:?}");
    if backend == Backend::Fs {
        // The fs backend's URLs are served by the service (tests/uploads.rs);
        // here: the URL points at the service and carries a verifiable grant.
        assert!(req.url.starts_with("http://127.0.0.1:9/_upload/"), "{}", req.url);
        return;
    }
    let client = reqwest::Client::new();
    let send = |body: &'static [u8], ct: &'static str, inm: bool| {
        let mut r = client.put(&req.url).header("Content-Type", ct).body(body);
        if inm {
            r = r.header("If-None-Match", "*");
        }
        r.send()
    };
    assert_eq!(send(b"1234", "image/jpeg", true).await.unwrap().status(), 403, "wrong length");
    assert_eq!(send(b"12345", "image/png", true).await.unwrap().status(), 403, "wrong type");
    assert_eq!(send(b"12345", "image/jpeg", false).await.unwrap().status(), 403, "missing If-None-Match");
    assert!(matches!(store.head(&k).await, Err(StorageError::NotFound)), "refused PUTs store nothing");
    assert_eq!(send(b"12345", "image/jpeg", true).await.unwrap().status(), 200);
    assert_eq!(send(b"54321", "image/jpeg", true).await.unwrap().status(), 412, "no overwrite");
    assert_eq!(read_all(&*store, &k, None).await.0, b"12345");
}

async fn presigned_part_binds_length(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/parts.bin", unique("conf-")));
    let id = store.create_multipart(&k, "video/mp4").await.unwrap();
    let ctx = PresignContext { base_url: "http://127.0.0.1:9".into(), expires_in: Duration::from_secs(600) };
    let op = PresignOp::UploadPart { upload_id: id.clone(), part_number: 1, content_length: 4 };
    let req = store.presign(&k, &op, &ctx).await.unwrap();
    assert_eq!(req.headers.iter().find(|(n, _)| n == "Content-Length").map(|(_, v)| v.as_str()), Some("4"));
    if backend == Backend::Fs {
        assert!(req.url.contains("partNumber=1") && req.url.contains(&format!("uploadId={id}")), "{}", req.url);
        store.abort_multipart(&k, &id).await.unwrap();
        return;
    }
    let client = reqwest::Client::new();
    assert_eq!(client.put(&req.url).body(&b"12345"[..]).send().await.unwrap().status(), 403);
    let ok = client.put(&req.url).body(&b"1234"[..]).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let etag = ok.headers()["etag"].to_str().unwrap().to_owned();
    let parts = store.list_parts(&k, &id).await.unwrap();
    assert_eq!((parts.len(), parts[0].etag.as_str(), parts[0].size), (1, etag.as_str(), 4));
    store.complete_multipart(&k, &id, &[CompletedPart { part_number: 1, etag }]).await.unwrap();
    assert_eq!(read_all(&*store, &k, None).await.0, b"1234");
}

async fn get_streams_in_chunks(backend: Backend) {
    let (store, _dir) = store(backend).await;
    let k = key(&format!("{}/stream.bin", unique("conf-")));
    let data = pattern(3 * MIB, 5);
    store.put(&k, Bytes::from(data.clone()).into(), PutOptions::default()).await.unwrap();
    let got = store.get(&k, None).await.unwrap();
    let mut chunks = 0;
    let mut total = 0;
    let mut body = got.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= MIB, "chunks are bounded, got {}", chunk.len());
        total += chunk.len();
        chunks += 1;
    }
    assert_eq!(total, data.len());
    assert!(chunks > 1, "the body arrives as a stream, not one buffer");
}

async fn store_answers_readiness(backend: Backend) {
    let (store, _dir) = store(backend).await;
    store.check().await.unwrap();
}

both_backends!(
    put_get_head_roundtrip,
    ranges,
    missing_objects,
    conditional_put_never_overwrites,
    streamed_put_checks_length,
    listing_pages_in_key_order,
    multipart_lifecycle,
    multipart_small_parts_are_refused,
    multipart_abort,
    presigned_put_binds_headers,
    presigned_part_binds_length,
    get_streams_in_chunks,
    store_answers_readiness,
);
