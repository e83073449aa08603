//! Freezing (`migrate PID freeze` / `continue`): a process's memory leaves RAM for the node's
//! freeze area and comes back intact; signals wait for it; `kill -9` ends it at once.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mosix_tests::{NOBODY, TestCluster, require_root, serial};

/// Holds 512 MiB of known bytes; says their digest, waits for a line, says it again and how
/// many SIGUSR1 it got.
const HOLDER: &str = r#"
import hashlib, signal, sys
got = []
signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
data = bytearray(range(256)) * (2 << 20)
print("ready", hashlib.sha256(data).hexdigest(), flush=True)
sys.stdin.readline()
print("after", hashlib.sha256(data).hexdigest(), "usr1", len(got), flush=True)
"#;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_frozen_process_leaves_ram_keeps_its_signals_and_continues_intact() {
    if !require_root("freeze") {
        return;
    }
    let _g = serial();
    // A node of 2 GiB: its free memory is its cgroup's, which the service measures.
    let c = TestCluster::up("tfrz", 2, |s| s.mem_per_node = Some(2 << 30));
    c.wait_all_up();
    let area = PathBuf::from("/var/lib/mosix-vc/tfrz/node1/freeze").join(NOBODY.to_string());

    let mut child = c
        .job(1, &["-L", "/usr/bin/python3", "-c", HOLDER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let digest = line.strip_prefix("ready ").unwrap().trim().to_owned();
    let rss_before = rss_kib(pid);
    assert!(rss_before > 500 << 10, "rss {rss_before} KiB");
    let node_free = || {
        c.view(1)
            .and_then(|v| v.nodes.into_iter().find(|n| n.is_self))
            .and_then(|n| n.figures)
            .map_or(0, |f| f.mem_free)
    };
    // The node's figures are measured every second: let them see the 512 MiB.
    std::thread::sleep(Duration::from_millis(2500));
    let free_before = node_free();

    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "freeze", "--wait"]);
    assert!(ok, "{said}\n{}", c.log(1));
    assert!(said.contains("frozen"), "{said}");
    let file = area.join(format!("{pid}.frz"));
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(size > 512 << 20, "{} is {size} bytes", file.display());
    let rss_frozen = rss_kib(pid);
    assert!(rss_frozen < 64 << 10, "rss {rss_frozen} KiB while frozen");
    // The node's free memory (the file written is out of the page cache once synced).
    let freed = c.eventually(Duration::from_secs(10), || {
        node_free() > free_before + (256 << 20)
    });
    assert!(
        freed,
        "the node's free memory {free_before} -> {} bytes",
        node_free()
    );
    let row = c.row(pid).unwrap();
    assert_eq!(row["state"], "F", "{row}");
    assert_eq!(row["frozen"], "migrate freeze", "{row}");
    assert_eq!(row["node"], 0, "{row}");
    // Another freeze, or a move, is refused with the reason.
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "freeze"]);
    assert!(!ok && said.contains("frozen already"), "{said}");

    // Signals wait for it (two of one standard signal are one, as in the kernel).
    for _ in 0..2 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "continue", "--wait"]);
    assert!(ok, "{said}\n{}", c.log(1));
    assert!(said.contains("continues at home"), "{said}");
    assert!(!file.exists(), "{} is still there", file.display());
    input.write_all(b"\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        format!("after {digest} usr1 1"),
        "{}",
        c.log(1)
    );
    assert!(child.wait().unwrap().success());

    // kill -9 of a frozen process ends it at once, and its file goes. This one runs on node 2
    // when it is frozen: it comes home first.
    let mut child = c
        .job(1, &["-L", "/usr/bin/python3", "-c", HOLDER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    line.clear();
    out.read_line(&mut line).unwrap();
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "2", "--wait"]);
    assert!(ok, "{said}");
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "freeze", "--wait"]);
    assert!(ok, "{said}\n{}", c.log(1));
    assert_eq!(c.row(pid).unwrap()["state"], "F");
    let file = area.join(format!("{pid}.frz"));
    assert!(file.exists());
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        c.eventually(Duration::from_secs(5), || !file.exists()),
        "{} is still there",
        file.display()
    );
}

/// How many of node 1's processes `mps` shows frozen, and where the others run.
fn frozen_and_spread(c: &TestCluster) -> (usize, std::collections::BTreeMap<u64, usize>) {
    let mut frozen = 0;
    let mut at = std::collections::BTreeMap::new();
    for r in c.mps(1, false) {
        if r["state"] == "F" {
            assert_eq!(r["frozen"], "home overloaded", "{r}");
            frozen += 1;
        } else {
            *at.entry(r["node"].as_u64().unwrap()).or_insert(0) += 1;
        }
    }
    (frozen, at)
}

#[test]
fn processes_sent_home_in_bulk_are_frozen_there_and_come_back_one_at_a_time() {
    if !require_root("auto_freeze") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tafrz", 3, |s| {
        s.cpus_per_node = Some(0.4);
        s.tunables = "[freeze]\nred_mark = 1.5\nblue_mark = 1.0\n".into();
    });
    c.wait_all_up();
    // Six CPU-bound jobs (mosrun -c) of node 1, about 15 s of a node's CPU each.
    let mut jobs: Vec<_> = (0..6)
        .map(|_| c.probe(&["-c"], &["work", "1000000000"]))
        .collect();
    let spread = c.eventually(Duration::from_secs(25), || {
        let (_, at) = frozen_and_spread(&c);
        at.len() == 3 && at.values().all(|k| *k == 2)
    });
    assert!(
        spread,
        "not spread: {:?}\n{}",
        frozen_and_spread(&c),
        c.log(1)
    );
    // Nodes 2 and 3 send their guests home: four come back to a node that has room for one.
    for n in [2, 3] {
        let (ok, said) = c.said(n, "mosctl", &["expel"]);
        assert!(ok, "{said}");
    }
    let froze = c.eventually(Duration::from_secs(15), || frozen_and_spread(&c).0 >= 3);
    let seen = frozen_and_spread(&c);
    assert!(froze, "not frozen at home: {seen:?}\n{}", c.log(1));
    assert!(
        c.log(1).contains("home overloaded: process"),
        "{}",
        c.log(1)
    );
    // The nodes take guests again: the frozen come back one at a time and go out again.
    for n in [2, 3] {
        let (ok, said) = c.said(n, "mosctl", &["noblock"]);
        assert!(ok, "{said}");
    }
    // None stays frozen while there is room: each comes back when a node has a CPU to spare
    // (the balancer then moves one out) or home has room, until all have.
    let back = c.eventually(Duration::from_secs(90), || frozen_and_spread(&c).0 == 0);
    assert!(
        back,
        "still frozen: {:?}\n{}",
        frozen_and_spread(&c),
        c.log(1)
    );
    let log = c.log(1);
    assert!(log.contains("room again: process"), "{log}");
    let mut outputs = Vec::new();
    for j in jobs.drain(..) {
        let o = j.wait_with_output().unwrap();
        assert!(o.status.success(), "a job failed: {:?}", o.status);
        outputs.push(String::from_utf8(o.stdout).unwrap());
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]) && !outputs[0].trim().is_empty(),
        "the jobs computed different results: {outputs:?}"
    );
}
