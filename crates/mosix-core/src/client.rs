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

/// The largest control request but [`Request::Reconfigure`]: the service reads no more.
pub const MAX_REQUEST: usize = 64 << 10;
/// The largest [`Request::Reconfigure`] (a map is at most 1 MiB, `map::MAX_MAP_BYTES`), which
/// only root and the service's user may send.
pub const MAX_RECONFIGURE: usize = 2 << 20;

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
    /// The file costs (mfscosts(5)) are read again too.
    LoadTune,
    /// The file access costs in use (mfscosts(5)): [`Response::FileTune`].
    GetFileTune,
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
    /// `mosrun -q`: queue the calling process; answers [`Response::Go`] when its turn comes
    /// (the connection stays open meanwhile; closing it leaves the queue).
    Enqueue {
        /// Lower first.
        priority: u16,
        /// The memory the job needs, MiB (0: not declared).
        mem_mb: u64,
        /// Its command line, for `mosq`.
        command: String,
    },
    /// `mosq`: this node's queue, and the heads of the others'; with `all`, the other nodes'
    /// queues too (asked over the link).
    Queue {
        /// Ask the other nodes of the cluster for their queues.
        all: bool,
    },
    /// `mosq delete|run|pri`: change a queued job of this node (its owner or root).
    QueueChange {
        /// The queued process.
        pid: u32,
        /// What to do.
        change: QueueChange,
    },
    /// `mosctl isolate` (`on`) / `rejoin`: close (open) every node of this cluster to the
    /// grid; answers at once with how many guests of other clusters this node asked to leave
    /// (root only).
    Isolate {
        /// Isolate, or rejoin.
        on: bool,
    },
    /// `mosctl opengrid [N]`: open this node to the grid, with at most `max_guests` guests of
    /// other clusters at once (`None`: no limit); guests over the limit leave (root only).
    OpenGrid {
        /// The most guests of other clusters.
        max_guests: Option<u32>,
    },
    /// `mosctl cngpri`: change the priority this node gives a partner cluster, until the
    /// service restarts or reads its partners file again (root only).
    SetPriority {
        /// The partner's name.
        partner: String,
        /// Its new priority, 1..65534 (lower is better).
        priority: u16,
    },
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
        /// Where its checkpoints go, and how often (`mosrun -C`, `-A`, `-N`).
        #[serde(default)]
        checkpoint: Option<CheckpointSpec>,
        /// Without a placement: start it on the node the balancer finds best now (`mosrun -b`;
        /// at home if that is here or the node cannot take it).
        #[serde(default)]
        best: bool,
    },
    /// `mosrun -R FILE`: rebuild the checkpoint `file` (absolute) in the asking process, which
    /// has set up its descriptors, working directory and umask from the checkpoint's record;
    /// `fd` is its connection to the service, closed in the rebuilt process. Answered only if
    /// it cannot be done (`Error`): otherwise the asking process becomes the checkpointed one.
    Restore {
        /// The checkpoint.
        file: String,
        /// The asking process's descriptor of this connection.
        fd: i32,
    },
    /// `migrate PID checkpoint|chkstop|chkexit`: write a checkpoint of a process of this node
    /// (one away comes home for it), then let it go on, stop or end.
    Checkpoint {
        /// The process.
        pid: u32,
        /// What it does once the checkpoint is written.
        then: CheckpointThen,
    },
    /// `migrate`: move a process.
    Migrate {
        /// The process (a pid of this node).
        pid: u32,
        /// Where to.
        to: Target,
        /// Answer when the move is done (otherwise when it has started).
        wait: bool,
        /// Send its memory while it runs (`migrate --live`), whatever its size.
        live: bool,
    },
    /// `mosctl expel`: block arrivals and send every guest home; answer when none is left
    /// (root only).
    Expel,
    /// `mosctl bring`: set lstay and bring every process of this node home; answer when all
    /// are home (root only).
    Bring,
    /// `mosctl closegrid`: close this node to the grid and ask every guest of another
    /// cluster to leave; answers at once with how many were asked (root only; `opengrid` is
    /// [`Request::SetFlag`] of [`crate::Flag::Closed`]).
    CloseGrid,
    /// `mps`: this node's MOSIX processes, and the guests if asked.
    Procs {
        /// Include guests.
        guests: bool,
    },
    /// `mps -A`: the MOSIX processes of every node of this cluster that is up, each node's
    /// asked over the link (its own processes, wherever they run).
    ProcsAll,
    /// `moskillall`: send `sig` to every MOSIX process of user `uid` on every node of this
    /// cluster that is up (the caller must be root or `uid`).
    SignalAll {
        /// The owner of the processes.
        uid: u32,
        /// The signal (1..=64).
        sig: i32,
    },
    /// `migrate PID lock|unlock`: allow or forbid automatic moves of a running process (its
    /// owner or root).
    Lock {
        /// The process (a pid of this node).
        pid: u32,
        /// Locked (no automatic moves) or not.
        on: bool,
    },
    /// How far the move of one of this node's processes has come (`migrate --wait` on a
    /// terminal); open to everyone, like the process list.
    Moving {
        /// The process (a pid of this node).
        pid: u32,
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
    /// Frozen at home: its memory to the freeze area, out of RAM (`migrate PID freeze`).
    Freeze,
    /// Out of the freeze: running at home again (`migrate PID continue`).
    Continue,
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

pub use crate::procs::ProcRow;

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong(ServiceInfo),
    /// Answer to [`Request::Enqueue`]: the job's turn came after `waited_ms`.
    Go {
        /// How long it waited.
        waited_ms: u64,
        /// Where the queue would have it begin (a node with a CPU to spare; `None`: here).
        node: Option<NodeId>,
    },
    /// Answer to [`Request::Queue`].
    Queue(QueueView),
    /// Answer to [`Request::View`].
    View(ClusterView),
    /// A change was made.
    Done,
    /// Answer to [`Request::GetDecay`].
    Decay(DecayTunables),
    /// Answer to [`Request::GetTune`].
    Tune(Overheads),
    /// Answer to [`Request::GetFileTune`].
    FileTune(crate::mfscosts::MfsCosts),
    /// Answer to [`Request::GetConfig`].
    Config(RunningConfig),
    /// The request failed; the text says why.
    Error(String),
    /// A move failed (answer to [`Request::Migrate`] with `wait`, or at once when it could not
    /// start): the kind of failure and what happened.
    MoveFailed(MoveFailure),
    /// Answer to [`Request::Register`].
    Registered,
    /// Answer to [`Request::Checkpoint`].
    Checkpointed(CheckpointTaken),
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
    /// Answer to [`Request::ProcsAll`]: each node's processes (this node first), or why not.
    ProcsAll(Vec<NodeProcs>),
    /// Answer to [`Request::SignalAll`]: how many processes each node signalled, or why not.
    Signalled(Vec<NodeSignalled>),
    /// Answer to [`Request::Expel`] and [`Request::Bring`].
    Moved {
        /// Processes asked to move.
        asked: u32,
        /// Processes still not moved when the answer was given.
        left: u32,
    },
    /// Answer to [`Request::Moving`]: `None` when it is not being sent from here now.
    Moving(Option<crate::procs::MoveProgress>),
}

/// How a process registers with [`Client::register`] (the fields of [`Request::Register`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// No automatic migration.
    pub lock: bool,
    /// Decay of its statistics.
    pub decay: DecayMode,
    /// Where to start it: migrate it there right after its next `execve`.
    pub placement: Option<NodeId>,
    /// With a placement: run at home if the node cannot take it, instead of failing.
    pub fallback_home: bool,
    /// Where its checkpoints go.
    pub checkpoint: Option<CheckpointSpec>,
    /// Without a placement: start on the node the balancer finds best now (`mosrun -b`).
    pub best: bool,
}

/// Where a process's checkpoints go (`mosrun -C FILE -A MINUTES -N MAX`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSpec {
    /// The base name (absolute): the Nth checkpoint is `FILE.N`.
    pub file: String,
    /// Seconds between periodic checkpoints (0: none).
    pub every_s: u32,
    /// How many files to keep, the newest (0: all).
    pub max: u32,
}

/// What a process does once its checkpoint is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointThen {
    /// Goes on (`checkpoint`).
    Continue,
    /// Stops, to be resumed with `SIGCONT` (`chkstop`).
    Stop,
    /// Ends (`chkexit`).
    Exit,
}

/// A checkpoint written ([`Response::Checkpointed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointTaken {
    /// The file.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// How long the process was stopped for it, ms.
    pub stopped_ms: u64,
}

/// Where a process is after [`Client::migrate`] (the answer [`Response::Migrated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrated {
    /// Where it is (0 = home); without `wait`, where it is going.
    pub node: u16,
    /// Whether the move is finished.
    pub done: bool,
}

/// What [`Client::expel`] and [`Client::bring`] did (the answer [`Response::Moved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// Processes asked to move.
    pub asked: u32,
    /// Processes still not moved when the answer was given.
    pub left: u32,
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
    /// Where MFS is mounted (`[mfs] mount`), whether or not it runs.
    #[serde(default)]
    pub mfs_mount: String,
    /// The nodes of the partner clusters (partners(5)), in mosix.map(5) format with
    /// addresses resolved; empty without partners.
    #[serde(default)]
    pub partner_map_text: String,
}

/// What `mosq` changes in a queued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueChange {
    /// Take it out of the queue: the job ends without running (mosrun exits 1, saying so).
    Delete,
    /// Start it now, whatever the queue and the room.
    Run,
    /// Give it another priority.
    Priority(u16),
}

pub use crate::queue::QueueRow;

/// The queue as one node sees it: its own jobs, and the heads of every node's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    /// The answering node.
    pub node: NodeId,
    /// Its queued jobs, first first.
    pub jobs: Vec<QueueRow>,
    /// The other nodes that have queued jobs: how many, and their first.
    pub others: Vec<(NodeId, crate::queue::Head)>,
    /// The queues of the other nodes of this cluster that have jobs queued (asked over the
    /// link when the view was asked with `all`).
    #[serde(default)]
    pub cluster: Vec<NodeQueue>,
}

/// Another node's queue, as it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeQueue {
    /// The node.
    pub node: NodeId,
    /// Its jobs, first first.
    pub jobs: Vec<QueueRow>,
    /// Why its list is missing or partial (it did not answer, ...).
    pub error: Option<String>,
}

/// One node's MOSIX processes, as it answered `mps -A`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProcs {
    /// The node (their home).
    pub node: NodeId,
    /// Its processes.
    pub rows: Vec<ProcRow>,
    /// Why the list is missing (it did not answer, ...).
    pub error: Option<String>,
}

/// What one node did with `moskillall`'s signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSignalled {
    /// The node.
    pub node: NodeId,
    /// How many of its processes were signalled.
    pub count: u32,
    /// Why it did not answer, if it did not.
    pub error: Option<String>,
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
    /// This node's file counters (MFS and DFSA) since its service started.
    #[serde(default)]
    pub files: FileCounters,
    /// This node's cluster (`[grid] name`).
    #[serde(default)]
    pub cluster: String,
    /// Its partner clusters (partners(5)), with what this node sees of each.
    #[serde(default)]
    pub partners: Vec<PartnerView>,
    /// Guests here of this node's own cluster.
    #[serde(default)]
    pub own_guests: u32,
    /// The most guests of other clusters this node runs at once (`None`: no limit).
    #[serde(default)]
    pub max_grid_guests: Option<u32>,
}

/// A partner cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerView {
    /// Its name.
    pub name: String,
    /// Its priority here (lower is better; this cluster's own processes are 0).
    pub priority: u16,
    /// This cluster's processes may go there.
    pub go: bool,
    /// This node takes its processes.
    pub take: bool,
    /// Its processes run here only while no process of this cluster wants the CPU.
    pub idle_only: bool,
    /// Its nodes, and how many of them are up.
    pub nodes: u32,
    /// How many of its nodes are up (heard of recently).
    pub up: u32,
    /// Its processes running here now.
    pub guests_here: u32,
}

/// What a node did with files for the cluster (MFS, DFSA), counted since its service started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounters {
    /// MFS requests this node's files served for other nodes.
    pub mfs_served: u64,
    /// Bytes read and written in them.
    pub mfs_served_bytes: u64,
    /// MFS requests this node's mount sent to other nodes.
    pub mfs_sent: u64,
    /// Bytes read and written in them.
    pub mfs_sent_bytes: u64,
    /// Files of this node opened here for guests (DFSA).
    pub dfsa_opens: u64,
    /// Calls of guests on such files that ran here.
    pub dfsa_calls: u64,
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
    /// The partner cluster it belongs to; `None` for a node of the answering node's cluster.
    #[serde(default)]
    pub cluster: Option<String>,
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
    /// [`ClientError::Refused`] and a [`Response::MoveFailed`] becomes [`ClientError::Move`].
    fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
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

    /// Sends a request and picks the answer it expects; any other answer is
    /// [`ClientError::Unexpected`] naming the request.
    fn ask<T>(
        &mut self,
        req: &Request,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T, ClientError> {
        let answer = self.call(req)?;
        pick(answer).ok_or(ClientError::Unexpected(request_name(req)))
    }

    /// Sends a change, which the service answers with [`Response::Done`].
    fn change(&mut self, req: &Request) -> Result<(), ClientError> {
        self.ask(req, |r| matches!(r, Response::Done).then_some(()))
    }

    /// Who the service is ([`Request::Ping`]).
    pub fn ping(&mut self) -> Result<ServiceInfo, ClientError> {
        self.ask(&Request::Ping, |r| match r {
            Response::Pong(p) => Some(p),
            _ => None,
        })
    }

    /// The cluster view ([`Request::View`]).
    pub fn view(&mut self) -> Result<ClusterView, ClientError> {
        self.ask(&Request::View, |r| match r {
            Response::View(v) => Some(v),
            _ => None,
        })
    }

    /// Sets (`on`) or clears a node flag ([`Request::SetFlag`]; root only).
    pub fn set_flag(&mut self, flag: Flag, on: bool) -> Result<(), ClientError> {
        self.change(&Request::SetFlag { flag, on })
    }

    /// Sets this node's speed, 10000 = standard ([`Request::SetSpeed`]; root only).
    pub fn set_speed(&mut self, speed: u32) -> Result<(), ClientError> {
        self.change(&Request::SetSpeed { speed })
    }

    /// Isolates this node's cluster from the grid, or rejoins it ([`Request::Isolate`]; root
    /// only): how many guests this node asked to leave.
    pub fn isolate(&mut self, on: bool) -> Result<Moved, ClientError> {
        self.ask(&Request::Isolate { on }, moved_answer)
    }

    /// Queues the calling process and waits (without a time limit) until its turn comes
    /// ([`Request::Enqueue`]); how long it waited, and where the queue would have it begin.
    pub fn enqueue(
        &mut self,
        priority: u16,
        mem_mb: u64,
        command: &str,
    ) -> Result<(u64, Option<NodeId>), ClientError> {
        self.set_timeout(None);
        self.ask(
            &Request::Enqueue {
                priority,
                mem_mb,
                command: command.to_owned(),
            },
            |r| match r {
                Response::Go { waited_ms, node } => Some((waited_ms, node)),
                _ => None,
            },
        )
    }

    /// This node's queue and the heads of the others', with `all` the other nodes' queues
    /// ([`Request::Queue`]).
    pub fn queue(&mut self, all: bool) -> Result<QueueView, ClientError> {
        self.ask(&Request::Queue { all }, |r| match r {
            Response::Queue(v) => Some(v),
            _ => None,
        })
    }

    /// Deletes, starts or re-prioritises a queued job ([`Request::QueueChange`]).
    pub fn queue_change(&mut self, pid: u32, change: QueueChange) -> Result<(), ClientError> {
        self.change(&Request::QueueChange { pid, change })
    }

    /// Opens this node to the grid with at most `max_guests` guests of other clusters
    /// ([`Request::OpenGrid`]; root only).
    pub fn open_grid(&mut self, max_guests: Option<u32>) -> Result<(), ClientError> {
        self.change(&Request::OpenGrid { max_guests })
    }

    /// Changes the priority this node gives partner cluster `partner`
    /// ([`Request::SetPriority`]; root only).
    pub fn set_priority(&mut self, partner: &str, priority: u16) -> Result<(), ClientError> {
        self.change(&Request::SetPriority {
            partner: partner.to_owned(),
            priority,
        })
    }

    /// The decay parameters in use ([`Request::GetDecay`]).
    pub fn decay(&mut self) -> Result<DecayTunables, ClientError> {
        self.ask(&Request::GetDecay, |r| match r {
            Response::Decay(d) => Some(d),
            _ => None,
        })
    }

    /// Sets the decay parameters ([`Request::SetDecay`]; root only).
    pub fn set_decay(&mut self, d: DecayTunables) -> Result<(), ClientError> {
        self.change(&Request::SetDecay(d))
    }

    /// The overheads the service uses as migration costs ([`Request::GetTune`]).
    pub fn tune(&mut self) -> Result<Overheads, ClientError> {
        self.ask(&Request::GetTune, tune_answer)
    }

    /// Makes the service read its overheads file again and returns what it now uses
    /// ([`Request::LoadTune`]; root only).
    pub fn load_tune(&mut self) -> Result<Overheads, ClientError> {
        self.ask(&Request::LoadTune, tune_answer)
    }

    /// The file access costs the service uses ([`Request::GetFileTune`]).
    pub fn file_tune(&mut self) -> Result<crate::mfscosts::MfsCosts, ClientError> {
        self.ask(&Request::GetFileTune, |r| match r {
            Response::FileTune(c) => Some(c),
            _ => None,
        })
    }

    /// The running configuration ([`Request::GetConfig`]).
    pub fn config(&mut self) -> Result<RunningConfig, ClientError> {
        self.ask(&Request::GetConfig, |r| match r {
            Response::Config(c) => Some(c),
            _ => None,
        })
    }

    /// Replaces the map of the running service (`setpe -W`, [`Request::Reconfigure`]; root
    /// only): `map_name` says where the text came from, `node` is the number forced with `-p`.
    pub fn reconfigure(
        &mut self,
        map_name: &str,
        map_text: &str,
        node: Option<NodeId>,
    ) -> Result<(), ClientError> {
        self.change(&Request::Reconfigure {
            map_name: map_name.to_owned(),
            map_text: map_text.to_owned(),
            node,
        })
    }

    /// Stops the service (`setpe -off`, [`Request::Shutdown`]; root only). The service may
    /// close the socket before its answer arrives, which shows as [`ClientError::Frame`].
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        self.change(&Request::Shutdown)
    }

    /// Makes the calling process a MOSIX process (`mosrun`, [`Request::Register`]).
    pub fn register(&mut self, r: Registration) -> Result<(), ClientError> {
        let req = Request::Register {
            lock: r.lock,
            decay: r.decay,
            placement: r.placement,
            fallback_home: r.fallback_home,
            checkpoint: r.checkpoint,
            best: r.best,
        };
        self.ask(&req, |r| matches!(r, Response::Registered).then_some(()))
    }

    /// The connection's socket (to move it out of the way of the descriptors a restore puts in
    /// place, with [`Client::replace_socket`]).
    pub fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_fd()
    }

    /// Goes on with `s`, a duplicate of the connection's socket.
    pub fn replace_socket(&mut self, s: UnixStream) {
        self.stream = s;
    }

    /// Asks the service to rebuild checkpoint `file` in this process ([`Request::Restore`]):
    /// returns only if it cannot, with why (otherwise this process is the checkpointed one
    /// from then on).
    pub fn restore(&mut self, file: &str) -> ClientError {
        use std::os::fd::AsRawFd;
        self.set_timeout(None);
        let fd = self.stream.as_raw_fd();
        match self.ask(
            &Request::Restore {
                file: file.to_owned(),
                fd,
            },
            |_| Some(()),
        ) {
            Err(e) => e,
            Ok(()) => {
                ClientError::Refused("the service answered a restore without doing it".into())
            }
        }
    }

    /// Writes a checkpoint of process `pid` ([`Request::Checkpoint`]); answers when it is
    /// written (the client's timeout is lifted: a large process takes its time).
    pub fn checkpoint(
        &mut self,
        pid: u32,
        then: CheckpointThen,
    ) -> Result<CheckpointTaken, ClientError> {
        self.set_timeout(None);
        self.ask(&Request::Checkpoint { pid, then }, |r| match r {
            Response::Checkpointed(t) => Some(t),
            _ => None,
        })
    }

    /// Moves process `pid` of this node ([`Request::Migrate`]); with `wait`, answers when the
    /// move is done. A failed move is [`ClientError::Move`] (or, from an older service,
    /// [`ClientError::Refused`]).
    pub fn migrate(&mut self, pid: u32, to: Target, wait: bool) -> Result<Migrated, ClientError> {
        self.migrate_live(pid, to, wait, false)
    }

    /// [`Client::migrate`], sending its memory while it runs if `live` (otherwise only when
    /// it is larger than the node's `[moves] live_above_mib`).
    pub fn migrate_live(
        &mut self,
        pid: u32,
        to: Target,
        wait: bool,
        live: bool,
    ) -> Result<Migrated, ClientError> {
        self.ask(
            &Request::Migrate {
                pid,
                to,
                wait,
                live,
            },
            |r| match r {
                Response::Migrated { node, done } => Some(Migrated { node, done }),
                _ => None,
            },
        )
    }

    /// Blocks arrivals and sends every guest home; answers when none is left or after about a
    /// minute (`mosctl expel`, [`Request::Expel`]; root only).
    pub fn expel(&mut self) -> Result<Moved, ClientError> {
        self.ask(&Request::Expel, moved_answer)
    }

    /// Sets lstay and brings every process of this node home; answers when all are home or
    /// after about a minute (`mosctl bring`, [`Request::Bring`]; root only).
    pub fn bring(&mut self) -> Result<Moved, ClientError> {
        self.ask(&Request::Bring, moved_answer)
    }

    /// Closes this node to the grid and asks the guests of other clusters to leave
    /// ([`Request::CloseGrid`]; root only): answers at once, `asked` of them, all still here.
    pub fn close_grid(&mut self) -> Result<Moved, ClientError> {
        self.ask(&Request::CloseGrid, moved_answer)
    }

    /// This node's MOSIX processes, and with `guests` the guests running here
    /// ([`Request::Procs`]).
    pub fn procs(&mut self, guests: bool) -> Result<Vec<ProcRow>, ClientError> {
        self.ask(&Request::Procs { guests }, |r| match r {
            Response::Procs(rows) => Some(rows),
            _ => None,
        })
    }

    /// How far the move of `pid` has come, if it is being sent from here now
    /// ([`Request::Moving`]).
    pub fn moving(&mut self, pid: u32) -> Result<Option<crate::procs::MoveProgress>, ClientError> {
        self.ask(&Request::Moving { pid }, |r| match r {
            Response::Moving(m) => Some(m),
            _ => None,
        })
    }

    /// Every node's MOSIX processes ([`Request::ProcsAll`]).
    pub fn procs_all(&mut self) -> Result<Vec<NodeProcs>, ClientError> {
        self.ask(&Request::ProcsAll, |r| match r {
            Response::ProcsAll(n) => Some(n),
            _ => None,
        })
    }

    /// Sends `sig` to every MOSIX process of `uid` in the cluster ([`Request::SignalAll`]).
    pub fn signal_all(&mut self, uid: u32, sig: i32) -> Result<Vec<NodeSignalled>, ClientError> {
        self.ask(&Request::SignalAll { uid, sig }, |r| match r {
            Response::Signalled(n) => Some(n),
            _ => None,
        })
    }

    /// Locks or unlocks a running process against automatic moves ([`Request::Lock`]).
    pub fn lock(&mut self, pid: u32, on: bool) -> Result<(), ClientError> {
        self.ask(&Request::Lock { pid, on }, |r| match r {
            Response::Done => Some(()),
            _ => None,
        })
    }
}

fn tune_answer(r: Response) -> Option<Overheads> {
    match r {
        Response::Tune(t) => Some(t),
        _ => None,
    }
}

fn moved_answer(r: Response) -> Option<Moved> {
    match r {
        Response::Moved { asked, left } => Some(Moved { asked, left }),
        _ => None,
    }
}

/// The request's name, for [`ClientError::Unexpected`].
fn request_name(req: &Request) -> &'static str {
    match req {
        Request::Ping => "Ping",
        Request::View => "View",
        Request::SetFlag { .. } => "SetFlag",
        Request::SetSpeed { .. } => "SetSpeed",
        Request::SetPriority { .. } => "SetPriority",
        Request::OpenGrid { .. } => "OpenGrid",
        Request::Enqueue { .. } => "Enqueue",
        Request::Isolate { .. } => "Isolate",
        Request::Queue { .. } => "Queue",
        Request::QueueChange { .. } => "QueueChange",
        Request::GetDecay => "GetDecay",
        Request::SetDecay(_) => "SetDecay",
        Request::GetTune => "GetTune",
        Request::LoadTune => "LoadTune",
        Request::GetFileTune => "GetFileTune",
        Request::GetConfig => "GetConfig",
        Request::Reconfigure { .. } => "Reconfigure",
        Request::Shutdown => "Shutdown",
        Request::Register { .. } => "Register",
        Request::Checkpoint { .. } => "Checkpoint",
        Request::Restore { .. } => "Restore",
        Request::Migrate { .. } => "Migrate",
        Request::Expel => "Expel",
        Request::Bring => "Bring",
        Request::CloseGrid => "CloseGrid",
        Request::Procs { .. } => "Procs",
        Request::ProcsAll => "ProcsAll",
        Request::SignalAll { .. } => "SignalAll",
        Request::Lock { .. } => "Lock",
        Request::Moving { .. } => "Moving",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::{self, JoinHandle};

    /// A client talking to a fake service: a thread that expects the scripted requests in
    /// order and gives the scripted answers.
    fn fake(script: Vec<(Request, Response)>) -> (Client, JoinHandle<()>) {
        let (mine, mut theirs) = UnixStream::pair().unwrap();
        let service = thread::spawn(move || {
            for (want, answer) in script {
                let got: Request = read_frame(&mut theirs, MAX_CONTROL_FRAME).unwrap();
                assert_eq!(got, want);
                write_frame(&mut theirs, &answer).unwrap();
            }
        });
        let c = Client {
            stream: mine,
            timeout: None,
        };
        (c, service)
    }

    fn node(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    #[test]
    fn every_request_has_its_typed_answer() {
        let tune = Overheads {
            source: "built-in defaults".into(),
            rows: vec![crate::overheads::BUILTIN_DEFAULT],
        };
        let decay = DecayTunables::default();
        let row = ProcRow {
            pid: 42,
            node: 3,
            from: None,
            tty: 0,
            state: 'R',
            cpu_ms: 10,
            cpu_age_ms: 0,
            command: "spin".into(),
            nmigs: 1,
            lock: false,
            cantmove: None,
            remote_pid: Some(7),
            frozen: None,
            uid: None,
        };
        let registration = Registration {
            lock: true,
            decay: DecayMode::Fast,
            placement: Some(node(2)),
            fallback_home: true,
            checkpoint: None,
            best: false,
        };
        let (mut c, service) = fake(vec![
            (
                Request::SetFlag {
                    flag: Flag::Block,
                    on: true,
                },
                Response::Done,
            ),
            (Request::SetSpeed { speed: 20_000 }, Response::Done),
            (Request::GetDecay, Response::Decay(decay)),
            (Request::SetDecay(decay), Response::Done),
            (Request::GetTune, Response::Tune(tune.clone())),
            (Request::LoadTune, Response::Tune(tune.clone())),
            (
                Request::Reconfigure {
                    map_name: "m".into(),
                    map_text: "1 10.0.0.1 2\n".into(),
                    node: Some(node(1)),
                },
                Response::Done,
            ),
            (
                Request::Register {
                    lock: true,
                    decay: DecayMode::Fast,
                    placement: Some(node(2)),
                    fallback_home: true,
                    checkpoint: None,
                    best: false,
                },
                Response::Registered,
            ),
            (
                Request::Migrate {
                    pid: 42,
                    to: Target::Node(node(3)),
                    wait: true,
                    live: false,
                },
                Response::Migrated {
                    node: 3,
                    done: true,
                },
            ),
            (Request::Expel, Response::Moved { asked: 2, left: 0 }),
            (Request::Bring, Response::Moved { asked: 3, left: 1 }),
            (
                Request::Procs { guests: true },
                Response::Procs(vec![row.clone()]),
            ),
            (Request::Shutdown, Response::Done),
        ]);
        c.set_flag(Flag::Block, true).unwrap();
        c.set_speed(20_000).unwrap();
        assert_eq!(c.decay().unwrap(), decay);
        c.set_decay(decay).unwrap();
        assert_eq!(c.tune().unwrap(), tune);
        assert_eq!(c.load_tune().unwrap(), tune);
        c.reconfigure("m", "1 10.0.0.1 2\n", Some(node(1))).unwrap();
        c.register(registration).unwrap();
        assert_eq!(
            c.migrate(42, Target::Node(node(3)), true).unwrap(),
            Migrated {
                node: 3,
                done: true
            }
        );
        assert_eq!(c.expel().unwrap(), Moved { asked: 2, left: 0 });
        assert_eq!(c.bring().unwrap(), Moved { asked: 3, left: 1 });
        assert_eq!(c.procs(true).unwrap(), vec![row]);
        c.shutdown().unwrap();
        service.join().unwrap();
    }

    #[test]
    fn a_wrong_answer_names_the_request() {
        let (mut c, service) = fake(vec![
            (Request::Procs { guests: false }, Response::Done),
            (Request::GetTune, Response::Registered),
            (Request::Shutdown, Response::Procs(Vec::new())),
        ]);
        let e = c.procs(false).unwrap_err();
        assert!(matches!(e, ClientError::Unexpected("Procs")), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the MOSIX service gave an unexpected answer to Procs"
        );
        assert!(matches!(
            c.tune().unwrap_err(),
            ClientError::Unexpected("GetTune")
        ));
        assert!(matches!(
            c.shutdown().unwrap_err(),
            ClientError::Unexpected("Shutdown")
        ));
        service.join().unwrap();
    }

    #[test]
    fn refusals_and_failed_moves_are_errors_of_their_kind() {
        let gone = MoveFailure::Gone {
            pid: 42,
            detail: "it exited".into(),
        };
        let migrate = Request::Migrate {
            pid: 42,
            to: Target::Home,
            wait: true,
            live: false,
        };
        let (mut c, service) = fake(vec![
            (migrate.clone(), Response::MoveFailed(gone.clone())),
            (
                migrate,
                Response::Error("process 42 is not a MOSIX process".into()),
            ),
            (
                Request::Expel,
                Response::Error("only root may do that".into()),
            ),
        ]);
        match c.migrate(42, Target::Home, true).unwrap_err() {
            ClientError::Move(f) => {
                assert_eq!(f, gone);
                assert_eq!(f.kind(), "gone");
                assert_eq!(f.to_string(), "process 42 is gone: it exited");
            }
            e => panic!("{e:?}"),
        }
        let e = c.migrate(42, Target::Home, true).unwrap_err();
        assert_eq!(e.to_string(), "process 42 is not a MOSIX process");
        assert!(matches!(c.expel().unwrap_err(), ClientError::Refused(_)));
        service.join().unwrap();
    }
}
