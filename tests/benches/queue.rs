//! Live queuing on the real virtual cluster (needs root): 4 nodes of 0.4 CPU each, K (12)
//! identical CPU-bound jobs from node 1. Prints, in one run:
//!
//! * by hand: the jobs run four at a time, one on each node (`mosrun -h`, `-2`, `-3`, `-4`),
//!   each wave started when the last one ended — what a user who knows the cluster does;
//! * ours: all K submitted at once with `mosrun -q -c`, started by the queue as room appears
//!   and placed by the balancer.
//!
//! For each: the makespan and the sum of the jobs' run times (for queued jobs, without the time
//! they waited in the queue, from the node's log). The goal (issue 14): ours within 1.1× by
//! hand for the sum of run times. A printed table, not a timed test.
//!
//! `sudo cargo bench -p mosix-tests --bench queue`; `MOSIX_BENCH_K` (12), `MOSIX_BENCH_WORK`
//! (iterations of one job, 8000000000); `MOSIX_BENCH_VERBOSE=1` prints the nodes' queue,
//! balancing and migration log lines.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Child;
use std::time::{Instant, SystemTime};

use mosix_tests::{TestCluster, env_or};

/// Waits for the jobs, all at once (a job is timed when it ends, not when its turn to be
/// reaped comes); their pids, wall times in seconds and when they ended.
fn finish(mut jobs: Vec<(Child, Instant)>) -> Vec<(u32, f64, SystemTime)> {
    let mut out = Vec::new();
    while !jobs.is_empty() {
        let mut i = 0;
        while i < jobs.len() {
            if let Some(status) = jobs[i].0.try_wait().unwrap() {
                let (j, t) = jobs.swap_remove(i);
                assert!(status.success(), "a job failed: {status}");
                out.push((j.id(), t.elapsed().as_secs_f64(), SystemTime::now()));
            } else {
                i += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    out
}

/// When each queued job started and how long it waited in the queue, by pid, from node 1's
/// log (its lines begin with an RFC 3339 UTC time).
fn starts(c: &TestCluster) -> HashMap<u32, (SystemTime, f64)> {
    c.log(1)
        .lines()
        .filter_map(|l| {
            let at = humantime::parse_rfc3339(l.split_whitespace().next()?).ok()?;
            let rest = l.split_once("queue: process ")?.1;
            let (pid, rest) = rest.split_once(" starts (")?;
            let w = rest.split_once("waited ")?.1.split_once(" s)")?.0;
            Some((pid.parse().ok()?, (at, w.parse().ok()?)))
        })
        .collect()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the queue benchmark needs root (it builds a virtual cluster)");
        std::process::exit(1);
    }
    let k: usize = env_or("MOSIX_BENCH_K", 12);
    let work: u64 = env_or("MOSIX_BENCH_WORK", 8_000_000_000);
    let n = work.to_string();
    let c = TestCluster::up("tqbench", 4, |s| s.cpus_per_node = Some(0.4));
    c.wait_all_up();

    // By hand: waves of four, one job a node.
    let start = Instant::now();
    let mut hand = Vec::new();
    for wave in 0..k.div_ceil(4) {
        let jobs: Vec<(Child, Instant)> = (0..4.min(k - wave * 4))
            .map(|i| {
                let place = match i {
                    0 => "-h".to_owned(),
                    x => format!("-{}", x + 1),
                };
                (c.probe(&[&place], &["work", &n]), Instant::now())
            })
            .collect();
        hand.extend(finish(jobs));
    }
    let hand_span = start.elapsed().as_secs_f64();
    let hand_sum: f64 = hand.iter().map(|x| x.1).sum();

    // Ours: all queued at once, when the figures have forgotten the jobs above (an exported
    // load falls to a tenth in about 18 s).
    std::thread::sleep(std::time::Duration::from_secs(20));
    let start = Instant::now();
    let jobs: Vec<(Child, Instant)> = (0..k)
        .map(|_| (c.probe(&["-q", "-c"], &["work", &n]), Instant::now()))
        .collect();
    let ours = finish(jobs);
    let ours_span = start.elapsed().as_secs_f64();
    let started = starts(&c);
    if std::env::var_os("MOSIX_BENCH_VERBOSE").is_some() {
        for n in 1..=4 {
            for l in c.log(n).lines().filter(|l| {
                l.contains("queue:")
                    || l.contains("migrat")
                    || l.contains("balancing")
                    || l.contains("arrived")
                    || l.contains("went home")
                    || l.contains("moved on")
            }) {
                eprintln!("node {n}: {l}");
            }
        }
    }
    // A queued job runs from its start (the queue's line) to its end; by hand, from `mosrun`
    // to its end. Also shown: from `mosrun -q` to the end, less the wait the service counted
    // (it adds the submission of all K at once on a node of 0.4 CPU).
    let from_start: Vec<f64> = ours
        .iter()
        .map(|(pid, _, end)| {
            let (at, _) = started.get(pid).expect("a queued job without a start line");
            end.duration_since(*at).map_or(0.0, |d| d.as_secs_f64())
        })
        .collect();
    let from_submit: Vec<f64> = ours
        .iter()
        .map(|(pid, t, _)| t - started.get(pid).map_or(0.0, |s| s.1))
        .collect();
    let ours_sum: f64 = from_start.iter().sum();
    let submit_sum: f64 = from_submit.iter().sum();

    if std::env::var_os("MOSIX_BENCH_VERBOSE").is_some() {
        let show = |v: &mut dyn Iterator<Item = f64>| -> String {
            v.map(|t| format!("{t:.2}")).collect::<Vec<_>>().join(" ")
        };
        eprintln!("run times by hand: {}", show(&mut hand.iter().map(|x| x.1)));
        eprintln!(
            "run times queued:  {}",
            show(&mut from_start.iter().copied())
        );
        eprintln!(
            "from submission:   {}",
            show(&mut from_submit.iter().copied())
        );
    }
    println!(
        "K = {k} identical CPU-bound jobs ({work} iterations) from node 1 of 4 nodes (0.4 CPU each)"
    );
    println!(
        "{:>22} {:>10} {:>16}",
        "", "makespan s", "sum of run times s"
    );
    println!(
        "{:>22} {hand_span:>10.1} {hand_sum:>16.1}",
        "by hand, 4 at a time"
    );
    println!(
        "{:>22} {ours_span:>10.1} {ours_sum:>16.1}",
        "mosrun -q (queue)"
    );
    println!("{:>22} {:>10} {submit_sum:>16.1}", "  from submission", "");
    println!(
        "ours/by hand: makespan {:.3}, sum of run times {:.3} (goal: ≤ 1.1; from submission {:.3})",
        ours_span / hand_span,
        ours_sum / hand_sum,
        submit_sum / hand_sum
    );
}
