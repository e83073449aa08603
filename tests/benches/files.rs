//! The seed's PostMark table (needs root): on a 3-node virtual cluster whose nodes each have a
//! private directory, PostMark's workload (`mosix-probe postmark`: a pool of files of 500 B to
//! 9.77 KB, transactions of a read or an append then a creation or a deletion, every read and
//! write in calls of the block size) on node 3's directory, for block sizes 64 B … 16 KB, in
//! the seed's rows, all measured in this run:
//!
//! 1. local: the program runs on node 3 on the directory, by its local path;
//! 2. MFS with DFSA: started from node 1 and placed on node 3, on `/mfs/3/…` (`-i`: the same
//!    directory as local; the others each have one of their own): declared
//!    I/O-bound (`mosrun -3 -i`: its reads and writes run natively there, no notification),
//!    and not (`mosrun -3`: every call on its files there is a notification);
//! 3. MFS from another node: the program on node 1, on `/mfs/3/…`;
//! 4. sshfs from another node: the remote file system a user would install instead (the role
//!    NFS plays in the seed's table; this kernel has no NFS client): an `sshd` in node 3's
//!    namespaces serves the directory over SFTP, `sshfs` (default options) mounts it in node
//!    1's mount namespace, the program runs on node 1 on that mount. Needs `sshfs` and
//!    `openssh-server` (`apt install sshfs openssh-server`); without them the column says so;
//! 5. MFS without DFSA: started from node 1 and placed on node 2 (`mosrun -2`), on `/mfs/3/…`:
//!    every call is forwarded home and goes from there through MFS to node 3.
//!
//! Each row is printed in seconds and as a ratio to local. Local and MFS+DFSA `-i`, the two the
//! goal compares, run one after the other `MOSIX_BENCH_PM_ROUNDS` times (default 9; each first
//! in turn, the disk synced before each run; their medians, and below the table each round's
//! ratio and their median): a run here lasts a fraction of a second, and this machine's noise
//! moves single runs by tens of percent. Run with `cargo bench -p
//! mosix-tests --bench files` (as root). `MOSIX_BENCH_PM_FILES` (default 200) and
//! `MOSIX_BENCH_PM_TX` (default 2000) set the pool and the transactions;
//! `MOSIX_BENCH_PM_SIZES=64,4096` the block sizes; `MOSIX_BENCH_PM_GOAL=1` runs only the
//! two columns the goal compares (with many rounds: `MOSIX_BENCH_PM_ROUNDS=41`), and prints
//! the geometric mean of each size's ratios with its 95% interval, and of all sizes'.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use mosix_tests::{TestCluster, env_or, median, user_tool};

const DATA: &str = "/run/mosix-vc-bench-files";

/// Runs `mosix-probe postmark DIR …` as nobody on node `node` (with `mosrun PLACE` if given);
/// the seconds it reports.
fn postmark(c: &TestCluster, node: u16, place: &[&str], dir: &str, args: &[String]) -> f64 {
    let probe = user_tool("mosix-probe");
    let probe = probe.to_str().unwrap();
    let mut a: Vec<&str> = place.to_vec();
    a.extend([probe, "postmark", dir]);
    a.extend(args.iter().map(String::as_str));
    let out = if place.is_empty() {
        c.user_command(node, a[0], &a[1..]).output().unwrap()
    } else {
        c.job(node, &a).output().unwrap()
    };
    assert!(
        out.status.success(),
        "postmark {dir} on node {node} {place:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The geometric mean of ratios and its 95% interval (the mean of their logarithms ± 1.96
/// standard errors), as `G [LO, HI]`: paired rounds' ratios, whose noise is a factor.
fn geomean(r: &[f64]) -> String {
    let logs: Vec<f64> = r.iter().map(|x| x.ln()).collect();
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let half = 1.96 * (var / n).sqrt();
    format!(
        "{:.3} [{:.3}, {:.3}]",
        mean.exp(),
        (mean - half).exp(),
        (mean + half).exp()
    )
}

/// The peer: an `sshd` in node 3 serving its directory, mounted with `sshfs` on node 1.
/// Unmounted and stopped when dropped.
struct Sshfs<'a> {
    c: &'a TestCluster,
    mount: PathBuf,
    sshd: Child,
    _keys: tempfile::TempDir,
}

impl Drop for Sshfs<'_> {
    fn drop(&mut self) {
        let m = self.mount.to_str().unwrap();
        let _ = self.c.command(1, "umount", &["-l", m]).output();
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

fn run(c: &mut Command) -> bool {
    c.output().is_ok_and(|o| o.status.success())
}

/// Starts the peer, or says why it cannot.
fn sshfs<'a>(c: &'a TestCluster, dir: &Path) -> Result<Sshfs<'a>, String> {
    if !Path::new("/usr/sbin/sshd").exists() || !run(Command::new("sshfs").arg("--version")) {
        return Err("sshfs or openssh-server not installed".into());
    }
    let keys = tempfile::Builder::new()
        .prefix("mosix-bench-ssh")
        .tempdir_in("/run")
        .map_err(|e| e.to_string())?;
    let k = keys.path().to_owned();
    for name in ["host", "user"] {
        let f = k.join(name);
        let ok = run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&f));
        if !ok {
            return Err("ssh-keygen failed".into());
        }
    }
    std::fs::copy(k.join("user.pub"), k.join("authorized_keys")).map_err(|e| e.to_string())?;
    let out = c
        .command(3, "hostname", &["-I"])
        .output()
        .map_err(|e| e.to_string())?;
    let ip = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .ok_or("node 3 has no address")?
        .to_owned();
    let conf = k.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port 2222\nListenAddress {ip}\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n\
             StrictModes no\nPidFile none\nSubsystem sftp internal-sftp\n",
            host = k.join("host").display(),
            keys = k.join("authorized_keys").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::create_dir_all("/run/sshd").map_err(|e| e.to_string())?;
    let sshd = c
        .command(
            3,
            "/usr/sbin/sshd",
            &["-D", "-e", "-f", conf.to_str().unwrap()],
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mount = PathBuf::from("/run/mosix-vc-bench-sshfs");
    std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
    let peer = Sshfs {
        c,
        mount,
        sshd,
        _keys: keys,
    };
    let opts = format!(
        "IdentityFile={},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,allow_other,port=2222",
        k.join("user").display()
    );
    let remote = format!("root@{ip}:{}", dir.display());
    let m = peer.mount.to_str().unwrap().to_owned();
    for _ in 0..20 {
        if run(&mut c.command(1, "sshfs", &["-o", &opts, &remote, &m])) {
            return Ok(peer);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err("sshfs could not mount node 3's directory".into())
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
    for sub in ["native", "dfsa", "mfs", "sshfs", "nodfsa"] {
        let d = d3.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let files = env_or::<u64>("MOSIX_BENCH_PM_FILES", 200);
    let tx = env_or::<u64>("MOSIX_BENCH_PM_TX", 2000);
    let rounds = env_or::<u64>("MOSIX_BENCH_PM_ROUNDS", 9).max(1);
    let sizes: Vec<u64> = std::env::var("MOSIX_BENCH_PM_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 512, 1024, 2048, 4096, 8192, 16384]);
    println!(
        "PostMark: {files} files of 500 B..9.77 KB, {tx} transactions; seconds (ratio to local); \
         local and MFS+DFSA -i: the median of {rounds} alternate runs"
    );
    // Only the two columns the goal compares (many rounds of them in little time).
    let goal = env_or::<u64>("MOSIX_BENCH_PM_GOAL", 0) != 0;
    let peer = if goal {
        Err("not run (MOSIX_BENCH_PM_GOAL)".to_owned())
    } else {
        sshfs(&c, &Path::new(DATA).join("sshfs"))
    };
    if let Err(why) = &peer {
        println!("sshfs: {why}; its column is empty");
    }
    println!(
        "{:>8} {:>16} {:>16} {:>16} {:>18} {:>18} {:>18}",
        "block",
        "local (node 3)",
        "MFS+DFSA -i",
        "MFS+DFSA",
        "MFS from node 1",
        "sshfs from node 1",
        "MFS without DFSA"
    );
    let m = |sub: &str| format!("/mfs/3{DATA}/{sub}");
    let mut spreads = Vec::new();
    for b in sizes {
        let args = [files.to_string(), tx.to_string(), b.to_string()];
        // The two columns the goal compares, alternately, `rounds` times (their medians), in
        // the same directory: ext4 finds room for new files at a cost that grows with the
        // deletions a directory has seen (`recently_deleted`, `find_get_block_common`), which
        // made a local run in a directory of its own up to a fifth faster than one here.
        // Which goes first changes every round (what one leaves to the disk's journal and
        // writeback is then paid as often by either), and the disk is synced before each.
        let (mut locals, mut natives) = (Vec::new(), Vec::new());
        let local = || postmark(&c, 3, &[], &format!("{DATA}/native"), &args);
        let native = || postmark(&c, 1, &["-3", "-i"], &m("native"), &args);
        for r in 0..rounds {
            nix::unistd::sync();
            if r % 2 == 0 {
                locals.push(local());
                nix::unistd::sync();
                natives.push(native());
            } else {
                natives.push(native());
                nix::unistd::sync();
                locals.push(local());
            }
        }
        let ratios: Vec<f64> = natives.iter().zip(&locals).map(|(n, l)| n / l).collect();
        spreads.push((b, ratios));
        let (local, native) = (median(locals), median(natives));
        let other = |place: &[&str], dir: &str| (!goal).then(|| postmark(&c, 1, place, dir, &args));
        let dfsa = other(&["-3"], &m("dfsa"));
        let mfs = other(&[], &m("mfs"));
        let ssh = peer
            .as_ref()
            .ok()
            .map(|p| postmark(&c, 1, &[], p.mount.to_str().unwrap(), &args));
        let nodfsa = other(&["-2"], &m("nodfsa"));
        let cell = |s: f64| format!("{s:.3} ({:.2}x)", s / local);
        let cell_of = |s: Option<f64>| s.map_or_else(|| "-".into(), cell);
        println!(
            "{:>8} {:>16.3} {:>16} {:>16} {:>18} {:>18} {:>18}",
            b,
            local,
            cell(native),
            cell_of(dfsa),
            cell_of(mfs),
            cell_of(ssh),
            cell_of(nodfsa)
        );
    }
    println!(
        "MFS+DFSA -i / local in each round (one after the other, in turn first): median, \
         geometric mean [95% interval] | each"
    );
    let mut all = Vec::new();
    for (b, r) in spreads {
        let each: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "{b:>8} {:>6.2} {} | {}",
            median(r.clone()),
            geomean(&r),
            each.join(" ")
        );
        all.extend(r);
    }
    println!("     all {:>6.2} {}", median(all.clone()), geomean(&all));
    if goal {
        return;
    }
    let f = c.view(3).unwrap().files;
    println!(
        "node 3: MFS served {} requests, DFSA opened {} files and ran {} calls",
        f.mfs_served, f.dfsa_opens, f.dfsa_calls
    );
    // Where the time goes: single calls, in microseconds each.
    println!("single calls, us each: 64-byte pread | open+close | stat | create+unlink");
    let calls = |node: u16, place: &[&str], dir: &str| -> String {
        let probe = user_tool("mosix-probe");
        let mut a: Vec<&str> = place.to_vec();
        a.extend([probe.to_str().unwrap(), "filecalls", dir, "5000"]);
        let out = if place.is_empty() {
            c.user_command(node, a[0], &a[1..]).output().unwrap()
        } else {
            c.job(node, &a).output().unwrap()
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        v.iter()
            .map(|x| format!("{x:>9.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{:>22} {}",
        "local (node 3)",
        calls(3, &[], &format!("{DATA}/native"))
    );
    println!(
        "{:>22} {}",
        "MFS+DFSA -i",
        calls(1, &["-3", "-i"], &m("native"))
    );
    println!("{:>22} {}", "MFS+DFSA", calls(1, &["-3"], &m("dfsa")));
    println!("{:>22} {}", "MFS from node 1", calls(1, &[], &m("mfs")));
    if let Ok(p) = &peer {
        println!(
            "{:>22} {}",
            "sshfs from node 1",
            calls(1, &[], p.mount.to_str().unwrap())
        );
    }
    println!(
        "{:>22} {}",
        "MFS without DFSA",
        calls(1, &["-2"], &m("nodfsa"))
    );
    // The least any path call of a migrated process costs while it is a notification: one
    // round trip of one (measured as mtune does, outside the cluster's cgroups).
    match mosix_kmod::kernel::seccomp::notify_round_trip_ns(20_000, true) {
        Ok(ns) => println!(
            "one seccomp notification here, the least a path call of a guest costs: {:.1} us",
            ns as f64 / 1e3
        ),
        Err(e) => println!("one seccomp notification: not measured ({e})"),
    }
    drop(peer);
}
