//! A store double around a real backend, for faults a real store will not
//! make on cue: a complete that takes its time, or whose answer is lost, or
//! writes that wait until the test lets them through.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mediaflow::storage::{
    ByteRange, CompletedPart, DynStore, GetObject, KeyPrefix, ListPage, ObjectKey, ObjectMeta, ObjectStore, PartInfo,
    PresignContext, PresignOp, PresignedRequest, PutBody, PutOptions, Result, StorageError,
};
use tokio::sync::{Notify, Semaphore};

/// Delegates to `inner`, except as told for CompleteMultipartUpload and for
/// puts of held keys.
#[derive(Debug)]
pub struct Faulty {
    pub inner: DynStore,
    /// Signalled when a complete reaches the store.
    pub complete_started: Notify,
    /// How long a complete waits before it reaches the store.
    pub complete_delay: Mutex<Duration>,
    /// The next complete is done, but its caller gets a store error (a
    /// volume server killed before it answered).
    pub lose_complete_answer: AtomicBool,
    /// Puts of keys starting with this wait for [`Self::release_puts`].
    pub hold_puts_under: Mutex<Option<String>>,
    /// Signalled when a held put reaches the store.
    pub put_held: Notify,
    /// One permit per held put let through.
    pub release_puts: Semaphore,
}

impl Faulty {
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            complete_started: Notify::new(),
            complete_delay: Mutex::new(Duration::ZERO),
            lose_complete_answer: AtomicBool::new(false),
            hold_puts_under: Mutex::new(None),
            put_held: Notify::new(),
            release_puts: Semaphore::new(0),
        }
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> Result<GetObject> {
        self.inner.get(key, range).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn put(&self, key: &ObjectKey, body: PutBody, opts: PutOptions) -> Result<ObjectMeta> {
        let held = self.hold_puts_under.lock().unwrap().as_ref().is_some_and(|p| key.as_str().starts_with(p.as_str()));
        if held {
            self.put_held.notify_one();
            self.release_puts.acquire().await.expect("never closed").forget();
        }
        self.inner.put(key, body, opts).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &KeyPrefix, cursor: Option<String>, max: usize) -> Result<ListPage> {
        self.inner.list(prefix, cursor, max).await
    }
    async fn create_multipart(&self, key: &ObjectKey, content_type: &str) -> Result<String> {
        self.inner.create_multipart(key, content_type).await
    }
    async fn upload_part(&self, key: &ObjectKey, upload_id: &str, part_number: u32, body: PutBody) -> Result<String> {
        self.inner.upload_part(key, upload_id, part_number, body).await
    }
    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        self.inner.list_parts(key, upload_id).await
    }
    async fn complete_multipart(&self, key: &ObjectKey, upload_id: &str, parts: &[CompletedPart]) -> Result<()> {
        self.complete_started.notify_one();
        let delay = *self.complete_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.inner.complete_multipart(key, upload_id, parts).await?;
        if self.lose_complete_answer.swap(false, Ordering::SeqCst) {
            return Err(StorageError::Backend("connection reset by the store (simulated)".into()));
        }
        Ok(())
    }
    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        self.inner.abort_multipart(key, upload_id).await
    }
    async fn presign(&self, key: &ObjectKey, op: &PresignOp, ctx: &PresignContext) -> Result<PresignedRequest> {
        self.inner.presign(key, op, ctx).await
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    async fn read_source(&self, key: &ObjectKey, valid_for: Duration) -> Result<mediaflow::storage::ReadSource> {
        self.inner.read_source(key, valid_for).await
    }
}
