//! Injection into a real process (needs root or the right to ptrace our own children).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use mosix_core::image::Regs;
use mosix_kmod::kernel::abi::ERESTARTNOHAND;
use mosix_kmod::kernel::inject::{self, Held, Release, read_maps};
use mosix_kmod::kernel::ptrace::{self, Mem};
use nix::sys::ptrace::Options;

/// A stopped tracee with an injection area, and what to give back before letting it go.
struct Injected {
    t: Held,
    regs: Regs,
    old_mask: u64,
    mem: Mem,
    area: inject::Area,
}

/// Seizes `pid`, stops it, blocks its signals and maps an injection area into it.
fn inject_into(pid: i32) -> Injected {
    let t = ptrace::seize(pid, Options::empty()).unwrap();
    let t = t.interrupt(|_, _| {}).unwrap();
    let regs = t.regs().unwrap();
    let old_mask = inject::block_signals(&t).unwrap();
    let mem = Mem::open(pid).unwrap();
    let maps = read_maps(pid).unwrap();
    let mut t = Held::new(t, Release::Keep);
    let area = inject::bootstrap(&mut t, &mem, &maps, &regs, &[]).unwrap();
    Injected {
        t,
        regs,
        old_mask,
        mem,
        area,
    }
}

#[test]
fn injected_calls_run_in_the_tracee() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let Injected {
        mut t,
        regs,
        old_mask,
        mem,
        area,
    } = inject_into(pid);
    let r = inject::syscall(&mut t, area.site(), &regs, libc::SYS_getpid, [0; 6]).unwrap();
    assert_eq!(r, i64::from(pid));
    // Write a path into the scratch space and stat it from inside.
    mem.write(area.scratch(), b"/proc/self/exe\0").unwrap();
    let r = inject::syscall(
        &mut t,
        area.site(),
        &regs,
        libc::SYS_readlink,
        [area.scratch(), area.scratch() + 64, 256, 0, 0, 0],
    )
    .unwrap();
    assert!(r > 0);
    let mut buf = vec![0u8; r as usize];
    mem.read(area.scratch() + 64, &mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf).ends_with("sleep"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // Give back the registers and the mask, and let it go (the area stays mapped: unmapping
    // the page a call returns into would leave the tracee nowhere to return to).
    let r = inject::syscall(&mut t, area.site(), &regs, libc::SYS_getppid, [0; 6]).unwrap();
    assert_eq!(r, i64::from(std::process::id() as i32));
    let t = t.disarm().unwrap();
    t.set_regs(&regs).unwrap();
    t.set_sigmask(old_mask).unwrap();
    t.detach(None).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_signal_ends_a_call_run_for_the_process_and_real_time_signals_are_seen() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let Injected {
        mut t,
        regs,
        old_mask,
        area,
        ..
    } = inject_into(pid);
    // The process's own signals are open, as in a deputy.
    t.get().unwrap().set_sigmask(0).unwrap();
    let rt = libc::SIGRTMIN() + 1;
    let sender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: kill(2) with two integers.
        unsafe { libc::kill(pid, rt) };
    });
    let mut seen = Vec::new();
    let r = inject::syscall_for_process(
        &mut t,
        area.site(),
        &regs,
        libc::SYS_pause,
        [0; 6],
        |sig, _| seen.push(sig.raw()),
    )
    .unwrap();
    let t = t.disarm().unwrap();
    sender.join().unwrap();
    // pause() interrupted by a signal: -ERESTARTNOHAND, handed back rather than restarted.
    assert_eq!(r, -i64::from(ERESTARTNOHAND));
    assert_eq!(seen, vec![rt]);
    // The signal was suppressed: the process is still there and stops again on request.
    t.set_regs(&regs).unwrap();
    t.set_sigmask(old_mask).unwrap();
    let t = t.cont(None).unwrap().interrupt(|_, _| {}).unwrap();
    t.detach(None).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The blocked-signal mask and the tracer of `pid`, from /proc/PID/status.
fn mask_and_tracer(pid: i32) -> (u64, i32) {
    let s = procfs::process::Process::new(pid)
        .unwrap()
        .status()
        .unwrap();
    (s.sigblk, s.tracerpid)
}

#[test]
fn a_guard_dropped_on_a_freeze_error_path_puts_the_process_back() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let before = mask_and_tracer(pid);
    let Injected {
        mut t,
        regs,
        old_mask,
        area,
        ..
    } = inject_into(pid);
    assert_ne!(
        mask_and_tracer(pid).0,
        before.0,
        "signals are blocked meanwhile"
    );
    // What a failed freeze does once our area is mapped.
    t.set_release(Release::Unmap {
        area,
        regs,
        mask: old_mask,
    });
    drop(t);
    // Detached, its mask as it was, our area gone, and it sleeps on.
    assert_eq!(mask_and_tracer(pid), (before.0, 0));
    let maps = read_maps(pid).unwrap();
    assert!(
        maps.iter()
            .all(|m| m.end <= area.start || m.start >= area.range().1)
    );
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_guard_dropped_on_a_restore_error_path_kills_the_process() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let t = ptrace::seize(pid, Options::empty()).unwrap();
    let t = t.interrupt(|_, _| {}).unwrap();
    drop(Held::new(t, Release::Kill));
    // Killed and reaped by the guard (it was our child): the pid is gone.
    assert_eq!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    );
    assert!(child.wait().is_err(), "already reaped");
}

/// A tracee in a ptrace stop has not ended: `waitid(WEXITED)` reports the stops of a traced
/// child too (the kernel implies `WUNTRACED` for tracees), and a tracer that took one for an
/// end once declared a live process killed and waited forever for it to die.
#[test]
fn a_stopped_tracee_has_not_ended_and_a_dead_one_has() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let t = ptrace::seize(pid, Options::empty()).unwrap();
    assert!(!t.has_ended(), "a running tracee");
    t.request_interrupt().unwrap();
    // The stop is there to be collected, and it is not an end.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!t.has_ended(), "a tracee in a ptrace stop");
    let s = t.wait().unwrap();
    let t = s.cont(None).unwrap();
    child.kill().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !t.has_ended() {
        assert!(std::time::Instant::now() < deadline, "the end never showed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Not reaped by looking: the end is still there for wait.
    assert!(t.has_ended());
    assert!(t.wait().is_err(), "a dead tracee gives no stop");
    let _ = child.wait();
}
