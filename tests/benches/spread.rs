//! Automatic load balancing on the real virtual cluster (needs root): 4 nodes of 0.4 CPU each,
//! K identical CPU-bound jobs started on node 1. Prints, for every repetition, in one run:
//!
//! * the lower bound: the K jobs' work over the four nodes' capacity, measured with K/4
//!   processes on every node at once for six seconds (see [`capacity`]) right before and right
//!   after each run;
//! * static round-robin placement from the start (`mosrun -h`, `-2`, `-3`, `-4` in turn, never
//!   moved afterwards): what the best placement at start delivers for identical jobs, on this
//!   machine, with its overheads;
//! * ours: all K started at home with plain `mosrun`, spread by the nodes' balancers.
//!
//! The goal (issue 5): ours within 1.1× the lower bound for K = 8. What this VM delivers drifts
//! by several percent from one minute to the next, and the spreading costs a couple of seconds
//! (the other nodes idle until the first jobs arrive, about 1.4 s): hence a bench with several
//! repetitions and the static placement (optimal for identical jobs when K is a multiple of 4)
//! beside ours, not a timed assertion in a test.
//!
//! `sudo cargo bench -p mosix-tests --bench spread`; `MOSIX_BENCH_K` (default 8),
//! `MOSIX_BENCH_RUNS` (3), `MOSIX_BENCH_CPUS` (CPUs per node, 0.4), `MOSIX_BENCH_SECS` (one job's run time alone on a node, 12.5: the lower
//! bound is then 25 s for K = 8).
#![allow(clippy::unwrap_used)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mosix_tests::{TestCluster, env_or, user_tool};

/// The capacity of the four nodes while each runs `per_node` CPU-bound processes, as the jobs
/// will once spread, iterations per second: `per_node` spinners on every node at once for six
/// seconds, each reporting its own rate (the same loop as the jobs' work).
///
/// A first version timed a fixed count of iterations from each spinner's start instead. That
/// count was sized for the debug build; the release build runs the loop many times faster, so
/// each spinner lasted well under a second, and its first CPU-quota period — a burst before the
/// throttling — and its start-up weighed on the rate: the bound came out too optimistic, and
/// even the optimal static placement measured 1.05–1.5× it.
fn capacity(c: &TestCluster, per_node: usize) -> f64 {
    // As nobody, like the jobs measured against this bound.
    let probe = user_tool("mosix-probe");
    let spinners: Vec<Child> = (1..=4)
        .flat_map(|k| std::iter::repeat_n(k, per_node.max(1)))
        .map(|k| {
            c.user_command(k, probe.to_str().unwrap(), &["spin", "6"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    spinners
        .into_iter()
        .map(|s| {
            let out = s.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .unwrap()
        })
        .sum()
}

/// Waits until node 1 sees every node's load under a quarter of a process, so that a run does
/// not start with the previous one's figures still decaying.
fn settle(c: &TestCluster) {
    let quiet = |v: &mosix_core::client::ClusterView| {
        v.nodes
            .iter()
            .all(|n| n.figures.is_some_and(|f| f.load < 60))
    };
    if let Err(e) = c.wait_view(1, Duration::from_secs(60), quiet) {
        eprintln!("the loads did not settle: {e}");
    }
}

/// Runs `k` jobs of `work` iterations from node 1, each started with `placement(i)`; the
/// makespan in seconds.
fn makespan(c: &TestCluster, k: usize, work: u64, placement: impl Fn(usize) -> Vec<String>) -> f64 {
    let n = work.to_string();
    let start = Instant::now();
    let jobs: Vec<Child> = (0..k)
        .map(|i| {
            let args = placement(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            c.probe(&args, &["work", &n])
        })
        .collect();
    for j in jobs {
        let out = j.wait_with_output().unwrap();
        assert!(out.status.success(), "a job failed: {}", out.status);
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the spread benchmark needs root (it builds a virtual cluster)");
        std::process::exit(1);
    }
    let k: usize = env_or("MOSIX_BENCH_K", 8);
    let runs: usize = env_or("MOSIX_BENCH_RUNS", 3);
    let secs: f64 = env_or("MOSIX_BENCH_SECS", 12.5);
    let cpus: f64 = env_or("MOSIX_BENCH_CPUS", 0.4);
    let per_node = k.div_ceil(4);
    let c = TestCluster::up("tspread", 4, |s| s.cpus_per_node = Some(cpus));
    c.wait_all_up();
    let moves = |c: &TestCluster| -> usize {
        (1..=4)
            .map(|n| c.log(n).matches("balancing (").count())
            .sum()
    };

    println!("K = {k} identical CPU-bound jobs from node 1 of 4 nodes ({cpus} CPU each)");
    println!(
        "{:>4} {:>19} {:>19} {:>12} {:>6}",
        "run", "static RR s (×LB)", "ours s (×LB)", "ours/static", "moves"
    );
    let mut ratios = Vec::new();
    for r in 1..=runs {
        // The capacity is measured before, between and after the two runs; each run's lower
        // bound uses the measurements on either side of it.
        let cal0 = capacity(&c, per_node);
        // One job alone on a node would take `secs`.
        let work = (cal0 / 4.0 * secs) as u64;
        let lb = |a: f64, b: f64| k as f64 * work as f64 / ((a + b) / 2.0);
        settle(&c);
        let rr = makespan(&c, k, work, |i| match i % 4 {
            0 => vec!["-h".to_string()],
            x => vec![format!("-{}", x + 1)],
        });
        let cal1 = capacity(&c, per_node);
        settle(&c);
        let m0 = moves(&c);
        let ours = makespan(&c, k, work, |_| Vec::new());
        let m = moves(&c) - m0;
        let cal2 = capacity(&c, per_node);
        let (rr_lb, ours_lb) = (rr / lb(cal0, cal1), ours / lb(cal1, cal2));
        println!(
            "{r:>4} {rr:>11.1} ({rr_lb:>4.2}) {ours:>11.1} ({ours_lb:>4.2}) {:>12.2} {m:>6}",
            ours / rr
        );
        ratios.push((rr_lb, ours_lb, ours / rr));
    }
    let mean =
        |f: fn(&(f64, f64, f64)) -> f64| ratios.iter().map(f).sum::<f64>() / ratios.len() as f64;
    println!(
        "mean: static round-robin {:.3}× LB, ours {:.3}× LB, ours/static {:.3}",
        mean(|x| x.0),
        mean(|x| x.1),
        mean(|x| x.2)
    );
}
