//! The link between node services: authenticated TCP connections carrying [`LinkMsg`] frames.
//!
//! Each node listens on its own map address (port 4249 by default). To send to a peer, a node
//! opens (and keeps, while it is used) one outbound connection from its own map address, so the
//! peer sees the address the map gives the sender; the peer checks that the claimed node number
//! owns that address. Inbound connections only receive; outbound ones only send. Every
//! connection starts with the challenge–response handshake of [`mosix_core::proto`]; a wrong
//! secret, a bad version, a malformed or oversized frame closes that one connection with a logged
//! reason and touches nothing else.
//!
//! Sends never wait: gossip is idempotent, so a message for a peer that is slow or unreachable
//! is simply dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::map::ClusterMap;
use mosix_core::proto::{
    self, ClientHandshake, FrameError, HEADER_LEN, HandshakeError, LinkMsg, MAX_HANDSHAKE_FRAME,
    MAX_LINK_FRAME, NONCE_LEN, ServerHandshake,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, warn};

use super::Event;

/// How long a handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// An outbound connection unused this long is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// The most inbound connections served at once.
pub const MAX_INBOUND: usize = 1024;
/// Frames queued for one peer before new ones are dropped.
pub const PEER_QUEUE: usize = 8;

/// What every connection needs to know; replaced as a whole when the map changes.
#[derive(Debug)]
pub struct LinkContext {
    /// This node.
    pub me: NodeId,
    /// This node's map address (outbound connections are bound to it).
    pub my_addr: Ipv4Addr,
    /// The map.
    pub map: ClusterMap,
    /// The cluster secret.
    pub secret: Secret,
    /// The port peers listen on.
    pub port: u16,
    /// How long to wait for a peer to accept.
    pub connect_timeout: Duration,
}

/// The shared, replaceable link context.
pub type SharedContext = Arc<RwLock<Arc<LinkContext>>>;

/// The link context as it is now.
pub fn snapshot(ctx: &SharedContext) -> Arc<LinkContext> {
    match ctx.read() {
        Ok(g) => Arc::clone(&g),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    }
}

/// Limits a repeated log line about one peer to once a minute (a peer with the wrong secret
/// retries every second); different reasons are each logged.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Mutex<HashMap<(IpAddr, String), Instant>>,
}

impl Throttle {
    /// Whether the message `what` about `peer` should be logged now.
    pub fn allow(&self, peer: IpAddr, what: &str) -> bool {
        let Ok(mut m) = self.last.lock() else {
            return true;
        };
        let now = Instant::now();
        let key = (peer, what.to_owned());
        match m.get(&key) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
            _ => {
                if m.len() > 4096 {
                    m.clear();
                }
                m.insert(key, now);
                true
            }
        }
    }
}

/// Reads one frame from an async stream, checking the header before allocating.
pub async fn read_frame<M, R>(r: &mut R, limit: usize) -> Result<M, FrameError>
where
    M: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut h[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated
            });
        }
        got += n;
    }
    let len = proto::decode_header(&h, limit)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    proto::decode_payload(&payload)
}

/// Writes one frame to an async stream.
pub async fn write_frame<M: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &M,
) -> Result<(), FrameError> {
    w.write_all(&proto::encode(msg)).await?;
    Ok(())
}

fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    // The nonces must be unpredictable: they come from the kernel's CSPRNG. getrandom(2) only
    // fails before the kernel's pool is initialised at boot; a zero nonce then still works, it
    // just no longer protects against replay.
    let _ = getrandom::fill(&mut n);
    n
}

/// Why a link connection could not be opened or accepted.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The frames themselves were bad.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The handshake took too long.
    #[error("handshake timed out")]
    Timeout,
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
}

/// Accepts link connections until the listener fails or the task is aborted.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: SharedContext,
    events: mpsc::Sender<Event>,
    throttle: Arc<Throttle>,
) {
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accepting a link connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if throttle.allow(peer.ip(), "too many connections") {
                warn!("dropping connection from {peer}: {MAX_INBOUND} connections already open");
            }
            continue;
        };
        let ctx = snapshot(&ctx);
        let events = events.clone();
        let throttle = Arc::clone(&throttle);
        tokio::spawn(async move {
            serve_inbound(stream, peer, ctx, events, throttle).await;
            drop(permit);
        });
    }
}

async fn serve_inbound(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<LinkContext>,
    events: mpsc::Sender<Event>,
    throttle: Arc<Throttle>,
) {
    let _ = stream.set_nodelay(true);
    let node =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, server_handshake(&mut stream, peer, &ctx))
            .await
        {
            Ok(Ok(node)) => node,
            Ok(Err(e)) => {
                let reason = e.to_string();
                if throttle.allow(peer.ip(), &reason) {
                    warn!("refused link connection from {peer}: {reason}");
                }
                return;
            }
            Err(_) => {
                if throttle.allow(peer.ip(), "handshake timed out") {
                    warn!("refused link connection from {peer}: handshake timed out");
                }
                return;
            }
        };
    debug!("link from node {node} ({peer}) authenticated");
    loop {
        match read_frame::<LinkMsg, _>(&mut stream, MAX_LINK_FRAME).await {
            Ok(msg) => {
                if let Err(e) = msg.validate() {
                    warn!("closing link from node {node} ({peer}): {e}");
                    return;
                }
                match msg {
                    LinkMsg::Gossip(g) => {
                        if events
                            .send(Event::Gossip { from: node, msg: g })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    LinkMsg::OpenProcess | LinkMsg::Rejoin { .. } => {
                        // A process connection leaves the runtime for a thread.
                        match stream.into_std().and_then(|s| {
                            s.set_nonblocking(false)?;
                            Ok(s)
                        }) {
                            Ok(stream) => {
                                let ev = match msg {
                                    LinkMsg::Rejoin {
                                        pid,
                                        token,
                                        local_pid,
                                    } => Event::Rejoin {
                                        from: node,
                                        pid,
                                        token,
                                        local_pid,
                                        stream,
                                    },
                                    _ => Event::ProcessIn { from: node, stream },
                                };
                                let _ = events.send(ev).await;
                            }
                            Err(e) => warn!("taking the process connection from node {node}: {e}"),
                        }
                        return;
                    }
                }
            }
            Err(FrameError::Closed) => {
                debug!("link from node {node} ({peer}) closed");
                return;
            }
            Err(e) => {
                warn!("closing link from node {node} ({peer}): {e}");
                return;
            }
        }
    }
}

/// Checks that a connecting peer may be the node it claims to be.
fn check_claim(node: NodeId, peer: SocketAddr, ctx: &LinkContext) -> Result<(), String> {
    if node == ctx.me {
        return Err(format!(
            "claims to be node {node}, which is this node (two nodes with one number?)"
        ));
    }
    if !ctx.map.contains(node) {
        return Err(format!("claims to be node {node}, which is not in our map"));
    }
    let IpAddr::V4(src) = peer.ip() else {
        return Err("connects over IPv6; the map has IPv4 addresses only".into());
    };
    if !ctx.map.addrs_of(node).contains(&src) {
        return Err(format!(
            "claims to be node {node}, but connects from {src}, which the map does not give that node"
        ));
    }
    Ok(())
}

async fn server_handshake(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &LinkContext,
) -> Result<NodeId, LinkError> {
    let mut hs = ServerHandshake::new(ctx.me, nonce());
    let hello = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    let challenge = match hs.on_hello(&ctx.secret, hello, |n| check_claim(n, peer, ctx)) {
        Ok(c) => c,
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = write_frame(stream, &r).await;
            }
            return Err(e.into());
        }
    };
    write_frame(stream, &challenge).await?;
    let proof = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    match hs.on_proof(&ctx.secret, proof) {
        Ok((node, welcome)) => {
            write_frame(stream, &welcome).await?;
            Ok(node)
        }
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = write_frame(stream, &r).await;
            }
            Err(e.into())
        }
    }
}

async fn client_handshake(
    stream: &mut TcpStream,
    to: NodeId,
    ctx: &LinkContext,
) -> Result<(), LinkError> {
    let hs = ClientHandshake::new(ctx.me, to, nonce());
    write_frame(stream, &hs.hello()).await?;
    let challenge = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    match hs.on_challenge(&ctx.secret, challenge) {
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

/// Opens and authenticates a link connection to `to`.
pub async fn connect(to: NodeId, ctx: &LinkContext) -> Result<TcpStream, LinkError> {
    let Some(addr) = ctx.map.addr_of(to) else {
        return Err(HandshakeError::Protocol(format!("node {to} is not in the map")).into());
    };
    let attempt = async {
        let sock = TcpSocket::new_v4().map_err(LinkError::Connect)?;
        // Send from our map address, so the peer can check who we are.
        sock.bind(SocketAddr::new(IpAddr::V4(ctx.my_addr), 0))
            .map_err(LinkError::Connect)?;
        let mut s = sock
            .connect(SocketAddr::new(IpAddr::V4(addr), ctx.port))
            .await
            .map_err(LinkError::Connect)?;
        let _ = s.set_nodelay(true);
        client_handshake(&mut s, to, ctx).await?;
        Ok(s)
    };
    tokio::time::timeout(ctx.connect_timeout + HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| LinkError::Timeout)?
}

/// Opens and authenticates a blocking link connection to `to` and asks it to take a process
/// (for the migration threads, which do not run on the runtime).
pub fn connect_process(to: NodeId, ctx: &LinkContext) -> Result<std::net::TcpStream, LinkError> {
    connect_blocking(to, ctx, &LinkMsg::OpenProcess)
}

/// Opens and authenticates a blocking link connection to `to` and sends `first`, which says
/// what the connection is for.
pub fn connect_blocking(
    to: NodeId,
    ctx: &LinkContext,
    first: &LinkMsg,
) -> Result<std::net::TcpStream, LinkError> {
    let Some(addr) = ctx.map.addr_of(to) else {
        return Err(HandshakeError::Protocol(format!("node {to} is not in the map")).into());
    };
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(LinkError::Connect)?;
    sock.bind(&SocketAddr::new(IpAddr::V4(ctx.my_addr), 0).into())
        .map_err(LinkError::Connect)?;
    sock.connect_timeout(
        &SocketAddr::new(IpAddr::V4(addr), ctx.port).into(),
        ctx.connect_timeout,
    )
    .map_err(LinkError::Connect)?;
    let mut s: std::net::TcpStream = sock.into();
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(LinkError::Connect)?;
    let hs = ClientHandshake::new(ctx.me, to, nonce());
    proto::write_frame(&mut s, &hs.hello())?;
    let challenge = proto::read_frame(&mut s, MAX_HANDSHAKE_FRAME)?;
    match hs.on_challenge(&ctx.secret, challenge) {
        Ok(p) => proto::write_frame(&mut s, &p)?,
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = proto::write_frame(&mut s, &r);
            }
            return Err(e.into());
        }
    }
    hs.on_verdict(proto::read_frame(&mut s, MAX_HANDSHAKE_FRAME)?)?;
    proto::write_frame(&mut s, first)?;
    s.set_read_timeout(None).map_err(LinkError::Connect)?;
    Ok(s)
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

async fn peer_writer(
    to: NodeId,
    mut rx: mpsc::Receiver<Arc<Vec<u8>>>,
    ctx: SharedContext,
    throttle: Arc<Throttle>,
) {
    let mut conn: Option<TcpStream> = None;
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
                Ok(s) => {
                    if was_down {
                        info!("link to node {to} is up again");
                    }
                    was_down = false;
                    conn = Some(s);
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
                            let reason = e.to_string();
                            if throttle.allow(ip, &reason) {
                                warn!("link to node {to} ({ip}) refused: {reason}");
                            }
                        }
                    }
                    was_down = true;
                    continue;
                }
            }
        }
        if let Some(s) = conn.as_mut()
            && let Err(e) = s.write_all(&frame).await
        {
            debug!("link to node {to} broke: {e}");
            conn = None;
        }
    }
}
