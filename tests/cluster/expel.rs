//! `mosctl expel` empties a node of its guests and blocks new ones; `mosctl bring` brings a
//! node's processes home and keeps them there. Both say what they did; the processes live on.

use std::process::Child;
use std::time::Duration;

use mosix_tests::{TestCluster, require_root, serial};

#[test]
fn expel_sends_guests_home_and_bring_brings_processes_home() {
    if !require_root("expel_and_bring") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("texpel", 3, |_| {});
    c.wait_all_up();
    // Locked (-L): the moves here are the test's and expel's, not the balancer's (which would
    // otherwise send one to node 2 as soon as it takes guests again, racing the test's own).
    let mut kids: Vec<Child> = (0..3).map(|_| c.probe(&["-L"], &["spin", "120"])).collect();
    let pids: Vec<u32> = kids.iter().map(Child::id).collect();
    std::thread::sleep(Duration::from_millis(200));
    for &p in &pids[..2] {
        c.migrate(p, "2");
    }
    c.migrate(pids[2], "3");
    assert_eq!(c.guests_on(2), 2);

    // expel on node 2: both guests go home, node 2 is blocked.
    let (ok, said) = c.said(2, "mosctl", &["expel"]);
    assert!(ok, "expel: {said}");
    assert!(said.contains("2 guests sent home"), "{said}");
    assert_eq!(c.guests_on(2), 0, "no guest left on node 2");
    for &p in &pids[..2] {
        assert_eq!(c.node_of(p), Some(0), "process {p} is home");
    }
    assert_eq!(c.node_of(pids[2]), Some(3), "node 3's guest stays");
    let (_, status) = c.said(2, "mosctl", &["status", "--json"]);
    assert!(status.contains("\"block\":true"), "{status}");
    let out = c.run(1, "migrate", &[&pids[0].to_string(), "2", "--wait"]);
    assert!(!out.status.success(), "a blocked node takes no process");
    // Nothing to expel: says so and succeeds.
    let (ok, said) = c.said(2, "mosctl", &["expel"]);
    assert!(ok && said.contains("0 guests"), "{said}");

    // bring on node 1: every process of node 1 comes home, and lstay is set.
    let sees_block = |on: bool| {
        c.eventually(Duration::from_secs(10), || {
            c.view(1).is_some_and(|v| {
                v.nodes.iter().any(|n| {
                    n.node.get() == 2 && n.status.contains(mosix_core::Status::BLOCK) == on
                })
            })
        })
    };
    assert!(sees_block(true), "node 1 never heard that node 2 blocks");
    let (ok, _) = c.said(2, "mosctl", &["noblock"]);
    assert!(ok);
    assert!(
        sees_block(false),
        "node 1 never heard that node 2 takes guests again"
    );
    c.migrate(pids[0], "2");
    let (ok, said) = c.said(1, "mosctl", &["bring"]);
    assert!(ok, "bring: {said}");
    assert!(said.contains("2 processes brought home"), "{said}");
    for &p in &pids {
        assert_eq!(c.node_of(p), Some(0), "process {p} is home");
    }
    assert_eq!(c.guests_on(2) + c.guests_on(3), 0);
    let (_, status) = c.said(1, "mosctl", &["status", "--json"]);
    assert!(status.contains("\"lstay\":true"), "{status}");

    // Stopping a node loses nothing: its guests go home first.
    let (ok, _) = c.said(1, "mosctl", &["nolstay"]);
    assert!(ok);
    c.migrate(pids[1], "2");
    let out = c.run(2, "setpe", &["-off"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        c.node_of(pids[1]),
        Some(0),
        "the guest of a stopped node is home"
    );

    // Expelling, bringing and stopping killed nobody.
    for k in &mut kids {
        assert!(k.try_wait().unwrap().is_none(), "process {} died", k.id());
        let _ = k.kill();
        let _ = k.wait();
    }
}
