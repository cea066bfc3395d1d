//! The resume file: what a re-run needs to continue an interrupted multipart
//! upload. It lives beside the input (`photo.jpg.mediaflow-upload.json`) or,
//! when that folder cannot be written, in the cache folder
//! (`$XDG_CACHE_HOME/mediaflow/`, else `~/.cache/mediaflow/`).
//!
//! The file is a hint, not the truth: the parts it lists are informational,
//! and a resumed run asks the server which parts the store really holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::api::Action;

/// Version of the file's format; other versions are refused as unreadable.
pub const STATE_VERSION: u32 = 1;
/// Suffix of the file beside the input.
pub const SUFFIX: &str = ".mediaflow-upload.json";

/// What went wrong with the resume file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `--resume` with nothing to resume.
    #[error("--resume: there is no interrupted upload of {} to resume (looked for {})", input.display(), list(looked))]
    Missing {
        /// The file to upload.
        input: PathBuf,
        /// Where the resume file was looked for.
        looked: Vec<PathBuf>,
    },
    /// The input is not the file whose upload was interrupted.
    #[error(
        "{} changed since its upload was interrupted (its size or modification time differ), so the stored parts \
         cannot be reused; delete {} to upload it from scratch",
        input.display(), path.display()
    )]
    Changed {
        /// The file to upload.
        input: PathBuf,
        /// The resume file.
        path: PathBuf,
    },
    /// The resume file belongs to an upload with other arguments.
    #[error(
        "{} belongs to an upload of this file to {server} with --profile {profile} --key-base {key_base}; \
         run with those arguments to resume it, or delete the file to start over",
        path.display()
    )]
    OtherUpload {
        /// The resume file.
        path: PathBuf,
        /// Its server.
        server: String,
        /// Its profile.
        profile: String,
        /// Its key base.
        key_base: String,
    },
    /// The resume file cannot be parsed.
    #[error("{} is not a resume file this version can read ({reason}); delete it to start over", path.display())]
    Corrupt {
        /// The resume file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading, writing or deleting the resume file failed.
    #[error("resume file {}: {source}", path.display())]
    Io {
        /// The resume file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Paths as `a and b`.
pub(crate) fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
}

/// Identifies one version of the input: a changed file must not be resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_secs: u64,
    /// Modification time, nanoseconds within the second.
    pub mtime_nanos: u32,
}

impl Fingerprint {
    /// The fingerprint of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        Self { size: meta.len(), mtime_secs: mtime.as_secs(), mtime_nanos: mtime.subsec_nanos() }
    }
}

/// Everything a re-run needs to continue an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// `--server`.
    pub server: String,
    /// `--profile`.
    pub profile: String,
    /// The key base.
    pub key_base: String,
    /// The input's size and mtime when the upload began.
    pub file: Fingerprint,
    /// The sniffed MIME type.
    pub mime: String,
    /// Where the object goes.
    pub object_key: String,
    /// The store's upload id.
    pub upload_id: String,
    /// The upload token (a credential for this one upload, valid for the profile's token_ttl).
    pub upload_token: String,
    /// Bytes per part.
    pub part_size: u64,
    /// Number of parts.
    pub total_parts: u32,
    /// The completion action (its URL carries the token).
    pub complete: Action,
    /// The abort action.
    pub abort: Action,
    /// Parts this client saw stored, with their ETags (informational).
    #[serde(default)]
    pub parts: BTreeMap<u32, String>,
}

impl ResumeState {
    /// Refuses a state made with other arguments or for another version of the file.
    pub fn check(
        &self,
        path: &Path,
        input: &Path,
        server: &str,
        profile: &str,
        key_base: &str,
        file: Fingerprint,
    ) -> Result<(), StateError> {
        if self.server != server || self.profile != profile || self.key_base != key_base {
            return Err(StateError::OtherUpload {
                path: path.to_owned(),
                server: self.server.clone(),
                profile: self.profile.clone(),
                key_base: self.key_base.clone(),
            });
        }
        if self.file != file {
            return Err(StateError::Changed { input: input.to_owned(), path: path.to_owned() });
        }
        Ok(())
    }
}

/// The default cache folder: `$XDG_CACHE_HOME/mediaflow`, else `~/.cache/mediaflow`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache"))).map(|c| c.join("mediaflow"))
}

/// A resume file on disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// Where the resume file of `input` may be: beside it, then in `cache`.
    pub fn candidates(input: &Path, cache: Option<&Path>) -> Vec<PathBuf> {
        let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut paths = vec![input.with_file_name(format!("{name}{SUFFIX}"))];
        if let Some(cache) = cache {
            // One file per input path: hash the absolute path, keep the name readable.
            let abs = std::fs::canonicalize(input).unwrap_or_else(|_| input.to_owned());
            let hash = hex::encode(&Sha256::digest(abs.as_os_str().as_encoded_bytes())[..8]);
            let short: String = name.chars().take(64).collect();
            paths.push(cache.join(format!("{short}-{hash}.json")));
        }
        paths
    }

    /// The existing resume file of `input`, if any.
    pub fn find(input: &Path, cache: Option<&Path>) -> Option<Self> {
        Self::candidates(input, cache).into_iter().find(|p| p.is_file()).map(|path| Self { path })
    }

    /// Writes a new resume file beside `input`, or in `cache` if that fails
    /// (a read-only folder, a name too long); the error names the last place tried.
    pub fn create(input: &Path, cache: Option<&Path>, state: &ResumeState) -> Result<Self, StateError> {
        let mut last = None;
        for path in Self::candidates(input, cache) {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && let Err(source) = std::fs::create_dir_all(dir)
            {
                last = Some(StateError::Io { path, source });
                continue;
            }
            let file = Self { path };
            match file.save(state) {
                Ok(()) => return Ok(file),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StateError::Io {
            path: input.to_owned(),
            source: std::io::Error::other("no place to keep a resume file"),
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state.
    pub fn load(&self) -> Result<ResumeState, StateError> {
        let bytes = std::fs::read(&self.path).map_err(|source| StateError::Io { path: self.path.clone(), source })?;
        let corrupt = |reason: String| StateError::Corrupt { path: self.path.clone(), reason };
        let state: ResumeState = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(corrupt(format!("format version {}, expected {STATE_VERSION}", state.version)));
        }
        Ok(state)
    }

    /// Replaces the state atomically (write a temp file, rename), so a kill
    /// mid-write leaves the old state rather than half a file.
    pub fn save(&self, state: &ResumeState) -> Result<(), StateError> {
        let io = |source| StateError::Io { path: self.path.clone(), source };
        let json = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// Deletes the file (after a completed or abandoned upload).
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StateError::Io { path: self.path.clone(), source: e })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ResumeState {
        let action = |m: &str| Action { method: m.into(), url: format!("http://s/{m}"), headers: BTreeMap::new() };
        ResumeState {
            version: STATE_VERSION,
            server: "http://s".into(),
            profile: "clip".into(),
            key_base: "k1".into(),
            file: Fingerprint { size: 10, mtime_secs: 5, mtime_nanos: 7 },
            mime: "video/mp4".into(),
            object_key: "originals/clips/k1".into(),
            upload_id: "u1".into(),
            upload_token: "t".into(),
            part_size: 5,
            total_parts: 2,
            complete: action("POST"),
            abort: action("DELETE"),
            parts: BTreeMap::from([(1, "\"e1\"".into())]),
        }
    }

    #[test]
    fn saved_state_reads_back_beside_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("clip.mp4");
        std::fs::write(&input, b"0123456789").unwrap();
        assert!(StateFile::find(&input, None).is_none());
        let file = StateFile::create(&input, None, &state()).unwrap();
        assert_eq!(file.path(), dir.path().join("clip.mp4.mediaflow-upload.json"));
        let found = StateFile::find(&input, None).unwrap();
        assert_eq!(found.load().unwrap(), state());
        found.remove().unwrap();
        found.remove().unwrap();
        assert!(StateFile::find(&input, None).is_none());
    }

    #[test]
    fn falls_back_to_the_cache_when_the_folder_refuses() {
        let dir = tempfile::tempdir().unwrap();
        // A name too long for a sibling with the suffix: refused even for root.
        let input = dir.path().join("a".repeat(250));
        std::fs::write(&input, b"x").unwrap();
        let cache = dir.path().join("cache");
        let file = StateFile::create(&input, Some(&cache), &state()).unwrap();
        assert!(file.path().starts_with(&cache), "{}", file.path().display());
        assert_eq!(StateFile::find(&input, Some(&cache)).unwrap().path(), file.path());
    }

    #[test]
    fn mismatches_are_refused_with_the_reason() {
        let s = state();
        let p = Path::new("x.json");
        let i = Path::new("x");
        assert!(s.check(p, i, "http://s", "clip", "k1", s.file).is_ok());
        let other = s.check(p, i, "http://s", "clip", "k2", s.file).unwrap_err();
        assert!(other.to_string().contains("--profile clip --key-base k1"), "{other}");
        let changed = Fingerprint { size: 11, ..s.file };
        assert!(matches!(s.check(p, i, "http://s", "clip", "k1", changed), Err(StateError::Changed { .. })));
    }

    #[test]
    fn garbage_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, b"{\"version\": 1").unwrap();
        let e = StateFile { path }.load().unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
    }
}
