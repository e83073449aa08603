//! The link between node services: authenticated TCP connections carrying sealed [`LinkMsg`]
//! frames.
//!
//! Each node listens on its own map address (port 4249 by default). To send to a peer, a node
//! opens (and keeps, while it is used) one outbound connection from its own map address, so the
//! peer sees the address the map gives the sender; the peer checks that the claimed node number
//! owns that address. Inbound connections only receive; outbound ones only send. Every
//! connection starts with the challenge–response handshake of [`mosix_core::proto`], and every
//! frame after it is sealed with the connection's keys ([`mosix_core::proto::seal`]); a wrong
//! secret, a bad version, a malformed, oversized or unauthentic frame closes that one
//! connection with a logged reason and touches nothing else.
//!
//! Floods are met before they cost much: a connection from an address that is not in the map
//! is closed at once; one from a member takes one of [`MAX_PREAUTH`] slots, at most
//! [`MAX_PREAUTH_PER_SOURCE`] per address, until its handshake ends (within
//! [`HANDSHAKE_TIMEOUT`]); an authenticated gossip connection that stays silent for
//! [`INBOUND_IDLE`] is closed. Log lines about peers are rate-limited by their [`Trouble`] and
//! the source address ([`Throttle`]), in bounded memory.
//!
//! Sends never wait: gossip is idempotent, so a message for a peer that is slow or unreachable
//! is simply dropped.
//!
//! Rooms: [`accept`] (the listener: admission, handshake as server, the claim checked against
//! the map, authenticated connections handed up as [`Inbound`]), [`connect`] (handshake as
//! client, blocking connections for process threads, the outbound gossip writers), [`frame`]
//! (frames on async streams), [`channel`] (a process connection once it leaves the runtime).

pub mod accept;
pub mod channel;
pub mod connect;
pub mod frame;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::gossip::GossipMsg;
use mosix_core::grid::Grid;
use mosix_core::load::NodeInfo;
use mosix_core::map::ClusterMap;
use mosix_core::proto::{FrameError, HandshakeError, NONCE_LEN, Protection};

pub use accept::accept_loop;
pub use channel::Conn;
pub use connect::{Outbound, connect, connect_blocking, connect_process};
pub use frame::{read_frame, write_frame};

/// How long a handshake may take, the first frame after it included, before the connection is
/// dropped (two round trips on a local network take well under a millisecond).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// An outbound connection unused this long is closed.
pub const IDLE_CLOSE: Duration = Duration::from_secs(30);
/// An inbound gossip connection silent this long is closed: its sender closes it itself after
/// [`IDLE_CLOSE`] without use, so a longer silence means a peer that went away or misbehaves.
pub const INBOUND_IDLE: Duration = Duration::from_secs(45);
/// The most authenticated inbound gossip connections served at once.
pub const MAX_INBOUND: usize = 1024;
/// The most connections in their handshake at once, from all sources.
pub const MAX_PREAUTH: usize = 256;
/// The most connections in their handshake at once from one address.
pub const MAX_PREAUTH_PER_SOURCE: usize = 16;
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
    /// What the link does to frames after the handshake (`[link] encrypt`).
    pub protection: Protection,
    /// The partner clusters (`MOSIX_ETC/mosix/partners`): their maps and the secrets of the
    /// partnerships.
    pub grid: Grid,
    /// How long a cut process connection may last before the process is given up
    /// (`[link] resume_grace_s`; zero: at once).
    pub resume_grace: Duration,
}

impl LinkContext {
    /// The main address of a node of this cluster or of a partner.
    pub fn addr_of(&self, n: NodeId) -> Option<Ipv4Addr> {
        self.map
            .addr_of(n)
            .or_else(|| self.grid.partner_of(n).and_then(|p| p.map.addr_of(n)))
    }

    /// Every address of a node of this cluster or of a partner.
    pub fn addrs_of(&self, n: NodeId) -> Vec<Ipv4Addr> {
        if self.map.contains(n) {
            self.map.addrs_of(n)
        } else {
            self.grid
                .partner_of(n)
                .map(|p| p.map.addrs_of(n))
                .unwrap_or_default()
        }
    }

    /// The node of this cluster or of a partner that has address `a`.
    pub fn node_of(&self, a: Ipv4Addr) -> Option<NodeId> {
        self.map
            .node_of(a)
            .or_else(|| self.grid.node_of(a).map(|(n, _)| n))
    }

    /// The secret a connection with node `n` is keyed by: the cluster's own within the
    /// cluster, the partnership's with a partner's node; `None` for a node nobody named.
    pub fn secret_for(&self, n: NodeId) -> Option<&Secret> {
        if self.map.contains(n) {
            Some(&self.secret)
        } else {
            self.grid.partner_of(n).map(|p| &p.secret)
        }
    }
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

/// The kinds of trouble a peer can cause, which the log is rate-limited by (never by text a
/// peer chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trouble {
    /// A connection from an address the map does not have.
    NotMember,
    /// Too many connections in their handshake from one address.
    SourceBusy,
    /// Too many connections in their handshake, or authenticated, overall.
    Busy,
    /// A handshake that did not end in time.
    HandshakeTimeout,
    /// An authenticated connection that went silent.
    Idle,
    /// Not a MOSIX peer (bad magic).
    BadMagic,
    /// A protocol version we do not speak.
    BadVersion,
    /// A reserved header byte that is not zero.
    BadHeader,
    /// A frame longer than its channel's limit.
    TooLong,
    /// A frame cut short.
    Truncated,
    /// A payload that does not decode, or breaks a rule.
    Malformed,
    /// A frame that failed authentication.
    Unauthentic,
    /// A peer without the cluster secret.
    WrongSecret,
    /// A peer whose `[link] encrypt` differs.
    Protection,
    /// A claim we do not accept (node number, address), or messages out of order.
    Claim,
    /// A peer that refused us.
    Refused,
    /// An I/O error, or anything else.
    Other,
    /// The control socket: too many connections, a bad or oversized request, a slow client.
    Control,
}

impl Trouble {
    /// The kind of a frame error.
    pub fn of_frame(e: &FrameError) -> Trouble {
        match e {
            FrameError::BadMagic(_) => Trouble::BadMagic,
            FrameError::BadVersion(_) => Trouble::BadVersion,
            FrameError::Reserved(_) => Trouble::BadHeader,
            FrameError::TooLong { .. } => Trouble::TooLong,
            FrameError::Truncated => Trouble::Truncated,
            FrameError::Malformed(_) | FrameError::Trailing(_) | FrameError::Invalid(_) => {
                Trouble::Malformed
            }
            FrameError::Unauthentic(_) => Trouble::Unauthentic,
            FrameError::Closed
            | FrameError::Exhausted
            | FrameError::Sealing
            | FrameError::Io(_) => Trouble::Other,
        }
    }

    /// Its name in the metrics (`mosix_link_troubles_total{trouble}`).
    pub fn label(self) -> &'static str {
        match self {
            Trouble::NotMember => "not-member",
            Trouble::SourceBusy => "source-busy",
            Trouble::Busy => "busy",
            Trouble::HandshakeTimeout => "handshake-timeout",
            Trouble::Idle => "idle",
            Trouble::BadMagic => "bad-magic",
            Trouble::BadVersion => "bad-version",
            Trouble::BadHeader => "bad-header",
            Trouble::TooLong => "too-long",
            Trouble::Truncated => "truncated",
            Trouble::Malformed => "malformed",
            Trouble::Unauthentic => "unauthentic",
            Trouble::WrongSecret => "wrong-secret",
            Trouble::Protection => "protection",
            Trouble::Claim => "claim",
            Trouble::Refused => "refused",
            Trouble::Other => "other",
            Trouble::Control => "control",
        }
    }

    /// Whether it is an authentication failure: no secret, a forged frame, a false claim.
    pub fn is_auth(self) -> bool {
        matches!(
            self,
            Trouble::Unauthentic | Trouble::WrongSecret | Trouble::Claim
        )
    }

    /// The kind of a link error.
    pub fn of_link(e: &LinkError) -> Trouble {
        match e {
            LinkError::Frame(f) => Trouble::of_frame(f),
            LinkError::Handshake(HandshakeError::WrongSecret) => Trouble::WrongSecret,
            LinkError::Handshake(HandshakeError::Protection { .. }) => Trouble::Protection,
            LinkError::Handshake(HandshakeError::Refused(_)) => Trouble::Refused,
            LinkError::Handshake(HandshakeError::Protocol(_)) => Trouble::Claim,
            LinkError::Timeout => Trouble::HandshakeTimeout,
            LinkError::Idle(_) => Trouble::Idle,
            LinkError::Connect(_) | LinkError::Random(_) => Trouble::Other,
        }
    }
}

/// How long a repeated line is held back.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// The most (trouble, address) pairs remembered; beyond it, new addresses share one line per
/// trouble.
pub const THROTTLE_ENTRIES: usize = 1024;

/// Limits a repeated log line of one [`Trouble`] about one address to once a
/// [`THROTTLE_WINDOW`] (a peer with the wrong secret retries every second, a flood retries
/// thousands of times), and says how many were held back. Addresses outside the map
/// ([`Trouble::NotMember`]) share one line however many there are, so a flood from many
/// addresses logs no more than one from one; members are as many as the map has. Memory is
/// bounded by [`THROTTLE_ENTRIES`].
#[derive(Debug, Default)]
pub struct Throttle {
    last: Mutex<HashMap<(Trouble, IpAddr), (Instant, u64)>>,
}

impl Throttle {
    /// Whether a line about `trouble` from `peer` should be logged now: `Some(n)` with the
    /// number of such lines held back since the last one, or `None` to hold this one back.
    /// Every call is counted in the metrics, held back or not.
    pub fn allow(&self, trouble: Trouble, peer: IpAddr) -> Option<u64> {
        mosix_core::metrics::global().link_trouble(trouble.label(), trouble.is_auth());
        self.allow_at(trouble, peer, Instant::now())
    }

    fn allow_at(&self, trouble: Trouble, peer: IpAddr, now: Instant) -> Option<u64> {
        let Ok(mut m) = self.last.lock() else {
            return Some(0);
        };
        let anyone = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let mut key = (
            trouble,
            if trouble == Trouble::NotMember {
                anyone
            } else {
                peer
            },
        );
        if !m.contains_key(&key) && m.len() >= THROTTLE_ENTRIES {
            m.retain(|_, (t, _)| now.duration_since(*t) < THROTTLE_WINDOW);
            if m.len() >= THROTTLE_ENTRIES {
                // Too many addresses: they share one line per trouble.
                key = (trouble, anyone);
            }
        }
        match m.get_mut(&key) {
            Some((t, held)) if now.duration_since(*t) < THROTTLE_WINDOW => {
                *held += 1;
                None
            }
            Some((t, held)) => {
                let n = *held;
                *t = now;
                *held = 0;
                Some(n)
            }
            None => {
                m.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// " (N more like it held back)" when N > 0, for a throttled line.
pub fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it held back)")
    }
}

/// Text a peer chose (a refusal's reason), made safe for one log line: control characters
/// replaced, at most 200 characters.
pub fn peer_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// What an authenticated inbound connection brings, handed to the node service.
#[derive(Debug)]
pub enum Inbound {
    /// A gossip message from an authenticated peer.
    Gossip {
        /// The peer.
        from: NodeId,
        /// The message.
        msg: GossipMsg<NodeInfo>,
    },
    /// A connection that carries a migrating process.
    Process {
        /// The sending node.
        from: NodeId,
        /// The connection, now blocking.
        stream: Conn,
    },
    /// A connection from the destination of a direct move of one of this node's processes
    /// ([`mosix_core::proto::LinkMsg::Rejoin`]).
    Rejoin {
        /// The destination.
        from: NodeId,
        /// The process's pid here.
        pid: u32,
        /// The token of the move.
        token: u64,
        /// Its pid at the destination.
        local_pid: u32,
        /// The connection, now blocking.
        stream: Conn,
    },
    /// A connection that carries file requests of the MOSIX File System
    /// ([`mosix_core::proto::LinkMsg::OpenFiles`]).
    Files {
        /// The asking node.
        from: NodeId,
        /// Its session.
        session: u64,
        /// The connection, now blocking.
        stream: Conn,
    },
    /// A connection that asks for this node's queue
    /// ([`mosix_core::proto::LinkMsg::ListQueue`]).
    ListQueue {
        /// The asking node.
        from: NodeId,
        /// The connection, now blocking.
        stream: Conn,
    },
    /// A connection that asks something of this node's processes
    /// ([`mosix_core::proto::LinkMsg::Ask`]).
    Ask {
        /// The asking node.
        from: NodeId,
        /// What it asks.
        ask: mosix_core::proto::Ask,
        /// The connection, now blocking.
        stream: Conn,
    },
}

/// Two ends of a process connection inside this node, over loopback TCP, sealed (authenticated)
/// with keys of their own (a random secret, never stored): for a process that goes to a stand-in
/// on this very node (a frozen process's keeper) by the same protocol as to another node. The
/// first is the sending (client) end.
pub fn local_pair(me: NodeId) -> Result<(Conn, Conn), LinkError> {
    use mosix_core::proto::Side;
    use mosix_core::proto::seal::{Protection, Transcript};
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .map_err(LinkError::Connect)?;
    let client = std::net::TcpStream::connect(listener.local_addr().map_err(LinkError::Connect)?)
        .map_err(LinkError::Connect)?;
    let (server, _) = listener.accept().map_err(LinkError::Connect)?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| LinkError::Random(e.to_string()))?;
    let secret = mosix_core::config::Secret::new(&key)
        .map_err(|e| LinkError::Random(format!("a local secret: {e}")))?;
    let t = Transcript {
        client: me,
        server: me,
        nonce_c: nonce()?,
        nonce_s: nonce()?,
        protection: Protection::Authenticated,
    };
    Ok((
        Conn::new(client, t.session(&secret, Side::Client)),
        Conn::new(server, t.session(&secret, Side::Server)),
    ))
}

/// A fresh handshake nonce from the kernel's CSPRNG. The nonces make each connection's keys its
/// own (a recorded connection cannot be replayed), so without one there is no connection.
fn nonce() -> Result<[u8; NONCE_LEN], LinkError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| LinkError::Random(e.to_string()))?;
    Ok(n)
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
    /// The peer said nothing for too long.
    #[error("silent for {0:?}")]
    Idle(Duration),
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// No random nonce could be had.
    #[error("no random numbers for the handshake: {0}")]
    Random(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_keys_on_the_trouble_and_the_address() {
        let t = Throttle::default();
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let b: IpAddr = Ipv4Addr::new(10, 0, 0, 2).into();
        let now = Instant::now();
        assert_eq!(t.allow_at(Trouble::WrongSecret, a, now), Some(0));
        assert_eq!(t.allow_at(Trouble::WrongSecret, a, now), None);
        assert_eq!(t.allow_at(Trouble::WrongSecret, a, now), None);
        assert_eq!(t.allow_at(Trouble::Unauthentic, a, now), Some(0));
        assert_eq!(t.allow_at(Trouble::WrongSecret, b, now), Some(0));
        let later = now + THROTTLE_WINDOW;
        assert_eq!(t.allow_at(Trouble::WrongSecret, a, later), Some(2));
        assert_eq!(t.allow_at(Trouble::WrongSecret, a, later), None);
    }

    #[test]
    fn the_throttle_stays_bounded_under_many_addresses() {
        let t = Throttle::default();
        let now = Instant::now();
        let mut logged = 0;
        for i in 0..50_000u32 {
            let ip: IpAddr = Ipv4Addr::from(0x0a00_0000 + i).into();
            if t.allow_at(Trouble::WrongSecret, ip, now).is_some() {
                logged += 1;
            }
            // Strangers share one line.
            let _ = t.allow_at(Trouble::NotMember, ip, now);
        }
        assert!(t.last.lock().unwrap().len() <= THROTTLE_ENTRIES + 1);
        // One line per address until the table is full, then one for all the others.
        assert_eq!(logged, THROTTLE_ENTRIES);
        let later = now + THROTTLE_WINDOW;
        let ip: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        assert_eq!(t.allow_at(Trouble::NotMember, ip, later), Some(49_999));
    }

    #[test]
    fn troubles_come_from_the_error_not_its_text() {
        let refused =
            |r: &str| Trouble::of_link(&LinkError::Handshake(HandshakeError::Refused(r.into())));
        assert_eq!(refused("a"), refused("b"));
        assert_ne!(
            Trouble::of_frame(&FrameError::BadMagic(*b"GE")),
            Trouble::of_frame(&FrameError::BadVersion(9))
        );
        assert_eq!(
            Trouble::of_frame(&FrameError::Malformed("x".into())),
            Trouble::of_frame(&FrameError::Malformed("y".into()))
        );
    }

    /// A sealed pair of process connection ends whose bytes pass through a relay that holds
    /// them back for `pause` after the first `first` bytes.
    fn held_back_pair(first: usize, pause: Duration) -> (Conn, Conn) {
        use mosix_core::proto::Side;
        use mosix_core::proto::seal::{Protection, Transcript};
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let near = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let far = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let client = TcpStream::connect(near.local_addr().unwrap()).unwrap();
        let (mut inbound, _) = near.accept().unwrap();
        let mut outbound = TcpStream::connect(far.local_addr().unwrap()).unwrap();
        let (server, _) = far.accept().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut passed = 0;
            let mut paused = false;
            loop {
                let want = if paused {
                    buf.len()
                } else {
                    buf.len().min(first - passed)
                };
                let n = match inbound.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if outbound.write_all(&buf[..n]).is_err() {
                    return;
                }
                passed += n;
                if !paused && passed == first {
                    std::thread::sleep(pause);
                    paused = true;
                }
            }
        });
        let secret = mosix_core::config::Secret::new(&[7u8; 32]).unwrap();
        let me = mosix_core::NodeId::new(1).unwrap();
        let t = Transcript {
            client: me,
            server: me,
            nonce_c: nonce().unwrap(),
            nonce_s: nonce().unwrap(),
            protection: Protection::Authenticated,
        };
        (
            Conn::new(client, t.session(&secret, Side::Client)),
            Conn::new(server, t.session(&secret, Side::Server)),
        )
    }

    /// A page run whose last bytes arrive after the reader went to sleep, with less than the
    /// receive low-water mark after them (the last run of a move, then `End`): the reader is
    /// woken when they arrive. It used to sleep until its read timeout (the 10 s stops of live
    /// moves). The bound is the timeout, far above the pause.
    #[test]
    fn the_tail_of_a_page_run_wakes_its_reader() {
        const RUN: usize = 1 << 20;
        let pause = Duration::from_millis(300);
        // All but the last 100 KiB of the run get through at once.
        let (a, b) = held_back_pair(RUN - 100 * 1024, pause);
        let (tx, _arx) = channel::split(a).unwrap();
        let (_btx, mut rx) = channel::split(b).unwrap();
        let timeout = Duration::from_secs(20);
        rx.socket().set_read_timeout(Some(timeout)).unwrap();
        let mut run: Vec<u8> = (0..RUN).map(|i| (i % 251) as u8).collect();
        let sent = run.clone();
        let sender = std::thread::spawn(move || {
            tx.send_run(3, 8192, &mut run).unwrap();
            tx.send(&mosix_core::proto::ProcMsg::End).unwrap();
            tx
        });
        let begun = Instant::now();
        let Ok(mosix_core::proto::ProcMsg::Pages { vma, offset, len }) = rx.recv() else {
            panic!("no run");
        };
        assert_eq!((vma, offset, len as usize), (3, 8192, RUN));
        let mut got = vec![0u8; RUN];
        rx.recv_raw(&mut got).unwrap();
        let took = begun.elapsed();
        assert!(got == sent, "the run arrived changed");
        assert!(
            matches!(rx.recv(), Ok(mosix_core::proto::ProcMsg::End)),
            "no End after the run"
        );
        assert!(
            took < timeout / 2,
            "the reader slept until its read timeout: {took:?}"
        );
        drop(sender.join().unwrap());
    }

    #[test]
    fn peer_text_is_one_bounded_line() {
        assert_eq!(peer_text("wrong\nsecret"), "wrong?secret");
        let long = "x".repeat(1000);
        assert_eq!(peer_text(&long).chars().count(), 201);
    }
}
