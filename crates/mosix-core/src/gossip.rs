//! Information dissemination: the randomized gossip of MOSIX (Barak & Shiloh 1985; Amar, Barak,
//! Drezner & Okun 2009), as a pure state machine.
//!
//! Every node keeps one entry per node of the map: the freshest information it has about that
//! node and when that information was current. Each interval a node refreshes its own entry and
//! sends a *window* — its own entry plus the `window - 1` youngest entries it knows — to one node
//! chosen at random. The receiver keeps, for every entry, whichever copy is younger. Overhead per
//! node is one fixed-size message per interval, whatever the size of the cluster, and the expected
//! ages of the entries have closed forms ([`crate::ages`]) that the simulator ([`crate::sim`])
//! checks.
//!
//! No clocks are compared between nodes: a message carries each entry's *age*, and the receiver
//! turns it into a time of its own clock (`now - age`). Transit time is counted as zero; on a
//! LAN it is far below the 1 s interval.
//!
//! Failure detection falls out of the ages: a node whose freshest entry anywhere is older than
//! `dead_after` is down. Peers are chosen among the nodes believed alive, except that with
//! probability `1 / max(reprobe_cycle, alive)` the peer is drawn from all nodes, so a node that
//! comes back is found again even if it cannot announce itself (gossimon's `mindead` rule).
//!
//! Nothing here reads a clock or the network: time and randomness are arguments, messages are
//! return values. The node service, the unit tests and the simulator all drive the same code.

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// The largest window a message may carry; a received message with more entries is malformed.
pub const MAX_WINDOW: usize = 1024;

/// Local time in milliseconds (any epoch; only differences matter).
pub type Millis = i64;

const NEVER: Millis = Millis::MIN;

/// The parameters of dissemination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipConfig {
    /// Milliseconds between two sends.
    pub interval_ms: u64,
    /// Entries per message, the sender's own included.
    pub window: usize,
    /// Information older than this marks its node down; `None` never does (simulation).
    pub dead_after_ms: Option<u64>,
    /// A peer is drawn from all nodes, dead ones included, with probability
    /// `1 / max(reprobe_cycle, alive)` (gossimon's `INFOD_SEND_TO_ANY_CYCLE`, 5).
    pub reprobe_cycle: u32,
}

impl GossipConfig {
    /// The configuration for a cluster of `nodes` nodes with the given interval and window, and
    /// the default failure-detection limit ([`default_dead_after_ms`]) unless one is given.
    pub fn new(nodes: usize, interval_ms: u64, window: usize, dead_after_ms: Option<u64>) -> Self {
        GossipConfig {
            interval_ms,
            window: window.clamp(1, MAX_WINDOW),
            dead_after_ms: Some(
                dead_after_ms.unwrap_or_else(|| default_dead_after_ms(nodes, window, interval_ms)),
            ),
            reprobe_cycle: 5,
        }
    }
}

/// The default age after which a node is declared down: ten intervals, or three times the
/// expected maximal age of an entry on clusters large enough for that to be longer (with
/// N = 1024 and W = 16 the expected maximal age is ~480 intervals, and a ten-interval limit
/// would declare live nodes dead all the time).
pub fn default_dead_after_ms(nodes: usize, window: usize, interval_ms: u64) -> u64 {
    let floor = 10 * interval_ms;
    if window >= nodes || nodes <= 8 {
        return floor;
    }
    let m = crate::ages::closed_form(nodes, window).max_age;
    let scaled = (3.0 * m * interval_ms as f64).ceil();
    if scaled.is_finite() && scaled > floor as f64 {
        scaled as u64
    } else {
        floor
    }
}

/// Gossip across the clusters of a grid ([`Dissemination::set_foreign`]): one send in
/// `every` goes to a node of another cluster, the others to the own cluster, so what a node
/// sends stays one message per interval however large the grid; entries of other clusters
/// count as down only after `dead_after_ms`, since they arrive less often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossConfig {
    /// One send in this many crosses to another cluster (at least 1).
    pub every: u32,
    /// Information about another cluster's node older than this marks it down.
    pub dead_after_ms: Option<u64>,
}

impl CrossConfig {
    /// The limit for other clusters' entries: ten crossings' worth per partner (`every`
    /// intervals each; with more partners each is visited less often), and never less than
    /// the own cluster's limit. The grid simulation (the dissemination bench) measures the
    /// oldest partner entry at about half of this: 22 intervals with one partner of 32 nodes
    /// (limit 50), 189 with seven (limit 350).
    pub fn new(every: u32, partners: usize, own: &GossipConfig) -> CrossConfig {
        let cross = 10 * u64::from(every.max(1)) * own.interval_ms * partners.max(1) as u64;
        CrossConfig {
            every: every.max(1),
            dead_after_ms: own.dead_after_ms.map(|d| d.max(cross)),
        }
    }
}

/// One entry of a gossip message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry<I> {
    /// The node the information is about.
    pub node: NodeId,
    /// How old the information was when the message was sent, in milliseconds.
    pub age_ms: u32,
    /// The information.
    pub info: I,
}

/// A gossip message: a window of entries, the sender's own first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>"))]
pub struct GossipMsg<I> {
    /// The entries: at most [`MAX_WINDOW`] (one more is kept while decoding, so that the
    /// frame's validation can refuse it; the rest are read and dropped).
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_WINDOW>")]
    pub entries: Vec<WireEntry<I>>,
}

/// What one node knows about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known<'a, I> {
    /// The node.
    pub node: NodeId,
    /// Whether it is this node.
    pub is_self: bool,
    /// How old the freshest information is, if there is any.
    pub age_ms: Option<u64>,
    /// Whether the node counts as alive (information younger than `dead_after`).
    pub up: bool,
    /// The freshest information, if any.
    pub info: Option<&'a I>,
}

/// The dissemination state of one node.
#[derive(Debug, Clone)]
pub struct Dissemination<I> {
    cfg: GossipConfig,
    ids: Vec<NodeId>,
    me: usize,
    stamps: Vec<Millis>,
    infos: Vec<Option<I>>,
    /// Indices of the youngest foreign entries, youngest first; at most `window - 1`.
    recent: Vec<usize>,
    /// Foreign entries ever heard of.
    known: usize,
    next_send: Millis,
    /// Which nodes are of other clusters (empty: none are).
    foreign: Vec<bool>,
    /// The other clusters' nodes, as given, one list per cluster.
    foreign_ids: Vec<Vec<NodeId>>,
    /// For each other cluster, the indices of its nodes here.
    groups: Vec<Vec<usize>>,
    cross: CrossConfig,
    sends: u64,
}

/// Why a [`Dissemination`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// This node is not one of the nodes.
    #[error("node {0} is not in the list of nodes")]
    NotMember(NodeId),
}

impl<I: Clone> Dissemination<I> {
    /// The state of node `me` among `nodes` at time `now`; its first send is due at
    /// `now + first_send_in` (give each node a random phase so that sends are not synchronised).
    pub fn new(
        mut nodes: Vec<NodeId>,
        me: NodeId,
        cfg: GossipConfig,
        now: Millis,
        first_send_in: u64,
    ) -> Result<Self, GossipError> {
        nodes.sort_unstable();
        nodes.dedup();
        let me_idx = nodes
            .binary_search(&me)
            .map_err(|_| GossipError::NotMember(me))?;
        let n = nodes.len();
        Ok(Dissemination {
            cfg,
            me: me_idx,
            ids: nodes,
            stamps: vec![NEVER; n],
            infos: vec![None; n],
            recent: Vec::with_capacity(cfg.window),
            known: 0,
            next_send: now.saturating_add(ms(first_send_in)),
            foreign: Vec::new(),
            foreign_ids: Vec::new(),
            groups: Vec::new(),
            cross: CrossConfig {
                every: 1,
                dead_after_ms: cfg.dead_after_ms,
            },
            sends: 0,
        })
    }

    /// Marks the nodes of other clusters, one list per cluster (they must be among the nodes
    /// to count), and how gossip crosses to them. An empty list: a cluster on its own.
    ///
    /// A send that crosses picks a cluster first, each as often, then one of its nodes: so
    /// every partner is reached at the same pace, also one whose nodes this node has not
    /// heard from yet (picking among all partners' nodes, those alive first, left a partner
    /// never heard from to the occasional re-probe: a cluster saw another come up only after
    /// tens of seconds).
    pub fn set_foreign(&mut self, clusters: &[Vec<NodeId>], cross: CrossConfig) {
        self.foreign_ids = clusters
            .iter()
            .map(|c| {
                let mut ids = c.clone();
                ids.sort_unstable();
                ids.dedup();
                ids
            })
            .filter(|c| !c.is_empty())
            .collect();
        self.cross = cross;
        self.mark_foreign();
    }

    fn mark_foreign(&mut self) {
        self.groups = self
            .foreign_ids
            .iter()
            .map(|c| c.iter().filter_map(|n| self.index(*n)).collect::<Vec<_>>())
            .filter(|g: &Vec<usize>| !g.is_empty())
            .collect();
        self.foreign = if self.groups.is_empty() {
            Vec::new()
        } else {
            let mut f = vec![false; self.ids.len()];
            for &i in self.groups.iter().flatten() {
                f[i] = true;
            }
            f
        };
    }

    /// Whether a node is of another cluster.
    pub fn is_foreign(&self, node: NodeId) -> bool {
        self.index(node)
            .is_some_and(|i| self.foreign.get(i).copied().unwrap_or(false))
    }

    /// The configuration in use.
    pub fn config(&self) -> &GossipConfig {
        &self.cfg
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.ids[self.me]
    }

    /// All nodes, in increasing order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.ids
    }

    /// When the next send is due.
    pub fn next_send(&self) -> Millis {
        self.next_send
    }

    /// Refreshes this node's own entry: `info` is current as of `now`.
    pub fn set_local(&mut self, info: I, now: Millis) {
        self.stamps[self.me] = now;
        self.infos[self.me] = Some(info);
    }

    /// Changes the parameters (after `mosix.toml` or the map changed).
    pub fn set_config(&mut self, cfg: GossipConfig) {
        self.cfg = cfg;
        self.rebuild_recent();
    }

    /// Treats every node as heard from at `stamp` with `info`. The simulator starts from this
    /// state so that it reaches the steady state quickly; the service never uses it.
    pub fn assume_all_known(&mut self, stamp: Millis, info: I) {
        for i in 0..self.ids.len() {
            if i != self.me {
                self.stamps[i] = stamp;
                self.infos[i] = Some(info.clone());
            }
        }
        self.known = self.ids.len() - 1;
        self.rebuild_recent();
    }

    /// Replaces the node list (a new map), keeping what is known about nodes that remain.
    pub fn set_nodes(&mut self, mut nodes: Vec<NodeId>, me: NodeId) -> Result<(), GossipError> {
        nodes.sort_unstable();
        nodes.dedup();
        let me_idx = nodes
            .binary_search(&me)
            .map_err(|_| GossipError::NotMember(me))?;
        let mut stamps = vec![NEVER; nodes.len()];
        let mut infos = vec![None; nodes.len()];
        for (i, id) in nodes.iter().enumerate() {
            if let Ok(old) = self.ids.binary_search(id) {
                stamps[i] = self.stamps[old];
                infos[i] = self.infos[old].take();
            }
        }
        self.ids = nodes;
        self.me = me_idx;
        self.stamps = stamps;
        self.infos = infos;
        self.known = (0..self.ids.len())
            .filter(|&i| i != self.me && self.stamps[i] != NEVER)
            .count();
        self.mark_foreign();
        self.rebuild_recent();
        Ok(())
    }

    /// The index of a node: direct arithmetic when the node numbers are one contiguous range (the
    /// usual map, and the simulator, where a binary search per entry is the hot spot), a binary
    /// search otherwise.
    fn index(&self, node: NodeId) -> Option<usize> {
        let first = self.ids.first()?.get();
        let last = self.ids.last()?.get();
        if usize::from(last - first) + 1 == self.ids.len() {
            let n = node.get();
            (first..=last).contains(&n).then(|| usize::from(n - first))
        } else {
            self.ids.binary_search(&node).ok()
        }
    }

    fn rebuild_recent(&mut self) {
        let mut idx: Vec<usize> = (0..self.ids.len())
            .filter(|&i| i != self.me && self.stamps[i] != NEVER)
            .collect();
        idx.sort_by(|a, b| self.stamps[*b].cmp(&self.stamps[*a]));
        idx.truncate(self.cfg.window.saturating_sub(1));
        self.recent = idx;
    }

    /// Keeps `recent` the youngest `window - 1` foreign entries after entry `i` got younger.
    /// Entries only ever get younger, so one that falls out of the set can come back only
    /// through a newer copy of itself, which passes through here.
    fn touched(&mut self, i: usize) {
        let cap = self.cfg.window.saturating_sub(1);
        if cap == 0 {
            return;
        }
        if let Some(p) = self.recent.iter().position(|&x| x == i) {
            self.recent.remove(p);
        }
        let s = self.stamps[i];
        let pos = self
            .recent
            .iter()
            .position(|&x| self.stamps[x] < s)
            .unwrap_or(self.recent.len());
        if pos < cap {
            self.recent.insert(pos, i);
            self.recent.truncate(cap);
        }
    }

    fn alive_idx(&self, i: usize, now: Millis) -> bool {
        if i == self.me {
            return true;
        }
        let s = self.stamps[i];
        let limit = if self.foreign.get(i).copied().unwrap_or(false) {
            self.cross.dead_after_ms
        } else {
            self.cfg.dead_after_ms
        };
        s != NEVER && limit.is_none_or(|d| now.saturating_sub(s) <= ms(d))
    }

    fn age(&self, i: usize, now: Millis) -> Option<u64> {
        let s = self.stamps[i];
        (s != NEVER).then(|| u64::try_from(now.saturating_sub(s)).unwrap_or(0))
    }

    /// Merges a received message: every entry younger than what we hold replaces it. Entries
    /// about nodes we do not know (a peer with a different map) and about ourselves are ignored.
    /// Returns how many entries were taken.
    pub fn receive(&mut self, msg: &GossipMsg<I>, now: Millis) -> usize {
        let mut taken = 0;
        for e in &msg.entries {
            let Some(i) = self.index(e.node) else {
                continue;
            };
            if i == self.me {
                continue;
            }
            let stamp = now.saturating_sub(Millis::from(e.age_ms));
            if stamp > self.stamps[i] {
                if self.stamps[i] == NEVER {
                    self.known += 1;
                }
                self.stamps[i] = stamp;
                self.infos[i] = Some(e.info.clone());
                self.touched(i);
                taken += 1;
            }
        }
        taken
    }

    /// Merges a message received from `from` ([`receive`](Self::receive)) and, when `from`
    /// was not counted alive here before it (a node that starts, comes back, or is a partner's
    /// node heard for the first time), returns the window to answer it with at once. A node
    /// that joins so learns the others from the first node it reaches instead of waiting to be
    /// picked by each of them: across clusters, where one send in `every` crosses, that wait
    /// is many intervals. The cost stays bounded: one answer per change from down to up.
    pub fn receive_from(
        &mut self,
        from: NodeId,
        msg: &GossipMsg<I>,
        now: Millis,
    ) -> Option<GossipMsg<I>> {
        let i = self.index(from).filter(|&i| i != self.me)?;
        let was_up = self.alive_idx(i, now);
        self.receive(msg, now);
        (!was_up && self.alive_idx(i, now)).then(|| self.window(now))
    }

    /// If a send is due at `now`, chooses a peer and builds the message for it. The caller should
    /// have refreshed the own entry with [`set_local`](Self::set_local) just before; a node
    /// without an own entry sends only what it knows of others.
    pub fn send<R: Rng + ?Sized>(
        &mut self,
        now: Millis,
        rng: &mut R,
    ) -> Option<(NodeId, GossipMsg<I>)> {
        if now < self.next_send {
            return None;
        }
        let interval = ms(self.cfg.interval_ms);
        self.next_send = self.next_send.saturating_add(interval);
        if self.next_send <= now {
            // We fell behind (a stalled process); do not send a burst to catch up.
            self.next_send = now.saturating_add(interval);
        }
        let target = if self.foreign.is_empty() {
            self.pick_peer(now, rng)?
        } else {
            let cross = self
                .sends
                .is_multiple_of(u64::from(self.cross.every.max(1)));
            self.sends = self.sends.wrapping_add(1);
            self.pick_in(now, rng, cross)
                .or_else(|| self.pick_in(now, rng, !cross))?
        };
        Some((self.ids[target], self.window(now)))
    }

    /// The message this node would send now: its own entry, then the youngest live entries.
    pub fn window(&self, now: Millis) -> GossipMsg<I> {
        let mut entries = Vec::with_capacity(self.cfg.window);
        let age32 = |a: u64| u32::try_from(a).unwrap_or(u32::MAX);
        if let (Some(info), Some(age)) = (&self.infos[self.me], self.age(self.me, now)) {
            entries.push(WireEntry {
                node: self.ids[self.me],
                age_ms: age32(age),
                info: info.clone(),
            });
        }
        for &i in &self.recent {
            if entries.len() >= self.cfg.window {
                break;
            }
            if !self.alive_idx(i, now) {
                continue;
            }
            if let (Some(info), Some(age)) = (&self.infos[i], self.age(i, now)) {
                entries.push(WireEntry {
                    node: self.ids[i],
                    age_ms: age32(age),
                    info: info.clone(),
                });
            }
        }
        GossipMsg { entries }
    }

    /// How many other nodes count as alive.
    pub fn alive_count(&self, now: Millis) -> usize {
        if self.cfg.dead_after_ms.is_none() {
            return self.known;
        }
        (0..self.ids.len())
            .filter(|&i| i != self.me && self.alive_idx(i, now))
            .count()
    }

    fn pick_peer<R: Rng + ?Sized>(&self, now: Millis, rng: &mut R) -> Option<usize> {
        let n = self.ids.len();
        if n < 2 {
            return None;
        }
        let any = |rng: &mut R| {
            let r = rng.random_range(0..n - 1);
            if r >= self.me { r + 1 } else { r }
        };
        let alive = self.alive_count(now);
        let reprobe = self.cfg.reprobe_cycle.max(1) as usize;
        if alive == 0 || rng.random_range(0..reprobe.max(alive)) == 0 {
            return Some(any(rng));
        }
        if alive * 4 >= n {
            // Most nodes are alive: rejection sampling is cheap and avoids an O(N) list.
            for _ in 0..32 {
                let i = any(rng);
                if self.alive_idx(i, now) {
                    return Some(i);
                }
            }
        }
        let live: Vec<usize> = (0..n)
            .filter(|&i| i != self.me && self.alive_idx(i, now))
            .collect();
        if live.is_empty() {
            Some(any(rng))
        } else {
            Some(live[rng.random_range(0..live.len())])
        }
    }

    /// A peer among the nodes of other clusters (`foreign`) or of this one, with the same
    /// preference for live nodes and the same re-probing as [`pick_peer`](Self::pick_peer).
    fn pick_in<R: Rng + ?Sized>(&self, now: Millis, rng: &mut R, foreign: bool) -> Option<usize> {
        let group: Vec<usize> = if foreign {
            if self.groups.is_empty() {
                return None;
            }
            self.groups[rng.random_range(0..self.groups.len())].clone()
        } else {
            (0..self.ids.len())
                .filter(|&i| i != self.me && !self.foreign.get(i).copied().unwrap_or(false))
                .collect()
        };
        if group.is_empty() {
            return None;
        }
        let live: Vec<usize> = group
            .iter()
            .copied()
            .filter(|&i| self.alive_idx(i, now))
            .collect();
        let reprobe = self.cfg.reprobe_cycle.max(1) as usize;
        if live.is_empty() || rng.random_range(0..reprobe.max(live.len())) == 0 {
            return Some(group[rng.random_range(0..group.len())]);
        }
        Some(live[rng.random_range(0..live.len())])
    }

    /// What this node knows about every node, in node order.
    pub fn known(&self, now: Millis) -> impl Iterator<Item = Known<'_, I>> + '_ {
        (0..self.ids.len()).map(move |i| Known {
            node: self.ids[i],
            is_self: i == self.me,
            age_ms: self.age(i, now),
            up: self.alive_idx(i, now),
            info: self.infos[i].as_ref(),
        })
    }

    /// What this node knows about one node.
    pub fn get(&self, node: NodeId, now: Millis) -> Option<Known<'_, I>> {
        let i = self.index(node)?;
        Some(Known {
            node,
            is_self: i == self.me,
            age_ms: self.age(i, now),
            up: self.alive_idx(i, now),
            info: self.infos[i].as_ref(),
        })
    }

    /// The ages of all foreign entries (`None` for never heard), for measurements.
    pub fn foreign_ages(&self, now: Millis) -> impl Iterator<Item = Option<u64>> + '_ {
        (0..self.ids.len())
            .filter(move |&i| i != self.me)
            .map(move |i| self.age(i, now))
    }
}

fn ms(v: u64) -> Millis {
    Millis::try_from(v).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ids(n: u16) -> Vec<NodeId> {
        (1..=n).filter_map(NodeId::new).collect()
    }
    fn id(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }
    fn cfg(window: usize) -> GossipConfig {
        GossipConfig {
            interval_ms: 1000,
            window,
            dead_after_ms: Some(10_000),
            reprobe_cycle: 5,
        }
    }

    #[test]
    fn sends_once_per_interval_to_another_node() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut d = Dissemination::<u32>::new(ids(4), id(2), cfg(16), 0, 500).unwrap();
        d.set_local(7, 0);
        assert!(d.send(499, &mut rng).is_none());
        let (to, msg) = d.send(500, &mut rng).unwrap();
        assert_ne!(to, id(2));
        assert_eq!(msg.entries[0].node, id(2));
        assert_eq!(msg.entries[0].age_ms, 500);
        assert!(d.send(1499, &mut rng).is_none());
        assert!(d.send(1500, &mut rng).is_some());
        // After a long stall, one send, not a burst.
        assert!(d.send(10_000, &mut rng).is_some());
        assert!(d.send(10_001, &mut rng).is_none());
    }

    #[test]
    fn merge_keeps_the_younger_copy() {
        let mut d = Dissemination::<u32>::new(ids(4), id(1), cfg(16), 0, 0).unwrap();
        let msg = |age, info| GossipMsg {
            entries: vec![WireEntry {
                node: id(3),
                age_ms: age,
                info,
            }],
        };
        assert_eq!(d.receive(&msg(100, 1), 1000), 1);
        assert_eq!(d.get(id(3), 1000).unwrap().info, Some(&1));
        // Older than what we hold: ignored.
        assert_eq!(d.receive(&msg(200, 2), 1000), 0);
        assert_eq!(d.get(id(3), 1000).unwrap().info, Some(&1));
        // Younger: taken.
        assert_eq!(d.receive(&msg(50, 3), 1000), 1);
        assert_eq!(d.get(id(3), 1000).unwrap().age_ms, Some(50));
        // Entries about unknown nodes and about ourselves are ignored.
        let odd = GossipMsg {
            entries: vec![
                WireEntry {
                    node: id(9),
                    age_ms: 0,
                    info: 9,
                },
                WireEntry {
                    node: id(1),
                    age_ms: 0,
                    info: 9,
                },
            ],
        };
        assert_eq!(d.receive(&odd, 1000), 0);
    }

    #[test]
    fn merging_is_order_independent() {
        // Whatever order two messages arrive in, the result is the same.
        let m1 = GossipMsg {
            entries: vec![
                WireEntry {
                    node: id(2),
                    age_ms: 10,
                    info: 1,
                },
                WireEntry {
                    node: id(3),
                    age_ms: 500,
                    info: 2,
                },
            ],
        };
        let m2 = GossipMsg {
            entries: vec![
                WireEntry {
                    node: id(2),
                    age_ms: 300,
                    info: 3,
                },
                WireEntry {
                    node: id(3),
                    age_ms: 20,
                    info: 4,
                },
            ],
        };
        let run = |a: &GossipMsg<u32>, b: &GossipMsg<u32>| {
            let mut d = Dissemination::<u32>::new(ids(3), id(1), cfg(16), 0, 0).unwrap();
            d.receive(a, 1000);
            d.receive(b, 1000);
            d.known(1000)
                .map(|k| (k.age_ms, k.info.copied()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&m1, &m2), run(&m2, &m1));
    }

    #[test]
    fn window_is_own_entry_plus_the_youngest() {
        let mut d = Dissemination::<u32>::new(ids(10), id(1), cfg(3), 0, 0).unwrap();
        for n in 2..=10u16 {
            d.receive(
                &GossipMsg {
                    entries: vec![WireEntry {
                        node: id(n),
                        age_ms: u32::from(n) * 10,
                        info: u32::from(n),
                    }],
                },
                1000,
            );
        }
        d.set_local(0, 1000);
        let w = d.window(1000);
        let nodes: Vec<u16> = w.entries.iter().map(|e| e.node.get()).collect();
        assert_eq!(nodes, vec![1, 2, 3]);
        // Node 9 becomes the youngest.
        d.receive(
            &GossipMsg {
                entries: vec![WireEntry {
                    node: id(9),
                    age_ms: 0,
                    info: 9,
                }],
            },
            1000,
        );
        let nodes: Vec<u16> = d
            .window(1000)
            .entries
            .iter()
            .map(|e| e.node.get())
            .collect();
        assert_eq!(nodes, vec![1, 9, 2]);
    }

    #[test]
    fn silent_nodes_go_down_and_come_back() {
        let mut d = Dissemination::<u32>::new(ids(4), id(1), cfg(16), 0, 0).unwrap();
        let hello = |age| GossipMsg {
            entries: vec![WireEntry {
                node: id(3),
                age_ms: age,
                info: 3,
            }],
        };
        d.receive(&hello(0), 1000);
        assert!(d.get(id(3), 11_000).unwrap().up);
        assert!(!d.get(id(3), 11_001).unwrap().up);
        assert_eq!(d.alive_count(11_001), 0);
        // A dead entry is not passed on.
        d.set_local(1, 11_001);
        assert_eq!(d.window(11_001).entries.len(), 1);
        d.receive(&hello(0), 20_000);
        assert!(d.get(id(3), 20_000).unwrap().up);
    }

    #[test]
    fn each_partner_is_reached_as_often_even_one_never_heard_from() {
        // A cluster of one (node 1; every send crosses), partners a (2, 3: heard from) and
        // b (4, 5: never heard from). Half the sends go to b, not one in ten.
        let mut rng = SmallRng::seed_from_u64(3);
        let mut d = Dissemination::<u32>::new(ids(5), id(1), cfg(16), 0, 0).unwrap();
        let cross = CrossConfig::new(5, 2, d.config());
        d.set_foreign(&[vec![id(2), id(3)], vec![id(4), id(5)]], cross);
        // Nodes 2 and 3 say hello before every send: a stays alive, b is never heard of.
        let hello = |d: &mut Dissemination<u32>, at: Millis| {
            for n in [2, 3] {
                let entries = vec![WireEntry {
                    node: id(n),
                    age_ms: 0,
                    info: 0,
                }];
                d.receive(&GossipMsg { entries }, at);
            }
        };
        let mut to_b = 0;
        for k in 0..1000 {
            hello(&mut d, k * 1000);
            let (to, _) = d.send(k * 1000, &mut rng).unwrap();
            to_b += usize::from(to.get() >= 4);
        }
        assert!((420..=580).contains(&to_b), "{to_b} of 1000 to b");
    }

    #[test]
    fn a_node_heard_again_is_answered_once() {
        let mut d = Dissemination::<u32>::new(ids(4), id(1), cfg(16), 0, 0).unwrap();
        d.set_local(1, 1000);
        let hello = |age| GossipMsg {
            entries: vec![WireEntry {
                node: id(3),
                age_ms: age,
                info: 3,
            }],
        };
        let answer = d.receive_from(id(3), &hello(0), 1000).expect("answered");
        assert_eq!(answer.entries[0].node, id(1));
        // Up now: no second answer.
        assert!(d.receive_from(id(3), &hello(0), 2000).is_none());
        // Silent past dead_after, then heard again: answered again.
        assert!(d.receive_from(id(3), &hello(0), 20_000).is_some());
        // A message that says nothing of its sender (an old entry) does not make it up.
        assert!(d.receive_from(id(2), &hello(0), 20_001).is_none());
        // Unknown senders and ourselves get nothing.
        assert!(d.receive_from(id(9), &hello(0), 20_002).is_none());
        assert!(d.receive_from(id(1), &hello(0), 20_003).is_none());
    }

    #[test]
    fn dead_nodes_are_reprobed_now_and_then() {
        // Nodes 2..4 alive, 5..8 never heard of: most sends go to the living, some to the rest.
        let mut rng = SmallRng::seed_from_u64(7);
        let mut d = Dissemination::<u32>::new(ids(8), id(1), cfg(16), 0, 0).unwrap();
        let mut to_dead = 0;
        let rounds = 2000;
        for t in 0..rounds {
            let now = t * 1000;
            for n in 2..=4 {
                d.receive(
                    &GossipMsg {
                        entries: vec![WireEntry {
                            node: id(n),
                            age_ms: 0,
                            info: 0,
                        }],
                    },
                    now,
                );
            }
            let (to, _) = d.send(now, &mut rng).unwrap();
            if to.get() > 4 {
                to_dead += 1;
            }
        }
        // P(any) = 1/5, and then 4 of 7 peers are dead: about 11 % of sends.
        let frac = f64::from(to_dead) / rounds as f64;
        assert!((0.07..0.16).contains(&frac), "{frac}");
    }

    #[test]
    fn a_new_map_keeps_what_is_known() {
        let mut d = Dissemination::<u32>::new(ids(4), id(1), cfg(16), 0, 0).unwrap();
        d.receive(
            &GossipMsg {
                entries: vec![WireEntry {
                    node: id(3),
                    age_ms: 0,
                    info: 3,
                }],
            },
            1000,
        );
        d.set_nodes(vec![id(1), id(3), id(7)], id(1)).unwrap();
        assert_eq!(d.get(id(3), 1000).unwrap().info, Some(&3));
        assert!(d.get(id(2), 1000).is_none());
        assert_eq!(d.get(id(7), 1000).unwrap().info, None);
        assert!(d.set_nodes(vec![id(3)], id(1)).is_err());
    }

    #[test]
    fn one_send_in_every_crosses_to_another_cluster_whose_entries_live_longer() {
        let mut rng = SmallRng::seed_from_u64(7);
        // Nodes 1..4 are this cluster, 101..104 a partner's.
        let mut nodes = ids(4);
        let theirs: Vec<NodeId> = (101..=104).map(id).collect();
        nodes.extend(&theirs);
        let mut d = Dissemination::<u32>::new(nodes, id(1), cfg(16), 0, 0).unwrap();
        let cross = CrossConfig::new(5, 1, d.config());
        assert_eq!(cross.dead_after_ms, Some(50_000));
        d.set_foreign(std::slice::from_ref(&theirs), cross);
        assert!(d.is_foreign(id(102)) && !d.is_foreign(id(2)));
        let (mut out, mut across) = (0, 0);
        for t in 0..1000 {
            d.set_local(1, t * 1000);
            if let Some((to, _)) = d.send(t * 1000, &mut rng) {
                out += 1;
                if to.get() > 100 {
                    across += 1;
                }
            }
        }
        assert_eq!(out, 1000, "one message per interval, grid or not");
        assert_eq!(across, 200, "one in five crosses");
        let heard = |node: u16, age_ms: u32| GossipMsg {
            entries: vec![WireEntry {
                node: id(node),
                age_ms,
                info: 9,
            }],
        };
        let now = 2_000_000;
        d.receive(&heard(2, 40_000), now);
        d.receive(&heard(102, 40_000), now);
        assert!(!d.get(id(2), now).unwrap().up);
        assert!(d.get(id(102), now).unwrap().up);
        // Without partners nothing crosses.
        d.set_foreign(&[], cross);
        assert!(!d.is_foreign(id(102)));
    }

    #[test]
    fn default_dead_limit_grows_with_the_cluster() {
        assert_eq!(default_dead_after_ms(4, 16, 1000), 10_000);
        assert!(default_dead_after_ms(1024, 16, 1000) > 100_000);
    }
}
