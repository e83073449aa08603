//! Remote → remote: `migrate PID 3` of a process on node 2 moves it straight to node 3 — its
//! memory does not pass through home, the deputy is re-pointed — and counts one move; a move
//! that cannot be made leaves the process where it was; a destination killed at any point of
//! the move leaves exactly one live copy.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::Duration;

use mosix_tests::{TestCluster, ends_within, require_root, serial};

fn cluster(name: &str) -> TestCluster {
    let c = TestCluster::up(name, 3, |_| {});
    c.wait_all_up();
    c
}

fn row(c: &TestCluster, pid: u32) -> serde_json::Value {
    c.row(pid)
        .unwrap_or_else(|| panic!("process {pid} is not in mps"))
}

/// Ends a memory holder with a line on its stdin; its status (3: a page changed).
fn release(mut child: Child) -> std::process::ExitStatus {
    child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    ends_within(child, Duration::from_secs(30), "the memory holder")
}

#[test]
fn a_process_moves_from_node_to_node_directly() {
    if !require_root("a_process_moves_from_node_to_node_directly") {
        return;
    }
    let _g = serial();
    let c = cluster("tdirect");
    let child = c.memory_holder(128, &[]);
    let pid = child.id();
    assert!(c.migrate(pid, "2").contains("node 2"));
    let said = c.migrate(pid, "3");
    assert!(said.contains("is on node 3"), "{said}");
    let r = row(&c, pid);
    assert_eq!(
        (r["node"].as_u64(), r["nmigs"].as_u64()),
        (Some(3), Some(2)),
        "{r}"
    );
    assert_eq!((c.guests_on(2), c.guests_on(3)), (0, 1));
    assert!(
        c.node_procs(2).is_empty(),
        "left on node 2: {:?}",
        c.node_procs(2)
    );
    // Straight there: node 2 sent it on, home only re-pointed the deputy.
    assert!(
        c.log(2).contains("moved on to node 3"),
        "node 2 does not say it sent the process on:\n{}",
        c.log(2)
    );
    assert!(
        c.log(1)
            .contains(&format!("(pid {pid}) moved from node 2 to node 3 directly")),
        "node 1 does not say the process moved directly:\n{}",
        c.log(1)
    );
    let guests = c.mps(3, true);
    let g = guests.iter().find(|g| g["pid"] == pid).unwrap();
    assert_eq!(
        (g["from"].as_u64(), g["nmigs"].as_u64()),
        (Some(1), Some(2)),
        "{g}"
    );
    // And on: back to 2, then home; every move counts once; the memory is intact.
    assert!(c.migrate(pid, "2").contains("is on node 2"));
    assert!(c.migrate(pid, "home").contains("is home"));
    let r = row(&c, pid);
    assert_eq!(
        (r["node"].as_u64(), r["nmigs"].as_u64()),
        (Some(0), Some(4)),
        "{r}"
    );
    let st = release(child);
    assert!(st.success(), "{st:?}");

    // Signals sent while it moves are held at home and reach it where it lands.
    let script = "trap 'n=$((n+1))' USR1; n=0; i=0; \
                  while [ $i -lt 400000 ]; do i=$((i+1)); done; echo got $n";
    let sh = c
        .job(1, &["sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = sh.id();
    assert!(c.migrate(pid, "2").contains("node 2"));
    let mover = c
        .command(1, "migrate", &[&pid.to_string(), "3", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..3 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = mover.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = sh.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // Standard signals do not queue: three USR1s in a row may be taken as fewer, never none.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("got ") && text != "got 0\n",
        "the signals were lost: {text:?}"
    );
}

#[test]
fn a_move_that_cannot_be_made_leaves_the_process_where_it_was() {
    if !require_root("a_move_that_cannot_be_made_leaves_the_process_where_it_was") {
        return;
    }
    let _g = serial();
    let c = cluster("tdirfail");
    let child = c.memory_holder(32, &[]);
    let pid = child.id();
    assert!(c.migrate(pid, "2").contains("node 2"));
    // Node 3's service stops; home does not know yet (its view keeps node 3 up for a while),
    // so it asks node 2, which cannot reach node 3.
    c.cluster.stop_node(3, true).unwrap();
    let (ok, said) = c.try_migrate(pid, "3");
    assert!(!ok, "{said}");
    assert!(
        said.contains("node 3") && said.contains("goes on at node 2"),
        "{said}"
    );
    let r = row(&c, pid);
    assert_eq!(
        (r["node"].as_u64(), r["nmigs"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(c.guests_on(2), 1);
    // It goes on: home again, whole.
    assert!(c.migrate(pid, "home").contains("is home"));
    let st = release(child);
    assert!(st.success(), "{st:?}");
}

#[test]
fn a_destination_killed_during_a_direct_move_leaves_exactly_one_live_copy() {
    if !require_root("a_destination_killed_during_a_direct_move_leaves_exactly_one_live_copy") {
        return;
    }
    let _g = serial();
    // Its 256 MiB holders move live (memory sent while they run), from home and on from node
    // 2: the cuts fall in the rounds as well as in the final image.
    let c = TestCluster::up("tdircut", 3, |s| {
        s.tunables = "[moves]\nlive_above_mib = 128\n".into()
    });
    c.wait_all_up();
    let (mut before, mut after) = (0, 0);
    for (round, cut) in [0u64, 30, 60, 100, 150, 200, 300, 450, 700, 1000, 1500, 2500]
        .into_iter()
        .enumerate()
    {
        let child = c.memory_holder(256, &[]);
        let pid = child.id();
        assert!(c.migrate(pid, "2").contains("node 2"));
        // Never two: the destination's half-built or running copy is gone with its service.
        c.cut_move(
            pid,
            "3",
            3,
            Duration::from_millis(cut),
            &format!("round {round}"),
        );
        let moved = c
            .log(1)
            .contains(&format!("(pid {pid}) moved from node 2 to node 3 directly"));
        if moved {
            // It had arrived: it died with node 3, and home says so.
            after += 1;
            let mut child = child;
            let ended = c.eventually(Duration::from_secs(30), || {
                child.try_wait().ok().flatten().is_some()
            });
            assert!(
                ended,
                "round {round}: its node died, but it was not reported dead within 30 s\nnode 1:\n{}",
                c.log(1)
            );
            let st = child.wait().unwrap();
            assert_eq!(st.signal(), Some(libc::SIGKILL), "round {round}: {st:?}");
        } else {
            // Cut off on the way: it goes on at node 2, whole, and only there.
            before += 1;
            let r = row(&c, pid);
            assert_eq!(r["node"], 2, "round {round} (cut at {cut} ms): {r}");
            assert_eq!(c.guests_on(2), 1, "round {round}");
            assert!(c.migrate(pid, "home").contains("is home"), "round {round}");
            let st = release(child);
            assert!(st.success(), "round {round} (cut at {cut} ms): {st:?}");
        }
        assert_eq!(c.guests_on(2), 0, "round {round}: a copy left on node 2");
        c.restart(3);
    }
    eprintln!("{before} direct moves cut off on the way, {after} after arriving");
    if after > 0 {
        let log = c.log(2);
        assert!(
            log.contains("sent to node 3 while it ran"),
            "the direct moves were not live:\n{log}"
        );
    }

    // The source dies during the move: the process lived there, so unless the destination
    // already holds all of it (it then rejoined home, and home takes that copy) it is lost
    // with a reason. Never two copies, never a hang.
    let (mut adopted, mut lost) = (0, 0);
    for (round, cut) in [0u64, 150, 300, 450].into_iter().enumerate() {
        let mut child = c.memory_holder(256, &[]);
        let pid = child.id();
        assert!(c.migrate(pid, "2").contains("node 2"));
        c.cut_move(
            pid,
            "3",
            2,
            Duration::from_millis(cut),
            &format!("source round {round}"),
        );
        // Home decides within its grace for the destination to rejoin.
        let decided = c.eventually(Duration::from_secs(30), || {
            child.try_wait().unwrap().is_some()
                || c.mps(1, false)
                    .iter()
                    .any(|r| r["pid"] == pid && r["node"] == 3)
        });
        assert!(
            decided,
            "source round {round} (cut at {cut} ms): home never decided"
        );
        if let Some(st) = child.try_wait().unwrap() {
            lost += 1;
            assert_eq!(
                st.signal(),
                Some(libc::SIGKILL),
                "source round {round}: {st:?}"
            );
            assert!(
                c.log(1)
                    .lines()
                    .any(|l| l.contains(&format!("process {pid} ")) && l.contains("lost")),
                "source round {round}: node 1 does not say why {pid} ended"
            );
            assert!(
                c.eventually(Duration::from_secs(5), || c.node_procs(3).is_empty()),
                "source round {round}: left on node 3: {:?}",
                c.node_procs(3)
            );
        } else {
            adopted += 1;
            assert_eq!(c.guests_on(3), 1, "source round {round}");
            assert!(
                c.migrate(pid, "home").contains("is home"),
                "source round {round}"
            );
            let st = release(child);
            assert!(st.success(), "source round {round}: {st:?}");
        }
        c.restart(2);
    }
    eprintln!("source killed: {adopted} taken over by the destination, {lost} lost");
    assert!(
        before >= 3,
        "only {before} of 12 cuts landed during a move: the test did not test"
    );
}
