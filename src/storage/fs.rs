//! The filesystem backend: objects are files under `DATA_DIR`.
//!
//! Layout:
//! - `DATA_DIR/<key>`: the object's bytes, exactly as stored (so an operator can
//!   inspect or back them up with ordinary tools);
//! - `DATA_DIR/.mediaflow/meta/<xx>/<sha256(key)>.json`: its content type and
//!   MD5 ETag, tied to the file's size and mtime so a stale sidecar is ignored;
//! - `DATA_DIR/.mediaflow/tmp/`: bodies being written (renamed or linked into
//!   place, so a reader never sees a partial object). Each temp file is owned
//!   by a guard that removes it, synchronously, on every path that does not
//!   install it, a dropped (cancelled) future included; [`FsStore::sweep`]
//!   removes what a crash leaves;
//! - `DATA_DIR/.mediaflow/uploads/<upload_id>/`: multipart uploads in progress
//!   (`<upload_id>.completing/` while one is being assembled);
//! - `DATA_DIR/.mediaflow/objects/<rest>`: the service's own objects, keyed
//!   `.mediaflow/<rest>` ([`ObjectKey::internal`]).
//!
//! Keys are validated [`ObjectKey`]s (no `..`, no dot-segments, no backslash),
//! and upload ids are checked to be the hex ids this backend makes, so no input
//! reaches outside `DATA_DIR`.
//!
//! Cancellation: a `tokio::fs` call runs on the blocking pool and finishes
//! even when the future awaiting it is dropped, so a dropped write could
//! create, link or rename a name after its guard has cleaned up. Every step
//! that creates, links or renames a name (a few microseconds of metadata
//! work) is therefore a plain `std::fs` call, made within one poll; only
//! data reads and writes, on files a guard owns, are awaited. Installing an
//! object and writing its sidecar happen with no await in between.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::TryStreamExt;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::keys::INTERNAL_PREFIX;
use super::signing::{UploadGrant, UrlSigner, unix};
use super::{
    ByteRange, CompletedPart, GetObject, KeyPrefix, ListPage, ObjectKey, ObjectMeta, ObjectStore, PartInfo,
    PresignContext, PresignOp, PresignedRequest, PutBody, PutOptions, Result, StorageError,
};

/// S3's minimum size for every part but the last; mirrored so that a client
/// tested against the filesystem backend works against S3 too.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;

const INTERNAL_DIR: &str = ".mediaflow";

/// Objects stored as files under a root directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    internal: PathBuf,
    signer: UrlSigner,
}

/// What the sidecar remembers about an object.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    content_type: Option<String>,
    etag: String,
    size: u64,
    mtime_ns: u128,
    /// The multipart upload that completed the object (its id is its tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upload_id: Option<String>,
}

/// What a sidecar records besides the file's size and time.
#[derive(Debug)]
struct Recorded {
    content_type: Option<String>,
    etag: String,
    upload_id: Option<String>,
}

/// A temp file (or folder) that is removed when the guard drops, unless it
/// was installed. Removal is synchronous so that it also happens when the
/// future owning the guard is dropped mid-write (a cancelled request).
#[derive(Debug)]
struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    /// The path is no longer ours to remove (it was renamed into place).
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path).or_else(|_| std::fs::remove_dir_all(&self.path));
        }
    }
}

/// A multipart upload folder renamed to `<id>.completing` for its assembly:
/// unless the assembly succeeds, dropping the guard renames it back, so a
/// failed, refused or cancelled complete leaves the upload as it was (as S3
/// does) and a retry finds every part.
#[derive(Debug)]
struct Completing {
    claimed: PathBuf,
    dir: PathBuf,
    armed: bool,
}

impl Drop for Completing {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::rename(&self.claimed, &self.dir);
        }
    }
}

/// Suffix of an upload folder being assembled.
const COMPLETING: &str = ".completing";

/// What a multipart upload remembers.
#[derive(Debug, Serialize, Deserialize)]
struct UploadRecord {
    key: String,
    content_type: String,
}

fn io_err(e: std::io::Error) -> StorageError {
    if e.kind() == ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::Backend(format!("filesystem: {e}"))
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())
}

fn quoted(hex: &str) -> String {
    format!("\"{hex}\"")
}

/// Upload ids this backend makes are 32 lowercase hex digits; anything else is
/// unknown (and never becomes part of a path).
fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub async fn open(root: impl Into<PathBuf>, signer: UrlSigner) -> Result<Self> {
        let root: PathBuf = root.into();
        fs::create_dir_all(&root).await.map_err(io_err)?;
        let root = fs::canonicalize(&root).await.map_err(io_err)?;
        let internal = root.join(INTERNAL_DIR);
        for dir in ["meta", "tmp", "uploads", "objects"] {
            fs::create_dir_all(internal.join(dir)).await.map_err(io_err)?;
        }
        Ok(Self { root, internal, signer })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The signer for this backend's upload URLs.
    pub fn signer(&self) -> &UrlSigner {
        &self.signer
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        // The service's own keys live apart from meta/, tmp/ and uploads/.
        if let Some(rest) = key.as_str().strip_prefix(INTERNAL_PREFIX) {
            let mut p = self.internal.join("objects");
            p.extend(rest.split('/'));
            return p;
        }
        let mut p = self.root.clone();
        p.extend(key.segments());
        p
    }

    fn sidecar_path(&self, key: &ObjectKey) -> PathBuf {
        let h = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        self.internal.join("meta").join(&h[..2]).join(format!("{h}.json"))
    }

    fn upload_dir(&self, upload_id: &str) -> Result<PathBuf> {
        if !valid_upload_id(upload_id) {
            return Err(StorageError::NoSuchUpload);
        }
        Ok(self.internal.join("uploads").join(upload_id))
    }

    fn temp_path(&self) -> TempPath {
        TempPath::new(self.internal.join("tmp").join(hex::encode(rand::random::<[u8; 16]>())))
    }

    /// Streams `body` into a new temp file, checking its length, and returns
    /// the temp file and the MD5 of the bytes.
    async fn write_temp(&self, body: PutBody) -> Result<(TempPath, [u8; 16])> {
        let tmp = self.temp_path();
        let mut file = fs::File::from_std(std::fs::File::create(&tmp.path).map_err(io_err)?);
        let mut md5 = Md5::new();
        let mut written = 0u64;
        let mut stream = body.stream;
        while let Some(chunk) = stream.try_next().await.map_err(StorageError::Body)? {
            written += chunk.len() as u64;
            if written > body.length {
                return Err(StorageError::LengthMismatch { expected: body.length, actual: written });
            }
            md5.update(&chunk);
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        if written != body.length {
            return Err(StorageError::LengthMismatch { expected: body.length, actual: written });
        }
        // Durable before it becomes visible: an acknowledged upload survives a crash.
        file.sync_all().await.map_err(io_err)?;
        Ok((tmp, md5.finalize().into()))
    }

    /// Moves a finished temp file to `key` and records its sidecar, with no
    /// await in between (see the module doc). With `exclusive` it fails when
    /// the object exists: a hard link never replaces its target, unlike
    /// rename, so of several racing writers exactly one succeeds.
    async fn install(&self, tmp: TempPath, key: &ObjectKey, exclusive: bool, record: Recorded) -> Result<ObjectMeta> {
        let dest = self.path(key);
        let parent = dest.parent().expect("keys have a parent under root");
        // Creating folders is harmless should it finish after a drop.
        if let Err(e) = fs::create_dir_all(parent).await {
            return Err(if e.kind() == ErrorKind::NotADirectory || e.kind() == ErrorKind::AlreadyExists {
                StorageError::Backend(format!("a parent of '{key}' is an object"))
            } else {
                io_err(e)
            });
        }
        if exclusive {
            // The guard removes the temp name; the object keeps the inode.
            match std::fs::hard_link(&tmp.path, &dest) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(StorageError::AlreadyExists),
                Err(e) => return Err(io_err(e)),
            }
        } else {
            std::fs::rename(&tmp.path, &dest).map_err(io_err)?;
            tmp.disarm();
        }
        self.write_sidecar(key, record)
    }

    fn write_sidecar(&self, key: &ObjectKey, record: Recorded) -> Result<ObjectMeta> {
        let meta = std::fs::metadata(self.path(key)).map_err(io_err)?;
        let Recorded { content_type, etag, upload_id } = record;
        let sidecar = Sidecar { content_type, etag, size: meta.len(), mtime_ns: mtime_ns(&meta), upload_id };
        let path = self.sidecar_path(key);
        std::fs::create_dir_all(path.parent().expect("sidecars have a parent")).map_err(io_err)?;
        let tmp = self.temp_path();
        std::fs::write(&tmp.path, serde_json::to_vec(&sidecar).expect("serialisable")).map_err(io_err)?;
        std::fs::rename(&tmp.path, &path).map_err(io_err)?;
        tmp.disarm();
        Ok(self.meta_from(key, &meta, Some(sidecar)))
    }

    async fn read_sidecar(&self, key: &ObjectKey, meta: &std::fs::Metadata) -> Option<Sidecar> {
        let raw = fs::read(self.sidecar_path(key)).await.ok()?;
        let sidecar: Sidecar = serde_json::from_slice(&raw).ok()?;
        // A sidecar describes one version of the file; if the file changed
        // behind our back (copied in by hand), fall back to size and mtime.
        (sidecar.size == meta.len() && sidecar.mtime_ns == mtime_ns(meta)).then_some(sidecar)
    }

    fn meta_from(&self, key: &ObjectKey, meta: &std::fs::Metadata, sidecar: Option<Sidecar>) -> ObjectMeta {
        let (etag, content_type, upload_tag) = match sidecar {
            Some(s) => (s.etag, s.content_type, s.upload_id),
            // Like nginx: size and mtime identify a version of a file put there by hand.
            None => (quoted(&format!("{:x}-{:x}", meta.len(), mtime_ns(meta))), None, None),
        };
        ObjectMeta {
            key: key.clone(),
            size: meta.len(),
            etag,
            last_modified: meta.modified().unwrap_or(UNIX_EPOCH),
            content_type,
            upload_tag,
        }
    }

    async fn file_meta(&self, key: &ObjectKey) -> Result<std::fs::Metadata> {
        let meta = fs::metadata(self.path(key)).await.map_err(io_err)?;
        if !meta.is_file() {
            return Err(StorageError::NotFound);
        }
        Ok(meta)
    }

    async fn read_upload(&self, key: &ObjectKey, dir: &Path) -> Result<UploadRecord> {
        let raw = match fs::read(dir.join("upload.json")).await {
            Ok(raw) => raw,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::NoSuchUpload),
            Err(e) => return Err(io_err(e)),
        };
        let record: UploadRecord = serde_json::from_slice(&raw).map_err(StorageError::backend)?;
        if record.key != key.as_str() {
            return Err(StorageError::NoSuchUpload);
        }
        Ok(record)
    }

    async fn parts_in(dir: &Path) -> Result<Vec<(PartInfo, PathBuf)>> {
        let mut entries = match fs::read_dir(dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(StorageError::NoSuchUpload),
            Err(e) => return Err(io_err(e)),
        };
        let mut parts: Vec<(PartInfo, PathBuf, SystemTime)> = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_err)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Part files are named `<number>.<md5>.part`.
            let Some(stem) = name.strip_suffix(".part") else { continue };
            let Some((n, md5)) = stem.split_once('.') else { continue };
            let Ok(part_number) = n.parse::<u32>() else { continue };
            let Ok(meta) = entry.metadata().await else { continue };
            let modified = meta.modified().unwrap_or(UNIX_EPOCH);
            let info = PartInfo { part_number, etag: quoted(md5), size: meta.len() };
            match parts.iter_mut().find(|(p, _, _)| p.part_number == part_number) {
                // Two files for one number only while a re-upload races; the newer wins.
                Some(existing) if existing.2 < modified => *existing = (info, entry.path(), modified),
                Some(_) => {}
                None => parts.push((info, entry.path(), modified)),
            }
        }
        parts.sort_by_key(|(p, _, _)| p.part_number);
        Ok(parts.into_iter().map(|(p, path, _)| (p, path)).collect())
    }

    /// Clears what crashes and abandoned uploads leave: temp files not
    /// written to for `temp_age` (a body being written touches its file on
    /// every chunk), multipart uploads untouched for `upload_age` (S3 does this
    /// with an AbortIncompleteMultipartUpload lifecycle rule), and uploads a
    /// crashed complete left mid-assembly for `temp_age`, which are restored
    /// so that a retried complete finds their parts. Returns how many entries
    /// it removed or restored.
    pub async fn sweep(&self, temp_age: Duration, upload_age: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let older = |meta: &std::fs::Metadata, age: Duration| meta.modified().is_ok_and(|m| m + age < now);
        let mut swept = 0;
        let mut entries = fs::read_dir(self.internal.join("tmp")).await.map_err(io_err)?;
        while let Some(entry) = entries.next_entry().await.map_err(io_err)? {
            let Ok(meta) = entry.metadata().await else { continue };
            if older(&meta, temp_age) {
                let r = if meta.is_dir() {
                    fs::remove_dir_all(entry.path()).await
                } else {
                    fs::remove_file(entry.path()).await
                };
                swept += usize::from(r.is_ok());
            }
        }
        let mut entries = fs::read_dir(self.internal.join("uploads")).await.map_err(io_err)?;
        while let Some(entry) = entries.next_entry().await.map_err(io_err)? {
            let Ok(meta) = entry.metadata().await else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(COMPLETING) {
                // Its assembly started `temp_age` ago (the folder is touched
                // then) and no live complete runs that long.
                if older(&meta, temp_age) {
                    let restored = fs::rename(entry.path(), self.internal.join("uploads").join(id)).await;
                    swept += usize::from(restored.is_ok());
                }
            } else if older(&meta, upload_age) {
                swept += usize::from(fs::remove_dir_all(entry.path()).await.is_ok());
            }
        }
        Ok(swept)
    }
}

/// Collects every file key under `dir` (relative to `root`) that starts with `prefix`.
fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<(String, std::fs::Metadata)>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("walk stays under root")
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if ft.is_dir() {
            // Descend only where keys can still match the prefix.
            let as_dir = format!("{rel}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, out)?;
            }
        } else if ft.is_file() && rel.starts_with(prefix) {
            // A file deleted between the directory read and this stat (a
            // render removing the variant it stored after its original went)
            // is simply not listed, as S3 would not list it.
            match entry.metadata() {
                Ok(meta) => out.push((rel, meta)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsStore {
    fn name(&self) -> &'static str {
        "fs"
    }

    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> Result<GetObject> {
        let mut file = fs::File::open(self.path(key)).await.map_err(io_err)?;
        let meta = file.metadata().await.map_err(io_err)?;
        if !meta.is_file() {
            return Err(StorageError::NotFound);
        }
        let sidecar = self.read_sidecar(key, &meta).await;
        let object = self.meta_from(key, &meta, sidecar);
        let resolved = match range {
            Some(r) => Some(r.resolve(object.size).ok_or(StorageError::RangeNotSatisfiable { size: object.size })?),
            None => None,
        };
        let body = match resolved {
            Some((start, end)) => {
                file.seek(std::io::SeekFrom::Start(start)).await.map_err(io_err)?;
                Box::pin(ReaderStream::with_capacity(file.take(end - start + 1), 64 * 1024)) as super::ByteStream
            }
            None => Box::pin(ReaderStream::with_capacity(file, 64 * 1024)),
        };
        Ok(GetObject { meta: object, range: resolved, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta> {
        let meta = self.file_meta(key).await?;
        let sidecar = self.read_sidecar(key, &meta).await;
        Ok(self.meta_from(key, &meta, sidecar))
    }

    async fn put(&self, key: &ObjectKey, body: PutBody, opts: PutOptions) -> Result<ObjectMeta> {
        let (tmp, md5) = self.write_temp(body).await?;
        let record = Recorded { content_type: opts.content_type, etag: quoted(&hex::encode(md5)), upload_id: None };
        self.install(tmp, key, opts.if_none_match, record).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match fs::remove_file(self.path(key)).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::IsADirectory => return Ok(()),
            Err(e) => return Err(io_err(e)),
        }
        // A put racing this delete may have installed a new object (and its
        // sidecar) since the file was removed: only a sidecar that describes
        // no file goes.
        if let Ok(meta) = fs::metadata(self.path(key)).await
            && self.read_sidecar(key, &meta).await.is_some()
        {
            return Ok(());
        }
        let _ = fs::remove_file(self.sidecar_path(key)).await;
        Ok(())
    }

    async fn list(&self, prefix: &KeyPrefix, cursor: Option<String>, max: usize) -> Result<ListPage> {
        // The service's own folders live under .mediaflow/objects/ and list
        // back to their `.mediaflow/…` keys.
        let (root, prefix, internal) = match prefix.as_str().strip_prefix(INTERNAL_PREFIX) {
            Some(rest) => (self.internal.join("objects"), rest.to_owned(), true),
            None => (self.root.clone(), prefix.as_str().to_owned(), false),
        };
        // Start the walk at the deepest directory the prefix names.
        let start = match prefix.rfind('/') {
            Some(i) => root.join(&prefix[..i]),
            None => root.clone(),
        };
        let mut found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &start, &prefix, &mut out).map(|()| out)
        })
        .await
        .map_err(StorageError::backend)?
        .map_err(io_err)?;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let skip = cursor.as_deref();
        let mut objects = Vec::new();
        let mut next = None;
        for (name, meta) in found.into_iter().filter(|(name, _)| skip.is_none_or(|c| name.as_str() > c)) {
            if objects.len() == max.max(1) {
                next = objects.last().map(|o: &ObjectMeta| o.key.as_str().to_owned());
                break;
            }
            let parsed = if internal {
                ObjectKey::parse_listed(&format!("{INTERNAL_PREFIX}{name}"))
            } else {
                ObjectKey::parse(name)
            };
            let Ok(key) = parsed else { continue };
            let sidecar = self.read_sidecar(&key, &meta).await;
            objects.push(self.meta_from(&key, &meta, sidecar));
        }
        Ok(ListPage { objects, next })
    }

    async fn create_multipart(&self, key: &ObjectKey, content_type: &str) -> Result<String> {
        let upload_id = hex::encode(rand::random::<[u8; 16]>());
        let dir = self.upload_dir(&upload_id)?;
        fs::create_dir_all(&dir).await.map_err(io_err)?;
        let record = UploadRecord { key: key.as_str().to_owned(), content_type: content_type.to_owned() };
        fs::write(dir.join("upload.json"), serde_json::to_vec(&record).expect("serialisable")).await.map_err(io_err)?;
        Ok(upload_id)
    }

    async fn upload_part(&self, key: &ObjectKey, upload_id: &str, part_number: u32, body: PutBody) -> Result<String> {
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(StorageError::InvalidPart(format!("part number {part_number} outside 1..=10000")));
        }
        let dir = self.upload_dir(upload_id)?;
        self.read_upload(key, &dir).await?;
        let (tmp, md5) = self.write_temp(body).await?;
        let md5 = hex::encode(md5);
        let dest = dir.join(format!("{part_number}.{md5}.part"));
        if let Err(e) = std::fs::rename(&tmp.path, &dest) {
            // The upload was completed or aborted while the part was arriving.
            return Err(if e.kind() == ErrorKind::NotFound { StorageError::NoSuchUpload } else { io_err(e) });
        }
        tmp.disarm();
        // A re-uploaded part replaces the earlier one, as on S3.
        let own = format!("{part_number}.");
        if let Ok(mut entries) = fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let stale = entry.file_name().to_str().is_some_and(|n| n.starts_with(&own) && n.ends_with(".part"));
                if stale && entry.path() != dest {
                    let _ = fs::remove_file(entry.path()).await;
                }
            }
        }
        Ok(quoted(&md5))
    }

    async fn list_parts(&self, key: &ObjectKey, upload_id: &str) -> Result<Vec<PartInfo>> {
        let dir = self.upload_dir(upload_id)?;
        self.read_upload(key, &dir).await?;
        Ok(Self::parts_in(&dir).await?.into_iter().map(|(p, _)| p).collect())
    }

    async fn complete_multipart(&self, key: &ObjectKey, upload_id: &str, parts: &[CompletedPart]) -> Result<()> {
        let dir = self.upload_dir(upload_id)?;
        let record = self.read_upload(key, &dir).await?;
        // Claim the upload: of two concurrent completions only one renames it.
        let claimed = self.internal.join("uploads").join(format!("{upload_id}{COMPLETING}"));
        std::fs::rename(&dir, &claimed).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StorageError::NoSuchUpload,
            _ => io_err(e),
        })?;
        let mut guard = Completing { claimed, dir, armed: true };
        // A new entry dates the folder, so the sweeper knows when assembly began.
        std::fs::write(guard.claimed.join("completing"), b"").map_err(io_err)?;
        // Any failure (a wrong part list, a lost race, a cancelled future)
        // drops the guard, which puts the upload back as it was.
        self.assemble(key, &guard.claimed, parts, record.content_type, upload_id).await?;
        guard.armed = false;
        // Out of the uploads folder at once; should this future be dropped
        // before the parts are deleted, the temp guard deletes them.
        let spent = self.temp_path();
        // The object is in place: what follows is cleanup, never a failure.
        let _ = match std::fs::rename(&guard.claimed, &spent.path) {
            Ok(()) => fs::remove_dir_all(&spent.path).await,
            Err(_) => fs::remove_dir_all(&guard.claimed).await,
        };
        Ok(())
    }

    async fn abort_multipart(&self, key: &ObjectKey, upload_id: &str) -> Result<()> {
        let dir = self.upload_dir(upload_id)?;
        self.read_upload(key, &dir).await?;
        let doomed = self.temp_path();
        std::fs::rename(&dir, &doomed.path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StorageError::NoSuchUpload,
            _ => io_err(e),
        })?;
        // Should this future be dropped half-way, the guard finishes the job.
        fs::remove_dir_all(&doomed.path).await.map_err(io_err)
    }

    async fn presign(&self, key: &ObjectKey, op: &PresignOp, ctx: &PresignContext) -> Result<PresignedRequest> {
        let expires_at = SystemTime::now() + ctx.expires_in;
        let (grant, headers) = match op {
            PresignOp::Put { content_type, content_length, if_none_match } => {
                let mut headers = vec![
                    ("Content-Type".to_owned(), content_type.clone()),
                    ("Content-Length".to_owned(), content_length.to_string()),
                ];
                if *if_none_match {
                    headers.push(("If-None-Match".to_owned(), "*".to_owned()));
                }
                let grant = UploadGrant {
                    key: key.clone(),
                    part: None,
                    expires: unix(expires_at),
                    content_length: *content_length,
                    content_type: Some(content_type.clone()),
                    if_none_match: *if_none_match,
                };
                (grant, headers)
            }
            PresignOp::UploadPart { upload_id, part_number, content_length } => {
                let grant = UploadGrant {
                    key: key.clone(),
                    part: Some((upload_id.clone(), *part_number)),
                    expires: unix(expires_at),
                    content_length: *content_length,
                    content_type: None,
                    if_none_match: false,
                };
                (grant, vec![("Content-Length".to_owned(), content_length.to_string())])
            }
        };
        Ok(PresignedRequest {
            method: "PUT".to_owned(),
            url: self.signer.url(&ctx.base_url, &grant),
            headers,
            expires_at: UNIX_EPOCH + Duration::from_secs(grant.expires),
        })
    }

    async fn read_source(&self, key: &ObjectKey, _valid_for: Duration) -> Result<super::ReadSource> {
        self.file_meta(key).await?;
        Ok(super::ReadSource::File(self.path(key)))
    }

    async fn check(&self) -> Result<()> {
        // Writable, not just present: a read-only or full disk is not ready.
        let probe = self.temp_path();
        std::fs::write(&probe.path, b"ok").map_err(io_err)?;
        std::fs::remove_file(&probe.path).map_err(io_err)
    }
}

impl FsStore {
    /// Checks the part list and concatenates the parts into the object.
    async fn assemble(
        &self,
        key: &ObjectKey,
        dir: &Path,
        wanted: &[CompletedPart],
        content_type: String,
        upload_id: &str,
    ) -> Result<()> {
        if wanted.is_empty() {
            return Err(StorageError::InvalidPart("no parts given".into()));
        }
        let stored = Self::parts_in(dir).await?;
        let mut files = Vec::with_capacity(wanted.len());
        let mut md5s = Vec::with_capacity(wanted.len() * 16);
        let mut total = 0u64;
        for (i, want) in wanted.iter().enumerate() {
            if i > 0 && want.part_number <= wanted[i - 1].part_number {
                return Err(StorageError::InvalidPart("parts must be in ascending order".into()));
            }
            let normalized = quoted(want.etag.trim_matches('"'));
            let (info, path) =
                stored.iter().find(|(p, _)| p.part_number == want.part_number && p.etag == normalized).ok_or_else(
                    || StorageError::InvalidPart(format!("part {} not found or ETag differs", want.part_number)),
                )?;
            if i + 1 < wanted.len() && info.size < MIN_PART_SIZE {
                return Err(StorageError::InvalidPart(format!(
                    "part {} is smaller than 5 MiB and is not the last part",
                    want.part_number
                )));
            }
            md5s.extend(hex::decode(info.etag.trim_matches('"')).map_err(StorageError::backend)?);
            total += info.size;
            files.push(path.clone());
        }
        let tmp = self.temp_path();
        let mut out = fs::File::from_std(std::fs::File::create(&tmp.path).map_err(io_err)?);
        for path in &files {
            let mut part = fs::File::open(path).await.map_err(io_err)?;
            tokio::io::copy(&mut part, &mut out).await.map_err(io_err)?;
        }
        out.sync_all().await.map_err(io_err)?;
        let written = out.metadata().await.map_err(io_err)?.len();
        if written != total {
            return Err(StorageError::Backend("multipart assembly size mismatch".into()));
        }
        // S3's multipart ETag: MD5 of the concatenated part MD5s, then "-N".
        let etag = quoted(&format!("{}-{}", hex::encode(Md5::digest(&md5s)), wanted.len()));
        let record = Recorded { content_type: Some(content_type), etag, upload_id: Some(upload_id.to_owned()) };
        // Never replaces an object: of racing completes (or a complete and a
        // single PUT) exactly one links its file into place.
        self.install(tmp, key, true, record).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_checked_before_use_in_paths() {
        assert!(valid_upload_id("0123456789abcdef0123456789abcdef"));
        for bad in ["", "../../etc", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcde/"] {
            assert!(!valid_upload_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn paths_stay_under_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), UrlSigner::new(b"k")).await.unwrap();
        let key = ObjectKey::parse("a/b/c.jpg").unwrap();
        assert!(store.path(&key).starts_with(store.root()));
        assert!(store.sidecar_path(&key).starts_with(store.root().join(INTERNAL_DIR)));
        assert!(matches!(store.upload_dir("../x"), Err(StorageError::NoSuchUpload)));
    }
}
