//! Step 9, moves that barely pause: `migrate --live` sends a process's memory while it runs
//! and stops it only for what it wrote meanwhile; nothing it wrote is lost or mixed up — pages
//! rewritten during the rounds, pages it discarded (`MADV_DONTNEED`: zeroes again), areas it
//! mapped and unmapped meanwhile; then it moves on from that node to a third directly, and
//! comes home, live by its size, with the same care; a small process moves live on and home
//! when asked. (How long it stops is measured by the `live` benchmark, not asserted here.)

use mosix_tests::{TestCluster, require_root, serial};

/// `migrate ARGS` at node 1, which must succeed; the line of node `node`'s log that has all of
/// `says` (that node sent the process live).
fn move_live(c: &TestCluster, args: &[&str], node: u16, says: &[&str]) -> String {
    let (ok, said) = c.said(1, "migrate", args);
    assert!(ok, "migrate {args:?}: {said}\n{}", c.log(node));
    let log = c.log(node);
    log.lines()
        .find(|l| says.iter().all(|s| l.contains(s)))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("node {node} does not say {says:?}:\n{log}"))
}

#[test]
fn a_live_move_loses_no_write_and_the_process_goes_on_there() {
    if !require_root("a_live_move_loses_no_write") {
        return;
    }
    let _g = serial();
    // Processes of more than 64 MiB move live by themselves (the direct moves below).
    let c = TestCluster::up("tlive", 3, |s| {
        s.tunables = "[moves]\nlive_above_mib = 64\n".into()
    });
    c.wait_all_up();
    for churn in [false, true] {
        // 192 MiB rewritten at 50 MB/s for 14 s; with churn, pages discarded, areas replaced
        // and one grown and shrunk in place meanwhile.
        let mut args = vec!["192", "50", "14"];
        if churn {
            args.push("churn");
        }
        let (child, out) = mosix_tests::dirty(&c, &args);
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let pid_s = pid.to_string();
        let here = format!("(pid {pid}) migrated to node 2");
        let away = format!("(pid {pid} at node 1)");
        // Home to node 2 (asked live), on to node 3 directly (node 2 sends it while it runs
        // there), and home (node 3 sends it over its own connection while it runs).
        let moved = move_live(
            &c,
            &[&pid_s, "2", "--wait", "--live"],
            1,
            &[&here, ", live: "],
        );
        assert!(moved.contains("stopped"), "{moved}");
        assert_eq!(c.node_of(pid), Some(2), "{}", c.log(2));
        let on = move_live(
            &c,
            &[&pid_s, "3", "--wait"],
            2,
            &[&away, "sent to node 3 while it ran"],
        );
        assert_eq!(c.node_of(pid), Some(3), "{}", c.log(3));
        let back = move_live(
            &c,
            &[&pid_s, "home", "--wait"],
            3,
            &[&away, "sent home while it ran"],
        );
        assert_eq!(c.node_of(pid), Some(0), "{}", c.log(1));
        let (ok, rest) = mosix_tests::finish(child, out);
        assert!(
            ok,
            "churn {churn}: the process found its memory wrong after a live move: {rest}\n{moved}\n{on}\n{back}\nnode 1:\n{}",
            c.log(1)
        );
        assert!(rest.contains("max_gap_ms"), "{rest}");
        eprintln!(
            "churn {churn}: {moved}\n  {on}\n  {back}\n  the process: {}",
            rest.trim()
        );
        // With MOSIX_LOG=…,mosix_kmod::split::live=debug: how many kept areas had grown or
        // shrunk in place by each final image.
        for n in 1..=3 {
            for l in c.log(n).lines().filter(|l| l.contains("resized")) {
                eprintln!("  node {n}: {l}");
            }
        }
    }
    // Below the threshold a move is plain unless asked live, and asked live it is, whichever
    // node sends it: `--live` goes with the request to the node the process runs on.
    let (child, out) = mosix_tests::dirty(&c, &["32", "20", "10"]);
    let pid = child.id();
    let pid_s = pid.to_string();
    let away = format!("(pid {pid} at node 1)");
    let (ok, said) = c.said(1, "migrate", &[&pid_s, "2", "--wait"]);
    assert!(ok, "{said}");
    let plain = c
        .log(1)
        .lines()
        .find(|l| l.contains(&format!("(pid {pid}) migrated to node 2")))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(!plain.is_empty() && !plain.contains("live"), "{plain}");
    move_live(
        &c,
        &[&pid_s, "3", "--wait", "--live"],
        2,
        &[&away, "sent to node 3 while it ran"],
    );
    move_live(
        &c,
        &[&pid_s, "home", "--wait", "--live"],
        3,
        &[&away, "sent home while it ran"],
    );
    assert_eq!(c.node_of(pid), Some(0), "{}", c.log(1));
    let (ok, said) = mosix_tests::finish(child, out);
    assert!(ok, "the small process after moves asked live: {said}");
}
