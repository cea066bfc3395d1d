//! Prometheus metrics: the `metrics` facade, rendered by
//! `metrics-exporter-prometheus` at `/metrics`.
//!
//! Names (all prefixed `mediaflow_`):
//! - `http_requests_total{method,route,status}`, `http_request_duration_seconds{method,route}`
//! - `thumbnail_renders_total{result}`, `thumbnail_render_duration_seconds`,
//!   `thumbnail_queue_depth`, `thumbnail_rejections_total{reason}` (reasons:
//!   `overloaded`, `timeout`, `over_budget`, `too_many_pixels`,
//!   `side_too_long`, `output_too_large`)
//! - `render_budget_bytes`, `render_budget_in_use_bytes`, `render_budget_waiting`
//! - `cache_requests_total{result="hit"|"miss"}`, `cache_bytes`, `cache_entries`,
//!   `variant_store_hits_total`
//! - `storage_operations_total{backend,op,result}`, `storage_operation_duration_seconds{backend,op}`
//! - `uploads_presigned_total{profile,mode}`, `uploads_completed_total{profile}`,
//!   `uploads_verification_failed_total{profile}`, `uploads_aborted_total`
//! - `process_resident_memory_bytes`, `process_peak_resident_memory_bytes`

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, seconds: 1 ms to 60 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Installs the process-wide recorder once and returns its handle. Several
/// routers in one process (tests) share it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
            .expect("buckets are non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program);
        // then these metrics go there and /metrics shows ours only.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("mediaflow_http_requests_total", "HTTP requests by method, matched route and status");
    describe_histogram!("mediaflow_http_request_duration_seconds", Unit::Seconds, "Time to the response headers");
    describe_counter!("mediaflow_thumbnail_renders_total", "Thumbnail renders (decode, resize, encode) by result");
    describe_histogram!(
        "mediaflow_thumbnail_render_duration_seconds",
        Unit::Seconds,
        "Render time on the blocking pool"
    );
    describe_gauge!("mediaflow_thumbnail_queue_depth", "Renders waiting for a slot");
    describe_counter!(
        "mediaflow_thumbnail_rejections_total",
        "Renders refused (overloaded, over a limit or the memory budget) or abandoned (timeout), by reason"
    );
    describe_gauge!("mediaflow_render_budget_bytes", Unit::Bytes, "MAX_RENDER_MEMORY_MB, the renders' memory budget");
    describe_gauge!(
        "mediaflow_render_budget_in_use_bytes",
        Unit::Bytes,
        "Memory reserved by renders whose work has not stopped yet"
    );
    describe_gauge!("mediaflow_render_budget_waiting", "Renders waiting for their share of the memory budget");
    describe_counter!("mediaflow_cache_requests_total", "In-memory variant cache lookups by result");
    describe_gauge!("mediaflow_cache_bytes", Unit::Bytes, "Bytes held by the in-memory variant cache");
    describe_gauge!("mediaflow_cache_entries", "Entries in the in-memory variant cache");
    describe_counter!("mediaflow_variant_store_hits_total", "Variants found in the store (made earlier or elsewhere)");
    describe_counter!("mediaflow_storage_operations_total", "Storage operations by backend, operation and result");
    describe_histogram!("mediaflow_storage_operation_duration_seconds", Unit::Seconds, "Storage operation time");
    describe_counter!("mediaflow_uploads_presigned_total", "Uploads presigned by profile and mode");
    describe_counter!("mediaflow_uploads_completed_total", "Multipart uploads completed and verified");
    describe_counter!("mediaflow_uploads_verification_failed_total", "Completed uploads deleted by verification");
    describe_counter!("mediaflow_uploads_aborted_total", "Multipart uploads aborted");
    describe_gauge!("mediaflow_process_resident_memory_bytes", Unit::Bytes, "Resident memory");
    describe_gauge!("mediaflow_process_peak_resident_memory_bytes", Unit::Bytes, "Peak resident memory");
}

/// Reads `VmRSS` / `VmHWM` (bytes) on Linux.
fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// How often the recorder's histogram samples are folded in without a scrape.
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the recorded histogram samples into their buckets every
/// [`UPKEEP_EVERY`] until shutdown. The recorder keeps every sample until
/// then, and without it only a scrape of `/metrics` did: an instance nobody
/// scraped grew by ~20 bytes a request (12 MB per 600 000 hits, measured),
/// without bound.
pub fn spawn_upkeep(lifecycle: &crate::shutdown::Lifecycle) {
    let handle = handle();
    lifecycle.spawn_daemon(async move {
        let mut ticks = tokio::time::interval(UPKEEP_EVERY);
        loop {
            ticks.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The Prometheus text exposition, with point-in-time gauges refreshed.
pub fn render(cache: (u64, u64), queue_depth: usize) -> String {
    let handle = handle();
    metrics::gauge!("mediaflow_cache_bytes").set(cache.0 as f64);
    metrics::gauge!("mediaflow_cache_entries").set(cache.1 as f64);
    metrics::gauge!("mediaflow_thumbnail_queue_depth").set(queue_depth as f64);
    if let Some((rss, peak)) = memory() {
        metrics::gauge!("mediaflow_process_resident_memory_bytes").set(rss as f64);
        metrics::gauge!("mediaflow_process_peak_resident_memory_bytes").set(peak as f64);
    }
    handle.run_upkeep();
    handle.render()
}
