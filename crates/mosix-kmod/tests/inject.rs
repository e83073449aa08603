//! Injection into a real process (needs root or the right to ptrace our own children).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use mosix_core::image::Regs;
use mosix_kmod::kernel::abi::ERESTARTNOHAND;
use mosix_kmod::kernel::inject::{self, read_maps};
use mosix_kmod::kernel::ptrace::{self, Mem, Stopped};
use nix::sys::ptrace::Options;

/// A stopped tracee with an injection area, and what to give back before letting it go.
struct Injected {
    t: Stopped,
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
    let (t, area) = inject::bootstrap(t, &mem, &maps, &regs, &[])
        .map_err(|e| e.1)
        .unwrap();
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
        t,
        regs,
        old_mask,
        mem,
        area,
    } = inject_into(pid);
    let (t, r) = inject::syscall(t, area.site(), &regs, libc::SYS_getpid, [0; 6])
        .map_err(|e| e.1)
        .unwrap();
    assert_eq!(r, i64::from(pid));
    // Write a path into the scratch space and stat it from inside.
    mem.write(area.scratch(), b"/proc/self/exe\0").unwrap();
    let (t, r) = inject::syscall(
        t,
        area.site(),
        &regs,
        libc::SYS_readlink,
        [area.scratch(), area.scratch() + 64, 256, 0, 0, 0],
    )
    .map_err(|e| e.1)
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
    let (t, r) = inject::syscall(t, area.site(), &regs, libc::SYS_getppid, [0; 6])
        .map_err(|e| e.1)
        .unwrap();
    assert_eq!(r, i64::from(std::process::id() as i32));
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
        t,
        regs,
        old_mask,
        area,
        ..
    } = inject_into(pid);
    // The process's own signals are open, as in a deputy.
    t.set_sigmask(0).unwrap();
    let rt = libc::SIGRTMIN() + 1;
    let sender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: kill(2) with two integers.
        unsafe { libc::kill(pid, rt) };
    });
    let mut seen = Vec::new();
    let (t, r) =
        inject::syscall_for_process(t, area.site(), &regs, libc::SYS_pause, [0; 6], |sig, _| {
            seen.push(sig.raw())
        })
        .map_err(|e| e.1)
        .unwrap();
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
