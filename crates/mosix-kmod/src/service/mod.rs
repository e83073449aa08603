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

pub mod balancing;
pub mod control;
pub mod daemon;

use std::fs::{self, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mosix_core::balance::{Balancer, NodeState, Params};
use mosix_core::client::{
    Client, ClusterView, DecayMode, NodeView, Request, Response, RunningConfig, ServiceInfo, Target,
};
use mosix_core::config::{ConfigError, DecayTunables, Paths, Secret, Tunables};
use mosix_core::gossip::{Dissemination, GossipConfig, Millis};
use mosix_core::load::{Figures, LoadSmoother, NodeInfo, Sample};
use mosix_core::map::{self, ClusterMap, IdentityError, MapErrors};
use mosix_core::overheads::Overheads;
use mosix_core::proto::{self, LinkMsg};
use mosix_core::{Flag, NodeId, Status};
use nix::fcntl::{Flock, FlockArg};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::node::cgroup::{CgroupError, Cgroups};
use crate::node::measure::{self, Measurer, Scope};
use crate::split::deputy::HomeEnv;
use crate::split::procs::Procs;
use crate::split::remote::GuestEnv;

use crate::link::{self, Inbound, LinkContext, Outbound, SharedContext, Throttle};

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
    /// One second's measurement of the node.
    Sample(Sample),
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
struct Loaded {
    tunables: Tunables,
    secret: Secret,
    map: ClusterMap,
    map_name: String,
    me: NodeId,
    my_addr: Ipv4Addr,
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
    Ok(Loaded {
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

    let result = (|| {
        let scope =
            match Cgroups::discover()?.node_cgroup(loaded.tunables.node.cgroup.as_deref())? {
                Some(c) => Scope::Cgroup(c),
                None => Scope::Machine,
            };
        let raw_speed = match loaded.tunables.node.speed {
            Some(s) => s,
            None => measure::calibrate_speed(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(file_err(Path::new("tokio runtime")))?;
        rt.block_on(serve(
            paths.clone(),
            loaded,
            scope,
            raw_speed,
            unix,
            on_ready,
        ))
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

async fn serve(
    paths: Paths,
    loaded: Loaded,
    scope: Scope,
    raw_speed: u32,
    unix: std::os::unix::net::UnixListener,
    on_ready: impl FnOnce(Ready),
) -> Result<(), ServiceError> {
    let port = loaded.tunables.link.port;
    let tcp = bind_link(loaded.my_addr, port).await?;
    let unix = UnixListener::from_std(unix).map_err(file_err(&paths.socket()))?;
    let (tx, mut rx) = mpsc::channel::<Event>(1024);

    let ctx: SharedContext = Arc::new(RwLock::new(Arc::new(LinkContext {
        me: loaded.me,
        my_addr: loaded.my_addr,
        map: loaded.map.clone(),
        secret: loaded.secret.clone(),
        port,
        connect_timeout: Duration::from_millis(loaded.tunables.link.connect_timeout_ms),
    })));
    let throttle = Arc::new(Throttle::default());
    let accept = tokio::spawn(link::accept_loop(
        tcp,
        Arc::clone(&ctx),
        tx.clone(),
        Arc::clone(&throttle),
    ));
    let control = tokio::spawn(control::serve(unix, tx.clone()));

    let mut measurer = Measurer::new(scope.clone(), raw_speed);
    measurer.sample();
    let first = measurer.finish();
    let sample_ms = loaded.tunables.node.sample_ms;
    spawn_measurement(measurer, sample_ms, tx.clone());

    let mut rng =
        SmallRng::seed_from_u64(getrandom::u64().unwrap_or(u64::from(std::process::id())));
    let start = Instant::now();
    let gcfg = gossip_config(&loaded);
    let phase = rng.random_range(0..gcfg.interval_ms.max(1));
    let nodes = loaded.map.nodes();
    let diss = Dissemination::new(nodes, loaded.me, gcfg, 0, phase).map_err(|e| {
        ServiceError::Identity {
            map: loaded.map_name.clone(),
            source: IdentityError::NoAddress(e.to_string()),
        }
    })?;
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
    crate::split::deputy::install_interrupt_handler();
    let mut smoother = LoadSmoother::default();
    let figures = smoother.figures(&first);
    let outbound = Outbound::new(Arc::clone(&ctx), Arc::clone(&throttle));
    let mut node = Node {
        decay: loaded.tunables.decay,
        loaded,
        scope,
        diss,
        flags: Status::empty(),
        smoother,
        figures,
        speed_override: None,
        ctx,
        outbound,
        throttle,
        accept,
        events: tx,
        start,
        rng,
        last_up: Vec::new(),
        euid: nix::unistd::geteuid().as_raw(),
        procs,
        blocked: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        balancer: Balancer::new(Params::OURS),
        tracker: balancing::Tracker::default(),
        overheads: load_overheads(&paths),
        admission: Arc::default(),
        paths,
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
        node.scope.describe(),
        raw_speed
    );
    on_ready(ready);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(file_err(Path::new("SIGTERM handler")))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(file_err(Path::new("SIGINT handler")))?;
    loop {
        let due = start + Duration::from_millis(u64::try_from(node.diss.next_send()).unwrap_or(0));
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
    node.accept.abort();
    control.abort();
    info!("MOSIX node {} stopped", node.loaded.me);
    Ok(())
}

/// Waits (at most a minute) until a process that was asked home is home.
fn wait_home(procs: &Procs, pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if procs.home(pid).at.is_none() && !procs.home(pid).moving {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Moves a process that is at home to `to`; answers when done (`wait`) or at once.
fn send(pid: i32, to: NodeId, env: HomeEnv, wait: bool, reply: oneshot::Sender<Response>) {
    crate::split::deputy::migrate(pid, to, None, env, answer_when(pid, to, wait, reply));
}

/// The answer to `migrate PID NODE`: at once ("moving"), or (`wait`) by the returned callback
/// once the move is done or failed; a failure nobody waits for is logged.
fn answer_when(
    pid: i32,
    to: NodeId,
    wait: bool,
    reply: oneshot::Sender<Response>,
) -> crate::split::handle::MoveDone {
    let reply = if wait {
        Some(reply)
    } else {
        let _ = reply.send(Response::Migrated {
            node: to.get(),
            done: false,
        });
        None
    };
    Box::new(move |r| match (r, reply) {
        (Ok(n), Some(reply)) => {
            let _ = reply.send(Response::Migrated {
                node: n.get(),
                done: true,
            });
        }
        (Err(e), Some(reply)) => {
            let _ = reply.send(Response::Error(e));
        }
        (Err(e), None) => warn!("moving process {pid}: {e}"),
        (Ok(_), None) => {}
    })
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

/// The main loop's state.
struct Node {
    paths: Paths,
    loaded: Loaded,
    scope: Scope,
    diss: Dissemination<NodeInfo>,
    flags: Status,
    smoother: LoadSmoother,
    figures: Figures,
    speed_override: Option<u32>,
    decay: DecayTunables,
    ctx: SharedContext,
    outbound: Outbound,
    throttle: Arc<Throttle>,
    accept: JoinHandle<()>,
    events: mpsc::Sender<Event>,
    start: Instant,
    rng: SmallRng,
    /// Which nodes were up at the last tick, to log changes.
    last_up: Vec<(NodeId, bool)>,
    euid: u32,
    /// MOSIX processes and guests.
    procs: Arc<Procs>,
    /// The BLOCK flag, for the guest threads.
    blocked: Arc<std::sync::atomic::AtomicBool>,
    /// The balancer and what it knows of the processes here.
    balancer: Balancer,
    tracker: balancing::Tracker,
    /// Migration costs (`/etc/overheads`).
    overheads: Overheads,
    /// Consent to automatic moves here.
    admission: Arc<crate::node::admission::Admission>,
}

impl Node {
    fn now(&self) -> Millis {
        Millis::try_from(self.start.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    fn own_info(&self) -> NodeInfo {
        NodeInfo {
            flags: self.flags,
            figures: if self.flags.contains(Status::QUIET) {
                None
            } else {
                Some(self.figures)
            },
        }
    }

    /// Time to gossip: refresh our entry and send the window to a random peer.
    fn tick(&mut self) {
        // The timer fired for next_send; do not let millisecond rounding make the send not due.
        let now = self.now().max(self.diss.next_send());
        let info = self.own_info();
        self.diss.set_local(info, now);
        if let Some((to, msg)) = self.diss.send(now, &mut self.rng) {
            let frame = Arc::new(proto::encode(&LinkMsg::Gossip(msg)));
            self.outbound.send(to, frame);
        }
        self.log_changes(now);
    }

    fn log_changes(&mut self, now: Millis) {
        let dead_after = self.diss.config().dead_after_ms.unwrap_or(0);
        let current: Vec<(NodeId, bool)> = self
            .diss
            .known(now)
            .filter(|k| !k.is_self)
            .map(|k| (k.node, k.up))
            .collect();
        if self.last_up.len() == current.len() {
            for ((n, was), (_, is)) in self.last_up.iter().zip(&current) {
                match (was, is) {
                    (false, true) => info!("node {n} is up"),
                    (true, false) => {
                        info!(
                            "node {n} is down: no news of it for {} s",
                            dead_after / 1000
                        );
                    }
                    _ => {}
                }
            }
        }
        self.last_up = current;
    }

    /// Handles one event; returns true when the service should stop.
    async fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Link(Inbound::Gossip { msg, .. }) => {
                let now = self.now();
                self.diss.receive(&msg, now);
                false
            }
            Event::Sample(mut s) => {
                if let Some(sp) = self.speed_override {
                    s.speed = sp;
                }
                self.figures = self.smoother.figures(&s);
                // Consent is judged on the exported load, which rises at once.
                self.admission
                    .update(self.my_state(self.now(), self.figures.load));
                self.balance();
                false
            }
            Event::Link(Inbound::Rejoin {
                from,
                pid,
                token,
                local_pid,
                stream,
            }) => {
                let offer = crate::split::handle::RejoinOffer {
                    from,
                    token,
                    local_pid,
                    stream,
                };
                if let Err(o) = self.procs.offer_rejoin(pid as i32, offer) {
                    o.refuse(format!(
                        "process {pid} is not away from node {}",
                        self.loaded.me
                    ));
                }
                false
            }
            Event::Link(Inbound::Process { from, stream }) => {
                let env = GuestEnv {
                    me: self.loaded.me,
                    procs: Arc::clone(&self.procs),
                    blocked: Arc::clone(&self.blocked),
                    link: Arc::clone(&self.ctx),
                    admission: Arc::clone(&self.admission),
                };
                let spawned = std::thread::Builder::new()
                    .name(format!("mosix-guest-from-{from}"))
                    .spawn(move || crate::split::remote::accept(stream, from, env));
                if let Err(e) = spawned {
                    warn!("cannot start a guest thread: {e}");
                }
                false
            }
            Event::Control {
                req,
                uid,
                pid,
                reply,
            } => {
                let stop = matches!(req, Request::Shutdown) && self.allowed(uid);
                match req {
                    Request::Register {
                        lock,
                        decay,
                        placement,
                        fallback_home,
                    } => self.register(pid, lock, decay, placement, fallback_home, reply),
                    Request::Migrate {
                        pid: target,
                        to,
                        wait,
                    } => self.migrate(uid, target as i32, to, wait, reply),
                    Request::Expel | Request::Bring => {
                        let expel = matches!(req, Request::Expel);
                        let flag = if expel { Flag::Block } else { Flag::Lstay };
                        match self.control(Request::SetFlag { flag, on: true }, uid).await {
                            Response::Done => self.move_all(expel, reply),
                            other => {
                                let _ = reply.send(other);
                            }
                        }
                    }
                    req => {
                        let resp = self.control(req, uid).await;
                        let _ = reply.send(resp);
                    }
                }
                stop
            }
        }
    }

    fn home_env(&self) -> HomeEnv {
        HomeEnv {
            me: self.loaded.me,
            procs: Arc::clone(&self.procs),
            link: Arc::clone(&self.ctx),
        }
    }

    /// Whether node `n` can take a process now; why not otherwise.
    fn can_take(&self, n: NodeId) -> Result<(), String> {
        if n == self.loaded.me {
            return Ok(());
        }
        let now = self.now();
        let Some(k) = self.diss.get(n, now) else {
            return Err(format!("node {n} is not in the map"));
        };
        if !k.up {
            return Err(format!("node {n} is down"));
        }
        if k.info.is_some_and(|i| i.flags.contains(Status::BLOCK)) {
            return Err(format!("node {n} is blocked: it takes no guests"));
        }
        Ok(())
    }

    /// This node (with its local load) and the live peers that disseminate their load, as the
    /// balancer sees them.
    fn node_states(&self, now: Millis) -> (NodeState, Vec<NodeState>) {
        let me = self.my_state(now, self.local_load());
        let peers = self
            .diss
            .known(now)
            .filter(|k| !k.is_self && k.up)
            .filter_map(|k| {
                let i = k.info?;
                let f = i.figures?;
                let age = Millis::try_from(k.age_ms.unwrap_or(0)).unwrap_or(Millis::MAX);
                Some(NodeState {
                    node: k.node,
                    load: f.load,
                    speed: f.speed,
                    cpus: f.cpus,
                    mem_total: f.mem_total,
                    mem_free: f.mem_free,
                    flags: i.flags & Status::ADMIN,
                    measured_at: now.saturating_sub(age),
                })
            })
            .collect();
        (me, peers)
    }

    /// This node's local load (rises slowly, falls at once): what the balancer weighs here.
    fn local_load(&self) -> u32 {
        self.smoother
            .local_load(self.figures.cpus, self.figures.speed)
    }

    /// This node as the balancer sees it, with `load`.
    fn my_state(&self, now: Millis, load: u32) -> NodeState {
        let f = self.figures;
        NodeState {
            node: self.loaded.me,
            load,
            speed: f.speed,
            cpus: f.cpus,
            mem_total: f.mem_total,
            mem_free: f.mem_free,
            flags: self.flags,
            measured_at: now,
        }
    }

    /// Where `migrate PID balance` sends a process (`None`: it is best where it is): the
    /// balancer's choice for it now, from this node's view.
    fn balance_target(&self, pid: i32, home: &crate::split::procs::Home) -> Option<NodeId> {
        let (me, mut nodes) = self.node_states(self.now());
        match home.at {
            None => {
                let rss = procfs::process::Process::new(pid)
                    .and_then(|p| p.stat())
                    .map_or(0, |s| s.rss * procfs::page_size());
                mosix_core::balance::best_place(&me, &nodes, None, rss)
            }
            Some(at) => {
                let k = nodes.iter().position(|n| n.node == at)?;
                let there = nodes.swap_remove(k);
                nodes.push(me);
                mosix_core::balance::best_place(&there, &nodes, Some(me.node), home.remote_rss)
            }
        }
    }

    /// One round of automatic migration: measure the processes running here, ask the balancer,
    /// carry out its moves.
    fn balance(&mut self) {
        if !self.procs.enabled() {
            return;
        }
        let now = self.now();
        for e in self.procs.take_ended_moves() {
            let ago = Millis::try_from(e.at.elapsed().as_millis()).unwrap_or(Millis::MAX);
            self.balancer
                .settled(e.pid as u64, e.arrived, now.saturating_sub(ago));
        }
        let locals = self.tracker.look(now, &self.procs, &self.decay);
        if locals.is_empty() {
            return;
        }
        let (me, peers) = self.node_states(now);
        let states: Vec<_> = locals.iter().map(|l| l.state).collect();
        let moves = self
            .balancer
            .decide(now, &me, &peers, &states, &self.overheads);
        for m in moves {
            let Some(l) = locals.iter().find(|l| l.state.id == m.id) else {
                continue;
            };
            let pid = m.id as i32;
            let why = m.reason.word();
            match l.guest {
                Some((home, home_pid)) => {
                    info!(
                        "balancing ({why}): guest {pid} (pid {home_pid} of node {home}) should run on node {}",
                        m.to
                    );
                    if !self.procs.ask_guest_leave(pid, m.to, m.ceiling) {
                        self.balancer.forget(m.id);
                    }
                }
                None => {
                    info!("balancing ({why}): process {pid} goes to node {}", m.to);
                    let to = m.to;
                    let procs = Arc::clone(&self.procs);
                    crate::split::deputy::migrate(
                        pid,
                        to,
                        m.ceiling,
                        self.home_env(),
                        Box::new(move |r| {
                            if let Err(e) = &r {
                                info!("balancing: process {pid} could not go to node {to}: {e}");
                            }
                            procs.move_ended(pid, r.is_ok());
                        }),
                    );
                }
            }
        }
    }

    fn register(
        &mut self,
        pid: i32,
        lock: bool,
        decay: DecayMode,
        placement: Option<NodeId>,
        fallback_home: bool,
        reply: oneshot::Sender<Response>,
    ) {
        if pid <= 0 {
            let _ = reply.send(Response::Error(
                "cannot tell which process is asking".into(),
            ));
            return;
        }
        if let Err(e) = self.procs.register(pid, lock, decay) {
            let _ = reply.send(Response::Error(format!(
                "cannot make process {pid} a MOSIX process: {e}"
            )));
            return;
        }
        let Some(node) = placement.filter(|n| *n != self.loaded.me) else {
            let _ = reply.send(Response::Registered);
            return;
        };
        if let Err(e) = self.can_take(node) {
            if fallback_home {
                info!("process {pid} starts at home: {e}");
                let _ = reply.send(Response::Registered);
            } else {
                let _ = reply.send(Response::Error(e));
            }
            return;
        }
        crate::split::deputy::migrate_at_exec(
            pid,
            node,
            fallback_home,
            self.home_env(),
            Box::new(move |r| {
                let _ = reply.send(match r {
                    Ok(()) => Response::Registered,
                    Err(e) => Response::Error(e),
                });
            }),
        );
    }

    fn migrate(
        &mut self,
        uid: u32,
        pid: i32,
        to: Target,
        wait: bool,
        reply: oneshot::Sender<Response>,
    ) {
        let fail = |reply: oneshot::Sender<Response>, e: String| {
            let _ = reply.send(Response::Error(e));
        };
        let Ok(status) = procfs::process::Process::new(pid).and_then(|p| p.status()) else {
            return fail(reply, format!("no process {pid} on this node"));
        };
        if uid != 0 && uid != status.ruid && uid != status.euid {
            return fail(
                reply,
                format!(
                    "permission denied: process {pid} belongs to uid {}",
                    status.ruid
                ),
            );
        }
        if !self.procs.is_mosix(pid) {
            return fail(
                reply,
                format!("process {pid} is not a MOSIX process (start it with mosrun)"),
            );
        }
        let home = self.procs.home(pid);
        if home.moving {
            return fail(reply, format!("process {pid} is already moving"));
        }
        if to == Target::Balance {
            // Balancing is automatic migration on demand: what keeps the balancer away keeps
            // it away (a move to a named node is the user's own decision, and is allowed).
            if home.lock {
                return fail(
                    reply,
                    format!("process {pid} is locked (mosrun -L): balance leaves it where it is"),
                );
            }
            if let Some(f) = [(Status::STAY, "stay"), (Status::LSTAY, "lstay")]
                .iter()
                .find(|(bit, _)| self.flags.contains(*bit))
            {
                return fail(
                    reply,
                    format!(
                        "this node is set to {} (mosctl no{} lifts it): balance moves nothing",
                        f.1, f.1
                    ),
                );
            }
        }
        let target = match to {
            Target::Home => self.loaded.me,
            Target::Node(n) => n,
            Target::Balance => self
                .balance_target(pid, &home)
                .unwrap_or(home.at.unwrap_or(self.loaded.me)),
        };
        let here = home.at.unwrap_or(self.loaded.me);
        if target == here {
            let node = home.at.map_or(0, NodeId::get);
            let _ = reply.send(Response::Migrated { node, done: true });
            return;
        }
        if let Err(e) = self.can_take(target) {
            return fail(reply, e);
        }
        let procs = Arc::clone(&self.procs);
        let env = self.home_env();
        let me = self.loaded.me;
        if home.at.is_some() && target != me {
            // Away, to go elsewhere: it moves there directly.
            let done = answer_when(pid, target, wait, reply);
            if let Err(ask) =
                procs.ask_move(pid, crate::split::handle::MoveAsk { node: target, done })
            {
                (ask.done)(Err(format!("process {pid} is between nodes; try again")));
            }
            return;
        }
        if home.at.is_some() {
            // Away, to come home.
            if !procs.ask_come_home(pid) {
                return fail(reply, format!("process {pid} is between nodes; try again"));
            }
            let spawned = std::thread::Builder::new()
                .name(format!("mosix-move-{pid}"))
                .spawn(move || {
                    let back = wait_home(&procs, pid);
                    if !back {
                        let _ =
                            reply.send(Response::Error(format!("process {pid} did not come home")));
                        return;
                    }
                    let _ = reply.send(Response::Migrated {
                        node: 0,
                        done: true,
                    });
                });
            if let Err(e) = spawned {
                warn!("cannot start a thread: {e}");
            }
            return;
        }
        if let Some(why) = crate::split::procs::why_not(pid) {
            return fail(
                reply,
                format!("process {pid} cannot move: {}", why.explain()),
            );
        }
        send(pid, target, env, wait, reply);
    }

    /// `mosctl expel` (every guest goes home) or `bring` (every process of ours comes home):
    /// asks them all at once, answers when none is left or after a minute, with the counts.
    fn move_all(&mut self, expel: bool, reply: oneshot::Sender<Response>) {
        let procs = Arc::clone(&self.procs);
        let (asked, what) = if expel {
            (procs.expel_guests(), "guests sent home")
        } else {
            (procs.bring_all(), "processes brought home")
        };
        info!("{}: {asked} {what}", if expel { "expel" } else { "bring" });
        let left = move |p: &Procs| {
            if expel {
                p.guests().len() as u32
            } else {
                p.away()
            }
        };
        let spawned = std::thread::Builder::new()
            .name("mosix-move-all".into())
            .spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while left(&procs) > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = reply.send(Response::Moved {
                    asked,
                    left: left(&procs),
                });
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread: {e}");
        }
    }

    fn allowed(&self, uid: u32) -> bool {
        uid == 0 || uid == self.euid
    }

    async fn control(&mut self, req: Request, uid: u32) -> Response {
        let changes = !matches!(
            req,
            Request::Ping
                | Request::View
                | Request::GetDecay
                | Request::GetTune
                | Request::GetConfig
        );
        if changes && !self.allowed(uid) {
            return Response::Error(
                "permission denied: changing the node's configuration needs root".into(),
            );
        }
        match req {
            Request::Ping => Response::Pong(ServiceInfo {
                node: self.loaded.me,
                pid: std::process::id(),
                version: mosix_core::VERSION.to_owned(),
            }),
            Request::View => Response::View(self.view()),
            Request::SetFlag { flag, on } => {
                self.flags.set(flag.bit(), on);
                self.blocked.store(
                    self.flags.contains(Status::BLOCK),
                    std::sync::atomic::Ordering::Relaxed,
                );
                info!(
                    "{}{} set by uid {uid}",
                    if on { "" } else { "no" },
                    match flag {
                        Flag::NoMfs => "mfs (MFS off)",
                        f => f.set_word(),
                    }
                );
                // Tell the cluster at the next tick; our own view changes at once.
                let now = self.now();
                let info = self.own_info();
                self.diss.set_local(info, now);
                Response::Done
            }
            Request::SetSpeed { speed } => {
                if speed == 0 || speed > 100_000_000 {
                    return Response::Error(format!("speed {speed} is out of range 1..100000000"));
                }
                self.speed_override = Some(speed);
                self.figures.speed = speed;
                info!("speed set to {speed} by uid {uid}");
                Response::Done
            }
            Request::GetDecay => Response::Decay(self.decay),
            Request::SetDecay(d) => match d.validate() {
                Ok(()) => {
                    self.decay = d;
                    info!(
                        "decay set to interval {} s, slow {}, fast {} by uid {uid}",
                        d.interval_s, d.slow, d.fast
                    );
                    Response::Done
                }
                Err(e) => Response::Error(e),
            },
            Request::GetTune => Response::Tune(self.overheads.clone()),
            Request::LoadTune => {
                let (o, why) = Overheads::load(&self.paths.overheads());
                match why {
                    Some(why) => {
                        warn!("overheads not reloaded, the ones in use are kept: {why}");
                        Response::Error(format!(
                            "the overheads file was not loaded, the costs in use are kept: {why}"
                        ))
                    }
                    None => {
                        info!(
                            "migration costs reloaded by uid {uid} from {} ({} rows)",
                            o.source,
                            o.rows.len()
                        );
                        self.overheads = o;
                        Response::Tune(self.overheads.clone())
                    }
                }
            }
            Request::GetConfig => Response::Config(RunningConfig {
                node: self.loaded.me,
                map_text: self.loaded.map.to_text(),
                map_name: self.loaded.map_name.clone(),
                port: self.loaded.tunables.link.port,
                interval_ms: self.diss.config().interval_ms,
                window: self.diss.config().window,
                dead_after_ms: self.diss.config().dead_after_ms.unwrap_or(0),
                measuring: self.scope.describe(),
            }),
            Request::Reconfigure {
                map_name,
                map_text,
                node,
            } => match self.reconfigure(&map_name, &map_text, node).await {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Shutdown => {
                info!("stopping at the request of uid {uid}");
                Response::Done
            }
            Request::Procs { guests } => Response::Procs(self.procs.rows(guests)),
            Request::Register { .. }
            | Request::Migrate { .. }
            | Request::Expel
            | Request::Bring => Response::Error("internal: handled elsewhere".into()),
        }
    }

    fn view(&self) -> ClusterView {
        let now = self.now();
        let nodes = self
            .diss
            .known(now)
            .map(|k| {
                let addr = self
                    .loaded
                    .map
                    .addr_of(k.node)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                if k.is_self {
                    return NodeView {
                        node: k.node,
                        addr,
                        is_self: true,
                        up: true,
                        age_ms: Some(0),
                        status: Status::CONF | Status::UP | self.flags,
                        figures: Some(self.figures),
                    };
                }
                let flags = k.info.map_or(Status::empty(), |i| i.flags & Status::ADMIN);
                let mut status = Status::CONF | flags;
                status.set(Status::UP, k.up);
                NodeView {
                    node: k.node,
                    addr,
                    is_self: false,
                    up: k.up,
                    age_ms: k.age_ms,
                    status,
                    figures: k.info.and_then(|i| i.figures),
                }
            })
            .collect();
        ClusterView {
            me: self.loaded.me,
            interval_ms: self.diss.config().interval_ms,
            dead_after_ms: self.diss.config().dead_after_ms.unwrap_or(0),
            nodes,
        }
    }

    /// `setpe -W`: a new map (and a fresh read of mosix.toml and the secret), applied in place.
    async fn reconfigure(
        &mut self,
        map_name: &str,
        map_text: &str,
        forced: Option<NodeId>,
    ) -> Result<(), ServiceError> {
        let new = load(&self.paths, map_name, map_text, forced)?;
        let port = new.tunables.link.port;
        if new.my_addr != self.loaded.my_addr || port != self.loaded.tunables.link.port {
            let tcp = bind_link(new.my_addr, port).await?;
            self.accept.abort();
            self.accept = tokio::spawn(link::accept_loop(
                tcp,
                Arc::clone(&self.ctx),
                self.events.clone(),
                Arc::clone(&self.throttle),
            ));
        }
        let ctx = Arc::new(LinkContext {
            me: new.me,
            my_addr: new.my_addr,
            map: new.map.clone(),
            secret: new.secret.clone(),
            port,
            connect_timeout: Duration::from_millis(new.tunables.link.connect_timeout_ms),
        });
        match self.ctx.write() {
            Ok(mut g) => *g = ctx,
            Err(poisoned) => *poisoned.into_inner() = ctx,
        }
        self.outbound.reset();
        self.diss
            .set_nodes(new.map.nodes(), new.me)
            .map_err(|e| ServiceError::Identity {
                map: map_name.to_owned(),
                source: IdentityError::NoAddress(e.to_string()),
            })?;
        self.diss.set_config(gossip_config(&new));
        self.last_up.clear();
        self.overheads = load_overheads(&self.paths);
        info!(
            "configuration replaced: node {} at {}:{} (map {}, {} nodes)",
            new.me,
            new.my_addr,
            port,
            new.map_name,
            new.map.node_count()
        );
        self.loaded = new;
        Ok(())
    }
}
