//! Automatic load balancing on a 4-node virtual cluster (each node a cgroup with a CPU quota):
//! 8 CPU-bound jobs started on node 1 spread 2-2-2-2
//! and finish close to the lower bound; `mosctl stay` keeps them home, `mosctl block` keeps a
//! node empty, and `mosrun -L` jobs never move by themselves.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mosix_tests::{TestCluster, require_root, serial, tool};

/// How many of node 1's MOSIX processes run where (0 = home).
fn spread(c: &TestCluster) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for r in c.mps(1, false) {
        *m.entry(r["node"].as_u64().unwrap()).or_insert(0) += 1;
    }
    m
}

#[test]
fn eight_jobs_from_one_node_spread_two_per_node_and_end_near_the_lower_bound() {
    if !require_root("balance_spread") {
        return;
    }
    let _g = serial();
    // 0.4 CPU per node: 1.6 of the machine's 2 cores, so that the nodes get their whole quota
    // even while the services, the tools and the kernel take their share; with 0.5 each the
    // machine itself would be the bottleneck and the lower bound computed from a node alone
    // would not hold.
    let c = TestCluster::up("tbal", 4, |s| s.cpus_per_node = Some(0.4));
    c.wait_all_up();
    // The capacity of each node while all four are busy (the machine's own overheads then
    // take their share): the same work on every node at once, iterations per second each.
    let probe = tool("mosix-probe");
    let spinners: Vec<(Child, Instant)> = (1..=4)
        .map(|k| {
            let child = c
                .command(k, probe.to_str().unwrap(), &["work", "200000000"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            (child, Instant::now())
        })
        .collect();
    let rates: Vec<f64> = spinners
        .into_iter()
        .map(|(mut s, t)| {
            assert!(s.wait().unwrap().success());
            2e8 / t.elapsed().as_secs_f64()
        })
        .collect();
    let rate = rates.iter().sum::<f64>() / 4.0;
    // One job: 25 s of a node to itself; 8 jobs on 4 nodes: the lower bound is 8 jobs' work
    // over the four nodes' capacity.
    let work = rate * 25.0;
    let n = format!("{}", work as u64);
    let lb = 8.0 * work / rates.iter().sum::<f64>();

    let start = Instant::now();
    let mut jobs: Vec<Child> = (0..8).map(|_| c.probe(&[], &["work", &n])).collect();
    let even = c.eventually(Duration::from_secs(20), || {
        let s = spread(&c);
        s.len() == 4 && s.values().all(|k| *k == 2)
    });
    let seen = spread(&c);
    assert!(
        even,
        "not spread 2-2-2-2 within 20 s of the start: {seen:?}\n{}",
        c.log(1)
    );
    let spread_s = start.elapsed().as_secs_f64();
    let mut outputs = Vec::new();
    for j in jobs.iter_mut() {
        let status = j.wait().unwrap();
        assert!(status.success(), "a job failed: {status}");
    }
    let makespan = start.elapsed().as_secs_f64();
    for j in jobs {
        outputs.push(String::from_utf8(j.wait_with_output().unwrap().stdout).unwrap());
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]) && !outputs[0].trim().is_empty(),
        "the jobs computed different results: {outputs:?}"
    );
    let moves: usize = (1..=4)
        .map(|k| c.log(k).matches("balancing (").count())
        .sum();
    eprintln!(
        "rate {rate:.0}/s per node; spread 2-2-2-2 after {spread_s:.1} s; makespan {makespan:.1} s, lower bound {lb:.1} s; {moves} balancing decisions"
    );
    // The goal is 1.1 × the lower bound; five runs on the 2-core machine gave 1.03–1.19, the
    // spread always done within 4.4 s: the rest is the nodes delivering less with two jobs
    // each than the calibration measured with one (not yet explained). This bound catches a
    // balancer that does not spread (2 ×) or flaps; it is not the goal.
    assert!(
        makespan <= 1.25 * lb,
        "makespan {makespan:.1} s is more than 1.25 × the lower bound {lb:.1} s\n{}",
        c.log(1)
    );
    assert!(
        c.log(1).contains("balancing (load)"),
        "node 1 logs why it moved them"
    );
}

#[test]
fn stay_block_and_locks_keep_processes_where_they_are() {
    if !require_root("balance_controls") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tbalc", 4, |_| {});
    c.wait_all_up();
    assert!(c.run(1, "mosctl", &["stay"]).status.success());
    assert!(c.run(3, "mosctl", &["block"]).status.success());
    let mut free: Vec<Child> = (0..4).map(|_| c.probe(&[], &["spin", "40"])).collect();
    let mut locked: Vec<Child> = (0..2).map(|_| c.probe(&["-L"], &["spin", "40"])).collect();
    let locked_pids: Vec<u32> = locked.iter().map(Child::id).collect();

    // Under stay, nothing leaves node 1, however loaded it is.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        spread(&c),
        BTreeMap::from([(0, 6)]),
        "stay keeps every process home\n{}",
        c.log(1)
    );

    // Without stay, the free ones spread, never to the blocked node 3; the locked ones stay.
    assert!(c.run(1, "mosctl", &["nostay"]).status.success());
    let moved = c.eventually(Duration::from_secs(20), || {
        spread(&c).get(&0).copied().unwrap_or(0) <= 3
    });
    assert!(moved, "nothing moved after nostay: {:?}", spread(&c));
    for _ in 0..10 {
        assert_eq!(c.guests_on(3), 0, "node 3 is blocked: {:?}", spread(&c));
        for pid in &locked_pids {
            assert_eq!(
                c.row(*pid).unwrap()["node"],
                0,
                "a locked process moved by itself"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for j in free.iter_mut().chain(locked.iter_mut()) {
        let _ = j.kill();
        let _ = j.wait();
    }
}
