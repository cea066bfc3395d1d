//! The real binary: start-up from the environment and `.env`, streaming
//! without memory growth, graceful shutdown on SIGTERM, `check-config`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

const BIN: &str = env!("CARGO_BIN_EXE_mediaflow");

/// A running `mediaflow` process and the address it listens on.
struct Server {
    child: Child,
    addr: String,
    /// Every stdout line so far (JSON log events).
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info");
    cmd
}

/// [`command`] on the S3 backend: `bucket` at `endpoint`, static keys.
fn s3_command(cwd: &Path, bucket: &str, endpoint: &str, keys: (&str, &str)) -> Command {
    let mut cmd = command(cwd);
    cmd.env("S3_BUCKET", bucket)
        .env("S3_ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", keys.0)
        .env("AWS_SECRET_ACCESS_KEY", keys.1);
    cmd
}

/// Starts the binary and waits for its "listening" log line.
fn start(mut cmd: Command) -> Server {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server did not start");
    Server { child, addr, lines }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "process did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drops a file into DATA_DIR by hand, where the avatar profile looks for `id`.
fn drop_original(data_dir: &Path, id: &str, size: u64) -> std::path::PathBuf {
    let path = sharded(data_dir, "avatars", id);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

/// Where a sharded profile folder keeps `id` (the parent is created).
fn sharded(data_dir: &Path, folder: &str, id: &str) -> std::path::PathBuf {
    use sha1::{Digest, Sha1};
    let shard = hex::encode(&Sha1::digest(id.as_bytes())[..1]);
    let dir = data_dir.join("originals").join(folder).join(shard);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(id)
}

#[tokio::test]
async fn streams_large_originals_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.env("DATA_DIR", &data);
    let mut server = start(cmd);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", server.addr);
    let health: serde_json::Value = client.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["message"], "OK");

    // 256 MiB served while the process stays small: the body is streamed.
    let size = 256 * 1024 * 1024;
    drop_original(&data, "big", size);
    let url = format!("{base}/originals/avatar/big");
    let before = peak_rss_kib(server.child.id());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], size.to_string().as_str());
    let mut body = resp.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, size);
    let growth_mib = (peak_rss_kib(server.child.id()).saturating_sub(before)) / 1024;
    assert!(growth_mib < 64, "peak RSS grew by {growth_mib} MiB for a 256 MiB download");

    // Start a download, then ask the process to stop in the middle of it.
    let mut body = client.get(&url).send().await.unwrap().bytes_stream();
    let mut received = 0u64;
    while received < 8 * 1024 * 1024 {
        received += body.next().await.unwrap().unwrap().len() as u64;
    }
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    while let Some(chunk) = body.next().await {
        received += chunk.expect("the in-flight response completes").len() as u64;
    }
    assert_eq!(received, size, "the whole body arrived despite SIGTERM");
    let status = wait_exit(&mut server.child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    // New connections are refused once it is gone.
    assert!(client.get(format!("{base}/health")).send().await.is_err());
}

#[tokio::test]
async fn dotenv_in_the_working_directory_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-dotenv");
    std::fs::write(dir.path().join(".env"), format!("DATA_DIR={}\nCACHE_MAX_AGE=123\n", data.display())).unwrap();
    let server = start(command(dir.path()));
    drop_original(&data, "x1", 10);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("http://{}/originals/avatar/x1", server.addr)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The avatar profile sets cache_duration; banner does not, so CACHE_MAX_AGE applies there.
    assert_eq!(resp.headers()["cache-control"], "public, max-age=86400");
    let banner = data.join("originals/banners");
    std::fs::create_dir_all(&banner).unwrap();
    std::fs::write(banner.join("b1"), b"\xff\xd8\xff\xe0").unwrap();
    let resp = client.get(format!("http://{}/originals/banner/b1", server.addr)).send().await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "public, max-age=123");
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
}

#[test]
fn check_config_validates_and_prints() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("check-config").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["avatar", "photo", "banner", "video", "default"] {
        assert!(stdout.contains(name), "{stdout}");
    }

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "profiles:\n  avatar:\n    allowed_mimes: [image/png]\n    size_max_bytes: 10\n    storage_path: a/{key_base}\n    sizes: [\"64\"]\n    quality: 500\n").unwrap();
    let out = command(dir.path()).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:7") && stderr.contains("avatar") && stderr.contains("quality"), "{stderr}");

    // The server refuses to start on a bad file, naming it.
    let out = command(dir.path()).env("STORAGE_CONFIG_PATH", &bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml:7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_answered_request_and_no_variant_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.env("DATA_DIR", &data).env("MAX_CONCURRENT_TRANSFORMS", "1").env("TRANSFORM_QUEUE", "64");
    let mut server = start(cmd);
    std::fs::write(sharded(&data, "photos", "load"), common_jpeg(1600, 1200)).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", server.addr);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..16u32 {
        let (client, tx) = (client.clone(), tx.clone());
        let url = format!("{base}/thumb/photo/load?width={}", 200 + i);
        tokio::spawn(async move {
            let result = match client.get(url).send().await {
                Ok(r) => Ok((r.status().as_u16(), r.bytes().await)),
                Err(e) => Err(e),
            };
            let _ = tx.send((200 + i, result));
        });
    }
    drop(tx);
    // SIGTERM once the first answer is in and the rest are queued or rendering.
    let mut results = vec![rx.recv().await.unwrap()];
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    let status = wait_exit(&mut server.child, Duration::from_secs(60));
    assert!(status.success(), "exit status {status:?}");
    let mut answered = 0;
    for (width, result) in results {
        // A request the server accepted is answered in full; one that arrived
        // after the listener closed is refused at connect time, never cut.
        let Ok((code, body)) = result else { continue };
        assert_eq!(code, 200, "width {width}");
        let body = body.expect("a complete body");
        let stored = std::fs::read(data.join(format!("thumbnails/photos/load_{width}.webp")))
            .unwrap_or_else(|_| panic!("variant {width} was answered but not stored before exit"));
        assert_eq!(stored, body, "width {width}");
        answered += 1;
    }
    assert!(answered >= 1);

    // One structured event per request, with the matched route and request id.
    let lines = server.lines.lock().unwrap().clone();
    let event = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "request" && v["status"] == 200)
        .expect("a request event");
    let span = &event["span"];
    assert_eq!(span["route"], "/thumb/{profile}/{image_id}", "{event}");
    assert_eq!(span["method"], "GET");
    assert!(span["request_id"].as_str().is_some_and(|id| id.len() == 24), "{event}");
    assert!(event["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{event}");
}

/// A real JPEG: a gradient.
fn common_jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_32_concurrent_cold_renders_of_24_mp() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.env("DATA_DIR", &data).env("CACHE_MEMORY_MB", "64");
    let server = start(cmd);
    // 6000×4000 = 24 MP, with grain so the JPEG is photo-sized (6.7 MB,
    // about what a camera writes at this size).
    let img = image::RgbImage::from_fn(6000, 4000, |x, y| {
        let n = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 13) & 31;
        let r = ((x / 24) as u8).wrapping_add(n as u8);
        let g = ((y / 16) as u8).wrapping_add((n / 2) as u8);
        let b = (((x + y) / 40) as u8).wrapping_sub(n as u8);
        image::Rgb([r, g, b])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    std::fs::write(sharded(&data, "photos", "big24"), jpeg.into_inner()).unwrap();
    let baseline = peak_rss_kib(server.child.id());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let requests = (0..32u32).map(|i| {
        let url = format!("http://{}/thumb/photo/big24?width={}", server.addr, 1000 + i * 10);
        let client = client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap().status().as_u16() })
    });
    for status in futures::future::join_all(requests).await {
        assert_eq!(status.unwrap(), 200);
    }
    let peak_mib = peak_rss_kib(server.child.id()) / 1024;
    eprintln!("peak RSS {peak_mib} MiB (baseline {} MiB)", baseline / 1024);
    assert!(peak_mib < 300, "peak RSS {peak_mib} MiB with 32 concurrent cold 24 MP renders");
}

use crate::common::bombs;

/// Resets the process' peak RSS to its current RSS (Linux 4.0+), so the next
/// reading is the peak of what happens in between.
fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// One sample of the server's /metrics.
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Status and JSON code (if any) of an answer, and how long it took.
async fn timed(req: reqwest::RequestBuilder) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").is_some();
    let body = resp.bytes().await.unwrap();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if status == 503 {
        assert!(retry_after, "503 without Retry-After");
    }
    (status, code, started.elapsed())
}

const BUDGET_MIB: u64 = 256;
/// What the process may hold beyond the render budget: its own baseline
/// (code, runtime, a debug build's symbols), the small caches, allocator slack.
const SLACK_MIB: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_bombs_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.env("DATA_DIR", &data)
        .env("MAX_RENDER_MEMORY_MB", BUDGET_MIB.to_string())
        .env("TRANSFORM_TIMEOUT", "60")
        .env("MAX_CONCURRENT_TRANSFORMS", "2")
        .env("CACHE_MEMORY_MB", "16");
    let server = start(cmd);
    let pid = server.child.id();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", server.addr);
    let originals = [
        ("wide", bombs::png_100m_by_1()),
        ("deep", bombs::png_rgba16_10k()),
        ("canvas", bombs::gif_canvas(10_000, 10_000)),
        ("normal", common_jpeg(1600, 1200)),
    ];
    for (id, bytes) in &originals {
        std::fs::write(sharded(&data, "photos", id), bytes).unwrap();
    }
    let gif = originals[2].1.clone();
    let limit_mib = BUDGET_MIB + SLACK_MIB;
    let mut report = Vec::new();
    type Case = (&'static str, Vec<reqwest::RequestBuilder>, u16);
    let cases: Vec<Case> = vec![
        // 97 KB, 100 000 000 x 1: a side over 65 535, refused from the header;
        // four at once, as in the issue (11.6 GB then).
        (
            "png 100000000x1, 4 at once",
            (0..4).map(|i| client.get(format!("{base}/thumb/photo/wide?width={}", 256 + i))).collect(),
            422,
        ),
        // 778 KB, 16-bit RGBA 10000x10000: rows streamed into the box shrink.
        (
            "png 16-bit 10000x10000, 2 at once",
            [256, 512].map(|w| client.get(format!("{base}/thumb/photo/deep?width={w}"))).into(),
            200,
        ),
        // 35 bytes, a 10000x10000 canvas.
        ("gif 10000x10000 canvas", vec![client.get(format!("{base}/thumb/photo/canvas?width=256"))], 200),
        // POST renders every size of `default` (128, 256, 512) in parallel,
        // each reserving its own share.
        (
            "gif 10000x10000 canvas by POST",
            vec![client.post(format!("{base}/thumb/default/canvaspost")).header("content-type", "image/gif").body(gif)],
            201,
        ),
        ("a normal 1600x1200 JPEG right after", vec![client.get(format!("{base}/thumb/photo/normal?width=300"))], 200),
    ];
    for (what, requests, want) in cases {
        reset_peak_rss(pid);
        let before = peak_rss_kib(pid) / 1024;
        let answers = futures::future::join_all(requests.into_iter().map(timed)).await;
        let peak = peak_rss_kib(pid) / 1024;
        let slowest = answers.iter().map(|a| a.2).max().unwrap();
        report.push(format!(
            "{what}: {:?}, slowest {slowest:.1?}, peak RSS {peak} MiB (from {before})",
            answers.iter().map(|a| a.0).collect::<Vec<_>>()
        ));
        for (status, code, _) in &answers {
            assert_eq!(*status, want, "{what}: {code}");
            if want == 422 {
                assert_eq!(code, "image_too_large");
            }
        }
        assert!(peak < limit_mib, "{what}: peak RSS {peak} MiB, over {limit_mib}");
        assert!(slowest < Duration::from_secs(60), "{what}: {slowest:?}");
    }
    assert_eq!(metric(&client, &base, "mediaflow_render_budget_in_use_bytes").await, Some(0.0));
    eprintln!("render bombs (MAX_RENDER_MEMORY_MB={BUDGET_MIB}):\n  {}", report.join("\n  "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_past_the_timeout_stops_and_the_next_one_is_not_queued_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.env("DATA_DIR", &data)
        .env("MAX_RENDER_MEMORY_MB", BUDGET_MIB.to_string())
        .env("TRANSFORM_TIMEOUT", "1")
        .env("MAX_CONCURRENT_TRANSFORMS", "1");
    let server = start(cmd);
    let pid = server.child.id();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}", server.addr);
    // Several seconds of decoding (16-bit RGBA, every row Paeth-filtered) for 800 KB.
    std::fs::write(sharded(&data, "photos", "slow"), bombs::png_slow()).unwrap();
    std::fs::write(sharded(&data, "photos", "after"), common_jpeg(1600, 1200)).unwrap();

    reset_peak_rss(pid);
    let (status, code, took) = timed(client.get(format!("{base}/thumb/photo/slow?width=256"))).await;
    assert_eq!((status, code.as_str()), (503, "overloaded"));
    assert!(took < Duration::from_secs(4), "answered after {took:?} with TRANSFORM_TIMEOUT=1");
    // The abandoned render stops within about a second and gives its
    // memory back only then.
    let started = Instant::now();
    while metric(&client, &base, "mediaflow_render_budget_in_use_bytes").await != Some(0.0) {
        assert!(started.elapsed() < Duration::from_secs(5), "the abandoned render is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = took + started.elapsed();
    // The single render thread is free: a normal thumbnail is made now.
    let (status, _, next) = timed(client.get(format!("{base}/thumb/photo/after?width=300"))).await;
    assert_eq!(status, 200);
    assert!(next < Duration::from_secs(20), "{next:?}");
    let peak = peak_rss_kib(pid) / 1024;
    assert!(peak < BUDGET_MIB + SLACK_MIB, "peak RSS {peak} MiB");
    assert_eq!(metric(&client, &base, r#"mediaflow_thumbnail_rejections_total{reason="timeout"}"#).await, Some(1.0));
    eprintln!(
        "timeout: 503 after {took:.1?}, work stopped after {stopped:.1?}, next render {next:.1?}, peak RSS {peak} MiB"
    );
}

#[tokio::test]
async fn worker_threads_is_checked_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).env("WORKER_THREADS", "0").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WORKER_THREADS must be at least 1"), "{stderr}");
    let out = command(dir.path()).env("WORKER_THREADS", "many").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses a non-number");
    assert!(String::from_utf8_lossy(&out.stderr).contains("many"));
    // One thread serves everything: a health check while it runs.
    let mut cmd = command(dir.path());
    cmd.env("WORKER_THREADS", "1");
    let server = start(cmd);
    let answer = reqwest::get(format!("http://{}/health", server.addr)).await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn an_open_service_stays_on_loopback_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    // No API_KEY and no BIND_ADDR: loopback.
    let mut cmd = command(dir.path());
    cmd.env_remove("BIND_ADDR");
    let server = start(cmd);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    drop(server);
    // No API_KEY on a network address: refused, exit 2, and it says why and what to do.
    let out = command(dir.path()).env("BIND_ADDR", "0.0.0.0").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("API_KEY") && stderr.contains("ALLOW_ANONYMOUS=true"), "{stderr}");
    // Opened on purpose.
    let mut cmd = command(dir.path());
    cmd.env("BIND_ADDR", "0.0.0.0").env("ALLOW_ANONYMOUS", "true");
    let server = start(cmd);
    assert!(server.addr.starts_with("0.0.0.0:"), "{}", server.addr);
    drop(server);
    // With an API key the default is every interface.
    let mut cmd = command(dir.path());
    cmd.env_remove("BIND_ADDR").env("API_KEY", "k");
    let server = start(cmd);
    assert!(server.addr.starts_with("0.0.0.0:"), "{}", server.addr);
}

#[test]
fn sign_url_prints_the_spec_test_vector() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("THUMB_SIGNING_KEY", "k-test-0123")
        .args(["sign-url", "/thumb/photo/abc?width=300&quality=70&format=webp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/thumb/photo/abc?width=300&quality=70&format=webp&sig=uuOvpp9D-NER2LBZV9V8Fi0CJBRNc7BDlyfD70GlJJo"
    );
    let out = command(dir.path())
        .env("THUMB_SIGNING_KEY", "k-test-0123")
        .args(["sign-url", "https://cdn.example.com/thumb/photo/abc?width=300&quality=70&format=webp"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("https://cdn.example.com/thumb/photo/abc?width=300"));
    let out = command(dir.path()).args(["sign-url", "/thumb/photo/abc?width=300"]).output().unwrap();
    assert!(!out.status.success(), "no key, no signature");
}

#[tokio::test]
async fn serve_takes_its_options_after_the_command_and_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = command(dir.path());
    cmd.env_remove("PORT").args(["serve", "--port", &port.to_string()]);
    let server = start(cmd);
    assert_eq!(server.addr, format!("127.0.0.1:{port}"));
    drop(server);
    let help = command(dir.path()).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--port") && help.contains("THUMB_SIGNING_KEY"), "{help}");
    // Every output format the pipeline makes is named, avif included.
    let help = command(dir.path()).args(["thumb", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("webp, jpeg, png or avif"), "{help}");
    // A user's mistake is a message, not a crash: no backtrace even when asked for one.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "profiles: [").unwrap();
    let out = command(dir.path()).env("RUST_BACKTRACE", "1").arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("mediaflow: ") && stderr.contains("bad.yaml"), "{stderr}");
    assert!(!stderr.contains("backtrace") && stderr.lines().count() <= 2, "{stderr}");
    let ok = command(dir.path()).arg("check-config").output().unwrap();
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("checked: the bundled example"));
}

#[tokio::test]
async fn start_up_says_which_profiles_and_what_is_wrong_with_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(command(dir.path()));
    let logged = server.lines.lock().unwrap().join("\n");
    assert!(logged.contains("profiles loaded") && logged.contains("avatar, banner, default, photo, video"), "{logged}");
    drop(server);
    // A store nobody listens on: the log names the bucket and the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = start(s3_command(dir.path(), "nowhere", &format!("http://127.0.0.1:{closed}"), ("x", "y")));
    let logged = server.lines.lock().unwrap().join("\n");
    assert!(logged.contains("S3 bucket 'nowhere' is not reachable at http://127.0.0.1:"), "{logged}");
}

#[tokio::test]
async fn health_exits_0_for_a_healthy_server_and_1_when_nothing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(command(dir.path()));
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    // The default URL: loopback on PORT, as a container's HEALTHCHECK runs it.
    let out = command(dir.path()).env("PORT", &port).arg("health").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // An explicit URL.
    let out = command(dir.path()).args(["health", &format!("http://{}/health", server.addr)]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Something answers, but not a healthy MediaFlow: 1.
    let out = command(dir.path()).args(["health", &format!("http://{}/nope", server.addr)]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"), "{}", String::from_utf8_lossy(&out.stderr));
    drop(server);
    // Nothing listening on the port any more: 1 at once, one line naming the URL.
    let url = format!("http://127.0.0.1:{port}/health");
    let started = Instant::now();
    let out = command(dir.path()).env("PORT", &port).arg("health").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&url) && stderr.trim().lines().count() == 1, "{stderr}");
}

/// A TLS front for the test SeaweedFS: a certificate for `localhost` that
/// no system trusts, each connection relayed to the plain-HTTP store.
struct TlsFront {
    port: u16,
    cert_pem: String,
    /// Completed TLS handshakes.
    handshakes: Arc<AtomicUsize>,
}

async fn tls_front(upstream: String) -> TlsFront {
    use tokio_rustls::rustls;
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, upstream, counted) = (acceptor.clone(), upstream.clone(), counted.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends here.
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let mut store = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut store).await;
            });
        }
    });
    TlsFront { port, cert_pem: cert.pem(), handshakes }
}

/// The S3 client speaks HTTPS (rustls on ring) and checks the store's
/// certificate against the system's roots, or `SSL_CERT_FILE`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_over_https_checks_the_store_certificate() {
    let Some(settings) = crate::common::s3_settings() else { return };
    let upstream = settings.endpoint.as_deref().unwrap().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let front = tls_front(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &front.cert_pem).unwrap();
    let endpoint = format!("https://localhost:{}", front.port);
    let keys = (settings.access_key_id.as_deref().unwrap_or("x"), settings.secret_access_key.as_deref().unwrap_or("y"));
    let s3_command = || {
        let mut cmd = s3_command(dir.path(), &settings.bucket, &endpoint, keys);
        cmd.env("S3_REGION", &settings.region);
        cmd
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // A certificate nobody vouches for: the store is not reached.
    let server = start(s3_command());
    let logged = server.lines.lock().unwrap().join("\n");
    assert!(logged.contains(&format!("is not reachable at {endpoint}")), "{logged}");
    assert!(logged.to_lowercase().contains("certificate"), "the log says why: {logged}");
    let ready = client.get(format!("http://{}/ready", server.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    drop(server);
    assert_eq!(front.handshakes.load(Ordering::SeqCst), 0);

    // Trusted through SSL_CERT_FILE: an upload goes in and comes back out.
    let mut cmd = s3_command();
    cmd.env("SSL_CERT_FILE", &ca);
    let server = start(cmd);
    let base = format!("http://{}", server.addr);
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let data = crate::common::images::jpeg(64, 48);
    let id = crate::common::unique("tls");
    let presign =
        serde_json::json!({"key_base": id, "mime": "image/jpeg", "size_bytes": data.len(), "profile": "avatar"});
    let answer: serde_json::Value =
        client.post(format!("{base}/v1/uploads/presign")).json(&presign).send().await.unwrap().json().await.unwrap();
    let single = &answer["upload"]["single"];
    let url = single["url"].as_str().unwrap();
    assert!(url.starts_with(&endpoint), "{url}");
    let uploader = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(front.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut put = uploader.put(url);
    for (name, value) in single["headers"].as_object().unwrap() {
        if !name.eq_ignore_ascii_case("content-length") {
            put = put.header(name, value.as_str().unwrap());
        }
    }
    assert_eq!(put.body(data.clone()).send().await.unwrap().status(), 200);
    let original = client.get(format!("{base}/originals/avatar/{id}")).send().await.unwrap();
    assert_eq!(original.status(), 200);
    assert_eq!(original.bytes().await.unwrap(), data);
    assert!(front.handshakes.load(Ordering::SeqCst) >= 2, "the service and the uploader both spoke TLS");
}

/// An HTTPS store that accepts the connection and never says a word (a
/// half-open TLS handshake): the start-up check and /ready give up within
/// the S3 call timeout instead of hanging, and say the store is not reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_store_that_never_handshakes_is_given_up_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        // Held open and silent until the test ends.
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("https://localhost:{port}");
    let cmd = s3_command(dir.path(), "silent", &endpoint, ("x", "y"));
    let bound = mediaflow::storage::s3::CALL_TIMEOUT + Duration::from_secs(5);
    let started = Instant::now();
    let server = start(cmd);
    assert!(started.elapsed() < bound, "start-up waited {:?} on a silent store", started.elapsed());
    let logged = server.lines.lock().unwrap().join("\n");
    assert!(logged.contains(&format!("is not reachable at {endpoint}")), "{logged}");
    assert!(accepted.load(Ordering::SeqCst) >= 1, "the store was dialled");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let asked = Instant::now();
    let ready = client.get(format!("http://{}/ready", server.addr)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(asked.elapsed() < bound, "/ready waited {:?} on a silent store", asked.elapsed());
}
