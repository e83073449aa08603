//! Per-process facts and what respects them: a locked process (`mosrun -L`) is left alone by
//! `migrate balance` but moves when named; stay/lstay keep balance away; the children of a
//! migrated process that forked are MOSIX processes that can move in turn; a pipeline of
//! mosrun'd programs on different nodes works.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use mosix_tests::{TestCluster, require_root, serial, user_dir, user_tool};

#[test]
fn balance_respects_locks_and_stay_and_children_of_forks_move_in_turn() {
    if !require_root("per_process_facts") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tfacts", 3, |_| {});
    c.wait_all_up();
    let mut locked = c.probe(&["-L"], &["spin", "120"]);
    let mut free = c.probe(&[], &["spin", "120"]);
    std::thread::sleep(Duration::from_millis(300));
    let (lp, fp) = (locked.id(), free.id());
    assert_eq!(c.row(lp).unwrap()["lock"], true, "mps shows the lock");

    // balance leaves a locked process alone, a named node does not.
    let (ok, said) = c.try_migrate(lp, "balance");
    assert!(!ok && said.contains("locked"), "{said}");
    assert_eq!(c.row(lp).unwrap()["node"], 0);
    let (ok, said) = c.try_migrate(lp, "2");
    assert!(ok, "{said}");
    let r = c.row(lp).unwrap();
    assert_eq!(
        (r["node"].as_u64(), r["nmigs"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    let guests = c.mps(2, true);
    assert!(
        guests.iter().any(|g| g["from"] == 1),
        "mps -G on node 2 shows where its guest is from: {guests:?}"
    );

    // lstay keeps balance from moving this node's processes; without it, balance moves.
    assert!(c.run(1, "mosctl", &["lstay"]).status.success());
    let (ok, said) = c.try_migrate(fp, "balance");
    assert!(!ok && said.contains("lstay"), "{said}");
    assert!(c.run(1, "mosctl", &["nolstay"]).status.success());
    // Alone on node 1 (the locked one is on node 2), it runs nowhere faster: balance keeps it.
    let (ok, said) = c.try_migrate(fp, "balance");
    assert!(ok && said.contains("is home"), "{said}");
    // With a second one beside it, node 3 (idle) is better for one of them. The automatic
    // balancer may get there first; either way one of the two leaves, and only one.
    let mut second = c.probe(&[], &["spin", "120"]);
    let busier = |v: &mosix_core::client::ClusterView| {
        let load = |n: u16| {
            v.get(mosix_core::NodeId::new(n).unwrap())
                .and_then(|x| x.figures)
                .map(|f| f.load)
        };
        matches!((load(1), load(3)), (Some(home), Some(idle)) if home > idle + 100)
    };
    c.wait_view(1, Duration::from_secs(15), busier).unwrap();
    let (ok, said) = c.try_migrate(fp, "balance");
    assert!(ok, "{said}");
    let at = |pid: u32| c.node_of(pid).unwrap();
    assert!(
        c.eventually(Duration::from_secs(10), || (at(fp) == 0)
            != (at(second.id()) == 0)),
        "one of the two spinners left the busy home: nodes {} and {}",
        at(fp),
        at(second.id())
    );
    let _ = second.kill();
    let _ = second.wait();
    for k in [&mut locked, &mut free] {
        let _ = k.kill();
        let _ = k.wait();
    }

    // A migrated shell forks: it comes home for the fork, and its child is a MOSIX process
    // that moves in turn.
    let probe = user_tool("mosix-probe");
    let script = format!("{} spin 2 > /dev/null; echo done $?", probe.display());
    let mut sh = c
        .job(1, &["-2", "/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let shell = sh.id();
    let mut child = None;
    assert!(
        c.eventually(Duration::from_secs(5), || {
            child = c
                .mps(1, false)
                .iter()
                .find(|r| {
                    r["pid"] != shell && r["command"].as_str().is_some_and(|s| s.contains("spin"))
                })
                .and_then(|r| r["pid"].as_u64());
            child.is_some()
        }),
        "the shell's child is a MOSIX process: {:?}",
        c.mps(1, false)
    );
    let child = child.unwrap() as u32;
    let (ok, said) = c.try_migrate(child, "3");
    assert!(ok, "the child moves: {said}");
    let mut out = String::new();
    sh.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(sh.wait().unwrap().success());
    assert_eq!(out, "done 0\n", "the shell saw its child's status");

    // A pipeline of mosrun'd programs on two nodes.
    let text: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
    let dir = user_dir();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, &text).unwrap();
    let mosrun = user_tool("mosrun");
    let pipeline = format!(
        "{m} -2 cat {i} | {m} -3 gzip -c | {m} -2 gzip -dc | sha256sum",
        m = mosrun.display(),
        i = input.display()
    );
    let moved = c
        .user_command(1, "/bin/sh", &["-c", &pipeline])
        .output()
        .unwrap();
    let local = c
        .user_command(
            1,
            "/bin/sh",
            &["-c", &format!("sha256sum < {}", input.display())],
        )
        .output()
        .unwrap();
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert_eq!(moved.stdout, local.stdout, "the pipeline's output");
}
