//! The control socket: where the local tools talk to the service.
//!
//! Every request is handed to the main loop with the caller's uid (from the socket's peer
//! credentials), and the answer is written back. The socket is world-accessible; the main loop
//! refuses changes from anyone but root and the service's own user.
//!
//! Since anyone may connect, the socket bounds what a caller can hold: at most
//! [`MAX_CONNECTIONS`] connections at once (more are closed at once), [`IDLE_TIMEOUT`] to send
//! a request, [`IO_TIMEOUT`] for a request to arrive once it has begun and for the answer to be
//! taken, and [`MAX_REQUEST`] bytes for any request but a new map ([`Request::Reconfigure`], up
//! to [`MAX_RECONFIGURE`]), which only root and the service's user may send: a larger request
//! from anyone else is refused from its header, before it is read.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use mosix_core::client::{Request, Response};
use mosix_core::proto::{self, FrameError, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use super::Event;
use crate::link::{Throttle, Trouble, held_back};

pub use mosix_core::client::{MAX_RECONFIGURE, MAX_REQUEST};
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may stay without sending a (next) request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request may take to arrive once its first byte has, and an answer to be taken.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the control socket until the task is aborted.
pub async fn serve(listener: UnixListener, events: mpsc::Sender<Event>) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let throttle = Throttle::default();
    let euid = nix::unistd::geteuid().as_raw();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
                    if let Some(n) =
                        throttle.allow(Trouble::Control, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                    {
                        warn!(
                            "control socket: {MAX_CONNECTIONS} connections open; closing new ones{}",
                            held_back(n)
                        );
                    }
                    continue;
                };
                let events = events.clone();
                tokio::spawn(async move {
                    handle(stream, events, euid).await;
                    drop(place);
                });
            }
            Err(e) => {
                warn!("control socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a request was not taken.
#[derive(Debug, thiserror::Error)]
enum Bad {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("no request within {0:?}")]
    Slow(Duration),
    #[error("a request of {len} bytes exceeds the limit of {limit} bytes{why}")]
    TooLarge {
        len: usize,
        limit: usize,
        why: &'static str,
    },
}

/// The largest request `uid` may send; `privileged` callers may send a new map.
fn limit_for(privileged: bool) -> usize {
    if privileged {
        MAX_RECONFIGURE
    } else {
        MAX_REQUEST
    }
}

/// Reads one request: `Ok(None)` when the caller closed the connection between requests.
async fn read_request(stream: &mut UnixStream, privileged: bool) -> Result<Option<Request>, Bad> {
    let mut h = [0u8; HEADER_LEN];
    // The first byte may take as long as the caller stays idle; the rest must follow.
    match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut h[..1])).await {
        Err(_) => return Err(Bad::Slow(IDLE_TIMEOUT)),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(FrameError::Io(e).into()),
    }
    let rest = async {
        stream.read_exact(&mut h[1..]).await?;
        let len = proto::decode_header(&h, MAX_RECONFIGURE)?;
        let limit = limit_for(privileged);
        if len > limit {
            return Err(Bad::TooLarge {
                len,
                limit,
                why: " (only root may send a new map)",
            });
        }
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        let req: Request = proto::decode_payload(&payload)?;
        if len > MAX_REQUEST && !matches!(req, Request::Reconfigure { .. }) {
            return Err(Bad::TooLarge {
                len,
                limit: MAX_REQUEST,
                why: " (only a new map may be larger)",
            });
        }
        Ok(Some(req))
    };
    match tokio::time::timeout(IO_TIMEOUT, rest).await {
        Ok(r) => r,
        Err(_) => Err(Bad::Slow(IO_TIMEOUT)),
    }
}

impl From<std::io::Error> for Bad {
    fn from(e: std::io::Error) -> Bad {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Bad::Frame(FrameError::Truncated)
        } else {
            Bad::Frame(FrameError::Io(e))
        }
    }
}

async fn handle(mut stream: UnixStream, events: mpsc::Sender<Event>, euid: u32) {
    let (uid, pid) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.pid().unwrap_or(0)),
        Err(e) => {
            warn!("control socket: cannot read the caller's credentials: {e}");
            return;
        }
    };
    let privileged = uid == 0 || uid == euid;
    loop {
        let req = match read_request(&mut stream, privileged).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(Bad::Slow(t)) => {
                debug!("control socket: closing a connection of uid {uid}: no request in {t:?}");
                return;
            }
            Err(e) => {
                debug!("control socket: bad request from uid {uid}: {e}");
                let answer = proto::encode(&Response::Error(format!("bad request: {e}")));
                let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&answer)).await;
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        if events
            .send(Event::Control {
                req,
                uid,
                pid,
                reply: tx,
            })
            .await
            .is_err()
        {
            return;
        }
        // The answer may take long (a move waited for); the main loop bounds its own waits.
        let resp = rx
            .await
            .unwrap_or_else(|_| Response::Error("the service is shutting down".into()));
        let answer = proto::encode(&resp);
        match tokio::time::timeout(IO_TIMEOUT, stream.write_all(&answer)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                debug!("control socket: uid {uid} did not take its answer in {IO_TIMEOUT:?}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_privileged_callers_may_send_a_map_sized_request() {
        assert_eq!(limit_for(false), MAX_REQUEST);
        assert_eq!(limit_for(true), MAX_RECONFIGURE);
        const { assert!(MAX_RECONFIGURE >= mosix_core::map::MAX_MAP_BYTES as usize + 4096) };
    }

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (
            UnixStream::from_std(a).unwrap(),
            UnixStream::from_std(b).unwrap(),
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn a_large_request_from_a_user_is_refused_from_its_header() {
        rt().block_on(async {
            let (mut server, mut client) = pair();
            let mut h = b"MX".to_vec();
            h.push(proto::PROTOCOL_VERSION);
            h.push(0);
            h.extend_from_slice(&(1u32 << 20).to_le_bytes());
            client.write_all(&h).await.unwrap();
            // Nothing more is sent: the refusal comes from the header alone.
            let e = read_request(&mut server, false).await.unwrap_err();
            assert!(matches!(e, Bad::TooLarge { .. }), "{e}");
        });
    }

    #[test]
    fn a_large_request_that_is_not_a_map_is_refused_even_from_root() {
        rt().block_on(async {
            let (mut server, mut client) = pair();
            // Every request but a map is small; a large frame holding one is refused.
            let mut f = proto::encode(&Request::Ping);
            f.resize(f.len() + (100 << 10), 0);
            let len = (f.len() - HEADER_LEN) as u32;
            f[4..8].copy_from_slice(&len.to_le_bytes());
            tokio::spawn(async move { client.write_all(&f).await });
            assert!(read_request(&mut server, true).await.is_err());
        });
    }

    #[test]
    fn silent_and_slow_callers_are_dropped() {
        rt().block_on(async {
            let (mut server, _client) = pair();
            let e = read_request(&mut server, false).await.unwrap_err();
            assert!(matches!(e, Bad::Slow(t) if t == IDLE_TIMEOUT), "{e}");

            let (mut server, mut client) = pair();
            client.write_all(b"MX").await.unwrap();
            let e = read_request(&mut server, false).await.unwrap_err();
            assert!(matches!(e, Bad::Slow(t) if t == IO_TIMEOUT), "{e}");
        });
    }

    #[test]
    fn a_request_reads_back() {
        rt().block_on(async {
            let (mut server, mut client) = pair();
            client
                .write_all(&proto::encode(&Request::Ping))
                .await
                .unwrap();
            drop(client);
            assert!(matches!(
                read_request(&mut server, false).await,
                Ok(Some(Request::Ping))
            ));
            assert!(matches!(read_request(&mut server, false).await, Ok(None)));
        });
    }
}
