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
                    if let Some(answer) = nodes[j].receive_from(ids[i], &msg, now) {
                        messages += 1;
                        nodes[i].receive(&answer, now);
                    }
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

/// A grid to simulate: `clusters` clusters of `nodes` nodes, every cluster a partner of every
/// other, one send in `every` crossing to a partner (`gossip::CrossConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridRun {
    /// Clusters.
    pub clusters: usize,
    /// Nodes per cluster.
    pub nodes: usize,
    /// Entries per message.
    pub window: usize,
    /// One send in this many crosses.
    pub every: u32,
    /// Steps before measuring.
    pub warmup_steps: u64,
    /// Steps measured.
    pub measure_steps: u64,
    /// The random seed.
    pub seed: u64,
}

/// What a grid run measured (ages in gossip steps).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridResult {
    /// Messages a node sent per step.
    pub sent_per_node_step: f64,
    /// The most messages one node received in the measured steps, per step.
    pub max_received_per_node_step: f64,
    /// Mean age of the entries of the observer's own cluster.
    pub own_avg_age: f64,
    /// Mean age of the entries of other clusters.
    pub partner_avg_age: f64,
    /// Mean over samples of the oldest entry of another cluster.
    pub partner_max_age: f64,
}

/// Simulates the gossip of a grid: each node is the service's `Dissemination` over every node of
/// the grid with the other clusters' nodes marked foreign. Observers in every cluster sample
/// the ages of their own cluster's entries and of the others'.
pub fn simulate_grid(run: &GridRun) -> GridResult {
    let per = run.nodes.max(1);
    let n = (run.clusters.max(1) * per).max(2);
    let mut rng = SmallRng::seed_from_u64(run.seed);
    let ids: Vec<NodeId> = (1..=n)
        .filter_map(|i| u16::try_from(i).ok().and_then(NodeId::new))
        .collect();
    let cluster_of = |i: usize| i / per;
    let cfg = GossipConfig {
        interval_ms: STEP_MS,
        window: run.window,
        dead_after_ms: None,
        reprobe_cycle: 5,
    };
    let cross = crate::gossip::CrossConfig {
        every: run.every.max(1),
        dead_after_ms: None,
    };
    let mut nodes: Vec<Dissemination<()>> = Vec::with_capacity(n);
    let mut next: Vec<Millis> = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        let phase = rng.random_range(0..STEP_MS);
        let Ok(mut d) = Dissemination::new(ids.clone(), *id, cfg, 0, phase) else {
            continue;
        };
        let mut foreign: Vec<Vec<NodeId>> = vec![Vec::new(); n / per.max(1) + 1];
        for (j, x) in ids.iter().enumerate() {
            if cluster_of(j) != cluster_of(i) {
                foreign[cluster_of(j)].push(*x);
            }
        }
        d.set_foreign(&foreign, cross);
        d.assume_all_known(0, ());
        next.push(d.next_send());
        nodes.push(d);
    }
    let n = nodes.len();
    let observers: Vec<usize> = (0..run.clusters.max(1)).map(|c| c * per).collect();
    let start = ms(run.warmup_steps * STEP_MS);
    let end = ms((run.warmup_steps + run.measure_steps) * STEP_MS);
    let mut queue: BinaryHeap<Reverse<(Millis, usize)>> = next
        .iter()
        .enumerate()
        .map(|(i, t)| Reverse((*t, i)))
        .collect();
    let mut received = vec![0u64; n];
    let mut sent = 0u64;
    let (mut own_sum, mut own_n, mut far_sum, mut far_n, mut far_max, mut samples) =
        (0f64, 0u64, 0f64, 0u64, 0f64, 0u64);
    let mut next_sample = start;
    while let Some(Reverse((now, i))) = queue.pop() {
        if now > end {
            break;
        }
        while next_sample <= now && next_sample <= end {
            for &o in &observers {
                let mut oldest = 0u64;
                for k in nodes[o].known(next_sample).filter(|k| !k.is_self) {
                    let Some(age) = k.age_ms else { continue };
                    if nodes[o].is_foreign(k.node) {
                        far_sum += age as f64;
                        far_n += 1;
                        oldest = oldest.max(age);
                    } else {
                        own_sum += age as f64;
                        own_n += 1;
                    }
                }
                far_max += oldest as f64;
                samples += 1;
            }
            next_sample += ms(STEP_MS);
        }
        nodes[i].set_local((), now);
        if let Some((to, msg)) = nodes[i].send(now, &mut rng) {
            let j = usize::from(to.get()) - 1;
            if now >= start {
                sent += 1;
                received[j] += 1;
            }
            if let Some(answer) = nodes[j].receive_from(ids[i], &msg, now) {
                if now >= start {
                    sent += 1;
                    received[i] += 1;
                }
                nodes[i].receive(&answer, now);
            }
        }
        queue.push(Reverse((nodes[i].next_send(), i)));
    }
    let steps = run.measure_steps.max(1) as f64;
    let step = STEP_MS as f64;
    GridResult {
        sent_per_node_step: sent as f64 / n as f64 / steps,
        max_received_per_node_step: received.iter().copied().max().unwrap_or(0) as f64 / steps,
        own_avg_age: own_sum / own_n.max(1) as f64 / step,
        partner_avg_age: far_sum / far_n.max(1) as f64 / step,
        partner_max_age: far_max / samples.max(1) as f64 / step,
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

    #[test]
    fn a_grid_costs_each_node_one_message_a_step_whatever_its_size() {
        let run = |clusters| {
            simulate_grid(&GridRun {
                clusters,
                nodes: 16,
                window: 16,
                every: 5,
                warmup_steps: 100,
                measure_steps: 200,
                seed: 7,
            })
        };
        let small = run(2);
        let large = run(8);
        for r in [small, large] {
            assert!((r.sent_per_node_step - 1.0).abs() < 0.02, "{r:?}");
            assert!(r.partner_avg_age > r.own_avg_age, "{r:?}");
        }
        // Partners' news gets older with more partners (each is visited less often), while
        // what a node sends does not change.
        assert!(
            large.partner_avg_age > small.partner_avg_age,
            "{small:?} {large:?}"
        );
    }
}
