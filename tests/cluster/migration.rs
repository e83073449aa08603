//! Step 2 end to end: programs started with mosrun on node 1 move to node 2 while they run,
//! keep reading node 1's files and writing node 1's outputs, end at home with their own status
//! or signal, and mps shows where they are. The jobs, and the reference runs they are compared
//! with, run as nobody (a node takes no process of root as a guest).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use mosix_tests::{
    TestCluster, pseudo_random, require_root, serial, state_of, user_dir, user_tool,
};

/// The directory each node has privately in these tests.
const DATA: &str = "/run/mosix-vc-test-data";

fn cluster(name: &str) -> (TestCluster, PathBuf) {
    std::fs::create_dir_all(DATA).unwrap();
    let c = TestCluster::up(name, 3, |s| s.private_dirs = vec![PathBuf::from(DATA)]);
    c.wait_all_up();
    let home_data = c.private_path(1, Path::new(DATA));
    (c, home_data)
}

fn pid_of(child: &Child) -> u32 {
    // vcluster exec, mosrun and the program are one process, one pid.
    child.id()
}

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

/// Runs `prog args` plainly on node 1 (the reference), then under mosrun moved to node 2 after
/// `after`; returns both outputs.
fn reference_and_migrated(
    c: &TestCluster,
    prog: &str,
    args: &[&str],
    after: Duration,
) -> (Output, Output) {
    let reference = c
        .user_command(1, prog, args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut margs = vec![prog];
    margs.extend_from_slice(args);
    let child = c
        .job(1, &margs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let pid = pid_of(&child);
    let said = c.migrate(pid, "2");
    assert!(said.contains("is on node 2"), "{prog}: {said}");
    // mps at home says where it runs; mps -G on node 2 lists it as a guest from node 1.
    let rows = c.mps(1, false);
    let row = rows
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("mps: {rows:?}"));
    assert!(row["node"] == 2 || row["node"] == 0, "{row}");
    let migrated = finish(child);
    (reference, migrated)
}

#[test]
fn real_programs_move_mid_run_and_their_output_is_identical() {
    if !require_root("real_programs_move_mid_run") {
        return;
    }
    let _g = serial();
    let (c, data) = cluster("tmig");
    // Inputs exist on node 1 only.
    let big = pseudo_random(160 << 20, 0x1234_5678);
    std::fs::write(data.join("big.bin"), &big).unwrap();
    let text: String = (0..1_500_000u64)
        .map(|i| {
            format!(
                "line {} of the test text {}\n",
                (i * 7919) % 1_500_000,
                i % 97
            )
        })
        .collect();
    std::fs::write(data.join("text.txt"), &text).unwrap();
    std::fs::create_dir_all(data.join("tree/sub")).unwrap();
    for i in 0..50 {
        std::fs::write(
            data.join(format!("tree/sub/f{i}")),
            &text.as_bytes()[..(i * 10_000)],
        )
        .unwrap();
    }
    std::fs::write(
        data.join("script.py"),
        "import hashlib, sys\ns = 0\nfor i in range(30000000):\n    s += i * i % 7\nh = hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest()\nprint(s, h)\nsys.exit(5)\n",
    )
    .unwrap();
    assert!(
        !c.private_path(2, Path::new(DATA)).join("big.bin").exists(),
        "node 2 has its own files"
    );

    let d = |f: &str| format!("{DATA}/{f}");
    let cases: Vec<(&str, Vec<String>, u64)> = vec![
        ("sha256sum", vec![d("big.bin")], 150),
        ("gzip", vec!["-c".into(), d("text.txt")], 150),
        ("xz", vec!["-c".into(), "-1".into(), d("text.txt")], 150),
        ("bzip2", vec!["-c".into(), d("text.txt")], 150),
        ("sort", vec!["--parallel=1".into(), d("text.txt")], 150),
        ("tar", vec!["-cf".into(), "-".into(), "-C".into(), d("tree"), ".".into()], 50),
        ("python3", vec![d("script.py"), d("big.bin")], 500),
        (
            "perl",
            vec![
                "-e".into(),
                "my $s=0; for my $i (1..20000000) { $s += $i % 13 } open(F, $ARGV[0]) or die; my $n=0; while(<F>){$n++} print \"$s $n\\n\"; exit 4".into(),
                d("text.txt"),
            ],
            300,
        ),
    ];
    for (prog, args, after_ms) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (r, m) = reference_and_migrated(&c, prog, &args, Duration::from_millis(*after_ms));
        assert!(
            !r.stdout.is_empty(),
            "{prog}: the reference run printed nothing"
        );
        assert!(
            r.stdout == m.stdout,
            "{prog}: output differs after migration ({} vs {} bytes)",
            r.stdout.len(),
            m.stdout.len()
        );
        assert_eq!(r.status.code(), m.status.code(), "{prog}: exit status");
        eprintln!(
            "{prog}: identical ({} bytes), exit {:?}",
            m.stdout.len(),
            m.status.code()
        );
    }

    // Writing a file at home: the output lands in node 1's private directory, not node 2's.
    let out = d("out.gz");
    let child = c
        .job(
            1,
            &[
                "sh",
                "-c",
                &format!("exec gzip -c {} > {out}", d("text.txt")),
            ],
        )
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let said = c.migrate(pid_of(&child), "2");
    assert!(said.contains("node 2"), "{said}");
    let st = finish_status(child);
    assert!(st.success());
    let reference = c
        .user_command(1, "gzip", &["-c", &d("text.txt")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(std::fs::read(data.join("out.gz")).unwrap(), reference);
    assert!(!c.private_path(2, Path::new(DATA)).join("out.gz").exists());
}

fn finish_status(mut child: Child) -> std::process::ExitStatus {
    child.wait().unwrap()
}

fn mem_free_of_self(c: &TestCluster, node: u16) -> u64 {
    let v = c.view(node).unwrap();
    v.nodes
        .iter()
        .find(|n| n.is_self)
        .unwrap()
        .figures
        .unwrap()
        .mem_free
}

#[test]
fn home_gets_its_memory_back_and_the_guest_is_listed_there() {
    if !require_root("home_gets_its_memory_back") {
        return;
    }
    let _g = serial();
    let (c, _) = cluster("tmem");
    let mb = 384u64;
    let child = c
        .job(
            1,
            &[
                "python3",
                "-c",
                &format!("import time\nb = b'x' * ({mb} << 20)\nt = time.time()\nwhile time.time() - t < 40: pass\n"),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = pid_of(&child);
    // Wait until the memory is in use and measured.
    std::thread::sleep(Duration::from_secs(4));
    let before = mem_free_of_self(&c, 1);
    let said = c.migrate(pid, "2");
    assert!(said.contains("node 2"), "{said}");
    let rss: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(rss < 1024, "the deputy keeps {rss} kB");
    let t = Instant::now();
    let mut after = before;
    while t.elapsed() < Duration::from_secs(8) {
        after = mem_free_of_self(&c, 1);
        if after > before + (mb << 20) * 7 / 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        after > before + (mb << 20) * 7 / 10,
        "node 1 free memory went from {} MiB to {} MiB",
        before >> 20,
        after >> 20
    );
    let guests = c.mps(2, true);
    let g = guests
        .iter()
        .find(|r| r["pid"] == pid)
        .unwrap_or_else(|| panic!("{guests:?}"));
    assert_eq!(g["from"], 1);
    assert_eq!(g["node"], 0);
    let home = c.mps(1, false);
    let h = home.iter().find(|r| r["pid"] == pid).unwrap();
    assert_eq!(h["node"], 2);
    assert_eq!(h["nmigs"], 1);
    assert!(h["cantmove"].is_null());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = finish(child);
}

#[test]
fn signals_at_home_reach_the_remote_and_deaths_are_reported_as_such() {
    if !require_root("signals_at_home_reach_the_remote") {
        return;
    }
    let _g = serial();
    let (c, _) = cluster("tsig");
    let spin = "i=0; while [ $i -lt 50000000 ]; do i=$((i+1)); done";
    for (sig, expect) in [
        (nix::sys::signal::Signal::SIGTERM, libc::SIGTERM),
        (nix::sys::signal::Signal::SIGKILL, libc::SIGKILL),
    ] {
        let child = c.job(1, &["sh", "-c", spin]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let pid = pid_of(&child);
        assert!(c.migrate(pid, "2").contains("node 2"));
        assert_eq!(c.guests_on(2), 1);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
        let st = finish_status(child);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(expect), "{sig}: {st:?}");
        // Nothing is left on node 2.
        let t = Instant::now();
        while (c.guests_on(2) > 0 || !c.node_procs(2).is_empty())
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(c.guests_on(2), 0, "{sig}: guest left on node 2");
        assert!(
            c.node_procs(2).is_empty(),
            "{sig}: processes left on node 2: {:?}",
            c.node_procs(2)
        );
    }

    // A signal while it waits, inside its deputy at home, for a child it had before it left:
    // the wait ends and the signal is taken.
    let child = c.job(1, &["sh", "-c", "sleep 100 & wait"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = pid_of(&child);
    assert!(c.migrate(pid, "2").contains("node 2"));
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = finish_status(child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");

    // Exit status of its own.
    let child = c
        .job(1, &["sh", "-c", &format!("{spin}; exit 42")])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.migrate(pid_of(&child), "3").contains("node 3"));
    assert_eq!(finish_status(child).code(), Some(42));

    // SIGINT from the controlling terminal.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave;
    let mut cmd = c.job(1, &["sh", "-c", spin]);
    let s_in = slave.try_clone().unwrap();
    let s_out = slave.try_clone().unwrap();
    let s_err = slave.try_clone().unwrap();
    cmd.stdin(Stdio::from(s_in))
        .stdout(Stdio::from(s_out))
        .stderr(Stdio::from(s_err));
    // SAFETY: between fork and exec; setsid(2) and ioctl(TIOCSCTTY) are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(slave);
    std::thread::sleep(Duration::from_millis(300));
    let pid = pid_of(&child);
    assert!(c.migrate(pid, "2").contains("node 2"));
    // ^C on the terminal.
    nix::unistd::write(&pty.master, b"\x03").unwrap();
    let st = finish_status(child);
    assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}");
    drop(c);
    mosix_tests::assert_gone("tsig");
}

#[test]
fn processes_that_cannot_move_say_why_and_keep_running() {
    if !require_root("processes_that_cannot_move") {
        return;
    }
    let _g = serial();
    let (c, _) = cluster("tcant");
    let cases = [
        (
            "import threading, time\nt = threading.Thread(target=time.sleep, args=(30,))\nt.start()\ntime.sleep(30)\n",
            "more than one thread",
        ),
        (
            "import mmap, time\nm = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)\nm[0] = 1\ntime.sleep(30)\n",
            "shared memory",
        ),
    ];
    for (script, why) in cases {
        let child = c.job(1, &["python3", "-c", script]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let pid = pid_of(&child);
        let out = c.run(1, "migrate", &[&pid.to_string(), "2", "--wait"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1));
        assert!(err.contains(why), "{why}: {err}");
        // Still here, running (not stopped, not traced).
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(st.contains("TracerPid:\t0"), "{st}");
        assert!(!st.contains("State:\tT"), "{st}");
        let rows = c.mps(1, false);
        let row = rows.iter().find(|r| r["pid"] == pid).unwrap();
        assert_eq!(row["node"], 0);
        assert!(!row["cantmove"].is_null(), "{row}");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = finish_status(child);
    }
    // Stopped by job control: it stays (moved, it would run again); once continued, it moves.
    let child = c.job(1, &["sleep", "30"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = pid_of(&child);
    let signal = |s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s).unwrap();
    signal(nix::sys::signal::Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(100));
    let (ok, said) = c.try_migrate(pid, "2");
    assert!(!ok && said.contains("stopped (job control)"), "{said}");
    let rows = c.mps(1, false);
    let row = rows.iter().find(|r| r["pid"] == pid).unwrap();
    assert_eq!(
        (row["node"].as_u64(), row["cantmove"].as_str()),
        (Some(0), Some("stopped"))
    );
    signal(nix::sys::signal::Signal::SIGCONT);
    std::thread::sleep(Duration::from_millis(100));
    assert!(c.migrate(pid, "2").contains("node 2"));
    signal(nix::sys::signal::Signal::SIGKILL);
    let _ = finish_status(child);

    // Not a MOSIX process; no such process; a blocked node.
    let mut plain = c.command(1, "sleep", &["30"]).spawn().unwrap();
    let out = c.run(1, "migrate", &[&plain.id().to_string(), "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a MOSIX process"));
    let _ = plain.kill();
    let _ = plain.wait();
    let out = c.run(1, "migrate", &["999999", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process 999999"));
    assert!(c.run(3, "mosctl", &["block"]).status.success());
    c.wait_view(1, Duration::from_secs(10), |v| {
        v.nodes[2].status.contains(mosix_core::Status::BLOCK)
    })
    .unwrap();
    let child = c.job(1, &["sleep", "30"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = c.run(1, "migrate", &[&child.id().to_string(), "3"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node 3 is blocked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = finish_status(child);
}

#[test]
fn a_stopped_process_comes_home_stopped_and_goes_on_when_continued() {
    if !require_root("a_stopped_process_comes_home") {
        return;
    }
    let _g = serial();
    let (c, _) = cluster("tstop");
    let spin = "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done";
    // By SIGSTOP, and by SIGTSTP (as Ctrl-Z sends it), which the deputy catches otherwise.
    for stop in [
        nix::sys::signal::Signal::SIGSTOP,
        nix::sys::signal::Signal::SIGTSTP,
    ] {
        stopped_comes_home(&c, spin, stop);
    }
}

fn stopped_comes_home(c: &TestCluster, spin: &str, stop: nix::sys::signal::Signal) {
    use std::os::unix::process::CommandExt;
    // In a process group of its own, as a shell's job is: the kernel discards a SIGTSTP with
    // the default action sent to an orphaned process group, and whether the test's own group
    // is orphaned depends on how the test was started.
    let child = c
        .job(1, &["sh", "-c", &format!("{spin}; echo done $i")])
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = pid_of(&child);
    assert!(c.migrate(pid, "2").contains("node 2"));
    let signal = |s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), s).unwrap();
    // Stopped by job control while it is away, then asked home.
    signal(stop);
    // The deputy is always in a traced stop: what tells that the process stopped at node 2 is
    // its state there, which home hears with the remote's statistics.
    assert!(
        c.eventually(Duration::from_secs(10), || c
            .row(pid)
            .is_some_and(|r| r["state"] == "T")),
        "{:?}",
        c.row(pid)
    );
    // Coming home does not wait for a SIGCONT: it is bounded, whatever the answer.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| tx.send(c.try_migrate(pid, "home")).unwrap());
        let got = rx.recv_timeout(Duration::from_secs(20));
        if got.is_err() {
            // Let the stuck move finish so that the scope can end, then fail.
            signal(nix::sys::signal::Signal::SIGCONT);
        }
        let (ok, said) = got.unwrap_or_else(|_| panic!("migrate home after {stop} hung for 20 s"));
        assert!(ok && said.contains("is home"), "{said}");
    });
    let rows = c.mps(1, false);
    let row = rows.iter().find(|r| r["pid"] == pid).unwrap();
    assert_eq!(row["node"], 0, "{row}");
    assert_eq!(c.guests_on(2), 0);
    // Home, and still stopped: it does not run until it is continued.
    std::thread::sleep(Duration::from_millis(300));
    let state = state_of(pid);
    if state != 'T' {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let log = c.log(1);
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{stop}: state {state} at home, not stopped\nstat: {stat}\n{}\nlog (last lines first):\n{}",
            status
                .lines()
                .filter(|l| l.starts_with("Sig") || l.starts_with("Shd"))
                .collect::<Vec<_>>()
                .join("\n"),
            tail.join("\n")
        );
    }
    signal(nix::sys::signal::Signal::SIGCONT);
    let out = finish(child);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done 3000000\n");
    assert!(out.status.success(), "{:?}", out.status);
}

#[test]
fn processes_come_home_on_request_and_for_calls_only_home_can_run() {
    if !require_root("processes_come_home") {
        return;
    }
    let _g = serial();
    let (c, _) = cluster("thome");
    let spin = "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done";
    // migrate home: it continues at home and finishes.
    let child = c
        .job(1, &["sh", "-c", &format!("{spin}; echo done $i")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = pid_of(&child);
    assert!(c.migrate(pid, "2").contains("node 2"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.migrate(pid, "home").contains("is home"));
    let rows = c.mps(1, false);
    let row = rows.iter().find(|r| r["pid"] == pid).unwrap();
    assert_eq!(row["node"], 0);
    assert_eq!(row["nmigs"], 2);
    let out = finish(child);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done 3000000\n");
    assert!(out.status.success());
    assert_eq!(c.guests_on(2), 0);

    // A process blocked in a forwarded read (its input is at home) comes home at once when
    // asked, and the read goes on there.
    let mut child = c
        .job(1, &["head", "-n", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = pid_of(&child);
    assert!(c.migrate(pid, "2").contains("node 2"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.migrate(pid, "home").contains("is home"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"still reading\nnot this\n")
        .unwrap();
    let out = finish(child);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still reading\n");
    assert!(out.status.success());

    // The same while it waits at home for a child it had before it left (a wait4 that runs
    // inside the deputy): it comes home without waiting for the child, and waits there.
    let mut child = c
        .job(1, &["sh", "-c", "sleep 100 & echo $!; wait; echo waited"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let sleeper: i32 = String::from_utf8_lossy(&line).trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = pid_of(&child);
    assert!(c.migrate(pid, "2").contains("node 2"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.migrate(pid, "home").contains("is home"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "waited\n");
    assert!(child.wait().unwrap().success());

    // A fork on the remote brings it home first; the pipeline then runs natively.
    let child = c
        .job(
            1,
            &["sh", "-c", &format!("{spin}; echo piped | tr a-z A-Z")],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = pid_of(&child);
    assert!(c.migrate(pid, "2").contains("node 2"));
    let out = finish(child);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED\n");
    assert!(c.log(2).contains("went home"), "node 2 logs the return");

    // mosrun -2: the program starts on node 2; runon NODE is the same.
    let links = user_dir();
    let mosrun = user_tool("mosrun").to_string_lossy().into_owned();
    let out = c
        .user_command(
            1,
            &mosrun,
            &["--install-links", links.path().to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for argv in [
        vec![mosrun.clone(), "-2".into()],
        vec![
            links.path().join("runon").to_string_lossy().into_owned(),
            "2".into(),
        ],
    ] {
        let mut a: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        a.extend([
            "sh",
            "-c",
            "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done; echo far $i",
        ]);
        let child = c
            .user_command(1, &argv[0], &a)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = pid_of(&child);
        let t = Instant::now();
        let mut seen = false;
        while t.elapsed() < Duration::from_secs(3) {
            if c.mps(1, false)
                .iter()
                .any(|r| r["pid"] == pid && r["node"] == 2)
            {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(seen, "{argv:?}: never seen on node 2");
        let out = finish(child);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "far 3000000\n");
    }
}

#[test]
fn a_stop_signal_to_an_orphaned_group_does_away_what_it_does_at_home() {
    if !require_root("orphaned_stop") {
        return;
    }
    let _g = serial();
    let (c, _) = cluster("torphan");
    let mosrun = user_tool("mosrun");
    let mosrun = mosrun.to_str().unwrap();
    // A session of its own whose leader's parent is in another session: an orphaned group, where
    // the kernel discards a SIGTSTP with the default action, and runs a handler that catches it.
    let prog = r#"
import signal, sys, time
mode = sys.argv[1]
if mode == "catch":
    signal.signal(signal.SIGTSTP, lambda *a: print("caught", flush=True))
print("ready", flush=True)
t = time.time()
while time.time() - t < 3:
    pass
print("done", flush=True)
"#;
    for mode in ["default", "catch"] {
        let mut child = c
            .user_command(1, "setsid", &[mosrun, "/usr/bin/python3", "-c", prog, mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "ready\n");
        // setsid(1) is not a group leader here, so it does not fork: one process, one pid.
        let pid = child.id();
        assert!(c.migrate(pid, "2").contains("node 2"), "{mode}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTSTP,
        )
        .unwrap();
        // It does not stop (no SIGCONT comes): it finishes, having run its handler if it has one.
        let t = Instant::now();
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                panic!("{mode}: stopped away although home would have discarded the SIGTSTP");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        assert!(st.success(), "{mode}: {st:?} {rest:?}");
        let expect = if mode == "catch" {
            "caught\ndone\n"
        } else {
            "done\n"
        };
        assert_eq!(rest, expect, "{mode}");
    }
}
