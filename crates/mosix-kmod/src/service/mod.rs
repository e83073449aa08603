//! The node service: one per node, started by `setpe -w`, stopped by `setpe -off`.
//!
//! It runs the information dissemination of [`mosix_core::gossip`] over the authenticated link
//! ([`link`]), measures its node ([`crate::node::measure`]) and keeps the cluster view, and answers the
//! local tools on the control socket ([`control`]). There is no master: every service runs the
//! same loop on what it has heard.
//!
//! Concurrency: one single-threaded tokio runtime. The main loop owns all state and receives
//! [`Event`]s (gossip from the link tasks, requests from the control tasks, samples from the
//! measurement thread) over one channel, so nothing is shared but the read-mostly
//! [`link::LinkContext`]. Measurement runs on its own OS thread because it reads `/proc`
//! synchronously every 100 ms.

mod ask;
pub mod balancing;
mod checkpoint;
pub mod control;
pub mod daemon;
mod grid;
mod hpc;
mod metrics;
mod moves;
mod node;
pub mod policy;
mod queue;
mod requests;

use std::fs::{self, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mosix_core::balance::{Balancer, Params};
use mosix_core::client::{Client, Request, Response, ServiceInfo};
use mosix_core::config::{ConfigError, Paths, Secret, Tunables};
use mosix_core::gossip::{Dissemination, GossipConfig};
use mosix_core::load::{LoadSmoother, Sample};
use mosix_core::map::{self, ClusterMap, IdentityError, MapErrors};
use mosix_core::overheads::Overheads;
use mosix_core::proto::Protection;
use mosix_core::{NodeId, Status};
use nix::fcntl::{Flock, FlockArg};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::link::{self, Inbound, LinkContext, Outbound, SharedContext, Throttle};
use crate::node::cgroup::{CgroupError, Cgroups};
use crate::node::guests::GuestCgroup;
use crate::node::measure::{self, Measurer, Scope};
use crate::split::procs::Procs;
use node::Node;

/// What the main loop is told.
#[derive(Debug)]
pub enum Event {
    /// An authenticated link connection brought something.
    Link(Inbound),
    /// A local tool asks something.
    Control {
        /// The request.
        req: Request,
        /// The caller's uid.
        uid: u32,
        /// The caller's pid.
        pid: i32,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// A process asks for its own checkpoint (`RUNDIR/checkpoint.sock`).
    CheckpointMe {
        /// Its uid.
        uid: u32,
        /// Its pid.
        pid: i32,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// One second's measurement of the node.
    Sample(Sample),
    /// A job the queue started ended: its CPU is free now, not at the next sample.
    QueuedJobEnded,
}

impl From<Inbound> for Event {
    fn from(i: Inbound) -> Event {
        Event::Link(i)
    }
}

/// How to start the service.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The node's files.
    pub paths: Paths,
    /// Where the map came from (for messages).
    pub map_name: String,
    /// The map text.
    pub map_text: String,
    /// The node number given with `-p`.
    pub forced: Option<NodeId>,
}

/// What the service is once it serves.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// This node.
    pub node: NodeId,
    /// The link address.
    pub addr: Ipv4Addr,
    /// The link port.
    pub port: u16,
}

/// Why the service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// `mosix.toml` is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The secret is missing or unsafe.
    #[error("cluster secret: {0}")]
    Secret(String),
    /// The map is wrong.
    #[error("{0}")]
    Map(#[from] MapErrors),
    /// The partners file, or a partner's map or secret, is wrong.
    #[error("{0}")]
    Grid(#[from] mosix_core::grid::GridErrors),
    /// This node is not in the map.
    #[error("{map}: {source}")]
    Identity {
        /// The map name.
        map: String,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// Another service runs for this node.
    #[error(
        "this node is already configured (node {node}, service pid {pid}); use setpe -W to replace the configuration"
    )]
    AlreadyRunning {
        /// Its node number.
        node: NodeId,
        /// Its pid.
        pid: u32,
    },
    /// Another service holds the lock but does not answer.
    #[error("another MOSIX service holds {0} but does not answer; is it starting or hung?")]
    Locked(PathBuf),
    /// A file of the run directory.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The link port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The node's cgroup could not be read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError + '_ {
    move |source| ServiceError::File {
        path: path.to_owned(),
        source,
    }
}

/// The IPv4 addresses of this machine's interfaces (in this network namespace).
pub fn local_ipv4() -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut v: Vec<Ipv4Addr> = addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| a.as_sockaddr_in().map(|s| s.ip()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The configuration read from files: tunables, secret, map, identity.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    tunables: Tunables,
    secret: Secret,
    map: ClusterMap,
    map_name: String,
    me: NodeId,
    my_addr: Ipv4Addr,
    grid: mosix_core::grid::Grid,
}

impl Loaded {
    /// Every node this node gossips with: its cluster's and its partners'.
    fn all_nodes(&self) -> Vec<NodeId> {
        let mut v = self.map.nodes();
        v.extend(self.grid.nodes());
        v
    }

    /// How gossip crosses to the partners.
    fn cross_config(&self) -> mosix_core::gossip::CrossConfig {
        mosix_core::gossip::CrossConfig::new(
            self.tunables.grid.every,
            self.grid.partners.len(),
            &gossip_config(self),
        )
    }
}

fn load(
    paths: &Paths,
    map_name: &str,
    map_text: &str,
    forced: Option<NodeId>,
) -> Result<Loaded, ServiceError> {
    let tunables = Tunables::load(&paths.config())?;
    let secret = Secret::load(&paths.secret(), nix::unistd::geteuid().as_raw())
        .map_err(ServiceError::Secret)?;
    let map = map::parse_and_resolve(map_name, map_text, &map::system_resolver)?;
    let me = map
        .identify(&local_ipv4(), forced)
        .map_err(|source| ServiceError::Identity {
            map: map_name.to_owned(),
            source,
        })?;
    let my_addr = map.addr_of(me).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let grid = mosix_core::grid::load(
        &paths.partners(),
        &map,
        nix::unistd::geteuid().as_raw(),
        &map::system_resolver,
    )?;
    Ok(Loaded {
        grid,
        tunables,
        secret,
        map,
        map_name: map_name.to_owned(),
        me,
        my_addr,
    })
}

/// Checks everything the service will read at start (tunables, secret, map, identity) without
/// starting it, so that a starter can report problems before going to the background. Returns
/// this node's number.
pub fn check_start(opts: &StartOptions) -> Result<NodeId, ServiceError> {
    load(&opts.paths, &opts.map_name, &opts.map_text, opts.forced).map(|l| l.me)
}

/// The file access costs of `/etc/mfscosts` (mfscosts(5)); the built-in defaults, with a
/// logged reason, when the file is wrong.
fn load_mfscosts(paths: &Paths) -> mosix_core::mfscosts::MfsCosts {
    let (c, why) = mosix_core::mfscosts::MfsCosts::load(&paths.mfscosts());
    if let Some(why) = why {
        warn!("file costs: built-in defaults used: {why}");
    }
    c
}

/// The migration costs of `/etc/overheads` (overheads(5)); the built-in defaults, with a
/// warning that names the problem, when the file is wrong.
fn load_overheads(paths: &Paths) -> Overheads {
    let (o, why) = Overheads::load(&paths.overheads());
    match why {
        Some(why) => warn!("overheads not used, built-in defaults instead: {why}"),
        None if o.source != Overheads::builtin().source => {
            info!("migration costs from {} ({} rows)", o.source, o.rows.len());
        }
        None => {}
    }
    o
}

/// What the link's connections need of the configuration.
fn link_context(l: &Loaded) -> LinkContext {
    LinkContext {
        me: l.me,
        my_addr: l.my_addr,
        map: l.map.clone(),
        secret: l.secret.clone(),
        port: l.tunables.link.port,
        connect_timeout: Duration::from_millis(l.tunables.link.connect_timeout_ms),
        protection: Protection::from_encrypt(l.tunables.link.encrypt),
        grid: l.grid.clone(),
        resume_grace: Duration::from_secs(u64::from(l.tunables.link.resume_grace_s)),
    }
}

fn gossip_config(l: &Loaded) -> GossipConfig {
    let g = &l.tunables.gossip;
    GossipConfig::new(l.map.node_count(), g.interval_ms, g.window, g.dead_after_ms)
}

/// Checks whether a service already answers for this node; returns its node and pid.
pub fn running(paths: &Paths) -> Option<ServiceInfo> {
    Client::connect(paths).ok()?.ping().ok()
}

/// Runs the service until it is told to stop (or gets SIGTERM/SIGINT). `on_ready` is called
/// once the link port and the control socket accept connections.
pub fn run(opts: StartOptions, on_ready: impl FnOnce(Ready)) -> Result<(), ServiceError> {
    let loaded = load(&opts.paths, &opts.map_name, &opts.map_text, opts.forced)?;
    let paths = opts.paths;
    fs::create_dir_all(&paths.rundir).map_err(file_err(&paths.rundir))?;

    // One service per run directory: an exclusive lock held for the service's lifetime.
    let lock_path = paths.rundir.join("mosix.lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(file_err(&lock_path))?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err(_) => {
            return Err(match running(&paths) {
                Some(s) => ServiceError::AlreadyRunning {
                    node: s.node,
                    pid: s.pid,
                },
                None => ServiceError::Locked(lock_path),
            });
        }
    };

    let sock_path = paths.socket();
    // We hold the lock, so a socket file left here belongs to a service that died.
    let _ = fs::remove_file(&sock_path);
    let unix = std::os::unix::net::UnixListener::bind(&sock_path).map_err(file_err(&sock_path))?;
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o666))
        .map_err(file_err(&sock_path))?;
    unix.set_nonblocking(true).map_err(file_err(&sock_path))?;
    let pid_path = paths.pidfile();
    fs::write(&pid_path, format!("{}\n", std::process::id())).map_err(file_err(&pid_path))?;

    // A service started by `setpe -w` writes its own log file: keep it under the cap.
    daemon::keep_log_small(&paths, loaded.tunables.log.max_kib * 1024);

    let result = (|| {
        let cgroups = Cgroups::discover()?;
        let scope = match cgroups.node_cgroup(loaded.tunables.node.cgroup.as_deref())? {
            Some(c) => Scope::Cgroup(c),
            None => Scope::Machine,
        };
        let guests = guest_cgroup(&cgroups, &scope, &loaded);
        let raw_speed = match loaded.tunables.node.speed {
            Some(s) => s,
            None => measure::calibrate_speed(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(file_err(Path::new("tokio runtime")))?;
        let served = rt.block_on(serve(
            paths.clone(),
            loaded,
            (scope, guests.clone()),
            raw_speed,
            unix,
            on_ready,
        ));
        // No guest outlives its service.
        if let Some(g) = &guests {
            g.remove();
        }
        served
    })();

    let _ = fs::remove_file(&sock_path);
    crate::split::procs::release(&paths.rundir);
    if fs::read_to_string(&pid_path).is_ok_and(|p| p.trim() == std::process::id().to_string()) {
        let _ = fs::remove_file(&pid_path);
    }
    result
}

async fn bind_link(addr: Ipv4Addr, port: u16) -> Result<TcpListener, ServiceError> {
    let sa = SocketAddr::new(IpAddr::V4(addr), port);
    let bind = || -> std::io::Result<TcpListener> {
        let s = TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind(sa)?;
        s.listen(1024)
    };
    bind().map_err(|source| ServiceError::Bind { addr: sa, source })
}

/// The guests' cgroup of this node, emptied of what an earlier service left; `None` (with the
/// reason logged: this node then takes no guests) when it cannot be made.
fn guest_cgroup(cgroups: &Cgroups, scope: &Scope, loaded: &Loaded) -> Option<Arc<GuestCgroup>> {
    let node_dir = match scope {
        Scope::Cgroup(c) => c.mem_dir(),
        Scope::Machine => None,
    };
    let max = loaded.tunables.guests.memory_max;
    match GuestCgroup::setup(cgroups, node_dir, max) {
        Ok(g) => {
            if max.is_some() && !g.limited {
                warn!(
                    "guests.memory_max is not applied: {} cannot take a memory limit here (the node's cgroup holds processes itself)",
                    g.dir().display()
                );
            }
            Some(Arc::new(g))
        }
        Err(e) => {
            warn!("this node takes no guests: no cgroup of their own can be made ({e})");
            None
        }
    }
}

async fn serve(
    paths: Paths,
    loaded: Loaded,
    (scope, guests): (Scope, Option<Arc<GuestCgroup>>),
    raw_speed: u32,
    unix: std::os::unix::net::UnixListener,
    on_ready: impl FnOnce(Ready),
) -> Result<(), ServiceError> {
    let port = loaded.tunables.link.port;
    let tcp = bind_link(loaded.my_addr, port).await?;
    let unix = UnixListener::from_std(unix).map_err(file_err(&paths.socket()))?;
    let (tx, mut rx) = mpsc::channel::<Event>(1024);

    let ctx: SharedContext = Arc::new(RwLock::new(Arc::new(link_context(&loaded))));
    let throttle = Arc::new(Throttle::default());
    let accept = tokio::spawn(link::accept_loop(
        tcp,
        Arc::clone(&ctx),
        tx.clone(),
        Arc::clone(&throttle),
    ));
    let control = tokio::spawn(control::serve(unix, tx.clone()));
    let ckpt_path = paths.checkpoint_socket();
    let _ = fs::remove_file(&ckpt_path);
    let ckpt_socket = UnixListener::bind(&ckpt_path)
        .and_then(|l| {
            fs::set_permissions(&ckpt_path, fs::Permissions::from_mode(0o666))?;
            Ok(l)
        })
        .map_err(file_err(&ckpt_path))?;
    let checkpoints = tokio::spawn(control::serve_checkpoints(ckpt_socket, tx.clone()));
    let metrics = loaded
        .tunables
        .metrics
        .addr()
        .map(|a| tokio::spawn(metrics::serve(a)));
    // The /proc-style tree; a node without FUSE goes on without it.
    let hpc_mount = paths.hpc();
    let mut hpc = match hpc::Hpc::start(&hpc_mount, tx.clone()) {
        Ok(h) => Some(h),
        Err(e) => {
            warn!(
                "cannot mount the hpc tree at {}: {e}; serving none",
                hpc_mount.display()
            );
            None
        }
    };

    let mut measurer = Measurer::new(scope.clone(), raw_speed);
    measurer.sample();
    let first = measurer.finish();
    let sample_ms = loaded.tunables.node.sample_ms;
    spawn_measurement(measurer, sample_ms, tx.clone());

    let mut rng =
        SmallRng::seed_from_u64(getrandom::u64().unwrap_or(u64::from(std::process::id())));
    let gcfg = gossip_config(&loaded);
    let phase = rng.random_range(0..gcfg.interval_ms.max(1));
    let nodes = loaded.all_nodes();
    let mut diss = Dissemination::new(nodes, loaded.me, gcfg, 0, phase).map_err(|e| {
        ServiceError::Identity {
            map: loaded.map_name.clone(),
            source: IdentityError::NoAddress(e.to_string()),
        }
    })?;
    diss.set_foreign(&loaded.grid.clusters(), loaded.cross_config());
    let procs = Arc::new(Procs::new(
        match crate::split::procs::setup(&paths.rundir) {
            Ok(d) => Some(d),
            Err(e) => {
                warn!(
                    "MOSIX processes cannot be tracked here ({e}); mosrun and migration need the service to run as root"
                );
                None
            }
        },
    ));
    let mfs = start_mfs(&loaded, &ctx, &procs);
    let mut flags = Status::empty();
    if mfs.as_ref().is_none_or(|m| m.server.refusing()) {
        flags |= Status::NOMFS;
    }
    let closed = loaded.tunables.grid.closed;
    let max_grid_guests = loaded.tunables.grid.max_guests.unwrap_or(u32::MAX);
    flags.set(Status::CLOSED, closed);
    let mut smoother = LoadSmoother::default();
    let figures = smoother.figures(&first);
    let outbound = Outbound::new(Arc::clone(&ctx), Arc::clone(&throttle));
    let trust_root = loaded.tunables.mfs.trust_root;
    let shared = loaded.tunables.mfs.dfsa_paths.clone();
    let trees = loaded.tunables.mfs.trees;
    let me = loaded.me;
    let rundir = paths.rundir.clone();
    let mut node = Node {
        link: node::LinkState {
            ctx,
            outbound,
            throttle,
            accept,
        },
        gossip: node::Gossip {
            diss,
            start: Instant::now(),
            rng,
            last_up: Vec::new(),
        },
        load: node::Load {
            scope,
            smoother,
            figures,
            speed_override: None,
        },
        balancing: node::Balancing {
            balancer: Balancer::new(Params::OURS),
            tracker: balancing::Tracker::default(),
            overheads: load_overheads(&paths),
            mfscosts: load_mfscosts(&paths),
            decay: loaded.tunables.decay,
            admission: Arc::default(),
            last_continue: None,
            displaced: Default::default(),
            foreign_load: 0,
            own_load: 0,
        },
        loaded,
        guests,
        flags,
        blocked: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        closed: Arc::new(std::sync::atomic::AtomicBool::new(closed)),
        queue: node::Queueing::default(),
        isolation: None,
        grid_guests: Arc::new(std::sync::atomic::AtomicU32::new(max_grid_guests)),
        procs,
        events: tx,
        euid: nix::unistd::geteuid().as_raw(),
        paths,
        dfsa: mfs.as_ref().map(|m| {
            let trap = trees.then(|| start_trap(&rundir, m.mount(), me)).flatten();
            Arc::new(crate::split::remote::dfsa::DfsaNode::new(
                m.mount().to_owned(),
                trust_root,
                shared,
                trap,
                Some(Arc::clone(&m.server.held)),
            ))
        }),
        mfs,
    };

    let ready = Ready {
        node: node.loaded.me,
        addr: node.loaded.my_addr,
        port,
    };
    info!(
        "MOSIX node {} serving at {}:{} (map {}, {} nodes; measuring the {}; speed {} per CPU)",
        ready.node,
        ready.addr,
        ready.port,
        node.loaded.map_name,
        node.loaded.map.node_count(),
        node.load.scope.describe(),
        raw_speed
    );
    on_ready(ready);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(file_err(Path::new("SIGTERM handler")))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(file_err(Path::new("SIGINT handler")))?;
    loop {
        let due = node.next_send();
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => node.tick(),
            ev = rx.recv() => match ev {
                Some(ev) => if node.handle(ev).await { break },
                None => break,
            },
            _ = term.recv() => { info!("SIGTERM: stopping"); break }
            _ = int.recv() => { info!("SIGINT: stopping"); break }
        }
    }
    // Let the answer to a Shutdown request reach its caller.
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.link.accept.abort();
    control.abort();
    checkpoints.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(h) = hpc.as_mut() {
        h.stop();
    }
    let _ = fs::remove_file(&ckpt_path);
    if let Some(mut m) = node.mfs.take() {
        m.stop();
    }
    if let Some(t) = node.dfsa.as_ref().and_then(|d| d.trap.as_ref()) {
        t.stop();
    }
    info!("MOSIX node {} stopped", node.loaded.me);
    Ok(())
}

/// Starts MFS as `[mfs]` says: the owning side always (refusing when MFS is off), the mount
/// when this service is root and the kernel lets it mount.
fn start_mfs(loaded: &Loaded, ctx: &SharedContext, procs: &Arc<Procs>) -> Option<crate::mfs::Mfs> {
    let t = &loaded.tunables.mfs;
    if !t.enable {
        info!("MFS is off ([mfs] enable = false)");
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        warn!("MFS is off: mounting it needs the service to run as root");
        return None;
    }
    let me = loaded.me;
    let procs = Arc::clone(procs);
    let locate: crate::mfs::Locate = Arc::new(move |pid| match procs.guest(pid) {
        Some(g) => crate::mfs::Whereabouts {
            home: g.from,
            here: me,
        },
        None => crate::mfs::Whereabouts {
            home: me,
            here: procs.home(pid).at.unwrap_or(me),
        },
    });
    match crate::mfs::Mfs::start(me, t, Arc::clone(ctx), locate) {
        Ok(m) => Some(m),
        Err(e) => {
            warn!("MFS is off: {e}");
            None
        }
    }
}

fn spawn_measurement(mut m: Measurer, sample_ms: u64, tx: mpsc::Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name("mosix-measure".into())
        .spawn(move || {
            let period = Duration::from_millis(sample_ms.max(1));
            let mut second = Instant::now();
            loop {
                std::thread::sleep(period);
                m.sample();
                if second.elapsed() >= Duration::from_secs(1) {
                    second = Instant::now();
                    if tx.blocking_send(Event::Sample(m.finish())).is_err() {
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the measurement thread ({e}); the load will stay at its first value");
    }
}

/// The trap of guests' trees (`[mfs] trees`), in `RUNDIR/trap`: its skeleton leads to this
/// node's files as a guest names them (`MOUNT/<me>`, `MOUNT/here`). `None`, said in the log, if
/// it cannot be mounted: guests then get no tree of their own.
fn start_trap(
    rundir: &Path,
    mount: &Path,
    me: mosix_core::NodeId,
) -> Option<crate::mfs::trap::Trap> {
    let dirs = [mount.join(me.get().to_string()), mount.join("here")];
    let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    match crate::mfs::trap::Trap::start(&rundir.join("trap"), &dirs) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(
                "guests get no tree of their own here: mounting their trap at {}: {e}",
                rundir.join("trap").display()
            );
            None
        }
    }
}
