//! Forwarded I/O benchmarks (needs root): on a 2-node virtual cluster with one CPU per node,
//! prints
//!
//! 1. sequential read and write throughput of a home file from a process on node 2 (every
//!    `read` and `write` is forwarded home; read-ahead and write-behind keep them from costing a
//!    round trip each) against the same process at home, in this run;
//! 2. `gzip -c` of a 200 MB home file into a home file, moved to node 2 at its start, against
//!    the same run at home (goal: ≤ 1.3× the wall time), with identical output.
//!
//! Run with `cargo bench -p mosix-tests --bench io` (as root). `MOSIX_BENCH_GZIP_MB=50` picks
//! the size of the gzip input, `MOSIX_BENCH_CPUS=2` the CPUs per node.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Instant;

use mosix_tests::{TestCluster, median, user_dir, user_tool};

/// Runs mosix-probe with `args` on node 1 as nobody, moved to node 2 at its start if
/// `remote`; the figure it prints.
fn probe(c: &TestCluster, remote: bool, args: &[&str]) -> f64 {
    let probe = user_tool("mosix-probe");
    let probe = probe.to_str().unwrap();
    let out = if remote {
        let mut a = vec!["-2", probe];
        a.extend_from_slice(args);
        c.job(1, &a).output().unwrap()
    } else {
        c.user_command(1, probe, args).output().unwrap()
    };
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs `gzip -c input > output` on node 1 as nobody, moved to node 2 at its start if
/// `remote`; the wall time in seconds.
fn gzip(c: &TestCluster, remote: bool, input: &str, output: &std::path::Path) -> f64 {
    let out = std::fs::File::create(output).unwrap();
    let mut cmd = if remote {
        c.job(1, &["-2", "gzip", "-c", input])
    } else {
        c.user_command(1, "gzip", &["-c", input])
    };
    let t = Instant::now();
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .status()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(st.success(), "gzip: {st}");
    secs
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the I/O benchmark needs root (it builds a virtual cluster)");
        std::process::exit(1);
    }
    let c = mosix_tests::bench_cluster("tiobench");
    // The jobs (nobody's) read the input and write their outputs here.
    let dir = user_dir();
    let mb: usize = std::env::var("MOSIX_BENCH_GZIP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // Text that compresses about as well as logs or source code do.
    let input = dir.path().join("input.txt");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let words = [
            "node", "load", "process", "migrate", "deputy", "remote", "page", "signal", "cluster",
            "memory", "socket", "gossip", "kernel", "file", "home", "away",
        ];
        let mut written = 0usize;
        while written < mb << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let line = format!(
                "{} {} {} {} at {}\n",
                words[(x & 15) as usize],
                words[((x >> 4) & 15) as usize],
                words[((x >> 8) & 15) as usize],
                x % 100_000,
                (x >> 20) % 1_000_000
            );
            w.write_all(line.as_bytes()).unwrap();
            written += line.len();
        }
    }
    let input_s = input.to_str().unwrap();

    println!("== Forwarded sequential I/O of a home file (MB/s, median of 3) ==");
    println!(
        "{:<36} {:>10} {:>10} {:>8}",
        "what", "at home", "node 2", "ratio"
    );
    for kib in ["64", "1024"] {
        let read = |remote| {
            median(
                (0..3)
                    .map(|_| probe(&c, remote, &["readfile", input_s, kib]))
                    .collect(),
            )
        };
        let (h, r) = (read(false), read(true));
        println!(
            "{:<36} {:>10.0} {:>10.0} {:>8.2}",
            format!("read {mb} MB, {kib} KiB per call"),
            h,
            r,
            r / h
        );
    }
    let out = dir.path().join("written");
    let out_s = out.to_str().unwrap();
    for kib in ["64", "1024"] {
        let mbs = mb.to_string();
        let write = |remote| {
            median(
                (0..3)
                    .map(|_| probe(&c, remote, &["writefile", out_s, &mbs, kib]))
                    .collect(),
            )
        };
        let (h, r) = (write(false), write(true));
        println!(
            "{:<36} {:>10.0} {:>10.0} {:>8.2}",
            format!("write {mb} MB, {kib} KiB per call"),
            h,
            r,
            r / h
        );
    }

    println!();
    println!("== gzip -c of a {mb} MB home file into a home file (wall s, median of 3) ==");
    let home_out = dir.path().join("home.gz");
    let remote_out = dir.path().join("remote.gz");
    let home = median(
        (0..3)
            .map(|_| gzip(&c, false, input_s, &home_out))
            .collect(),
    );
    let remote = median(
        (0..3)
            .map(|_| gzip(&c, true, input_s, &remote_out))
            .collect(),
    );
    assert!(
        std::fs::read(&home_out).unwrap() == std::fs::read(&remote_out).unwrap(),
        "the migrated gzip wrote something else"
    );
    println!("{:<36} {:>10}", "where", "s");
    println!("{:<36} {:>10.2}", "at home", home);
    println!("{:<36} {:>10.2}", "moved to node 2 at its start", remote);
    let ratio = remote / home;
    println!(
        "node 2 / home = {ratio:.2} (goal <= 1.3: {}); outputs identical",
        if ratio <= 1.3 { "met" } else { "MISSED" }
    );
}
