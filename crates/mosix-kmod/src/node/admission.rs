//! This node's consent to automatic arrivals: the guest thread that receives a process asks
//! [`Admission`] before restoring anything, and the service updates it with every sample.

use std::sync::Mutex;
use std::time::Instant;

use mosix_core::balance::{NodeState, admits, unmeasured_part};

/// This node's consent to automatic moves ([`mosix_core::balance::admits`]): its figures of
/// the last sample, and the processes that arrived which that sample does not show in full
/// ([`unmeasured_part`]). Every arrival counts, automatic or not; only automatic ones (with a
/// ceiling) are checked.
#[derive(Debug, Default)]
pub struct Admission {
    inner: Mutex<AdmitState>,
}

#[derive(Debug, Default)]
struct AdmitState {
    /// This node, its load the exported one (which rises at once); `None` before the first
    /// sample, when everything is taken.
    me: Option<NodeState>,
    /// When the last sample was taken.
    sampled: Option<Instant>,
    arrived: Vec<Instant>,
    /// The part of the load guests of other clusters make (a process of this cluster may
    /// displace them).
    foreign: u32,
    /// Whether a process of this cluster wants a CPU here (partners with `idle` terms wait).
    own_busy: bool,
    /// The demand here by priority (per-mille, summed over processes), best priority first.
    levels: Vec<(u16, u64)>,
    /// This node's CPUs.
    cpus: u32,
}

/// Who arrives, as admission sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A process of this node's cluster: guests of other clusters make no load for it.
    Own,
    /// A process of a partner cluster of this priority here.
    Partner(u16),
}

impl AdmitState {
    /// How many processes the last sample does not show.
    fn unmeasured(&self) -> f64 {
        let Some(s) = self.sampled else {
            return self.arrived.len() as f64;
        };
        let before = |a: &Instant| match s.checked_duration_since(*a) {
            Some(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            None => -i64::try_from(a.duration_since(s).as_millis()).unwrap_or(i64::MAX),
        };
        self.arrived
            .iter()
            .map(|a| unmeasured_part(before(a)))
            .sum()
    }
}

impl Admission {
    fn state(&self) -> std::sync::MutexGuard<'_, AdmitState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new sample, taken now: `me` with its exported load. Arrivals it shows in full are
    /// dropped.
    pub fn update(&self, me: NodeState) {
        self.updated(me, Instant::now());
    }

    fn updated(&self, me: NodeState, at: Instant) {
        let mut s = self.state();
        s.me = Some(me);
        s.sampled = Some(at);
        s.arrived.retain(|a| {
            let before = at.saturating_duration_since(*a).as_millis();
            unmeasured_part(i64::try_from(before).unwrap_or(i64::MAX)) > 0.0
        });
    }

    /// What the grid adds to a sample: the load of guests of other clusters here, whether a
    /// process of this cluster wants a CPU, the demand here by priority, and the CPUs.
    pub fn set_grid(&self, foreign: u32, own_busy: bool, levels: Vec<(u16, u64)>, cpus: u32) {
        let mut s = self.state();
        s.foreign = foreign;
        s.own_busy = own_busy;
        s.levels = levels;
        s.cpus = cpus;
    }

    /// Whether a process of this node's cluster wants a CPU here.
    pub fn own_busy(&self) -> bool {
        self.state().own_busy
    }

    /// Whether a process may arrive now, its move carrying `ceiling` (`None`: not an automatic
    /// move, always taken). A process of this cluster sees no load of other clusters' guests
    /// (they would make room); a partner's is refused, automatic or not, where it would be
    /// displaced at once (`mosix_core::grid::displace`: processes of a better priority want
    /// the CPUs). Counts it as arrived when it may.
    pub fn admit(&self, ceiling: Option<u32>, who: Arrival) -> Result<(), String> {
        self.admit_at(ceiling, who, Instant::now())
    }

    fn admit_at(&self, ceiling: Option<u32>, who: Arrival, now: Instant) -> Result<(), String> {
        let mut s = self.state();
        if let Arrival::Partner(p) = who {
            let better: u64 = s.levels.iter().filter(|l| l.0 < p).map(|l| l.1).sum();
            let upto: u64 = s.levels.iter().filter(|l| l.0 <= p).map(|l| l.1).sum();
            let capacity = u64::from(s.cpus.max(1)) * 1000 + 250;
            if better > 0 && upto + 1000 > capacity {
                return Err(format!(
                    "its cluster's priority here is {p}, and processes of better priorities want the CPUs ({:.1} of {})",
                    better as f64 / 1000.0,
                    s.cpus.max(1)
                ));
            }
        }
        if let (Some(c), Some(me)) = (ceiling, s.me.as_ref()) {
            let mut me = *me;
            match who {
                // Guests of other clusters would make room.
                Arrival::Own => me.load = me.load.saturating_sub(s.foreign),
                // So would guests of worse priorities than this one's.
                Arrival::Partner(p) => {
                    let worse: u64 = s.levels.iter().filter(|l| l.0 > p).map(|l| l.1).sum();
                    let units = (worse as f64 / 1000.0 * me.one()).round();
                    if units.is_finite() && units > 0.0 {
                        me.load = me
                            .load
                            .saturating_sub(units.min(f64::from(u32::MAX)) as u32);
                    }
                }
            }
            admits(&me, s.unmeasured(), c)?;
        }
        s.arrived.push(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_core::NodeId;
    use mosix_core::node::Status;

    fn node(load: u32) -> NodeState {
        NodeState {
            node: NodeId::new(3).unwrap(),
            load,
            speed: 10_000,
            cpus: 1,
            mem_total: 1 << 30,
            mem_free: 1 << 29,
            flags: Status::empty(),
            measured_at: 0,
        }
    }

    #[test]
    fn an_arrival_counts_until_the_samples_show_it() {
        let ms = std::time::Duration::from_millis;
        let a = Admission::default();
        let t0 = Instant::now();
        // Before the first sample, everything is taken.
        assert_eq!(a.admit_at(Some(0), Arrival::Own, t0), Ok(()));
        // A sample 100 ms later cannot show it (it was still being restored): a second process
        // would share the CPU with it, above a ceiling of 170.
        a.updated(node(0), t0 + ms(100));
        let no = a
            .admit_at(Some(170), Arrival::Own, t0 + ms(200))
            .unwrap_err();
        assert!(no.contains("1 more just arrived"), "{no}");
        // A sample 800 ms after it shows half of it in the load, and half is still unmeasured:
        // never counted twice.
        a.updated(node(50), t0 + ms(800));
        assert!(a.admit_at(Some(200), Arrival::Own, t0 + ms(900)).is_ok());
        // Taken: it counts too. A third would see three to a CPU.
        assert!(a.admit_at(Some(270), Arrival::Own, t0 + ms(950)).is_err());
        // Once samples show both, only the load counts; a move nobody checks is always taken.
        a.updated(node(200), t0 + ms(2_300));
        assert_eq!(a.admit_at(None, Arrival::Own, t0 + ms(2_400)), Ok(()));
        assert!(a.admit_at(Some(300), Arrival::Own, t0 + ms(2_400)).is_err());
        a.updated(node(300), t0 + ms(3_800));
        assert_eq!(a.admit_at(Some(400), Arrival::Own, t0 + ms(3_900)), Ok(()));
    }

    #[test]
    fn guests_of_other_clusters_make_no_load_for_an_arrival_of_this_cluster() {
        let a = Admission::default();
        let t0 = Instant::now();
        a.updated(node(200), t0);
        a.set_grid(200, true, vec![(0, 1000), (10, 2000)], 2);
        assert!(a.own_busy());
        assert!(a.admit_at(Some(150), Arrival::Partner(15), t0).is_err());
        assert!(a.admit_at(Some(150), Arrival::Own, t0).is_ok());
        // A partner's process where better ones fill the CPUs is refused, even when asked for.
        let no = a.admit_at(None, Arrival::Partner(10), t0).unwrap_err();
        assert!(no.contains("priority here is 10"), "{no}");
        // One of a better priority than the guests here is taken: it displaces them, so their
        // load does not count against it.
        assert!(a.admit_at(None, Arrival::Partner(5), t0).is_ok());
        let b = Admission::default();
        b.updated(node(200), t0);
        b.set_grid(200, false, vec![(10, 2000)], 1);
        assert!(b.admit_at(Some(150), Arrival::Partner(10), t0).is_err());
        assert!(b.admit_at(Some(150), Arrival::Partner(5), t0).is_ok());
    }
}
