//! A grid of clusters (partners(5)): processes spread over a partner's nodes, make room when the
//! partner's own processes want them (frozen at home if home has no room), come back one at a
//! time, and leave a node closed to the grid; nobody's job is lost or changed.

use std::collections::BTreeMap;
use std::time::Duration;

use mosix_tests::{TestCluster, require_root, serial};

/// What `mosix-probe work N` prints, computed here: the probe's generator after its
/// iterations (N rounded up to a multiple of 10 000), by composing the affine step.
fn work_result(n: u64) -> u64 {
    let (a, c) = (6364136223846793005u64, 1442695040888963407u64);
    let mut k = n.div_ceil(10_000) * 10_000;
    // (m, b) is x -> m x + b; `acc` is the step applied to the power so far.
    let (mut m, mut b) = (a, c);
    let (mut am, mut ab) = (1u64, 0u64);
    while k > 0 {
        if k & 1 == 1 {
            (am, ab) = (m.wrapping_mul(am), m.wrapping_mul(ab).wrapping_add(b));
        }
        (m, b) = (m.wrapping_mul(m), m.wrapping_mul(b).wrapping_add(b));
        k >>= 1;
    }
    am.wrapping_add(ab)
}

#[test]
fn the_probe_result_is_computed_here() {
    let mut x = 1u64;
    for _ in 0..30_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    assert_eq!(work_result(25_000), x);
}

/// Where cluster a's jobs (homes on node 1) are: frozen, and how many run on each node.
fn a_jobs(c: &TestCluster) -> (usize, BTreeMap<u64, usize>) {
    let mut frozen = 0;
    let mut at = BTreeMap::new();
    for r in c.mps(1, false) {
        if r["state"] == "F" {
            frozen += 1;
        } else {
            *at.entry(r["node"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    (frozen, at)
}

/// Guests on node I whose home is in cluster a (nodes 1 and 2).
fn a_guests_on(c: &TestCluster, node: u16) -> usize {
    c.mps(node, true)
        .iter()
        .filter(|r| r["from"].as_u64().is_some_and(|f| f <= 2))
        .count()
}

/// The jobs' outputs; a job that failed fails the test with every node's log.
fn outputs(c: &TestCluster, jobs: Vec<std::process::Child>) -> Vec<String> {
    jobs.into_iter()
        .map(|j| {
            let pid = j.id();
            let o = j.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "job {pid} failed: {:?} {}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr),
                (1..=5)
                    .map(|n| format!("node {n}:\n{}", c.log(n)))
                    .collect::<String>()
            );
            String::from_utf8(o.stdout).unwrap().trim().to_owned()
        })
        .collect()
}

#[test]
fn a_partners_own_jobs_displace_guests_which_are_frozen_at_home_and_come_back_one_at_a_time() {
    if !require_root("grid_displacement") {
        return;
    }
    let _g = serial();
    // Clusters a (nodes 1-2) and b (nodes 3-4), partners.
    let c = TestCluster::up("tgrid", 4, |s| {
        s.cpus_per_node = Some(0.4);
        s.grid = vcluster::grid::parts("2,2", &[], &[]).unwrap();
        // Eight jobs over four nodes is the normal state: bring frozen ones back up to two a CPU,
        // freeze above two and a half.
        s.tunables = "[freeze]\nred_mark = 2.5\nblue_mark = 2.0\n".into();
    });
    c.wait_all_up();
    let view = c.view(1).unwrap();
    assert_eq!(view.cluster, "a");
    assert_eq!(view.partners.len(), 1, "{:?}", view.partners);
    assert_eq!(view.partners[0].name, "b");
    assert_eq!(
        view.get(mosix_core::NodeId::new(3).unwrap())
            .and_then(|v| v.cluster.clone())
            .as_deref(),
        Some("b")
    );
    // Eight CPU-bound jobs of cluster a spread over all four nodes.
    const A_WORK: u64 = 2_500_000_000;
    let a: Vec<_> = (0..8)
        .map(|_| c.probe(&["-c"], &["work", &A_WORK.to_string()]))
        .collect();
    let spread = c.eventually(Duration::from_secs(40), || {
        let (_, at) = a_jobs(&c);
        [0, 2, 3, 4]
            .iter()
            .all(|n| at.get(n).copied().unwrap_or(0) >= 1)
            && at.get(&3).copied().unwrap_or(0) + at.get(&4).copied().unwrap_or(0) >= 3
    });
    assert!(
        spread,
        "not spread over the grid: {:?}\n{}",
        a_jobs(&c),
        c.log(1)
    );
    // b's owner starts four jobs of its own: within 10 s b's nodes run only b's processes.
    const B_WORK: u64 = 400_000_000;
    let b: Vec<_> = (0..4)
        .map(|_| c.probe_on(3, &["-c"], &["work", &B_WORK.to_string()]))
        .collect();
    let freed = c.eventually(Duration::from_secs(10), || {
        a_guests_on(&c, 3) == 0 && a_guests_on(&c, 4) == 0
    });
    assert!(
        freed,
        "a's guests still on b's nodes: {} and {}\n{}\n{}",
        a_guests_on(&c, 3),
        a_guests_on(&c, 4),
        c.log(3),
        c.log(4)
    );
    // They went home or to a's other node; home, overloaded, froze some of them.
    let frozen = c.eventually(Duration::from_secs(15), || a_jobs(&c).0 >= 1);
    assert!(
        frozen,
        "none frozen at home: {:?}\n{}",
        a_jobs(&c),
        c.log(1)
    );
    let log3 = c.log(3) + &c.log(4);
    assert!(
        log3.contains("goes home: a process of a better priority wants the node"),
        "{log3}"
    );
    // b's jobs end, all right.
    let b_out = outputs(&c, b);
    let want_b = work_result(B_WORK).to_string();
    assert!(b_out.iter().all(|o| *o == want_b), "{b_out:?} != {want_b}");
    // Then a's frozen jobs come back one at a time and spread over b again.
    let back = c.eventually(Duration::from_secs(60), || {
        let (frozen, at) = a_jobs(&c);
        frozen == 0 && at.get(&3).copied().unwrap_or(0) + at.get(&4).copied().unwrap_or(0) >= 2
    });
    assert!(
        back,
        "not back over the grid: {:?}\n{}",
        a_jobs(&c),
        c.log(1)
    );
    let log = c.log(1);
    assert!(log.contains("room again: process"), "{log}");
    // Nobody's job was lost or changed.
    let a_out = outputs(&c, a);
    let want_a = work_result(A_WORK).to_string();
    assert!(a_out.iter().all(|o| *o == want_a), "{a_out:?} != {want_a}");
}

#[test]
fn a_node_closed_to_the_grid_sends_the_partners_guests_away_before_the_command_returns() {
    if !require_root("grid_close") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tgcls", 4, |s| {
        s.cpus_per_node = Some(0.4);
        s.grid = vcluster::grid::parts("2,2", &[], &[]).unwrap();
    });
    c.wait_all_up();
    const WORK: u64 = 2_500_000_000;
    let jobs: Vec<_> = (0..6)
        .map(|_| c.probe(&["-c"], &["work", &WORK.to_string()]))
        .collect();
    let spread = c.eventually(Duration::from_secs(40), || {
        a_guests_on(&c, 3) >= 1 && a_guests_on(&c, 4) >= 1
    });
    assert!(spread, "not spread over b: {:?}\n{}", a_jobs(&c), c.log(1));
    // b closes both its nodes: each command returns when no guest of a is left there.
    for n in [3, 4] {
        let (ok, said) = c.said(n, "mosctl", &["closegrid"]);
        assert!(ok, "closegrid on node {n}: {said}");
        assert!(
            said.contains("no guest of another cluster is left here"),
            "{said}"
        );
        assert_eq!(a_guests_on(&c, n), 0, "node {n} after closegrid: {said}");
        let (ok, status) = c.said(n, "mosctl", &["status"]);
        assert!(ok && status.contains("grid:  closed"), "{status}");
    }
    // Nothing goes there while closed.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(a_guests_on(&c, 3) + a_guests_on(&c, 4), 0);
    let a_to_b = c.said(1, "migrate", &[&a_jobs_pid(&c).to_string(), "3", "--wait"]);
    assert!(
        !a_to_b.0 && a_to_b.1.contains("closed to the grid"),
        "{}",
        a_to_b.1
    );
    // Opened again, they come back; node 3 takes one guest of another cluster at most.
    let (ok, said) = c.said(3, "mosctl", &["opengrid", "1"]);
    assert!(ok, "{said}");
    let (ok, said) = c.said(4, "mosctl", &["opengrid"]);
    assert!(ok, "{said}");
    let (_, status) = c.said(3, "mosctl", &["status"]);
    assert!(
        status.contains("at most 1 guests of other clusters"),
        "{status}"
    );
    let again = c.eventually(Duration::from_secs(30), || {
        a_guests_on(&c, 3) >= 1 && a_guests_on(&c, 4) >= 1
    });
    assert!(again, "not back on b: {:?}\n{}", a_jobs(&c), c.log(1));
    for _ in 0..10 {
        assert!(
            a_guests_on(&c, 3) <= 1,
            "node 3 over its limit\n{}",
            c.log(3)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // b isolates itself from node 3 alone: node 4 hears of it and closes too, and the command
    // returns when no guest of a is left on either.
    let (ok, said) = c.said(3, "mosctl", &["isolate"]);
    assert!(ok, "isolate: {said}\n{}", c.log(4));
    assert!(
        said.contains("every node of the cluster is closed"),
        "{said}"
    );
    assert_eq!(a_guests_on(&c, 3) + a_guests_on(&c, 4), 0);
    let (_, status) = c.said(4, "mosctl", &["status"]);
    assert!(status.contains("grid:  closed"), "{status}");
    // rejoin from node 4 opens node 3 too.
    let (ok, said) = c.said(4, "mosctl", &["rejoin"]);
    assert!(ok, "{said}");
    let open = c.eventually(Duration::from_secs(10), || {
        c.said(3, "mosctl", &["status"]).1.contains("grid:  open")
    });
    assert!(open, "node 3 did not rejoin\n{}", c.log(3));
    let out = outputs(&c, jobs);
    let want = work_result(WORK).to_string();
    assert!(out.iter().all(|o| *o == want), "{out:?} != {want}");
}

/// A pid of one of node 1's processes that runs at home (not frozen).
fn a_jobs_pid(c: &TestCluster) -> u64 {
    c.mps(1, false)
        .iter()
        .find(|r| r["node"] == 0 && r["state"] != "F")
        .and_then(|r| r["pid"].as_u64())
        .expect("a process at home")
}

/// Guests on node I whose home is node `home`.
fn guests_from(c: &TestCluster, node: u16, home: u64) -> usize {
    c.mps(node, true)
        .iter()
        .filter(|r| r["from"].as_u64() == Some(home))
        .count()
}

#[test]
fn the_partner_a_node_gives_the_better_priority_displaces_the_other_and_not_the_reverse() {
    if !require_root("grid_priorities") {
        return;
    }
    let _g = serial();
    // a (nodes 1-2), b (3-4), c (5). b gives a the better priority; a and c take none of each
    // other's processes, so c's can only go to b.
    let c = TestCluster::up("tgpri", 5, |s| {
        s.cpus_per_node = Some(0.35);
        s.grid = vcluster::grid::parts(
            "2,2,1",
            &["b:a=5".into(), "b:c=10".into()],
            &["a:c=notake".into(), "c:a=notake".into()],
        )
        .unwrap();
    });
    c.wait_all_up();
    const WORK: u64 = 2_500_000_000;
    let a: Vec<_> = (0..4)
        .map(|_| c.probe(&["-c"], &["work", &WORK.to_string()]))
        .collect();
    let on_b = c.eventually(Duration::from_secs(40), || {
        guests_from(&c, 3, 1) >= 1 && guests_from(&c, 4, 1) >= 1
    });
    assert!(on_b, "a's jobs not on b: {:?}\n{}", a_jobs(&c), c.log(1));
    // c is crowded, but b gives a the better priority: c's jobs are refused there.
    let cj: Vec<_> = (0..3)
        .map(|_| c.probe_on(5, &["-c"], &["work", &WORK.to_string()]))
        .collect();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        guests_from(&c, 3, 5) + guests_from(&c, 4, 5),
        0,
        "{}",
        c.log(3)
    );
    assert!(
        guests_from(&c, 3, 1) + guests_from(&c, 4, 1) >= 2,
        "{}",
        c.log(3)
    );
    let log5 = c.log(5);
    assert!(
        log5.contains("its cluster's priority here is 10"),
        "c was not told why: {log5}"
    );
    // b now prefers c: c's jobs go there and a's make room.
    for n in [3, 4] {
        let (ok, said) = c.said(n, "mosctl", &["cngpri", "c", "5", "a", "10"]);
        assert!(ok, "{said}");
        let (_, status) = c.said(n, "mosctl", &["status"]);
        assert!(status.contains("partner c: priority 5"), "{status}");
    }
    // Where c's guests are, a's are not (a's may come back to a node c has left: the nodes'
    // balancers keep moving processes, and a free node takes a's as long as no c wants it).
    // A guest of a's may also leave for load first (its home has room again) before the
    // priorities come to it: the test waits until b has displaced one for c's sake.
    let displaced = c.eventually(Duration::from_secs(60), || {
        let per: Vec<(usize, usize)> = [3, 4]
            .iter()
            .map(|n| (guests_from(&c, *n, 5), guests_from(&c, *n, 1)))
            .collect();
        per.iter().map(|p| p.0).sum::<usize>() >= 1
            && per.iter().all(|p| p.0 == 0 || p.1 == 0)
            && (c.log(3) + &c.log(4))
                .contains("goes home: a process of a better priority wants the node")
    });
    let logs = c.log(3) + &c.log(4);
    assert!(
        displaced,
        "c's guests on b: {} {}, a's: {} {}\n{logs}\nnode 5:\n{}",
        guests_from(&c, 3, 5),
        guests_from(&c, 4, 5),
        guests_from(&c, 3, 1),
        guests_from(&c, 4, 1),
        c.log(5),
    );
    let want = work_result(WORK).to_string();
    for out in [outputs(&c, a), outputs(&c, cj)] {
        assert!(out.iter().all(|o| *o == want), "{out:?} != {want}");
    }
}
