//! The tools that see the whole cluster or one process through time, on 4 nodes: `mps -A`
//! lists every MOSIX process of the cluster with its home and where it runs, `mostimeof` tells
//! the CPU time a process used wherever it ran, `migrate PID lock|unlock` changes a running
//! process's lock, and `moskillall` signals a user's processes on every node — and no one
//! else's.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::Duration;

use mosix_tests::{TestCluster, require_root, serial, user_tool};

/// `mosix-probe mem 8` started as nobody at node `home` with `mosrun ARGS`; returns once it
/// says it is ready.
fn holder(c: &TestCluster, home: u16, args: &[&str]) -> Child {
    holder_of(c, home, args, 8)
}

/// [`holder`] of `mib` MiB.
fn holder_of(c: &TestCluster, home: u16, args: &[&str], mib: u32) -> Child {
    let probe = user_tool("mosix-probe");
    let mut all = args.to_vec();
    let mib = mib.to_string();
    all.extend([probe.to_str().unwrap(), "mem", &mib]);
    let mut child = c
        .job(home, &all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn mps_a_mostimeof_lock_and_moskillall_across_the_cluster() {
    if !require_root("tools::mps_a_mostimeof_lock_and_moskillall") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tools", 4, |_| {});
    c.wait_all_up();
    // A: home 1, runs on node 3. B: home 2, stays there (locked at its start).
    let mut a = holder(&c, 1, &["-3"]);
    let mut b = holder(&c, 2, &["-L"]);
    let (pa, pb) = (a.id(), b.id());
    assert!(c.eventually(Duration::from_secs(10), || c.node_of(pa) == Some(3)));

    // mps -A from node 4, which is home to neither.
    let rows = json(
        &c.user_command(4, "mps", &["-A", "a", "--json"])
            .output()
            .unwrap(),
    );
    let find = |pid: u32, home: u64| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["pid"] == pid && r["home"] == home)
            .unwrap_or_else(|| panic!("pid {pid} of node {home} not in {rows}"))
            .clone()
    };
    let ra = find(pa, 1);
    assert_eq!(ra["node"], 3, "{ra}");
    assert_eq!(ra["user"], "nobody", "{ra}");
    let rb = find(pb, 2);
    assert_eq!(rb["node"], 2, "{rb}");
    assert_eq!(rb["lock"], true, "{rb}");
    let text = c.user_command(4, "mps", &["-A", "a"]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("HOME"), "{text}");
    // mtop -A: the same, FROM being the home of the processes of other nodes.
    let out = c
        .user_command(4, "mtop", &["-A", "--once", "--json", "-d", "0.3"])
        .output()
        .unwrap();
    let top = json(&out);
    let ta = top
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == pa && r["from"] == 1)
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(ta["node"], 3, "{ta}");
    assert_eq!(ta["user"], "nobody", "{ta}");

    // A node that does not answer (its service just died; the others do not count it down
    // yet) is named, and the others are still listed.
    c.cluster.stop_node(4, true).unwrap();
    let out = c.user_command(1, "mps", &["-A", "a"]).output().unwrap();
    let (said, listed) = (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("node 4 did not answer"), "{said}");
    assert!(
        listed.contains(&format!(" {pa} ")) && listed.contains(&format!(" {pb} ")),
        "{listed}"
    );
    c.restart(4);

    // mostimeof: A's time, measured where it runs; an unknown pid is named.
    let t = json(&c.run(1, "mostimeof", &["--json", &pa.to_string()]));
    assert_eq!(t[0]["pid"], pa);
    assert!(t[0]["cpu_s"].as_f64().unwrap() >= 0.0, "{t}");
    let bad = c.run(1, "mostimeof", &["999999"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("999999 is not a MOSIX process"));

    // lock / unlock of a running process, as mps shows it.
    let locked = |pid: u32| c.row(pid).unwrap()["lock"].as_bool().unwrap();
    // Placed by `mosrun -3`, it starts locked there.
    assert!(locked(pa));
    let out = c.run(1, "migrate", &[&pa.to_string(), "unlock"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!locked(pa));
    let out = c.run(1, "migrate", &[&pa.to_string(), "lock"]);
    assert!(out.status.success(), "{out:?}");
    assert!(locked(pa));
    let out = c.run(1, "migrate", &["1", "lock"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // moskillall: nobody may not signal root's processes; its own go, on every node.
    let out = c
        .user_command(3, "moskillall", &["-u", "root"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    let out = c
        .user_command(3, "moskillall", &["-9", "--json"])
        .output()
        .unwrap();
    let sent = json(&out);
    let total: u64 = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 2, "{sent}");
    for (child, what) in [(&mut a, "A"), (&mut b, "B")] {
        let st = mosix_tests::ends_within(
            std::mem::replace(child, std::process::Command::new("true").spawn().unwrap()),
            Duration::from_secs(10),
            what,
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(9), "{what}: {st:?}");
    }
    let _ = (a.wait(), b.wait());
}

/// The `/proc`-style tree at RUNDIR/hpc: `echo 3 > PID/goto` moves a process there and
/// `PID/where` says so; `lock` as `migrate lock`; node files as `mon` shows them; `admin/`
/// writable by root only, with the effect of mosctl.
#[test]
fn the_hpc_tree_moves_processes_and_shows_nodes() {
    if !require_root("tools::the_hpc_tree_moves_processes_and_shows_nodes") {
        return;
    }
    let _g = serial();
    // Moves are plain (memory sent while stopped), as below 256 MiB by default.
    let c = TestCluster::up("hpc", 3, |s| {
        s.tunables = "[moves]\nlive_above_mib = 0\n".into()
    });
    c.wait_all_up();
    let hpc = c.paths(1).hpc();
    let hpc = hpc.to_str().unwrap().to_owned();
    let sh = |user: bool, script: String| {
        let out = if user {
            c.user_command(1, "sh", &["-c", &script]).output().unwrap()
        } else {
            c.command(1, "sh", &["-c", &script]).output().unwrap()
        };
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut a = holder(&c, 1, &["-l"]);
    let pa = a.id();
    let (ok, listed, err) = sh(true, format!("ls {hpc}"));
    assert!(ok, "{err}");
    for want in ["admin", "nodes", &pa.to_string()] {
        assert!(listed.lines().any(|l| l == want), "{listed}");
    }
    assert_eq!(sh(true, format!("cat {hpc}/{pa}/where")).1, "0");
    // The owner moves it by writing a node number.
    let (ok, _, err) = sh(true, format!("echo 3 > {hpc}/{pa}/goto"));
    assert!(ok, "{err}\n{}", c.log(1));
    assert!(c.eventually(Duration::from_secs(10), || {
        sh(true, format!("cat {hpc}/{pa}/where")).1 == "3"
    }));
    assert_eq!(c.node_of(pa), Some(3));
    assert_eq!(sh(true, format!("cat {hpc}/{pa}/nmigs")).1, "1");
    // lock, as migrate PID lock.
    assert_eq!(sh(true, format!("cat {hpc}/{pa}/lock")).1, "0");
    let (ok, _, err) = sh(true, format!("echo 1 > {hpc}/{pa}/lock"));
    assert!(ok, "{err}");
    assert_eq!(c.row(pa).unwrap()["lock"], true);
    // A node number that is not a node is refused; -1 balances, 0 brings it home.
    assert!(!sh(true, format!("echo x > {hpc}/{pa}/goto")).0);
    let (ok, _, err) = sh(true, format!("echo 0 > {hpc}/{pa}/goto"));
    assert!(ok, "{err}");
    assert!(c.eventually(Duration::from_secs(10), || c.node_of(pa) == Some(0)));
    // Node files.
    let cpus = sh(true, format!("cat {hpc}/nodes/2/cpus")).1;
    assert!(cpus.parse::<u32>().unwrap() >= 1, "{cpus}");
    let status = sh(true, format!("cat {hpc}/nodes/2/status")).1;
    assert_eq!(status.parse::<u32>().unwrap() & 2, 2, "node 2 up: {status}");
    // admin: read by anyone, written by root only.
    assert_eq!(sh(true, format!("cat {hpc}/admin/block")).1, "0");
    // (coreutils' echo names the error; the shell's says "I/O error" for any)
    let (ok, _, err) = sh(true, format!("/bin/echo 1 > {hpc}/admin/block"));
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    let (ok, _, err) = sh(false, format!("echo 1 > {hpc}/admin/block"));
    assert!(ok, "{err}");
    assert_eq!(sh(true, format!("cat {hpc}/admin/block")).1, "1");
    let (ok, said) = c.said(1, "mosctl", &["status"]);
    assert!(ok && said.contains("block: yes"), "{said}");
    let (ok, _, err) = sh(false, format!("echo 0 > {hpc}/admin/block"));
    assert!(ok, "{err}");
    let _ = a.kill();
    let _ = a.wait();

    // migrate --wait on a terminal shows how much of the memory is sent; piped, nothing.
    let mut big = holder_of(&c, 1, &["-l"], 1536);
    let pb = big.id();
    let line = format!("migrate {pb} 2 --wait");
    let (ok, shown, err) = sh(true, format!("script -qec '{line}' /dev/null"));
    assert!(ok, "{shown}\n{err}\n{}", c.log(1));
    assert!(shown.contains("is on node 2"), "{shown}");
    // "to node 2: SENT/TOTAL MiB sent (P %)", redrawn as it goes.
    let counts: Vec<(u64, u64)> = shown
        .split("to node 2: ")
        .skip(1)
        .filter_map(|rest| {
            let (counts, _) = rest.split_once(" MiB sent")?;
            let (s, t) = counts.split_once('/')?;
            Some((s.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    assert!(
        !counts.is_empty(),
        "no bytes shown while it moved:\n{shown}"
    );
    assert!(
        counts.iter().all(|&(s, t)| s <= t && t >= 1536),
        "{counts:?}"
    );
    let out = c
        .user_command(1, "migrate", &[&pb.to_string(), "home", "--wait"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let _ = big.kill();
    let _ = big.wait();
}
