//! Live queuing: `mosrun -q` jobs wait until the cluster has room, start in priority order,
//! and `mosq` shows and changes the queue; `mosrun -S` runs a file of commands N at a time.

use std::time::{Duration, Instant};

use mosix_tests::{TestCluster, require_root, serial, user_tool};

/// The priorities of the queued jobs in the order node 1's log says they started.
fn start_order(c: &TestCluster) -> Vec<(u32, u16)> {
    c.log(1)
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("queue: process ")?.1;
            let (pid, rest) = rest.split_once(" starts (priority ")?;
            let pri = rest.split_once(',')?.0;
            Some((pid.parse().ok()?, pri.parse().ok()?))
        })
        .collect()
}

/// How many of node 1's MOSIX processes run (queued ones are not MOSIX processes yet).
fn running(c: &TestCluster) -> usize {
    c.mps(1, false).len()
}

#[test]
fn queued_jobs_run_four_at_a_time_on_four_cpus_in_priority_order_and_mosq_changes_them() {
    if !require_root("queue") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tqueue", 4, |s| s.cpus_per_node = Some(0.4));
    c.wait_all_up();
    let probe = user_tool("mosix-probe");
    let probe = probe.to_str().unwrap();
    let job = |pri: &str, work: &str| {
        c.job(1, &[&format!("-q{pri}"), "-c", probe, "work", work])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Four blockers fill the four CPUs.
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(job("50", "500000000"));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        c.eventually(Duration::from_secs(15), || running(&c) == 4),
        "the blockers did not start: {}\n{}\n{}",
        c.said(1, "mosq", &[]).1,
        c.said(1, "mon", &["--once"]).1,
        c.log(1)
    );
    // Eight more, priorities out of submission order: they wait.
    let pris = ["30", "10", "40", "20", "30", "10", "60", "50"];
    let mut queued = Vec::new();
    for p in pris {
        queued.push(job(p, "200000000"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more from node 2, last by priority: node 1 lists it, asked over the link. Node 2
    // hears of node 1's queue by the gossip (a second or two): before that it may rightly
    // start its job on a CPU it sees free, so it is submitted once node 2 knows.
    let knows = c.eventually(Duration::from_secs(15), || {
        let (_, said) = c.said(2, "mosq", &["--here", "--json"]);
        let v: serde_json::Value = serde_json::from_str(said.trim()).unwrap_or_default();
        v["others"].as_array().is_some_and(|o| {
            o.iter()
                .any(|x| x[0] == 1 && x[1]["queued"].as_u64() >= Some(1))
        })
    });
    assert!(knows, "node 2 did not hear of node 1's queue\n{}", c.log(2));
    let other = c
        .job(2, &["-q70", "-c", probe, "work", "200000000"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let other_pid = u64::from(other.id());
    let listed_there = |v: &serde_json::Value| {
        v["cluster"].as_array().is_some_and(|q| {
            q.iter().any(|n| {
                n["node"] == 2
                    && n["jobs"]
                        .as_array()
                        .is_some_and(|j| j.iter().any(|j| j["pid"] == other_pid))
            })
        })
    };
    // Queued at node 2 first (its own view), then node 1 learns by the gossip that node 2
    // has a queue and asks it.
    let mut here = serde_json::Value::Null;
    let queued_there = c.eventually(Duration::from_secs(15), || {
        let (ok, said) = c.said(2, "mosq", &["--here", "--json"]);
        here = serde_json::from_str(said.trim()).unwrap_or_default();
        ok && here["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["pid"] == other_pid))
    });
    assert!(
        queued_there,
        "node 2 did not queue its job {other_pid}: {here}\n{}",
        c.log(2)
    );
    let mut v = serde_json::Value::Null;
    let seen = c.eventually(Duration::from_secs(20), || {
        let (ok, said) = c.said(1, "mosq", &["--json"]);
        v = serde_json::from_str(said.trim()).unwrap_or_default();
        ok && listed_there(&v)
    });
    assert!(
        seen,
        "node 1 does not list node 2's job: {v}\nnode 2: {}\n{}",
        c.said(2, "mosq", &["--here", "--json"]).1,
        c.said(1, "mon", &["--once"]).1
    );
    let (ok, text) = c.said(1, "mosq", &[]);
    assert!(
        ok && text.lines().any(|l| l
            .split_whitespace()
            .take(2)
            .eq(["2", &other_pid.to_string()])),
        "{text}"
    );
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 8, "{v}");
    // Listed first first: priority order.
    let listed: Vec<u64> = jobs
        .iter()
        .map(|j| j["priority"].as_u64().unwrap())
        .collect();
    assert!(listed.windows(2).all(|w| w[0] <= w[1]), "{listed:?}");
    // The last one (60) goes to the front; the 50 is deleted.
    let last = jobs.last().unwrap()["pid"].as_u64().unwrap().to_string();
    let (ok, said) = c.said(1, "mosq", &["pri", &last, "1"]);
    assert!(ok, "{said}");
    let gone = jobs.iter().find(|j| j["priority"] == 50).unwrap()["pid"]
        .as_u64()
        .unwrap();
    let (ok, said) = c.said(1, "mosq", &["delete", &gone.to_string()]);
    assert!(ok, "{said}");
    // Never more than four at once, until all are done.
    let start = Instant::now();
    let mut most = 0;
    while start.elapsed() < Duration::from_secs(120) {
        let r = running(&c);
        most = most.max(r);
        let (_, q) = c.said(1, "mosq", &["--json"]);
        let left = serde_json::from_str::<serde_json::Value>(q.trim())
            .map(|v| v["jobs"].as_array().map_or(0, Vec::len))
            .unwrap_or(0);
        if r == 0 && left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(most <= 4, "{most} ran at once\n{}", c.log(1));
    // Every job ended right; the deleted one said why.
    let mut deleted = 0;
    let o = other.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for j in all.into_iter().chain(queued) {
        let pid = j.id();
        let o = j.wait_with_output().unwrap();
        if u64::from(pid) == gone {
            assert!(!o.status.success());
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains("deleted from the queue"), "{e}");
            deleted += 1;
        } else {
            assert!(
                o.status.success(),
                "{:?}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    assert_eq!(deleted, 1);
    // The seven left started by priority: 1 (the 60 moved up), 10, 10, 20, 30, 30, 40.
    let order: Vec<u16> = start_order(&c).into_iter().skip(4).map(|x| x.1).collect();
    assert_eq!(order, vec![1, 10, 10, 20, 30, 30, 40], "{}", c.log(1));
}

#[test]
fn a_file_of_commands_runs_n_at_a_time_and_names_the_lines_that_failed() {
    if !require_root("batch") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tbatch", 2, |_| {});
    c.wait_all_up();
    let dir = mosix_tests::user_dir();
    let file = dir.path().join("jobs.txt");
    let mark = dir.path().join("running");
    // Each command counts itself in and out of a directory, so the most at once shows.
    let mut text = String::from("# six jobs, one fails\n");
    for k in 0..6 {
        let fail = if k == 3 { "; exit 3" } else { "" };
        text.push_str(&format!(
            "mkdir -p {m}; touch {m}/{k}; ls {m} | wc -l >> {m}.seen; sleep 1; rm {m}/{k}{fail}\n",
            m = mark.display()
        ));
    }
    std::fs::write(&file, text).unwrap();
    let o = c.job(1, &["-S2", file.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("jobs.txt:5:") && err.contains("exit status 3"),
        "{err}"
    );
    assert!(err.contains("1 command(s) failed"), "{err}");
    let seen = std::fs::read_to_string(format!("{}.seen", mark.display())).unwrap();
    let most = seen
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .max();
    assert_eq!(most, Some(2), "{seen}");
}
