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

    /// Whether a process may arrive now, its move carrying `ceiling` (`None`: not an automatic
    /// move, always taken). Counts it as arrived when it may.
    pub fn admit(&self, ceiling: Option<u32>) -> Result<(), String> {
        self.admit_at(ceiling, Instant::now())
    }

    fn admit_at(&self, ceiling: Option<u32>, now: Instant) -> Result<(), String> {
        let mut s = self.state();
        if let (Some(c), Some(me)) = (ceiling, s.me.as_ref()) {
            admits(me, s.unmeasured(), c)?;
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
        assert_eq!(a.admit_at(Some(0), t0), Ok(()));
        // A sample 100 ms later cannot show it (it was still being restored): a second process
        // would share the CPU with it, above a ceiling of 170.
        a.updated(node(0), t0 + ms(100));
        let no = a.admit_at(Some(170), t0 + ms(200)).unwrap_err();
        assert!(no.contains("1 more just arrived"), "{no}");
        // A sample 800 ms after it shows half of it in the load, and half is still unmeasured:
        // never counted twice.
        a.updated(node(50), t0 + ms(800));
        assert!(a.admit_at(Some(200), t0 + ms(900)).is_ok());
        // Taken: it counts too. A third would see three to a CPU.
        assert!(a.admit_at(Some(270), t0 + ms(950)).is_err());
        // Once samples show both, only the load counts; a move nobody checks is always taken.
        a.updated(node(200), t0 + ms(2_300));
        assert_eq!(a.admit_at(None, t0 + ms(2_400)), Ok(()));
        assert!(a.admit_at(Some(300), t0 + ms(2_400)).is_err());
        a.updated(node(300), t0 + ms(3_800));
        assert_eq!(a.admit_at(Some(400), t0 + ms(3_900)), Ok(()));
    }
}
