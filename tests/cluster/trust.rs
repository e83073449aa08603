//! Step 6, trust: a migrated process has exactly the rights its owner has at home. Every probe
//! of `mosix-diff-probe` (one operation an unprivileged user may not do, or whose outcome
//! depends on who makes it) runs as `nobody` at node 1, natively and migrated (`mosrun -2`: it
//! starts on node 2, so every call it makes is a migrated one), and the two runs must agree on
//! what the probe printed, how it ended (exit code or signal) and what it did to the system (the
//! fixtures' files, node 1's and node 2's network configuration, the root and user processes,
//! the root helper's sockets, the loop-mounted ext4 file systems: one full up to its root
//! reserve, one with a user quota where the kernel has quotas).
//!
//! The fixtures live in node 1's private `/tmp` and are rebuilt before every run; what a run
//! changed is undone after it. Everything is removed at the end, also when the test fails.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use mosix_tests::{NOBODY, TestCluster, require_root, serial, user_tool};

const NAME: &str = "probes";
/// The fixtures, inside node 1.
const FX: &str = "/tmp/mdp";
/// The root helper's sockets, inside node 1.
const SOCK: &str = "/tmp/mds";
/// The modification time of every fixture, to see which ones a probe changed.
const FIXED: u64 = 1_000_000_000;
/// The group of the setgid fixture directory (not one of nobody's).
const SGID_GROUP: u32 = 4242;
/// How long one run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `prog args` on the machine; its stdout, or a panic naming it.
fn sh(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One probe as `--list` describes it.
struct ProbeSpec {
    name: String,
    args: Vec<String>,
    what: String,
}

fn probe_list() -> Vec<ProbeSpec> {
    let out = Command::new(user_tool("mosix-diff-probe"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next().unwrap().to_owned();
            let args = f
                .next()
                .unwrap()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            ProbeSpec {
                name,
                args,
                what: f.next().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// A long-lived process in node 1 (root's, or nobody's), killed on drop.
struct Target {
    child: Child,
    as_nobody: bool,
}

impl Target {
    fn start(c: &TestCluster, as_nobody: bool) -> Target {
        // Both through setpriv, so that both are seen the same way while it starts.
        let mut cmd = if as_nobody {
            c.user_command(1, "sleep", &["600"])
        } else {
            c.command(1, "setpriv", &["sleep", "600"])
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Until setpriv has become sleep, /proc shows setpriv.
        let pid = child.id();
        let limit = Instant::now() + Duration::from_secs(5);
        while Instant::now() < limit {
            if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|s| s.trim() == "sleep") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Target { child, as_nobody }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What can be seen of it from outside: alive or how it died; state, nice, policy, timer
    /// slack, oom_score_adj, core limit, CPUs, tracer.
    fn describe(&mut self) -> String {
        if let Ok(Some(st)) = self.child.try_wait() {
            return format!("dead ({})", status_text(st));
        }
        let pid = self.pid();
        let rd = |f: &str| fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let stat = rd("stat");
        let after: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |x| x.1)
            .split_whitespace()
            .collect();
        let field = |n: usize| after.get(n - 3).copied().unwrap_or("?");
        let status = rd("status");
        let line = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .map(|l| l[k.len()..].trim().to_owned())
                .unwrap_or_default()
        };
        let limits = rd("limits");
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .map(|l| {
                l.split_whitespace()
                    .skip(4)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default();
        format!(
            "alive state={} nice={} policy={} slack={} oom_adj={} core={core} cpus={} tracer={}",
            field(3),
            field(19),
            field(41),
            rd("timerslack_ns").trim(),
            rd("oom_score_adj").trim(),
            line("Cpus_allowed_list:"),
            line("TracerPid:"),
        )
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The root helper's sockets (bound once; what they receive is counted and drained).
struct Sockets {
    dgrams: Vec<(String, UnixDatagram)>,
    streams: Vec<(String, UnixListener)>,
}

impl Sockets {
    fn bind(dir: &Path) -> Sockets {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir.join("rootonly")).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("rootonly"), fs::Permissions::from_mode(0o700)).unwrap();
        let mut s = Sockets {
            dgrams: vec![],
            streams: vec![],
        };
        for (rel, mode) in [
            ("rootonly/d.sock", 0o666),
            ("nowrite.d", 0o644),
            ("open.d", 0o666),
        ] {
            let d = UnixDatagram::bind(dir.join(rel)).unwrap();
            d.set_nonblocking(true).unwrap();
            fs::set_permissions(dir.join(rel), fs::Permissions::from_mode(mode)).unwrap();
            s.dgrams.push((rel.to_owned(), d));
        }
        for (rel, mode) in [
            ("rootonly/s.sock", 0o666),
            ("nowrite.s", 0o644),
            ("open.s", 0o666),
        ] {
            let l = UnixListener::bind(dir.join(rel)).unwrap();
            l.set_nonblocking(true).unwrap();
            fs::set_permissions(dir.join(rel), fs::Permissions::from_mode(mode)).unwrap();
            s.streams.push((rel.to_owned(), l));
        }
        s
    }

    /// What arrived since the last look.
    fn drain(&self, into: &mut BTreeMap<String, String>) {
        for (rel, d) in &self.dgrams {
            let mut n = 0;
            let mut buf = [0u8; 256];
            while d.recv(&mut buf).is_ok() {
                n += 1;
            }
            into.insert(format!("socket {rel}"), format!("{n} datagram(s)"));
        }
        for (rel, l) in &self.streams {
            let mut n = 0;
            while l.accept().is_ok() {
                n += 1;
            }
            into.insert(format!("socket {rel}"), format!("{n} connection(s)"));
        }
    }
}

/// What a loop-mounted ext4 of the test is for.
#[derive(Clone, Copy, PartialEq)]
enum LoopUse {
    /// `mkfs.ext4 -m 50`, filled by root until users have no block left: only the root
    /// reserve is free.
    RootReserve,
    /// `mkfs.ext4 -O quota`, mounted with `usrquota`, nobody limited to 64 KiB.
    Quota,
}

/// An ext4 image in node 1's private /tmp, loop-mounted in node 1's mount namespace (so the
/// machine never sees the mount), with a directory `user` that belongs to nobody.
struct LoopFs {
    what: LoopUse,
    /// Its mount point inside node 1.
    mnt: &'static str,
    /// Why it could not be made, if it could not.
    ok: Result<(), String>,
    mounted: bool,
}

/// Node 1's view of a path of its mount namespace, through a process that lives in it.
fn in_node1(c: &TestCluster, p: &str) -> PathBuf {
    let svc = c
        .cluster
        .node(1)
        .service_pid
        .expect("node 1's service runs");
    PathBuf::from(format!("/proc/{svc}/root{p}"))
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl LoopFs {
    fn setup(c: &TestCluster, what: LoopUse) -> LoopFs {
        let mnt = match what {
            LoopUse::RootReserve => "/tmp/mdp-ext4",
            LoopUse::Quota => "/tmp/mdp-quota",
        };
        let mut fs = LoopFs {
            what,
            mnt,
            ok: Ok(()),
            mounted: false,
        };
        fs.ok = fs.try_setup(c);
        fs
    }

    fn image(&self) -> String {
        format!("{}.img", self.mnt)
    }

    fn try_setup(&mut self, c: &TestCluster) -> Result<(), String> {
        let tmp = c.private_path(1, Path::new("/tmp"));
        let img = tmp.join(self.image().trim_start_matches("/tmp/"));
        let f = fs::File::create(&img).map_err(|e| format!("{}: {e}", img.display()))?;
        f.set_len(32 << 20).map_err(|e| e.to_string())?;
        drop(f);
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F"]);
        let mut opts = "loop".to_owned();
        match self.what {
            LoopUse::RootReserve => {
                mkfs.args(["-m", "50"]);
            }
            LoopUse::Quota => {
                mkfs.args(["-m", "0", "-O", "quota", "-E", "quotatype=usrquota"]);
                opts.push_str(",usrquota");
            }
        }
        run_ok(mkfs.arg(&img), "mkfs.ext4")?;
        fs::create_dir_all(tmp.join(self.mnt.trim_start_matches("/tmp/")))
            .map_err(|e| e.to_string())?;
        let hint = match self.what {
            LoopUse::RootReserve => "are there loop devices?",
            LoopUse::Quota => "does the kernel's ext4 have quotas (CONFIG_QUOTA, CONFIG_QFMT_V2)?",
        };
        run_ok(
            &mut c.command(1, "mount", &["-o", &opts, &self.image(), self.mnt]),
            &format!("mount -o {opts} in node 1 ({hint})"),
        )?;
        self.mounted = true;
        let root = in_node1(c, self.mnt);
        let user = root.join("user");
        fs::create_dir(&user).map_err(|e| e.to_string())?;
        chown(&user, Some(NOBODY), Some(NOBODY)).map_err(|e| e.to_string())?;
        match self.what {
            LoopUse::RootReserve => fill_to_reserve(&root),
            LoopUse::Quota => limit_nobody(&root),
        }
    }

    fn files(&self, c: &TestCluster, into: &mut BTreeMap<String, String>) {
        if self.ok.is_err() {
            return;
        }
        let user = in_node1(c, self.mnt).join("user");
        for e in fs::read_dir(&user).into_iter().flatten().flatten() {
            let m = e.metadata().map(|m| m.len()).unwrap_or(0);
            into.insert(
                format!("{} user/{}", self.mnt, e.file_name().to_string_lossy()),
                format!("{m} bytes"),
            );
        }
    }

    fn clean(&self, c: &TestCluster) {
        if self.ok.is_err() {
            return;
        }
        let user = in_node1(c, self.mnt).join("user");
        for e in fs::read_dir(&user).into_iter().flatten().flatten() {
            let _ = fs::remove_file(e.path());
        }
    }

    /// Unmounts it (the loop device goes with it) and removes the image.
    fn remove(&mut self, c: &TestCluster) {
        if self.mounted {
            let _ = c.command(1, "umount", &[self.mnt]).output();
            self.mounted = false;
        }
        let tmp = c.private_path(1, Path::new("/tmp"));
        let _ = fs::remove_file(tmp.join(self.image().trim_start_matches("/tmp/")));
        let _ = fs::remove_dir(tmp.join(self.mnt.trim_start_matches("/tmp/")));
    }
}

/// Root fills what users may have; the reserve stays free.
fn fill_to_reserve(root: &Path) -> Result<(), String> {
    let mut fill = fs::File::create(root.join("fill")).map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; 64 << 10];
    loop {
        let s = nix::sys::statvfs::statvfs(root).map_err(|e| e.to_string())?;
        let avail = s.blocks_available() as u64 * s.fragment_size();
        if avail == 0 {
            return Ok(());
        }
        let n = usize::try_from(avail.min(chunk.len() as u64)).unwrap_or(chunk.len());
        fill.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        fill.sync_all().map_err(|e| e.to_string())?;
    }
}

/// Limits nobody to 64 KiB of blocks on the file system mounted at `root` (Q_SETQUOTA through
/// quotactl_fd, so that no device name is needed).
fn limit_nobody(root: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    /// struct if_dqblk (linux/quota.h); limits in 1 KiB blocks.
    #[repr(C)]
    struct IfDqblk {
        bhardlimit: u64,
        bsoftlimit: u64,
        curspace: u64,
        ihardlimit: u64,
        isoftlimit: u64,
        curinodes: u64,
        btime: u64,
        itime: u64,
        valid: u32,
    }
    const Q_SETQUOTA: u32 = 0x80_0008;
    const USRQUOTA: u32 = 0;
    const QIF_BLIMITS: u32 = 1;
    let dir = fs::File::open(root).map_err(|e| e.to_string())?;
    let q = IfDqblk {
        bhardlimit: 64,
        bsoftlimit: 64,
        curspace: 0,
        ihardlimit: 0,
        isoftlimit: 0,
        curinodes: 0,
        btime: 0,
        itime: 0,
        valid: QIF_BLIMITS,
    };
    // SAFETY: `dir` is an open descriptor and `q` a valid if_dqblk that outlives the call,
    // which only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            dir.as_raw_fd(),
            (Q_SETQUOTA << 8) | USRQUOTA,
            NOBODY,
            &raw const q,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "quotactl_fd(Q_SETQUOTA): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// A key of root's, in the test process's own keyring: gone when it ends, invalidated before.
struct RootKey(i64);

impl RootKey {
    fn add() -> RootKey {
        // KEY_SPEC_PROCESS_KEYRING: this process's keyring, created on demand.
        // SAFETY: the type, description and payload are valid buffers of the lengths given
        // that outlive the call.
        let k = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"mosix-diff-probe".as_ptr(),
                b"secret".as_ptr(),
                6usize,
                -2i32,
            )
        };
        if k > 0 {
            // KEYCTL_SET_TIMEOUT: it goes by itself even if this process is killed.
            // SAFETY: integer arguments only.
            unsafe { libc::syscall(libc::SYS_keyctl, 15, k, 3600) };
        }
        RootKey(k.max(0))
    }
}

impl Drop for RootKey {
    fn drop(&mut self) {
        if self.0 > 0 {
            // KEYCTL_INVALIDATE.
            // SAFETY: integer arguments only.
            unsafe { libc::syscall(libc::SYS_keyctl, 21, self.0) };
        }
    }
}

/// Everything the probes can touch, built as root, and how to see what a run changed.
struct World<'c> {
    c: &'c TestCluster,
    fx: PathBuf,
    sockets: Sockets,
    root: Target,
    user: Target,
    reserve: LoopFs,
    quota: LoopFs,
    key: RootKey,
}

fn set_fixed_time(p: &Path) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED);
    let f = fs::File::open(p).unwrap();
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
}

impl<'c> World<'c> {
    fn new(c: &'c TestCluster) -> World<'c> {
        let tmp = c.private_path(1, Path::new("/tmp"));
        World {
            c,
            fx: tmp.join(FX.trim_start_matches("/tmp/")),
            sockets: Sockets::bind(&tmp.join(SOCK.trim_start_matches("/tmp/"))),
            root: Target::start(c, false),
            user: Target::start(c, true),
            reserve: LoopFs::setup(c, LoopUse::RootReserve),
            quota: LoopFs::setup(c, LoopUse::Quota),
            key: RootKey::add(),
        }
    }

    /// The value of a probe argument.
    fn arg(&self, name: &str) -> String {
        match name {
            "fx" => FX.into(),
            "sock" => SOCK.into(),
            "rootpid" => self.root.pid().to_string(),
            "userpid" => self.user.pid().to_string(),
            "key" => self.key.0.to_string(),
            "ext4" => format!("{}/user", self.reserve.mnt),
            "quota" => format!("{}/user", self.quota.mnt),
            other => panic!("unknown probe argument {other}"),
        }
    }

    /// Why a probe cannot run here, if it cannot.
    fn cannot(&self, args: &[String]) -> Option<String> {
        if args.iter().any(|a| a == "ext4")
            && let Err(e) = &self.reserve.ok
        {
            return Some(format!("no ext4 with a root reserve here: {e}"));
        }
        if args.iter().any(|a| a == "quota")
            && let Err(e) = &self.quota.ok
        {
            return Some(format!("no file system with user quotas here: {e}"));
        }
        if args.iter().any(|a| a == "key") && self.key.0 == 0 {
            return Some("cannot add a key of root's".into());
        }
        None
    }

    /// Builds the fixture files afresh.
    fn reset(&self) {
        let fx = &self.fx;
        let _ = fs::remove_dir_all(fx);
        let dir = |rel: &str, mode: u32, uid: u32, gid: u32| {
            let p = fx.join(rel);
            fs::create_dir_all(&p).unwrap();
            chown(&p, Some(uid), Some(gid)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        let file = |rel: &str, text: &str, mode: u32, uid: u32, gid: u32| {
            let p = fx.join(rel);
            fs::write(&p, text).unwrap();
            chown(&p, Some(uid), Some(gid)).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        dir("", 0o755, 0, 0);
        file("rootfile", "root file\n", 0o644, 0, 0);
        file("rootonly", "secret\n", 0o600, 0, 0);
        file("suid", "suid\n", 0o6777, 0, 0);
        dir("rootdir", 0o700, 0, 0);
        file("rootdir/secret", "secret\n", 0o644, 0, 0);
        symlink("secret", fx.join("rootdir/link")).unwrap();
        dir("ro", 0o755, 0, 0);
        file("ro/victim", "victim\n", 0o644, 0, 0);
        dir("ro/sub", 0o755, 0, 0);
        dir("pub", 0o777, 0, 0);
        file("pub/own", "own file\n", 0o644, NOBODY, NOBODY);
        dir("sgid", 0o2777, 0, SGID_GROUP);
        dir("sticky", 0o1777, 0, 0);
        file("sticky/other", "other\n", 0o666, 1, 1);
        // Deepest first, so that setting a directory's time is not undone by its contents.
        let mut all: Vec<PathBuf> = walk(fx).into_iter().map(|(p, _)| p).collect();
        all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for p in all {
            if !fs::symlink_metadata(&p).unwrap().file_type().is_symlink() {
                set_fixed_time(&p);
            }
        }
    }

    /// What can be seen of everything the probes could touch.
    fn snapshot(&mut self) -> BTreeMap<String, String> {
        use std::os::unix::fs::MetadataExt;
        let mut s = BTreeMap::new();
        for (p, m) in walk(&self.fx) {
            let rel = p
                .strip_prefix(&self.fx)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = match m.file_type() {
                t if t.is_dir() => "dir",
                t if t.is_symlink() => "symlink",
                t if t.is_file() => "file",
                _ => match m.mode() & libc::S_IFMT {
                    libc::S_IFIFO => "fifo",
                    libc::S_IFCHR => "chardev",
                    libc::S_IFBLK => "blockdev",
                    libc::S_IFSOCK => "socket",
                    _ => "other",
                },
            };
            let size = if m.is_file() {
                format!(" {} bytes", m.len())
            } else {
                String::new()
            };
            let time = if m.file_type().is_symlink() {
                ""
            } else if m.mtime() as u64 == FIXED {
                " mtime=fixed"
            } else {
                " mtime=changed"
            };
            s.insert(
                format!("file /{rel}"),
                format!(
                    "{kind} {:04o} {}:{}{size}{time}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid()
                ),
            );
        }
        for node in 1..=2u16 {
            let ns = format!("{NAME}-n{node}");
            for (what, args) in [
                ("addr", vec!["-o", "-4", "addr", "show"]),
                ("link", vec!["-o", "link", "show"]),
                ("route", vec!["-4", "route", "show", "table", "all"]),
            ] {
                let mut a = vec!["-n", ns.as_str()];
                a.extend(args);
                for l in sh("ip", &a).lines() {
                    s.insert(format!("node{node} {what}: {}", l.trim()), "present".into());
                }
            }
        }
        s.insert("root process".into(), self.root.describe());
        s.insert("user process".into(), self.user.describe());
        self.sockets.drain(&mut s);
        self.reserve.files(self.c, &mut s);
        self.quota.files(self.c, &mut s);
        let u = nix::sys::utsname::uname().unwrap();
        s.insert(
            "host name".into(),
            format!("{:?} {:?}", u.nodename(), u.domainname()),
        );
        // Mounts on node 1's private /tmp (the machine's other mounts come and go with other
        // clusters and propagate into the node).
        let svc = self.c.cluster.node(1).service_pid.unwrap_or(0);
        let mounts_of_node1: Vec<String> = fs::read_to_string(format!("/proc/{svc}/mountinfo"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with("/tmp"))
            .map(str::to_owned)
            .collect();
        s.insert("node1 mounts on /tmp".into(), mounts_of_node1.join(" "));
        s
    }

    /// Undoes what a probe may have changed outside the fixture files.
    fn restore(&mut self, baseline: &BTreeMap<String, String>) {
        for node in 1..=2u16 {
            let ns = format!("{NAME}-n{node}");
            for args in [
                vec!["addr", "del", "192.0.2.77/32", "dev", "lo"],
                vec!["link", "set", "lo", "mtu", "65536"],
                vec!["route", "del", "198.51.100.0/24", "dev", "lo"],
            ] {
                let mut a = vec!["-n", ns.as_str()];
                a.extend(args);
                let _ = Command::new("ip").args(&a).output();
            }
        }
        // A process a probe changed (or killed) is replaced by a fresh one.
        for (key, t) in [
            ("root process", &mut self.root),
            ("user process", &mut self.user),
        ] {
            if baseline.get(key) != Some(&t.describe()) {
                let as_nobody = t.as_nobody;
                *t = Target::start(self.c, as_nobody);
            }
        }
        self.reserve.clean(self.c);
        self.quota.clean(self.c);
        self.reset();
        let now = self.snapshot();
        let left = diff(baseline, &now);
        assert!(
            left.is_empty(),
            "could not undo a probe's effects: {left:?}"
        );
    }
}

impl Drop for World<'_> {
    fn drop(&mut self) {
        self.reserve.remove(self.c);
        self.quota.remove(self.c);
        let tmp = self.c.private_path(1, Path::new("/tmp"));
        let _ = fs::remove_dir_all(&self.fx);
        let _ = fs::remove_dir_all(tmp.join(SOCK.trim_start_matches("/tmp/")));
    }
}

/// Every entry below `dir` (itself included), without following symlinks.
fn walk(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = vec![];
    let Ok(m) = fs::symlink_metadata(dir) else {
        return out;
    };
    let is_dir = m.is_dir();
    out.push((dir.to_owned(), m));
    if is_dir {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            out.extend(walk(&e));
        }
    }
    out
}

/// What changed between two snapshots, one line per change.
fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = vec![];
    for (k, b) in before {
        match after.get(k) {
            None if b == "present" => out.push(format!("-{k}")),
            None => out.push(format!("-{k} ({b})")),
            Some(a) if a != b => out.push(format!("{k}: {b} -> {a}")),
            _ => {}
        }
    }
    for (k, a) in after {
        if !before.contains_key(k) {
            if a == "present" {
                out.push(format!("+{k}"));
            } else {
                out.push(format!("+{k} ({a})"));
            }
        }
    }
    out
}

fn status_text(st: ExitStatus) -> String {
    if let Some(sig) = st.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned());
        format!("killed by {name}")
    } else {
        format!("exit {}", st.code().unwrap_or(-1))
    }
}

/// What one run of one probe gave.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    line: String,
    status: String,
    effects: Vec<String>,
}

/// Where a migrated run was: when the probe started its operation, and when it had printed.
#[derive(Debug, Clone, Default)]
struct Where {
    before: Option<u64>,
    after: Option<u64>,
}

fn node_text(n: Option<u64>) -> String {
    match n {
        Some(0) => "home".into(),
        Some(n) => format!("node {n}"),
        None => "not listed".into(),
    }
}

/// Runs one probe as nobody at node 1, natively or under `mosrun -2`, holding it before and
/// after its operation to see where it is. Returns its outcome, where it was, and its stderr.
fn run_probe(w: &mut World, spec: &ProbeSpec, migrated: bool) -> (Outcome, Where, String) {
    let c = w.c;
    w.reset();
    let before = w.snapshot();
    let values: Vec<String> = spec.args.iter().map(|a| w.arg(a)).collect();
    let probe = user_tool("mosix-diff-probe");
    let mut args: Vec<&str> = vec![];
    if migrated {
        args.push("-2");
    }
    args.extend([probe.to_str().unwrap(), "--hold", spec.name.as_str()]);
    args.extend(values.iter().map(String::as_str));
    let mut cmd = if migrated {
        c.job(1, &args)
    } else {
        c.user_command(1, args[0], &args[1..])
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
        // Whatever else it prints (nothing, normally), so that it never blocks on a full pipe.
        let mut rest = String::new();
        let _ = stdout.read_to_string(&mut rest);
    });
    let mut stderr_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let mut at = Where::default();
    if migrated {
        let limit = Instant::now() + Duration::from_secs(20);
        loop {
            at.before = c.node_of(pid);
            if at.before == Some(2) || Instant::now() > limit {
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"go\n");
    let _ = stdin.flush();
    let line = match rx.recv_timeout(RUN_LIMIT) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            "(no answer within the time limit)".into()
        }
    };
    if migrated {
        at.after = c.node_of(pid);
    }
    drop(stdin);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break status_text(st);
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break "did not end".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = err_thread.join().unwrap_or_default();
    let after = w.snapshot();
    let effects = diff(&before, &after);
    w.restore(&before);
    (
        Outcome {
            line: line.trim_end_matches('\n').to_owned(),
            status,
            effects,
        },
        at,
        stderr,
    )
}

fn show(o: &Outcome) -> String {
    let mut s = format!("{:?} [{}]", o.line, o.status);
    for e in &o.effects {
        s.push_str(&format!("\n{:>16}{e}", ""));
    }
    s
}

#[test]
fn differential_probes_give_the_same_answers_natively_and_migrated() {
    if !require_root("differential_probes_give_the_same_answers_natively_and_migrated") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up(NAME, 2, |s| s.private_dirs = vec![PathBuf::from("/tmp")]);
    c.wait_all_up();
    let specs = probe_list();
    assert!(specs.len() >= 60, "only {} probes", specs.len());
    let mut w = World::new(&c);

    let mut differ = vec![];
    let mut not_remote = vec![];
    let mut skipped = vec![];
    let mut came_home = vec![];
    let mut table = String::new();
    for spec in &specs {
        if let Some(why) = w.cannot(&spec.args) {
            table.push_str(&format!("{:<32} SKIPPED: {why}\n", spec.name));
            skipped.push(format!("{}: {why}", spec.name));
            continue;
        }
        let (native, _, nerr) = run_probe(&mut w, spec, false);
        let (migrated, at, merr) = run_probe(&mut w, spec, true);
        let same = native == migrated;
        let place = format!("{} → {}", node_text(at.before), node_text(at.after));
        if at.before != Some(2) {
            not_remote.push(format!("{}: {place}", spec.name));
        } else if at.after == Some(0) {
            came_home.push(spec.name.clone());
        }
        let mark = if same { "same" } else { "DIFFERS" };
        table.push_str(&format!(
            "{:<32} {mark:<8} ran at {place}   ({})\n",
            spec.name, spec.what
        ));
        if same {
            table.push_str(&format!("{:>16}{}\n", "both:     ", show(&native)));
        } else {
            table.push_str(&format!("{:>16}{}\n", "native:   ", show(&native)));
            table.push_str(&format!("{:>16}{}\n", "migrated: ", show(&migrated)));
            differ.push(format!(
                "{}: native {} / migrated {}",
                spec.name,
                show(&native),
                show(&migrated)
            ));
        }
        for (who, e) in [("native", &nerr), ("migrated", &merr)] {
            if !e.trim().is_empty() {
                table.push_str(&format!("{:>16}{who} stderr: {}\n", "", e.trim()));
            }
        }
    }
    eprintln!(
        "\n{} probes, each run as nobody at node 1 natively and with mosrun -2:\n\n{table}",
        specs.len()
    );
    eprintln!(
        "came home during the probe (a call that runs only at home): {}",
        came_home.join(", ")
    );
    assert!(
        not_remote.is_empty(),
        "migrated runs that did not run on node 2: {not_remote:#?}"
    );
    // A probe whose fixture this machine cannot give (no loop devices, a kernel without
    // quotas) is listed, not failed: the other probes still say what they must.
    for s in &skipped {
        eprintln!("SKIP {s}");
    }
    assert!(
        differ.is_empty(),
        "{} of {} probes answer differently when migrated:\n{}",
        differ.len(),
        specs.len(),
        differ.join("\n")
    );
}
