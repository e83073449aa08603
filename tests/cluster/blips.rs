//! Step 9, network blips: a cut between a migrated process's home and the node it runs on,
//! shorter than `[link] resume_grace_s`, kills nothing and loses nothing — the remote
//! reconnects, each side resends what the other missed, and no call runs twice. (A cut longer
//! than the grace is in `failures`.)

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mosix_tests::{TestCluster, ends_within, require_root, serial, user_dir};

/// Makes directory `d<i>` (a second run of the same `mkdir` would fail with `EEXIST`, and the
/// job with it), appends the line `i` to `log`, and sleeps 0.2 s, `n` times; then says
/// `done N`. Every `mkdir` and `write` is a call forwarded home.
const WRITER: &str = r#"
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
with open(os.path.join(d, "log"), "w") as f:
    for i in range(n):
        os.mkdir(os.path.join(d, "d%d" % i))
        f.write("%d\n" % i)
        f.flush()
        time.sleep(0.2)
print("done", n, flush=True)
"#;

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// A cut made with `ip ARGS`, undone with `ip UNDO` — when the test says so, or when it is
/// dropped, so that a failing test leaves no node cut off.
struct Cut {
    undo: Option<Vec<String>>,
}

impl Cut {
    fn make(args: &[&str], undo: &[&str]) -> Cut {
        ip(args);
        Cut {
            undo: Some(undo.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn restore(&mut self) {
        if let Some(undo) = self.undo.take() {
            let undo: Vec<&str> = undo.iter().map(String::as_str).collect();
            ip(&undo);
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Some(undo) = self.undo.take() {
            let _ = Command::new("ip").args(undo).status();
        }
    }
}

#[test]
fn a_cut_shorter_than_the_grace_kills_nothing_and_runs_no_call_twice() {
    if !require_root("a_cut_shorter_than_the_grace_kills_nothing") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tblip", 3, |_| {});
    c.wait_all_up();
    // 200 rounds of 0.2 s: about 40 s of work, more than half of it after the cuts begin.
    let n = 200;
    let dirs: Vec<_> = (0..3).map(|_| user_dir()).collect();
    let script = dirs[0].path().join("writer.py");
    std::fs::write(&script, WRITER).unwrap();
    let jobs: Vec<(Child, u32)> = dirs
        .iter()
        .map(|d| {
            let child = c
                .job(
                    1,
                    &[
                        "-L",
                        "python3",
                        script.to_str().unwrap(),
                        d.path().to_str().unwrap(),
                        &n.to_string(),
                    ],
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id();
            (child, pid)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for (_, pid) in &jobs {
        let said = c.migrate(*pid, "2");
        assert!(said.contains("node 2"), "{said}");
    }
    std::thread::sleep(Duration::from_secs(3));
    // First home's packets to node 2 are lost while node 2's still arrive: calls reach home
    // and run there, their answers do not come back (they must be resent, not run again).
    // Then node 2 is cut off altogether. Each cut lasts longer than either side takes to see
    // it (11-15 s), less than the grace (60 s).
    let (home_ns, node2_ns) = (
        c.cluster.node(1).netns.clone(),
        c.cluster.node(2).netns.clone(),
    );
    let node2 = format!("{}/32", c.cluster.node(2).addr);
    let mut cut = Cut::make(
        &["-n", &home_ns, "route", "add", "unreachable", &node2],
        &["-n", &home_ns, "route", "del", "unreachable", &node2],
    );
    std::thread::sleep(Duration::from_secs(20));
    cut.restore();
    std::thread::sleep(Duration::from_secs(5));
    let mut cut = Cut::make(
        &["-n", &node2_ns, "link", "set", "eth0", "down"],
        &["-n", &node2_ns, "link", "set", "eth0", "up"],
    );
    std::thread::sleep(Duration::from_secs(20));
    cut.restore();
    for (i, (child, pid)) in jobs.into_iter().enumerate() {
        let out = {
            let st = ends_within_output(child, Duration::from_secs(120), "a job cut off");
            assert!(
                st.status.success(),
                "job {pid} failed after the cut: {:?}\nstdout: {}\nstderr: {}\nnode 1: {}\nnode 2: {}",
                st.status,
                String::from_utf8_lossy(&st.stdout),
                String::from_utf8_lossy(&st.stderr),
                c.log(1),
                c.log(2)
            );
            String::from_utf8_lossy(&st.stdout).into_owned()
        };
        assert_eq!(out.trim(), format!("done {n}"), "job {pid}");
        let log = std::fs::read_to_string(dirs[i].path().join("log")).unwrap();
        let want: String = (0..n).map(|k| format!("{k}\n")).collect();
        assert_eq!(log, want, "job {pid}'s lines: lost or written twice");
        for k in 0..n {
            assert!(
                dirs[i].path().join(format!("d{k}")).is_dir(),
                "d{k} of {pid}"
            );
        }
    }
    // Every connection (three, each cut twice) was mended, at both ends; nobody was given up.
    let (home, remote) = (c.log(1), c.log(2));
    assert!(
        home.matches("resumed").count() >= 6 && remote.matches("resumed").count() >= 6,
        "node 1:\n{home}\nnode 2:\n{remote}"
    );
    assert!(
        !home.contains("lost") && !remote.contains("killed"),
        "node 1:\n{home}\nnode 2:\n{remote}"
    );
    assert!(
        c.eventually(Duration::from_secs(10), || c.guests_on(2) == 0),
        "guests left on node 2"
    );
}

/// [`ends_within`], keeping what the child printed.
fn ends_within_output(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    use std::io::Read;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = ends_within(child, limit, what);
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
