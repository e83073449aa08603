//! Freezing a running program and rebuilding it in another process on this machine.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use mosix_core::NodeId;
use mosix_kmod::freezer::freeze::{self, FreezeOptions};
use mosix_kmod::freezer::restore;
use mosix_kmod::kernel::ptrace;
use nix::sys::ptrace::Options;

fn opts() -> FreezeOptions {
    FreezeOptions {
        home: NodeId::new(1).unwrap(),
        nmigs: 0,
        locked: false,
        under_filter: false,
        cached: None,
        creds: None,
    }
}

#[test]
fn a_frozen_shell_loop_continues_in_another_process() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root (PR_SET_MM_MAP)");
        return;
    }
    // The program: a shell loop that prints its result when done.
    let mut prog = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done; echo done $i",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let frozen = freeze::freeze(prog.id() as i32, &opts()).unwrap();
    let h = frozen.header.clone();
    assert!(!h.vmas.is_empty());
    assert!(h.total_bytes > 0);
    let runs = frozen.runs.clone();
    let mut pages = Vec::new();
    for r in &runs {
        let v = &h.vmas[r.vma as usize];
        let mut b = vec![0u8; r.len as usize];
        frozen.mem.read(v.start + r.offset, &mut b).unwrap();
        pages.push((r.vma, r.offset, b));
    }
    // The stub: any process will do; its stdout is ours to read.
    let mut stub = Command::new("sleep")
        .arg("1000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t = ptrace::seize(stub.id() as i32, Options::empty()).unwrap();
    let t = t.interrupt(|_, _| {}).unwrap();
    let rest = restore::prepare(t, &h, None).unwrap();
    for (vma, off, data) in &pages {
        rest.pages().write(&h.vmas, *vma, *off, data).unwrap();
    }
    let (t, listener) = rest.finish(&h, None).unwrap();
    assert!(listener.is_none());
    t.detach(None).unwrap();
    // The original goes away; the copy finishes the loop and prints.
    prog.kill().unwrap();
    prog.wait().unwrap();
    let mut out = String::new();
    stub.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = stub.wait().unwrap();
    assert_eq!(out.trim(), "done 3000000");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_thawed_process_goes_on_as_if_nothing_happened() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let prog = Command::new("sh")
        .args([
            "-c",
            "sleep 0.3; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo ok $i",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Frozen while it waits for `sleep` (in wait4): the interrupted call must restart.
    let frozen = freeze::freeze(prog.id() as i32, &opts()).unwrap();
    frozen.thaw().unwrap();
    let out = prog.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 100000");
    assert!(out.status.success());
}

#[test]
fn under_the_filter_writes_come_to_the_listener() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    use mosix_kmod::kernel::seccomp;
    let mut prog = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done; echo done $i; exit 7",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let frozen = freeze::freeze(prog.id() as i32, &opts()).unwrap();
    let h = frozen.header.clone();
    let mut pages = Vec::new();
    for r in &frozen.runs {
        let v = &h.vmas[r.vma as usize];
        let mut b = vec![0u8; r.len as usize];
        frozen.mem.read(v.start + r.offset, &mut b).unwrap();
        pages.push((r.vma, r.offset, b));
    }
    let mut stub = Command::new("sleep").arg("1000").spawn().unwrap();
    let spid = stub.id() as i32;
    let t = ptrace::seize(spid, ptrace::SUSPEND_SECCOMP).unwrap();
    let t = t.interrupt(|_, _| {}).unwrap();
    let rest = restore::prepare(t, &h, None).unwrap();
    for (vma, off, data) in &pages {
        rest.pages().write(&h.vmas, *vma, *off, data).unwrap();
    }
    let filter = seccomp::program_bytes(&seccomp::program(None, false));
    let id = 2_000_000_000 + spid as u32;
    let setup = restore::StubSetup {
        filter: &filter,
        uid: id,
        gid: id,
        tree: None,
    };
    let (t, lfd) = rest.finish(&h, Some(&setup)).unwrap();
    // Locked down: its own ids, no capability left in any set, no group.
    let st = procfs::process::Process::new(spid)
        .unwrap()
        .status()
        .unwrap();
    assert_eq!((st.ruid, st.euid, st.suid, st.fuid), (id, id, id, id));
    assert_eq!((st.rgid, st.egid), (id, id));
    assert_eq!(
        (st.capinh, st.capprm, st.capeff, st.capbnd, st.capamb),
        (0, 0, 0, Some(0), Some(0))
    );
    assert!(st.groups.is_empty());
    let listener = seccomp::Listener::from_fd(lfd.unwrap().1);
    t.detach(None).unwrap();
    prog.kill().unwrap();
    prog.wait().unwrap();
    let mem = ptrace::Mem::open(spid).unwrap();
    let mut written = Vec::new();
    let mut exit = None;
    while exit.is_none() {
        let n = listener.recv().unwrap();
        match n.nr as i64 {
            libc::SYS_write => {
                let mut b = vec![0u8; n.args[2] as usize];
                mem.read(n.args[1], &mut b).unwrap();
                written.extend_from_slice(&b);
                listener.reply(n.id, b.len() as i64).unwrap();
            }
            libc::SYS_exit_group => {
                exit = Some(n.args[0]);
                listener.allow(&n).unwrap();
            }
            other => panic!(
                "unexpected call {other} ({})",
                mosix_core::syscalls::name(other as u64)
            ),
        }
    }
    let status = stub.wait().unwrap();
    assert_eq!(String::from_utf8_lossy(&written), "done 3000000\n");
    assert_eq!(exit, Some(7));
    assert_eq!(status.code(), Some(7));
}

/// A child that maps `PAGES` pages of anonymous memory, writes a pattern in every one and, if
/// `share`, forks once more so that another process maps the same pages copy-on-write. It
/// writes the area's address to a pipe and pauses; the test kills it. After the fork, only raw
/// system calls (no allocation: the test harness has threads).
fn holder(share: bool) -> (i32, u64) {
    const PAGES: usize = 300;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes raw system calls and writes its own memory.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: an anonymous private mapping of our own; every page written below lies in it.
        unsafe {
            let len = PAGES * 4096;
            // One page more, given back: nothing is mapped right after the area.
            let p = libc::mmap(
                std::ptr::null_mut(),
                len + 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ) as *mut u8;
            if p as *mut libc::c_void == libc::MAP_FAILED {
                libc::_exit(1);
            }
            libc::munmap(p.add(len).cast(), 4096);
            for i in 0..len {
                *p.add(i) = (i / 4096 + i % 251) as u8;
            }
            if share {
                match libc::fork() {
                    0 => {
                        // The second holder of the pages dies with the first.
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        loop {
                            libc::pause();
                        }
                    }
                    c if c < 0 => libc::_exit(1),
                    _ => {}
                }
            }
            let a = (p as u64).to_le_bytes();
            libc::write(fds[1], a.as_ptr().cast(), 8);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: our end of the pipe.
    unsafe { libc::close(fds[1]) };
    let mut a = [0u8; 8];
    // SAFETY: reading 8 bytes into an 8-byte array.
    let n = unsafe { libc::read(fds[0], a.as_mut_ptr().cast(), 8) };
    // SAFETY: our end of the pipe.
    unsafe { libc::close(fds[0]) };
    assert_eq!(n, 8);
    (pid, u64::from_le_bytes(a))
}

#[test]
fn pages_shared_with_another_process_are_not_read_by_pinning_them() {
    use mosix_core::image::{Vma, VmaKind};
    let (own, own_at) = holder(false);
    let (shared, shared_at) = holder(true);
    let area = |at: u64| Vma {
        start: at,
        end: at + 300 * 4096,
        read: true,
        write: true,
        exec: false,
        kind: VmaKind::Anon,
    };
    let check = |pid: i32, at: u64, exclusive: bool| {
        let vmas = [area(at)];
        let runs = freeze::runs(pid, &vmas).unwrap();
        // Every page is there, in runs no longer than the sender's.
        assert_eq!(runs.iter().map(|r| r.len).sum::<u64>(), 300 * 4096);
        assert!(runs.iter().all(|r| r.len <= freeze::SEND_RUN));
        assert!(
            runs.iter().all(|r| r.exclusive == exclusive),
            "pid {pid}: {runs:?}"
        );
        // Both ways of reading give the same bytes, and they are the pattern.
        let mem = ptrace::Mem::open(pid).unwrap();
        let mut a = vec![0u8; 300 * 4096];
        let mut b = vec![0u8; 300 * 4096];
        mem.read(at, &mut a).unwrap();
        if exclusive {
            mem.read_pinned(at, &mut b).unwrap();
            assert_eq!(a, b);
        }
        assert!(
            a.iter()
                .enumerate()
                .all(|(i, &x)| x == (i / 4096 + i % 251) as u8)
        );
        // Reading did not take the pages out of sharing.
        let again = freeze::runs(pid, &vmas).unwrap();
        assert!(again.iter().all(|r| r.exclusive == exclusive), "{again:?}");
    };
    check(own, own_at, true);
    check(shared, shared_at, false);
    // A page past the area is not there: a pinned read of it fails rather than reading less.
    let mem = ptrace::Mem::open(own).unwrap();
    let mut b = vec![0u8; 301 * 4096];
    assert!(mem.read_pinned(own_at, &mut b).is_err());
    for pid in [own, shared] {
        // SAFETY: signalling and reaping our own children (the shared holder's own child
        // dies with it: PDEATHSIG).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}
