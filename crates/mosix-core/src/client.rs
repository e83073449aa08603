//! The local API of the node service: requests the tools send over the control socket
//! (`$MOSIX_RUNDIR/mosix.sock`), the answers, and a small blocking client.
//!
//! The socket speaks the frame codec of [`crate::proto`] with [`MAX_CONTROL_FRAME`] as the
//! limit. Queries are open to every local user; changes need root (the service checks the
//! caller's credentials on the socket).

use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{DecayTunables, Paths};
use crate::load::Figures;
pub use crate::moves::MoveFailure;
use crate::node::{Flag, NodeId, Status};
use crate::overheads::Overheads;
use crate::proto::{FrameError, MAX_CONTROL_FRAME, read_frame, write_frame};

/// A request to the node service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Is the service there, and who is it?
    Ping,
    /// Everything this node knows about every node of the map.
    View,
    /// Set or clear one of the node flags (root only).
    SetFlag {
        /// The flag.
        flag: Flag,
        /// Set (true) or clear.
        on: bool,
    },
    /// Set this node's speed (root only).
    SetSpeed {
        /// The new speed (10000 = standard).
        speed: u32,
    },
    /// The decay parameters.
    GetDecay,
    /// Set the decay parameters (root only).
    SetDecay(DecayTunables),
    /// The overheads the service uses as migration costs.
    GetTune,
    /// Read the overheads file again (after `tune` wrote it; root only); the answer is
    /// [`Response::Tune`] with what is now in use, or an error naming what is wrong with the file.
    LoadTune,
    /// The running configuration.
    GetConfig,
    /// Replace the map of the running service (`setpe -W`; root only).
    Reconfigure {
        /// Where the map came from, for messages.
        map_name: String,
        /// The map text.
        map_text: String,
        /// The node number forced with `-p`.
        node: Option<NodeId>,
    },
    /// Stop the service (`setpe -off`; root only).
    Shutdown,
    /// `mosrun`: make the calling process a MOSIX process (only a process can register itself).
    Register {
        /// No automatic migration.
        lock: bool,
        /// Decay of its statistics.
        decay: DecayMode,
        /// Where to start it: migrate it there right after its next `execve`.
        placement: Option<NodeId>,
        /// With a placement: run at home if the node cannot take it, instead of failing.
        fallback_home: bool,
    },
    /// `migrate`: move a process.
    Migrate {
        /// The process (a pid of this node).
        pid: u32,
        /// Where to.
        to: Target,
        /// Answer when the move is done (otherwise when it has started).
        wait: bool,
    },
    /// `mosctl expel`: block arrivals and send every guest home; answer when none is left
    /// (root only).
    Expel,
    /// `mosctl bring`: set lstay and bring every process of this node home; answer when all
    /// are home (root only).
    Bring,
    /// `mps`: this node's MOSIX processes, and the guests if asked.
    Procs {
        /// Include guests.
        guests: bool,
    },
}

/// Where `migrate` sends a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A node.
    Node(NodeId),
    /// Its home node.
    Home,
    /// Where the balancer thinks best now.
    Balance,
}

/// How fast a process's statistics decay (`mosrun -n`, `-s`, `-f`; `-c`/`-i` hint CPU- or
/// I/O-bound processes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecayMode {
    /// The node's slow decay (the default).
    #[default]
    Slow,
    /// The node's fast decay.
    Fast,
    /// No decay.
    None,
    /// Declared CPU-bound.
    CpuBound,
    /// Declared I/O-bound.
    IoBound,
}

/// One process as `mps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRow {
    /// Its pid at home.
    pub pid: u32,
    /// Where it runs: 0 = here, N = node N.
    pub node: u16,
    /// For a guest: its home node.
    pub from: Option<u16>,
    /// Controlling terminal (the kernel's tty_nr; 0 = none).
    pub tty: i32,
    /// State letter.
    pub state: char,
    /// CPU time used, wherever, in ms (for a guest: here).
    pub cpu_ms: u64,
    /// How old `cpu_ms` is, ms: a process on another node reports its CPU time home about once
    /// a second; 0 for a process measured as the answer was made.
    pub cpu_age_ms: u64,
    /// Command line.
    pub command: String,
    /// Moves so far.
    pub nmigs: u32,
    /// No automatic migration.
    pub lock: bool,
    /// Why it cannot move, if it cannot.
    pub cantmove: Option<String>,
    /// Its pid on the node it runs on (remote), or at this node (guest).
    pub remote_pid: Option<u32>,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong(ServiceInfo),
    /// Answer to [`Request::View`].
    View(ClusterView),
    /// A change was made.
    Done,
    /// Answer to [`Request::GetDecay`].
    Decay(DecayTunables),
    /// Answer to [`Request::GetTune`].
    Tune(Overheads),
    /// Answer to [`Request::GetConfig`].
    Config(RunningConfig),
    /// The request failed; the text says why.
    Error(String),
    /// A move failed (answer to [`Request::Migrate`] with `wait`, or at once when it could not
    /// start): the kind of failure and what happened.
    MoveFailed(MoveFailure),
    /// Answer to [`Request::Register`].
    Registered,
    /// Answer to [`Request::Migrate`]: where the process is now (0 = home), or, without
    /// `wait`, that the move started.
    Migrated {
        /// Where it is (0 = home).
        node: u16,
        /// Whether the move is finished.
        done: bool,
    },
    /// Answer to [`Request::Procs`].
    Procs(Vec<ProcRow>),
    /// Answer to [`Request::Expel`] and [`Request::Bring`].
    Moved {
        /// Processes asked to move.
        asked: u32,
        /// Processes still not moved when the answer was given.
        left: u32,
    },
}

/// Who the service is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// This node's number.
    pub node: NodeId,
    /// The service's pid.
    pub pid: u32,
    /// The suite's version.
    pub version: String,
}

/// The configuration the service runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningConfig {
    /// This node's number.
    pub node: NodeId,
    /// The map, in mosix.map(5) format with addresses resolved.
    pub map_text: String,
    /// Where the map was read from.
    pub map_name: String,
    /// The link port.
    pub port: u16,
    /// The gossip interval.
    pub interval_ms: u64,
    /// Entries per gossip message.
    pub window: usize,
    /// Age after which a node is down.
    pub dead_after_ms: u64,
    /// What the node measures: "machine" or the cgroup path.
    pub measuring: String,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that answers.
    pub me: NodeId,
    /// The gossip interval.
    pub interval_ms: u64,
    /// Age after which a node is down.
    pub dead_after_ms: u64,
    /// Every node of the map, in node order.
    pub nodes: Vec<NodeView>,
}

/// One node as seen from another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The node.
    pub node: NodeId,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Whether this is the answering node itself.
    pub is_self: bool,
    /// Whether it is up.
    pub up: bool,
    /// Age of the freshest information about it, if any.
    pub age_ms: Option<u64>,
    /// Status bits: CONF, UP, and the last known flags.
    pub status: Status,
    /// The last known figures; `None` if never heard of or quiet.
    pub figures: Option<Figures>,
}

impl ClusterView {
    /// The view of one node.
    pub fn get(&self, n: NodeId) -> Option<&NodeView> {
        self.nodes
            .binary_search_by_key(&n, |v| v.node)
            .ok()
            .map(|i| &self.nodes[i])
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No service answers on the socket.
    #[error(
        "this node is not configured: no MOSIX service answers at {}; start one with setpe -w ({source})",
        socket.display()
    )]
    NotConfigured {
        /// The socket path.
        socket: PathBuf,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// The service did not answer in time.
    #[error("the MOSIX service did not answer within {0} seconds")]
    NoAnswer(u64),
    /// The conversation broke off.
    #[error("talking to the MOSIX service: {0}")]
    Frame(#[from] FrameError),
    /// The service refused the request.
    #[error("{0}")]
    Refused(String),
    /// A move failed.
    #[error(transparent)]
    Move(MoveFailure),
    /// The service answered something unexpected.
    #[error("the MOSIX service gave an unexpected answer to {0}")]
    Unexpected(&'static str),
}

/// A connection to the local node service.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    timeout: Option<Duration>,
}

impl Client {
    /// Connects to the service of the node named by the environment.
    pub fn connect(paths: &Paths) -> Result<Client, ClientError> {
        let socket = paths.socket();
        let stream = UnixStream::connect(&socket)
            .map_err(|source| ClientError::NotConfigured { socket, source })?;
        let mut c = Client {
            stream,
            timeout: None,
        };
        c.set_timeout(Some(Self::TIMEOUT));
        Ok(c)
    }

    /// How long an answer may take by default.
    pub const TIMEOUT: Duration = Duration::from_secs(30);

    /// Sets how long an answer may take (`None`: as long as it takes; the service bounds its
    /// own waits).
    pub fn set_timeout(&mut self, t: Option<Duration>) {
        // Timeouts only fail for a zero duration.
        let _ = self.stream.set_read_timeout(t);
        let _ = self.stream.set_write_timeout(t);
        self.timeout = t;
    }

    /// Sends one request and waits for the answer; a [`Response::Error`] becomes
    /// [`ClientError::Refused`].
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let timed_out = |e: FrameError, t: Option<Duration>| match (&e, t) {
            (FrameError::Io(io), Some(t))
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::NoAnswer(t.as_secs())
            }
            _ => ClientError::Frame(e),
        };
        write_frame(&mut self.stream, req).map_err(|e| timed_out(e, self.timeout))?;
        match read_frame::<Response, _>(&mut self.stream, MAX_CONTROL_FRAME)
            .map_err(|e| timed_out(e, self.timeout))?
        {
            Response::Error(e) => Err(ClientError::Refused(e)),
            Response::MoveFailed(f) => Err(ClientError::Move(f)),
            r => Ok(r),
        }
    }

    /// The cluster view.
    pub fn view(&mut self) -> Result<ClusterView, ClientError> {
        match self.call(&Request::View)? {
            Response::View(v) => Ok(v),
            _ => Err(ClientError::Unexpected("View")),
        }
    }

    /// The running configuration.
    pub fn config(&mut self) -> Result<RunningConfig, ClientError> {
        match self.call(&Request::GetConfig)? {
            Response::Config(c) => Ok(c),
            _ => Err(ClientError::Unexpected("GetConfig")),
        }
    }

    /// Who the service is.
    pub fn ping(&mut self) -> Result<ServiceInfo, ClientError> {
        match self.call(&Request::Ping)? {
            Response::Pong(p) => Ok(p),
            _ => Err(ClientError::Unexpected("Ping")),
        }
    }

    /// Sends a request that answers [`Response::Done`].
    pub fn change(&mut self, req: &Request) -> Result<(), ClientError> {
        match self.call(req)? {
            Response::Done => Ok(()),
            _ => Err(ClientError::Unexpected("a change")),
        }
    }
}
