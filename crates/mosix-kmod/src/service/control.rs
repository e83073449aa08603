//! The control socket: where the local tools talk to the service.
//!
//! Every request is handed to the main loop with the caller's uid (from the socket's peer
//! credentials), and the answer is written back. The socket is world-accessible; the main loop
//! refuses changes from anyone but root and the service's own user.
//!
//! Since anyone may connect, the socket bounds what a caller can hold: at most
//! [`MAX_CONNECTIONS`] connections served at once, of which one user may hold
//! [`MAX_PER_USER`] (a connection over either waits up to [`QUEUE_WAIT`] for a place, and at
//! most [`MAX_WAITING_PER_USER`] of a user wait: more are closed at once); root and the
//! service's user have [`MAX_PRIVILEGED`] places of their own, so that no user can lock them
//! out; [`IDLE_TIMEOUT`] to send a request, [`IO_TIMEOUT`] for a request to arrive once it has begun and for the answer to be
//! taken, and [`MAX_REQUEST`] bytes for any request but a new map ([`Request::Reconfigure`], up
//! to [`MAX_RECONFIGURE`]), which only root and the service's user may send: a larger request
//! from anyone else is refused from its header, before it is read.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mosix_core::client::{Request, Response};
use mosix_core::proto::{self, FrameError, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use super::Event;
use crate::link::{Throttle, Trouble, held_back};

pub use mosix_core::client::{MAX_RECONFIGURE, MAX_REQUEST};
/// The most connections of ordinary users served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The most connections one ordinary user is served at once.
pub const MAX_PER_USER: usize = 16;
/// The most connections of one ordinary user waiting for a place; more are closed at once.
pub const MAX_WAITING_PER_USER: usize = 64;
/// Places kept for root and the service's own user (beyond them they wait as others do).
pub const MAX_PRIVILEGED: usize = 16;
/// How long a connection waits for a place before it is closed.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// How long a connection may stay without sending a (next) request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request may take to arrive once its first byte has, and an answer to be taken.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most queued jobs (`mosrun -q`) waiting on the socket at once. A queued job gives up the
/// place it was served in (it may wait for hours) and holds one of these instead.
pub const MAX_QUEUE_WAITERS: usize = 512;

/// The places of the control socket, and who holds them.
struct Places {
    general: Arc<Semaphore>,
    privileged: Arc<Semaphore>,
    users: std::sync::Mutex<HashMap<u32, User>>,
}

/// One ordinary user's places, and how many of its connections wait for one.
#[derive(Clone)]
struct User {
    places: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

/// What a served connection holds; dropped when it ends.
struct Held {
    _general: Option<OwnedSemaphorePermit>,
    _own: Option<OwnedSemaphorePermit>,
}

/// Why a connection was not served.
#[derive(Debug, PartialEq, Eq)]
enum Turned {
    /// Too many of the user's connections wait already.
    Crowd,
    /// No place came free within [`QUEUE_WAIT`].
    Waited,
}

impl Places {
    fn new() -> Places {
        Places {
            general: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            privileged: Arc::new(Semaphore::new(MAX_PRIVILEGED)),
            users: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// A place for a connection of `uid`, waiting for one up to [`QUEUE_WAIT`].
    async fn admit(&self, uid: u32, privileged: bool) -> Result<Held, Turned> {
        let within = |sem: Arc<Semaphore>| async move {
            tokio::time::timeout(QUEUE_WAIT, sem.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or(Turned::Waited)
        };
        if privileged {
            if let Ok(p) = Arc::clone(&self.privileged).try_acquire_owned() {
                return Ok(Held {
                    _general: None,
                    _own: Some(p),
                });
            }
            let g = within(Arc::clone(&self.general)).await?;
            return Ok(Held {
                _general: Some(g),
                _own: None,
            });
        }
        let user = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            // Users with nothing open or waiting are forgotten.
            users.retain(|_, u| {
                u.places.available_permits() < MAX_PER_USER || u.waiting.load(Ordering::SeqCst) > 0
            });
            users
                .entry(uid)
                .or_insert_with(|| User {
                    places: Arc::new(Semaphore::new(MAX_PER_USER)),
                    waiting: Arc::new(AtomicUsize::new(0)),
                })
                .clone()
        };
        if user.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_PER_USER {
            user.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Turned::Crowd);
        }
        let got = async {
            let own = within(Arc::clone(&user.places)).await?;
            let general = within(Arc::clone(&self.general)).await?;
            Ok(Held {
                _general: Some(general),
                _own: Some(own),
            })
        }
        .await;
        user.waiting.fetch_sub(1, Ordering::SeqCst);
        got
    }
}

/// Serves the control socket until the task is aborted.
pub async fn serve(listener: UnixListener, events: mpsc::Sender<Event>) {
    let places = Arc::new(Places::new());
    let waiters = Arc::new(Semaphore::new(MAX_QUEUE_WAITERS));
    let throttle = Arc::new(Throttle::default());
    let euid = nix::unistd::geteuid().as_raw();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let uid = match stream.peer_cred() {
                    Ok(c) => c.uid(),
                    Err(e) => {
                        warn!("control socket: cannot read the caller's credentials: {e}");
                        continue;
                    }
                };
                let privileged = uid == 0 || uid == euid;
                let events = events.clone();
                let places = Arc::clone(&places);
                let waiters = Arc::clone(&waiters);
                let throttle = Arc::clone(&throttle);
                tokio::spawn(async move {
                    match places.admit(uid, privileged).await {
                        Ok(held) => {
                            handle(stream, events, euid, held, waiters).await;
                        }
                        Err(why) => {
                            if let Some(n) =
                                throttle.allow(Trouble::Control, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                            {
                                let what = match why {
                                    Turned::Crowd => format!(
                                        "{MAX_WAITING_PER_USER} connections of uid {uid} wait already"
                                    ),
                                    Turned::Waited => format!(
                                        "no place for uid {uid} within {QUEUE_WAIT:?} ({MAX_PER_USER} a user, {MAX_CONNECTIONS} in all)"
                                    ),
                                };
                                warn!(
                                    "control socket: closing a connection: {what}{}",
                                    held_back(n)
                                );
                            }
                        }
                    }
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

async fn handle(
    mut stream: UnixStream,
    events: mpsc::Sender<Event>,
    euid: u32,
    held: Held,
    waiters: Arc<Semaphore>,
) {
    let mut held = Some(held);
    let mut waiting: Option<OwnedSemaphorePermit> = None;
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
        let queued = matches!(req, Request::Enqueue { .. });
        if queued {
            // A queued job may wait for hours: it gives its place back and takes a waiter's.
            match Arc::clone(&waiters).try_acquire_owned() {
                Ok(p) => {
                    waiting.replace(p);
                    drop(held.take());
                }
                Err(_) => {
                    let answer = proto::encode(&Response::Error(format!(
                        "{MAX_QUEUE_WAITERS} queued jobs wait at this node already"
                    )));
                    let _ = tokio::time::timeout(IO_TIMEOUT, stream.write_all(&answer)).await;
                    return;
                }
            }
        }
        let (tx, mut rx) = oneshot::channel();
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
        // The answer may take long (a move waited for); the main loop bounds its own waits. A
        // queued job's caller that goes away (killed) closes the connection: dropping the
        // answer's receiver takes the job out of the queue.
        let resp = if queued {
            let mut b = [0u8; 1];
            tokio::select! {
                r = &mut rx => r,
                _ = stream.read(&mut b) => return,
            }
        } else {
            (&mut rx).await
        }
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

/// The most processes asking for their own checkpoint at once.
const MAX_CHECKPOINT_ASKS: usize = 64;
/// How long a process has to say what it asks.
const CHECKPOINT_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `RUNDIR/checkpoint.sock` until the task is aborted: a process (by its socket's
/// credentials: the asker is the process checkpointed) sends the line `checkpoint` and gets
/// `ok FILE` once the file is written, or `err WHY` (one line). The process waits in its read
/// while its checkpoint is taken; resumed from that checkpoint, it finds that connection gone
/// (the read fails): that is how a program tells the two apart, as with `fork`.
pub async fn serve_checkpoints(listener: UnixListener, events: mpsc::Sender<Event>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let asks = Arc::new(Semaphore::new(MAX_CHECKPOINT_ASKS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&asks).try_acquire_owned() else {
            let _ = stream
                .write_all(b"err too many processes ask at once\n")
                .await;
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(cred) = stream.peer_cred() else { return };
            let (uid, pid) = (cred.uid(), cred.pid().unwrap_or(0));
            let mut line = [0u8; 64];
            let mut got = 0;
            let read = tokio::time::timeout(CHECKPOINT_ASK_TIMEOUT, async {
                while got < line.len() && !line[..got].contains(&b'\n') {
                    match stream.read(&mut line[got..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            })
            .await;
            let asked = String::from_utf8_lossy(&line[..got]).trim().to_owned();
            let answer = if read.is_err() || asked != "checkpoint" {
                "err send the line: checkpoint\n".to_owned()
            } else {
                let (tx, rx) = oneshot::channel();
                let sent = events
                    .send(Event::CheckpointMe {
                        uid,
                        pid,
                        reply: tx,
                    })
                    .await;
                match (sent, rx.await) {
                    (Ok(()), Ok(Response::Checkpointed(t))) => format!("ok {}\n", t.file),
                    (Ok(()), Ok(Response::Error(e))) => {
                        format!("err {}\n", e.replace('\n', " "))
                    }
                    _ => "err the node service did not answer\n".to_owned(),
                }
            };
            let _ = stream.write_all(answer.as_bytes()).await;
        });
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
    fn one_user_cannot_take_the_places_of_others_or_of_root() {
        rt().block_on(async {
            let places = Places::new();
            let mut held = Vec::new();
            // User 1000 takes all its places; the next one waits, then is turned away.
            for _ in 0..MAX_PER_USER {
                held.push(places.admit(1000, false).await.unwrap());
            }
            assert_eq!(places.admit(1000, false).await.err(), Some(Turned::Waited));
            // Others are served meanwhile, root too.
            held.push(places.admit(1001, false).await.unwrap());
            held.push(places.admit(0, true).await.unwrap());
            // Ordinary users together fill the general places; root still has its own.
            let mut uid = 2000;
            while places.general.available_permits() > 0 {
                held.push(places.admit(uid, false).await.unwrap());
                uid += 1;
            }
            assert_eq!(places.admit(uid, false).await.err(), Some(Turned::Waited));
            for _ in 1..MAX_PRIVILEGED {
                held.push(places.admit(0, true).await.unwrap());
            }
            // A place that comes free is taken by one that waits.
            let waiter = places.admit(1000, false);
            let free = async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                held.remove(0);
            };
            let (got, ()) = tokio::join!(waiter, free);
            assert!(got.is_ok());
        });
    }

    #[test]
    fn a_user_with_too_many_waiting_connections_is_turned_away_at_once() {
        rt().block_on(async {
            let places = Arc::new(Places::new());
            let mut held = Vec::new();
            for _ in 0..MAX_PER_USER {
                held.push(places.admit(7, false).await.unwrap());
            }
            let mut waiting = Vec::new();
            for _ in 0..MAX_WAITING_PER_USER {
                let p = Arc::clone(&places);
                waiting.push(tokio::spawn(async move { p.admit(7, false).await.err() }));
            }
            let waiting_now = || {
                places.users.lock().unwrap()[&7]
                    .waiting
                    .load(Ordering::SeqCst)
            };
            while waiting_now() < MAX_WAITING_PER_USER {
                tokio::task::yield_now().await;
            }
            assert_eq!(places.admit(7, false).await.err(), Some(Turned::Crowd));
            for w in waiting {
                assert_eq!(w.await.unwrap(), Some(Turned::Waited));
            }
        });
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
