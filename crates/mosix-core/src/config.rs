//! Where the files live, the optional tunables of `mosix.toml`, and the cluster secret.
//!
//! Two environment variables let several nodes live on one machine: `MOSIX_ETC` (default `/etc`)
//! holds `mosix.map`, `mosix/secret`, `mosix/mosix.toml`, `overheads` and `mfscosts`;
//! `MOSIX_RUNDIR` (default `/run/mosix`) holds the node service's control socket, log and state.
//! Every tool and the service go through [`Paths`], so both are honoured everywhere.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable naming the configuration directory.
pub const ENV_ETC: &str = "MOSIX_ETC";
/// The environment variable naming the runtime directory.
pub const ENV_RUNDIR: &str = "MOSIX_RUNDIR";

/// The default TCP port of the link between node services.
pub const DEFAULT_PORT: u16 = 4249;

/// The largest `mosix.toml` we read.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The shortest secret we accept.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest secret we read.
pub const MAX_SECRET_LEN: u64 = 4096;

/// The files of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The configuration directory (`MOSIX_ETC`, default `/etc`).
    pub etc: PathBuf,
    /// The runtime directory (`MOSIX_RUNDIR`, default `/run/mosix`).
    pub rundir: PathBuf,
}

impl Paths {
    /// The paths named by the environment, or the defaults.
    pub fn from_env() -> Paths {
        let get = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        Paths {
            etc: get(ENV_ETC, "/etc"),
            rundir: get(ENV_RUNDIR, "/run/mosix"),
        }
    }

    /// `ETC/mosix.map`.
    pub fn map(&self) -> PathBuf {
        self.etc.join("mosix.map")
    }
    /// `ETC/mosix/secret`.
    pub fn secret(&self) -> PathBuf {
        self.etc.join("mosix").join("secret")
    }
    /// `ETC/mosix/partners` (partners(5)): the partner clusters of the grid.
    pub fn partners(&self) -> PathBuf {
        self.etc.join("mosix").join("partners")
    }
    /// `ETC/mosix/mosix.toml`.
    pub fn config(&self) -> PathBuf {
        self.etc.join("mosix").join("mosix.toml")
    }
    /// `ETC/overheads`.
    pub fn overheads(&self) -> PathBuf {
        self.etc.join("overheads")
    }
    /// `ETC/mfscosts`.
    pub fn mfscosts(&self) -> PathBuf {
        self.etc.join("mfscosts")
    }
    /// `RUNDIR/checkpoint.sock`: where a process asks for its own checkpoint (a line
    /// `checkpoint`; the answer `ok FILE` or `err WHY`).
    pub fn checkpoint_socket(&self) -> PathBuf {
        self.rundir.join("checkpoint.sock")
    }

    /// `RUNDIR/mosix.sock`: the service's control socket.
    pub fn socket(&self) -> PathBuf {
        self.rundir.join("mosix.sock")
    }
    /// `RUNDIR/mosix.log`: the log of a daemonised service.
    pub fn log(&self) -> PathBuf {
        self.rundir.join("mosix.log")
    }

    /// Where the service mounts its `/proc`-style tree (`RUNDIR/hpc`).
    pub fn hpc(&self) -> PathBuf {
        self.rundir.join("hpc")
    }
    /// `RUNDIR/mosix.pid`: the pid of the running service.
    pub fn pidfile(&self) -> PathBuf {
        self.rundir.join("mosix.pid")
    }
    /// `RUNDIR/state.toml`: settings changed at run time (flags, speed, decay), kept across
    /// `setpe -W` and restarts of the service.
    pub fn state(&self) -> PathBuf {
        self.rundir.join("state.toml")
    }
}

/// The tunables of `mosix.toml`. Every key is optional; an unknown key is an error that names it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tunables {
    /// Information dissemination.
    pub gossip: GossipTunables,
    /// The link between node services.
    pub link: LinkTunables,
    /// How this node measures itself.
    pub node: NodeTunables,
    /// Default decay of per-process statistics.
    pub decay: DecayTunables,
    /// The service's own log file.
    pub log: LogTunables,
    /// Processes of other nodes running here.
    pub guests: GuestTunables,
    /// The MOSIX File System.
    pub mfs: MfsTunables,
    /// Freezing processes at home.
    pub freeze: FreezeTunables,
    /// This cluster in a grid of clusters.
    pub grid: GridTunables,
    /// Moving processes.
    pub moves: MoveTunables,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsTunables,
}

/// Where the service serves its metrics unless `[metrics] listen` says otherwise: loopback
/// only (the figures are what `mosctl status` tells any local user; a scraper on another host
/// needs the administrator to open it).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9249";

/// `[metrics]` of `mosix.toml`: where the service serves its Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTunables {
    /// The address and port of the HTTP endpoint (`GET /metrics`), in the node's network
    /// namespace; `""` serves none. Default `127.0.0.1:9249`: loopback only, since a scraper
    /// on another host is the administrator's choice to open.
    pub listen: String,
}

impl Default for MetricsTunables {
    fn default() -> Self {
        MetricsTunables {
            listen: DEFAULT_METRICS_LISTEN.to_owned(),
        }
    }
}

impl MetricsTunables {
    /// The address to serve on, `None` when off.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

/// `[moves]` of `mosix.toml`: how processes move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoveTunables {
    /// A process with more memory than this (MiB of resident memory) is moved live: its
    /// memory is sent while it runs, and it stops only for what it wrote meanwhile
    /// (`migrate --live` does it for any size). Default 256; 0: never unless asked.
    pub live_above_mib: u64,
}

impl Default for MoveTunables {
    fn default() -> Self {
        MoveTunables {
            live_above_mib: 256,
        }
    }
}

/// The longest cluster name (`[grid] name`, partners(5)).
pub const MAX_CLUSTER_NAME: usize = 32;

/// Whether `s` is a valid cluster name: 1..32 letters, digits, '-', '_', '.'.
pub fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CLUSTER_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `[grid]` of `mosix.toml`: this cluster among its partners (the partners themselves are in
/// `MOSIX_ETC/mosix/partners`, partners(5)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridTunables {
    /// This cluster's name, as `mon` and `mosctl status` show it (default "local").
    pub name: String,
    /// One gossip message in this many goes to a node of a partner cluster (default 5): what a
    /// node sends does not grow with the grid, and partners' information is a few intervals
    /// older than the own cluster's.
    pub every: u32,
    /// Start closed to the grid (`mosctl closegrid`): take no guest of another cluster and
    /// send no process to one (default false).
    pub closed: bool,
    /// The most guests of other clusters this node runs at once (default: no limit; `mosctl
    /// opengrid N` changes it).
    pub max_guests: Option<u32>,
}

impl Default for GridTunables {
    fn default() -> Self {
        GridTunables {
            name: "local".into(),
            every: 5,
            closed: false,
            max_guests: None,
        }
    }
}

/// `[freeze]` of `mosix.toml`: where this node keeps the memory of its frozen processes
/// (`migrate PID freeze`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreezeTunables {
    /// The freeze area: a directory on a disk (not a memory file system, or freezing frees
    /// nothing); made by the service, root's, mode 0700. Default `/var/lib/mosix/freeze`.
    pub dir: PathBuf,
    /// The most MiB of frozen memory one user may have here (0: no limit; the default).
    pub max_user_mib: u64,
    /// Processes per CPU above which this node freezes processes that came home in bulk
    /// (sent back by the nodes they ran on), the last back first (default 2.0; 0 turns
    /// automatic freezing off). See `mosix_core::freezing`.
    pub red_mark: f64,
    /// Processes per CPU at or below which (with the one brought back) a process frozen that
    /// way is brought back, one at a time; also whenever a node that takes guests has a CPU
    /// to spare (default 1.0).
    pub blue_mark: f64,
}

impl Default for FreezeTunables {
    fn default() -> Self {
        FreezeTunables {
            dir: PathBuf::from("/var/lib/mosix/freeze"),
            max_user_mib: 0,
            red_mark: 2.0,
            blue_mark: 1.0,
        }
    }
}

/// `[mfs]` of `mosix.toml`: the MOSIX File System, where `MOUNT/N/path` is node N's `/path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfsTunables {
    /// Whether this node mounts MFS and serves its files to the other nodes (default true;
    /// `mosctl nomfs` stops serving for a while without unmounting).
    pub enable: bool,
    /// Where MFS is mounted (default `/mfs`; an absolute path, the same on every node).
    pub mount: PathBuf,
    /// Whether a request of uid 0 from another node runs as root here. Default false: it runs
    /// as `nobody` (65534), as NFS squashes root.
    pub trust_root: bool,
    /// Threads serving the mount's requests (default 4, 1..=64).
    pub threads: usize,
    /// File systems mounted identically on every node with one consistent view (NFS, CephFS,
    /// Lustre, a SAN file system), by their mount points: a migrated process's files there are
    /// opened and used on the node it runs on (DFSA), as its files under `MOUNT/<that node>`
    /// are. Default: none. Declare only what is truly the same everywhere: a path that names
    /// different files on different nodes would be read and written on the wrong one.
    pub dfsa_paths: Vec<PathBuf>,
    /// Whether a guest declared I/O-bound here gets a tree of its own (default true): its
    /// opens, creations, `access`es and `mkdir`s of this node's files run in this node's kernel
    /// with no notification, through mounts that give it its owner's rights (docs/mfs.md).
    pub trees: bool,
}

impl Default for MfsTunables {
    fn default() -> Self {
        MfsTunables {
            enable: true,
            mount: PathBuf::from("/mfs"),
            trust_root: false,
            threads: 4,
            dfsa_paths: Vec::new(),
            trees: true,
        }
    }
}

/// `[gossip]` of `mosix.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipTunables {
    /// Milliseconds between two sends of the load vector (default 1000).
    pub interval_ms: u64,
    /// How many entries one message carries, this node's own included (default 16).
    pub window: usize,
    /// Information older than this marks a node down. Default: 10 intervals, or more on large
    /// clusters where the expected maximal age of an entry is longer (see `gossip`).
    pub dead_after_ms: Option<u64>,
}

impl Default for GossipTunables {
    fn default() -> Self {
        GossipTunables {
            interval_ms: 1000,
            window: 16,
            dead_after_ms: None,
        }
    }
}

/// `[link]` of `mosix.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkTunables {
    /// The TCP port every node service listens on (default 4249).
    pub port: u16,
    /// How long to wait for a connection to a peer (default 1000 ms).
    pub connect_timeout_ms: u64,
    /// Whether frames after the handshake are encrypted (AES-256-GCM) as well as authenticated
    /// (default true); with false they are authenticated only (AES-256-GMAC) and travel in
    /// clear. Every node of a cluster must have the same setting: a node with the other one is
    /// refused at the handshake, with a message naming this key.
    pub encrypt: bool,
    /// How long a cut between a migrated process's home and the node it runs on may last
    /// before the process is given up (default 60 s; 0: it is given up as soon as the cut is
    /// seen, 11–15 s after it). Within it nothing is lost: both halves wait, the remote
    /// reconnects, and each side resends what the other missed.
    pub resume_grace_s: u32,
}

impl Default for LinkTunables {
    fn default() -> Self {
        LinkTunables {
            port: DEFAULT_PORT,
            connect_timeout_ms: 1000,
            encrypt: true,
            resume_grace_s: 60,
        }
    }
}

/// `[log]` of `mosix.toml`: the log file `RUNDIR/mosix.log` of a service started in the
/// background (`setpe -w`). A service whose output goes elsewhere (systemd's journal, a
/// terminal) rotates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogTunables {
    /// The size in KiB at which `mosix.log` is renamed to `mosix.log.1` (replacing the previous
    /// one) and a new log begun (default 10240, i.e. 10 MiB; 16..=1048576).
    pub max_kib: u64,
}

/// The default size of the log file before it is rotated, in KiB.
pub const DEFAULT_LOG_MAX_KIB: u64 = 10 * 1024;

impl Default for LogTunables {
    fn default() -> Self {
        LogTunables {
            max_kib: DEFAULT_LOG_MAX_KIB,
        }
    }
}

/// `[node]` of `mosix.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeTunables {
    /// The speed of one CPU of this machine (10000 = standard). Without it the service
    /// calibrates at start. A CPU quota scales it down (a node with half a CPU is a CPU at
    /// half speed).
    pub speed: Option<u32>,
    /// The cgroup that is this node (a path below the cgroup mount, e.g. `/mosix/node1`).
    /// Without it the service uses its own cgroup if that has a CPU quota or memory limit,
    /// and the whole machine otherwise.
    pub cgroup: Option<String>,
    /// Milliseconds between two samples of the run queue (default 100).
    pub sample_ms: u64,
}

impl Default for NodeTunables {
    fn default() -> Self {
        NodeTunables {
            speed: None,
            cgroup: None,
            sample_ms: 100,
        }
    }
}

/// `[guests]` of `mosix.toml`: how this node runs the processes of other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestTunables {
    /// Take processes of root as guests: a process with uid 0, or in a set-id state (its real,
    /// effective and saved ids not all the same). Default false: they are refused, with that
    /// reason, and run at home.
    pub accept_root: bool,
    /// Guests run as a host uid and gid of their own, this base plus their local pid: ids no
    /// account of this node may have, so that no local user — not even one with the uid of a
    /// guest's owner — can signal, trace or read a guest. Default 2000000000 (the range
    /// 2000000000..2004194304 is then reserved).
    pub id_base: u32,
    /// The memory all guests together may use, in bytes (their own cgroup's limit). Default:
    /// no limit beyond the node's.
    pub memory_max: Option<u64>,
}

impl Default for GuestTunables {
    fn default() -> Self {
        GuestTunables {
            accept_root: false,
            id_base: 2_000_000_000,
            memory_max: None,
        }
    }
}

/// The largest pid Linux hands out (`PID_MAX_LIMIT` on 64-bit machines): guests' ids are
/// [`GuestTunables::id_base`] plus a pid below it.
pub const PID_MAX_LIMIT: u32 = 4 << 20;

/// `[decay]` of `mosix.toml`, also set with `mosctl setdecay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecayTunables {
    /// Seconds between two decays of the per-process statistics (default 1).
    pub interval_s: u32,
    /// Per-mille of the statistics kept at each decay for slow-decaying processes (default 975).
    pub slow: u32,
    /// Per-mille kept for fast-decaying processes (default 926).
    pub fast: u32,
}

impl Default for DecayTunables {
    fn default() -> Self {
        DecayTunables {
            interval_s: 1,
            slow: 975,
            fast: 926,
        }
    }
}

impl DecayTunables {
    /// Checks the ranges: interval 1..=3600 s, portions 0..=1000 per-mille, fast ≤ slow.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|(_, message)| message)
    }

    /// [`DecayTunables::validate`], with the name of the field at fault.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=3600).contains(&self.interval_s) {
            return Err((
                "interval_s",
                format!(
                    "decay interval {} s is out of range 1..3600",
                    self.interval_s
                ),
            ));
        }
        for (name, v) in [("slow", self.slow), ("fast", self.fast)] {
            if v > 1000 {
                return Err((
                    name,
                    format!("{name} decay {v} is out of range 0..1000 (per-mille kept)"),
                ));
            }
        }
        if self.fast > self.slow {
            return Err((
                "fast",
                format!(
                    "fast decay {} keeps more than slow decay {}",
                    self.fast, self.slow
                ),
            ));
        }
        Ok(())
    }
}

/// A problem with `mosix.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has unknown keys or wrong types, or a value out of range.
    #[error("{path}{}: {message}", line.map_or(String::new(), |l| format!(":{l}")))]
    Invalid {
        /// The file.
        path: String,
        /// The line of the problem (1-based), when the parser can tell it.
        line: Option<usize>,
        /// What is wrong, on one line; it names the key.
        message: String,
    },
}

impl Tunables {
    /// Parses `mosix.toml` text, naming `path` and the line in errors
    /// (`/etc/mosix/mosix.toml:3: gossip.window = 0 is out of range 1..1024`).
    pub fn parse(path: &str, text: &str) -> Result<Tunables, ConfigError> {
        let invalid = |line, message| ConfigError::Invalid {
            path: path.to_owned(),
            line,
            message,
        };
        let t: Tunables = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_at(text, s.start));
            invalid(line, one_line(e.message()))
        })?;
        t.validate()
            .map_err(|(keys, message)| invalid(key_line(text, keys), message))?;
        Ok(t)
    }

    /// Reads `mosix.toml`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Tunables, ConfigError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tunables::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: shown,
                    source,
                });
            }
        };
        let mut text = String::new();
        f.take(MAX_CONFIG_BYTES)
            .read_to_string(&mut text)
            .map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
        Tunables::parse(&shown, &text)
    }

    /// Checks the ranges; an error carries the keys whose line to show (the first one the file
    /// sets) and the message.
    fn validate(&self) -> Result<(), (&'static [&'static str], String)> {
        let g = &self.gossip;
        if !(10..=60_000).contains(&g.interval_ms) {
            return Err((
                &["gossip.interval_ms"],
                format!(
                    "gossip.interval_ms = {} is out of range 10..60000",
                    g.interval_ms
                ),
            ));
        }
        if !(1..=crate::gossip::MAX_WINDOW).contains(&g.window) {
            return Err((
                &["gossip.window"],
                format!(
                    "gossip.window = {} is out of range 1..{}",
                    g.window,
                    crate::gossip::MAX_WINDOW
                ),
            ));
        }
        if let Some(d) = g.dead_after_ms
            && d < 2 * g.interval_ms
        {
            return Err((
                &["gossip.dead_after_ms", "gossip.interval_ms"],
                format!(
                    "gossip.dead_after_ms = {d} is shorter than two intervals ({} ms)",
                    2 * g.interval_ms
                ),
            ));
        }
        if !valid_cluster_name(&self.grid.name) {
            return Err((
                &["grid.name"],
                format!(
                    "grid.name = '{}' is not a cluster name (1..{} letters, digits, '-', '_', '.')",
                    self.grid.name, MAX_CLUSTER_NAME
                ),
            ));
        }
        if !(1..=1000).contains(&self.grid.every) {
            return Err((
                &["grid.every"],
                format!("grid.every = {} is out of range 1..1000", self.grid.every),
            ));
        }
        if self.link.port == 0 {
            return Err((&["link.port"], "link.port = 0 is not a port".into()));
        }
        if !self.metrics.listen.is_empty() && self.metrics.addr().is_none() {
            return Err((
                &["metrics.listen"],
                format!(
                    "metrics.listen = '{}' is not an address and port such as 127.0.0.1:9249 (or \"\" for none)",
                    self.metrics.listen
                ),
            ));
        }
        if !(10..=60_000).contains(&self.link.connect_timeout_ms) {
            return Err((
                &["link.connect_timeout_ms"],
                format!(
                    "link.connect_timeout_ms = {} is out of range 10..60000",
                    self.link.connect_timeout_ms
                ),
            ));
        }
        if self.link.resume_grace_s > 3600 {
            return Err((
                &["link.resume_grace_s"],
                format!(
                    "link.resume_grace_s = {} is out of range 0..3600",
                    self.link.resume_grace_s
                ),
            ));
        }
        if !(16..=1 << 20).contains(&self.log.max_kib) {
            return Err((
                &["log.max_kib"],
                format!(
                    "log.max_kib = {} is out of range 16..1048576",
                    self.log.max_kib
                ),
            ));
        }
        if let Some(s) = self.node.speed
            && !(1..=100_000_000).contains(&s)
        {
            return Err((
                &["node.speed"],
                format!("node.speed = {s} is out of range 1..100000000"),
            ));
        }
        if !(10..=10_000).contains(&self.node.sample_ms) {
            return Err((
                &["node.sample_ms"],
                format!(
                    "node.sample_ms = {} is out of range 10..10000",
                    self.node.sample_ms
                ),
            ));
        }
        let g = &self.guests;
        if g.id_base < 65_536
            || g.id_base
                .checked_add(PID_MAX_LIMIT)
                .is_none_or(|e| e >= u32::MAX - 1)
        {
            return Err((
                &["guests.id_base"],
                format!(
                    "guests.id_base = {} is out of range 65536..{} (guests run as the base plus a pid, ids no account may have)",
                    g.id_base,
                    u32::MAX - 2 - PID_MAX_LIMIT
                ),
            ));
        }
        if let Some(m) = g.memory_max
            && m < 16 << 20
        {
            return Err((
                &["guests.memory_max"],
                format!("guests.memory_max = {m} is below 16 MiB (16777216)"),
            ));
        }
        let m = &self.mfs;
        if !m.mount.is_absolute() || m.mount == Path::new("/") || m.mount.to_str().is_none() {
            return Err((
                &["mfs.mount"],
                format!(
                    "mfs.mount = {:?} is not an absolute path below / in UTF-8",
                    m.mount
                ),
            ));
        }
        if let Some(bad) = m.dfsa_paths.iter().find(|p| {
            !p.is_absolute()
                || *p == Path::new("/")
                || p.starts_with(&m.mount)
                || p.components().any(|c| c == std::path::Component::ParentDir)
        }) {
            return Err((
                &["mfs.dfsa_paths"],
                format!(
                    "mfs.dfsa_paths: {bad:?} is not an absolute mount point other than / and outside mfs.mount"
                ),
            ));
        }
        if m.dfsa_paths.len() > 64 {
            return Err((
                &["mfs.dfsa_paths"],
                format!("mfs.dfsa_paths: {} paths (at most 64)", m.dfsa_paths.len()),
            ));
        }
        if !(1..=64).contains(&m.threads) {
            return Err((
                &["mfs.threads"],
                format!("mfs.threads = {} is out of range 1..64", m.threads),
            ));
        }
        let f = &self.freeze;
        if !(0.0..=1000.0).contains(&f.red_mark)
            || !(0.0..=1000.0).contains(&f.blue_mark)
            || (f.red_mark > 0.0 && f.blue_mark >= f.red_mark)
        {
            return Err((
                &["freeze.red_mark", "freeze.blue_mark"],
                format!(
                    "freeze.red_mark = {} and blue_mark = {}: both 0..1000, blue below red (red 0 turns automatic freezing off)",
                    f.red_mark, f.blue_mark
                ),
            ));
        }
        if !f.dir.is_absolute() || f.dir == Path::new("/") || f.dir.starts_with(&m.mount) {
            return Err((
                &["freeze.dir"],
                format!(
                    "freeze.dir = {:?} is not an absolute directory other than / and outside mfs.mount",
                    f.dir
                ),
            ));
        }
        self.decay.check().map_err(|(key, message)| {
            let keys: &'static [&'static str] = match key {
                "interval_s" => &["decay.interval_s"],
                "slow" => &["decay.slow"],
                _ => &["decay.fast", "decay.slow"],
            };
            (keys, message)
        })
    }
}

/// The parser's message on one line (a key may hold a line break, a message several lines).
fn one_line(s: &str) -> String {
    let parts: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if parts.is_empty() {
        "not valid".to_owned()
    } else {
        parts.join("; ")
    }
}

/// The 1-based line of byte `offset` of `text`; the end of the text is on its last line.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len().saturating_sub(1));
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line where the first of `keys` (`section.name`) that `text` sets is set. `text` is
/// valid TOML here (the tunables were read from it).
fn key_line(text: &str, keys: &[&str]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    fn entry<'a, 'i>(
        table: &'a DeTable<'i>,
        name: &str,
    ) -> Option<(std::ops::Range<usize>, &'a DeValue<'i>)> {
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == name)
            .map(|(k, v)| (k.span(), v.get_ref()))
    }
    let doc = DeTable::parse(text).ok()?;
    keys.iter().find_map(|key| {
        let (section, name) = key.split_once('.')?;
        let (_, DeValue::Table(table)) = entry(doc.get_ref(), section)? else {
            return None;
        };
        let (span, _) = entry(table, name)?;
        Some(line_at(text, span.start))
    })
}

/// The cluster secret, shared by all nodes. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Wraps secret bytes (trailing newlines are not part of the secret).
    pub fn new(bytes: &[u8]) -> Result<Secret, String> {
        let mut v = bytes.to_vec();
        while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            v.pop();
        }
        if v.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the secret is {} bytes long; at least {MIN_SECRET_LEN} are needed",
                v.len()
            ));
        }
        Ok(Secret(v))
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Makes a new secret file at `path` (its directory too, mode 0755): 32 random bytes as 64
    /// hex digits, mode 0600 from its creation (never readable by others, not even for a
    /// moment), written and synced. An existing file is never replaced: every node must keep
    /// the same secret, and the file is copied to the others (`scp -p`).
    pub fn create(path: &Path) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no random numbers for the secret: {e}"))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => format!(
                    "{shown}: a secret is there already; it is kept (every node needs the same \
                     one: copy it to the others, or remove it first to make a new one)"
                ),
                _ => format!("{shown}: cannot create: {e}"),
            })?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        f.write_all(format!("{hex}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{shown}: cannot write: {e}"))
    }

    /// Reads the secret file. It must be a regular file owned by `owner_uid` (the user running
    /// the service: root on a real cluster) and readable by no one else (mode 0600 or stricter).
    pub fn load(path: &Path, owner_uid: u32) -> Result<Secret, String> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let shown = path.display();
        let f = std::fs::File::open(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
        let md = f
            .metadata()
            .map_err(|e| format!("{shown}: cannot stat: {e}"))?;
        if !md.is_file() {
            return Err(format!("{shown}: not a regular file"));
        }
        if md.mode() & 0o077 != 0 {
            return Err(format!(
                "{shown}: mode {:04o} lets others read the secret; chmod 600 it",
                md.mode() & 0o7777
            ));
        }
        if md.uid() != owner_uid {
            return Err(format!(
                "{shown}: owned by uid {}, not by uid {owner_uid} that runs the service",
                md.uid()
            ));
        }
        let mut buf = Vec::new();
        f.take(MAX_SECRET_LEN + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{shown}: cannot read: {e}"))?;
        if buf.len() as u64 > MAX_SECRET_LEN {
            return Err(format!("{shown}: longer than {MAX_SECRET_LEN} bytes"));
        }
        Secret::new(&buf).map_err(|e| format!("{shown}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_secret_is_private_from_the_start_and_never_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mosix/secret");
        Secret::create(&path).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        let first = Secret::load(&path, md.uid()).unwrap();
        assert_eq!(first.bytes().len(), 64);
        let e = Secret::create(&path).unwrap_err();
        assert!(e.contains("kept"), "{e}");
        assert_eq!(Secret::load(&path, md.uid()).unwrap(), first);
        // Two secrets differ.
        let other = dir.path().join("other");
        Secret::create(&other).unwrap();
        assert_ne!(Secret::load(&other, md.uid()).unwrap(), first);
    }

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(Tunables::parse("t", "").unwrap(), Tunables::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Tunables::parse("/etc/mosix/mosix.toml", "[gossip]\nintervall_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("intervall_ms"), "{e}");
        assert!(e.starts_with("/etc/mosix/mosix.toml:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = Tunables::parse("t", "colour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn every_error_names_the_file_and_the_line() {
        let e = |text: &str| {
            Tunables::parse("/etc/mosix/mosix.toml", text)
                .unwrap_err()
                .to_string()
        };
        // Found by the `tunables` fuzz target: range errors named the key but not the line, and
        // parse errors carried toml's caret diagram squeezed onto one line.
        assert_eq!(
            e("# c\n[gossip]\n\nwindow = 0\n"),
            "/etc/mosix/mosix.toml:4: gossip.window = 0 is out of range 1..1024"
        );
        assert_eq!(
            e("[link]\nprot = 1\n"),
            "/etc/mosix/mosix.toml:2: unknown field `prot`, expected one of `port`, `connect_timeout_ms`, `encrypt`, `resume_grace_s`"
        );
        // An error at the end of the file is on its last line, not after it.
        let eof = e("[node]\ncgroup = \"\"\"abc\n");
        assert!(eof.starts_with("/etc/mosix/mosix.toml:2: "), "{eof}");
        assert!(
            e("[gossip\n").starts_with("/etc/mosix/mosix.toml:1: "),
            "{}",
            e("[gossip\n")
        );
        // Inline tables and dotted keys are found too; a rule between two keys names the one
        // the file sets.
        assert!(
            e("\ngossip = { window = 0 }").starts_with("/etc/mosix/mosix.toml:2: gossip.window")
        );
        assert!(e("\n\ndecay.fast = 980\n").starts_with("/etc/mosix/mosix.toml:3: fast decay 980"));
        assert!(e("[decay]\nslow = 10\n").starts_with("/etc/mosix/mosix.toml:2: fast decay 926"));
        assert!(
            e("[gossip]\ninterval_ms = 100\ndead_after_ms = 150\n")
                .starts_with("/etc/mosix/mosix.toml:3: gossip.dead_after_ms = 150")
        );
        assert!(e("[node]\nspeed = 0\n").starts_with("/etc/mosix/mosix.toml:2: node.speed"));
    }

    #[test]
    fn ranges_are_checked() {
        assert!(Tunables::parse("t", "[gossip]\ninterval_ms = 0\n").is_err());
        assert!(Tunables::parse("t", "[gossip]\nwindow = 0\n").is_err());
        assert!(Tunables::parse("t", "[decay]\nslow = 900\nfast = 950\n").is_err());
        let t = Tunables::parse("t", "[link]\nport = 5000\n[node]\nspeed = 20000\n").unwrap();
        assert_eq!(t.link.port, 5000);
        assert_eq!(t.node.speed, Some(20000));
        assert!(Tunables::parse("t", "[log]\nmax_kib = 8\n").is_err());
        assert!(Tunables::parse("t", "[log]\nmax_kib = 2000000\n").is_err());
    }

    #[test]
    fn link_encryption_is_on_by_default_and_can_be_turned_off() {
        assert!(Tunables::default().link.encrypt);
        let t = Tunables::parse("t", "[mfs]\nmount = \"/cluster\"\ntrust_root = true\n").unwrap();
        assert_eq!(t.mfs.mount, PathBuf::from("/cluster"));
        assert!(t.mfs.trust_root && t.mfs.enable);
        let e = Tunables::parse("/etc/mosix/mosix.toml", "\n[mfs]\nmount = \"mfs\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/mosix/mosix.toml:3: mfs.mount"), "{e}");
        let t = Tunables::parse("t", "[mfs]\ndfsa_paths = [\"/nfs\"]\n").unwrap();
        assert_eq!(t.mfs.dfsa_paths, vec![PathBuf::from("/nfs")]);
        for bad in ["\"nfs\"", "\"/\"", "\"/mfs/3\"", "\"/a/../b\""] {
            let e = Tunables::parse("t", &format!("[mfs]\ndfsa_paths = [{bad}]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("mfs.dfsa_paths"), "{bad}: {e}");
        }
        let e = Tunables::parse("t", "[mfs]\nthreads = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mfs.threads = 0"), "{e}");
        let t = Tunables::parse("t", "[link]\nencrypt = false\n").unwrap();
        assert!(!t.link.encrypt);
        let e = Tunables::parse("t", "[link]\nencrypt = \"no\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("encrypt") || e.contains("bool"), "{e}");
        let e = Tunables::parse("t", "[link]\nencryption = false\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("encryption"), "{e}");
    }

    #[test]
    fn the_log_cap_is_a_tunable() {
        assert_eq!(Tunables::default().log.max_kib, DEFAULT_LOG_MAX_KIB);
        let t = Tunables::parse("t", "[log]\nmax_kib = 64\n").unwrap();
        assert_eq!(t.log.max_kib, 64);
        let e = Tunables::parse("t", "[log]\nmax_bytes = 64\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_bytes"), "{e}");
    }

    #[test]
    fn the_metrics_address_is_an_address_or_nothing() {
        let t = Tunables::parse("t", "[metrics]\nlisten = \"\"\n").unwrap();
        assert_eq!(t.metrics.addr(), None);
        let t = Tunables::parse("t", "[metrics]\nlisten = \"0.0.0.0:9000\"\n").unwrap();
        assert_eq!(t.metrics.addr(), Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(
            Tunables::default().metrics.addr(),
            Some("127.0.0.1:9249".parse().unwrap())
        );
        let e = Tunables::parse(
            "/etc/mosix/mosix.toml",
            "\n[metrics]\nlisten = \"localhost\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/etc/mosix/mosix.toml:3: metrics.listen = 'localhost'"),
            "{e}"
        );
    }

    #[test]
    fn the_example_mosix_toml_is_all_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/mosix/mosix.toml");
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(Tunables::parse(path, &text).unwrap(), Tunables::default());
    }

    #[test]
    fn secrets_must_be_private_and_long_enough() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(dir.path()).unwrap().uid();
        let p = dir.path().join("secret");
        std::fs::write(&p, "0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Secret::load(&p, me).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Secret::load(&p, me).unwrap().bytes(), b"0123456789abcdef");
        std::fs::write(&p, "short").unwrap();
        assert!(Secret::load(&p, me).unwrap_err().contains("at least"));
    }

    #[test]
    fn the_example_file_parses_and_says_the_defaults() {
        let text = include_str!("../../../etc/mosix/mosix.toml");
        let t = Tunables::parse("etc/mosix/mosix.toml", text).unwrap();
        assert_eq!(t.mfs, MfsTunables::default());
        assert_eq!(t.link, LinkTunables::default());
    }
}
