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
/// applies, and the service has no endpoint to look it up.
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
    /// Always `auto`: the profile's threshold decides.
    pub multipart: &'a str,
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

/// The service at `--server`, with the API key.
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) http: reqwest::Client,
    server: String,
    api_key: Option<String>,
    retry: Retry,
}

impl Api {
    /// A client for `server` (no trailing slash).
    pub fn new(http: reqwest::Client, server: &str, api_key: Option<String>, retry: Retry) -> Self {
        Self { http, server: server.trim_end_matches('/').to_owned(), api_key, retry }
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
    /// 5xx and timeouts only for `idempotent` calls.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        step: Step,
        idempotent: bool,
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
                Err(Transient::new(retry, ClientError::Server { step, error: ServerError::from_response(resp).await }))
            })
            .await
    }

    /// The thumbnail sizes of an image profile, as `GET /v1/profiles` lists
    /// them (`"256"`, `"256x256"`). `None` when the server cannot tell (an
    /// older server, an unlisted profile, a video profile): only used to
    /// print an example URL, so nothing fails over it.
    pub async fn image_sizes(&self, profile: &str) -> Option<Vec<String>> {
        #[derive(Deserialize)]
        struct Listed {
            kind: String,
            #[serde(default)]
            sizes: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Answer {
            profiles: BTreeMap<String, Listed>,
        }
        let url = format!("{}/v1/profiles", self.server);
        let resp = self.http.get(&url).timeout(API_TIMEOUT).send().await.ok()?;
        let listed = resp.error_for_status().ok()?.json::<Answer>().await.ok()?.profiles.remove(profile)?;
        (listed.kind == "image").then_some(listed.sizes)
    }

    /// `POST /v1/uploads/presign`.
    pub async fn presign(&self, body: &PresignBody<'_>) -> Result<PresignAnswer, ClientError> {
        let url = format!("{}/v1/uploads/presign", self.server);
        self.call(Step::Presign, false, || self.authed(self.http.post(&url)).json(body)).await
    }

    /// `POST /v1/uploads/presign/parts`: URLs for parts `start..start+count`.
    pub async fn part_urls(&self, up: &UploadRef, start: u32, count: u32) -> Result<Vec<PartAction>, ClientError> {
        let url = format!("{}/v1/uploads/presign/parts", self.server);
        let body = serde_json::json!({
            "object_key": up.object_key, "upload_id": up.upload_id, "upload_token": up.token,
            "start_part": start, "count": count,
        });
        let answer: PartsAnswer =
            self.call(Step::PartUrls, true, || self.authed(self.http.post(&url)).json(&body)).await?;
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
            self.call(Step::ListParts, true, || self.http.get(&url).header("x-upload-token", &up.token)).await?;
        Ok(answer.parts)
    }

    /// POSTs the completion to the presign answer's `complete` action.
    pub async fn complete(&self, action: &Action, parts: &[(u32, String)]) -> Result<(), ClientError> {
        let parts: Vec<_> = parts.iter().map(|(n, etag)| serde_json::json!({"part_number": n, "etag": etag})).collect();
        let body = serde_json::json!({ "parts": parts });
        let _: serde_json::Value = self.call(Step::Complete, false, || self.action(action).json(&body)).await?;
        Ok(())
    }

    /// Aborts a multipart upload through its `abort` action.
    pub async fn abort(&self, action: &Action) -> Result<(), ClientError> {
        let _: serde_json::Value = self.call(Step::Abort, true, || self.action(action)).await?;
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
        let _: serde_json::Value = self.call(Step::Abort, true, || self.authed(self.http.delete(&url))).await?;
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
