//! `mediaflow download` and `mediaflow delete`: an asset's original or one
//! of its thumbnails fetched to a file (streamed, never held in memory), and
//! an asset deleted with every variant.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::api::{Api, DeletedAsset, ServerError};
use super::progress::{Progress, ProgressMode};
use super::retry::{Retry, Transient};
use super::{ClientError, Step};
use crate::storage::signing::encode_component;

/// What to download, and where to.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The service's base URL (`http://` assumed without a scheme).
    pub server: String,
    /// The profile.
    pub profile: String,
    /// The asset's id (its key base, optionally with the extension).
    pub id: String,
    /// A thumbnail (a poster, for a video) of this width instead of the original.
    pub width: Option<u32>,
    /// The asset's shard, for profiles that take a client's shard.
    pub shard: Option<String>,
    /// Where to write: a path, `-` for stdout, or `None` for the name the
    /// server gives (`Content-Disposition`) in the current folder.
    pub output: Option<PathBuf>,
    /// Overwrite an existing file.
    pub force: bool,
    /// How to show progress.
    pub progress: ProgressMode,
    /// Retry policy for the request (not for a body cut short).
    pub retry: Retry,
}

impl DownloadOptions {
    /// The original of `profile`/`id`, saved under the server's name for it.
    pub fn new(server: impl Into<String>, profile: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            profile: profile.into(),
            id: id.into(),
            width: None,
            shard: None,
            output: None,
            force: false,
            progress: ProgressMode::Auto,
            retry: Retry::default(),
        }
    }
}

/// A finished download: what `mediaflow download` prints (`--json`: this object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Downloaded {
    /// The URL fetched.
    pub url: String,
    /// The file written (`-`: stdout).
    pub file: PathBuf,
    /// Bytes written.
    pub size_bytes: u64,
    /// The answer's `Content-Type`.
    pub content_type: String,
}

/// Fetches the original (or, with `width`, a thumbnail) to a file. The body
/// is written to `FILE.mediaflow-download` beside it and renamed once
/// complete, so a failed or interrupted download leaves no truncated file.
pub async fn download(opts: &DownloadOptions) -> Result<Downloaded, ClientError> {
    let api = Api::connect(&opts.server, None, opts.retry)?;
    let url = media_url(&api, opts);
    let to_stdout = opts.output.as_deref() == Some(Path::new("-"));
    if let Some(path) = opts.output.as_deref().filter(|_| !to_stdout) {
        refuse_overwrite(path, opts.force)?;
    }
    let resp = fetch(&api, &url).await?;
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let expected = resp.content_length();
    let progress = Progress::new(opts.progress, expected.unwrap_or(0));
    let _ticker = progress.start();
    if to_stdout {
        let mut out = tokio::io::stdout();
        let written = copy_body(resp, &mut out, &progress, Path::new("-")).await?;
        out.flush().await.map_err(|source| ClientError::Write { path: "-".into(), source })?;
        check_length(written, expected)?;
        progress.finish();
        return Ok(Downloaded { url, file: "-".into(), size_bytes: written, content_type });
    }
    let path = match &opts.output {
        Some(path) => path.clone(),
        None => {
            let name = suggested_name(&resp, opts, &content_type);
            refuse_overwrite(Path::new(&name), opts.force)?;
            PathBuf::from(name)
        }
    };
    let partial = Partial::beside(&path);
    let mut file = partial.file().await?;
    let written = copy_body(resp, &mut file, &progress, &path).await?;
    file.flush().await.map_err(|source| ClientError::Write { path: partial.path.clone(), source })?;
    file.sync_all().await.map_err(|source| ClientError::Write { path: partial.path.clone(), source })?;
    drop(file);
    check_length(written, expected)?;
    partial.commit(&path, opts.force)?;
    progress.finish();
    Ok(Downloaded { url, file: path, size_bytes: written, content_type })
}

/// `{server}/originals/{profile}/{id}`, or `/thumb/…?width=W`, with the shard.
fn media_url(api: &Api, opts: &DownloadOptions) -> String {
    let (kind, mut query) = match opts.width {
        Some(w) => ("thumb", vec![format!("width={w}")]),
        None => ("originals", Vec::new()),
    };
    if let Some(shard) = &opts.shard {
        query.push(format!("shard={}", encode_component(shard)));
    }
    let mut url = format!("{}/{kind}/{}/{}", api.server(), encode_component(&opts.profile), encode_component(&opts.id));
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    url
}

fn refuse_overwrite(path: &Path, force: bool) -> Result<(), ClientError> {
    if !force && path.exists() { Err(ClientError::OutputExists(path.to_owned())) } else { Ok(()) }
}

/// The GET, retried on connection errors, timeouts before an answer, 5xx
/// and 429; any other error status is the server's answer.
async fn fetch(api: &Api, url: &str) -> Result<reqwest::Response, ClientError> {
    let step = Step::Download;
    api.retry()
        .run(|_| async {
            let resp = api.http.get(url).send().await.map_err(|e| {
                Transient::new(e.is_connect() || e.is_timeout(), ClientError::Network { step, source: e })
            })?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let retry = resp.status().is_server_error() || resp.status().as_u16() == 429;
            Err(Transient::new(retry, ClientError::Server { step, error: ServerError::from_response(resp).await }))
        })
        .await
}

/// Streams the body into `out`, counting it into `progress`.
async fn copy_body(
    resp: reqwest::Response,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    progress: &Progress,
    path: &Path,
) -> Result<u64, ClientError> {
    let mut body = resp.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| ClientError::Network { step: Step::Download, source })?;
        out.write_all(&chunk).await.map_err(|source| ClientError::Write { path: path.to_owned(), source })?;
        written += chunk.len() as u64;
        progress.add(chunk.len() as u64);
    }
    Ok(written)
}

fn check_length(written: u64, expected: Option<u64>) -> Result<(), ClientError> {
    match expected {
        Some(len) if len != written => Err(ClientError::Unexpected {
            step: Step::Download,
            detail: format!("the answer ended after {written} of {len} bytes"),
        }),
        _ => Ok(()),
    }
}

/// The name to save under: the server's `Content-Disposition` file name
/// (`photo.jpg`, `photo_256.webp`), reduced to a plain name; else the id
/// with the extension of the answer's type.
fn suggested_name(resp: &reqwest::Response, opts: &DownloadOptions, content_type: &str) -> String {
    let from_header = resp
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(disposition_filename)
        .filter(|n| is_plain_name(n));
    from_header.unwrap_or_else(|| {
        let stem = match opts.width {
            Some(w) => format!("{}_{w}", opts.id),
            None => opts.id.clone(),
        };
        let ext = crate::media_type::resolve(content_type).map(|t| t.extension());
        match ext {
            Some(ext) if !stem.ends_with(&format!(".{ext}")) => format!("{stem}.{ext}"),
            _ => stem,
        }
    })
}

/// `filename="x"` (or unquoted) of a `Content-Disposition` value.
fn disposition_filename(value: &str) -> Option<String> {
    value.split(';').map(str::trim).find_map(|part| {
        let (name, v) = part.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("filename")).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// A name with no folder in it: what a server sends must not write elsewhere.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control)
}

/// The file a download is written to before it is complete; removed on drop
/// unless committed (an error, or Ctrl-C dropping the download's future).
struct Partial {
    path: PathBuf,
    committed: bool,
}

impl Partial {
    fn beside(target: &Path) -> Self {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".mediaflow-download");
        Self { path: target.with_file_name(name), committed: false }
    }

    async fn file(&self) -> Result<tokio::fs::File, ClientError> {
        tokio::fs::File::create(&self.path)
            .await
            .map_err(|source| ClientError::Write { path: self.path.clone(), source })
    }

    /// Renames the finished file into place; without `force`, never over a
    /// file that appeared meanwhile.
    fn commit(mut self, target: &Path, force: bool) -> Result<(), ClientError> {
        let result = if force {
            std::fs::rename(&self.path, target)
        } else {
            // A hard link fails if the target exists: no race with another writer.
            std::fs::hard_link(&self.path, target).and_then(|()| std::fs::remove_file(&self.path))
        };
        match result {
            Ok(()) => {
                self.committed = true;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(ClientError::OutputExists(target.to_owned()))
            }
            Err(source) => Err(ClientError::Write { path: target.to_owned(), source }),
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What to delete.
#[derive(Debug, Clone)]
pub struct DeleteOptions {
    /// The service's base URL.
    pub server: String,
    /// The profile.
    pub profile: String,
    /// The asset's key base.
    pub key_base: String,
    /// The asset's shard, for profiles that take a client's shard.
    pub shard: Option<String>,
    /// The service's API key.
    pub api_key: Option<String>,
    /// Retry policy (connection failures only: see [`Api::delete_asset`]).
    pub retry: Retry,
}

/// Deletes an asset's original and every variant (thumbnails, posters,
/// proxies): `DELETE /v1/assets/{profile}/{key_base}` with the API key.
pub async fn delete(opts: &DeleteOptions) -> Result<DeletedAsset, ClientError> {
    let api = Api::connect(&opts.server, opts.api_key.clone(), opts.retry)?;
    api.delete_asset(&opts.profile, &opts.key_base, opts.shard.as_deref()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_content_disposition_and_stay_plain() {
        assert_eq!(disposition_filename("inline; filename=\"photo.jpg\"").as_deref(), Some("photo.jpg"));
        assert_eq!(disposition_filename("attachment; FILENAME=a_256.webp").as_deref(), Some("a_256.webp"));
        assert_eq!(disposition_filename("inline"), None);
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a\nb"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(is_plain_name("user43.jpg"));
    }

    #[test]
    fn media_urls_name_originals_and_thumbnails() {
        let api = Api::connect("127.0.0.1:8080", None, Retry::default()).unwrap();
        let mut opts = DownloadOptions::new("127.0.0.1:8080", "photo", "a b");
        assert_eq!(media_url(&api, &opts), "http://127.0.0.1:8080/originals/photo/a%20b");
        opts.width = Some(256);
        opts.shard = Some("3c".into());
        assert_eq!(media_url(&api, &opts), "http://127.0.0.1:8080/thumb/photo/a%20b?width=256&shard=3c");
    }
}
