//! Claims: how completes racing to one object key are serialised on every
//! store and across instances (SPEC §3, "No overwrite, also under races").
//!
//! A store's own conditional complete is not enough: SeaweedFS 4.48 lets two
//! `If-None-Match: *` completes to one key both succeed. Its conditional PUTs
//! of small objects are atomic, as are AWS S3's and the filesystem backend's
//! (a hard link). So before it completes, a complete claims the key: it puts
//! `.mediaflow/claims/<sha256(key)>` with `If-None-Match: *`, and whoever
//! holds that marker is the only complete writing the key.
//!
//! Lifecycle:
//! - the holder removes it when its complete ends, whatever the outcome;
//! - a complete that finds it held waits (the holder finishes in seconds);
//! - a claim older than [`STALE_AFTER`] has lost its holder (a crash): it is
//!   taken over. So that two completes finding one stale claim do not both
//!   take it over, each first puts a takeover marker named by the stale
//!   claim's ETag with `If-None-Match: *`; only its winner deletes the claim.
//!   The winner removes its marker with its own claim;
//! - a claim left by this very instance for the upload being completed (a
//!   complete that failed and could not remove it, say the store was down)
//!   is taken over at once: completes of one upload are serialised in the
//!   process, so no one else holds it.
//!
//! Client keys never reach `.mediaflow/` ([`ObjectKey::internal`]), and
//! listings, lookups and deletes only see client keys.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::storage::{DynStore, InternalKey, ObjectKey, PutOptions, StorageError};

/// A claim this old has lost its holder and may be taken over. Far longer
/// than any complete holds one: each store call is bounded (the S3 backend's
/// timeouts), and only the filesystem backend's assembly of a very large
/// upload (hundreds of GB) could take longer.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// First pause while another complete holds the claim; doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two looks at a held claim.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// A claim record is a few hundred bytes; anything bigger is not one.
const RECORD_LIMIT: u64 = 4096;

type Result<T> = std::result::Result<T, StorageError>;

/// What a claim marker says (for the takeover rules and for operators).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClaimRecord {
    object_key: String,
    upload_id: String,
    /// The process that holds it.
    instance: String,
    /// Makes every claim's bytes, hence its ETag, unique.
    nonce: String,
    /// Unix seconds, by the holder's clock (ages are measured by the store's).
    claimed_at: u64,
}

/// A claim as found in the store.
#[derive(Debug)]
struct Holder {
    record: Option<ClaimRecord>,
    etag: String,
    age: Duration,
}

/// A claim this complete holds; give it back with [`Claims::release`].
#[derive(Debug)]
pub struct HeldClaim {
    key: ObjectKey,
    /// Identifies this claim's record (not the ETag: the filesystem
    /// backend's ETag lives in a sidecar, which a racing delete can remove).
    nonce: String,
    markers: Vec<ObjectKey>,
}

/// Takes and gives back claims on object keys.
#[derive(Debug)]
pub struct Claims {
    store: DynStore,
    instance: String,
}

impl Claims {
    /// Claims in `store`, on behalf of this process.
    pub fn new(store: DynStore) -> Self {
        Self { store, instance: hex::encode(rand::random::<[u8; 8]>()) }
    }

    /// Claims `key` for the complete of `upload_id`, waiting while another
    /// complete holds it and taking over a claim whose holder is gone.
    pub async fn acquire(&self, key: &ObjectKey, upload_id: &str) -> Result<HeldClaim> {
        let claim = ObjectKey::internal(InternalKey::Claim(key));
        let mut markers = Vec::new();
        let mut pause = FIRST_PAUSE;
        loop {
            let nonce = hex::encode(rand::random::<[u8; 16]>());
            let taken = self.put_claim(&claim, key, upload_id, &nonce).await;
            let held = match taken {
                Ok(()) => return Ok(HeldClaim { key: claim, nonce, markers }),
                Err(StorageError::AlreadyExists) => self.read(&claim).await,
                Err(e) => Err(e),
            };
            let holder = match held {
                Ok(Some(holder)) => holder,
                // Released between our put and our look: try again at once.
                Ok(None) => continue,
                Err(e) => {
                    self.remove_markers(&markers).await;
                    return Err(e);
                }
            };
            let ours_left_over =
                holder.record.as_ref().is_some_and(|r| r.upload_id == upload_id && r.instance == self.instance);
            if ours_left_over || holder.age >= STALE_AFTER {
                match self.take_over(&claim, key, &holder).await {
                    Ok(Some(marker)) => {
                        tracing::warn!(key = %key, stale_for = ?holder.age, claim = ?holder.record, "took over a claim");
                        markers.push(marker);
                        continue;
                    }
                    // Another complete is taking it over: wait for it as for a holder.
                    Ok(None) => {}
                    Err(e) => {
                        self.remove_markers(&markers).await;
                        return Err(e);
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Gives a claim back (best effort: a claim left behind goes stale and is
    /// taken over). Only removes it if it is still this complete's.
    pub async fn release(&self, held: HeldClaim) {
        match self.read(&held.key).await {
            Ok(Some(Holder { record: Some(record), .. })) if record.nonce == held.nonce => {
                if let Err(e) = self.store.delete(&held.key).await {
                    tracing::warn!(error = %e, claim = %held.key, "could not remove a claim; it will go stale");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, claim = %held.key, "could not check a claim; it will go stale"),
        }
        self.remove_markers(&held.markers).await;
    }

    /// Waits while a complete of `upload_id` on another instance holds `key`
    /// (it may not have stored the object yet), so that a retried complete
    /// judges the finished result.
    pub async fn wait_for_upload(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        let claim = ObjectKey::internal(InternalKey::Claim(key));
        let mut pause = FIRST_PAUSE;
        loop {
            let Some(holder) = self.read(&claim).await? else { return Ok(()) };
            let busy = holder.age < STALE_AFTER
                && holder.record.as_ref().is_some_and(|r| r.upload_id == upload_id && r.instance != self.instance);
            if !busy {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    async fn put_claim(&self, claim: &ObjectKey, key: &ObjectKey, upload_id: &str, nonce: &str) -> Result<()> {
        let record = ClaimRecord {
            object_key: key.to_string(),
            upload_id: upload_id.to_owned(),
            instance: self.instance.clone(),
            nonce: nonce.to_owned(),
            claimed_at: crate::storage::signing::unix(SystemTime::now()),
        };
        let body = Bytes::from(serde_json::to_vec(&record).expect("serialisable"));
        let opts = PutOptions { content_type: Some("application/json".into()), if_none_match: true };
        self.store.put(claim, body.into(), opts).await.map(|_| ())
    }

    /// The claim on the key, if any; its age by the store's clock.
    async fn read(&self, claim: &ObjectKey) -> Result<Option<Holder>> {
        let object = match self.store.get(claim, None).await {
            Ok(object) => object,
            Err(StorageError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = object.meta.clone();
        let record = match object.collect(RECORD_LIMIT).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            // Deleted while being read: released.
            Err(StorageError::NotFound) => return Ok(None),
            Err(StorageError::LengthMismatch { .. }) => None,
            Err(e) => return Err(e),
        };
        let age = SystemTime::now().duration_since(meta.last_modified).unwrap_or_default();
        Ok(Some(Holder { record, etag: meta.etag, age }))
    }

    /// Takes over `holder`'s claim if this complete wins its takeover marker;
    /// returns the marker, or `None` when another complete won it.
    async fn take_over(&self, claim: &ObjectKey, key: &ObjectKey, holder: &Holder) -> Result<Option<ObjectKey>> {
        // Named by the claim's own record where it has one (every reader sees
        // the same bytes), else by its ETag.
        let identity = holder.record.as_ref().map_or(holder.etag.as_str(), |r| r.nonce.as_str());
        let digest = Sha256::digest(identity.as_bytes());
        let id = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
        let marker = ObjectKey::internal(InternalKey::ClaimTakeover(key, id));
        let opts = PutOptions { content_type: Some("application/json".into()), if_none_match: true };
        let body = Bytes::from(serde_json::to_vec(&holder.record).expect("serialisable"));
        match self.store.put(&marker, body.into(), opts).await {
            Ok(_) => {}
            Err(StorageError::AlreadyExists) => return Ok(None),
            Err(e) => return Err(e),
        }
        if let Err(e) = self.store.delete(claim).await {
            self.remove_markers(std::slice::from_ref(&marker)).await;
            return Err(e);
        }
        Ok(Some(marker))
    }

    async fn remove_markers(&self, markers: &[ObjectKey]) {
        for marker in markers {
            if let Err(e) = self.store.delete(marker).await {
                tracing::warn!(error = %e, marker = %marker, "could not remove a takeover marker");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::fs::FsStore;
    use crate::storage::signing::UrlSigner;

    async fn claims() -> (Claims, DynStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = Arc::new(FsStore::open(dir.path(), UrlSigner::new(b"k")).await.unwrap());
        (Claims::new(store.clone()), store, dir)
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_released() {
        let (claims, store, _dir) = claims().await;
        let key = ObjectKey::parse("originals/a/k").unwrap();
        let held = claims.acquire(&key, "up-1").await.unwrap();
        let claim = ObjectKey::internal(InternalKey::Claim(&key));
        assert!(store.head(&claim).await.is_ok());
        // A second claimant waits while the first holds it.
        let other = Claims::new(store.clone());
        let waiting = tokio::time::timeout(Duration::from_millis(300), other.acquire(&key, "up-2")).await;
        assert!(waiting.is_err(), "a held claim makes others wait");
        claims.release(held).await;
        assert!(matches!(store.head(&claim).await, Err(StorageError::NotFound)));
        let held = tokio::time::timeout(Duration::from_secs(5), other.acquire(&key, "up-2")).await.unwrap().unwrap();
        other.release(held).await;
    }

    #[tokio::test]
    async fn release_does_not_rely_on_the_sidecar() {
        // On the filesystem backend a delete racing a put can remove the new
        // object's sidecar (content type, ETag); a claim must still be released.
        let (claims, store, dir) = claims().await;
        let key = ObjectKey::parse("originals/a/k").unwrap();
        let held = claims.acquire(&key, "up-1").await.unwrap();
        let meta = dir.path().join(".mediaflow/meta");
        for shard in std::fs::read_dir(&meta).unwrap() {
            std::fs::remove_dir_all(shard.unwrap().path()).unwrap();
        }
        claims.release(held).await;
        let claim = ObjectKey::internal(InternalKey::Claim(&key));
        assert!(matches!(store.head(&claim).await, Err(StorageError::NotFound)));
    }

    #[tokio::test]
    async fn a_claim_left_by_this_instance_for_the_same_upload_is_taken_over() {
        let (claims, store, _dir) = claims().await;
        let key = ObjectKey::parse("originals/a/k").unwrap();
        let left = claims.acquire(&key, "up-1").await.unwrap();
        // Not released (the store failed, say): the next attempt of this upload goes on.
        let held = tokio::time::timeout(Duration::from_secs(5), claims.acquire(&key, "up-1")).await.unwrap().unwrap();
        assert_eq!(held.markers.len(), 1);
        // The old claim's holder no longer removes the new one.
        claims.release(left).await;
        let claim = ObjectKey::internal(InternalKey::Claim(&key));
        assert!(store.head(&claim).await.is_ok(), "still held by the second attempt");
        let marker = held.markers[0].clone();
        claims.release(held).await;
        assert!(matches!(store.head(&claim).await, Err(StorageError::NotFound)));
        assert!(matches!(store.head(&marker).await, Err(StorageError::NotFound)), "marker removed with the claim");
    }

    #[tokio::test]
    async fn a_stale_claim_is_taken_over_by_exactly_one() {
        let (claims, store, dir) = claims().await;
        let key = ObjectKey::parse("originals/a/k").unwrap();
        let claim = ObjectKey::internal(InternalKey::Claim(&key));
        // A claim whose holder died long ago (its file dated back).
        let _dead = Claims::new(store.clone()).acquire(&key, "up-dead").await.unwrap();
        let path = dir.path().join(".mediaflow/objects").join(claim.as_str().strip_prefix(".mediaflow/").unwrap());
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        let stale = claims.read(&claim).await.unwrap().unwrap();

        let held = tokio::time::timeout(Duration::from_secs(5), claims.acquire(&key, "up-a")).await.unwrap().unwrap();
        assert_eq!(held.markers.len(), 1, "taken over");
        // Another complete that saw the same stale claim backs off ...
        let other = Claims::new(store.clone());
        assert!(other.take_over(&claim, &key, &stale).await.unwrap().is_none());
        // ... and waits for the new holder.
        let waiting = tokio::time::timeout(Duration::from_millis(300), other.acquire(&key, "up-b")).await;
        assert!(waiting.is_err());
        claims.release(held).await;
    }
}
