//! Step 7, MFS: on a 3-node cluster whose nodes each have a private directory, `/mfs/3/DIR` is
//! node 3's `DIR` from every node, read and written with the caller's rights at node 3 (root of
//! another node squashed to nobody), a write on one node is seen by a read on another right
//! after it, an unlinked file stays readable through a descriptor another node holds, and
//! `mosctl nomfs` on node 3 makes `/mfs/3` refuse with a clear error.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use mosix_tests::{NOBODY, TestCluster, require_root, serial, user_dir};

/// The directory each node has privately.
const DATA: &str = "/run/mosix-vc-test-mfs";

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `sh -c SCRIPT` in node N as nobody (or root).
fn sh(c: &TestCluster, node: u16, root: bool, script: &str) -> Output {
    let mut cmd = if root {
        c.command(node, "/bin/sh", &["-c", script])
    } else {
        c.user_command(node, "/bin/sh", &["-c", script])
    };
    cmd.stdin(Stdio::null())
        .output()
        .expect("running sh in a node")
}

fn at3(file: &str) -> String {
    format!("/mfs/3{DATA}/{file}")
}

#[test]
fn files_of_a_node_are_reached_from_every_node_with_the_callers_rights_there() {
    if !require_root("mfs") {
        return;
    }
    let _g = serial();
    std::fs::create_dir_all(DATA).unwrap();
    let c = TestCluster::up("tmfs", 3, |s| s.private_dirs = vec![PathBuf::from(DATA)]);
    for n in 1..=3u16 {
        let d = c.private_path(n, Path::new(DATA));
        std::fs::write(d.join("name"), format!("node {n}\n")).unwrap();
        std::fs::set_permissions(d.join("name"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let d3 = c.private_path(3, Path::new(DATA));
    std::fs::write(d3.join("secret"), "root's\n").unwrap();
    std::fs::set_permissions(d3.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(d3.join("pub")).unwrap();
    std::fs::set_permissions(d3.join("pub"), std::fs::Permissions::from_mode(0o1777)).unwrap();

    for n in 1..=3u16 {
        // Node 3's file, not the caller's own node's.
        let o = sh(&c, n, false, &format!("cat {}", at3("name")));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "node 3\n",
            "from node {n}: {}",
            text(&o)
        );
        // What nobody may not read at node 3 stays unreadable through MFS.
        let o = sh(&c, n, false, &format!("cat {}", at3("secret")));
        assert!(!o.status.success(), "nobody read root's file from node {n}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
            "{}",
            text(&o)
        );
        // Writing where nobody may: the file at node 3 is nobody's.
        let o = sh(
            &c,
            n,
            false,
            &format!("echo from {n} > {}", at3(&format!("pub/from{n}"))),
        );
        assert!(o.status.success(), "{}", text(&o));
        let f = d3.join(format!("pub/from{n}"));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("from {n}\n"));
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "{}", f.display());
        // Writing where nobody may not.
        let o = sh(&c, n, false, &format!("echo x > {}", at3("secret")));
        assert!(
            !o.status.success(),
            "nobody wrote root's file from node {n}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(d3.join("secret")).unwrap(),
        "root's\n"
    );

    // Root of another node is nobody at node 3; root of node 3 is root there.
    let o = sh(&c, 1, true, &format!("cat {}", at3("secret")));
    assert!(
        !o.status.success(),
        "root of node 1 read root's file at node 3"
    );
    let o = sh(&c, 3, true, &format!("cat {}", at3("secret")));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "root's\n",
        "{}",
        text(&o)
    );

    // `home` and `here` are the caller's node; a node's address names it too.
    let by_addr = format!("/mfs/{}{DATA}/name", c.cluster.addr(3));
    let o = sh(
        &c,
        2,
        false,
        &format!("readlink /mfs/home /mfs/here; cat {by_addr}"),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "2\n2\nnode 3\n",
        "{}",
        text(&o)
    );
    // `selected` is the node the caller's environment selects (inherited by its children),
    // and nothing without one.
    let o = sh(
        &c,
        1,
        false,
        &format!(
            "export MOSIX_SELECTED=3; sh -c 'cat /mfs/selected{DATA}/name'; readlink /mfs/selected"
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "node 3\n3\n",
        "{}",
        text(&o)
    );
    let o = sh(&c, 1, false, "readlink /mfs/selected");
    assert!(!o.status.success(), "{}", text(&o));

    // A write on node 2 is read on node 1 right after it, every time.
    for i in 0..20 {
        let o = sh(
            &c,
            2,
            false,
            &format!("printf 'round {i}' > {}", at3("pub/shared")),
        );
        assert!(o.status.success(), "{}", text(&o));
        let o = sh(&c, 1, false, &format!("cat {}", at3("pub/shared")));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("round {i}"),
            "{}",
            text(&o)
        );
    }

    // A file unlinked by one node stays readable through a descriptor another node holds,
    // and its attributes come from that descriptor.
    let held = format!(
        r#"import os, sys, time
f = open("{path}", "w+"); f.write("still here"); f.flush()
print("open", flush=True)
sys.stdin.readline()
f.seek(0); print(f.read(), os.fstat(f.fileno()).st_size, flush=True)"#,
        path = at3("pub/doomed")
    );
    let mut holder = c
        .user_command(1, "python3", &["-c", &held])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "open\n");
    let o = sh(&c, 2, false, &format!("rm {}", at3("pub/doomed")));
    assert!(o.status.success(), "{}", text(&o));
    assert!(!d3.join("pub/doomed").exists());
    drop(holder.stdin.take());
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "still here 10\n");
    assert!(holder.wait().unwrap().success());

    // nomfs: node 3 refuses, and says so; mfs: it serves again.
    let (ok, said) = c.said(3, "mosctl", &["nomfs"]);
    assert!(ok, "{said}");
    let o = sh(&c, 1, false, &format!("cat {}", at3("name")));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Connection refused"),
        "{}",
        text(&o)
    );
    assert!(
        c.log(1)
            .contains("node 3 refuses file service (mosctl nomfs there)"),
        "{}",
        c.log(1)
    );
    // The other nodes hear of it with the next gossip.
    assert!(
        c.eventually(Duration::from_secs(10), || c
            .said(1, "mosctl", &["status", "3"])
            .1
            .contains("NOMFS")),
        "{}",
        c.said(1, "mosctl", &["status", "3"]).1
    );
    let (ok, said) = c.said(3, "mosctl", &["mfs"]);
    assert!(ok, "{said}");
    let o = sh(&c, 1, false, &format!("cat {}", at3("name")));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "node 3\n",
        "{}",
        text(&o)
    );
}

/// Reads a file of node 3 through `/mfs/3` in four phases (waiting for a line between them) and
/// copies what it reads to another file there, then prints what it read (a digest), how much,
/// and both offsets. A third file is created in phase 1 and written in each phase after.
const COPIER: &str = r#"
import hashlib, os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
h = hashlib.sha256()
total = 0
made = None
for phase in range(4):
    # A file opened while the process is at node 3 (phase 1), written on each node after.
    if phase == 1:
        made = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if made is not None:
        os.write(made, b"phase %d;" % phase)
    if phase == 3:
        os.close(made)
    for _ in range(64):
        b = os.read(src, 4096)
        if not b:
            break
        h.update(b)
        total += len(b)
        os.write(dst, b)
    # fstat through the descriptor, as programs do (AT_EMPTY_PATH): it must not end DFSA.
    os.fstat(src)
    print("phase", phase, os.lseek(src, 0, os.SEEK_CUR), flush=True)
    if phase < 3:
        sys.stdin.readline()
while True:
    b = os.read(src, 65536)
    if not b:
        break
    h.update(b)
    total += len(b)
    os.write(dst, b)
print(h.hexdigest(), total, os.lseek(src, 0, os.SEEK_CUR), os.lseek(dst, 0, os.SEEK_CUR), flush=True)
"#;

#[test]
fn a_migrated_process_reads_and_writes_files_of_its_node_there_and_keeps_its_offsets_across_moves()
{
    use std::io::{BufRead, Write};
    if !require_root("dfsa") {
        return;
    }
    let _g = serial();
    std::fs::create_dir_all(DATA).unwrap();
    // A directory all nodes see alike (the machine's), declared as a cluster-wide file system.
    let shared = user_dir();
    let c = TestCluster::up("tdfsa", 3, |s| {
        s.private_dirs = vec![PathBuf::from(DATA)];
        s.tunables = format!("[mfs]\ndfsa_paths = [{:?}]\n", shared.path());
    });
    c.wait_all_up();

    // A process placed on node 2 writes and reads a file of the declared file system there.
    let f = shared.path().join("f");
    let before = c.view(2).unwrap().files;
    let o = c
        .job(
            1,
            &[
                "-2",
                "/usr/bin/python3",
                "-c",
                "import sys; open(sys.argv[1], 'w').write('declared'); print(open(sys.argv[1]).read())",
                f.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "declared\n",
        "{}",
        text(&o)
    );
    let after = c.view(2).unwrap().files;
    assert!(
        after.dfsa_opens >= before.dfsa_opens + 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "declared");

    let d3 = c.private_path(3, Path::new(DATA));
    let data = mosix_tests::pseudo_random(3 << 20, 7);
    std::fs::write(d3.join("data"), &data).unwrap();
    std::fs::set_permissions(d3.join("data"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(d3.join("pub")).unwrap();
    std::fs::set_permissions(d3.join("pub"), std::fs::Permissions::from_mode(0o1777)).unwrap();

    let mut child = c
        .job(
            1,
            &[
                "/usr/bin/python3",
                "-c",
                COPIER,
                &at3("data"),
                &at3("pub/copy"),
                &at3("pub/made"),
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut next_phase = |expect: &str, line: &mut String| {
        line.clear();
        out.read_line(line).unwrap();
        assert!(
            line.starts_with(expect),
            "{line:?}\n{}\n{}\n{}",
            c.log(1),
            c.log(2),
            c.log(3)
        );
    };
    let files = |n: u16| c.view(n).unwrap().files;
    // Phase 0 at home, then to node 3, where the files are.
    next_phase("phase 0 262144", &mut line);
    c.migrate(pid, "3");
    let before = files(3);
    input.write_all(b"\n").unwrap();
    next_phase("phase 1 524288", &mut line);
    // On to node 2: the same descriptors, through home and MFS, at the same offsets.
    c.migrate(pid, "2");
    // Its reads and writes ran at node 3 (2 x 64 calls and more), not through MFS. (With a
    // tree of its own they run unnotified, counted from the kernel's count of its calls: as it
    // leaves, at the latest.)
    let after = files(3);
    assert!(
        after.dfsa_calls >= before.dfsa_calls + 128,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.mfs_served < before.mfs_served + 32,
        "the reads went through MFS: {before:?} -> {after:?}"
    );
    input.write_all(b"\n").unwrap();
    next_phase("phase 2 786432", &mut line);
    c.migrate(pid, "home");
    input.write_all(b"\n").unwrap();
    next_phase("phase 3 1048576", &mut line);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success());
    let expect = {
        use sha2::Digest;
        sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let n = data.len();
    assert_eq!(line.trim(), format!("{expect} {n} {n} {n}"));
    assert_eq!(std::fs::read(d3.join("pub/copy")).unwrap(), data);
    // Created at home's word (its owner, its mode), written at 3, at 2 through MFS, at home.
    let made = d3.join("pub/made");
    assert_eq!(
        std::fs::read_to_string(&made).unwrap(),
        "phase 1;phase 2;phase 3;"
    );
    let m = std::fs::metadata(&made).unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o777), (NOBODY, 0o600));
    assert!(files(3).dfsa_opens >= 2, "{:?}", files(3));
}

/// Reads a file again and again for up to `argv[2]` seconds, then says how much it read.
const READER: &str = r#"
import sys, time
t = time.time()
n = 0
while time.time() - t < float(sys.argv[2]):
    with open(sys.argv[1], "rb", buffering=0) as f:
        while True:
            b = f.read(65536)
            if not b:
                break
            n += len(b)
print(n, flush=True)
"#;

#[test]
fn a_process_that_reads_another_nodes_file_moves_to_that_node_by_itself() {
    if !require_root("data_move") {
        return;
    }
    let _g = serial();
    let c = data_cluster("tdata");
    let d3 = c.private_path(3, Path::new(DATA));
    std::fs::write(d3.join("big"), mosix_tests::pseudo_random(16 << 20, 3)).unwrap();
    std::fs::set_permissions(d3.join("big"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let big = at3("big");
    // One that may move, and one locked at home.
    let free = c
        .job(1, &["/usr/bin/python3", "-c", READER, &big, "25"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let locked = c
        .job(1, &["-L", "/usr/bin/python3", "-c", READER, &big, "25"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let moved = c.eventually(Duration::from_secs(20), || c.node_of(free.id()) == Some(3));
    let locked_at = c.node_of(locked.id());
    let log = c.log(1);
    for mut ch in [free, locked] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(ch.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = ch.wait();
    }
    assert!(moved, "the reader of node 3's file stayed home:\n{log}");
    assert!(
        log.contains("balancing (data)"),
        "the move was not for its data:\n{log}"
    );
    assert_eq!(locked_at, Some(0), "the locked reader moved");
}

#[test]
fn mtune_writes_the_file_costs_and_the_balancer_follows_them() {
    use mosix_core::client::Client;
    if !require_root("mtune") {
        return;
    }
    let _g = serial();
    let c = data_cluster("tmtune");
    // mtune measures node 3 and writes node 1's file; the service uses it at once.
    let (ok, said) = c.said(1, "mtune", &["3", "-c", "50"]);
    assert!(ok, "{said}");
    let file = c.paths(1).mfscosts();
    let written =
        mosix_core::mfscosts::MfsCosts::parse("mfscosts", &std::fs::read_to_string(&file).unwrap())
            .unwrap();
    let row = written.towards(mosix_core::NodeId::new(3).unwrap());
    assert!(row.peer.is_some() && row.mfs_call_us > 0, "{written:?}");
    // What the service uses (printed in the file's own format) is what mtune wrote.
    let (_, shown) = c.said(1, "mosctl", &["gettune", "--files"]);
    let shown = mosix_core::mfscosts::MfsCosts::parse("gettune", &shown).unwrap();
    assert_eq!(shown.rows, written.rows);

    // A file by hand that says running at node 3 saves nothing: the reader stays home.
    let load = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Client::connect(&c.paths(1)).unwrap().load_tune()
    };
    load("peer mfs_call_us mfs_kib_us dfsa_call_us dfsa_kib_us\n3 100 1 100 1\n").unwrap();
    let d3 = c.private_path(3, Path::new(DATA));
    std::fs::write(d3.join("big"), mosix_tests::pseudo_random(8 << 20, 5)).unwrap();
    std::fs::set_permissions(d3.join("big"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let big = at3("big");
    let reader = |secs: &str| {
        c.job(1, &["/usr/bin/python3", "-c", READER, &big, secs])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut stays = reader("12");
    let moved = c.eventually(Duration::from_secs(8), || c.node_of(stays.id()) == Some(3));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stays.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = stays.wait();
    assert!(
        !moved,
        "the reader moved although the costs said it would save nothing"
    );

    // A wrong file is named with its line, and the costs in use are kept.
    let e = load("peer mfs_call_us mfs_kib_us dfsa_call_us dfsa_kib_us\n3 100 1 x 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mfscosts:2:") && e.contains("dfsa_call_us"),
        "{e}"
    );

    // With the costs mtune measured, the same reader goes to its data.
    load(&written.to_text()).unwrap();
    let mut goes = reader("25");
    let moved = c.eventually(Duration::from_secs(20), || c.node_of(goes.id()) == Some(3));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(goes.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = goes.wait();
    assert!(moved, "{}", c.log(1));
}

/// Path calls of a process on node 3 on node 3's files (`argv[1]` is `/mfs/3/<dir>`); it prints
/// what it sees, one answer a line, and waits for a line (the test moves it home) before it
/// uses, at home, a file it opened and removed at node 3.
const PATHS: &str = r#"
import os, sys
d = sys.argv[1]
def say(x): print(x, flush=True)
os.umask(0o027)
p = d + "/pub/new"
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
os.write(fd, b"made at 3")
os.close(fd)
try:
    os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666); say("excl ignored")
except FileExistsError:
    say("exists")
os.mkdir(d + "/pub/dir", 0o777)
say(oct(os.stat(d + "/pub/dir").st_mode & 0o777))
os.rmdir(d + "/pub/dir")
say(os.path.exists(d + "/pub/dir"))
os.rename(p, d + "/pub/renamed")
say(open(d + "/pub/renamed").read())
say(os.access(d + "/secret", os.R_OK))
try:
    open(d + "/secret"); say("read the secret")
except PermissionError:
    say("denied")
try:
    open(d + "/nothing"); say("found nothing")
except FileNotFoundError:
    say("missing")
say(os.readlink(d + "/link"))
say(open(d + "/link").read())
# Numbers as home gives them, with descriptors made at home in between.
a = os.open(d + "/pub/renamed", os.O_RDONLY)
b = os.open(d + "/pub/renamed", os.O_RDONLY)
os.close(a)
r, w = os.pipe()
c = os.open(d + "/pub/renamed", os.O_RDONLY)
say(len({b, r, w, c}) == 4 and min(a, r, w, c) == a)
os.write(w, b"through home"); say(os.read(r, 100))
say(os.read(c, 4))
for i in range(200):
    q = d + "/pub/t%d" % i
    with open(q, "w") as f:
        f.write("x" * i)
    assert os.stat(q).st_size == i
    os.unlink(q)
say("cycles")
h = os.open(d + "/pub/doomed", os.O_RDWR | os.O_CREAT, 0o600)
os.write(h, b"0123456789")
os.lseek(h, 4, os.SEEK_SET)
os.unlink(d + "/pub/doomed")
say("ready")
sys.stdin.readline()
say(os.read(h, 100))
say(os.lseek(h, 0, os.SEEK_CUR))
os.write(h, b"!")
os.lseek(h, 0, os.SEEK_SET)
say(os.read(h, 100))
say(os.read(c, 100))
"#;

/// A 3-node cluster named `name` whose nodes each have a private `DATA`, every node up.
fn data_cluster(name: &str) -> TestCluster {
    std::fs::create_dir_all(DATA).unwrap();
    let c = TestCluster::up(name, 3, |s| s.private_dirs = vec![PathBuf::from(DATA)]);
    c.wait_all_up();
    c
}

#[test]
fn a_migrated_process_runs_path_calls_on_its_nodes_files_there_with_homes_answers() {
    use std::io::{BufRead, Write};
    if !require_root("dfsa_paths") {
        return;
    }
    let _g = serial();
    let c = data_cluster("tpaths");
    let d1 = c.private_path(1, Path::new(DATA));
    let d3 = c.private_path(3, Path::new(DATA));
    std::fs::create_dir(d3.join("pub")).unwrap();
    std::fs::set_permissions(d3.join("pub"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(d3.join("secret"), "root's").unwrap();
    std::fs::set_permissions(d3.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // A link at node 3 to a name both nodes have: it names node 3's file, through MFS (which
    // shows the target under /mfs/3) as where the process runs.
    let target = Path::new(DATA).join("which");
    std::fs::write(d1.join("which"), "home's").unwrap();
    std::fs::write(d3.join("which"), "node 3's").unwrap();
    std::os::unix::fs::symlink(&target, d3.join("link")).unwrap();

    let before = c.view(3).unwrap().files;
    let mut child = c
        .job(1, &["-3", "/usr/bin/python3", "-c", PATHS, &at3("")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut said = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        said.push(line.trim_end().to_owned());
        line.clear();
        if said.last().is_some_and(|l| l == "ready") {
            break;
        }
    }
    assert_eq!(c.node_of(pid), Some(3), "{said:?}\n{}", c.log(1));
    let after = c.view(3).unwrap().files;
    c.migrate(pid, "home");
    input.write_all(b"\n").unwrap();
    drop(input);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    said.extend(rest.lines().map(str::to_owned));
    let o = child.wait_with_output().unwrap();
    let expect = [
        "exists",
        "0o750",
        "False",
        "made at 3",
        "False",
        "denied",
        "missing",
        target.to_str().unwrap(),
        "node 3's",
        "True",
        "b'through home'",
        "b'made'",
        "cycles",
        "ready",
        "b'456789'",
        "10",
        "b'0123456789!'",
        "b' at 3'",
    ];
    assert_eq!(
        said,
        expect,
        "{}\n{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        c.log(1),
        c.log(3)
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = sh(&c, 1, false, &format!("cat {}", at3("link")));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "node 3's",
        "{}",
        text(&o)
    );
    // The node service's own /proc entries are nobody's business.
    let o = sh(&c, 2, false, "cat /mfs/3/proc/self/status");
    assert!(!o.status.success(), "{}", text(&o));
    // Made at node 3 as its owner, with its mode less its umask; gone what it removed.
    let m = std::fs::metadata(d3.join("pub/renamed")).unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o777), (NOBODY, 0o640));
    assert!(!d3.join("pub/new").exists() && !d3.join("pub/doomed").exists());
    assert!(!d3.join("pub/dir").exists() && !d3.join("pub/t0").exists());
    // The 200 creations, stats and removals ran at node 3, not through MFS from home.
    assert!(
        after.dfsa_calls >= before.dfsa_calls + 600,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.mfs_served < before.mfs_served + 100,
        "the path calls went through MFS: {before:?} -> {after:?}"
    );
}

/// Reads 4 KiB at random places of a file for up to `argv[2]` seconds, then says how many.
const RANDOM_READER: &str = r#"
import os, random, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
t = time.time()
n = 0
while time.time() - t < float(sys.argv[2]):
    os.pread(fd, 4096, random.randrange(0, size - 4096))
    n += 1
print(n, flush=True)
"#;

#[test]
fn a_process_away_that_spends_its_time_on_its_homes_files_comes_home_by_itself() {
    if !require_root("data_home") {
        return;
    }
    let _g = serial();
    let c = data_cluster("tdhome");
    // A file of node 1 only (its private directory), read by a process of node 1 placed on
    // node 2: every read is forwarded home.
    let d1 = c.private_path(1, Path::new(DATA));
    std::fs::write(d1.join("home-big"), mosix_tests::pseudo_random(16 << 20, 9)).unwrap();
    std::fs::set_permissions(d1.join("home-big"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let file = Path::new(DATA).join("home-big");
    let mut reader = c
        .job(
            1,
            &[
                "-2",
                "-l",
                "/usr/bin/python3",
                "-c",
                RANDOM_READER,
                file.to_str().unwrap(),
                "25",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = reader.id();
    let placed = c.eventually(Duration::from_secs(5), || c.node_of(pid) == Some(2));
    let home = placed && c.eventually(Duration::from_secs(20), || c.node_of(pid) == Some(0));
    let log2 = c.log(2);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = reader.wait();
    assert!(placed, "the reader never ran on node 2:\n{}", c.log(1));
    assert!(home, "the reader of its home's file stayed away:\n{log2}");
    assert!(
        log2.contains("balancing (data)"),
        "it came home, but not for its data:\n{log2}"
    );
}

/// Works through phases on the files it is given (see the test below), waiting for a line on
/// its input after each and printing what it saw.
const NATIVE: &str = r#"
import hashlib, os, sys
data, out, homefile = sys.argv[1:4]
def step(*vals):
    print(*vals, flush=True)
    sys.stdin.readline()
# A: files of node 3, opened and used where the process runs.
src = os.open(data, os.O_RDONLY)
dst = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
h = hashlib.sha256()
n = 0
while n < 512 * 1024:
    b = os.read(src, 4096)
    h.update(b)
    n += len(b)
    os.write(dst, b)
p = os.pread(src, 100, 12345)
os.pwrite(dst, p, 7)
os.lseek(src, -4096, os.SEEK_CUR)
os.writev(dst, [b"ab", b"cd"])
# A file of node 3 closed where it runs, once home knew of it (a call home between): the
# number is free again for the next open, a second close fails.
t = os.open(data, os.O_RDONLY)
os.stat("/")
os.close(t)
try:
    os.close(t)
    again = 0
except OSError as e:
    again = e.errno
t2 = os.open(data, os.O_RDONLY)
os.close(t2)
os.stat("/")
step("A", h.hexdigest(), n, os.lseek(src, 0, os.SEEK_CUR), os.lseek(dst, 0, os.SEEK_CUR),
     hashlib.sha256(p).hexdigest(), os.fstat(src).st_size, src, dst, t, again, t2)
# Files of node 3 open where it runs whose names go: removed, and renamed (home opens them when
# it needs them, in phase C, as the process's own open files).
g = os.open(out + ".gone", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(g, b"0123456789")
os.lseek(g, 3, os.SEEK_SET)
os.unlink(out + ".gone")
m = os.open(out + ".was", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(m, b"abcdef")
os.rename(out + ".was", out + ".now")
# B: a file of home opened while away: read, appended to, sought, stat'ed.
hf = os.open(homefile, os.O_RDWR | os.O_APPEND)
first = os.read(hf, 5)
os.write(hf, b"written away\n")
os.lseek(hf, 0, os.SEEK_SET)
whole = os.read(hf, 4096)
st = os.fstat(hf)
step("B", first, whole, st.st_size, os.lseek(hf, 0, os.SEEK_CUR), hf)
# C: a second number for a file of node 3 (one offset for two numbers).
d = os.dup(src)
b = os.read(d, 4096)
step("C", d, hashlib.sha256(b).hexdigest(), os.lseek(src, 0, os.SEEK_CUR))
# D: the rest, and a pipe.
while True:
    b = os.read(src, 65536)
    if not b:
        break
    h.update(b)
    os.write(dst, b)
r, w = os.pipe()
os.write(w, b"pipe")
gone = (os.read(g, 100), os.lseek(g, 0, os.SEEK_CUR), os.write(g, b"!"), os.pread(g, 100, 0))
os.write(m, b"gh")
with open(out + ".now", "rb") as f:
    now = f.read()
os.close(g)
os.close(m)
os.unlink(out + ".now")
print("D", h.hexdigest(), os.lseek(src, 0, os.SEEK_CUR), os.lseek(dst, 0, os.SEEK_CUR),
      os.read(r, 4), r, w, gone, now, flush=True)
"#;

#[test]
fn an_io_job_at_its_datas_node_does_its_file_io_natively_and_sees_what_it_would_at_home() {
    use std::io::{BufRead, Write};
    if !require_root("native file I/O") {
        return;
    }
    let _g = serial();
    let c = data_cluster("tnative");
    let d3 = c.private_path(3, Path::new(DATA));
    let data = mosix_tests::pseudo_random(1 << 20, 11);
    std::fs::write(d3.join("data"), &data).unwrap();
    std::fs::set_permissions(d3.join("data"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(d3.join("pub")).unwrap();
    std::fs::set_permissions(d3.join("pub"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let home_file = c.private_path(1, Path::new(DATA)).join("home.txt");
    let reset_home_file = || {
        std::fs::write(&home_file, b"home's line\n").unwrap();
        std::fs::set_permissions(&home_file, std::fs::Permissions::from_mode(0o666)).unwrap();
    };
    let home_path = format!("{DATA}/home.txt");
    // Runs the phases with `mosrun ARGS`, checking where the process is after each with
    // `at(phase, node)`; what it printed.
    let run = |mosrun: &[&str], out: &str, at: &dyn Fn(&str, u32, &str)| -> Vec<String> {
        let mut args: Vec<&str> = mosrun.to_vec();
        let (data, out) = (at3("data"), at3(out));
        args.extend(["/usr/bin/python3", "-c", NATIVE, &data, &out, &home_path]);
        let mut child = c
            .job(1, &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut input = child.stdin.take().unwrap();
        let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        for phase in ["A", "B", "C", "D"] {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(
                line.starts_with(phase),
                "phase {phase}: {line:?}\n{}",
                c.log(3)
            );
            at(phase, pid, &line);
            lines.push(line);
            if phase != "D" {
                input.write_all(b"\n").unwrap();
            }
        }
        assert!(child.wait().unwrap().success());
        lines
    };

    // At home, locked there: what the program sees.
    reset_home_file();
    let reference = run(&["-L"], "pub/ref", &|_, _, _| {});
    let home_after = std::fs::read(&home_file).unwrap();

    // Declared I/O-bound and placed on node 3 at its start.
    reset_home_file();
    let before = c.view(3).unwrap().files;
    let counted = std::cell::RefCell::new(None);
    let native = run(&["-3", "-i"], "pub/native", &|phase, pid, line| {
        let node = c.node_of(pid);
        match phase {
            // Its own files, and a file of home opened while away: it stays.
            "A" => {
                assert_eq!(node, Some(3), "phase A\n{}", c.log(3));
                // The file it closed at node 3 is closed at home too (its number is the third
                // last it printed).
                let words: Vec<&str> = line.split_whitespace().collect();
                let t: i32 = words[words.len() - 3].parse().unwrap();
                let fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect();
                assert!(
                    !fds.contains(&t),
                    "descriptor {t}, closed at node 3, is open at home: {fds:?}\n{}",
                    c.log(3)
                );
            }
            "B" => {
                assert_eq!(node, Some(3), "phase B\n{}", c.log(3));
                // Phase A's calls, counted from the kernel's count of its calls about once a
                // second while it runs (not while it waits for its input at home).
                c.eventually(Duration::from_secs(5), || {
                    c.view(3).unwrap().files.dfsa_calls >= before.dfsa_calls + 256
                });
                *counted.borrow_mut() = Some(c.view(3).unwrap().files);
            }
            // A second number for a native descriptor: it went home.
            "C" => assert_eq!(node, Some(0), "phase {phase}\n{}", c.log(3)),
            // (It may have ended already.)
            _ => {}
        }
    });
    assert_eq!(native, reference, "node 3's log:\n{}", c.log(3));
    assert_eq!(std::fs::read(&home_file).unwrap(), home_after);
    assert_eq!(
        std::fs::read(d3.join("pub/native")).unwrap(),
        std::fs::read(d3.join("pub/ref")).unwrap()
    );
    // Its 128 reads and 128 writes of phase A ran at node 3 without MFS (counted from the
    // kernel's count of its calls: no notification). (Node 3 asks node 1 for python's own
    // files as it starts: its `mfs_sent`, not `mfs_served`.)
    let at_a = counted.borrow().unwrap();
    assert!(
        at_a.dfsa_calls >= before.dfsa_calls + 256,
        "{before:?} -> {at_a:?}\nnode 3's log:\n{}",
        c.log(3)
    );
    assert!(
        at_a.mfs_served < before.mfs_served + 32,
        "the reads went through MFS: {before:?} -> {at_a:?}"
    );
    assert!(
        c.log(3).contains("runs natively"),
        "node 3 did not let its file I/O run natively:\n{}",
        c.log(3)
    );

    // Descriptors of home's in a tree: reads of its standard input (a file at home) and
    // writes to its standard output, made natively on their placeholders and sent home; a
    // private mapping of the input, read by a `read` right after it (from the mapped copy,
    // standing at the number until the next notified call) and after that (home again).
    reset_home_file();
    // Runs python's `program` with `mosrun ARGS`, its standard input `input` (a file at home);
    // what it printed.
    let python = |mosrun: &[&str], program: &str, input: &Path| -> Vec<u8> {
        let mut args: Vec<&str> = mosrun.to_vec();
        args.extend(["/usr/bin/python3", "-c", program]);
        let out = c
            .job(1, &args)
            .stdin(std::fs::File::open(input).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mosrun:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.log(3)
        );
        out.stdout
    };
    let run =
        |mosrun: &[&str]| String::from_utf8(python(mosrun, PLACEHOLDERS, &home_file)).unwrap();
    let reference = run(&["-L"]);
    let away = run(&["-3", "-i"]);
    assert_eq!(away, reference, "node 3's log:\n{}", c.log(3));
    assert!(
        reference.starts_with("b'home' b\"'s l\" b'ine\\n' b'home' 12\nline 0\n"),
        "{reference}"
    );
    assert!(
        c.log(3).contains("in a tree of its own"),
        "python3 had no tree of its own at node 3:\n{}",
        c.log(3)
    );

    // Many small reads of a larger input and writes of many lines: after the first of each,
    // the supervisor answers them through the trap from what was read ahead and keeps the
    // lines behind; a `pread`, a `readv` and an `lseek` in between are made again and go
    // home. Then a limit on file sizes below what was read: the placeholders' offset, moved
    // by every answered call, goes back to 0 (a write past the limit would fail `EFBIG`:
    // seen before the offset of the stub's placeholders was put back, not only ours).
    let input = c.private_path(1, Path::new(DATA)).join("input");
    std::fs::write(&input, mosix_tests::pseudo_random(300_000, 5)).unwrap();
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = |mosrun: &[&str]| python(mosrun, ANSWERED, &input);
    let reference = run(&["-L"]);
    let before = c.view(3).unwrap().files.dfsa_calls;
    let away = run(&["-3", "-i"]);
    // Its 2 800 reads and writes on home's descriptors are home's data, not node 3's, though
    // node 3's kernel counted them (they were made there first): python's own start counts
    // a few dozen (2 741 were counted before the supervisor left them out).
    std::thread::sleep(Duration::from_secs(1));
    let counted = c.view(3).unwrap().files.dfsa_calls - before;
    assert!(
        counted < 1000,
        "{counted} calls on home's descriptors counted as node 3's"
    );
    assert_eq!(
        String::from_utf8_lossy(&away),
        String::from_utf8_lossy(&reference),
        "node 3's log:\n{}",
        c.log(3)
    );
    assert!(
        reference.ends_with(b"line 499\n") && reference.len() > 500 * 8,
        "{}",
        String::from_utf8_lossy(&reference)
    );
}

/// Reads home's standard input in small pieces, with a `pread`, a `readv` and seeks in
/// between, sets a file size limit below what it has read, and writes many lines (see the
/// test above).
const ANSWERED: &str = r#"
import hashlib, os, resource
h = hashlib.sha256()
for i in range(2000):
    b = os.read(0, 64)
    h.update(b)
    if i == 500:
        h.update(os.pread(0, 100, 7))
    if i == 900:
        b1, b2 = bytearray(10), bytearray(20)
        n = os.readv(0, [b1, b2])
        h.update(bytes(b1) + bytes(b2) + bytes([n]))
    if i == 1200:
        os.lseek(0, 250_000, os.SEEK_SET)
print(h.hexdigest(), os.lseek(0, 0, os.SEEK_CUR), len(os.read(0, 100_000)), flush=True)
for i in range(300):
    os.write(1, b"before the limit %d\n" % i)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
for i in range(500):
    os.write(1, b"line %d\n" % i)
"#;

/// Reads home's standard input around a private mapping of it (see the test above).
const PLACEHOLDERS: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
a = os.read(0, 4)
p = libc.mmap(None, 4096, 1, 2, 0, 0)  # PROT_READ, MAP_PRIVATE
b = os.read(0, 4)
os.stat("/")
c = os.read(0, 4)
print(a, b, c, ctypes.string_at(p, 4), os.lseek(0, 0, os.SEEK_CUR), flush=True)
for i in range(3):
    os.write(1, b"line %d\n" % i)
"#;
