//! The seed's PostMark table (needs root): on a 3-node virtual cluster whose nodes each have a
//! private directory, PostMark's workload (`mosix-probe postmark`: a pool of files of 500 B to
//! 9.77 KB, transactions of a read or an append then a creation or a deletion, every read and
//! write in calls of the block size) on node 3's directory, for block sizes 64 B … 16 KB, in
//! the seed's rows, all measured in this run:
//!
//! 1. local: the program runs on node 3 on its own directory;
//! 2. MFS with DFSA: started from node 1 and placed on node 3 (`mosrun -3`), on `/mfs/3/…`;
//! 3. MFS from another node: the program on node 1, on `/mfs/3/…` (a remote file system, the
//!    role NFS plays in the seed's table; the peer a user would install instead — sshfs, a
//!    user-space NFS — is not on this machine, and no row is made up for it);
//! 4. MFS without DFSA: started from node 1 and placed on node 2 (`mosrun -2`), on `/mfs/3/…`:
//!    every call is forwarded home and goes from there through MFS to node 3.
//!
//! Each row is printed in seconds and as a ratio to local. Run with `cargo bench -p mosix-tests
//! --bench files` (as root). `MOSIX_BENCH_PM_FILES` (default 100) and `MOSIX_BENCH_PM_TX`
//! (default 500) set the pool and the transactions; `MOSIX_BENCH_PM_SIZES=64,4096` the block
//! sizes.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mosix_tests::{TestCluster, user_tool};

const DATA: &str = "/run/mosix-vc-bench-files";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `mosix-probe postmark DIR …` as nobody on node `node` (with `mosrun PLACE` if given);
/// the seconds it reports.
fn postmark(c: &TestCluster, node: u16, place: Option<&str>, dir: &str, args: &[String]) -> f64 {
    let probe = user_tool("mosix-probe");
    let probe = probe.to_str().unwrap();
    let mut a: Vec<&str> = Vec::new();
    if let Some(p) = place {
        a.push(p);
    }
    a.extend([probe, "postmark", dir]);
    a.extend(args.iter().map(String::as_str));
    let out = match place {
        Some(_) => c.job(node, &a).output().unwrap(),
        None => c.user_command(node, a[0], &a[1..]).output().unwrap(),
    };
    assert!(
        out.status.success(),
        "postmark {dir} on node {node} {place:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the file benchmark needs root (it builds a virtual cluster)");
        std::process::exit(1);
    }
    std::fs::create_dir_all(DATA).unwrap();
    let c = TestCluster::up("tfilebench", 3, |s| {
        s.private_dirs = vec![PathBuf::from(DATA)];
        s.mem_per_node = Some(4 << 30);
    });
    for n in 1..=3 {
        c.wait_view(n, Duration::from_secs(15), |v| v.nodes.iter().all(|x| x.up))
            .expect("the benchmark cluster comes up");
    }
    let d3 = c.private_path(3, Path::new(DATA));
    for sub in ["local", "dfsa", "mfs", "nodfsa"] {
        let d = d3.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let files = env("MOSIX_BENCH_PM_FILES", 100);
    let tx = env("MOSIX_BENCH_PM_TX", 500);
    let sizes: Vec<u64> = std::env::var("MOSIX_BENCH_PM_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 512, 1024, 2048, 4096, 8192, 16384]);
    println!(
        "PostMark: {files} files of 500 B..9.77 KB, {tx} transactions; seconds (ratio to local)"
    );
    println!(
        "{:>8} {:>16} {:>16} {:>22} {:>22}",
        "block", "local (node 3)", "MFS+DFSA", "MFS from node 1", "MFS without DFSA"
    );
    let m = |sub: &str| format!("/mfs/3{DATA}/{sub}");
    for b in sizes {
        let args = [files.to_string(), tx.to_string(), b.to_string()];
        let local = postmark(&c, 3, None, &format!("{DATA}/local"), &args);
        let dfsa = postmark(&c, 1, Some("-3"), &m("dfsa"), &args);
        let mfs = postmark(&c, 1, None, &m("mfs"), &args);
        let nodfsa = postmark(&c, 1, Some("-2"), &m("nodfsa"), &args);
        let cell = |s: f64| format!("{s:.3} ({:.2}x)", s / local);
        println!(
            "{:>8} {:>16.3} {:>16} {:>22} {:>22}",
            b,
            local,
            cell(dfsa),
            cell(mfs),
            cell(nodfsa)
        );
    }
    let f = c.view(3).unwrap().files;
    println!(
        "node 3: MFS served {} requests, DFSA opened {} files and ran {} calls",
        f.mfs_served, f.dfsa_opens, f.dfsa_calls
    );
    println!("remote file system peer (sshfs, user-space NFS): not installed here, not measured");
}
