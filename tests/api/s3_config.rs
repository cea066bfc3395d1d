//! S3-only settings: profiles loaded from `s3://bucket/key`, and presigned URLs
//! signed for PUBLIC_S3_ENDPOINT.

use crate::common::{s3_settings, unique};
use bytes::Bytes;
use mediaflow::storage::s3::S3Store;
use mediaflow::storage::{ObjectKey, ObjectStore, PresignContext, PresignOp, PutOptions};

#[tokio::test]
async fn profiles_load_from_a_bucket() {
    let Some(settings) = s3_settings() else { return };
    let store = S3Store::connect(&settings).await;
    store.ensure_bucket().await.unwrap();
    let key = format!("config/{}.yaml", unique("profiles-"));
    let yaml = "profiles:\n  remote:\n    allowed_mimes: [image/png]\n    size_max_bytes: 1000\n    storage_path: r/{key_base}\n    sizes: [\"32\"]\n";
    store.put(&ObjectKey::parse(key.clone()).unwrap(), Bytes::from(yaml).into(), PutOptions::default()).await.unwrap();
    let source = format!("s3://{}/{key}", settings.bucket);
    let profiles = mediaflow::startup::load_profiles(Some(&source), &settings).await.unwrap();
    assert_eq!(profiles.get("remote").unwrap().sizes, vec![mediaflow::config::ThumbSize::Width(32)]);
    assert!(profiles.get("default").is_some(), "the built-in default is added");

    let missing = format!("s3://{}/config/none.yaml", settings.bucket);
    let err = mediaflow::startup::load_profiles(Some(&missing), &settings).await.unwrap_err();
    assert!(format!("{err:#}").contains("none.yaml"), "{err:#}");
    let bad = mediaflow::startup::load_profiles(Some("s3://only-bucket"), &settings).await.unwrap_err();
    assert!(format!("{err:#} {bad:#}").contains("s3://bucket/key"), "{bad:#}");
}

#[tokio::test]
async fn presigned_urls_use_the_public_endpoint() {
    let Some(mut settings) = s3_settings() else { return };
    settings.public_endpoint = Some("https://media-store.example.com".into());
    let store = S3Store::connect(&settings).await;
    let key = ObjectKey::parse(format!("p/{}", unique("k"))).unwrap();
    let ctx = PresignContext { base_url: "http://unused".into(), expires_in: std::time::Duration::from_secs(60) };
    let op = PresignOp::Put { content_type: "image/png".into(), content_length: 3, if_none_match: true };
    let req = store.presign(&key, &op, &ctx).await.unwrap();
    let bucket = &settings.bucket;
    assert!(
        req.url.starts_with(&format!("https://media-store.example.com/{bucket}/{key}?")),
        "path-style URL on the public endpoint: {}",
        req.url
    );
    assert!(req.url.contains("X-Amz-Signature="));
}
