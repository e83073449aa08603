//! Step 9, moves that barely pause: `migrate --live` sends a process's memory while it runs
//! and stops it only for what it wrote meanwhile; nothing it wrote is lost or mixed up — pages
//! rewritten during the rounds, pages it discarded (`MADV_DONTNEED`: zeroes again), areas it
//! mapped and unmapped meanwhile; then it moves on from that node to a third directly, and
//! comes home, live by its size, with the same care. (How long it stops is measured by the `live` benchmark,
//! not asserted here.)

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use mosix_tests::{TestCluster, require_root, serial, user_tool};

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
    let probe = user_tool("mosix-probe");
    for churn in [false, true] {
        // 192 MiB rewritten at 50 MB/s for 14 s; with churn, pages discarded and areas
        // replaced meanwhile.
        let mut args = vec![probe.to_str().unwrap(), "dirty", "192", "50", "14"];
        if churn {
            args.push("churn");
        }
        let mut child = c
            .job(1, &args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        std::thread::sleep(std::time::Duration::from_secs(1));
        let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "2", "--wait", "--live"]);
        assert!(ok && said.contains("node 2"), "{said}\n{}", c.log(1));
        let log = c.log(1);
        let moved = log
            .lines()
            .find(|l| {
                l.contains(&format!("(pid {pid}) migrated to node 2")) && l.contains(", live: ")
            })
            .unwrap_or_else(|| panic!("node 1 does not say it moved live:\n{log}"));
        assert!(moved.contains("stopped"), "{moved}");
        assert_eq!(c.node_of(pid), Some(2), "{}", c.log(2));
        // On from node 2 to node 3 directly: node 2 sends it while it runs there.
        let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "3", "--wait"]);
        assert!(ok && said.contains("node 3"), "{said}\n{}", c.log(2));
        let log = c.log(2);
        let on = log
            .lines()
            .find(|l| l.contains(&format!("(pid {pid} at node 1)")) && l.contains("while it ran"))
            .unwrap_or_else(|| panic!("node 2 does not say it moved it on live:\n{log}"));
        assert!(on.contains("sent to node 3"), "{on}");
        assert_eq!(c.node_of(pid), Some(3), "{}", c.log(3));
        // And home, live too: node 3 sends it over its own connection while it runs.
        let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "home", "--wait"]);
        assert!(ok && said.contains("is home"), "{said}\n{}", c.log(3));
        let log = c.log(3);
        let back = log
            .lines()
            .find(|l| l.contains(&format!("(pid {pid} at node 1)")) && l.contains("sent home"))
            .unwrap_or_else(|| panic!("node 3 does not say it sent it home live:\n{log}"));
        assert_eq!(c.node_of(pid), Some(0), "{}", c.log(1));
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let st = child.wait().unwrap();
        assert!(
            st.success(),
            "churn {churn}: the process found its memory wrong after a live move: {err}{rest}\n{moved}\n{on}\n{back}\nnode 1:\n{}",
            c.log(1)
        );
        assert!(rest.contains("max_gap_ms"), "{rest}");
        eprintln!(
            "churn {churn}: {moved}\n  {on}\n  {back}\n  the process: {}",
            rest.trim()
        );
    }
}
