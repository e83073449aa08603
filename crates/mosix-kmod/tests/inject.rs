//! Injection into a real process (needs root or the right to ptrace our own children).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use mosix_kmod::inject::{self, read_maps};
use mosix_kmod::ptrace::{self, Mem};
use nix::sys::ptrace::Options;

#[test]
fn injected_calls_run_in_the_tracee() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let t = ptrace::seize(pid, Options::empty()).unwrap();
    let t = t.interrupt(|_, _| {}).unwrap();
    let regs = t.regs().unwrap();
    let old_mask = inject::block_signals(&t).unwrap();
    let mem = Mem::open(pid).unwrap();
    let maps = read_maps(pid).unwrap();
    let (t, area) = inject::bootstrap(t, &mem, &maps, &regs, &[])
        .map_err(|e| e.1)
        .unwrap();
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
    // Remove our area, give back the registers and the mask, and let it go.
    let (t, r) = inject::syscall(t, area.site(), &regs, libc::SYS_getppid, [0; 6])
        .map_err(|e| e.1)
        .unwrap();
    assert_eq!(r, i64::from(std::process::id() as i32));
    let t = {
        // munmap of the page we execute from: use a borrowed site elsewhere? The area's own
        // syscall returns into the unmapped int3, so detach with the old registers instead.
        t
    };
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
    let t = ptrace::seize(pid, Options::empty()).unwrap();
    let t = t.interrupt(|_, _| {}).unwrap();
    let regs = t.regs().unwrap();
    let old_mask = inject::block_signals(&t).unwrap();
    let mem = Mem::open(pid).unwrap();
    let maps = read_maps(pid).unwrap();
    let (t, area) = inject::bootstrap(t, &mem, &maps, &regs, &[])
        .map_err(|e| e.1)
        .unwrap();
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
    assert_eq!(r, -514);
    assert_eq!(seen, vec![rt]);
    // The signal was suppressed: the process is still there and stops again on request.
    t.set_regs(&regs).unwrap();
    t.set_sigmask(old_mask).unwrap();
    let t = t.cont(None).unwrap().interrupt(|_, _| {}).unwrap();
    t.detach(None).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
