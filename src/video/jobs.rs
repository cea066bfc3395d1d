//! Proxy jobs: web-playable copies of videos, made in the background.
//!
//! The store is the coordination point, so any number of instances over one
//! bucket need nothing else (SPEC §3 `/proxy`):
//! - a job is a marker object (`.mediaflow/jobs/<hash of the proxy key>`)
//!   written when a video upload completes or when `/proxy` is first asked
//!   for; it survives restarts;
//! - every instance polls the markers; to run one it creates a lease object
//!   with `If-None-Match: *` (one instance wins), renews it while ffmpeg
//!   runs, and takes it over when it has expired (its holder died);
//! - the proxy is written to a temp file, checked (it must probe as a video
//!   of the source's length), and only then stored with one atomic put, so a
//!   reader never sees a partial proxy; a failure is recorded for the
//!   original's ETag, so `/proxy` can say `failed`.
//!
//! The guarantee is at-least-once: after a lost lease (an instance paused
//! past the lease's lifetime) two instances may transcode the same video,
//! and the second's identical proxy replaces the first's. A user outgrowing
//! this (thousands of jobs, priorities, retries with backoff) would put a
//! real queue (SQS, a database) behind [`super::Videos::enqueue`] and keep
//! the worker as it is.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::ProxyFormat;
use crate::storage::signing::unix;
use crate::storage::{DynStore, InternalKey, ObjectKey, PutOptions, StorageError};

/// How long a lease holds without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often a running job renews its lease.
pub const LEASE_RENEW: Duration = Duration::from_secs(20);

/// A queued job, as stored in its marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The profile of the video.
    pub profile: String,
    /// The original's key.
    pub original: String,
    /// Where the proxy goes.
    pub proxy: String,
    /// `mp4` or `webm`.
    pub format: String,
}

impl Job {
    /// The proxy's format.
    pub fn format(&self) -> Option<ProxyFormat> {
        ProxyFormat::from_name(&self.format)
    }
}

/// A lease on a job, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    owner: String,
    /// Unix seconds.
    expires: u64,
}

/// A failed job, as stored: for which original and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The ETag of the original the job failed on.
    pub original_etag: String,
    /// What went wrong (shown in logs, not to clients).
    pub reason: String,
}

fn json_put() -> PutOptions {
    PutOptions { content_type: Some("application/json".into()), if_none_match: false }
}

async fn read_json<T: for<'de> Deserialize<'de>>(store: &DynStore, key: &ObjectKey) -> Result<Option<T>, StorageError> {
    match store.get(key, None).await {
        Ok(object) => {
            let bytes = object.collect(64 * 1024).await?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(StorageError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Queues `job` (idempotent: a job already queued stays as it is).
pub async fn enqueue(store: &DynStore, proxy: &ObjectKey, job: &Job) -> Result<(), StorageError> {
    let marker = ObjectKey::internal(InternalKey::ProxyJob(proxy));
    let body = serde_json::to_vec(job).expect("serialisable");
    match store.put(&marker, body.into(), PutOptions { if_none_match: true, ..json_put() }).await {
        Ok(_) | Err(StorageError::AlreadyExists) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a job for `proxy` is queued.
pub async fn is_queued(store: &DynStore, proxy: &ObjectKey) -> Result<bool, StorageError> {
    match store.head(&ObjectKey::internal(InternalKey::ProxyJob(proxy))).await {
        Ok(_) => Ok(true),
        Err(StorageError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a queued job's marker.
pub async fn read_job(store: &DynStore, marker: &ObjectKey) -> Result<Option<Job>, StorageError> {
    read_json(store, marker).await
}

/// Removes a job's marker (done, failed, or its original is gone).
pub async fn dequeue(store: &DynStore, proxy: &ObjectKey) -> Result<(), StorageError> {
    store.delete(&ObjectKey::internal(InternalKey::ProxyJob(proxy))).await
}

/// The failure recorded for `proxy`, if any.
pub async fn failure(store: &DynStore, proxy: &ObjectKey) -> Result<Option<Failure>, StorageError> {
    read_json(store, &ObjectKey::internal(InternalKey::ProxyFailure(proxy))).await
}

/// Records that the job for `proxy` failed on the original `etag`.
pub async fn record_failure(store: &DynStore, proxy: &ObjectKey, failure: &Failure) -> Result<(), StorageError> {
    let body = serde_json::to_vec(failure).expect("serialisable");
    store.put(&ObjectKey::internal(InternalKey::ProxyFailure(proxy)), body.into(), json_put()).await.map(|_| ())
}

/// Forgets a recorded failure (the job succeeded, or the asset is deleted).
pub async fn clear_failure(store: &DynStore, proxy: &ObjectKey) -> Result<(), StorageError> {
    store.delete(&ObjectKey::internal(InternalKey::ProxyFailure(proxy))).await
}

/// A lease this instance holds on a job.
#[derive(Debug)]
pub struct Held {
    key: ObjectKey,
    owner: String,
}

/// Takes the lease on `proxy`'s job for `owner`: `None` when another live
/// instance holds it. An expired lease is taken over.
pub async fn acquire(store: &DynStore, proxy: &ObjectKey, owner: &str) -> Result<Option<Held>, StorageError> {
    let key = ObjectKey::internal(InternalKey::ProxyLease(proxy));
    for _ in 0..2 {
        let lease = Lease { owner: owner.to_owned(), expires: unix(SystemTime::now() + LEASE_TTL) };
        let body = serde_json::to_vec(&lease).expect("serialisable");
        match store.put(&key, body.into(), PutOptions { if_none_match: true, ..json_put() }).await {
            Ok(_) => return Ok(Some(Held { key, owner: owner.to_owned() })),
            Err(StorageError::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
        match read_json::<Lease>(store, &key).await? {
            Some(l) if l.expires > unix(SystemTime::now()) => return Ok(None),
            // Expired (its holder died) or unreadable: take it over. Two
            // instances doing this at once may both run the job (at least
            // once, never a partial proxy).
            _ => store.delete(&key).await?,
        }
    }
    Ok(None)
}

/// Extends a held lease.
pub async fn renew(store: &DynStore, held: &Held) -> Result<(), StorageError> {
    let lease = Lease { owner: held.owner.clone(), expires: unix(SystemTime::now() + LEASE_TTL) };
    let body = serde_json::to_vec(&lease).expect("serialisable");
    store.put(&held.key, body.into(), json_put()).await.map(|_| ())
}

/// Gives a lease up, if it is still this instance's.
pub async fn release(store: &DynStore, held: Held) {
    match read_json::<Lease>(store, &held.key).await {
        Ok(Some(l)) if l.owner == held.owner => {
            if let Err(e) = store.delete(&held.key).await {
                tracing::warn!(error = %e, "could not release a proxy job lease; it expires by itself");
            }
        }
        _ => {}
    }
}
