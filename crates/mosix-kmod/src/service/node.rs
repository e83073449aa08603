//! The main loop's state — [`Node`] — and what it does with each [`Event`]: gossip in and out,
//! the samples of the node's load, processes arriving, destinations of direct moves rejoining,
//! and the view of the cluster the tools read. Requests of the tools are answered in
//! [`super::requests`], moves in [`super::moves`].

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mosix_core::balance::{Balancer, NodeState};
use mosix_core::client::{ClusterView, NodeView};
use mosix_core::config::{DecayTunables, Paths};
use mosix_core::gossip::{Dissemination, Millis};
use mosix_core::load::{Figures, LoadSmoother, NodeInfo};
use mosix_core::map::IdentityError;
use mosix_core::overheads::Overheads;
use mosix_core::proto::{self, LinkMsg};
use mosix_core::{NodeId, Status};
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::policy::{self, Seen};
use super::{
    Event, Loaded, ServiceError, balancing, bind_link, gossip_config, link_context, load,
    load_mfscosts, load_overheads,
};
use crate::link::{self, Inbound, Outbound, SharedContext, Throttle};
use crate::node::admission::Admission;
use crate::node::guests::GuestCgroup;
use crate::node::measure::Scope;
use crate::split::deputy::HomeEnv;
use crate::split::handle::RejoinOffer;
use crate::split::procs::Procs;
use crate::split::remote::GuestEnv;

/// The link as the main loop holds it.
pub(super) struct LinkState {
    /// The read-mostly context every connection uses, replaced whole on `setpe -W`.
    pub ctx: SharedContext,
    /// The outbound gossip writers.
    pub outbound: Outbound,
    /// Repeated log lines about one peer.
    pub throttle: Arc<Throttle>,
    /// The accepting task.
    pub accept: JoinHandle<()>,
}

/// The dissemination and what the loop needs to run it.
pub(super) struct Gossip {
    /// The state machine.
    pub diss: Dissemination<NodeInfo>,
    /// The clock of the state machine starts here.
    pub start: Instant,
    /// Peers are chosen at random.
    pub rng: SmallRng,
    /// Which nodes were up at the last tick, to log changes.
    pub last_up: Vec<(NodeId, bool)>,
}

/// What this node measures of itself.
pub(super) struct Load {
    /// The machine or the node's cgroup.
    pub scope: Scope,
    /// MOSIX's two smoothings.
    pub smoother: LoadSmoother,
    /// The figures of the last sample.
    pub figures: Figures,
    /// `mosctl setspeed`.
    pub speed_override: Option<u32>,
}

/// Automatic migration here.
pub(super) struct Balancing {
    /// The balancer of `mosix-core`.
    pub balancer: Balancer,
    /// What it knows of the processes here.
    pub tracker: balancing::Tracker,
    /// Migration costs (`/etc/overheads`).
    pub overheads: Overheads,
    /// File access costs (`/etc/mfscosts`).
    pub mfscosts: mosix_core::mfscosts::MfsCosts,
    /// Decay of the processes' statistics.
    pub decay: DecayTunables,
    /// Consent to automatic moves here.
    pub admission: Arc<Admission>,
    /// When a process frozen because home was overloaded was last brought back.
    pub last_continue: Option<mosix_core::gossip::Millis>,
    /// Guests of other clusters asked to leave, and when (asked again only after a while).
    pub displaced: std::collections::HashMap<u64, Millis>,
    /// The load guests of other clusters make here (sent with this node's figures).
    pub foreign_load: u32,
    /// The load this cluster's processes here make by their demand (sent with the figures).
    pub own_load: u32,
}

/// The jobs queued here (`mosrun -q`); what is done with them is `super::queue`.
#[derive(Default)]
pub(super) struct Queueing {
    /// The queue.
    pub jobs: mosix_core::queue::Queue<Waiting>,
    /// The jobs started from it that still run.
    pub started: Vec<Started>,
    /// Starts and ends of those jobs the figures may not show yet (a few seconds' worth).
    pub recent: Vec<mosix_core::queue::Recent>,
}

/// A job the queue started, while it runs.
pub(super) struct Started {
    /// Its pid.
    pub pid: u32,
    /// Where it runs, as last seen (this node: `None`).
    pub node: Option<mosix_core::NodeId>,
    /// When it started (the dissemination's clock).
    pub at: Millis,
}

/// What the service keeps of a queued job: how its `mosrun` is answered, and since when it
/// waits.
pub(super) struct Waiting {
    /// The answer's channel (closed when `mosrun` went away).
    pub reply: tokio::sync::oneshot::Sender<mosix_core::client::Response>,
    /// When it was queued.
    pub since: Instant,
}

/// The main loop's state.
pub(super) struct Node {
    pub paths: Paths,
    pub loaded: Loaded,
    pub link: LinkState,
    pub gossip: Gossip,
    pub load: Load,
    pub balancing: Balancing,
    /// The guests' cgroup (`None`: this node takes no guests).
    pub guests: Option<Arc<GuestCgroup>>,
    /// This node's flags (stay, block, …).
    pub flags: Status,
    /// The BLOCK flag, for the guest threads.
    pub blocked: Arc<AtomicBool>,
    /// The CLOSED flag (closed to the grid), for the guest threads.
    pub closed: Arc<AtomicBool>,
    /// The last `mosctl isolate`/`rejoin` of this cluster this node knows (when, isolated).
    pub isolation: Option<(u64, bool)>,
    /// The jobs queued here (`mosrun -q`).
    pub queue: Queueing,
    /// The most guests of other clusters at once (`u32::MAX`: no limit), for the guest threads.
    pub grid_guests: Arc<std::sync::atomic::AtomicU32>,
    /// MOSIX processes and guests.
    pub procs: Arc<Procs>,
    /// The main loop's own queue (the link's accepting task sends to it).
    pub events: mpsc::Sender<Event>,
    /// The service's effective uid: it may change the configuration too.
    pub euid: u32,
    /// The MOSIX File System (`None`: it could not start; the log says why).
    pub mfs: Option<crate::mfs::Mfs>,
    /// Direct file access of guests to this node's files (with MFS).
    pub dfsa: Option<Arc<crate::split::remote::dfsa::DfsaNode>>,
}

impl Node {
    /// Milliseconds on the dissemination's clock.
    pub fn now(&self) -> Millis {
        Millis::try_from(self.gossip.start.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    /// This node's entry in the gossip.
    pub fn own_info(&self) -> NodeInfo {
        NodeInfo {
            flags: self.flags,
            figures: if self.flags.contains(Status::QUIET) {
                None
            } else {
                Some(self.load.figures)
            },
            queue: self.queue.jobs.head(),
            isolation: self.isolation,
        }
    }

    /// When the next gossip message is due.
    pub fn next_send(&self) -> Instant {
        let due = u64::try_from(self.gossip.diss.next_send()).unwrap_or(0);
        self.gossip.start + Duration::from_millis(due)
    }

    /// Time to gossip: refresh our entry and send the window to a random peer.
    pub fn tick(&mut self) {
        // The timer fired for next_send; do not let millisecond rounding make the send not due.
        let now = self.now().max(self.gossip.diss.next_send());
        let info = self.own_info();
        self.gossip.diss.set_local(info, now);
        if let Some((to, msg)) = self.gossip.diss.send(now, &mut self.gossip.rng) {
            let frame = Arc::new(proto::encode(&LinkMsg::Gossip(msg)));
            self.link.outbound.send(to, frame);
        }
        self.log_changes(now);
    }

    fn log_changes(&mut self, now: Millis) {
        let dead_after = self.gossip.diss.config().dead_after_ms.unwrap_or(0);
        let current: Vec<(NodeId, bool)> = self
            .gossip
            .diss
            .known(now)
            .filter(|k| !k.is_self)
            .map(|k| (k.node, k.up))
            .collect();
        if self.gossip.last_up.len() == current.len() {
            for ((n, was), (_, is)) in self.gossip.last_up.iter().zip(&current) {
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
        self.gossip.last_up = current;
    }

    /// Handles one event; returns true when the service should stop.
    pub async fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Link(Inbound::Gossip { from, mut msg }) => {
                let now = self.now();
                // A partner's node speaks only for its own cluster's nodes: it may not tell
                // this cluster about its own nodes (their load, flags, an isolation) nor about
                // a third cluster's.
                let own = self.loaded.map.contains(from);
                if !own {
                    match self.loaded.grid.partner_of(from) {
                        Some(p) => msg.entries.retain(|e| p.map.contains(e.node)),
                        None => msg.entries.clear(),
                    }
                }
                if let Some(answer) = self.gossip.diss.receive_from(from, &msg, now) {
                    let frame = Arc::new(proto::encode(&LinkMsg::Gossip(answer)));
                    self.link.outbound.send(from, frame);
                }
                if own {
                    self.follow_isolation(&msg);
                }
            }
            Event::QueuedJobEnded => {
                let now = self.now();
                self.queue_round(now);
            }
            Event::Sample(mut s) => {
                if let Some(sp) = self.load.speed_override {
                    s.speed = sp;
                }
                self.load.figures = self.load.smoother.figures(&s);
                self.load.figures.foreign = self.balancing.foreign_load;
                self.load.figures.own = self.balancing.own_load;
                // Consent is judged on the exported load, which rises at once.
                self.balancing
                    .admission
                    .update(self.my_state(self.now(), self.load.figures.load));
                self.balance();
                let now = self.now();
                self.queue_round(now);
                self.checkpoint_round();
                self.export_metrics(now);
            }
            Event::Link(Inbound::Rejoin {
                from,
                pid,
                token,
                local_pid,
                stream,
            }) => {
                let offer = RejoinOffer {
                    from,
                    token,
                    local_pid,
                    stream,
                };
                if let Err(o) = self.procs.offer_rejoin(pid as i32, offer) {
                    let me = self.loaded.me;
                    o.refuse(me, format!("process {pid} is not away from node {me}"));
                }
            }
            Event::Link(Inbound::Process { from, stream }) => {
                let env = self.guest_env();
                let spawned = std::thread::Builder::new()
                    .name(format!("mosix-guest-from-{from}"))
                    .spawn(move || crate::split::remote::accept(stream, from, env));
                if let Err(e) = spawned {
                    warn!("cannot start a guest thread: {e}");
                }
            }
            Event::Link(Inbound::ListQueue { from, stream }) => self.list_queue_for(from, stream),
            Event::Link(Inbound::Ask { from, ask, stream }) => self.answer_ask(from, ask, stream),
            Event::Link(Inbound::Files {
                from,
                session,
                stream,
            }) => match &self.mfs {
                Some(m) => {
                    let server = Arc::clone(&m.server);
                    let spawned = std::thread::Builder::new()
                        .name(format!("mosix-mfs-for-{from}"))
                        .spawn(move || server.serve(from, session, stream));
                    if let Err(e) = spawned {
                        warn!("cannot start an MFS thread: {e}");
                    }
                }
                None => tracing::debug!("node {from} asked for files; MFS is not running here"),
            },
            Event::Control {
                req,
                uid,
                pid,
                reply,
            } => return self.request(req, uid, pid, reply).await,
            Event::CheckpointMe { uid, pid, reply } => self.checkpoint_me(uid, pid, reply),
        }
        false
    }

    /// Where this node freezes processes (`[freeze]`).
    pub fn freeze_area(&self) -> crate::split::frozen::FreezeArea {
        crate::split::frozen::FreezeArea {
            dir: self.loaded.tunables.freeze.dir.clone(),
            max_user_mib: self.loaded.tunables.freeze.max_user_mib,
        }
    }

    /// What the home side of a migration needs from this node.
    pub fn home_env(&self) -> HomeEnv {
        HomeEnv {
            me: self.loaded.me,
            procs: Arc::clone(&self.procs),
            link: Arc::clone(&self.link.ctx),
            files: (
                self.loaded.tunables.mfs.mount.clone(),
                self.loaded.tunables.mfs.dfsa_paths.clone(),
            ),
        }
    }

    /// What a guest's supervisor needs from this node.
    fn guest_env(&self) -> GuestEnv {
        GuestEnv {
            me: self.loaded.me,
            procs: Arc::clone(&self.procs),
            blocked: Arc::clone(&self.blocked),
            closed: Arc::clone(&self.closed),
            grid_guests: Arc::clone(&self.grid_guests),
            link: Arc::clone(&self.link.ctx),
            admission: Arc::clone(&self.balancing.admission),
            guests: self.loaded.tunables.guests.clone(),
            cgroup: self.guests.clone(),
            dfsa: self.dfsa.clone(),
            live: self.live_above(),
        }
    }

    /// Whether node `n` can take a process now; why not otherwise.
    pub fn can_take(&self, n: NodeId) -> Result<(), String> {
        let seen = match self.gossip.diss.get(n, self.now()) {
            None => Seen::Unknown,
            Some(k) => Seen::Known {
                up: k.up,
                flags: k.info.map_or(Status::empty(), |i| i.flags),
            },
        };
        policy::can_take(n, self.loaded.me, seen)?;
        let flags = self
            .gossip
            .diss
            .get(n, self.now())
            .and_then(|k| k.info)
            .map_or(Status::empty(), |i| i.flags);
        self.may_go(n, flags)
    }

    /// This node (with its local load) and the live peers that disseminate their load, as the
    /// balancer sees them: the nodes of partners this node's processes may go to (with their
    /// whole load), and the nodes of this cluster with the load of other clusters' guests taken
    /// off (they would make room for a process of this cluster).
    pub fn node_states(&self, now: Millis) -> (NodeState, Vec<NodeState>) {
        let me = self.my_state(now, self.local_load());
        let peers = self
            .peer_states(now)
            .into_iter()
            .filter(|p| self.may_go(p.node, p.flags).is_ok())
            .filter_map(|mut p| {
                let f = self.figures_of(p.node, now)?;
                if self.loaded.map.contains(p.node) {
                    p.load = p.load.saturating_sub(f.foreign);
                } else {
                    // A partner's node its own processes fill would displace ours at once (its
                    // own figure, measured as its admission counts: `load - foreign` would
                    // count a guest that just left as its own for the seconds its smoothed load
                    // takes to fall, and keep a partner's free node out of reach).
                    if p.procs(f64::from(f.own)) + 1.0 > f64::from(p.cpus.max(1)) + 0.25 {
                        return None;
                    }
                }
                Some(p)
            })
            .collect();
        (me, peers)
    }

    /// The figures node `n` last sent.
    fn figures_of(&self, n: NodeId, now: Millis) -> Option<Figures> {
        self.gossip.diss.get(n, now).and_then(|k| k.info?.figures)
    }

    /// Every live peer that disseminates its load, with the figures it sent.
    pub fn peer_states(&self, now: Millis) -> Vec<NodeState> {
        self.gossip
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
            .collect()
    }

    /// This node's local load (rises slowly, falls at once): what the balancer weighs here.
    fn local_load(&self) -> u32 {
        let f = self.load.figures;
        self.load.smoother.local_load(f.cpus, f.speed)
    }

    /// This node as the balancer sees it, with `load`.
    fn my_state(&self, now: Millis, load: u32) -> NodeState {
        let f = self.load.figures;
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

    /// The cluster as this node sees it (`mon`, `mosctl status`).
    pub fn view(&self) -> ClusterView {
        let now = self.now();
        let (partners, own_guests) = self.partner_views(now);
        let nodes = self
            .gossip
            .diss
            .known(now)
            .map(|k| {
                let addr = self
                    .loaded
                    .map
                    .addr_of(k.node)
                    .or_else(|| {
                        self.loaded
                            .grid
                            .partner_of(k.node)
                            .and_then(|p| p.map.addr_of(k.node))
                    })
                    .unwrap_or(Ipv4Addr::UNSPECIFIED);
                let cluster = self.loaded.grid.partner_of(k.node).map(|p| p.name.clone());
                if k.is_self {
                    return NodeView {
                        node: k.node,
                        addr,
                        is_self: true,
                        up: true,
                        age_ms: Some(0),
                        status: Status::CONF | Status::UP | self.flags,
                        figures: Some(self.load.figures),
                        cluster,
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
                    cluster,
                }
            })
            .collect();
        let cfg = self.gossip.diss.config();
        ClusterView {
            me: self.loaded.me,
            interval_ms: cfg.interval_ms,
            dead_after_ms: cfg.dead_after_ms.unwrap_or(0),
            nodes,
            files: self.file_counters(),
            cluster: self.loaded.tunables.grid.name.clone(),
            partners,
            own_guests,
            max_grid_guests: self.max_grid_guests(),
        }
    }

    /// Sets the metrics' gauges: this node's figures, how it sees each peer, its processes,
    /// guests and queue (once a second, after the new sample).
    fn export_metrics(&self, now: Millis) {
        let m = mosix_core::metrics::global();
        m.set_node(
            self.loaded.me,
            &self.loaded.tunables.grid.name,
            &self.load.figures,
        );
        for k in self.gossip.diss.known(now).filter(|k| !k.is_self) {
            m.set_peer(k.node, k.up, k.age_ms);
        }
        let (away, frozen, guests) = self.procs.counts();
        let members = self.procs.members().len() as i64;
        let home = (members - i64::from(away) - i64::from(frozen)).max(0);
        for (state, n) in [
            ("home", home),
            ("away", away.into()),
            ("frozen", frozen.into()),
        ] {
            m.processes.with_label_values(&[state]).set(n);
        }
        m.guests.set(guests.into());
        m.queue
            .with_label_values(&["waiting"])
            .set(self.queue.jobs.len() as i64);
        m.queue
            .with_label_values(&["started"])
            .set(self.queue.started.len() as i64);
    }

    /// The MFS and DFSA counters.
    fn file_counters(&self) -> mosix_core::client::FileCounters {
        use std::sync::atomic::Ordering::Relaxed;
        let mut f = mosix_core::client::FileCounters::default();
        if let Some(m) = &self.mfs {
            f.mfs_served = m.server.served.load(Relaxed);
            f.mfs_served_bytes = m.server.bytes.load(Relaxed);
            f.mfs_sent = m.stats.remote_requests.load(Relaxed);
            f.mfs_sent_bytes = m.stats.remote_bytes.load(Relaxed);
        }
        if let Some(d) = &self.dfsa {
            f.dfsa_opens = d.opens.load(Relaxed);
            f.dfsa_calls = d.calls.load(Relaxed);
        }
        f
    }

    /// `setpe -W`: a new map (and a fresh read of mosix.toml and the secret), applied in place.
    pub async fn reconfigure(
        &mut self,
        map_name: &str,
        map_text: &str,
        forced: Option<NodeId>,
    ) -> Result<(), ServiceError> {
        let new = load(&self.paths, map_name, map_text, forced)?;
        let port = new.tunables.link.port;
        if new.my_addr != self.loaded.my_addr || port != self.loaded.tunables.link.port {
            let tcp = bind_link(new.my_addr, port).await?;
            self.link.accept.abort();
            self.link.accept = tokio::spawn(link::accept_loop(
                tcp,
                Arc::clone(&self.link.ctx),
                self.events.clone(),
                Arc::clone(&self.link.throttle),
            ));
        }
        let ctx = Arc::new(link_context(&new));
        match self.link.ctx.write() {
            Ok(mut g) => *g = ctx,
            Err(poisoned) => *poisoned.into_inner() = ctx,
        }
        self.link.outbound.reset();
        self.gossip
            .diss
            .set_nodes(new.all_nodes(), new.me)
            .map_err(|e| ServiceError::Identity {
                map: map_name.to_owned(),
                source: IdentityError::NoAddress(e.to_string()),
            })?;
        self.gossip.diss.set_config(gossip_config(&new));
        self.gossip
            .diss
            .set_foreign(&new.grid.clusters(), new.cross_config());
        self.gossip.last_up.clear();
        self.balancing.overheads = load_overheads(&self.paths);
        self.balancing.mfscosts = load_mfscosts(&self.paths);
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
