//! Checkpoints (`migrate PID checkpoint|chkstop`, `mosrun -C FILE -N MAX`, `mosrun -I`): the
//! file is written at home with the owner's rights, holds the memory and the descriptor table,
//! and the process goes on (or stops) with nothing changed; a process away comes home for it.

use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Child, Stdio};
use std::time::Duration;

use mosix_tests::{NOBODY, TestCluster, require_root, serial, user_dir};

/// Copies its input to its output in upper case, a line every 20 ms, and says how many lines
/// and their digest. The output is opened for appending, or with a third argument, written
/// from its start (a rewrite from the same offset after a restore gives the same bytes).
const COPIER: &str = r#"
import hashlib, sys, time
src = open(sys.argv[1], "rb")
dst = open(sys.argv[2], "wb" if len(sys.argv) > 3 else "ab")
h = hashlib.sha256()
n = 0
print("ready", flush=True)
for line in src:
    h.update(line)
    dst.write(line.upper())
    dst.flush()
    n += 1
    time.sleep(0.02)
print("done", n, h.hexdigest(), flush=True)
"#;

/// Asks for its own checkpoint through the node's checkpoint socket, and says what it got:
/// `ok` in the running process, `resumed` in one resumed from that checkpoint (its connection
/// is gone there, and the read fails).
const SELF: &str = r#"
import os, socket
total = sum(range(10))
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ.get("MOSIX_RUNDIR", "/run/mosix") + "/checkpoint.sock")
s.sendall(b"checkpoint\n")
try:
    got = s.recv(4096).decode().split()[0]
except OSError:
    got = "resumed"
print("after", got, total, flush=True)
"#;

fn input(lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("line {i} of the input, some words\n"))
        .collect::<String>()
        .into_bytes()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Starts the copier and waits for it to say it is ready.
fn start(c: &TestCluster, node: u16, args: &[&str], files: &[&str]) -> Child {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["/usr/bin/python3", "-c", COPIER]);
    a.extend(files);
    let mut child = c
        .job(node, &a)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.as_mut().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// `mosrun ARGS` as the jobs' user (who owns the checkpoints): whether it succeeded, and all
/// it printed.
fn mosrun(c: &TestCluster, args: &[&str]) -> (bool, String) {
    mosrun_on(c, 1, args)
}

fn mosrun_on(c: &TestCluster, node: u16, args: &[&str]) -> (bool, String) {
    let o = c.user_command(node, "mosrun", args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn inspect(c: &TestCluster, file: &std::path::Path) -> serde_json::Value {
    let (ok, said) = mosrun(c, &["-I", file.to_str().unwrap(), "--json"]);
    assert!(ok, "{said}");
    serde_json::from_str(said.trim()).unwrap()
}

fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|x| x.1.chars().next()))
        .unwrap_or('?')
}

#[test]
fn a_checkpoint_holds_memory_and_descriptors_and_the_process_goes_on_or_stops() {
    if !require_root("checkpoint") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tckpt", 2, |_| {});
    c.wait_all_up();
    let dir = user_dir();
    let (src, dst) = (dir.path().join("in.txt"), dir.path().join("out.txt"));
    let data = input(400);
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&dst, b"").unwrap();
    for f in [&src, &dst] {
        std::os::unix::fs::chown(f, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let base = dir.path().join("ck");
    let base_s = base.to_str().unwrap();
    let files = [src.to_str().unwrap(), dst.to_str().unwrap()];
    let job = start(&c, 1, &["-L", "-C", base_s, "-N", "1"], &files);
    let pid = job.id();
    // Reads it a chunk at a time: let it be in the middle.
    std::thread::sleep(Duration::from_millis(600));

    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "checkpoint", "--json"]);
    assert!(ok, "{said}\n{}", c.log(1));
    let v: serde_json::Value = serde_json::from_str(said.trim()).unwrap();
    let first = base.with_extension("1");
    assert_eq!(v["checkpoint"], first.to_str().unwrap(), "{said}");
    let m = std::fs::metadata(&first).unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o777), (NOBODY, 0o600));
    assert_eq!(m.len(), v["bytes"].as_u64().unwrap());

    let i = inspect(&c, &first);
    assert_eq!(i["whole"], true, "{i}");
    assert_eq!(i["uid"], NOBODY, "{i}");
    assert_eq!(i["pid"], pid, "{i}");
    assert_eq!(i["same_kernel"], true, "{i}");
    assert!(i["command"].as_str().unwrap().contains("python3"), "{i}");
    let fds = i["fds"].as_array().unwrap();
    let by_path = |p: &std::path::Path| {
        fds.iter()
            .find(|f| f["path"] == p.to_str().unwrap())
            .unwrap_or_else(|| panic!("{} not among {i}", p.display()))
    };
    let r = by_path(&src);
    assert_eq!(
        (&r["kind"], &r["changed"]),
        (&"file".into(), &serde_json::Value::Null)
    );
    let off = r["offset"].as_u64().unwrap();
    assert!(off > 0 && off <= data.len() as u64, "{r}");
    let w = by_path(&dst);
    assert!(w["what"].as_str().unwrap().contains("append"), "{w}");
    // stdout is a pipe to this test: it cannot be reopened, and says so.
    let out = fds.iter().find(|f| f["fd"] == 1).unwrap();
    assert_eq!(out["restorable"], false, "{out}");

    // chkstop: the second file replaces the first (-N 1) and the process stops.
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "chkstop"]);
    assert!(ok && said.contains("stopped"), "{said}");
    let second = base.with_extension("2");
    assert!(second.exists() && !first.exists(), "{said}");
    assert!(
        c.eventually(Duration::from_secs(5), || state(pid) == 'T'),
        "state {}",
        state(pid)
    );
    // A damaged copy is refused by name.
    let mut bytes = std::fs::read(&second).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    let bad = dir.path().join("bad");
    std::fs::write(&bad, &bytes).unwrap();
    let (ok, said) = mosrun(&c, &["-I", bad.to_str().unwrap()]);
    assert!(!ok && said.contains("NO"), "{said}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let o = job.wait_with_output().unwrap();
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stdout);
    assert_eq!(said.trim(), format!("done 400 {}", sha256_hex(&data)));
    assert_eq!(std::fs::read(&dst).unwrap(), data.to_ascii_uppercase());

    // A process on node 2 comes home for its checkpoint, then goes on.
    std::fs::write(&dst, b"").unwrap();
    let job = start(&c, 1, &["-2", "-C", base_s], &files);
    let pid = job.id();
    assert!(c.eventually(Duration::from_secs(10), || c.node_of(pid) == Some(2)));
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "checkpoint"]);
    assert!(ok, "{said}\n{}", c.log(1));
    let i = inspect(&c, &base.with_extension("1"));
    assert_eq!(i["whole"], true, "{i}");
    let o = job.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("done 400 {}", sha256_hex(&data))
    );
    assert_eq!(std::fs::read(&dst).unwrap(), data.to_ascii_uppercase());

    // -A 10s -N 2: a checkpoint every 10 s, the two newest kept, each whole.
    let long = dir.path().join("long.txt");
    std::fs::write(&long, input(2000)).unwrap();
    std::os::unix::fs::chown(&long, Some(NOBODY), Some(NOBODY)).unwrap();
    let every = dir.path().join("every");
    let files = [long.to_str().unwrap(), dst.to_str().unwrap()];
    let mut job = start(
        &c,
        1,
        &["-C", every.to_str().unwrap(), "-A", "10s", "-N", "2"],
        &files,
    );
    let nth = |n: u32| every.with_extension(n.to_string());
    assert!(
        c.eventually(Duration::from_secs(40), || nth(3).exists()),
        "{}",
        c.log(1)
    );
    // The oldest goes once the newest is whole: for a moment there are three.
    assert!(
        c.eventually(Duration::from_secs(5), || !nth(1).exists()),
        "{}",
        c.log(1)
    );
    assert!(nth(2).exists());
    let t = |n: u32| std::fs::metadata(nth(n)).unwrap().modified().unwrap();
    let gap = t(3).duration_since(t(2)).unwrap().as_secs_f64();
    assert!((8.0..14.0).contains(&gap), "{gap} s between two");
    for n in [2, 3] {
        let i = inspect(&c, &nth(n));
        assert_eq!(i["whole"], true, "{i}");
        assert!(i["why"].as_str().unwrap().contains("periodic"), "{i}");
    }
    job.kill().unwrap();
    let _ = job.wait();
}

#[test]
fn a_job_checkpointed_at_home_or_away_then_killed_resumes_on_another_node_identically() {
    if !require_root("checkpoint") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tckrs", 2, |_| {});
    c.wait_all_up();
    let dir = user_dir();
    let src = dir.path().join("in.txt");
    let data = input(300);
    std::fs::write(&src, &data).unwrap();
    std::os::unix::fs::chown(&src, Some(NOBODY), Some(NOBODY)).unwrap();
    let expected = format!("done 300 {}", sha256_hex(&data));
    // At home on node 1, resumed on node 2; then away on node 2, resumed on node 1.
    for (start_args, resume_on, tag) in [(&["-L"][..], 2u16, "home"), (&["-2"][..], 1u16, "away")] {
        let dst = dir.path().join(format!("out-{tag}.txt"));
        let base = dir.path().join(format!("ck-{tag}"));
        let files = [src.to_str().unwrap(), dst.to_str().unwrap(), "rewrite"];
        let mut args = start_args.to_vec();
        args.extend(["-C", base.to_str().unwrap()]);
        let mut job = start(&c, 1, &args, &files);
        let pid = job.id();
        if tag == "away" {
            assert!(c.eventually(Duration::from_secs(10), || c.node_of(pid) == Some(2)));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "checkpoint"]);
        assert!(ok, "{tag}: {said}\n{}", c.log(1));
        // It goes on a while, writing more, then dies.
        std::thread::sleep(Duration::from_millis(500));
        job.kill().unwrap();
        let _ = job.wait();
        let file = base.with_extension("1");
        let (ok, said) = mosrun_on(&c, resume_on, &["-R", file.to_str().unwrap()]);
        assert!(ok, "{tag}: {said}\n{}\n{}", c.log(resume_on), c.log(1));
        // Its standard output was a pipe to this test: it is the resuming mosrun's.
        assert!(said.contains(&expected), "{tag}: {said}");
        assert!(said.contains("writes it again"), "{tag}: {said}");
        assert_eq!(
            std::fs::read(&dst).unwrap(),
            data.to_ascii_uppercase(),
            "{tag}"
        );
    }
    // A compressor, checkpointed while it runs on node 2 (it comes home for it), killed, and
    // resumed on node 2: the same bytes as gzip run straight through.
    let raw = dir.path().join("raw.bin");
    let mut x: u64 = 7;
    let noise: Vec<u8> = (0..48 << 20)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8 & 0x3f
        })
        .collect();
    std::fs::write(&raw, &noise).unwrap();
    let gz = dir.path().join("raw.gz");
    std::fs::write(&gz, b"").unwrap();
    for f in [&raw, &gz] {
        std::os::unix::fs::chown(f, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // From standard input, as the job reads it (no name nor time in the header).
    let straight = std::process::Command::new("gzip")
        .arg("-9")
        .stdin(std::fs::File::open(&raw).unwrap())
        .output()
        .unwrap()
        .stdout;
    let base = dir.path().join("gzck");
    let line = format!("exec gzip -9 < {} > {}", raw.display(), gz.display());
    let mut job = c
        .job(
            1,
            &["-2", "-C", base.to_str().unwrap(), "/bin/sh", "-c", &line],
        )
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = job.id();
    assert!(c.eventually(Duration::from_secs(10), || c.node_of(pid) == Some(2)));
    std::thread::sleep(Duration::from_millis(800));
    let (ok, said) = c.said(1, "migrate", &[&pid.to_string(), "checkpoint"]);
    assert!(ok, "gzip: {said}\n{}", c.log(1));
    std::thread::sleep(Duration::from_millis(300));
    job.kill().unwrap();
    let _ = job.wait();
    let file = base.with_extension("1");
    let (ok, said) = mosrun_on(&c, 2, &["-R", file.to_str().unwrap()]);
    assert!(ok, "gzip: {said}\n{}", c.log(2));
    let got = std::fs::read(&gz).unwrap();
    let first = got.iter().zip(&straight).position(|(a, b)| a != b);
    assert!(
        got == straight,
        "gzip: {} bytes, {} expected, first difference at {first:?}\n{said}\n{}",
        got.len(),
        straight.len(),
        c.log(1)
    );

    // A process asks for its own checkpoint, goes on, and resumed from it knows it was.
    let base = dir.path().join("self");
    let o = c
        .job(
            1,
            &[
                "-L",
                "-C",
                base.to_str().unwrap(),
                "/usr/bin/python3",
                "-c",
                SELF,
            ],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && said.trim() == "after ok 45",
        "{said}\n{}",
        c.log(1)
    );
    let file = base.with_extension("1");
    let (ok, said) = mosrun_on(&c, 2, &["-R", file.to_str().unwrap()]);
    assert!(
        ok && said.contains("after resumed 45"),
        "{said}\n{}",
        c.log(2)
    );

    // An input changed since: refused by name, unless --changed-ok.
    let mut more = data.clone();
    more.extend_from_slice(b"one more line\n");
    std::fs::write(&src, &more).unwrap();
    let file = dir.path().join("ck-home.1");
    let (ok, said) = mosrun_on(&c, 2, &["-R", file.to_str().unwrap()]);
    assert!(
        !ok && said.contains("in.txt") && said.contains("size"),
        "{said}"
    );
}
