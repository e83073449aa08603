//! Dissemination benchmark: simulated ages of the gossip against the closed forms of Amar et al.
//!
//! For N = 16 … 4096 nodes and windows W = 8, 16, 32 it runs the discrete-event simulator (the
//! node service's own state machine, one message per node per step) and prints the measured
//! average and maximal ages of the entries beside the closed-form expectations, with their
//! ratio. The goal is agreement within 10 % for N ≥ 64. Ages are in gossip steps (intervals).
//!
//! A second table simulates grids of 1 … 16 clusters of 32 nodes, every cluster a partner of
//! every other, one send in five crossing ([grid] every = 5): what a node sends and receives
//! per step does not grow with the grid (the goal), while the age of partners' information does,
//! with the number of partners.
//!
//! Run with `cargo bench -p mosix-core --bench dissemination`; pass `--quick` to stop at N = 1024.

use std::time::Instant;

use mosix_core::ages::closed_form;
use mosix_core::sim::{AgeRun, GridRun, simulate_ages, simulate_grid};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[16, 64, 256, 1024]
    } else {
        &[16, 64, 256, 1024, 4096]
    };
    let windows = [8usize, 16, 32];
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for &n in sizes {
        for &w in &windows {
            jobs.push((n, w));
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let started = Instant::now();
    // Largest runs first so that the threads finish together.
    jobs.sort_by_key(|&(n, w)| std::cmp::Reverse(n * 64 / w));
    let results = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(n, w)) = jobs.get(k) else { break };
                    let t = Instant::now();
                    let r =
                        simulate_ages(&AgeRun::for_size(n, w, 0x5eed ^ (n as u64) << 8 ^ w as u64));
                    let secs = t.elapsed().as_secs_f64();
                    if let Ok(mut v) = results.lock() {
                        v.push((n, w, r, secs));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|&(n, w, _, _)| (n, w));

    println!("Dissemination ages (gossip steps): simulation vs closed form (Amar et al. 2009)");
    println!(
        "{:>5} {:>3} | {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6} | {:>9} {:>6} | goal",
        "N", "W", "avg sim", "avg cf", "ratio", "max sim", "max cf", "ratio", "messages", "secs"
    );
    let mut worst: f64 = 0.0;
    for (n, w, r, secs) in &results {
        let c = closed_form(*n, *w);
        let ra = r.avg_age / c.avg_age;
        let rm = r.max_age / c.max_age;
        let goal = if !c.avg_age.is_finite() {
            "n/a (W >= N: whole vector sent)".to_owned()
        } else if *n < 64 {
            "(N < 64: reported only)".to_owned()
        } else {
            let dev = (ra - 1.0).abs().max((rm - 1.0).abs());
            worst = worst.max(dev);
            if dev <= 0.10 {
                "ok (within 10 %)".to_owned()
            } else {
                format!("MISSED ({:.1} %)", dev * 100.0)
            }
        };
        let f = |x: f64| {
            if x.is_finite() {
                format!("{x:8.2}")
            } else {
                format!("{:>8}", "-")
            }
        };
        let g = |x: f64| {
            if x.is_finite() {
                format!("{x:6.3}")
            } else {
                format!("{:>6}", "-")
            }
        };
        println!(
            "{:>5} {:>3} | {} {} {} | {} {} {} | {:>9} {:>6.1} | {}",
            n,
            w,
            f(r.avg_age),
            f(c.avg_age),
            g(ra),
            f(r.max_age),
            f(c.max_age),
            g(rm),
            r.messages,
            secs,
            goal
        );
    }
    println!(
        "worst deviation for N >= 64: {:.1} %; total {:.0} s on {threads} threads",
        worst * 100.0,
        started.elapsed().as_secs_f64()
    );
    grid_table(quick);
}

/// Grids of growing size: the cost per node against the ages.
fn grid_table(quick: bool) {
    let counts: &[usize] = if quick {
        &[1, 2, 4, 8]
    } else {
        &[1, 2, 4, 8, 16]
    };
    println!();
    println!("Gossip across a grid: clusters of 32 nodes, W = 16, one send in 5 crosses");
    println!(
        "{:>8} {:>6} | {:>10} {:>10} | {:>8} {:>11} {:>11} | goal",
        "clusters", "nodes", "sent/step", "max recv", "own avg", "partner avg", "partner max"
    );
    for &c in counts {
        let r = simulate_grid(&GridRun {
            clusters: c,
            nodes: 32,
            window: 16,
            every: 5,
            warmup_steps: 200,
            measure_steps: 400,
            seed: 0x9e1d ^ c as u64,
        });
        let goal = if (r.sent_per_node_step - 1.0).abs() <= 0.02 {
            "ok (one message a node a step)"
        } else {
            "MISSED"
        };
        let partner = |x: f64| {
            if c > 1 {
                format!("{x:11.2}")
            } else {
                format!("{:>11}", "-")
            }
        };
        println!(
            "{:>8} {:>6} | {:>10.3} {:>10.2} | {:>8.2} {} {} | {}",
            c,
            c * 32,
            r.sent_per_node_step,
            r.max_received_per_node_step,
            r.own_avg_age,
            partner(r.partner_avg_age),
            partner(r.partner_max_age),
            goal
        );
    }
}
