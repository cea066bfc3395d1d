//! The S3 backend: AWS S3 and S3-compatible stores (SeaweedFS, MinIO, R2, Ceph).
//!
//! Uses the official AWS SDK: it signs (SigV4) and presigns with bound headers,
//! and resolves credentials through the standard chain (environment, profile,
//! web identity, ECS task role, EC2 instance role) when no static keys are set.
//! Custom endpoints use path-style addressing.
//!
//! Every call is bounded well below the service's REQUEST_TIMEOUT (see
//! [`CALL_TIMEOUT`]), so a store that stops answering is a quick 502, not a
//! request left hanging. Multipart upload ids are `<tag>.<S3 upload id>`: the
//! tag is chosen here and stored as the object's user metadata
//! (`x-amz-meta-mediaflow-upload-id`) at CreateMultipartUpload, since S3
//! assigns its own id only afterwards ([`super::upload_tag`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as SdkCompletedPart};
use bytes::Bytes;
use futures::TryStreamExt;
use http_body::Frame;
use tokio_util::io::ReaderStream;

use super::{
    ByteRange, CompletedPart, GetObject, KeyPrefix, ListPage, ObjectKey, ObjectMeta, ObjectStore, PartInfo,
    PresignContext, PresignOp, PresignedRequest, PutBody, PutOptions, Result, StorageError, UPLOAD_TAG_LEN,
    split_upload_id,
};

/// The user metadata (`x-amz-meta-…`) naming the upload that completed an object.
const UPLOAD_META: &str = "mediaflow-upload-id";

/// A call to the store, retries included, gives up after this long: well
/// below REQUEST_TIMEOUT (60 s by default), so that a frozen store answers
/// 502 `storage_error` while the client still waits.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// One attempt of a call; a second attempt fits within [`CALL_TIMEOUT`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);
/// CompleteMultipartUpload: S3 may take a while to assemble many parts, and
/// the service runs completes detached from the request, so one long attempt.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(45);

/// Timeouts for one call: `attempt` each try, `total` with retries.
fn timeouts(attempt: Duration, total: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(attempt)
        .operation_timeout(total)
        .build()
}

/// A PUT's body must travel within the attempt: a second per MiB on top.
fn put_timeouts(length: u64) -> aws_sdk_s3::config::Builder {
    let attempt = ATTEMPT_TIMEOUT + Duration::from_secs(length / (1024 * 1024));
    aws_sdk_s3::config::Builder::default().timeout_config(timeouts(attempt, attempt * 2 + Duration::from_secs(3)))
}

/// How to reach the bucket.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Region (`us-east-1` by default).
    pub region: String,
    /// Custom endpoint for the service's own calls (path-style).
    pub endpoint: Option<String>,
    /// Endpoint that presigned URLs point at (defaults to `endpoint`).
    pub public_endpoint: Option<String>,
    /// Static access key id; with the secret, replaces the default chain.
    pub access_key_id: Option<String>,
    /// Static secret access key.
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("public_endpoint", &self.public_endpoint)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<set>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A bucket reached through the AWS SDK.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    /// Signs URLs for clients, which may reach the store by another name.
    presigner: Client,
    bucket: String,
}

/// The SDK's HTTP client (for the store and for credential providers):
/// HTTP and HTTPS, rustls on ring, the platform's root certificates
/// (`SSL_CERT_FILE` names other ones, as for most TLS clients).
fn https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// Builds an SDK client for `endpoint` from the shared settings.
fn client(base: &aws_config::SdkConfig, settings: &S3Settings, endpoint: Option<&str>) -> Client {
    let mut builder = aws_sdk_s3::config::Builder::from(base)
        .region(Region::new(settings.region.clone()))
        // Stores other than AWS rarely speak the aws-chunked trailing checksums
        // the SDK would otherwise add; MD5/SigV4 already protect the payload.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        // A store that black-holes packets must not hang requests: fail, retry, answer 502.
        .timeout_config(timeouts(ATTEMPT_TIMEOUT, CALL_TIMEOUT));
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint).force_path_style(true);
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        builder = builder.credentials_provider(Credentials::new(id, secret, None, None, "mediaflow-static"));
    }
    Client::from_conf(builder.build())
}

/// Maps an SDK error to the storage error a caller can match.
fn map_err<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    match (e.code(), status) {
        (Some("NoSuchUpload"), _) => StorageError::NoSuchUpload,
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => StorageError::NotFound,
        (Some("PreconditionFailed" | "ConditionalRequestConflict"), _) | (_, Some(412)) => StorageError::AlreadyExists,
        (Some("InvalidRange"), _) | (_, Some(416)) => StorageError::RangeNotSatisfiable { size: 0 },
        (Some(code @ ("InvalidPart" | "InvalidPartOrder" | "EntityTooSmall")), _) => {
            StorageError::InvalidPart(format!("{code}: {}", e.message().unwrap_or("")))
        }
        _ => StorageError::Backend(format!("s3: {}", DisplayErrorContext(&e))),
    }
}

fn to_system_time(t: Option<&aws_smithy_types::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok()).unwrap_or(UNIX_EPOCH)
}

fn sdk_body(body: PutBody) -> SdkByteStream {
    let frames = body.stream.map_ok(Frame::data);
    // The SDK wants a Sync body; the stream is only ever polled from one task.
    let stream = sync_wrapper::SyncStream::new(frames);
    SdkByteStream::from_body_1_x(http_body_util::StreamBody::new(stream))
}

/// Header names as clients should send them.
fn canonical_header(name: &str) -> String {
    match name {
        "content-type" => "Content-Type".into(),
        "content-length" => "Content-Length".into(),
        "if-none-match" => "If-None-Match".into(),
        other => other.into(),
    }
}

impl S3Store {
    /// Connects to the bucket described by `settings`.
    pub async fn connect(settings: &S3Settings) -> Self {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .http_client(https_client())
            .load()
            .await;
        let public = settings.public_endpoint.as_deref().or(settings.endpoint.as_deref());
        Self {
            client: client(&base, settings, settings.endpoint.as_deref()),
            presigner: client(&base, settings, public),
            bucket: settings.bucket.clone(),
        }
    }

    /// The bucket this store serves.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Reads a whole (small) object from any bucket these credentials reach;
    /// used to load the profiles file from `s3://bucket/key`.
    pub async fn read_from(&self, bucket: &str, key: &str) -> Result<Bytes> {
        let out = self.client.get_object().bucket(bucket).key(key).send().await.map_err(map_err)?;
        let data = out.body.collect().await.map_err(StorageError::backend)?;
        Ok(data.into_bytes())
    }

    /// Creates the bucket if it does not exist (used by tests and first runs).
    pub async fn ensure_bucket(&self) -> Result<()> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    fn meta(
        key: &ObjectKey,
        size: Option<i64>,
        etag: Option<&str>,
        modified: Option<&aws_smithy_types::DateTime>,
        content_type: Option<&str>,
        metadata: Option<&std::collections::HashMap<String, String>>,
    ) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: size.unwrap_or(0).max(0) as u64,
            etag: etag.unwrap_or("\"\"").to_owned(),
            last_modified: to_system_time(modified),
            content_type: content_type.map(str::to_owned),
            upload_tag: metadata.and_then(|m| m.get(UPLOAD_META)).cloned(),
        }
    }
}

/// One entry per part number, the latest upload of each: SeaweedFS 4.48 lists
/// every upload of a re-sent part, while completion uses the last one.
fn latest_parts(listed: Vec<(PartInfo, SystemTime)>) -> Vec<PartInfo> {
    let mut latest: std::collections::BTreeMap<u32, (PartInfo, SystemTime)> = std::collections::BTreeMap::new();
    for (part, modified) in listed {
        match latest.get(&part.part_number) {
            // Equal times: the later entry in the listing wins.
            Some((_, seen)) if *seen > modified => {}
            _ => {
                latest.insert(part.part_number, (part, modified));
            }
        }
    }
    latest.into_values().map(|(p, _)| p).collect()
}

/// Parses `bytes start-end/size` from a Content-Range header.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, size.parse().ok()?))
}

#[async_trait]
impl ObjectStore for S3Store {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> Result<GetObject> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key.as_str());
        if let Some(r) = range {
            req = req.range(r.to_header());
        }
        let out = match req.send().await.map_err(map_err) {
            Err(StorageError::RangeNotSatisfiable { .. }) => {
                let size = self.head(key).await?.size;
                return Err(StorageError::RangeNotSatisfiable { size });
            }
            other => other?,
        };
        let (resolved, size) = match out.content_range().and_then(parse_content_range) {
            Some((start, end, size)) if range.is_some() => (Some((start, end)), Some(size as i64)),
            _ => (None, out.content_length()),
        };
        // A store that ignores Range answers 200 with the whole body, which is
        // only right when the range covers the whole object.
        if let (Some(r), None) = (range, resolved) {
            let total = size.unwrap_or(0).max(0) as u64;
            match r.resolve(total) {
                Some((0, end)) if end + 1 == total => {}
                Some(_) => return Err(StorageError::Backend("s3: the store ignored the Range header".into())),
                None => return Err(StorageError::RangeNotSatisfiable { size: total }),
            }
        }
        let meta = Self::meta(key, size, out.e_tag(), out.last_modified(), out.content_type(), out.metadata());
        let body = Box::pin(ReaderStream::with_capacity(out.body.into_async_read(), 64 * 1024));
        Ok(GetObject { meta, range: resolved, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        let out = self.client.head_object().bucket(&self.bucket).key(key.as_str()).send().await.map_err(map_err)?;
        Ok(Self::meta(key, out.content_length(), out.e_tag(), out.last_modified(), out.content_type(), out.metadata()))
    }

    async fn put(&self, key: &ObjectKey, body: PutBody, opts: PutOptions) -> Result<ObjectMeta> {
        let length = body.length;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_length(length as i64)
            .body(sdk_body(body));
        if let Some(ct) = &opts.content_type {
            req = req.content_type(ct);
        }
        if opts.if_none_match {
            req = req.if_none_match("*");
        }
        let out = req.customize().config_override(put_timeouts(length)).send().await.map_err(map_err)?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: length,
            etag: out.e_tag().unwrap_or("\"\"").to_owned(),
            last_modified: SystemTime::now(),
            content_type: opts.content_type,
            upload_tag: None,
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.client.delete_object().bucket(&self.bucket).key(key.as_str()).send().await.map_err(map_err)?;
        Ok(())
    }

    async fn list(&self, prefix: &KeyPrefix, cursor: Option<String>, max: usize) -> Result<ListPage> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix.as_str())
            .set_continuation_token(cursor)
            .max_keys(max.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(map_err)?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                let key = ObjectKey::parse_listed(o.key()?).ok()?;
                Some(Self::meta(&key, o.size(), o.e_tag(), o.last_modified(), None, None))
            })
            .collect();
        let next =
            if out.is_truncated() == Some(true) { out.next_continuation_token().map(str::to_owned) } else { None };
        Ok(ListPage { objects, next })
    }

    async fn create_multipart(&self, key: &ObjectKey, content_type: &str) -> Result<String> {
        let tag = hex::encode(rand::random::<[u8; UPLOAD_TAG_LEN / 2]>());
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .metadata(UPLOAD_META, &tag)
            .send()
            .await
            .map_err(map_err)?;
        let id = out
            .upload_id()
            .ok_or_else(|| StorageError::Backend("s3: CreateMultipartUpload returned no upload id".into()))?;
        Ok(format!("{tag}.{id}"))
    }

    async fn upload_part(&self, key: &ObjectKey, upload_id: &str, part_number: u32, body: PutBody) -> Result<String> {
        let length = body.length;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(split_upload_id(upload_id).1)
            .part_number(part_number as i32)
            .content_length(length as i64)
            .body(sdk_body(body))
            .customize()
            .config_override(put_timeouts(length))
            .send()
            .await
            .map_err(map_err)?;
        out.e_tag().map(str::to_owned).ok_or_else(|| StorageError::Backend("s3: UploadPart returned no ETag".into()))
    }

    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(split_upload_id(upload_id).1)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(map_err)?;
            parts.extend(out.parts().iter().map(|p| {
                let info = PartInfo {
                    part_number: p.part_number().unwrap_or(0).max(0) as u32,
                    etag: p.e_tag().unwrap_or("").to_owned(),
                    size: p.size().unwrap_or(0).max(0) as u64,
                };
                (info, to_system_time(p.last_modified()))
            }));
            match (out.is_truncated(), out.next_part_number_marker()) {
                (Some(true), Some(next)) if !next.is_empty() => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(latest_parts(parts))
    }

    async fn complete_multipart(&self, key: &ObjectKey, upload_id: &str, parts: &[CompletedPart]) -> Result<()> {
        let parts = parts
            .iter()
            .map(|p| SdkCompletedPart::builder().part_number(p.part_number as i32).e_tag(&p.etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(split_upload_id(upload_id).1)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            // Never overwrite: AWS S3 refuses with 412 (or 409 while another
            // write is in flight), SeaweedFS 4.48 at least when the object
            // already exists; both map to AlreadyExists.
            .if_none_match("*")
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(timeouts(COMPLETE_TIMEOUT, COMPLETE_TIMEOUT)),
            )
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(split_upload_id(upload_id).1)
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn presign(&self, key: &ObjectKey, op: &PresignOp, ctx: &PresignContext) -> Result<PresignedRequest> {
        let config = PresigningConfig::expires_in(ctx.expires_in).map_err(StorageError::backend)?;
        let presigned = match op {
            PresignOp::Put { content_type, content_length, if_none_match } => {
                let mut req = self
                    .presigner
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key.as_str())
                    .content_type(content_type)
                    .content_length(*content_length as i64);
                if *if_none_match {
                    req = req.if_none_match("*");
                }
                req.presigned(config).await.map_err(map_err)?
            }
            PresignOp::UploadPart { upload_id, part_number, content_length } => self
                .presigner
                .upload_part()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(split_upload_id(upload_id).1)
                .part_number(*part_number as i32)
                .content_length(*content_length as i64)
                .presigned(config)
                .await
                .map_err(map_err)?,
        };
        let headers = presigned
            .headers()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(name, value)| (canonical_header(&name.to_ascii_lowercase()), value.to_owned()))
            .collect();
        Ok(PresignedRequest {
            method: presigned.method().to_owned(),
            url: presigned.uri().to_owned(),
            headers,
            expires_at: SystemTime::now() + ctx.expires_in - Duration::from_secs(1),
        })
    }

    async fn read_source(&self, key: &ObjectKey, valid_for: Duration) -> Result<super::ReadSource> {
        // Signed for the service's own endpoint (S3_ENDPOINT): the reader runs
        // here, not at the clients' PUBLIC_S3_ENDPOINT.
        let config = PresigningConfig::expires_in(valid_for).map_err(StorageError::backend)?;
        let req =
            self.client.get_object().bucket(&self.bucket).key(key.as_str()).presigned(config).await.map_err(map_err)?;
        Ok(super::ReadSource::Url(req.uri().to_owned()))
    }

    async fn check(&self) -> Result<()> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
    }

    #[test]
    fn a_part_listed_twice_counts_once_the_latest() {
        let part = |n, etag: &str| PartInfo { part_number: n, etag: etag.into(), size: 1 };
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let listed =
            vec![(part(2, "b"), t(5)), (part(1, "old"), t(10)), (part(1, "new"), t(20)), (part(1, "older"), t(1))];
        assert_eq!(latest_parts(listed), [part(1, "new"), part(2, "b")]);
        let same_time = vec![(part(1, "first"), t(7)), (part(1, "second"), t(7))];
        assert_eq!(latest_parts(same_time), [part(1, "second")]);
    }

    #[test]
    fn debug_hides_secrets() {
        let s = S3Settings {
            secret_access_key: Some("very-secret".into()),
            access_key_id: Some("AKIA123".into()),
            ..Default::default()
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("very-secret") && !dbg.contains("AKIA123"), "{dbg}");
    }
}
