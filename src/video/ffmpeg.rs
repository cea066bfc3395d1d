//! The ffmpeg and ffprobe command-line tools as sandboxed child processes.
//!
//! Why a child and not a library binding: a decoder that crashes on a hostile
//! file kills a child, not the service; a child can be time-limited (killed
//! at a deadline), memory-limited (`RLIMIT_AS`) and given nothing but one
//! input. Every run:
//! - reads exactly one input: a local file (filesystem backend) or a
//!   short-lived presigned GET URL (S3), never the service's credentials;
//! - is told the container up front (`-f mov` / `-f matroska`, from the
//!   sniffed type) and may open only those demuxers (`-format_whitelist`) and
//!   the one protocol the input needs (`-protocol_whitelist`): an HLS playlist
//!   uploaded as `.mp4` cannot make ffmpeg fetch another URL or read another
//!   file;
//! - has `-nostdin`, a network read timeout (`-rw_timeout`) and a hard kill at
//!   its deadline, one thread for posters, and its output size bounded;
//! - never logs the input URL (it carries a signature).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Demuxers an input may use: MP4/QuickTime family and Matroska/WebM.
const FORMAT_WHITELIST: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm";
/// Network read timeout for URL inputs, microseconds (a stalled store must not
/// hang a child forever).
const RW_TIMEOUT_US: &str = "15000000";
/// Most bytes of stderr kept for diagnostics.
const STDERR_LIMIT: usize = 16 * 1024;

/// Why a video operation failed. Callers match variants, never text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    /// ffmpeg is not installed (or not executable).
    #[error("ffmpeg is not available on this server")]
    NotInstalled,
    /// The input is not a video ffmpeg can read (no video stream, corrupt,
    /// truncated, another container).
    #[error("not a readable video: {0}")]
    NotAVideo(String),
    /// The frame is over the pixel limit.
    #[error("video frames of {width}x{height} exceed {max_pixels} pixels")]
    TooLarge {
        /// Display width.
        width: u32,
        /// Display height.
        height: u32,
        /// The limit.
        max_pixels: u64,
    },
    /// The child ran past its deadline and was killed.
    #[error("ffmpeg took longer than {0:?}")]
    TimedOut(Duration),
    /// The store failed while ffmpeg read the video, or before.
    #[error("the store failed: {0}")]
    Store(String),
    /// The profile makes no proxies (no `proxy_folder`/`formats`, or not this format).
    #[error("profile '{0}' makes no proxies in this format")]
    NoProxies(String),
    /// No original is stored.
    #[error("original not found")]
    NoOriginal,
    /// The child failed in another way (killed by a signal, out of memory,
    /// output over its limit, could not start).
    #[error("ffmpeg failed: {0}")]
    Failed(String),
}

/// What ffmpeg reads.
#[derive(Clone)]
pub enum Input {
    /// A file on this machine (the filesystem backend's object).
    File(PathBuf),
    /// A presigned GET URL (S3); never logged.
    Url(String),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Url(_) => f.write_str("Url(<presigned>)"),
        }
    }
}

/// The container family of a source, from its sniffed MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// MP4 / QuickTime (ISO-BMFF).
    Mov,
    /// Matroska / WebM.
    Matroska,
}

impl Container {
    /// The container of a sniffed video type, if it is one ffmpeg may read.
    pub fn of_mime(mime: &str) -> Option<Self> {
        match mime {
            "video/mp4" | "video/quicktime" => Some(Self::Mov),
            "video/webm" | "video/x-matroska" => Some(Self::Matroska),
            _ => None,
        }
    }

    fn demuxer(self) -> &'static str {
        match self {
            Self::Mov => "mov",
            Self::Matroska => "matroska",
        }
    }
}

/// Resource limits of one child.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock deadline; the child is killed then.
    pub timeout: Duration,
    /// Address-space limit (`RLIMIT_AS`), bytes.
    pub memory: u64,
    /// Most bytes the child may write to stdout.
    pub max_output: usize,
}

/// Where ffmpeg and ffprobe are.
#[derive(Debug, Clone)]
pub struct Ffmpeg {
    ffmpeg: PathBuf,
    ffprobe: PathBuf,
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| executable(p))
}

impl Ffmpeg {
    /// Finds ffmpeg (`configured`, else `ffmpeg` on PATH) and ffprobe beside
    /// it (else on PATH). `None` when either is missing or not executable.
    pub fn locate(configured: Option<&Path>) -> Option<Self> {
        let ffmpeg = match configured {
            Some(p) if p.components().count() > 1 => executable(p).then(|| p.to_path_buf())?,
            Some(name) => on_path(name.to_str()?)?,
            None => on_path("ffmpeg")?,
        };
        let beside = ffmpeg.with_file_name("ffprobe");
        let ffprobe = if executable(&beside) { beside } else { on_path("ffprobe")? };
        Some(Self { ffmpeg, ffprobe })
    }

    /// The ffmpeg binary.
    pub fn ffmpeg_path(&self) -> &Path {
        &self.ffmpeg
    }

    /// Options every run puts before its input: the container, the demuxers
    /// and protocols it may use, network timeouts.
    fn input_args(input: &Input, container: Container) -> Vec<String> {
        let mut args: Vec<String> = vec!["-f".into(), container.demuxer().into()];
        args.extend(["-format_whitelist".into(), FORMAT_WHITELIST.into()]);
        match input {
            Input::File(path) => {
                args.extend(["-protocol_whitelist".into(), "file".into()]);
                args.extend(["-i".into(), path.to_string_lossy().into_owned()]);
            }
            Input::Url(url) => {
                args.extend(["-protocol_whitelist".into(), "http,https,tcp,tls".into()]);
                args.extend(["-rw_timeout".into(), RW_TIMEOUT_US.into()]);
                args.extend(["-i".into(), url.clone()]);
            }
        }
        args
    }

    /// Runs a child to its end within `limits`; returns its stdout.
    async fn run(program: &Path, args: &[String], limits: Limits, redact: Option<&str>) -> Result<Vec<u8>, VideoError> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let memory = limits.memory;
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; setrlimit is one, and nothing is allocated here.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: memory, rlim_max: memory };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child =
            cmd.spawn().map_err(|e| VideoError::Failed(format!("could not start {}: {e}", program.display())))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let max = limits.max_output;
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                let mut buf = [0u8; 64 * 1024];
                loop {
                    let n = stdout.read(&mut buf).await.map_err(|e| VideoError::Failed(e.to_string()))?;
                    if n == 0 {
                        return Ok(());
                    }
                    if out.len() + n > max {
                        return Err(VideoError::Failed(format!("output over {max} bytes")));
                    }
                    out.extend_from_slice(&buf[..n]);
                }
            };
            let read_err = async {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if err.len() < STDERR_LIMIT {
                        err.extend_from_slice(&buf[..n.min(STDERR_LIMIT - err.len())]);
                    }
                }
            };
            let (read, ()) = tokio::join!(read_out, read_err);
            read?;
            let status = child.wait().await.map_err(|e| VideoError::Failed(e.to_string()))?;
            Ok::<_, VideoError>((status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(limits.timeout, work).await {
            Ok(result) => result?,
            // Dropping the child kills it (kill_on_drop); reap it too.
            Err(_) => return Err(VideoError::TimedOut(limits.timeout)),
        };
        let mut stderr = String::from_utf8_lossy(&err).into_owned();
        if let Some(secret) = redact {
            stderr = stderr.replace(secret, "<input>");
        }
        let stderr = stderr.trim().lines().last().unwrap_or("").to_owned();
        match status.code() {
            Some(0) => Ok(out),
            // ffmpeg and ffprobe exit 1 for inputs they cannot read.
            Some(1) => Err(VideoError::NotAVideo(stderr)),
            Some(code) => Err(VideoError::Failed(format!("exit status {code}: {stderr}"))),
            None => Err(VideoError::Failed(format!("killed by a signal (memory limit?): {stderr}"))),
        }
    }

    fn redact(input: &Input) -> Option<&str> {
        match input {
            Input::Url(u) => Some(u.as_str()),
            Input::File(_) => None,
        }
    }

    /// The facts of a video (ffprobe): duration, display size, codecs, rate.
    pub async fn probe(&self, input: &Input, container: Container, limits: Limits) -> Result<Facts, VideoError> {
        let mut args: Vec<String> =
            ["-v", "error", "-print_format", "json", "-show_format", "-show_streams"].map(String::from).to_vec();
        args.extend(Self::input_args(input, container));
        let json = Self::run(&self.ffprobe, &args, limits, Self::redact(input)).await?;
        Facts::from_ffprobe(&json)
    }

    /// One frame at `at` seconds, display rotation applied, as an 8-bit RGB
    /// PNG (fed to the image pipeline like any image). `None` when the video
    /// has no frame there (ffmpeg exits 0 with empty output past the end).
    pub async fn frame(
        &self,
        input: &Input,
        container: Container,
        at: f64,
        limits: Limits,
    ) -> Result<Option<Vec<u8>>, VideoError> {
        let mut args: Vec<String> =
            ["-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1"].map(String::from).to_vec();
        // Seeking before the input is the fast, keyframe-then-decode seek.
        args.extend(["-ss".into(), format!("{at:.3}")]);
        args.extend(Self::input_args(input, container));
        args.extend(
            [
                "-map",
                "0:v:0",
                "-frames:v",
                "1",
                "-an",
                "-sn",
                "-dn",
                "-pix_fmt",
                "rgb24",
                "-c:v",
                "png",
                "-f",
                "image2pipe",
                "-",
            ]
            .map(String::from),
        );
        let png = Self::run(&self.ffmpeg, &args, limits, Self::redact(input)).await?;
        Ok((!png.is_empty()).then_some(png))
    }

    /// Writes a web-playable copy of the input to `output` (a local file).
    pub async fn proxy(
        &self,
        input: &Input,
        container: Container,
        plan: &ProxyPlan,
        output: &Path,
        limits: Limits,
    ) -> Result<(), VideoError> {
        let mut args: Vec<String> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"].map(String::from).to_vec();
        args.extend(Self::input_args(input, container));
        args.extend(["-map".into(), "0:v:0".into(), "-map".into(), "0:a:0?".into(), "-sn".into(), "-dn".into()]);
        args.extend(plan.args());
        args.push(output.to_string_lossy().into_owned());
        Self::run(&self.ffmpeg, &args, limits, Self::redact(input)).await.map(|_| ())
    }
}

/// How a proxy is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPlan {
    /// Already H.264 (+ AAC or no audio) and small enough: copy the streams
    /// into an MP4 with the index up front (`+faststart`).
    RemuxMp4,
    /// H.264 + AAC, shorter side at most 720 px, `+faststart`.
    TranscodeMp4,
    /// VP9 + Opus, shorter side at most 720 px.
    TranscodeWebm,
}

/// Scales down so the shorter side is at most 720 px, keeping the aspect and
/// even dimensions (the encoders need them); never scales up.
const SCALE_720: &str =
    "scale=w='if(gte(iw,ih),-2,trunc(min(iw,720)/2)*2)':h='if(gte(iw,ih),trunc(min(ih,720)/2)*2,-2)'";

impl ProxyPlan {
    /// The plan for `format` (`mp4` or `webm`) of a source with `facts`.
    pub fn choose(format: &str, facts: &Facts) -> Option<Self> {
        match format {
            "mp4" => {
                let h264 = facts.video_codec.as_deref() == Some("h264");
                let audio_ok = matches!(facts.audio_codec.as_deref(), None | Some("aac"));
                let small = facts.width.min(facts.height) <= 720;
                Some(if h264 && audio_ok && small { Self::RemuxMp4 } else { Self::TranscodeMp4 })
            }
            "webm" => Some(Self::TranscodeWebm),
            _ => None,
        }
    }

    fn args(self) -> Vec<String> {
        let list: &[&str] = match self {
            Self::RemuxMp4 => &["-c", "copy", "-movflags", "+faststart", "-f", "mp4"],
            Self::TranscodeMp4 => &[
                "-vf",
                SCALE_720,
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-crf",
                "28",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                "-movflags",
                "+faststart",
                "-f",
                "mp4",
            ],
            Self::TranscodeWebm => &[
                "-vf",
                SCALE_720,
                "-c:v",
                "libvpx-vp9",
                "-b:v",
                "0",
                "-crf",
                "36",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-row-mt",
                "1",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "libopus",
                "-b:a",
                "96k",
                "-f",
                "webm",
            ],
        };
        list.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// What ffprobe says about a video.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Seconds, when known.
    pub duration_s: Option<f64>,
    /// Display width (rotation applied).
    pub width: u32,
    /// Display height (rotation applied).
    pub height: u32,
    /// The first video stream's codec (`h264`, `vp9`…).
    pub video_codec: Option<String>,
    /// The first audio stream's codec, if any.
    pub audio_codec: Option<String>,
    /// Frames per second, when known.
    pub frame_rate: Option<f64>,
}

impl Facts {
    /// Reads ffprobe's JSON (`-show_format -show_streams`).
    pub fn from_ffprobe(json: &[u8]) -> Result<Self, VideoError> {
        let v: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| VideoError::Failed(format!("ffprobe output: {e}")))?;
        let streams = v["streams"].as_array().cloned().unwrap_or_default();
        let video = streams
            .iter()
            .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"].as_i64() != Some(1))
            .ok_or_else(|| VideoError::NotAVideo("no video stream".into()))?;
        let audio = streams.iter().find(|s| s["codec_type"] == "audio");
        let (w, h) = (video["width"].as_u64().unwrap_or(0) as u32, video["height"].as_u64().unwrap_or(0) as u32);
        if w == 0 || h == 0 {
            return Err(VideoError::NotAVideo("the video stream has no size".into()));
        }
        let rotation = rotation_of(video);
        let (width, height) = if rotation % 180 == 90 { (h, w) } else { (w, h) };
        let number = |x: &serde_json::Value| x.as_str().and_then(|s| s.parse::<f64>().ok()).or_else(|| x.as_f64());
        let duration_s = number(&v["format"]["duration"])
            .or_else(|| number(&video["duration"]))
            .filter(|d| d.is_finite() && *d > 0.0);
        let frame_rate =
            video["avg_frame_rate"].as_str().and_then(ratio).or_else(|| video["r_frame_rate"].as_str().and_then(ratio));
        Ok(Self {
            duration_s,
            width,
            height,
            video_codec: video["codec_name"].as_str().map(str::to_owned),
            audio_codec: audio.and_then(|a| a["codec_name"].as_str()).map(str::to_owned),
            frame_rate,
        })
    }
}

/// `30000/1001` → 29.97; `0/0` → None.
fn ratio(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/')?;
    let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
    (d > 0.0 && n > 0.0).then(|| (n / d * 1000.0).round() / 1000.0)
}

/// The display rotation of a stream in degrees (0, 90, 180, 270): from the
/// display matrix side data (ffmpeg 5+) or the older `rotate` tag.
fn rotation_of(stream: &serde_json::Value) -> u32 {
    let from_side = stream["side_data_list"].as_array().and_then(|l| {
        l.iter().find_map(|d| d["rotation"].as_f64().or_else(|| d["rotation"].as_i64().map(|r| r as f64)))
    });
    let from_tag = stream["tags"]["rotate"].as_str().and_then(|r| r.parse::<f64>().ok());
    let deg = from_side.or(from_tag).unwrap_or(0.0).round() as i64;
    deg.rem_euclid(360) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffprobe_json_is_read() {
        let json = br#"{"streams":[
            {"codec_type":"video","codec_name":"h264","width":1920,"height":1080,"avg_frame_rate":"30000/1001",
             "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]},
            {"codec_type":"audio","codec_name":"aac"}],
            "format":{"duration":"60.060000"}}"#;
        let f = Facts::from_ffprobe(json).unwrap();
        assert_eq!((f.width, f.height), (1080, 1920), "rotation applied");
        assert_eq!(f.duration_s, Some(60.06));
        assert_eq!(f.frame_rate, Some(29.97));
        assert_eq!(f.video_codec.as_deref(), Some("h264"));
        assert_eq!(f.audio_codec.as_deref(), Some("aac"));
        let audio_only = br#"{"streams":[{"codec_type":"audio","codec_name":"mp3"}],"format":{}}"#;
        assert!(matches!(Facts::from_ffprobe(audio_only), Err(VideoError::NotAVideo(_))));
    }

    #[test]
    fn proxy_plans() {
        let facts = |v: &str, a: Option<&str>, w, h| Facts {
            duration_s: Some(1.0),
            width: w,
            height: h,
            video_codec: Some(v.into()),
            audio_codec: a.map(Into::into),
            frame_rate: None,
        };
        assert_eq!(ProxyPlan::choose("mp4", &facts("h264", Some("aac"), 1280, 720)), Some(ProxyPlan::RemuxMp4));
        assert_eq!(ProxyPlan::choose("mp4", &facts("h264", None, 720, 1280)), Some(ProxyPlan::RemuxMp4));
        assert_eq!(ProxyPlan::choose("mp4", &facts("h264", Some("aac"), 1920, 1080)), Some(ProxyPlan::TranscodeMp4));
        assert_eq!(ProxyPlan::choose("mp4", &facts("hevc", Some("aac"), 640, 360)), Some(ProxyPlan::TranscodeMp4));
        assert_eq!(ProxyPlan::choose("mp4", &facts("h264", Some("opus"), 640, 360)), Some(ProxyPlan::TranscodeMp4));
        assert_eq!(ProxyPlan::choose("webm", &facts("vp9", None, 640, 360)), Some(ProxyPlan::TranscodeWebm));
        assert_eq!(ProxyPlan::choose("avi", &facts("vp9", None, 640, 360)), None);
    }

    #[test]
    fn urls_are_not_shown() {
        assert_eq!(format!("{:?}", Input::Url("http://s3/x?X-Amz-Signature=abc".into())), "Url(<presigned>)");
    }
}
