//! Step 6, trust: a node takes no process of root as a guest unless its `mosix.toml` says so
//! (`[guests] accept_root = true`). A job of root — or one in a set-id state, its ids not all
//! the same — that is sent to such a node is refused with a reason that says how to change it,
//! and goes on at home unharmed; the same job of an unprivileged user moves. A node that accepts
//! root takes root's jobs, while its neighbour still refuses them.
//!
//! These are the only tests that start jobs as root ([`TestCluster::root_job`]).

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use mosix_tests::{TestCluster, require_root, serial};

/// What node N says when it refuses a process of root.
fn reason(node: u16) -> String {
    format!(
        "node {node} takes no processes of root or in a set-id state (guests.accept_root in its mosix.toml)"
    )
}

/// A CPU-bound shell job (no fork, no I/O until its one line of output).
const COUNT: &str = "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done; echo counted $i";
/// What it prints, wherever it ran.
const COUNTED: &str = "counted 3000000\n";

/// A job of root that puts itself in a set-id state (real and saved uid 65534, effective uid 1:
/// what a set-uid program of uid 1 run by nobody looks like; no id is 0), then counts.
const SETID: &str = "import os\nos.setgroups([])\nos.setresgid(65534, 65534, 65534)\nos.setresuid(65534, 1, 65534)\nprint(os.getresuid(), flush=True)\ns = 0\nfor i in range(6000000):\n    s += i % 7\nprint(s)\n";

fn finish(mut child: Child) -> Output {
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: out,
        stderr: Vec::new(),
    }
}

/// Asserts that process `pid` runs at home, neither stopped nor traced (the refused move left
/// nothing behind).
fn runs_at_home(c: &TestCluster, pid: u32, what: &str) {
    assert_eq!(c.node_of(pid), Some(0), "{what}: not at home");
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(st.contains("TracerPid:\t0"), "{what}: {st}");
    assert!(!st.contains("State:\tT"), "{what}: {st}");
    assert_eq!(c.guests_on(2), 0, "{what}: a guest on node 2");
}

/// Whether process `pid` of node 1 shows on node 2 within 5 s.
fn seen_on_2(c: &TestCluster, pid: u32) -> bool {
    c.eventually(Duration::from_secs(5), || c.node_of(pid) == Some(2))
}

/// A counting job made by `job` (a `mosrun` command of node 1 with these arguments) moves to
/// node 2 when asked (`migrate PID 2`), and another starts there (`mosrun -2`); both print
/// what they print at home. `who` names the owner in messages.
fn moved_and_started_on_2(job: impl Fn(&[&str]) -> Command, c: &TestCluster, who: &str) {
    let child = job(&["sh", "-c", COUNT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let said = c.migrate(child.id(), "2");
    assert!(said.contains("is on node 2"), "{who}'s job: {said}");
    let out = finish(child);
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), COUNTED);
    let child = job(&["-2", "sh", "-c", COUNT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        seen_on_2(c, child.id()),
        "{who}'s mosrun -2 job never ran on node 2"
    );
    let out = finish(child);
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), COUNTED);
}

#[test]
fn jobs_of_root_are_refused_as_guests_and_go_on_at_home() {
    if !require_root("jobs_of_root_are_refused_as_guests_and_go_on_at_home") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("troot", 2, |_| {});
    c.wait_all_up();
    let refused = format!("refused: {}", reason(2));

    // migrate PID 2 of root's job: migrate says why, and the job goes on at home.
    let child = c
        .root_job(1, &["sh", "-c", COUNT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = child.id();
    let (ok, said) = c.try_migrate(pid, "2");
    eprintln!("migrate {pid} 2 of a job of root said: {said}");
    assert!(!ok, "migrate of a job of root worked: {said}");
    assert!(said.contains(&refused), "{said}");
    runs_at_home(&c, pid, "root's job after migrate");
    let out = finish(child);
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), COUNTED);

    // mosrun -2 -F: it cannot start on node 2, so it runs at home, and node 1 says why.
    let child = c
        .root_job(1, &["-2", "-F", "sh", "-c", COUNT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let said_why = format!("(pid {pid}) runs at home: {refused}");
    assert!(
        c.eventually(Duration::from_secs(5), || c
            .log(1)
            .lines()
            .any(|l| l.contains(&said_why))),
        "node 1 does not say why {pid} runs at home:\n{}",
        c.log(1)
    );
    runs_at_home(&c, pid, "root's mosrun -2 -F job");
    let out = finish(child);
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), COUNTED);

    // mosrun -2 without -F: a start on node 2 was demanded and cannot be made, so the job does
    // not run at all (as for any node that cannot take it), and node 1 says why.
    let child = c
        .root_job(1, &["-2", "sh", "-c", COUNT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = finish(child);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{:?}", out.status);
    assert!(out.stdout.is_empty(), "it ran: {:?}", out.stdout);
    let log = c.log(1);
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "(pid {pid}) killed: it could not start on node 2: {refused}"
        ))),
        "node 1 does not say why {pid} was killed:\n{log}"
    );
    assert_eq!(c.guests_on(2), 0);

    // A job in a set-id state is refused alike, though none of its ids is root's.
    let child = c
        .root_job(1, &["python3", "-c", SETID])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(
        c.eventually(Duration::from_secs(5), || std::fs::read_to_string(format!(
            "/proc/{pid}/status"
        ))
        .is_ok_and(|s| s.contains("Uid:\t65534\t1\t65534"))),
        "the job never took its set-id state"
    );
    let (ok, said) = c.try_migrate(pid, "2");
    eprintln!("migrate {pid} 2 of a job in a set-id state said: {said}");
    assert!(!ok && said.contains(&refused), "{said}");
    runs_at_home(&c, pid, "the set-id job after migrate");
    let out = finish(child);
    assert!(out.status.success(), "{:?}", out.status);
    let sum: u64 = (0..6_000_000u64).map(|i| i % 7).sum();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("(65534, 1, 65534)\n{sum}\n")
    );

    // The same jobs of nobody move, and print the same.
    moved_and_started_on_2(|a| c.job(1, a), &c, "nobody");
}

#[test]
fn a_node_that_accepts_root_takes_jobs_of_root() {
    if !require_root("a_node_that_accepts_root_takes_jobs_of_root") {
        return;
    }
    let _g = serial();
    // Node 2 accepts root's processes; node 1 keeps the default.
    let c = TestCluster::up("trootok", 2, |s| s.start_services = false);
    let config = c.paths(2).config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[guests]\naccept_root = true\n");
    std::fs::write(&config, text).unwrap();
    for n in 1..=2 {
        c.cluster
            .start_node(n)
            .unwrap_or_else(|e| panic!("starting node {n}: {e:#}"));
    }
    c.wait_all_up();

    // migrate PID 2 of root's job, and mosrun -2 of root.
    moved_and_started_on_2(|a| c.root_job(1, a), &c, "root");

    // Node 1 still refuses them: root's job of node 2 stays at node 2.
    let child = c
        .root_job(2, &["sh", "-c", COUNT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = child.id();
    let (ok, said) = c.said(2, "migrate", &[&pid.to_string(), "1", "--wait"]);
    assert!(
        !ok && said.contains(&format!("refused: {}", reason(1))),
        "{said}"
    );
    let out = finish(child);
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), COUNTED);
}
