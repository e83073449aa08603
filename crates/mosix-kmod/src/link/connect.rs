//! The connecting side of the link: the client handshake, blocking connections for the
//! process threads, and the outbound gossip writers (one task per peer, created on first use).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::proto::seal::{self, Sealer, Session};
use mosix_core::proto::{self, ClientHandshake, HandshakeError, LinkMsg, MAX_HANDSHAKE_FRAME};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::frame::{read_frame, write_frame};
use super::{
    Conn, HANDSHAKE_TIMEOUT, IDLE_CLOSE, LinkContext, LinkError, PEER_QUEUE, SharedContext,
    Throttle, Trouble, held_back, nonce, peer_text, snapshot,
};

async fn client_handshake(
    stream: &mut TcpStream,
    to: NodeId,
    ctx: &LinkContext,
) -> Result<Session, LinkError> {
    let mut hs = ClientHandshake::new(ctx.me, to, nonce()?, ctx.protection);
    write_frame(stream, &hs.hello()).await?;
    let challenge = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    match hs.on_challenge(ctx.secret_for(to).unwrap_or(&ctx.secret), challenge) {
        Ok(proof) => write_frame(stream, &proof).await?,
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = write_frame(stream, &r).await;
            }
            return Err(e.into());
        }
    }
    let verdict = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    Ok(hs.on_verdict(verdict)?)
}

/// Opens and authenticates a link connection to `to`; returns it with its session.
pub async fn connect(to: NodeId, ctx: &LinkContext) -> Result<(TcpStream, Session), LinkError> {
    let Some(addr) = ctx.addr_of(to) else {
        return Err(HandshakeError::Protocol(format!(
            "node {to} is not in the map nor in a partner's"
        ))
        .into());
    };
    let attempt = async {
        let mut s = tcp_connect(
            ctx.my_addr,
            SocketAddr::new(IpAddr::V4(addr), ctx.port),
            ctx.connect_timeout,
        )
        .await
        .map_err(LinkError::Connect)?;
        let _ = s.set_nodelay(true);
        let session = client_handshake(&mut s, to, ctx).await?;
        Ok((s, session))
    };
    tokio::time::timeout(ctx.connect_timeout + HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| LinkError::Timeout)?
}

/// How long one attempt to open a TCP connection waits for the peer's answer before it sends
/// another SYN on a new socket. The kernel's first retransmission comes after a second — as
/// long as the whole default `link.connect_timeout_ms` — so one SYN dropped by a peer whose
/// queue a flood filled would fail the connection. In a cluster's network an answer takes well
/// under a millisecond; a quarter of a second without one means the SYN was lost.
const SYN_WAIT: Duration = Duration::from_millis(250);

/// The wait of the next attempt: [`SYN_WAIT`], or what is left before `deadline` if less.
/// `None` when nothing is left.
fn next_wait(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then(|| left.min(SYN_WAIT))
}

/// Opens a TCP connection from our map address (so the peer can check who we are) to `to`
/// within `timeout`, a new SYN every [`SYN_WAIT`]. Only a timed-out attempt is
/// tried again: a refusal or an unreachable network is the answer.
async fn tcp_connect(
    me: Ipv4Addr,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        let wait = next_wait(deadline).ok_or_else(timed_out)?;
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(IpAddr::V4(me), 0))?;
        match tokio::time::timeout(wait, sock.connect(to)).await {
            Ok(r) => return r,
            Err(_) => continue,
        }
    }
}

/// The blocking form of [`tcp_connect`].
fn tcp_connect_blocking(
    me: Ipv4Addr,
    to: SocketAddr,
    timeout: Duration,
) -> std::io::Result<socket2::Socket> {
    let deadline = Instant::now() + timeout;
    loop {
        let wait = next_wait(deadline).ok_or_else(timed_out)?;
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        sock.bind(&SocketAddr::new(IpAddr::V4(me), 0).into())?;
        match sock.connect_timeout(&to.into(), wait) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            r => return r.map(|()| sock),
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")
}

/// Opens and authenticates a blocking link connection to `to` and asks it to take a process
/// (for the migration threads, which do not run on the runtime).
pub fn connect_process(to: NodeId, ctx: &LinkContext) -> Result<Conn, LinkError> {
    connect_blocking(to, ctx, &LinkMsg::OpenProcess)
}

/// Opens and authenticates a blocking link connection to `to` and sends `first`, which says
/// what the connection is for.
pub fn connect_blocking(to: NodeId, ctx: &LinkContext, first: &LinkMsg) -> Result<Conn, LinkError> {
    let Some(addr) = ctx.addr_of(to) else {
        return Err(HandshakeError::Protocol(format!(
            "node {to} is not in the map nor in a partner's"
        ))
        .into());
    };
    let sock = tcp_connect_blocking(
        ctx.my_addr,
        SocketAddr::new(IpAddr::V4(addr), ctx.port),
        ctx.connect_timeout,
    )
    .map_err(LinkError::Connect)?;
    let mut s: std::net::TcpStream = sock.into();
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(LinkError::Connect)?;
    let mut hs = ClientHandshake::new(ctx.me, to, nonce()?, ctx.protection);
    proto::write_frame(&mut s, &hs.hello())?;
    let challenge = proto::read_frame(&mut s, MAX_HANDSHAKE_FRAME)?;
    match hs.on_challenge(ctx.secret_for(to).unwrap_or(&ctx.secret), challenge) {
        Ok(p) => proto::write_frame(&mut s, &p)?,
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = proto::write_frame(&mut s, &r);
            }
            return Err(e.into());
        }
    }
    let mut session = hs.on_verdict(proto::read_frame(&mut s, MAX_HANDSHAKE_FRAME)?)?;
    seal::write_sealed(&mut s, &mut session.sealer, first, &mut Vec::new())?;
    s.set_read_timeout(None).map_err(LinkError::Connect)?;
    Ok(Conn::new(s, session))
}

/// The outbound side: one writer task per peer, created on first use.
#[derive(Debug)]
pub struct Outbound {
    ctx: SharedContext,
    throttle: Arc<Throttle>,
    peers: HashMap<NodeId, mpsc::Sender<Arc<Vec<u8>>>>,
}

impl Outbound {
    /// No connections yet.
    pub fn new(ctx: SharedContext, throttle: Arc<Throttle>) -> Outbound {
        Outbound {
            ctx,
            throttle,
            peers: HashMap::new(),
        }
    }

    /// Queues a frame for `to`; drops it if the peer's queue is full.
    pub fn send(&mut self, to: NodeId, frame: Arc<Vec<u8>>) {
        if let Some(tx) = self.peers.get(&to) {
            match tx.try_send(frame) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!("queue to node {to} full; dropping a message");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(f)) => {
                    self.peers.remove(&to);
                    self.spawn(to, f);
                    return;
                }
            }
        }
        self.spawn(to, frame);
    }

    fn spawn(&mut self, to: NodeId, first: Arc<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let _ = tx.try_send(first);
        self.peers.insert(to, tx);
        tokio::spawn(peer_writer(
            to,
            rx,
            Arc::clone(&self.ctx),
            Arc::clone(&self.throttle),
        ));
    }

    /// Closes every outbound connection (after the map changed).
    pub fn reset(&mut self) {
        self.peers.clear();
    }
}

/// An open outbound gossip connection: the socket, its sealer, the frame being sent.
struct Open {
    stream: TcpStream,
    sealer: Sealer,
    buf: Vec<u8>,
}

async fn peer_writer(
    to: NodeId,
    mut rx: mpsc::Receiver<Arc<Vec<u8>>>,
    ctx: SharedContext,
    throttle: Arc<Throttle>,
) {
    let mut conn: Option<Open> = None;
    let mut was_down = false;
    loop {
        let frame = match tokio::time::timeout(IDLE_CLOSE, rx.recv()).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(_) => {
                conn = None;
                continue;
            }
        };
        if conn.is_none() {
            let c = snapshot(&ctx);
            match connect(to, &c).await {
                Ok((stream, session)) => {
                    if was_down {
                        info!("link to node {to} is up again");
                    }
                    was_down = false;
                    conn = Some(Open {
                        stream,
                        sealer: session.sealer,
                        buf: Vec::new(),
                    });
                }
                Err(e) => {
                    let ip = c
                        .map
                        .addr_of(to)
                        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4);
                    match &e {
                        LinkError::Connect(_) | LinkError::Timeout => {
                            if !was_down {
                                debug!("node {to} unreachable: {e}");
                            }
                        }
                        _ => {
                            if let Some(n) = throttle.allow(Trouble::of_link(&e), ip) {
                                // A refusal quotes the peer: one bounded line.
                                let reason = peer_text(&e.to_string());
                                warn!("link to node {to} ({ip}) refused: {reason}{}", held_back(n));
                            }
                        }
                    }
                    was_down = true;
                    continue;
                }
            }
        }
        if let Some(o) = conn.as_mut() {
            // The frame was encoded once, plain; each connection seals it with its own keys.
            let sent = match o.sealer.seal_plain(&frame, &mut o.buf) {
                Ok(()) => o.stream.write_all(&o.buf).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = sent {
                debug!("link to node {to} broke: {e}");
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as StdStream;

    /// A listener whose queue is full drops a SYN; the connection is opened all the same when
    /// the queue empties within the timeout, though the kernel would send its second SYN only
    /// after a second, the whole timeout.
    #[test]
    fn a_dropped_syn_is_sent_again_within_the_timeout() {
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        l.listen(0).unwrap();
        let at = l.local_addr().unwrap().as_socket().unwrap();
        // Fill the queue: connections until one is not answered.
        let mut queued = Vec::new();
        let full =
            (0..16).any(
                |_| match StdStream::connect_timeout(&at, Duration::from_millis(150)) {
                    Ok(s) => {
                        queued.push(s);
                        false
                    }
                    Err(_) => true,
                },
            );
        assert!(full, "the listener's queue never filled");
        let l = std::sync::Arc::new(l);
        let acceptor = {
            let l = std::sync::Arc::clone(&l);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                for _ in 0..queued.len() + 1 {
                    let _ = l.accept();
                }
            })
        };
        let t = Instant::now();
        let r = tcp_connect_blocking(Ipv4Addr::LOCALHOST, at, Duration::from_secs(1));
        assert!(r.is_ok(), "{r:?} after {:?}", t.elapsed());
        acceptor.join().unwrap();
        // Nobody listening: the refusal is the answer, at once.
        drop(l);
        let t = Instant::now();
        let r = tcp_connect_blocking(Ipv4Addr::LOCALHOST, at, Duration::from_secs(1));
        assert_eq!(
            r.map(drop).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        assert!(t.elapsed() < Duration::from_millis(900));
    }
}
