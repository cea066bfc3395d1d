//! The service's upload API as the client sees it: the wire types it reads
//! and one method per call, each turning a JSON error answer into a
//! [`ServerError`].
//!
//! The client keeps its own copies of the wire types rather than reusing the
//! server's: they are the published contract, and a client built from this
//! crate must keep talking to servers of other versions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::retry::{Retry, Transient};
use super::{ClientError, Step};
use crate::storage::signing::encode_component;

/// How long a call to the service itself (not an upload PUT) may take.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// A URL to call with exactly these headers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Action {
    /// HTTP method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// Headers to send, exactly.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One part's presigned URL.
#[derive(Debug, Clone, Deserialize)]
pub struct PartAction {
    /// 1-based part number.
    pub part_number: u32,
    /// The request to make.
    #[serde(flatten)]
    pub action: Action,
}

/// The multipart half of a presign answer.
#[derive(Debug, Clone, Deserialize)]
pub struct MultipartPlan {
    /// The store's upload id.
    pub upload_id: String,
    /// The signed token later calls present.
    pub upload_token: String,
    /// Bytes per part (the last part carries the remainder).
    pub part_size: u64,
    /// Number of parts.
    pub total_parts: u32,
    /// The first batch of part URLs.
    pub parts: Vec<PartAction>,
    /// How to complete.
    pub complete: Action,
    /// How to abort.
    pub abort: Action,
}

/// `upload` in a presign answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// One PUT.
    Single(Action),
    /// Parts.
    Multipart(MultipartPlan),
}

/// The presign answer.
#[derive(Debug, Clone, Deserialize)]
pub struct PresignAnswer {
    /// Where the object will be stored.
    pub object_key: String,
    /// How to upload it.
    pub upload: Plan,
}

/// A part the store already holds.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredPart {
    /// 1-based part number.
    pub part_number: u32,
    /// Its ETag, as completion wants it.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A `presign/parts` answer; its `batch_info` is not needed, since the client
/// tracks which parts it lacks itself.
#[derive(Deserialize)]
struct PartsAnswer {
    parts: Vec<PartAction>,
}

#[derive(Deserialize)]
struct StoredParts {
    parts: Vec<StoredPart>,
}

/// An error answer from the service, `{code, message, hint}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// Machine-readable code (`mime_not_allowed`, `invalid_upload_id`…).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it, when the server knows.
    #[serde(default)]
    pub hint: Option<String>,
}

impl ServerError {
    /// Reads an error answer; a body that is not the service's JSON (a proxy's
    /// HTML page, a store's XML) becomes a `http_<status>` code with its start.
    pub(crate) async fn from_response(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ServerError>(&text) {
            Ok(e) => ServerError { status, ..e },
            Err(_) => ServerError { status, code: format!("http_{status}"), message: summarize(&text), hint: None },
        }
    }
}

/// A short, one-line rendering of a non-JSON error body: S3's XML `<Code>` and
/// `<Message>` when present, else its first 200 characters.
pub(crate) fn summarize(body: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find('<')? + start;
        Some(body[start..end].trim().to_owned())
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => {
            let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
            if flat.is_empty() { "no details in the answer".into() } else { flat.chars().take(200).collect() }
        }
    }
}

/// The presign request body. `kind` is left out: the profile's own kind then
/// applies.
#[derive(Debug, Serialize)]
pub struct PresignBody<'a> {
    /// The client's id.
    pub key_base: &'a str,
    /// Sniffed MIME type.
    pub mime: &'a str,
    /// Exact size.
    pub size_bytes: u64,
    /// Profile name.
    pub profile: &'a str,
    /// `auto` (the profile's threshold decides), `force` or `off` (`--multipart`).
    pub multipart: &'a str,
}

/// The `DELETE /v1/assets/…` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedAsset {
    /// `deleted`.
    pub status: String,
    /// The profile.
    pub profile: String,
    /// The asset's id.
    pub key_base: String,
    /// Objects deleted: the original and every variant (thumbnails, posters, proxies).
    pub objects_deleted: u64,
}

/// What later calls need to name one multipart upload.
#[derive(Debug, Clone)]
pub struct UploadRef {
    /// The object key.
    pub object_key: String,
    /// The store's upload id.
    pub upload_id: String,
    /// The upload token.
    pub token: String,
}

/// What `GET /v1/profiles` says about one profile, as far as the client
/// needs it: its kind words the printed URLs (a thumbnail or a poster), its
/// proxy formats add the `/proxy` URLs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProfileSummary {
    /// `image` or `video`.
    pub kind: String,
    /// The web-playable proxy formats the profile makes of its videos.
    #[serde(default)]
    pub proxy_formats: Vec<String>,
    /// Thumbnail sizes anyone may ask for (`"256"`, `"256x256"`).
    #[serde(default)]
    pub sizes: Vec<String>,
}

#[derive(Deserialize)]
struct ProfilesAnswer {
    profiles: BTreeMap<String, ProfileSummary>,
}

/// `--server` as a base URL: `http://` is assumed when no scheme is given
/// (`127.0.0.1:8080`, `localhost:8080`), a trailing `/` is dropped, and
/// anything that cannot be a base URL (another scheme, no host, a query) is
/// refused with what to type instead.
pub fn server_base(raw: &str) -> Result<String, ClientError> {
    let given = raw.trim();
    let refuse = |reason: &str| ClientError::BadServer { given: raw.to_owned(), reason: reason.to_owned() };
    if given.is_empty() {
        return Err(refuse("it is empty"));
    }
    // `localhost:8080` parses as a URL of scheme `localhost`: only `://`
    // says that a scheme was given.
    let with_scheme = if given.contains("://") { given.to_owned() } else { format!("http://{given}") };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| refuse(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(&format!("the scheme '{}' is not http or https", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse("it names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("a base URL has no query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The service at `--server`, with the API key.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) http: reqwest::Client,
    server: String,
    api_key: Option<String>,
    retry: Retry,
}

impl Api {
    /// A client for `server`, a base URL as [`server_base`] makes it.
    pub fn new(http: reqwest::Client, server: &str, api_key: Option<String>, retry: Retry) -> Self {
        Self { http, server: server.trim_end_matches('/').to_owned(), api_key, retry }
    }

    /// A client for `--server` as the user typed it ([`server_base`]), with
    /// the client's own HTTP settings.
    pub fn connect(server: &str, api_key: Option<String>, retry: Retry) -> Result<Self, ClientError> {
        let server = server_base(server)?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("mediaflow-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unexpected { step: Step::Presign, detail: format!("HTTP client: {e}") })?;
        Ok(Self::new(http, &server, api_key.filter(|k| !k.is_empty()), retry))
    }

    /// The retry policy.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// What to do about a 401 from a call that sent (or should have sent)
    /// the API key, in the CLI's terms rather than the server's headers.
    fn key_hint(&self) -> String {
        match self.api_key {
            None => "this server requires its API key: pass --api-key KEY or set MEDIAFLOW_API_KEY".into(),
            Some(_) => "the server refused the API key: check --api-key or MEDIAFLOW_API_KEY (it must be the \
                        server's API_KEY)"
                .into(),
        }
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Sends a request (rebuilt for each attempt) and parses a JSON answer.
    /// Connection failures are always retried (nothing reached the server);
    /// 5xx and timeouts only for `idempotent` calls. A 401 to a call that
    /// authenticates with the API key (`keyed`) gets a hint naming the flag.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        step: Step,
        idempotent: bool,
        keyed: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        // The closure hands out copies of these references, so each attempt's
        // future borrows the caller's data rather than the closure.
        let build = &build;
        self.retry
            .run(move |_| async move {
                let resp = build().timeout(API_TIMEOUT).send().await.map_err(|e| {
                    let retry = e.is_connect() || (idempotent && e.is_timeout());
                    Transient::new(retry, ClientError::Network { step, source: e })
                })?;
                if resp.status().is_success() {
                    return resp.json::<T>().await.map_err(|e| {
                        Transient::fatal(ClientError::Unexpected { step, detail: format!("unreadable answer: {e}") })
                    });
                }
                let retry = idempotent && resp.status().is_server_error();
                let mut error = ServerError::from_response(resp).await;
                if keyed && error.status == 401 {
                    error.hint = Some(self.key_hint());
                }
                Err(Transient::new(retry, ClientError::Server { step, error }))
            })
            .await
    }

    /// `POST /v1/uploads/presign`.
    pub async fn presign(&self, body: &PresignBody<'_>) -> Result<PresignAnswer, ClientError> {
        let url = format!("{}/v1/uploads/presign", self.server);
        self.call(Step::Presign, false, true, || self.authed(self.http.post(&url)).json(body)).await
    }

    /// `POST /v1/uploads/presign/parts`: URLs for parts `start..start+count`.
    pub async fn part_urls(&self, up: &UploadRef, start: u32, count: u32) -> Result<Vec<PartAction>, ClientError> {
        let url = format!("{}/v1/uploads/presign/parts", self.server);
        let body = serde_json::json!({
            "object_key": up.object_key, "upload_id": up.upload_id, "upload_token": up.token,
            "start_part": start, "count": count,
        });
        let answer: PartsAnswer =
            self.call(Step::PartUrls, true, true, || self.authed(self.http.post(&url)).json(&body)).await?;
        Ok(answer.parts)
    }

    /// `GET /v1/uploads/{key}/parts/{id}`: the parts the store holds.
    pub async fn stored_parts(&self, up: &UploadRef) -> Result<Vec<StoredPart>, ClientError> {
        let url = format!(
            "{}/v1/uploads/{}/parts/{}",
            self.server,
            encode_component(&up.object_key),
            encode_component(&up.upload_id)
        );
        let answer: StoredParts =
            self.call(Step::ListParts, true, false, || self.http.get(&url).header("x-upload-token", &up.token)).await?;
        Ok(answer.parts)
    }

    /// POSTs the completion to the presign answer's `complete` action.
    pub async fn complete(&self, action: &Action, parts: &[(u32, String)]) -> Result<(), ClientError> {
        let parts: Vec<_> = parts.iter().map(|(n, etag)| serde_json::json!({"part_number": n, "etag": etag})).collect();
        let body = serde_json::json!({ "parts": parts });
        let _: serde_json::Value = self.call(Step::Complete, false, false, || self.action(action).json(&body)).await?;
        Ok(())
    }

    /// Aborts a multipart upload through its `abort` action.
    pub async fn abort(&self, action: &Action) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(Step::Abort, true, false, || self.action(action)).await?;
        Ok(())
    }

    /// Aborts with the API key instead of the (expired) token in the action's URL.
    pub async fn abort_with_key(&self, up: &UploadRef) -> Result<(), ClientError> {
        let url = format!(
            "{}/v1/uploads/{}/abort/{}",
            self.server,
            encode_component(&up.object_key),
            encode_component(&up.upload_id)
        );
        let _: serde_json::Value = self.call(Step::Abort, true, true, || self.authed(self.http.delete(&url))).await?;
        Ok(())
    }

    fn action(&self, action: &Action) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(action.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut req = self.http.request(method, &action.url);
        for (name, value) in &action.headers {
            req = req.header(name, value);
        }
        req
    }

    /// `DELETE /v1/assets/{profile}/{key_base}`: the original and every
    /// variant. Not retried after a timeout or 5xx: a first attempt that
    /// deleted would make the second answer 404.
    pub async fn delete_asset(
        &self,
        profile: &str,
        key_base: &str,
        shard: Option<&str>,
    ) -> Result<DeletedAsset, ClientError> {
        let mut url = format!("{}/v1/assets/{}/{}", self.server, encode_component(profile), encode_component(key_base));
        if let Some(shard) = shard {
            url = format!("{url}?shard={}", encode_component(shard));
        }
        self.call(Step::Delete, false, true, || self.authed(self.http.delete(&url))).await
    }

    /// What `GET /v1/profiles` says about `profile`. `None` when it cannot
    /// tell: a server older than the endpoint, a profile it does not list,
    /// or no answer. Best effort, one attempt: callers fall back to what
    /// they did before the endpoint existed.
    pub async fn profile_summary(&self, profile: &str) -> Option<ProfileSummary> {
        let url = format!("{}/v1/profiles", self.server);
        let resp = self.http.get(&url).timeout(Duration::from_secs(10)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<ProfilesAnswer>().await.ok()?.profiles.remove(profile)
    }

    /// The asset's description (`GET /v1/assets/{profile}/{image_id}`:
    /// dimensions, placeholder, a video's duration and proxies). Best
    /// effort, one attempt: `None` from a server older than the endpoint or
    /// when it cannot describe the asset now.
    pub async fn describe(&self, profile: &str, image_id: &str) -> Option<serde_json::Value> {
        let url = format!("{}/v1/assets/{}/{}", self.server, encode_component(profile), encode_component(image_id));
        // A video's first description runs ffprobe and takes a poster frame.
        let resp = self.http.get(&url).timeout(Duration::from_secs(60)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Asks for a proxy once, without reading it: the service queues the
    /// job that makes it if none is queued (an upload straight to S3 never
    /// passes through the service, so nothing else would). Best effort.
    pub async fn touch(&self, url: &str) {
        let _ = self.http.head(url).timeout(API_TIMEOUT).send().await;
    }

    /// Whether `profile` ignores the extension of an id (its `storage_path`
    /// has no `{ext}`), asked of the existing original `key_base`: such a
    /// profile serves it under any extension, one with `{ext}` only under
    /// its own. Only called once an original with `ext` is known to exist.
    pub async fn ignores_extension(&self, profile: &str, key_base: &str) -> bool {
        // An extension no media type has: a profile with `{ext}` cannot hold it.
        let probe = format!("{key_base}.mediaflowprobe");
        matches!(self.original_size(profile, &probe).await, Ok(Some(_)))
    }

    /// The size of the original stored for `image_id`, if there is one.
    /// Only a 200 counts: this is a courtesy check before sending anything
    /// (the service refuses to overwrite in any case), so an answer it cannot
    /// read (a proxy refusing HEAD, say) lets the upload go ahead.
    pub async fn original_size(&self, profile: &str, image_id: &str) -> Result<Option<u64>, ClientError> {
        let url = format!("{}/originals/{}/{}", self.server, encode_component(profile), encode_component(image_id));
        let resp = self.http.head(&url).timeout(API_TIMEOUT).send().await;
        let resp = resp.map_err(|e| ClientError::Network { step: Step::Lookup, source: e })?;
        // The header, not `content_length()`: that is the (empty) body's size for a HEAD.
        let length = resp.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        Ok((resp.status() == reqwest::StatusCode::OK).then(|| length.unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_are_summarised() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                   <Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(summarize(xml), "SignatureDoesNotMatch: The request signature we calculated does not match");
        assert_eq!(summarize("  <html>\n <body>Bad   gateway</body>"), "<html> <body>Bad gateway</body>");
        assert_eq!(summarize(""), "no details in the answer");
        assert_eq!(summarize(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn server_urls_get_a_scheme_or_a_reason() {
        let ok = |raw: &str| server_base(raw).unwrap();
        assert_eq!(ok("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("localhost:8080"), "http://localhost:8080");
        assert_eq!(ok(" media.example.com "), "http://media.example.com");
        assert_eq!(ok("http://localhost:8080/"), "http://localhost:8080");
        assert_eq!(ok("https://example.com/media/"), "https://example.com/media");
        assert_eq!(ok("[::1]:9000"), "http://[::1]:9000");
        for (bad, why) in [
            ("", "it is empty"),
            ("ftp://example.com", "the scheme 'ftp' is not http or https"),
            ("http://", "empty host"),
            ("http://localhost:8080/?x=1", "no query or fragment"),
            ("localhost:99999", "invalid port"),
        ] {
            let e = server_base(bad).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with(&format!("--server '{bad}' is not a usable base URL: ")), "{text}");
            assert!(text.contains(why), "{bad}: {text}");
            assert!(
                text.ends_with("give it as http://HOST:PORT or https://HOST, e.g. http://localhost:8080"),
                "{text}"
            );
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn presign_answers_parse() {
        let single = r#"{"object_key":"originals/a/k1","upload":{"single":{"method":"PUT","url":"http://s/u",
            "headers":{"Content-Type":"image/jpeg","Content-Length":"10","If-None-Match":"*"},"expires_at":"x"}}}"#;
        let a: PresignAnswer = serde_json::from_str(single).unwrap();
        assert!(matches!(a.upload, Plan::Single(ref s) if s.headers.len() == 3));
        let multi = r#"{"object_key":"k","upload":{"multipart":{"upload_id":"u","upload_token":"t","part_size":5,
            "total_parts":3,"parts":[{"part_number":1,"method":"PUT","url":"http://s/p1","headers":{"Content-Length":"5"},
            "expires_at":"x"}],"batch_info":{"parts_in_batch":1,"next_part_number":2,"has_more_parts":true},
            "complete":{"method":"POST","url":"http://s/c?token=t","headers":{},"expires_at":"x"},
            "abort":{"method":"DELETE","url":"http://s/a?token=t","headers":{},"expires_at":"x"}}}}"#;
        let a: PresignAnswer = serde_json::from_str(multi).unwrap();
        let Plan::Multipart(m) = a.upload else { panic!("multipart") };
        assert_eq!((m.total_parts, m.parts[0].part_number, m.parts[0].action.url.as_str()), (3, 1, "http://s/p1"));
    }
}
