//! Step 6, trust: nothing a migrated program was told is written is lost, and no error is
//! dropped. Writes of a migrated process to home files are written behind (answered at once,
//! sent home later), so each test runs a writer of `nobody` natively at home and again started
//! on node 2 (`mosrun -2`), and compares what the program saw and what the file holds:
//!
//! * a writer that fills a file system sees `ENOSPC` at the same write as at home;
//! * `kill -9` at home of a migrated writer loses none of the records its `write` calls had
//!   returned for, and its death shows only once they are in the file;
//! * two descriptors of one file stay coherent: a write through one is seen by a read through
//!   the other, whatever was read ahead;
//! * a write behind that fails is reported by `close`, and a descriptor whose close failed is
//!   forgotten: later I/O on its number goes to the file opened next;
//! * `O_DIRECT` works.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mosix_tests::{NOBODY, TestCluster, require_root, serial, user_dir};

/// Runs `python3 -c SCRIPT ARGS` as nobody in node 1: natively, or started on node 2.
fn python(c: &TestCluster, migrated: bool, script: &str, args: &[&str]) -> Output {
    let mut a: Vec<&str> = Vec::new();
    if migrated {
        a.extend(["-2", "python3", "-c", script]);
        a.extend(args);
        run(c.job(1, &a))
    } else {
        a.extend(["-c", script]);
        a.extend(args);
        run(c.user_command(1, "python3", &a))
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("running a writer")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A tmpfs of `kib` KiB mounted on a directory of nobody's, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(kib: u32) -> SmallFs {
        let dir = user_dir();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={kib}k,mode=0700,uid={NOBODY},gid={NOBODY}"))
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(st.success(), "mounting a tmpfs");
        SmallFs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn clear(&self) {
        for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes 64 KiB at a time until an error, then closes; says what each step returned.
const FILL: &str = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
total = 0
block = b"m" * 65536
while True:
    try:
        n = os.write(fd, block)
    except OSError as e:
        print("write error", e.errno, "after", total)
        break
    total += n
    if n < len(block):
        print("short write", n, "at", total)
try:
    os.close(fd)
    print("close ok")
except OSError as e:
    print("close error", e.errno)
sys.exit(3)
"#;

#[test]
fn a_migrated_writer_to_a_full_file_system_sees_enospc_as_at_home() {
    if !require_root("a_migrated_writer_to_a_full_file_system_sees_enospc_as_at_home") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("twfull", 2, |_| {});
    c.wait_all_up();
    let fs = SmallFs::new(1024);
    let f = fs.path("f");
    let native = python(&c, false, FILL, &[&f]);
    let native_file = std::fs::read(&f).unwrap();
    assert!(
        String::from_utf8_lossy(&native.stdout).contains("write error 28"),
        "{}",
        text(&native)
    );
    fs.clear();
    let migrated = python(&c, true, FILL, &[&f]);
    let migrated_file = std::fs::read(&f).unwrap();
    assert_eq!(
        (native.status.code(), &native.stdout),
        (migrated.status.code(), &migrated.stdout),
        "native:\n{}\nmigrated:\n{}",
        text(&native),
        text(&migrated)
    );
    assert_eq!(native_file.len(), migrated_file.len());
    assert!(migrated_file == native_file, "the file's contents differ");
    assert!(
        c.log(1).contains("migrated to node 2") || c.log(2).contains("arrived"),
        "the writer did not run on node 2:\n{}",
        c.log(1)
    );
}

#[test]
fn kill_9_at_home_loses_no_byte_the_writer_was_told_it_wrote() {
    if !require_root("kill_9_at_home_loses_no_byte_the_writer_was_told_it_wrote") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("twkill", 2, |_| {});
    c.wait_all_up();
    let dir = user_dir();
    let f = dir.path().join("records");
    for round in 0..3 {
        let _ = std::fs::remove_file(&f);
        let mut child = c
            .job(
                1,
                &["-2", "mosix-probe", "writer", f.to_str().expect("path")],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the writer");
        let pid = child.id();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = u64::from_str_radix(line.trim().trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("the writer said {line:?}"));
        // Where it runs on node 2, and how many records it was told are written.
        assert!(
            c.eventually(Duration::from_secs(10), || c.node_of(pid) == Some(2)),
            "round {round}: the writer is not on node 2"
        );
        let rpid = c.row(pid).and_then(|r| r["remote_pid"].as_u64()).unwrap();
        let counted = || -> u64 {
            let mem = std::fs::File::open(format!("/proc/{rpid}/mem")).unwrap();
            let mut b = [0u8; 8];
            std::os::unix::fs::FileExt::read_exact_at(&mem, &mut b, addr).unwrap();
            u64::from_le_bytes(b)
        };
        // Let it write a while (a little longer each round), then read the count and kill.
        let enough = 2000 + 3000 * round;
        assert!(
            c.eventually(Duration::from_secs(30), || counted() >= enough),
            "round {round}: the writer writes too slowly"
        );
        let told = counted();
        // SAFETY: kill(2) takes two integers.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let t = Instant::now();
        let st = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
        let waited = t.elapsed();
        let mut data = Vec::new();
        std::fs::File::open(&f)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert!(
            data.len() as u64 >= told * 4096,
            "round {round}: the writer was told {told} records were written; the file holds {} bytes ({} records) when its death shows (after {waited:?})\nnode 1:\n{}\nnode 2:\n{}",
            data.len(),
            data.len() / 4096,
            c.log(1),
            c.log(2)
        );
        for (i, rec) in data.chunks(4096).enumerate() {
            if rec.len() < 4096 {
                break;
            }
            let want = (i as u64).to_le_bytes();
            assert!(
                rec.chunks(8).all(|w| w == want),
                "round {round}: record {i} is not whole"
            );
        }
        assert!(
            c.eventually(Duration::from_secs(5), || c.guests_on(2) == 0),
            "round {round}: the writer lives on at node 2"
        );
    }
}

/// Reads through one descriptor, writes through another of the same file, reads on.
const TWO_FDS: &str = r#"
import os, sys
p = sys.argv[1]
with open(p, "wb") as f:
    f.write(bytes(range(256)) * 4096)
a = os.open(p, os.O_RDONLY)
b = os.open(p, os.O_WRONLY)
first = os.read(a, 10)
os.lseek(b, 20, 0)
os.write(b, b"HELLO")
os.lseek(b, 300000, 0)
os.write(b, b"WORLD")
after = os.read(a, 20)
os.lseek(a, 299995, 0)
far = os.read(a, 15)
print(first.hex(), after.hex(), far.hex())
"#;

#[test]
fn two_descriptors_of_one_file_stay_coherent() {
    if !require_root("two_descriptors_of_one_file_stay_coherent") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("twtwo", 2, |_| {});
    c.wait_all_up();
    let dir = user_dir();
    let f = dir.path().join("shared");
    let f = f.to_str().unwrap();
    let native = python(&c, false, TWO_FDS, &[f]);
    assert!(native.status.success(), "{}", text(&native));
    assert!(
        String::from_utf8_lossy(&native.stdout).contains("48454c4c4f"),
        "{}",
        text(&native)
    );
    let migrated = python(&c, true, TWO_FDS, &[f]);
    assert_eq!(native.stdout, migrated.stdout, "{}", text(&migrated));
    assert_eq!(native.status.code(), migrated.status.code());
}

/// Writes, waits for the test to make the file immutable, writes again (behind, when
/// migrated: it fails at home), closes, and opens another file on the same number.
const CLOSE_FAILS: &str = r#"
import os, sys
f, g = sys.argv[1], sys.argv[2]
fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"a")
print("ready", flush=True)
sys.stdin.readline()
try:
    os.write(fd, b"b")
    print("write ok")
except OSError as e:
    print("write error", e.errno)
try:
    os.close(fd)
    print("close ok")
except OSError as e:
    print("close error", e.errno)
fd2 = os.open(g, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
print("same number", fd2 == fd)
os.write(fd2, b"for g")
os.close(fd2)
print("done", flush=True)
"#;

#[test]
fn a_failed_close_is_reported_and_forgets_its_descriptor() {
    if !require_root("a_failed_close_is_reported_and_forgets_its_descriptor") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("twclose", 2, |_| {});
    c.wait_all_up();
    let dir = user_dir();
    let (f, g) = (dir.path().join("f"), dir.path().join("g"));
    let run_one = |migrated: bool| -> String {
        let _ = Command::new("chattr").arg("-i").arg(&f).status();
        let _ = std::fs::remove_file(&f);
        let _ = std::fs::remove_file(&g);
        let (fs, gs) = (f.to_str().unwrap(), g.to_str().unwrap());
        let mut cmd = if migrated {
            c.job(1, &["-2", "python3", "-c", CLOSE_FAILS, fs, gs])
        } else {
            c.user_command(1, "python3", &["-c", CLOSE_FAILS, fs, gs])
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        if migrated {
            assert!(
                c.eventually(Duration::from_secs(10), || c.node_of(child.id()) == Some(2)),
                "not on node 2"
            );
        }
        // The file's writes now fail (EPERM), whoever makes them.
        let st = Command::new("chattr").arg("+i").arg(&f).status().unwrap();
        assert!(st.success(), "chattr +i (the file system must support it)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(child.wait().unwrap().success(), "{line}{rest}");
        let _ = Command::new("chattr").arg("-i").arg(&f).status();
        assert_eq!(std::fs::read(&f).unwrap(), b"a", "{line}{rest}");
        assert_eq!(std::fs::read(&g).unwrap(), b"for g", "{line}{rest}");
        format!("{line}{rest}")
    };
    let native = run_one(false);
    assert!(native.contains("write error 1\n"), "{native}");
    assert!(native.contains("close ok"), "{native}");
    let migrated = run_one(true);
    // Written behind, the failed write is heard at the close (as from NFS), not lost; the
    // number is then free, and the next file gets it and its bytes.
    let heard = migrated.contains("write error 1\n") || migrated.contains("close error 1\n");
    assert!(heard, "the failed write was not reported:\n{migrated}");
    assert!(migrated.contains("same number True"), "{migrated}");
}

/// Writes and reads back a page with O_DIRECT, from page-aligned buffers.
const DIRECT: &str = r#"
import os, sys, mmap
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
w = mmap.mmap(-1, 8192)
w.write(bytes(range(256)) * 32)
n = os.write(fd, w)
os.lseek(fd, 4096, 0)
r = mmap.mmap(-1, 4096)
m = os.readv(fd, [r])
os.close(fd)
print(n, m, r[:8].hex())
"#;

#[test]
fn o_direct_works_migrated() {
    if !require_root("o_direct_works_migrated") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("twdirect", 2, |_| {});
    c.wait_all_up();
    let dir = user_dir();
    let f = dir.path().join("direct");
    let f = f.to_str().unwrap();
    let native = python(&c, false, DIRECT, &[f]);
    assert!(native.status.success(), "{}", text(&native));
    assert_eq!(
        String::from_utf8_lossy(&native.stdout).trim(),
        "8192 4096 0001020304050607"
    );
    let migrated = python(&c, true, DIRECT, &[f]);
    assert_eq!(native.stdout, migrated.stdout, "{}", text(&migrated));
    assert!(Path::new(f).exists());
}
