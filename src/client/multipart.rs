//! Multipart uploads: start one from a presign answer or resume one from its
//! resume file, send the missing parts N at a time (URLs fetched in batches
//! as they run out), complete; or abort the one a resume file describes
//! (`mediaflow upload FILE --abort`).
//!
//! Parts run as tasks, so they keep moving while the scheduler waits for a
//! batch of URLs. The resume file is written when the upload starts and every
//! second or so as parts land; a resumed run trusts the server's list of
//! stored parts, not the file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::api::{Action, Api, MultipartPlan, StoredPart, UploadRef};
use super::progress::Progress;
use super::retry::Retry;
use super::state::{ResumeState, STATE_VERSION, StateError, StateFile};
use super::transfer::{PutFailure, Region, put_region};
use super::{ClientError, Ctx, FaultHook, Sent, Step, simulate};

/// Part URLs asked for at once, at first: the service's default
/// `max_batch_size`. A profile with a smaller limit answers
/// `batch_size_exceeded` and the client halves its batches.
const FIRST_BATCH: u32 = 100;
/// How often the resume file is rewritten while parts land.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// What the client waits for once every part is sent: the server assembles
/// the parts and checks the object (seconds for a large file).
const COMPLETING: &str = "completing and verifying…";

/// Starts a new multipart upload from the presign answer.
pub(crate) async fn start(ctx: &Ctx, object_key: String, plan: MultipartPlan) -> Result<Sent, ClientError> {
    let state = ResumeState {
        version: STATE_VERSION,
        server: ctx.api.server().to_owned(),
        profile: ctx.profile.clone(),
        key_base: ctx.input.key_base.clone(),
        file: ctx.input.fingerprint,
        mime: ctx.input.mime.to_owned(),
        object_key,
        upload_id: plan.upload_id,
        upload_token: plan.upload_token,
        part_size: plan.part_size,
        total_parts: plan.total_parts,
        complete: plan.complete,
        abort: plan.abort,
        parts: BTreeMap::new(),
    };
    let file = StateFile::create(&ctx.input.path, ctx.cache.as_deref(), &state)?;
    let urls = plan.parts.into_iter().map(|p| (p.part_number, p.action)).collect();
    Job::new(ctx, state, file).run(BTreeMap::new(), urls, false).await
}

/// Continues the upload `file` describes, from the parts the store holds.
/// `Ok(None)`: that upload can no longer be continued (gone, or its token
/// refused); the file is removed and the caller starts a new upload.
pub(crate) async fn resume(ctx: &Ctx, file: StateFile) -> Result<Option<Sent>, ClientError> {
    let state = file.load()?;
    let input = &ctx.input;
    state.check(file.path(), &input.path, ctx.api.server(), &ctx.profile, &input.key_base, input.fingerprint)?;
    let up = upload_ref(&state);
    let listed = match ctx.api.stored_parts(&up).await {
        Ok(listed) => listed,
        Err(e) if e.code() == Some("invalid_upload_id") => {
            if let Some(sent) = completed_meanwhile(ctx, &state, &file).await? {
                return Ok(Some(sent));
            }
            ctx.progress.note("the interrupted upload is gone from the server (aborted or expired); starting over");
            file.remove()?;
            return Ok(None);
        }
        Err(e) if e.code() == Some("unauthorized") => {
            ctx.progress.note(
                "the server no longer accepts the interrupted upload's token (it lasts the profile's \
                 token_ttl_seconds, and a server restarted without a fixed SIGNING_SECRET forgets it); starting over",
            );
            // Best effort, so the store drops the old parts: it needs the API key.
            let _ = ctx.api.abort_with_key(&up).await;
            file.remove()?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let stored = usable_parts(listed, &state, input.size());
    ctx.progress.note(&format!(
        "resuming the upload of {} ({} of {} parts already stored)",
        input.path.display(),
        stored.len(),
        state.total_parts
    ));
    ctx.progress.skip(stored.values().map(|(_, size)| size).sum());
    let stored = stored.into_iter().map(|(n, (etag, _))| (n, etag)).collect();
    Job::new(ctx, state, file).run(stored, HashMap::new(), true).await.map(Some)
}

/// An upload the server no longer lists may have been completed: the run
/// that sent every part was interrupted while the server completed it (a
/// complete, once started, runs to its end). Asking again tells: the server
/// answers 200 for an object this upload stored (verifying it), 409 when
/// another upload's object holds the key, 404 when nothing was stored.
/// `Ok(None)`: nothing was stored, start over.
async fn completed_meanwhile(ctx: &Ctx, state: &ResumeState, file: &StateFile) -> Result<Option<Sent>, ClientError> {
    if state.parts.len() != state.total_parts as usize {
        return Ok(None);
    }
    ctx.progress.note("the interrupted upload is no longer open: asking the server whether it completed it");
    ctx.progress.phase(COMPLETING);
    let parts: Vec<(u32, String)> = state.parts.iter().map(|(n, e)| (*n, e.clone())).collect();
    match ctx.api.complete(&state.complete, &parts).await {
        Ok(()) => {
            file.remove()?;
            ctx.progress.skip(ctx.input.size());
            Ok(Some(Sent {
                object_key: state.object_key.clone(),
                multipart: true,
                parts: state.total_parts,
                parts_sent: 0,
                resumed: true,
            }))
        }
        Err(e) if matches!(e.code(), Some("invalid_upload_id" | "unauthorized")) => Ok(None),
        Err(e) if matches!(e.code(), Some("conflict" | "upload_verification_failed")) => {
            file.remove()?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The listed parts a completion can use, with their ETags and sizes: a part
/// of the wrong size (or number) cannot, so it is sent again.
fn usable_parts(listed: Vec<StoredPart>, state: &ResumeState, size: u64) -> BTreeMap<u32, (String, u64)> {
    listed
        .into_iter()
        .filter(|p| p.part_number >= 1 && p.part_number <= state.total_parts)
        .filter(|p| p.size == Region::part(p.part_number, state.part_size, size).len)
        .map(|p| (p.part_number, (p.etag, p.size)))
        .collect()
}

fn upload_ref(state: &ResumeState) -> UploadRef {
    UploadRef {
        object_key: state.object_key.clone(),
        upload_id: state.upload_id.clone(),
        token: state.upload_token.clone(),
    }
}

/// What every part's task needs.
struct PartCtx {
    api: Api,
    up: UploadRef,
    path: PathBuf,
    part_size: u64,
    size: u64,
    retry: Retry,
    fault: Option<FaultHook>,
    progress: Progress,
}

/// One multipart upload being sent.
struct Job<'a> {
    ctx: &'a Ctx,
    state: ResumeState,
    file: StateFile,
    parts: Arc<PartCtx>,
    batch: u32,
    saved: Instant,
}

impl<'a> Job<'a> {
    fn new(ctx: &'a Ctx, state: ResumeState, file: StateFile) -> Self {
        let parts = Arc::new(PartCtx {
            api: ctx.api.clone(),
            up: upload_ref(&state),
            path: ctx.input.path.clone(),
            part_size: state.part_size,
            size: ctx.input.size(),
            retry: ctx.retry,
            fault: ctx.fault.clone(),
            progress: ctx.progress.clone(),
        });
        Self { ctx, state, file, parts, batch: FIRST_BATCH, saved: Instant::now() }
    }

    /// Sends what `stored` lacks, then completes.
    async fn run(
        mut self,
        stored: BTreeMap<u32, String>,
        urls: HashMap<u32, Action>,
        resumed: bool,
    ) -> Result<Sent, ClientError> {
        let missing: VecDeque<u32> = (1..=self.state.total_parts).filter(|n| !stored.contains_key(n)).collect();
        let parts_sent = missing.len() as u32;
        self.state.parts = stored;
        let sent = self.send(missing, urls).await;
        // Not fatal: a resumed run asks the server what is stored anyway.
        let _ = self.file.save(&self.state);
        if let Err(e) = sent {
            return Err(self.incomplete(e));
        }
        self.complete().await?;
        Ok(Sent {
            object_key: self.state.object_key.clone(),
            multipart: true,
            parts: self.state.total_parts,
            parts_sent,
            resumed,
        })
    }

    /// Keeps `parallel` parts in flight until none is left. After a failure
    /// no new part starts, but those in flight finish, so that whatever lands
    /// counts for the resume.
    async fn send(&mut self, mut pending: VecDeque<u32>, mut urls: HashMap<u32, Action>) -> Result<(), ClientError> {
        let mut tasks = JoinSet::new();
        let mut failed: Option<ClientError> = None;
        loop {
            while failed.is_none() && tasks.len() < self.ctx.parallel {
                let Some(n) = pending.pop_front() else { break };
                match self.url_for(n, &pending, &mut urls).await {
                    Ok(action) => {
                        tasks.spawn(put_part(self.parts.clone(), n, action));
                    }
                    Err(e) => failed = Some(e),
                }
            }
            let Some(joined) = tasks.join_next().await else { break };
            let outcome = match joined {
                Ok(outcome) => outcome,
                // A panic in a part is a bug: let it surface as one.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(ClientError::Interrupted),
            };
            match outcome {
                Ok((n, etag)) => self.record(n, etag),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Part `n`'s URL: from the batch in hand, else from a new batch covering
    /// `n` and the missing parts right after it.
    async fn url_for(
        &mut self,
        n: u32,
        pending: &VecDeque<u32>,
        urls: &mut HashMap<u32, Action>,
    ) -> Result<Action, ClientError> {
        if let Some(action) = urls.remove(&n) {
            return Ok(action);
        }
        let run = 1 + pending.iter().zip(n + 1..).take_while(|(p, want)| **p == *want).count() as u32;
        loop {
            let count = run.min(self.batch);
            match self.ctx.api.part_urls(&self.parts.up, n, count).await {
                Ok(batch) => {
                    urls.extend(batch.into_iter().map(|p| (p.part_number, p.action)));
                    let detail = format!("no URL for part {n} in the batch");
                    return urls.remove(&n).ok_or(ClientError::Unexpected { step: Step::PartUrls, detail });
                }
                Err(e) if e.code() == Some("batch_size_exceeded") && count > 1 => self.batch = count / 2,
                Err(e) => return Err(e),
            }
        }
    }

    fn record(&mut self, n: u32, etag: String) {
        self.state.parts.insert(n, etag);
        if self.saved.elapsed() >= SAVE_EVERY {
            // Not fatal: the file's part list is informational.
            let _ = self.file.save(&self.state);
            self.saved = Instant::now();
        }
    }

    fn incomplete(&self, source: ClientError) -> ClientError {
        ClientError::Incomplete {
            stored: self.state.parts.len(),
            total: self.state.total_parts,
            state_file: self.file.path().to_owned(),
            source: Box::new(source),
        }
    }

    /// Completes with every part's ETag. The resume file goes once the upload
    /// id is spent (completed, or refused for good); otherwise it stays for a re-run.
    async fn complete(&self) -> Result<(), ClientError> {
        let parts: Vec<(u32, String)> = self.state.parts.iter().map(|(n, e)| (*n, e.clone())).collect();
        if parts.len() != self.state.total_parts as usize {
            let detail = format!("{} of {} parts stored", parts.len(), self.state.total_parts);
            return Err(self.incomplete(ClientError::Unexpected { step: Step::Complete, detail }));
        }
        self.ctx.progress.phase(COMPLETING);
        match self.ctx.api.complete(&self.state.complete, &parts).await {
            Ok(()) => Ok(self.file.remove()?),
            // The upload id is spent: verified and refused, gone, or beaten to the key.
            Err(e) if matches!(e.code(), Some("upload_verification_failed" | "invalid_upload_id" | "conflict")) => {
                self.file.remove()?;
                Err(e)
            }
            Err(e) => Err(self.incomplete(e)),
        }
    }
}

/// PUTs part `n`, retrying network failures and 5xx with backoff; after a 403
/// (an expired URL) it asks for a fresh URL once.
async fn put_part(ctx: Arc<PartCtx>, n: u32, mut action: Action) -> Result<(u32, String), ClientError> {
    let region = Region::part(n, ctx.part_size, ctx.size);
    let step = Step::Part(n);
    let mut refreshed = false;
    let mut attempt = 0;
    loop {
        let result = match ctx.fault.as_ref().and_then(|f| f(n, attempt)) {
            Some(fault) => Err(simulate(fault, step)),
            None => put_region(&ctx.api.http, &action, &ctx.path, region, &ctx.progress, step).await,
        };
        match result {
            Ok(etag) if etag.is_empty() => {
                let detail = "the store sent no ETag, which completion needs".to_owned();
                return Err(ClientError::Unexpected { step, detail });
            }
            Ok(etag) => return Ok((n, etag)),
            Err(PutFailure::Forbidden(_)) if !refreshed => {
                refreshed = true;
                attempt += 1;
                let fresh = ctx.api.part_urls(&ctx.up, n, 1).await?;
                let detail = format!("no URL for part {n} in the batch");
                let part = fresh.into_iter().find(|p| p.part_number == n);
                action = part.ok_or(ClientError::Unexpected { step: Step::PartUrls, detail })?.action;
            }
            Err(PutFailure::Retry(_)) if ctx.retry.may_retry(attempt) => {
                tokio::time::sleep(ctx.retry.delay(attempt)).await;
                attempt += 1;
            }
            Err(failure) => return Err(failure.into_error()),
        }
    }
}

/// What `mediaflow upload FILE --abort` needs: the file whose interrupted
/// upload to abort, and the arguments that, when given, must match the
/// resume file's.
#[derive(Clone)]
pub struct AbortOptions {
    /// The file whose upload was interrupted.
    pub file: PathBuf,
    /// `--server`, checked against the resume file's when given.
    pub server: Option<String>,
    /// `--profile`, checked likewise.
    pub profile: Option<String>,
    /// `--key-base`, checked likewise.
    pub key_base: Option<String>,
    /// The API key: needed only once the upload's token has expired.
    pub api_key: Option<String>,
    /// The cache folder for resume files; default [`super::state::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Retry policy.
    pub retry: Retry,
}

impl std::fmt::Debug for AbortOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AbortOptions")
            .field("file", &self.file)
            .field("server", &self.server)
            .field("profile", &self.profile)
            .field("key_base", &self.key_base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl AbortOptions {
    /// Aborts the interrupted upload of `file`, with the default retry policy.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            server: None,
            profile: None,
            key_base: None,
            api_key: None,
            cache_dir: None,
            retry: Retry::default(),
        }
    }
}

/// An aborted upload: what `--abort` prints (`--json`: this object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Aborted {
    /// `aborted`, or `gone` when the server no longer knew the upload
    /// (completed, aborted or expired before).
    pub status: &'static str,
    /// The server.
    pub server: String,
    /// The profile.
    pub profile: String,
    /// The key base.
    pub key_base: String,
    /// The object key the upload was for.
    pub object_key: String,
    /// The store's upload id.
    pub upload_id: String,
    /// The resume file, now removed.
    pub resume_file: PathBuf,
}

/// Aborts the interrupted multipart upload of `opts.file` (its stored parts
/// are dropped by the store) and removes its resume file. The upload's own
/// token is used; once it has expired, the API key. An upload the server no
/// longer knows only has its resume file removed.
pub async fn abort(opts: &AbortOptions) -> Result<Aborted, ClientError> {
    let cache = opts.cache_dir.clone().or_else(super::state::cache_dir);
    let Some(file) = StateFile::find(&opts.file, cache.as_deref()) else {
        let looked = StateFile::candidates(&opts.file, cache.as_deref());
        return Err(ClientError::NothingToAbort { input: opts.file.clone(), looked });
    };
    let state = file.load()?;
    check_abort_args(opts, &state, file.path())?;
    let api = Api::connect(&state.server, opts.api_key.clone(), opts.retry)?;
    let outcome = match api.abort(&state.abort).await {
        Err(e) if e.code() == Some("unauthorized") => api.abort_with_key(&upload_ref(&state)).await,
        other => other,
    };
    let status = match outcome {
        Ok(()) => "aborted",
        Err(e) if e.code() == Some("invalid_upload_id") => "gone",
        Err(e) => return Err(e),
    };
    file.remove()?;
    Ok(Aborted {
        status,
        server: state.server,
        profile: state.profile,
        key_base: state.key_base,
        object_key: state.object_key,
        upload_id: state.upload_id,
        resume_file: file.path().to_owned(),
    })
}

/// `--server`, `--profile` and `--key-base`, when given with `--abort`, must
/// be the interrupted upload's: a mismatch is more likely a mistake than a
/// wish to abort some other upload.
fn check_abort_args(opts: &AbortOptions, state: &ResumeState, path: &Path) -> Result<(), ClientError> {
    let server = opts.server.as_deref().map(super::api::server_base).transpose()?;
    let differs = |given: Option<&str>, recorded: &str| given.is_some_and(|g| g != recorded);
    if differs(server.as_deref(), &state.server)
        || differs(opts.profile.as_deref(), &state.profile)
        || differs(opts.key_base.as_deref(), &state.key_base)
    {
        return Err(StateError::OtherUpload {
            path: path.to_owned(),
            server: state.server.clone(),
            profile: state.profile.clone(),
            key_base: state.key_base.clone(),
        }
        .into());
    }
    Ok(())
}
