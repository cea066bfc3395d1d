//! The accept loop: hyper with header-read timeouts (so a slow client cannot
//! hold a connection open forever), HTTP/1.1 and HTTP/2, and graceful shutdown
//! that lets in-flight requests finish up to a deadline.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::shutdown::Lifecycle;

/// Serves `app` on `listener` until `lifecycle` shuts down, then waits up to
/// `drain` for open requests to finish. Returns whether they all did.
pub async fn serve(
    listener: TcpListener,
    app: crate::http::App,
    lifecycle: Lifecycle,
    idle: Duration,
    drain: Duration,
) -> bool {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // half_close: a client may shut its write side once the body is sent (curl
    // and S3 SDKs can); without it hyper takes the EOF for a hang-up and drops
    // the request unanswered.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(idle).keep_alive(true).half_close(true);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(idle));
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = lifecycle.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(crate::http::linger::LingeringStream::new(stream));
        let conn = builder.serve_connection_with_upgrades(io, app.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(drain) => {
            tracing::warn!("drain deadline reached with requests still open");
            false
        }
    }
}
