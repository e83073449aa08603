//! The balance benchmark, in simulation: every placement policy on the same workloads, side by
//! side, with the lower bound (balancing-anchors §4).
//!
//! - **B1**: K identical CPU-bound jobs of 300 s released at once on one node of 4 (static
//!   round-robin spreads them at release instead), K = 5..12: makespan against the lower bound.
//! - **B2**: 16 jobs on 4 nodes, work uniform in (0, 600] s, released at once, placed
//!   round-robin (the dynamic policies start from that placement too); mean of 20 seeds.
//! - **B4**: Harchol-Balter & Downey's setting: 6 hosts, Poisson arrivals at each host at load
//!   ρ, Pareto(α = 1) lifetimes from 0.1 s to 10⁴ s, migration cost a + 4 µs per page of a
//!   resident size uniform in (0, 16] MiB.
//! - **Cost**: B1 with K = 5 and 60 s jobs, under our balancer, with a rising fixed migration
//!   cost: the balancer grows reluctant (fewer moves, later).
//!
//! "moves" counts migrations and remote starts (a job placed away from its home at release).
//!
//! Run with `cargo bench -p mosix-core --bench balance`.
#![allow(missing_docs, clippy::unwrap_used)]

use mosix_core::sim::jobs::{
    Job, Outcome, Policy, Run, SimCosts, SimNode, lower_bound_ms, simulate,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// `nodes` standard nodes, the default costs, this seed.
fn run(nodes: usize, jobs: Vec<Job>, policy: Policy, seed: u64) -> Outcome {
    simulate(&Run {
        seed,
        ..Run::new(vec![SimNode::STANDARD; nodes], jobs, policy)
    })
}

const DYNAMIC: [Policy; 2] = [Policy::MOSIX, Policy::OURS];

fn b1() {
    println!("B1: K identical 300 s jobs from one node, N = 4 (makespan s, ratio to LB)");
    println!(
        "{:>3} {:>8} {:>14} {:>14} {:>14} {:>14} {:>10}",
        "K", "LB", "static RR", "random", "MOSIX-like", "ours", "ours moves"
    );
    for k in 5..=12 {
        let jobs = Job::identical(k, 300_000.0, 8 << 20);
        let lb = lower_bound_ms(&[SimNode::STANDARD; 4], &jobs);
        let cell =
            |o: &Outcome| format!("{:.0} ({:.2})", o.makespan_ms / 1000.0, o.makespan_ms / lb);
        let rr = run(4, jobs.clone(), Policy::RoundRobin, 1);
        // Random placement: the mean of 10 seeds.
        let mut rnd = 0.0;
        for s in 0..10 {
            rnd += run(4, jobs.clone(), Policy::Random, s).makespan_ms / 10.0;
        }
        let dy: Vec<Outcome> = DYNAMIC
            .iter()
            .map(|p| run(4, jobs.clone(), *p, 1))
            .collect();
        println!(
            "{k:>3} {:>8.0} {:>14} {:>14} {:>14} {:>14} {:>10}",
            lb / 1000.0,
            cell(&rr),
            format!("{:.0} ({:.2})", rnd / 1000.0, rnd / lb),
            cell(&dy[0]),
            cell(&dy[1]),
            dy[1].migrations
        );
    }
    println!();
}

fn b2() {
    println!("B2: 16 jobs on 4 nodes, work U(0, 600] s, placed round-robin; mean of 20 seeds");
    println!(
        "{:>22} {:>14} {:>14} {:>10}",
        "policy", "makespan/LB", "mean slowdown", "moves"
    );
    let policies = [
        Policy::RoundRobin,
        Policy::Random,
        Policy::MOSIX,
        Policy::OURS,
    ];
    let mut rows = vec![(0.0, 0.0, 0.0); policies.len()];
    let seeds = 20;
    // Two references: one 4-CPU machine shared perfectly (the best a policy can do without
    // knowing the run times, when all start together), and shortest-first knowing them.
    let (mut ps, mut srpt) = ((0.0, 0.0), (0.0, 0.0));
    for seed in 0..seeds {
        let mut rng = SmallRng::seed_from_u64(1000 + seed);
        let jobs: Vec<Job> = (0..16)
            .map(|k| Job {
                release_ms: 0,
                work_ms: rng.random_range(1.0..=600_000.0),
                home: k % 4,
                rss: 8 << 20,
            })
            .collect();
        let lb = lower_bound_ms(&[SimNode::STANDARD; 4], &jobs);
        let one = simulate(&Run::new(
            vec![SimNode {
                cpus: 4,
                ..SimNode::STANDARD
            }],
            jobs.iter().map(|j| Job { home: 0, ..*j }).collect(),
            Policy::NoMigration,
        ));
        ps.0 += one.makespan_ms / lb / seeds as f64;
        ps.1 += one.mean_slowdown / seeds as f64;
        let mut w: Vec<f64> = jobs.iter().map(|j| j.work_ms).collect();
        w.sort_by(f64::total_cmp);
        let mut free = [0.0f64; 4];
        let (mut end, mut sd) = (0.0f64, 0.0);
        for x in &w {
            let m = (0..4).min_by(|a, b| free[*a].total_cmp(&free[*b])).unwrap();
            free[m] += x;
            end = end.max(free[m]);
            sd += free[m] / x / w.len() as f64;
        }
        srpt.0 += end / lb / seeds as f64;
        srpt.1 += sd / seeds as f64;
        for (i, p) in policies.iter().enumerate() {
            let o = run(4, jobs.clone(), *p, seed);
            rows[i].0 += o.makespan_ms / lb / seeds as f64;
            rows[i].1 += o.mean_slowdown / seeds as f64;
            rows[i].2 += o.migrations as f64 / seeds as f64;
        }
    }
    let rr = rows[0].1;
    for (p, r) in policies.iter().zip(&rows) {
        println!(
            "{:>22} {:>14.3} {:>8.3} ({:.2}) {:>10.1}",
            p.name(),
            r.0,
            r.1,
            r.1 / rr,
            r.2
        );
    }
    for (name, r) in [("one 4-CPU machine", ps), ("shortest first", srpt)] {
        println!("{:>22} {:>14.3} {:>8.3} ({:.2})", name, r.0, r.1, r.1 / rr);
    }
    println!("(LB makespan ratio 1.000; slowdown in brackets is relative to static RR)");
    println!();
}

fn pareto_jobs(hosts: usize, rho: f64, horizon_s: f64, seed: u64) -> Vec<Job> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (xmin, xmax): (f64, f64) = (0.1, 1e4);
    let mean = xmin * (xmax / xmin).ln() / (1.0 - xmin / xmax);
    let rate = rho / mean; // arrivals per second per host
    let mut jobs = Vec::new();
    for h in 0..hosts {
        let mut t = 0.0;
        loop {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            t += -u.ln() / rate;
            if t > horizon_s {
                break;
            }
            // Truncated Pareto(1) by inversion.
            let v: f64 = rng.random_range(0.0..1.0);
            let w = xmin / (1.0 - v * (1.0 - xmin / xmax));
            jobs.push(Job {
                release_ms: (t * 1000.0) as u64,
                work_ms: w * 1000.0,
                home: h,
                rss: rng.random_range(1u64..=16 << 20),
            });
        }
    }
    jobs
}

fn b4() {
    println!("B4: 6 hosts, Poisson arrivals, Pareto(1) lifetimes 0.1..10^4 s, 1500 s of arrivals");
    println!(
        "{:>4} {:>6} {:>22} {:>14} {:>14} {:>12} {:>8}",
        "rho", "a (s)", "policy", "mean slowdown", "mean delay s", "slowdown>3", "moves"
    );
    for rho in [0.5, 0.7, 0.9] {
        for a in [0.1, 0.3, 1.0] {
            let jobs = pareto_jobs(6, rho, 1500.0, (rho * 100.0) as u64);
            let costs = SimCosts {
                fixed_us: (a * 1e6) as u64,
                page_ns: 4_000,
            };
            for p in [
                Policy::NoMigration,
                Policy::LeastLoaded,
                Policy::MOSIX,
                Policy::OURS,
            ] {
                let o = simulate(&Run {
                    step_ms: 10,
                    costs,
                    seed: 7,
                    ..Run::new(vec![SimNode::STANDARD; 6], jobs.clone(), p)
                });
                println!(
                    "{rho:>4} {a:>6} {:>22} {:>14.2} {:>14.2} {:>11.1}% {:>8}",
                    p.name(),
                    o.mean_slowdown,
                    o.mean_delay_ms / 1000.0,
                    o.frac_over_3 * 100.0,
                    o.migrations
                );
            }
        }
    }
    println!();
}

fn cost() {
    println!("Cost: 5 jobs of 60 s from one node of 4, our balancer, rising migration cost");
    println!(
        "{:>14} {:>10} {:>12} {:>8}",
        "fixed cost", "moves", "makespan s", "/LB"
    );
    let jobs = Job::identical(5, 60_000.0, 64 << 20);
    let lb = lower_bound_ms(&[SimNode::STANDARD; 4], &jobs);
    for fixed_ms in [5u64, 100, 500, 2_000, 10_000, 60_000] {
        let o = simulate(&Run {
            costs: SimCosts {
                fixed_us: fixed_ms * 1000,
                page_ns: 4_000,
            },
            ..Run::new(vec![SimNode::STANDARD; 4], jobs.clone(), Policy::OURS)
        });
        println!(
            "{:>11} ms {:>10} {:>12.1} {:>8.2}",
            fixed_ms,
            o.migrations,
            o.makespan_ms / 1000.0,
            o.makespan_ms / lb
        );
    }
    println!();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // MOSIX_BENCH_ONLY=b1,b4 runs a part.
    let only = std::env::var("MOSIX_BENCH_ONLY").unwrap_or_default();
    let want = |x: &str| only.is_empty() || only.split(',').any(|o| o == x);
    if want("b1") {
        b1();
    }
    if want("b2") {
        b2();
    }
    if want("b4") {
        b4();
    }
    if want("cost") {
        cost();
    }
}
