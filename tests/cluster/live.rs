//! Step 9, moves that barely pause: `migrate --live` sends a process's memory while it runs
//! and stops it only for what it wrote meanwhile; nothing it wrote is lost or mixed up — pages
//! rewritten during the rounds, pages it discarded (`MADV_DONTNEED`: zeroes again), areas it
//! mapped and unmapped meanwhile. (How long it stops is measured by the `live` benchmark, not
//! asserted here.)

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use mosix_tests::{TestCluster, require_root, serial, user_tool};

#[test]
fn a_live_move_loses_no_write_and_the_process_goes_on_there() {
    if !require_root("a_live_move_loses_no_write") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tlive", 2, |_| {});
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
            "churn {churn}: the process found its memory wrong after a live move: {err}{rest}\n{moved}\nnode 2:\n{}",
            c.log(2)
        );
        assert!(rest.contains("max_gap_ms"), "{rest}");
        eprintln!("churn {churn}: {moved}\n  the process: {}", rest.trim());
    }
}
