//! Dissemination on a 4-node virtual cluster: everyone sees everyone with plausible figures,
//! load news travels, a crashed node goes down and comes back, flags and secrets are honoured.

use std::process::Stdio;
use std::time::Duration;

use mosix_core::NodeId;
use mosix_tests::{TestCluster, require_root, serial};

fn id(n: u16) -> NodeId {
    NodeId::new(n).unwrap()
}

fn mon_json(c: &TestCluster, node: u16) -> Vec<serde_json::Value> {
    let out = c.run(node, "mon", &["--once", "--json"]);
    assert!(
        out.status.success(),
        "mon on node {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn four_nodes_see_each_other_load_news_travels_and_a_crashed_node_rejoins() {
    if !require_root("four_nodes_see_each_other") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tgos", 4, |_| {});
    let quota = c.cluster.cpus_per_node;

    // 1. Within 10 s every node's mon --once --json shows all 4 nodes up, with plausible figures.
    for n in 1..=4 {
        c.wait_view(n, Duration::from_secs(10), |v| {
            v.nodes.iter().all(|x| x.up && x.figures.is_some())
        })
        .unwrap();
        let rows = mon_json(&c, n);
        assert_eq!(rows.len(), 4);
        for r in &rows {
            assert_eq!(r["up"], true, "{r}");
            let cpus = r["cpus"].as_u64().unwrap();
            assert_eq!(cpus, quota.ceil() as u64, "CPUs come from the quota: {r}");
            let speed = r["speed"].as_u64().unwrap();
            let expect = (f64::from(c.cluster.speed) * quota / quota.ceil()).round() as u64;
            assert!(
                speed.abs_diff(expect) <= 1,
                "speed {speed} vs {expect}: {r}"
            );
            let total = r["mem_total"].as_u64().unwrap();
            assert_eq!(total, c.cluster.mem_per_node, "memory from the limit: {r}");
            let free = r["mem_free"].as_u64().unwrap();
            assert!(free <= total && free > total / 2, "{r}");
            assert!(r["load"].as_u64().unwrap() < 100, "idle nodes: {r}");
            assert!(r["util"].as_u64().unwrap() <= 100);
            assert_eq!(r["status"].as_u64().unwrap() & 3, 3, "CONF|UP: {r}");
        }
    }

    // 2. CPU burners on node 2: within 10 s node 4 sees node 2's load rise.
    let mut burners = Vec::new();
    for _ in 0..2 {
        burners.push(
            c.cluster
                .command(
                    2,
                    &"timeout".into(),
                    &[
                        "30".into(),
                        "sh".into(),
                        "-c".into(),
                        "while :; do :; done".into(),
                    ],
                )
                .unwrap()
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    // Two runnable processes on one CPU of speed s: 200 * 10000 / s.
    let one_cpu_speed = f64::from(c.cluster.speed) * quota / quota.ceil();
    let expected = 200.0 * 10_000.0 / one_cpu_speed / quota.ceil();
    let took = c
        .wait_view(4, Duration::from_secs(10), |v| {
            v.get(id(2))
                .and_then(|x| x.figures)
                .is_some_and(|f| f64::from(f.load) > 0.7 * expected)
        })
        .unwrap();
    eprintln!("node 4 saw node 2's load rise after {took:?}");
    // The others stay idle: the load is node 2's own, measured in its cgroup.
    let v = c.view(4).unwrap();
    assert!(v.get(id(3)).unwrap().figures.unwrap().load < 100);
    for mut b in burners {
        let _ = b.kill();
        let _ = b.wait();
    }

    // 3. Kill node 3's service: the others mark it down within 15 s; restart: up within 15 s.
    c.cluster.stop_node(3, true).unwrap();
    for n in [1, 2, 4] {
        c.wait_view(n, Duration::from_secs(15), |v| !v.get(id(3)).unwrap().up)
            .unwrap();
    }
    // Nodes log state changes at their gossip tick; give each one tick while node 3 is down.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        c.log(1).contains("node 3 is down"),
        "node 1 logs the failure"
    );
    c.cluster.start_node(3).unwrap();
    for n in [1, 2, 4] {
        c.wait_view(n, Duration::from_secs(15), |v| v.get(id(3)).unwrap().up)
            .unwrap();
    }
}

#[test]
fn flags_set_on_one_node_show_on_the_others() {
    if !require_root("flags_set_on_one_node_show_on_the_others") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tflg", 3, |_| {});
    c.wait_view(3, Duration::from_secs(10), |v| v.nodes.iter().all(|x| x.up))
        .unwrap();
    let out = c.run(1, "mosctl", &["block"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.run(2, "mosctl", &["stay"]);
    assert!(out.status.success());
    c.wait_view(3, Duration::from_secs(10), |v| {
        v.get(id(1))
            .unwrap()
            .status
            .contains(mosix_core::Status::BLOCK)
            && v.get(id(2))
                .unwrap()
                .status
                .contains(mosix_core::Status::STAY)
    })
    .unwrap();
    let out = c.run(3, "mosctl", &["status", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("block: yes"), "{text}");
    let out = c.run(3, "mosctl", &["status", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["block"], true);
    assert_eq!(v["stay"], false);
    assert_eq!(v["up"], true);

    // A quiet node keeps its load to itself but is still up.
    assert!(c.run(2, "mosctl", &["quiet"]).status.success());
    c.wait_view(3, Duration::from_secs(10), |v| {
        let n2 = v.get(id(2)).unwrap();
        n2.up && n2.figures.is_none() && n2.status.contains(mosix_core::Status::QUIET)
    })
    .unwrap();
    let out = c.run(3, "mosctl", &["getload", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("quiet"));
    let out = c.run(3, "mosctl", &["getload", "2", "--raw"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "-61");

    // Changes need root: a user is refused, queries are fine. (The control socket is reachable
    // from outside the node's namespaces, so the unprivileged tool runs from here.)
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let p = c.paths(1);
        std::process::Command::new(mosix_tests::tool("mosctl"))
            .args(args)
            .env("MOSIX_ETC", &p.etc)
            .env("MOSIX_RUNDIR", &p.rundir)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let out = as_nobody(&["noblock"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
    let out = as_nobody(&["getload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_node_with_another_secret_never_joins_and_the_others_say_why() {
    if !require_root("a_node_with_another_secret_never_joins") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tsec", 4, |s| s.start_services = false);
    let rogue = c.paths(4).secret();
    std::fs::write(&rogue, "a-different-secret-entirely-0000\n").unwrap();
    for n in 1..=4 {
        c.cluster.start_node(n).unwrap();
    }
    c.wait_view(1, Duration::from_secs(10), |v| {
        (1..=3).all(|n| v.get(id(n)).unwrap().up)
    })
    .unwrap();
    // For a while longer than it takes the others to meet, node 4 stays invisible.
    for _ in 0..40 {
        for n in 1..=3 {
            let v = c.view(n).unwrap();
            assert!(!v.get(id(4)).unwrap().up, "node {n} sees the rogue up");
            assert!(
                v.get(id(4)).unwrap().age_ms.is_none(),
                "node {n} heard of the rogue"
            );
        }
        let v4 = c.view(4).unwrap();
        assert!((1..=3).all(|n| v4.get(id(n)).unwrap().age_ms.is_none()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: String = (1..=3).map(|n| c.log(n)).collect();
    assert!(
        logs.contains("wrong cluster secret"),
        "the others log why:\n{logs}"
    );
    assert!(c.log(4).contains("wrong cluster secret"));
}
