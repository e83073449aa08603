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

//!
//! Rooms: [`accept`] (the listener: handshake as server, the claim checked against the map,
//! authenticated connections handed up as [`Inbound`]), [`connect`] (handshake as client,
//! blocking connections for process threads, the outbound gossip writers), [`frame`] (frames on
//! async streams), [`channel`] (a process connection once it leaves the runtime).

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
use mosix_core::load::NodeInfo;
use mosix_core::map::ClusterMap;
use mosix_core::proto::{FrameError, HandshakeError, NONCE_LEN};

pub use accept::accept_loop;
pub use connect::{Outbound, connect, connect_blocking, connect_process};
pub use frame::{read_frame, write_frame};

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
        stream: std::net::TcpStream,
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
        stream: std::net::TcpStream,
    },
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
