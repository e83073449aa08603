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

fn available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_frozen_process_leaves_ram_keeps_its_signals_and_continues_intact() {
    if !require_root("freeze") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tfrz", 1, |_| {});
    c.wait_all_up();
    let area = PathBuf::from("/var/lib/mosix-vc/tfrz/node1/freeze").join(NOBODY.to_string());

    let mut child = c
        .job(1, &["/usr/bin/python3", "-c", HOLDER])
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
    let avail_before = available_kib();

    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "freeze", "--wait"]);
    assert!(ok, "{said}\n{}", c.log(1));
    assert!(said.contains("frozen"), "{said}");
    let file = area.join(format!("{pid}.frz"));
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(size > 512 << 20, "{} is {size} bytes", file.display());
    let rss_frozen = rss_kib(pid);
    assert!(rss_frozen < 64 << 10, "rss {rss_frozen} KiB while frozen");
    let avail_frozen = available_kib();
    assert!(
        avail_frozen > avail_before + (256 << 10),
        "available memory {avail_before} -> {avail_frozen} KiB"
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

    // kill -9 of a frozen process ends it at once, and its file goes.
    let mut child = c
        .job(1, &["/usr/bin/python3", "-c", HOLDER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    line.clear();
    out.read_line(&mut line).unwrap();
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "freeze", "--wait"]);
    assert!(ok, "{said}");
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
