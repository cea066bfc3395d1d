//! A bounded soak test: mixed traffic against a running MediaFlow, every
//! answer checked. Driven by `scripts/soak.sh`, which starts the server.
//!
//!   cargo run --release --example soak -- URL [SECONDS] [CONCURRENCY]
//!
//! Traffic: single-PUT uploads read back and compared, multipart uploads,
//! cold thumbnails (a width never asked for), warm thumbnails (ETag stable),
//! ranged reads of an original compared byte for byte, and hostile requests
//! (traversal, forged tokens, bombs, bogus shards and ranges, oversize
//! bodies), each of which must get its documented refusal, never a 5xx.
//! Exits non-zero if any answer is wrong.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Ctx {
    base: String,
    key: Option<String>,
    client: reqwest::Client,
    seed: Bytes,
    seed_width: u32,
    upload_png: Bytes,
    cold_width: AtomicU64,
    warm_etags: Mutex<std::collections::HashMap<u32, String>>,
}

#[derive(Default)]
struct Stats {
    ok: Vec<(&'static str, Duration)>,
    errors: Vec<String>,
}

fn auth(ctx: &Ctx, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &ctx.key {
        Some(k) => r.bearer_auth(k),
        None => r,
    }
}

async fn single_upload(ctx: &Ctx, n: u64) -> Result<(), String> {
    let id = format!("soak-u-{n}-{}", rand::random::<u32>());
    let body = json!({"key_base": id, "mime": "image/png", "size_bytes": ctx.upload_png.len(), "profile": "avatar"});
    let r = auth(ctx, ctx.client.post(format!("{}/v1/uploads/presign", ctx.base)))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("presign: {}", r.status()));
    }
    let a: Value = r.json().await.map_err(|e| e.to_string())?;
    let single = &a["upload"]["single"];
    let mut put = ctx.client.put(single["url"].as_str().ok_or("no url")?);
    for (k, v) in single["headers"].as_object().ok_or("no headers")? {
        if k != "Content-Length" {
            put = put.header(k, v.as_str().unwrap_or(""));
        }
    }
    let r = put.body(ctx.upload_png.clone()).send().await.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("PUT: {}", r.status()));
    }
    let r = ctx.client.get(format!("{}/originals/avatar/{id}", ctx.base)).send().await.map_err(|e| e.to_string())?;
    let got = r.bytes().await.map_err(|e| e.to_string())?;
    if got != ctx.upload_png {
        return Err("original differs from the upload".into());
    }
    Ok(())
}

async fn multipart_upload(ctx: &Ctx, n: u64) -> Result<(), String> {
    let id = format!("soak-m-{n}-{}", rand::random::<u32>());
    let mut data = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    data.resize(6 * 1024 * 1024 + 77, 7);
    let body = json!({"key_base": id, "mime": "video/mp4", "size_bytes": data.len(), "profile": "video", "multipart": "force"});
    let r = auth(ctx, ctx.client.post(format!("{}/v1/uploads/presign", ctx.base)))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let a: Value = r.json().await.map_err(|e| e.to_string())?;
    let mp = &a["upload"]["multipart"];
    let part_size = mp["part_size"].as_u64().ok_or("no part_size")? as usize;
    let mut parts = Vec::new();
    for part in mp["parts"].as_array().ok_or("no parts")? {
        let n = part["part_number"].as_u64().unwrap_or(0) as usize;
        let chunk = data[(n - 1) * part_size..(n * part_size).min(data.len())].to_vec();
        let r =
            ctx.client.put(part["url"].as_str().unwrap_or("")).body(chunk).send().await.map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("part PUT: {}", r.status()));
        }
        let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        parts.push(json!({"part_number": n, "etag": etag}));
    }
    let r = ctx
        .client
        .post(mp["complete"]["url"].as_str().unwrap_or(""))
        .json(&json!({"parts": parts}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("complete: {}", r.status()));
    }
    let r = ctx.client.head(format!("{}/originals/video/{id}", ctx.base)).send().await.map_err(|e| e.to_string())?;
    let len = r.headers().get("content-length").and_then(|v| v.to_str().ok()).unwrap_or("");
    if len != data.len().to_string() {
        return Err(format!("completed object has length {len}"));
    }
    Ok(())
}

async fn thumb(ctx: &Ctx, width: u32) -> Result<String, String> {
    let url = format!("{}/thumb/photo/seed?width={width}", ctx.base);
    let r = ctx.client.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("thumb {width}: {}", r.status()));
    }
    let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    let img = image::load_from_memory(&bytes).map_err(|e| format!("thumb {width} does not decode: {e}"))?;
    let want = width.min(ctx.seed_width);
    if img.width() != want {
        return Err(format!("thumb {width}: width {} instead of {want}", img.width()));
    }
    Ok(etag)
}

async fn warm(ctx: &Ctx) -> Result<(), String> {
    let width = [256, 512, 1024][rand::random::<u32>() as usize % 3];
    let etag = thumb(ctx, width).await?;
    let mut known = ctx.warm_etags.lock().await;
    match known.get(&width) {
        Some(prev) if *prev != etag => Err(format!("warm {width}: ETag changed from {prev} to {etag}")),
        _ => {
            known.insert(width, etag);
            Ok(())
        }
    }
}

async fn ranged(ctx: &Ctx) -> Result<(), String> {
    let len = ctx.seed.len() as u64;
    let start = rand::random::<u64>() % len;
    let end = (start + rand::random::<u64>() % 100_000).min(len - 1);
    let r = ctx
        .client
        .get(format!("{}/originals/photo/seed", ctx.base))
        .header("range", format!("bytes={start}-{end}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 206 {
        return Err(format!("range: {}", r.status()));
    }
    let got = r.bytes().await.map_err(|e| e.to_string())?;
    if got[..] != ctx.seed[start as usize..=end as usize] {
        return Err(format!("range {start}-{end}: wrong bytes"));
    }
    Ok(())
}

/// A PNG header claiming `w`×`h` pixels, with a tiny (invalid) body: the
/// server must refuse it from the header alone.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    v.extend(w.to_be_bytes());
    v.extend(h.to_be_bytes());
    v.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    v
}

/// One hostile request and the statuses that are right for it.
async fn hostile(ctx: &Ctx) -> Result<(), String> {
    let b = &ctx.base;
    let (what, request, allowed): (&str, reqwest::RequestBuilder, &[u16]) = match rand::random::<u32>() % 9 {
        0 => ("traversal", ctx.client.get(format!("{b}/originals/avatar/..%2F..%2Fetc%2Fpasswd")), &[400, 404]),
        1 => ("traversal shard", ctx.client.get(format!("{b}/thumb/avatar/x?shard=..%2F..")), &[400]),
        2 => (
            "forged token",
            ctx.client
                .post(format!("{b}/v1/uploads/originals%2Fvideos%2Fab%2Fx/complete/abc?token=forged"))
                .json(&json!({"parts": [{"part_number": 1, "etag": "x"}]})),
            &[401],
        ),
        3 => (
            "pixel bomb",
            auth(ctx, ctx.client.post(format!("{b}/thumb/photo/soak-bomb")))
                .header("content-type", "image/png")
                .body(png_claiming(100_000, 100_000)),
            &[415, 422],
        ),
        4 => ("no such shard", ctx.client.get(format!("{b}/thumb/photo/seed?shard=nobody-here")), &[404]),
        5 => (
            "huge range",
            ctx.client.get(format!("{b}/originals/photo/seed")).header("range", "bytes=0-18446744073709551615"),
            &[206],
        ),
        6 => (
            "bad range",
            ctx.client.get(format!("{b}/originals/photo/seed")).header("range", "bytes=99999999-"),
            &[416],
        ),
        7 => (
            "declared terabyte",
            auth(ctx, ctx.client.post(format!("{b}/thumb/photo/soak-big")))
                .header("content-type", "image/jpeg")
                .header("content-length", "1099511627776")
                .body(vec![0xffu8, 0xd8, 0xff]),
            &[413],
        ),
        _ => ("bad width", ctx.client.get(format!("{b}/thumb/avatar/seed?width=-1")), &[400, 404]),
    };
    // A refused declared-oversize body ends the connection: a reset while the
    // client still sends is acceptable there, a 5xx never.
    match request.send().await {
        Ok(r) if allowed.contains(&r.status().as_u16()) => Ok(()),
        Ok(r) => Err(format!("{what}: {} (expected one of {allowed:?})", r.status())),
        Err(_) if what == "declared terabyte" => Ok(()),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

async fn one(ctx: &Ctx, n: u64) -> (&'static str, Result<(), String>) {
    match rand::random::<u32>() % 100 {
        0..20 => ("upload", single_upload(ctx, n).await),
        20..24 => ("multipart", multipart_upload(ctx, n).await),
        24..50 => {
            let w = 64 + ctx.cold_width.fetch_add(1, Ordering::Relaxed) as u32 % 1800;
            ("cold_thumb", thumb(ctx, w).await.map(|_| ()))
        }
        50..75 => ("warm_thumb", warm(ctx).await),
        75..90 => ("range", ranged(ctx).await),
        _ => ("hostile", hostile(ctx).await),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(120);
    let workers: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let key = std::env::var("API_KEY").ok().filter(|k| !k.is_empty());
    let seed_path = std::env::var("SOAK_IMAGE").unwrap_or_else(|_| "tests/fixtures/flower.webp".into());
    let seed = Bytes::from(std::fs::read(&seed_path).expect("seed image"));
    let seed_width = image::load_from_memory(&seed).expect("seed decodes").width();
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 90])))
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(workers).build().unwrap();
    let ctx = Arc::new(Ctx {
        base: base.trim_end_matches('/').to_owned(),
        key,
        client,
        seed: seed.clone(),
        seed_width,
        upload_png: Bytes::from(png.into_inner()),
        cold_width: AtomicU64::new(rand::random::<u64>() % 1800),
        warm_etags: Mutex::new(Default::default()),
    });
    // The seed original, through the API so both backends work.
    let ct = if seed_path.ends_with(".webp") { "image/webp" } else { "image/jpeg" };
    let r = auth(&ctx, ctx.client.post(format!("{}/thumb/photo/seed", ctx.base)))
        .header("content-type", ct)
        .body(seed)
        .send()
        .await
        .expect("server reachable");
    assert_eq!(r.status(), 201, "seeding the original");

    let stats = Arc::new(std::sync::Mutex::new(Stats::default()));
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (ctx, stats, counter) = (ctx.clone(), stats.clone(), counter.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    let (op, result) = one(&ctx, n).await;
                    let mut s = stats.lock().unwrap();
                    match result {
                        Ok(()) => s.ok.push((op, t.elapsed())),
                        Err(e) => s.errors.push(format!("{op}: {e}")),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = stats.lock().unwrap();
    let total = s.ok.len() + s.errors.len();
    println!(
        "soak: {total} operations in {elapsed:.0} s, {:.1} ops/s, {} errors",
        total as f64 / elapsed,
        s.errors.len()
    );
    for op in ["upload", "multipart", "cold_thumb", "warm_thumb", "range", "hostile"] {
        let mut d: Vec<Duration> = s.ok.iter().filter(|(o, _)| *o == op).map(|(_, d)| *d).collect();
        d.sort();
        println!(
            "  {op:<11} {:>6} ok   p50 {:>7.1} ms   p99 {:>7.1} ms",
            d.len(),
            percentile(&d, 0.5).as_secs_f64() * 1000.0,
            percentile(&d, 0.99).as_secs_f64() * 1000.0
        );
    }
    for e in s.errors.iter().take(20) {
        println!("  error: {e}");
    }
    std::process::exit(i32::from(!s.errors.is_empty()));
}
