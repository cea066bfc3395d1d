//! The ceiling of the hit path: hyper on tokio answering one fixed 25 KB
//! body with a thumbnail's headers, nothing else (bench/README.md, "Hits").
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8099);
    let body = Bytes::from(vec![7u8; 25_000]);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let r = Response::builder()
                        .header("content-type", "image/webp")
                        .header("etag", "\"0123456789abcdef0123456789abcdef\"")
                        .header("cache-control", "public, max-age=86400")
                        .header("last-modified", "Mon, 30 Nov 2026 19:57:00 GMT")
                        .header("accept-ranges", "none")
                        .header("x-content-type-options", "nosniff")
                        .header("content-disposition", "inline; filename=\"C1-w0_512.webp\"")
                        .header("vary", "origin, access-control-request-method, access-control-request-headers")
                        .header("x-request-id", "0123456789abcdef01234567")
                        .body(Full::new(body))
                        .unwrap();
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
