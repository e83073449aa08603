//! What a node service counts, in the Prometheus text format: the figures of this node and
//! how fresh its view of each peer is (set once a second by the service), and counters the
//! parts of the service bump as things happen — migrations out and in with their bytes and a
//! duration histogram, forwarded calls answered at home with a latency histogram (and the
//! round trip the remote side waits), refused moves and lost processes by reason, link
//! troubles and authentication failures. The service serves them on `[metrics] listen`
//! (mosix.toml(5)); `mon --once --prometheus` writes the cluster's view in the same names for a
//! textfile collector ([`cluster_text`]).
//!
//! One set per process ([`global`]): a node service is one process, and the counters are
//! plain atomics, so a thread of a migrated process counts without reaching the main loop.
//! Per-call paths use handles resolved once ([`Metrics::call_answered`]), never a label
//! lookup per call.

use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::client::ClusterView;
use crate::node::NodeId;

/// The content type of the text format served.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the service serves its metrics by default ([`crate::config::DEFAULT_METRICS_LISTEN`]).
pub const DEFAULT_LISTEN: &str = crate::config::DEFAULT_METRICS_LISTEN;

/// Why a migrated process was lost at home (the label of `mosix_processes_lost_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Its connection home was lost (its node died, or a cut outlasted the grace period).
    Link,
    /// It could not come home.
    ComingHome,
    /// Lost during a direct move from one remote node to another.
    DirectMove,
    /// `mosrun -NODE` could not start it there and it was not to run at home.
    Start,
    /// Its deputy or the thread answering its calls could not be made.
    Kernel,
}

impl Lost {
    fn label(self) -> &'static str {
        match self {
            Lost::Link => "link-lost",
            Lost::ComingHome => "coming-home",
            Lost::DirectMove => "direct-move",
            Lost::Start => "start",
            Lost::Kernel => "kernel",
        }
    }
}

/// Which way a move went, seen from this node (the `direction` and `role` labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// A process of this node left for another node.
    Out,
    /// A process of this node came home.
    Home,
    /// A guest arrived here.
    GuestIn,
    /// A guest here left (moved on or went home).
    GuestOut,
}

impl Move {
    fn labels(self) -> [&'static str; 2] {
        match self {
            Move::Out => ["out", "own"],
            Move::Home => ["in", "own"],
            Move::GuestIn => ["in", "guest"],
            Move::GuestOut => ["out", "guest"],
        }
    }
}

/// How a forwarded call was answered at home (the `class` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    /// By the deputy's agent thread (most file and descriptor calls).
    Service,
    /// Injected into the deputy itself.
    Deputy,
    /// A write behind: the remote did not wait for it.
    WriteBehind,
}

/// The metrics of one node service.
pub struct Metrics {
    registry: Registry,
    /// `mosix_node_info{node,cluster,version}`: 1.
    pub info: IntGaugeVec,
    node_load: GaugeVec,
    node_speed: IntGaugeVec,
    node_cpus: IntGaugeVec,
    node_memory: IntGaugeVec,
    node_util: GaugeVec,
    peer_up: IntGaugeVec,
    peer_age: GaugeVec,
    /// `mosix_processes{state}`: this node's MOSIX processes at home, away, frozen.
    pub processes: IntGaugeVec,
    /// `mosix_guests`: processes of other nodes running here.
    pub guests: IntGauge,
    /// `mosix_queue_jobs{state}`: queued jobs waiting and started.
    pub queue: IntGaugeVec,
    migrations: IntCounterVec,
    migration_bytes: IntCounterVec,
    migration_seconds: HistogramVec,
    /// `mosix_live_migrations_total`: moves out whose memory went while the process ran.
    pub live_migrations: IntCounter,
    migration_failures: IntCounterVec,
    refusals: IntCounterVec,
    lost: IntCounterVec,
    calls: [(IntCounter, Histogram); 3],
    /// `mosix_call_round_trip_seconds`: how long a guest here waited for a forwarded call's
    /// answer from its home.
    pub call_round_trip: Histogram,
    link_troubles: IntCounterVec,
    /// `mosix_auth_failures_total`: connections or frames that failed authentication.
    pub auth_failures: IntCounter,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("mosix")
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace("mosix")
        .buckets(buckets)
}

/// Registers a collector built from constant, valid options: cannot fail but for a name
/// registered twice, which the tests rule out.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("metric names are distinct");
    c
}

/// The figures of nodes, by node: shared by the service's metrics and `mon --prometheus`.
struct NodeGauges {
    load: GaugeVec,
    speed: IntGaugeVec,
    cpus: IntGaugeVec,
    memory: IntGaugeVec,
    util: GaugeVec,
}

impl NodeGauges {
    #[allow(clippy::expect_used)]
    fn new(r: &Registry) -> NodeGauges {
        let n = &["node"];
        NodeGauges {
            load: reg(
                r,
                GaugeVec::new(
                    opts(
                        "node_load",
                        "Load of the node in standard CPUs busy (MOSIX load / 100)",
                    ),
                    n,
                )
                .expect("valid"),
            ),
            speed: reg(
                r,
                IntGaugeVec::new(
                    opts(
                        "node_speed",
                        "Speed of one CPU of the node (10000 = the standard CPU)",
                    ),
                    n,
                )
                .expect("valid"),
            ),
            cpus: reg(
                r,
                IntGaugeVec::new(opts("node_cpus", "CPUs of the node"), n).expect("valid"),
            ),
            memory: reg(
                r,
                IntGaugeVec::new(
                    opts(
                        "node_memory_bytes",
                        "Memory of the node: total, available (free plus reclaimable) and free",
                    ),
                    &["node", "kind"],
                )
                .expect("valid"),
            ),
            util: reg(
                r,
                GaugeVec::new(
                    opts(
                        "node_utilization_ratio",
                        "Share of the node's CPU capacity used over the last interval",
                    ),
                    n,
                )
                .expect("valid"),
            ),
        }
    }

    fn set(&self, node: NodeId, f: &crate::load::Figures) {
        let n = node.to_string();
        self.load
            .with_label_values(&[&n])
            .set(f64::from(f.load) / 100.0);
        self.speed.with_label_values(&[&n]).set(i64::from(f.speed));
        self.cpus.with_label_values(&[&n]).set(i64::from(f.cpus));
        for (kind, v) in [
            ("total", f.mem_total),
            ("available", f.mem_free),
            ("free", f.mem_rawfree),
        ] {
            self.memory
                .with_label_values(&[&n, kind])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        self.util
            .with_label_values(&[&n])
            .set(f64::from(f.util) / 100.0);
    }
}

/// Seconds, from 10 µs to 10 s: forwarded calls.
fn call_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1e-5, 4.0, 10).unwrap_or_default()
}

impl Metrics {
    /// A fresh set, every metric registered.
    #[allow(clippy::expect_used, clippy::too_many_lines)]
    pub fn new() -> Metrics {
        let r = Registry::new();
        let nodes = NodeGauges::new(&r);
        // Families with a class label; each class's handles resolved once, for the per-call path.
        let call_count = reg(
            &r,
            IntCounterVec::new(
                opts(
                    "forwarded_calls_total",
                    "System calls of migrated processes answered here, at their home",
                ),
                &["class"],
            )
            .expect("valid"),
        );
        let call_time = reg(
            &r,
            HistogramVec::new(
                hopts(
                    "forwarded_call_seconds",
                    "Time to answer a forwarded call at home, from its arrival to its answer sent",
                    call_buckets(),
                ),
                &["class"],
            )
            .expect("valid"),
        );
        let calls = ["service", "deputy", "write-behind"].map(|class| {
            (
                call_count.with_label_values(&[class]),
                call_time.with_label_values(&[class]),
            )
        });
        Metrics {
            info: reg(
                &r,
                IntGaugeVec::new(
                    opts("node_info", "This node: its number, cluster and version"),
                    &["node", "cluster", "version"],
                )
                .expect("valid"),
            ),
            node_load: nodes.load,
            node_speed: nodes.speed,
            node_cpus: nodes.cpus,
            node_memory: nodes.memory,
            node_util: nodes.util,
            peer_up: reg(
                &r,
                IntGaugeVec::new(
                    opts(
                        "peer_up",
                        "Whether this node counts the peer up (1) or down (0)",
                    ),
                    &["peer"],
                )
                .expect("valid"),
            ),
            peer_age: reg(
                &r,
                GaugeVec::new(
                    opts(
                        "peer_age_seconds",
                        "Age of this node's freshest information about the peer",
                    ),
                    &["peer"],
                )
                .expect("valid"),
            ),
            processes: reg(
                &r,
                IntGaugeVec::new(
                    opts(
                        "processes",
                        "MOSIX processes of this node: running at home, away on other nodes, frozen",
                    ),
                    &["state"],
                )
                .expect("valid"),
            ),
            guests: reg(
                &r,
                IntGauge::with_opts(opts("guests", "Processes of other nodes running here"))
                    .expect("valid"),
            ),
            queue: reg(
                &r,
                IntGaugeVec::new(
                    opts(
                        "queue_jobs",
                        "Jobs of this node queued with mosrun -q: waiting, and started",
                    ),
                    &["state"],
                )
                .expect("valid"),
            ),
            migrations: reg(
                &r,
                IntCounterVec::new(
                    opts(
                        "migrations_total",
                        "Completed moves: direction out or in, role own (this node's processes) or guest",
                    ),
                    &["direction", "role"],
                )
                .expect("valid"),
            ),
            migration_bytes: reg(
                &r,
                IntCounterVec::new(
                    opts(
                        "migration_bytes_total",
                        "Bytes of memory images sent and received by completed moves",
                    ),
                    &["direction"],
                )
                .expect("valid"),
            ),
            migration_seconds: reg(
                &r,
                HistogramVec::new(
                    hopts(
                        "migration_duration_seconds",
                        "Duration of completed moves, from the decision to the process running",
                        prometheus::exponential_buckets(0.005, 2.0, 14).unwrap_or_default(),
                    ),
                    &["direction"],
                )
                .expect("valid"),
            ),
            live_migrations: reg(
                &r,
                IntCounter::with_opts(opts(
                    "live_migrations_total",
                    "Completed moves out whose memory was sent while the process ran",
                ))
                .expect("valid"),
            ),
            migration_failures: reg(
                &r,
                IntCounterVec::new(
                    opts(
                        "migration_failures_total",
                        "Moves that did not complete, by kind: refused, gone, link-lost, kernel",
                    ),
                    &["direction", "kind"],
                )
                .expect("valid"),
            ),
            refusals: reg(
                &r,
                IntCounterVec::new(
                    opts(
                        "refused_moves_total",
                        "Moves to this node it refused, by reason",
                    ),
                    &["reason"],
                )
                .expect("valid"),
            ),
            lost: reg(
                &r,
                IntCounterVec::new(
                    opts(
                        "processes_lost_total",
                        "Migrated processes of this node ended by a failure, by reason",
                    ),
                    &["reason"],
                )
                .expect("valid"),
            ),
            calls,
            call_round_trip: reg(
                &r,
                Histogram::with_opts(hopts(
                    "call_round_trip_seconds",
                    "How long guests here waited for the answer of a call forwarded to their home",
                    call_buckets(),
                ))
                .expect("valid"),
            ),
            link_troubles: reg(
                &r,
                IntCounterVec::new(
                    opts(
                        "link_troubles_total",
                        "Connections and frames of the link turned away, by trouble (strangers, bad frames, busy, ...)",
                    ),
                    &["trouble"],
                )
                .expect("valid"),
            ),
            auth_failures: reg(
                &r,
                IntCounter::with_opts(opts(
                    "auth_failures_total",
                    "Link connections or frames that failed authentication (wrong secret, forged frame, false claim)",
                ))
                .expect("valid"),
            ),
            registry: r,
        }
    }

    /// This node's own figures and identity.
    pub fn set_node(&self, node: NodeId, cluster: &str, f: &crate::load::Figures) {
        self.info
            .with_label_values(&[&node.to_string(), cluster, crate::VERSION])
            .set(1);
        let g = NodeGauges {
            load: self.node_load.clone(),
            speed: self.node_speed.clone(),
            cpus: self.node_cpus.clone(),
            memory: self.node_memory.clone(),
            util: self.node_util.clone(),
        };
        g.set(node, f);
    }

    /// How this node sees a peer.
    pub fn set_peer(&self, peer: NodeId, up: bool, age_ms: Option<u64>) {
        let p = peer.to_string();
        self.peer_up.with_label_values(&[&p]).set(i64::from(up));
        match age_ms {
            Some(a) => self
                .peer_age
                .with_label_values(&[&p])
                .set(a as f64 / 1000.0),
            None => {
                let _ = self.peer_age.remove_label_values(&[&p]);
            }
        }
    }

    /// Forgets a peer no longer in the map.
    pub fn forget_peer(&self, peer: NodeId) {
        let p = peer.to_string();
        let _ = self.peer_up.remove_label_values(&[&p]);
        let _ = self.peer_age.remove_label_values(&[&p]);
    }

    /// A move completed: `bytes` of image sent or received, in `secs` seconds.
    pub fn moved(&self, way: Move, bytes: u64, secs: f64) {
        let [direction, role] = way.labels();
        self.migrations.with_label_values(&[direction, role]).inc();
        self.migration_bytes
            .with_label_values(&[direction])
            .inc_by(bytes);
        self.migration_seconds
            .with_label_values(&[direction])
            .observe(secs);
    }

    /// A move did not complete; `kind` is [`crate::moves::MoveFailure::kind`].
    pub fn move_failed(&self, way: Move, kind: &str) {
        self.migration_failures
            .with_label_values(&[way.labels()[0], kind])
            .inc();
    }

    /// This node refused a move here (`reason`: a short fixed word).
    pub fn refused(&self, reason: &str) {
        self.refusals.with_label_values(&[reason]).inc();
    }

    /// A migrated process of this node was lost.
    pub fn lost(&self, why: Lost) {
        self.lost.with_label_values(&[why.label()]).inc();
    }

    /// A forwarded call was answered at home in `secs` seconds.
    #[inline]
    pub fn call_answered(&self, class: CallClass, secs: f64) {
        let (c, h) = &self.calls[class as usize];
        c.inc();
        h.observe(secs);
    }

    /// The link turned something away (`trouble`: its short name); `auth`: it failed
    /// authentication.
    pub fn link_trouble(&self, trouble: &str, auth: bool) {
        self.link_troubles.with_label_values(&[trouble]).inc();
        if auth {
            self.auth_failures.inc();
        }
    }

    /// Everything, in the text format.
    pub fn text(&self) -> String {
        encode(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn encode(r: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding families gathered from a registry into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&r.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// This process's metrics.
pub fn global() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

/// A cluster view in the same names, every node labelled: `mosix_node_up`, the figures of
/// every node heard of, and `mosix_node_age_seconds` (for `mon --once --prometheus`).
#[allow(clippy::expect_used)]
pub fn cluster_text(view: &ClusterView) -> String {
    let r = Registry::new();
    let g = NodeGauges::new(&r);
    let up = reg(
        &r,
        IntGaugeVec::new(
            opts(
                "node_up",
                "Whether the answering node counts the node up (1) or down (0)",
            ),
            &["node"],
        )
        .expect("valid"),
    );
    let age = reg(
        &r,
        GaugeVec::new(
            opts(
                "node_age_seconds",
                "Age of the answering node's freshest information about the node",
            ),
            &["node"],
        )
        .expect("valid"),
    );
    for n in &view.nodes {
        let id = n.node.to_string();
        up.with_label_values(&[&id]).set(i64::from(n.up));
        if let Some(a) = n.age_ms {
            age.with_label_values(&[&id]).set(a as f64 / 1000.0);
        }
        if let Some(f) = &n.figures {
            g.set(n.node, f);
        }
    }
    encode(&r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Figures;

    fn n(id: u16) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn figures(load: u32, cpus: u32) -> Figures {
        Figures {
            load,
            speed: 10000,
            cpus,
            mem_total: 1 << 30,
            mem_free: 1 << 29,
            mem_rawfree: 1 << 28,
            util: 75,
            foreign: 0,
            foreign_guests: 0,
            own: 0,
        }
    }

    #[test]
    fn every_family_renders_with_help_and_type_and_counts_what_happened() {
        let m = Metrics::new();
        m.set_node(n(3), "local", &figures(150, 2));
        m.set_peer(n(4), true, Some(1500));
        m.set_peer(n(5), false, None);
        m.moved(Move::Out, 4096, 0.02);
        m.moved(Move::GuestIn, 8192, 0.03);
        m.move_failed(Move::Out, "refused");
        m.refused("load");
        m.lost(Lost::Link);
        m.call_answered(CallClass::Service, 0.0001);
        m.call_answered(CallClass::Service, 0.0002);
        m.call_answered(CallClass::WriteBehind, 0.0003);
        m.link_trouble("wrong-secret", true);
        let t = m.text();
        for want in [
            "mosix_node_info{cluster=\"local\",node=\"3\",version=",
            "mosix_node_load{node=\"3\"} 1.5\n",
            "mosix_node_memory_bytes{kind=\"free\",node=\"3\"} 268435456\n",
            "mosix_node_utilization_ratio{node=\"3\"} 0.75\n",
            "mosix_peer_up{peer=\"4\"} 1\n",
            "mosix_peer_up{peer=\"5\"} 0\n",
            "mosix_peer_age_seconds{peer=\"4\"} 1.5\n",
            "mosix_migrations_total{direction=\"out\",role=\"own\"} 1\n",
            "mosix_migrations_total{direction=\"in\",role=\"guest\"} 1\n",
            "mosix_migration_bytes_total{direction=\"in\"} 8192\n",
            "mosix_migration_duration_seconds_count{direction=\"out\"} 1\n",
            "mosix_migration_failures_total{direction=\"out\",kind=\"refused\"} 1\n",
            "mosix_refused_moves_total{reason=\"load\"} 1\n",
            "mosix_processes_lost_total{reason=\"link-lost\"} 1\n",
            "mosix_forwarded_calls_total{class=\"service\"} 2\n",
            "mosix_forwarded_call_seconds_count{class=\"write-behind\"} 1\n",
            "mosix_link_troubles_total{trouble=\"wrong-secret\"} 1\n",
            "mosix_auth_failures_total 1\n",
            "# TYPE mosix_forwarded_call_seconds histogram\n",
            "# HELP mosix_call_round_trip_seconds ",
        ] {
            assert!(t.contains(want), "{want:?} missing from:\n{t}");
        }
        assert!(!t.contains("mosix_peer_age_seconds{peer=\"5\"}"), "{t}");
        m.forget_peer(n(4));
        assert!(!m.text().contains("peer=\"4\""));
    }

    #[test]
    fn the_cluster_view_labels_every_node() {
        use crate::client::{ClusterView, NodeView};
        use crate::node::Status;
        let node = |id: u16, up: bool| NodeView {
            node: n(id),
            addr: std::net::Ipv4Addr::new(10, 0, 0, id as u8),
            is_self: id == 1,
            up,
            age_ms: up.then_some(200),
            status: Status::CONF,
            figures: up.then(|| figures(50, 1)),
            cluster: None,
        };
        let view = ClusterView {
            me: n(1),
            interval_ms: 1000,
            dead_after_ms: 10000,
            nodes: vec![node(1, true), node(2, false)],
            files: Default::default(),
            cluster: "local".into(),
            partners: Vec::new(),
            own_guests: 0,
            max_grid_guests: None,
        };
        let t = cluster_text(&view);
        assert!(t.contains("mosix_node_up{node=\"2\"} 0\n"), "{t}");
        assert!(t.contains("mosix_node_load{node=\"1\"} 0.5\n"), "{t}");
        assert!(
            t.contains("mosix_node_age_seconds{node=\"1\"} 0.2\n"),
            "{t}"
        );
        assert!(!t.contains("mosix_node_load{node=\"2\"}"), "{t}");
    }
}
