//! The grid as this node lives it (partners(5), [docs/grid.md](../../../../docs/grid.md)):
//! which cluster a node or a guest is of, where this node's processes may go, the guests that
//! make room for better priorities, and closing the node to the grid.
//!
//! The decisions are `mosix_core::grid` (which guests are displaced) and the balancer; this
//! file gathers their facts and carries them out. A displaced guest goes home, which moves it
//! on to a node of its own cluster with room or, having none itself, freezes it
//! ([`super::moves`], `mosix_core::freezing`). Nobody is killed.

use mosix_core::balance::NodeState;
use mosix_core::client::PartnerView;
use mosix_core::gossip::Millis;
use mosix_core::grid::{self, Claim, OWN_PRIORITY, Whose};
use mosix_core::proto::Expulsion;
use mosix_core::{NodeId, Status};
use tracing::info;

use super::balancing::Local;
use super::node::Node;

/// A guest asked to leave is asked again only after this long (its move may be under way).
const ASK_AGAIN_MS: Millis = 5_000;

/// Where a guest stands here: its priority, whether its cluster's terms are `idle`, and
/// whether it is of another cluster.
#[derive(Debug, Clone, Copy)]
struct Standing {
    priority: u16,
    idle_only: bool,
    foreign: bool,
}

impl Node {
    /// Which cluster node `n` is in.
    pub(super) fn whose(&self, n: NodeId) -> Whose<'_> {
        self.loaded.grid.whose(&self.loaded.map, n)
    }

    /// Whether this node's processes may go to node `n` (whose flags are `flags`); why not.
    pub(super) fn may_go(&self, n: NodeId, flags: Status) -> Result<(), String> {
        match self.whose(n) {
            Whose::Own => Ok(()),
            Whose::Unknown => Err(format!("node {n} is in no cluster this node knows")),
            Whose::Partner(p) => {
                if self.flags.contains(Status::CLOSED) {
                    Err("this node is closed to the grid (mosctl opengrid opens it)".into())
                } else if flags.contains(Status::CLOSED) {
                    Err(format!(
                        "node {n} (cluster '{}') is closed to the grid",
                        p.name
                    ))
                } else if !p.terms.go {
                    Err(format!(
                        "this cluster's processes do not go to cluster '{}' (nogo in the partners file)",
                        p.name
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn standing(&self, home: Option<NodeId>) -> Standing {
        let own = Standing {
            priority: OWN_PRIORITY,
            idle_only: false,
            foreign: false,
        };
        let Some(home) = home else { return own };
        match self.whose(home) {
            Whose::Own => own,
            Whose::Partner(p) => Standing {
                priority: p.priority,
                idle_only: p.terms.idle_only,
                foreign: true,
            },
            // A partner removed from the partners file: the worst of all.
            Whose::Unknown => Standing {
                priority: u16::MAX,
                idle_only: true,
                foreign: true,
            },
        }
    }

    /// The grid's part of a balancing round: measures the load guests of other clusters make
    /// here (sent with this node's figures, and discounted by admission for this cluster's
    /// processes), and asks the guests that must make room to leave. Returns the guests asked
    /// (the balancer leaves them alone).
    pub(super) fn grid_round(&mut self, now: Millis, locals: &[Local], me: &NodeState) -> Vec<u64> {
        let closed = self.flags.contains(Status::CLOSED);
        self.balancing.displaced.retain(|id, at| {
            now.saturating_sub(*at) < ASK_AGAIN_MS && locals.iter().any(|l| l.state.id == *id)
        });
        let mut claims = Vec::with_capacity(locals.len());
        let mut foreign_milli = 0u64;
        let mut own_milli = 0u64;
        let mut own_busy = false;
        let mut leave: Vec<u64> = Vec::new();
        for l in locals {
            let s = self.standing(l.guest.map(|g| g.0));
            let d = l.state.demand_permille.min(1000);
            if s.foreign {
                foreign_milli += u64::from(d);
            } else {
                own_milli += u64::from(d);
                own_busy |= d >= grid::WANTS_CPU_PERMILLE;
            }
            if self.balancing.displaced.contains_key(&l.state.id) {
                continue;
            }
            if s.foreign && closed {
                leave.push(l.state.id);
                continue;
            }
            claims.push(Claim {
                id: l.state.id,
                priority: s.priority,
                idle_only: s.idle_only,
                demand_permille: d,
                movable: s.foreign,
            });
        }
        // Over the limit of guests of other clusters: the worst priorities leave first.
        let max = self.max_grid_guests().unwrap_or(u32::MAX) as usize;
        let mut foreign_claims: Vec<Claim> = claims.iter().copied().filter(|c| c.movable).collect();
        let mut over: Vec<u64> = Vec::new();
        if foreign_claims.len() > max {
            foreign_claims.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.id.cmp(&a.id)));
            let extra: Vec<u64> = foreign_claims[..foreign_claims.len() - max]
                .iter()
                .map(|c| c.id)
                .collect();
            claims.retain(|c| !extra.contains(&c.id));
            over = extra;
        }
        let as_load = |milli: u64| {
            let l = (milli as f64 / 1000.0 * me.one()).round();
            if l.is_finite() && l > 0.0 {
                l.min(f64::from(u32::MAX)) as u32
            } else {
                0
            }
        };
        self.balancing.foreign_load = as_load(foreign_milli);
        self.balancing.own_load = as_load(own_milli);
        self.load.figures.foreign = self.balancing.foreign_load;
        self.load.figures.own = self.balancing.own_load;
        self.load.figures.foreign_guests = u32::try_from(
            locals
                .iter()
                .filter(|l| self.standing(l.guest.map(|g| g.0)).foreign)
                .count(),
        )
        .unwrap_or(u32::MAX);
        let mut levels: Vec<(u16, u64)> = Vec::new();
        for l in locals {
            let p = self.standing(l.guest.map(|g| g.0)).priority;
            let d = u64::from(l.state.demand_permille.min(1000));
            match levels.iter_mut().find(|x| x.0 == p) {
                Some(x) => x.1 += d,
                None => levels.push((p, d)),
            }
        }
        levels.sort_unstable();
        self.balancing
            .admission
            .set_grid(self.balancing.foreign_load, own_busy, levels, me.cpus);
        let mut displaced = grid::displace(me.cpus, &claims);
        displaced.extend(over);
        // Leaving: everyone of other clusters on a closed node; otherwise those over the
        // limit and those better priorities displace.
        let mut asked = self.send_away(now, &leave, Expulsion::ClosedGrid);
        asked.extend(self.send_away(now, &displaced, Expulsion::Displaced));
        asked
    }

    /// Sends the guests `ids` home: home takes them back, moves them on to a node of its own
    /// cluster that has room, or freezes them if it has none (a node of another cluster cannot
    /// judge that: home knows its cluster best, and a process sent home is one it may freeze,
    /// `mosix_core::freezing`). Returns those asked.
    fn send_away(&mut self, now: Millis, ids: &[u64], why: Expulsion) -> Vec<u64> {
        if ids.is_empty() {
            return Vec::new();
        }
        let guests = self.procs.guests();
        let mut asked = Vec::new();
        for &id in ids {
            let pid = id as i32;
            let Some((_, g)) = guests.iter().find(|(p, _)| *p == pid) else {
                continue;
            };
            info!(
                "grid: guest {pid} (pid {} of node {}) goes home: {why}",
                g.home_pid, g.from
            );
            if self.procs.expel_guest(pid, why) {
                self.balancing.displaced.insert(id, now);
                asked.push(id);
            }
        }
        asked
    }

    /// Closes this node to the grid (`mosctl closegrid`): no guest of another cluster arrives,
    /// none of ours leaves for another cluster, and every guest of another cluster here is
    /// asked to leave now. Returns how many were asked; the tool follows their departure.
    pub(super) fn close_grid(&mut self, uid: u32) -> u32 {
        self.set_flag(mosix_core::Flag::Closed, true, uid);
        let now = self.now();
        let foreign: Vec<u64> = self
            .procs
            .guests()
            .into_iter()
            .filter(|(_, g)| self.standing(Some(g.from)).foreign)
            .map(|(pid, _)| pid as u64)
            .collect();
        self.send_away(now, &foreign, Expulsion::ClosedGrid).len() as u32
    }

    /// `mosctl isolate` (or `rejoin`): the whole cluster closes to (opens to) the grid. This
    /// node does so at once and says so in its gossip, with the time; every node of the
    /// cluster follows the newest it hears of ([`follow_isolation`](Self::follow_isolation)).
    pub(super) fn isolate(&mut self, on: bool, uid: u32) -> u32 {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let at = self.isolation.map_or(now_ms, |(t, _)| now_ms.max(t + 1));
        self.isolation = Some((at, on));
        info!(
            "{} by uid {uid}: the cluster {} the grid",
            if on { "isolate" } else { "rejoin" },
            if on { "closes to" } else { "opens to" }
        );
        self.apply_isolation(on, uid)
    }

    fn apply_isolation(&mut self, on: bool, uid: u32) -> u32 {
        if on {
            self.close_grid(uid)
        } else {
            self.set_flag(mosix_core::Flag::Closed, false, uid);
            0
        }
    }

    /// Takes a newer `isolate`/`rejoin` from a node of this cluster (never from a partner's:
    /// only the cluster's own nodes may close it).
    pub(super) fn follow_isolation(
        &mut self,
        msg: &mosix_core::gossip::GossipMsg<mosix_core::load::NodeInfo>,
    ) {
        let newest = msg
            .entries
            .iter()
            .filter(|e| self.loaded.map.contains(e.node) && e.node != self.loaded.me)
            .filter_map(|e| e.info.isolation)
            .max_by_key(|(t, _)| *t);
        let Some((t, on)) = newest else { return };
        if self.isolation.is_some_and(|(mine, _)| mine >= t) {
            return;
        }
        info!(
            "the cluster {} the grid (mosctl {} on another node)",
            if on { "closes to" } else { "opens to" },
            if on { "isolate" } else { "rejoin" }
        );
        self.isolation = Some((t, on));
        self.apply_isolation(on, self.euid);
    }

    /// The most guests of other clusters at once (`None`: no limit).
    pub(super) fn max_grid_guests(&self) -> Option<u32> {
        let m = self.grid_guests.load(std::sync::atomic::Ordering::Relaxed);
        (m != u32::MAX).then_some(m)
    }

    /// `mosctl opengrid [N]`: opens this node to the grid, with at most `max` guests of other
    /// clusters (those over it leave at the next round).
    pub(super) fn open_grid(&mut self, max: Option<u32>, uid: u32) {
        self.grid_guests.store(
            max.unwrap_or(u32::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.set_flag(mosix_core::Flag::Closed, false, uid);
        if let Some(m) = max {
            info!("opengrid by uid {uid}: at most {m} guests of other clusters");
        }
    }

    /// `mosctl cngpri`: the priority this node gives partner `name`, in the service and in the
    /// link's context (the guests' admission reads it there), until the partners file is read
    /// again.
    pub(super) fn set_priority(&mut self, name: &str, priority: u16) -> Result<(), String> {
        if !(1..=65534).contains(&priority) {
            return Err(format!(
                "priority {priority} is out of range 1..65534 (lower is better)"
            ));
        }
        let Some(p) = self
            .loaded
            .grid
            .partners
            .iter_mut()
            .find(|p| p.name == name)
        else {
            let known: Vec<&str> = self
                .loaded
                .grid
                .partners
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            return Err(if known.is_empty() {
                format!("no partner '{name}': this node has no partners (partners(5))")
            } else {
                format!("no partner '{name}' (partners: {})", known.join(", "))
            });
        };
        p.priority = priority;
        let ctx = std::sync::Arc::new(super::link_context(&self.loaded));
        match self.link.ctx.write() {
            Ok(mut g) => *g = ctx,
            Err(poisoned) => *poisoned.into_inner() = ctx,
        }
        Ok(())
    }

    /// The partners as this node sees them, and how many guests here are of its own cluster.
    pub(super) fn partner_views(&self, now: Millis) -> (Vec<PartnerView>, u32) {
        let guests = self.procs.guests();
        let mut own_guests = 0;
        let mut views: Vec<PartnerView> = self
            .loaded
            .grid
            .partners
            .iter()
            .map(|p| {
                let nodes = p.map.nodes();
                PartnerView {
                    name: p.name.clone(),
                    priority: p.priority,
                    go: p.terms.go,
                    take: p.terms.take,
                    idle_only: p.terms.idle_only,
                    nodes: nodes.len() as u32,
                    up: nodes
                        .iter()
                        .filter(|n| self.gossip.diss.get(**n, now).is_some_and(|k| k.up))
                        .count() as u32,
                    guests_here: 0,
                }
            })
            .collect();
        for (_, g) in guests {
            match self.whose(g.from) {
                Whose::Own => own_guests += 1,
                Whose::Partner(p) => {
                    if let Some(v) = views.iter_mut().find(|v| v.name == p.name) {
                        v.guests_here += 1;
                    }
                }
                Whose::Unknown => {}
            }
        }
        (views, own_guests)
    }
}
