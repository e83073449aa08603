//! Checkpoint and restore benchmark (needs root): on a 2-node virtual cluster, for processes
//! holding 64 MiB to 1 GiB of written memory (`mosix-probe mem N`), prints
//!
//! * ours: `migrate PID checkpoint` on node 1 — how long the process was stopped (as the
//!   service reports it) and the whole request, with the file's size; then, the process killed,
//!   `mosrun -R FILE` on node 2 until the resumed process has checked every page of its memory
//!   and exited (the probe exits 3 if a page changed);
//! * the floors, measured in the same run and directory: a plain dump (one process writing the
//!   same amount from its memory to a file, synced) and `cp` of such a file (from the page
//!   cache, synced).
//!
//! CRIU is not compared: the distribution's CRIU 3.17 does not run on this kernel, and nothing
//! is built from outside the registries. A printed table, not a timed test.
//!
//! `sudo cargo bench -p mosix-tests --bench checkpoint`; `MOSIX_BENCH_SIZES=64,256,1024` (MiB).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::Stdio;
use std::time::Instant;

use mosix_tests::{bench_cluster, user_dir, user_tool};

fn mb_s(bytes: u64, ms: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / (ms / 1000.0)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the checkpoint benchmark needs root (it builds a virtual cluster)");
        std::process::exit(1);
    }
    let sizes: Vec<u64> = std::env::var("MOSIX_BENCH_SIZES")
        .unwrap_or_else(|_| "64,256,1024".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let c = bench_cluster("tckbench");
    let dir = user_dir();
    let probe = user_tool("mosix-probe");
    println!(
        "{:>6} | {:>10} {:>9} {:>8} | {:>10} {:>8} | {:>9} {:>8} | {:>9} {:>8}",
        "MiB",
        "stopped ms",
        "ckpt ms",
        "MB/s",
        "restore ms",
        "MB/s",
        "dump ms",
        "MB/s",
        "cp ms",
        "MB/s"
    );
    for mib in sizes {
        let n = mib.to_string();
        let base = dir.path().join(format!("ck{mib}"));
        let mut job = c
            .job(
                1,
                &[
                    "-L",
                    "-C",
                    base.to_str().unwrap(),
                    probe.to_str().unwrap(),
                    "mem",
                    &n,
                ],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(job.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let pid = job.id().to_string();
        let t = Instant::now();
        let (ok, said) = c.said(1, "migrate", &[&pid, "checkpoint", "--json"]);
        let ckpt_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(ok, "{said}");
        let v: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
        let stopped = v["stopped_ms"].as_u64().unwrap();
        let bytes = v["bytes"].as_u64().unwrap();
        let file = v["checkpoint"].as_str().unwrap().to_owned();
        job.kill().unwrap();
        let _ = job.wait();

        let t = Instant::now();
        let mut resumed = c
            .user_command(2, "mosrun", &["-R", &file])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        resumed.stdin.take().unwrap().write_all(b"\n").unwrap();
        let o = resumed.wait_with_output().unwrap();
        let restore_ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(
            o.status.success(),
            "the resumed process: {} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );

        // The floors: the same amount from memory to a file, and a copy of that file.
        let size = (mib << 20) as usize;
        let mem = vec![0x5au8; size];
        let dump = dir.path().join(format!("dump{mib}"));
        let t = Instant::now();
        let mut f = std::fs::File::create(&dump).unwrap();
        f.write_all(&mem).unwrap();
        f.sync_all().unwrap();
        let dump_ms = t.elapsed().as_secs_f64() * 1000.0;
        drop(mem);
        let copy = dir.path().join(format!("copy{mib}"));
        let t = Instant::now();
        let st = std::process::Command::new("cp")
            .arg(&dump)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::File::open(&copy).unwrap().sync_all().unwrap();
        let cp_ms = t.elapsed().as_secs_f64() * 1000.0;
        for p in [&dump, &copy, &std::path::PathBuf::from(&file)] {
            let _ = std::fs::remove_file(p);
        }
        let b = mib << 20;
        println!(
            "{mib:>6} | {stopped:>10} {ckpt_ms:>9.0} {:>8.0} | {restore_ms:>10.0} {:>8.0} | {dump_ms:>9.0} {:>8.0} | {cp_ms:>9.0} {:>8.0}",
            mb_s(bytes, ckpt_ms),
            mb_s(b, restore_ms),
            mb_s(b, dump_ms),
            mb_s(b, cp_ms)
        );
    }
}
