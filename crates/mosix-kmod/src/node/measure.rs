//! Measuring a node: its speed, CPUs, run queue, memory and utilisation, on a machine or in a
//! cgroup (see [`crate::node::cgroup`]).
//!
//! The run queue is sampled every `sample_ms` (100 ms by default) and averaged over each second,
//! as MOSIX's per-tick sampling does; the averages are turned into load by
//! [`mosix_core::load::LoadSmoother`]. On a machine the sample is `procs_running` of
//! `/proc/stat` (minus the sampler itself); in a cgroup it is the number of the cgroup's threads
//! in state `R` (a thread throttled by the CPU quota is still runnable, which is exactly what the
//! load should count). The service's own threads are never counted.
//!
//! The machine's totals — its CPUs and its memory, which bound a cgroup's too — come from
//! `sysinfo`; the run queue, CPU time and the processes' states from `procfs`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mosix_core::load::Sample;
use mosix_core::yardstick;
use procfs::CurrentSI;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};

use crate::node::cgroup::NodeCgroup;

/// What a node is: the machine, or a cgroup.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The whole machine.
    Machine,
    /// A cgroup.
    Cgroup(NodeCgroup),
}

impl Scope {
    /// "machine" or "cgroup PATH", for messages.
    pub fn describe(&self) -> String {
        match self {
            Scope::Machine => "machine".to_owned(),
            Scope::Cgroup(c) => format!("cgroup {}", c.path),
        }
    }
}

/// Measures the speed of one CPU of this machine with the yardstick: the best of several short
/// bursts, so that a CPU quota (which throttles only after a burst has used its share of the
/// period) or a busy neighbour does not distort the result.
pub fn calibrate_speed() -> u32 {
    let rounds = 1_000_000u64;
    let mut best = u64::MAX;
    let deadline = Instant::now() + Duration::from_millis(400);
    for i in 0..40 {
        let t = Instant::now();
        let _ = yardstick::run(rounds);
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        best = best.min(ns);
        if i >= 10 && Instant::now() > deadline {
            break;
        }
    }
    round_speed(yardstick::speed_from(rounds, best))
}

/// Rounds a speed to two significant digits, so that identical CPUs calibrated at different
/// moments report the same speed.
pub fn round_speed(s: u32) -> u32 {
    if s < 100 {
        return s.max(1);
    }
    let mut unit = 1u32;
    while s / unit >= 100 {
        unit *= 10;
    }
    ((s + unit / 2) / unit) * unit
}

/// The CPUs and the per-CPU speed of a node whose hardware CPUs have `raw_speed` and which may
/// use `quota` CPUs: a fractional quota becomes whole CPUs at a proportionally lower speed (half
/// a CPU is one CPU at half speed), so that load and speed keep their meaning.
pub fn cpus_and_speed(machine_cpus: u32, raw_speed: u32, quota: Option<f64>) -> (u32, u32) {
    match quota {
        Some(q) if q > 0.0 && q < f64::from(machine_cpus) => {
            let cpus = q.ceil().max(1.0);
            let speed = f64::from(raw_speed) * q / cpus;
            (cpus as u32, (speed.round() as u32).max(1))
        }
        _ => (machine_cpus.max(1), raw_speed),
    }
}

/// Takes the samples of one node.
#[derive(Debug)]
pub struct Measurer {
    scope: Scope,
    /// The machine's CPUs and memory (`None`: sysinfo could not start; they read as 0).
    system: Option<System>,
    machine_cpus: u32,
    raw_speed: u32,
    /// `mosctl setspeed` overrides the per-CPU speed.
    speed_override: Option<u32>,
    own_pid: i32,
    runnable_sum: u64,
    samples: u64,
    last_cpu: Option<(Instant, u64, u64)>,
}

impl Measurer {
    /// A measurer for `scope`, with this machine's per-CPU speed.
    pub fn new(scope: Scope, raw_speed: u32) -> Measurer {
        let mut system = System::new().ok();
        let machine_cpus = system
            .as_mut()
            .map(|s| {
                s.refresh_cpu_list(CpuRefreshKind::nothing());
                u32::try_from(s.cpus().len()).unwrap_or(1)
            })
            .unwrap_or(1)
            .max(1);
        Measurer {
            scope,
            system,
            machine_cpus,
            raw_speed,
            speed_override: None,
            own_pid: i32::try_from(std::process::id()).unwrap_or(0),
            runnable_sum: 0,
            samples: 0,
            last_cpu: None,
        }
    }

    /// What is measured.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Sets (or clears) the speed given with `mosctl setspeed`.
    pub fn set_speed_override(&mut self, s: Option<u32>) {
        self.speed_override = s;
    }

    /// The CPUs and per-CPU speed of the node now.
    pub fn cpus_and_speed(&self) -> (u32, u32) {
        let quota = match &self.scope {
            Scope::Machine => None,
            Scope::Cgroup(c) => c.cpu_quota(),
        };
        let (cpus, speed) = cpus_and_speed(self.machine_cpus, self.raw_speed, quota);
        (cpus, self.speed_override.unwrap_or(speed))
    }

    /// Takes one run-queue sample.
    pub fn sample(&mut self) {
        let r = match &self.scope {
            Scope::Machine => procfs::KernelStats::current()
                .ok()
                .and_then(|k| k.procs_running)
                .map_or(0, |r| u64::from(r.saturating_sub(1))),
            Scope::Cgroup(c) => {
                let own = own_threads(self.own_pid);
                c.threads()
                    .into_iter()
                    .filter(|t| !own.contains(t))
                    .filter(|t| thread_running(*t))
                    .count() as u64
            }
        };
        self.runnable_sum += r;
        self.samples += 1;
    }

    /// Closes the current second: the mean run queue since the last call, memory and
    /// utilisation.
    pub fn finish(&mut self) -> Sample {
        let runnable_milli = (self.runnable_sum * 1000)
            .checked_div(self.samples)
            .unwrap_or(0);
        self.runnable_sum = 0;
        self.samples = 0;
        let (cpus, speed) = self.cpus_and_speed();
        let (mem_total, mem_free, mem_rawfree) = self.memory();
        let util = self.utilisation(cpus);
        Sample {
            runnable_milli,
            cpus,
            speed,
            mem_total,
            mem_free,
            mem_rawfree,
            util,
        }
    }

    /// Total, available and free memory of the node, in bytes.
    fn memory(&mut self) -> (u64, u64, u64) {
        let (total, avail, free) = self.system.as_mut().map_or((0, 0, 0), |s| {
            s.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
            (s.total_memory(), s.available_memory(), s.free_memory())
        });
        match &self.scope {
            Scope::Machine => (total, avail, free),
            Scope::Cgroup(c) => {
                let limit = c.mem_limit().map_or(total, |l| l.min(total));
                let (usage, inactive) = c.mem_usage().unwrap_or((0, 0));
                let used = usage.saturating_sub(inactive);
                // The node cannot have more free memory than the machine has.
                (
                    limit,
                    limit.saturating_sub(used).min(avail),
                    limit.saturating_sub(usage).min(free),
                )
            }
        }
    }

    fn utilisation(&mut self, cpus: u32) -> u32 {
        let now = Instant::now();
        let (busy, total) = match &self.scope {
            Scope::Machine => {
                let Ok(k) = procfs::KernelStats::current() else {
                    return 0;
                };
                let t = &k.total;
                let busy = t.user
                    + t.nice
                    + t.system
                    + t.irq.unwrap_or(0)
                    + t.softirq.unwrap_or(0)
                    + t.steal.unwrap_or(0);
                (busy, busy + t.idle + t.iowait.unwrap_or(0))
            }
            Scope::Cgroup(c) => {
                let Some(ns) = c.cpu_usage_ns() else {
                    return 0;
                };
                (ns, 0)
            }
        };
        let prev = self.last_cpu.replace((now, busy, total));
        let Some((t0, b0, tot0)) = prev else {
            return 0;
        };
        let pct = match &self.scope {
            Scope::Machine => {
                let dt = total.saturating_sub(tot0);
                (busy.saturating_sub(b0) * 100).checked_div(dt).unwrap_or(0)
            }
            Scope::Cgroup(c) => {
                let wall_ns = now.duration_since(t0).as_nanos() as f64;
                let capacity = c.cpu_quota().unwrap_or(f64::from(cpus)) * wall_ns;
                if capacity <= 0.0 {
                    0
                } else {
                    (busy.saturating_sub(b0) as f64 * 100.0 / capacity).round() as u64
                }
            }
        };
        u32::try_from(pct.min(100)).unwrap_or(100)
    }
}

fn own_threads(pid: i32) -> HashSet<i32> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.tasks())
        .map(|ts| ts.flatten().map(|t| t.tid).collect())
        .unwrap_or_default()
}

fn thread_running(tid: i32) -> bool {
    procfs::process::Process::new(tid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state == 'R')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_round_to_two_digits() {
        assert_eq!(round_speed(13_449), 13_000);
        assert_eq!(round_speed(13_551), 14_000);
        assert_eq!(round_speed(99), 99);
        assert_eq!(round_speed(0), 1);
    }

    #[test]
    fn a_fractional_quota_is_slower_cpus() {
        assert_eq!(cpus_and_speed(2, 10_000, Some(0.5)), (1, 5_000));
        assert_eq!(cpus_and_speed(4, 10_000, Some(1.5)), (2, 7_500));
        assert_eq!(cpus_and_speed(2, 10_000, Some(4.0)), (2, 10_000));
        assert_eq!(cpus_and_speed(2, 10_000, None), (2, 10_000));
    }

    #[test]
    fn the_machine_measures_plausibly() {
        let mut m = Measurer::new(Scope::Machine, 10_000);
        m.sample();
        let _ = m.finish();
        m.sample();
        std::thread::sleep(Duration::from_millis(20));
        let s = m.finish();
        assert!(s.cpus >= 1);
        assert!(s.mem_total > 0);
        assert!(s.mem_free <= s.mem_total);
        assert!(s.util <= 100);
    }

    #[test]
    fn calibration_gives_a_plausible_speed() {
        let s = calibrate_speed();
        assert!((100..10_000_000).contains(&s), "{s}");
    }
}
