//! The real binary: start-up from the environment and `.env`, streaming
//! without memory growth, graceful shutdown on SIGTERM, `check-config`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;

const BIN: &str = env!("CARGO_BIN_EXE_mediaflow");

/// A running `mediaflow` process and the address it listens on.
struct Server {
    child: Child,
    addr: String,
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

/// Starts the binary and waits for its "listening" log line.
fn start(mut cmd: Command) -> Server {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
            {
                let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server did not start");
    Server { child, addr }
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
    use sha1::{Digest, Sha1};
    let shard = hex::encode(&Sha1::digest(id.as_bytes())[..1]);
    let dir = data_dir.join("originals/avatars").join(shard);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(id);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
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
