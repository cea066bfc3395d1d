//! A store that records every operation's count, result and time as metrics,
//! wrapped around the configured backend once at start-up.

use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    ByteRange, CompletedPart, DynStore, GetObject, KeyPrefix, ListPage, ObjectKey, ObjectMeta, ObjectStore, PartInfo,
    PresignContext, PresignOp, PresignedRequest, PutBody, PutOptions, Result, StorageError,
};

/// Metrics around another store.
#[derive(Debug)]
pub struct Instrumented {
    inner: DynStore,
}

impl Instrumented {
    /// Wraps `inner`.
    pub fn new(inner: DynStore) -> Self {
        Self { inner }
    }

    async fn timed<T>(&self, op: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = fut.await;
        let backend = self.inner.name();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => error_kind(e),
        };
        metrics::counter!("mediaflow_storage_operations_total", "backend" => backend, "op" => op, "result" => outcome)
            .increment(1);
        metrics::histogram!("mediaflow_storage_operation_duration_seconds", "backend" => backend, "op" => op)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// A stable label for an error kind.
pub fn error_kind(e: &StorageError) -> &'static str {
    match e {
        StorageError::NotFound => "not_found",
        StorageError::AlreadyExists => "already_exists",
        StorageError::NoSuchUpload => "no_such_upload",
        StorageError::InvalidPart(_) => "invalid_part",
        StorageError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
        StorageError::LengthMismatch { .. } => "length_mismatch",
        StorageError::InvalidKey(_) => "invalid_key",
        StorageError::Body(_) => "body",
        StorageError::Backend(_) => "backend",
    }
}

#[async_trait]
impl ObjectStore for Instrumented {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> Result<GetObject> {
        self.timed("get", self.inner.get(key, range)).await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        self.timed("head", self.inner.head(key)).await
    }

    async fn put(&self, key: &ObjectKey, body: PutBody, opts: PutOptions) -> Result<ObjectMeta> {
        self.timed("put", self.inner.put(key, body, opts)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.timed("delete", self.inner.delete(key)).await
    }

    async fn list(&self, prefix: &KeyPrefix, cursor: Option<String>, max: usize) -> Result<ListPage> {
        self.timed("list", self.inner.list(prefix, cursor, max)).await
    }

    async fn create_multipart(&self, key: &ObjectKey, content_type: &str) -> Result<String> {
        self.timed("create_multipart", self.inner.create_multipart(key, content_type)).await
    }

    async fn upload_part(&self, key: &ObjectKey, upload_id: &str, part_number: u32, body: PutBody) -> Result<String> {
        self.timed("upload_part", self.inner.upload_part(key, upload_id, part_number, body)).await
    }

    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        self.timed("list_parts", self.inner.list_parts(key, upload_id)).await
    }

    async fn complete_multipart(&self, key: &ObjectKey, upload_id: &str, parts: &[CompletedPart]) -> Result<()> {
        self.timed("complete_multipart", self.inner.complete_multipart(key, upload_id, parts)).await
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        self.timed("abort_multipart", self.inner.abort_multipart(key, upload_id)).await
    }

    async fn presign(&self, key: &ObjectKey, op: &PresignOp, ctx: &PresignContext) -> Result<PresignedRequest> {
        self.timed("presign", self.inner.presign(key, op, ctx)).await
    }

    async fn check(&self) -> Result<()> {
        self.timed("check", self.inner.check()).await
    }

    async fn read_source(&self, key: &ObjectKey, valid_for: std::time::Duration) -> Result<super::ReadSource> {
        self.timed("read_source", self.inner.read_source(key, valid_for)).await
    }
}
