//! `mon --web ADDR`: the cluster in a browser. A page (`index.html`, embedded) that asks
//! `/api/state` every second and draws the nodes as `mon --once --json` gives them and every
//! MOSIX process of the cluster as `mps -A` lists them. Read-only: mon asks the service
//! nothing it would not ask on a terminal, with the rights of whoever runs it.
//!
//! The server is hyper's HTTP/1 on a one-thread runtime, bounded like the service's metrics
//! endpoint: at most 8 connections at once, request heads of at most 16 KiB, 10 s each; only
//! `GET /` and `GET /api/state` are answered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mosix_core::client::Client;
use mosix_core::config::Paths;
use serde::Serialize;

use crate::rows::{self, Row};

const PAGE: &str = include_str!("index.html");
const MAX_CONNECTIONS: usize = 8;
const MAX_HEAD: usize = 16 * 1024;
const CONNECTION_TIME: Duration = Duration::from_secs(10);

/// What the page draws.
#[derive(Debug, Serialize)]
struct State {
    /// This node's cluster.
    cluster: String,
    /// The node mon asks.
    me: u16,
    /// Every node, as `mon --once --json`, with its switches in words.
    nodes: Vec<NodeRow>,
    /// Every MOSIX process of the cluster.
    procs: Vec<Proc>,
    /// Nodes that did not answer for their processes.
    missing: Vec<String>,
}

#[derive(Debug, Serialize)]
struct NodeRow {
    #[serde(flatten)]
    row: Row,
    status_words: String,
}

#[derive(Debug, Serialize)]
struct Proc {
    home: u16,
    pid: u32,
    node: u16,
    user: String,
    state: String,
    nmigs: u32,
    cpu_ms: u64,
    command: String,
}

/// The state now, asked of the service.
fn state(paths: &Paths) -> Result<State> {
    let mut c = Client::connect(paths)?;
    let view = c.view()?;
    let all = c.procs_all()?;
    let mut procs = Vec::new();
    let mut missing = Vec::new();
    for n in all {
        if let Some(e) = n.error {
            missing.push(format!("node {}: {e}", n.node));
        }
        let home = n.node.get();
        procs.extend(n.rows.into_iter().map(|r| Proc {
            home,
            pid: r.pid,
            node: if r.node == 0 { home } else { r.node },
            user: r.uid.map_or_else(|| "?".into(), mosix_core::cli::user_name),
            state: format!("{}{}", r.state, if r.lock { "L" } else { "" }),
            nmigs: r.nmigs,
            cpu_ms: r.cpu_ms,
            command: r.command,
        }));
    }
    Ok(State {
        cluster: view.cluster.clone(),
        me: view.me.get(),
        nodes: rows::rows(&view)
            .into_iter()
            .map(|row| NodeRow {
                status_words: match (row.up, rows::flags(row.status)) {
                    (false, _) => "down".into(),
                    (true, f) if f == "-" => "up".into(),
                    (true, f) => format!("up, {f}"),
                },
                row,
            })
            .collect(),
        procs,
        missing,
    })
}

/// Serves the page on `addr` until mon is killed.
pub fn serve(addr: SocketAddr, paths: Paths) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the web server's runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        eprintln!("mon: the cluster at http://{}/", listener.local_addr()?);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let paths = Arc::new(paths);
        loop {
            let permit = Arc::clone(&slots).acquire_owned().await?;
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let paths = Arc::clone(&paths);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let paths = Arc::clone(&paths);
                    async move { answer(&req, &paths).await }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .max_buf_size(MAX_HEAD)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIME, conn).await;
                drop(permit);
            });
        }
    })
}

async fn answer(
    req: &Request<Incoming>,
    paths: &Paths,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, kind: &str, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"only GET\n".to_vec(),
        ));
    }
    Ok(match req.uri().path() {
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            PAGE.as_bytes().to_vec(),
        ),
        "/api/state" => {
            // The client is blocking: ask it off the runtime's thread.
            let paths = paths.clone();
            match tokio::task::spawn_blocking(move || state(&paths)).await {
                Ok(Ok(s)) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec(&s).unwrap_or_default(),
                ),
                Ok(Err(e)) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{e:#}\n").into_bytes(),
                ),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n").into_bytes(),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    })
}
