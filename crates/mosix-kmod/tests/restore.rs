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
    let filter = seccomp::program_bytes(&seccomp::program());
    let id = 2_000_000_000 + spid as u32;
    let setup = restore::StubSetup {
        filter: &filter,
        uid: id,
        gid: id,
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
    let listener = seccomp::Listener::from_fd(restore::take_listener(spid, lfd.unwrap()).unwrap());
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
                listener.allow(n.id).unwrap();
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
