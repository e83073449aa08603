//! The Prometheus endpoint: `GET /metrics` on `[metrics] listen` answers the text format of
//! [`mosix_core::metrics::global`], served by hyper (HTTP/1) on the service's runtime.
//!
//! Whatever connects is a stranger: at most [`MAX_CONNECTIONS`] are served at once (more wait
//! in the kernel's backlog), a request head over [`MAX_HEAD`] bytes is refused by hyper, and a
//! connection is closed after [`CONNECTION_TIME`] whatever it does. Nothing it sends reaches
//! the service: the only answers are the metrics, a short index and 404/405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// The largest request head read (hyper's buffer).
pub const MAX_HEAD: usize = 16 * 1024;
/// How long one connection may stay.
pub const CONNECTION_TIME: Duration = Duration::from_secs(10);

/// Binds the endpoint and serves it until the task is aborted. A bind failure (the port
/// taken, the address not here) is logged and leaves the node without metrics, not stopped.
pub(super) async fn serve(addr: SocketAddr) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!("metrics: cannot listen on {addr} ([metrics] listen): {e}; serving none");
            return;
        }
    };
    info!("metrics: serving Prometheus text at http://{addr}/metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEAD)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer));
            let _ = tokio::time::timeout(CONNECTION_TIME, conn).await;
            drop(permit);
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(respond(req.method(), req.uri().path()))
}

/// The answer to a request line.
fn respond(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            mosix_core::metrics::CONTENT_TYPE,
            mosix_core::metrics::global().text(),
        ),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">MOSIX node metrics</a></body></html>\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response<Full<Bytes>>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn metrics_index_and_nothing_else() {
        let r = respond(&Method::GET, "/metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[hyper::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        assert!(body(r).await.contains("# TYPE mosix_guests gauge"));
        assert_eq!(respond(&Method::GET, "/").status(), StatusCode::OK);
        assert_eq!(
            respond(&Method::GET, "/etc/passwd").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
