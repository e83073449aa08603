//! Bringing a process to its data (needs root): on a 3-node virtual cluster whose nodes each
//! have a private directory, a program started on node 1 reads a file of node 3 through
//! `/mfs/3` (`mosix-probe readfile`: 64 KiB reads, the whole file, `PASSES` times) and the time
//! from its start to its exit is measured, in these rows, one after the other, each round:
//!
//! 1. locked at node 1 (`mosrun -L`): every read goes through MFS to node 3 (the baseline);
//! 2. free (`mosrun`): the balancer sees where its time goes and moves it to node 3 by
//!    itself, where its reads run natively (DFSA); the row also says when it moved and where
//!    it ended;
//! 3. placed at node 3 from its start (`mosrun -3`): what knowing it beforehand would give;
//! 4. at node 3 itself, by its local path: the least it can take.
//!
//! Each row is printed in seconds (the median of the rounds) and as a ratio to the locked run.
//! Run with `cargo bench -p mosix-tests --bench data` (as root). `MOSIX_BENCH_DATA_MB` (default
//! 64) sets the file's size, `MOSIX_BENCH_DATA_PASSES` (default 150) how many times it is read,
//! `MOSIX_BENCH_DATA_ROUNDS` (default 3) the rounds.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mosix_tests::{TestCluster, env_or, median, user_tool};

const DATA: &str = "/run/mosix-vc-bench-data";

/// One run: the reader started on `node` (through `mosrun PLACE` if `place` is given), its
/// seconds from start to exit, and for a job of node 1 when it was first seen at node 3 and
/// where it was last seen (as `mps` at node 1 shows it, looked at every 100 ms).
fn run(c: &TestCluster, node: u16, place: Option<&[&str]>, path: &str, passes: &str) -> Run {
    let probe = user_tool("mosix-probe");
    let probe = probe.to_str().unwrap();
    let reader = [probe, "readfile", path, "64", passes];
    let mut cmd = match place {
        Some(p) => {
            let mut a = p.to_vec();
            a.extend(reader);
            c.job(node, &a)
        }
        None => c.user_command(node, reader[0], &reader[1..]),
    };
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut at3, mut last) = (None, None);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if place.is_some() {
            let now = c.node_of(child.id());
            if now == Some(3) && at3.is_none() {
                at3 = Some(start.elapsed().as_secs_f64());
            }
            last = now.or(last);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let secs = start.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "the reader on node {node} {place:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run { secs, at3, last }
}

struct Run {
    secs: f64,
    at3: Option<f64>,
    last: Option<u64>,
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the data benchmark needs root (it builds a virtual cluster)");
        std::process::exit(1);
    }
    let mb = env_or::<u64>("MOSIX_BENCH_DATA_MB", 64) as usize;
    let passes = env_or::<u64>("MOSIX_BENCH_DATA_PASSES", 150)
        .max(1)
        .to_string();
    let rounds = env_or::<u64>("MOSIX_BENCH_DATA_ROUNDS", 3).max(1);
    std::fs::create_dir_all(DATA).unwrap();
    let c = TestCluster::up("tdatabench", 3, |s| {
        s.private_dirs = vec![PathBuf::from(DATA)];
        s.mem_per_node = Some(4 << 30);
    });
    for n in 1..=3 {
        c.wait_view(n, Duration::from_secs(15), |v| v.nodes.iter().all(|x| x.up))
            .expect("the benchmark cluster comes up");
    }
    let big = c.private_path(3, Path::new(DATA)).join("big");
    std::fs::write(&big, mosix_tests::pseudo_random(mb << 20, 3)).unwrap();
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).unwrap();
    let through = format!("/mfs/3{DATA}/big");
    let local = format!("{DATA}/big");
    println!(
        "A reader started on node 1 of a {mb} MiB file of node 3 through /mfs/3, 64 KiB reads, \
         {passes} passes; seconds from start to exit (median of {rounds} rounds) and ratio to \
         the locked run"
    );
    let (mut locked, mut free, mut placed, mut at_home) = (vec![], vec![], vec![], vec![]);
    let mut moves = Vec::new();
    for _ in 0..rounds {
        locked.push(run(&c, 1, Some(&["-L"]), &through, &passes).secs);
        let f = run(&c, 1, Some(&[]), &through, &passes);
        free.push(f.secs);
        moves.push((f.at3, f.last));
        placed.push(run(&c, 1, Some(&["-3"]), &through, &passes).secs);
        at_home.push(run(&c, 3, None, &local, &passes).secs);
    }
    let base = median(locked.clone());
    let row = |name: &str, v: &[f64]| {
        let each: Vec<String> = v.iter().map(|s| format!("{s:.2}")).collect();
        let m = median(v.to_vec());
        println!(
            "{name:>34} {m:>8.2} s {:>6.2}x   (rounds: {})",
            m / base,
            each.join(" ")
        );
    };
    row("locked at node 1 (mosrun -L)", &locked);
    row("free to move (mosrun)", &free);
    row("placed at node 3 (mosrun -3)", &placed);
    row("at node 3 itself (local path)", &at_home);
    for (i, (at3, last)) in moves.iter().enumerate() {
        let last = last.map_or("not seen".to_owned(), |n| match n {
            0 => "at home".to_owned(),
            n => format!("at node {n}"),
        });
        match at3 {
            Some(t) => println!(
                "round {}: the free reader was at node 3 {t:.1} s after its start, last seen {last}",
                i + 1
            ),
            None => println!(
                "round {}: the free reader was never seen at node 3, last seen {last}",
                i + 1
            ),
        }
    }
    let log = c.log(1);
    let why = log
        .lines()
        .filter(|l| l.contains("balancing (data)"))
        .count();
    println!("node 1's log: {why} move(s) for their data (\"balancing (data)\")");
}
