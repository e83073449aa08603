//! A discrete-event simulator of information dissemination at scale.
//!
//! Each simulated node is a [`Dissemination`] — the very state machine the node service runs —
//! that sends once per interval at its own random phase; messages arrive at once (on a LAN the
//! transit time is far below the interval, and the service counts it as zero too). Observers sample the ages of the entries in their vectors, which the
//! dissemination benchmark compares with the closed forms of [`crate::ages`].

pub mod jobs;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::gossip::{Dissemination, GossipConfig, Millis};
use crate::node::NodeId;

/// The simulated interval, in milliseconds (one gossip step).
pub const STEP_MS: u64 = 1000;

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeRun {
    /// Number of nodes.
    pub nodes: usize,
    /// Entries per message.
    pub window: usize,
    /// Steps to run before measuring, so that the start (everyone heard of everyone at time 0)
    /// is forgotten.
    pub warmup_steps: u64,
    /// Steps to measure over.
    pub measure_steps: u64,
    /// How many nodes sample their vectors.
    pub observers: usize,
    /// Samples per step.
    pub samples_per_step: u32,
    /// The random seed; equal seeds give equal results.
    pub seed: u64,
}

impl AgeRun {
    /// A run long enough for (N, W): warm up for three expected maximal ages, measure for two,
    /// at least 50 and 100 steps.
    pub fn for_size(nodes: usize, window: usize, seed: u64) -> AgeRun {
        let m = crate::ages::closed_form(nodes, window).max_age;
        let m = if m.is_finite() { m.ceil() as u64 } else { 10 };
        AgeRun {
            nodes,
            window,
            warmup_steps: (3 * m).max(50),
            measure_steps: (2 * m).max(100),
            observers: nodes.min(32),
            samples_per_step: 1,
            seed,
        }
    }
}

/// What a run measured, in gossip steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgeResult {
    /// Mean age of the entries of a vector (foreign entries; a node's own entry is always fresh).
    pub avg_age: f64,
    /// Mean over samples of the largest age in a vector.
    pub max_age: f64,
    /// Messages sent in all.
    pub messages: u64,
}

enum Event {
    Send(usize),
    Sample,
}

/// Runs the simulation and measures the ages.
pub fn simulate_ages(run: &AgeRun) -> AgeResult {
    let n = run.nodes.max(2);
    let mut rng = SmallRng::seed_from_u64(run.seed);
    let ids: Vec<NodeId> = (1..=n)
        .filter_map(|i| u16::try_from(i).ok().and_then(NodeId::new))
        .collect();
    let cfg = GossipConfig {
        interval_ms: STEP_MS,
        window: run.window,
        dead_after_ms: None,
        reprobe_cycle: 5,
    };
    let mut nodes: Vec<Dissemination<()>> = Vec::with_capacity(n);
    let mut queue: BinaryHeap<Reverse<(Millis, u64, usize)>> = BinaryHeap::new();
    let mut events: Vec<Option<Event>> = Vec::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, events: &mut Vec<Option<Event>>, t: Millis, e| {
        events.push(Some(e));
        queue.push(Reverse((t, seq, events.len() - 1)));
        seq += 1;
    };
    for (i, id) in ids.iter().enumerate() {
        let phase = rng.random_range(0..STEP_MS);
        let Ok(mut d) = Dissemination::new(ids.clone(), *id, cfg, 0, phase) else {
            continue;
        };
        d.assume_all_known(0, ());
        push(&mut queue, &mut events, d.next_send(), Event::Send(i));
        nodes.push(d);
    }
    let observers: Vec<usize> = (0..run.observers.min(n))
        .map(|_| rng.random_range(0..n))
        .collect();
    let start = ms(run.warmup_steps * STEP_MS);
    let end = ms((run.warmup_steps + run.measure_steps) * STEP_MS);
    let per = u64::from(run.samples_per_step.max(1));
    for k in 0..run.measure_steps * per {
        let t = start + ms(k * STEP_MS / per) + ms(rng.random_range(0..STEP_MS / per));
        push(&mut queue, &mut events, t, Event::Sample);
    }

    let (mut sum_avg, mut sum_max, mut samples, mut messages) = (0.0, 0.0, 0u64, 0u64);
    while let Some(Reverse((now, _, slot))) = queue.pop() {
        if now > end {
            break;
        }
        let Some(ev) = events[slot].take() else {
            continue;
        };
        match ev {
            Event::Send(i) => {
                nodes[i].set_local((), now);
                if let Some((to, msg)) = nodes[i].send(now, &mut rng) {
                    messages += 1;
                    let j = usize::from(to.get()) - 1;
                    nodes[j].receive(&msg, now);
                }
                let next = nodes[i].next_send();
                push(&mut queue, &mut events, next, Event::Send(i));
            }
            Event::Sample => {
                for &o in &observers {
                    let (mut sum, mut max, mut count) = (0u64, 0u64, 0u64);
                    for age in nodes[o].foreign_ages(now).flatten() {
                        sum += age;
                        max = max.max(age);
                        count += 1;
                    }
                    if count > 0 {
                        sum_avg += sum as f64 / count as f64;
                        sum_max += max as f64;
                        samples += 1;
                    }
                }
            }
        }
        // Slots of finished events are not reused; compact now and then to bound memory.
        if events.len() > 4 * n + 1024 && queue.len() < events.len() / 4 {
            let mut fresh: Vec<Option<Event>> = Vec::with_capacity(queue.len() * 2);
            let old: Vec<_> = std::mem::take(&mut queue).into_vec();
            for Reverse((t, s, slot)) in old {
                if let Some(e) = events[slot].take() {
                    fresh.push(Some(e));
                    queue.push(Reverse((t, s, fresh.len() - 1)));
                }
            }
            events = fresh;
        }
    }
    let steps = STEP_MS as f64;
    let samples = samples.max(1) as f64;
    AgeResult {
        avg_age: sum_avg / samples / steps,
        max_age: sum_max / samples / steps,
        messages,
    }
}

fn ms(v: u64) -> Millis {
    Millis::try_from(v).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ages::closed_form;

    fn within(measured: f64, expected: f64, tol: f64) -> bool {
        (measured / expected - 1.0).abs() <= tol
    }

    #[test]
    fn measured_ages_match_the_closed_form_at_n64() {
        for w in [8, 16] {
            let r = simulate_ages(&AgeRun::for_size(64, w, 42));
            let c = closed_form(64, w);
            assert!(
                within(r.avg_age, c.avg_age, 0.10),
                "W={w}: avg {} vs {}",
                r.avg_age,
                c.avg_age
            );
            assert!(
                within(r.max_age, c.max_age, 0.10),
                "W={w}: max {} vs {}",
                r.max_age,
                c.max_age
            );
        }
    }

    #[test]
    fn equal_seeds_give_equal_runs() {
        let run = AgeRun::for_size(32, 8, 3);
        assert_eq!(simulate_ages(&run), simulate_ages(&run));
    }
}
