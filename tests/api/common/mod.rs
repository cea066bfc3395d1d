//! Test helpers: backends (the filesystem in a temp dir, or the SeaweedFS that
//! `scripts/test.sh` starts), and an in-process server on a free port.

// Shared with the library's own tests (src/image/limits_tests.rs), which use
// generators this binary does not.
#[allow(dead_code)]
pub mod bombs;
pub mod faulty;
pub mod images;

use std::net::SocketAddr;
use std::sync::Arc;

use mediaflow::config::{Config, StorageConfig};
use mediaflow::state::AppState;
use mediaflow::storage::DynStore;
use mediaflow::storage::s3::{S3Settings, S3Store};

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fs,
    S3,
}

/// Runs an async test body against both backends, as two tests.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn fs() {
                    super::$name($crate::common::Backend::Fs).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3() {
                    if $crate::common::s3_settings().is_some() {
                        super::$name($crate::common::Backend::S3).await
                    }
                }
            }
        )*
    };
}

/// The SeaweedFS settings from the environment `scripts/test.sh` sets, or
/// `None` with a loud message. With MEDIAFLOW_REQUIRE_S3=1 (CI), missing
/// settings fail the test instead.
pub fn s3_settings() -> Option<S3Settings> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match var("MEDIAFLOW_TEST_S3_ENDPOINT") {
        Some(endpoint) => Some(S3Settings {
            bucket: var("MEDIAFLOW_TEST_S3_BUCKET").unwrap_or_else(|| "mediaflow-test".into()),
            region: var("MEDIAFLOW_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            endpoint: Some(endpoint),
            public_endpoint: None,
            access_key_id: var("MEDIAFLOW_TEST_S3_ACCESS_KEY"),
            secret_access_key: var("MEDIAFLOW_TEST_S3_SECRET_KEY"),
        }),
        None => {
            assert!(
                var("MEDIAFLOW_REQUIRE_S3").is_none(),
                "MEDIAFLOW_REQUIRE_S3 is set but MEDIAFLOW_TEST_S3_ENDPOINT is not"
            );
            eprintln!(
                "\n*** SKIPPED S3 TEST: MEDIAFLOW_TEST_S3_ENDPOINT is not set. \
                 Run scripts/test.sh, which starts SeaweedFS, to run it. ***\n"
            );
            None
        }
    }
}

/// A random id, for keys that must not collide between tests sharing a bucket.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 6]>()))
}

/// A store of the given backend, and the temp dir that must outlive it.
pub async fn store(backend: Backend) -> (DynStore, Option<tempfile::TempDir>) {
    match backend {
        Backend::Fs => {
            let dir = tempfile::tempdir().unwrap();
            let signer = mediaflow::storage::signing::UrlSigner::new(b"test-signing-secret-0123456789");
            let store = mediaflow::storage::fs::FsStore::open(dir.path(), signer).await.unwrap();
            (Arc::new(store), Some(dir))
        }
        Backend::S3 => {
            let settings = s3_settings().expect("S3 settings");
            let store = S3Store::connect(&settings).await;
            store.ensure_bucket().await.unwrap();
            (Arc::new(store), None)
        }
    }
}

/// A configuration for `backend` with test defaults.
pub fn config(backend: Backend) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_fs(dir.path().join("data"));
    if backend == Backend::S3 {
        config.storage = StorageConfig::S3(s3_settings().expect("S3 settings"));
    }
    (config, dir)
}

/// A server running in this process on a free loopback port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    _server: tokio::task::JoinHandle<bool>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// Starts the service for `backend`; `tweak` adjusts the configuration.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let (mut config, dir) = config(backend);
    tweak(&mut config);
    spawn_config(config, dir).await
}

/// The API key test servers started by [`spawn_secured`] require.
pub const API_KEY: &str = "test-api-key";

/// Starts the service with the API key set and the test profiles
/// (`tests/fixtures/profiles.yaml`); `tweak` adjusts the configuration.
pub async fn spawn_secured_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(backend, |c| {
        c.api_key = Some(mediaflow::config::Secret::new(API_KEY));
        c.profiles_source = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/profiles.yaml").into());
        tweak(c);
    })
    .await
}

/// [`spawn_secured_with`] with no further changes.
pub async fn spawn_secured(backend: Backend) -> TestApp {
    spawn_secured_with(backend, |_| {}).await
}

/// Asserts a JSON error answer and returns its status and code.
pub async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"), "errors are JSON (status {status})");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (status, body["code"].as_str().unwrap().to_owned())
}

/// Starts the service for `backend` with the test defaults.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the service with a full configuration.
pub async fn spawn_config(config: Config, dir: tempfile::TempDir) -> TestApp {
    spawn_wrapped(config, dir, |store| store).await
}

/// Starts the service through [`mediaflow::startup::Application`], as `main`
/// does, on a free loopback port, its store decorated by `wrap`.
async fn spawn_wrapped(
    mut config: Config,
    dir: tempfile::TempDir,
    wrap: impl FnOnce(mediaflow::storage::DynStore) -> mediaflow::storage::DynStore,
) -> TestApp {
    if let StorageConfig::S3(settings) = &config.storage {
        S3Store::connect(settings).await.ensure_bucket().await.unwrap();
    }
    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = mediaflow::startup::Application::build_wrapped(config, wrap).await.unwrap();
    let addr = app.local_addr().unwrap();
    let state = app.state.clone();
    TestApp {
        addr,
        base: format!("http://{addr}"),
        state,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        _server: tokio::spawn(app.run_until_stopped()),
        _dir: dir,
    }
}

/// Starts the service like [`spawn_secured`], its store wrapped by `wrap`
/// (a test double such as [`faulty::Faulty`]).
pub async fn spawn_secured_wrapping(
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
    wrap: impl FnOnce(mediaflow::storage::DynStore) -> mediaflow::storage::DynStore,
) -> TestApp {
    let (mut config, dir) = config(backend);
    tweak(&mut config);
    config.api_key = Some(mediaflow::config::Secret::new(API_KEY));
    config.profiles_source = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/profiles.yaml").into());
    spawn_wrapped(config, dir, wrap).await
}

/// The filesystem backend's DATA_DIR of a test server.
pub fn data_dir(app: &TestApp) -> std::path::PathBuf {
    match &app.state.config.storage {
        StorageConfig::Fs { data_dir } => data_dir.clone(),
        StorageConfig::S3(_) => panic!("not the filesystem backend"),
    }
}

/// Every file and folder under `DATA_DIR/.mediaflow/tmp` (should be none
/// once requests are over).
pub fn temp_entries(app: &TestApp) -> Vec<std::path::PathBuf> {
    let tmp = data_dir(app).join(".mediaflow/tmp");
    std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().path()).collect()
}

/// A SeaweedFS of a test's own (it may kill it), started by the project's script.
pub struct PrivateSeaweed {
    pub dir: tempfile::TempDir,
    pub settings: S3Settings,
}

impl PrivateSeaweed {
    fn script() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/seaweedfs.sh").to_owned()
    }

    /// Starts one, or `None` (loudly) when `weed` is not installed.
    pub fn start() -> Option<Self> {
        let have_weed =
            std::process::Command::new("sh").args(["-c", "command -v weed"]).output().is_ok_and(|o| o.status.success());
        if !have_weed {
            assert!(std::env::var("MEDIAFLOW_REQUIRE_S3").is_err(), "MEDIAFLOW_REQUIRE_S3 is set but weed is missing");
            eprintln!("\n*** SKIPPED: `weed` (SeaweedFS) is not installed; run scripts/test.sh ***\n");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut me = Self { dir, settings: S3Settings::default() };
        me.restart();
        let env = std::fs::read_to_string(me.dir.path().join("env")).unwrap();
        let var = |name: &str| {
            env.lines().find_map(|l| l.strip_prefix(&format!("export {name}="))).map(str::to_owned).unwrap()
        };
        me.settings = S3Settings {
            bucket: var("MEDIAFLOW_TEST_S3_BUCKET"),
            region: "us-east-1".into(),
            endpoint: Some(var("MEDIAFLOW_TEST_S3_ENDPOINT")),
            public_endpoint: None,
            access_key_id: Some(var("MEDIAFLOW_TEST_S3_ACCESS_KEY")),
            secret_access_key: Some(var("MEDIAFLOW_TEST_S3_SECRET_KEY")),
        };
        Some(me)
    }

    /// Starts it again on the same ports and data (after [`Self::kill`]).
    pub fn restart(&self) {
        let status = std::process::Command::new(Self::script()).arg("start").arg(self.dir.path()).status().unwrap();
        assert!(status.success(), "seaweedfs.sh start failed");
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a store that stops answering
    /// with its connections open, as a frozen VM or a full disk does.
    pub fn freeze(&self, frozen: bool) {
        let pid = std::fs::read_to_string(self.dir.path().join("pid")).unwrap();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        std::process::Command::new("kill").args([signal, pid.trim()]).status().unwrap();
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("pid")).unwrap();
        std::process::Command::new("kill").args(["-KILL", pid.trim()]).status().unwrap();
        let _ = std::process::Command::new(Self::script()).arg("stop").arg(self.dir.path()).status();
    }
}

impl Drop for PrivateSeaweed {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script()).arg("stop").arg(self.dir.path()).status();
    }
}

/// Presigns a single upload (`body` is the presign request) and PUTs `data`
/// with the signed headers; returns the presign answer.
pub async fn presign_and_put(app: &TestApp, body: &serde_json::Value, data: Vec<u8>) -> serde_json::Value {
    let r = app.client.post(app.url("/v1/uploads/presign")).bearer_auth(API_KEY).json(body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{body}");
    let answer: serde_json::Value = r.json().await.unwrap();
    let single = &answer["upload"]["single"];
    let mut put = app.client.put(single["url"].as_str().unwrap());
    for (name, value) in single["headers"].as_object().unwrap() {
        // reqwest sets Content-Length from the body.
        if name != "Content-Length" {
            put = put.header(name, value.as_str().unwrap());
        }
    }
    let r = put.body(data).send().await.unwrap();
    assert_eq!(r.status(), 200);
    answer
}

/// Starts the service like [`spawn_secured`] over a [`faulty::Faulty`] store
/// (set up by `arm` before the first request), and returns its handle.
pub async fn spawn_faulty(
    backend: Backend,
    arm: impl FnOnce(&faulty::Faulty),
) -> (TestApp, std::sync::Arc<faulty::Faulty>) {
    spawn_faulty_with(backend, |_| {}, arm).await
}

/// [`spawn_faulty`], with `tweak` adjusting the configuration.
pub async fn spawn_faulty_with(
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
    arm: impl FnOnce(&faulty::Faulty),
) -> (TestApp, std::sync::Arc<faulty::Faulty>) {
    let mut handle = None;
    let app = spawn_secured_wrapping(backend, tweak, |store| {
        let f = std::sync::Arc::new(faulty::Faulty::new(store));
        arm(&f);
        handle = Some(f.clone());
        f
    })
    .await;
    (app, handle.expect("the store was wrapped"))
}
