//! Making a call again, notified: how a guest's trap sends back a path call its own kernel
//! began.
//!
//! A guest with a tree of its own ([`super::tree`]) resolves the path calls of
//! [`mosix_core::syscalls::TREE_PLAIN`] and the like in its own kernel, without a notification.
//! When the path leaves the node's data and enters the trap (a FUSE file system whose every
//! other name belongs to home), the call must be done as before: by the supervisor, notified.
//! A FUSE server cannot make the kernel restart a call (it may not answer `-ERESTART*`), and a
//! filter cannot be told to notify one call it would let through. So the supervisor:
//!
//! 1. seizes the process and asks for a stop (`PTRACE_INTERRUPT`): the process, asleep in the
//!    trap's request, will stop as its call returns, before its next instruction;
//! 2. has the trap fail the request (`EINTR`), and waits for the stop;
//! 3. rewrites the registers so that the same `syscall` instruction runs again, with the call's
//!    number marked [`super::seccomp::AGAIN`] (the x32 bit, which the tree's filter notifies):
//!    `rax` = the number with the mark, `rip` back over the two-byte instruction, `orig_rax`
//!    -1 (no restart logic of the kernel's applies to it), every argument register untouched;
//! 4. lets it go. The call comes to the supervisor as a notification, marked
//!    ([`super::seccomp::Notif::again`]), and is answered as any path call of a guest without
//!    a tree of its own (run here as the owner when its paths are this node's, else at home).
//!
//! No memory of the process is touched and no register it could see changes: `rax`, `rcx`
//! and `r11` are the call's to change. Signals that come meanwhile are taken off at their
//! stops and given back: the first as the process is let go, the others sent again.
//! Measured on this machine with a small C program (a FUSE trap, a child making `openat`s into
//! it): 20–30 µs per call sent back, of which a notification is 5.

use crate::kernel::abi;
use crate::kernel::ptrace;
use crate::kernel::seccomp::AGAIN;
use mosix_core::image::Regs;

/// What [`make_again`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// The call will be made again, notified.
    Made,
    /// The process was not in a call of the kind asked for that failed: it goes on as it was.
    NotInCall,
}

/// Whether a call's result says it was cut short, not done: the trap's `EINTR` or the kernel's
/// restart codes.
fn cut_short(rax: u64) -> bool {
    let r = rax as i64;
    r == -i64::from(libc::EINTR)
        || r == -i64::from(abi::ERESTARTSYS)
        || r == -i64::from(abi::ERESTARTNOINTR)
        || r == -i64::from(abi::ERESTARTNOHAND)
}

/// Makes the call process `pid` is asleep in again, notified, as the module says: seizes it,
/// asks for a stop, runs `answer` (which ends the request it sleeps in, failing it), waits for
/// the stop, and if the call is one of `mine` (by number) and was cut short, rewrites it to be
/// made again. Must run on the thread that may trace the process (the guest's supervisor);
/// nothing else may be tracing it.
pub fn make_again(
    pid: i32,
    mine: impl Fn(u64) -> bool,
    answer: impl FnOnce(),
) -> ptrace::Result<Again> {
    remake(pid, mine, answer, true)
}

/// Makes a call that came marked [`AGAIN`] once more, plain, as [`make_again`] does: for a
/// call the supervisor would let run as made (`SECCOMP_USER_NOTIF_FLAG_CONTINUE` would run it
/// as an x32 call). `answer` ends the notification, failing it with `EINTR`; the same
/// instruction then runs call `nr` unmarked, which the tree's filter lets by (a read or a write
/// on a number where the supervisor has just put the file itself).
pub fn make_plain(pid: i32, nr: u64, answer: impl FnOnce()) -> ptrace::Result<Again> {
    remake(pid, |x| x == nr, answer, false)
}

/// [`make_again`], the number marked or not (`mine` is asked about it unmarked).
fn remake(
    pid: i32,
    mine: impl Fn(u64) -> bool,
    answer: impl FnOnce(),
    mark: bool,
) -> ptrace::Result<Again> {
    let running = match ptrace::seize(pid, nix::sys::ptrace::Options::empty()) {
        Ok(r) => r,
        Err(e) => {
            answer();
            return Err(e);
        }
    };
    if let Err(e) = running.request_interrupt() {
        answer();
        return Err(e);
    }
    answer();
    let mut sigs = Vec::new();
    let stopped = running.wait_interrupt(|s, _| sigs.push(s))?;
    let mut r = stopped.regs()?;
    let nr = r.0[Regs::ORIG_RAX];
    let plain = nr & !u64::from(AGAIN);
    let made = if nr <= u64::from(u32::MAX) && mine(plain) && cut_short(r.0[Regs::RAX]) {
        r.0[Regs::RAX] = if mark {
            plain | u64::from(AGAIN)
        } else {
            plain
        };
        r.0[Regs::RIP] = r.0[Regs::RIP].wrapping_sub(2);
        r.0[Regs::ORIG_RAX] = u64::MAX;
        stopped.set_regs(&r)?;
        Again::Made
    } else {
        Again::NotInCall
    };
    let mut rest = sigs.into_iter();
    stopped.detach(rest.next())?;
    for s in rest {
        let _ = s.send_to(pid);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::seccomp::{
        Listener, install_with_listener, notify_only, program_bytes, take_fd,
    };
    use std::io::{Read, Write};

    /// A child under a filter that notifies `read` marked [`AGAIN`] and allows everything
    /// else reads from an empty pipe; the test makes that read again, answers the notification
    /// with 42, and the child exits 0 if its read returned 42 and the pipe is still the same
    /// descriptor (its arguments came through).
    #[test]
    fn a_call_asleep_is_made_again_notified_with_its_arguments() {
        let prog = notify_only(AGAIN | libc::SYS_read as u32);
        let bytes = program_bytes(&prog);
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let (empty_rd, empty_wr) = nix::unistd::pipe().unwrap();
        let empty = std::os::fd::AsRawFd::as_raw_fd(&empty_rd);
        // SAFETY: the child makes system calls only (prctl, seccomp, write, read, _exit) on
        // values prepared before the fork.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let fd = install_with_listener(&bytes);
                let mut w = std::fs::File::from(wr);
                let _ = w.write_all(&(fd as i32).to_le_bytes());
                let mut b = [0u8; 8];
                // SAFETY: read into a buffer of its size.
                let n = unsafe { libc::read(empty, b.as_mut_ptr().cast(), b.len()) };
                // SAFETY: _exit ends the child at once.
                unsafe { libc::_exit(if n == 42 { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop((wr, empty_wr));
                let mut r = std::fs::File::from(rd);
                let mut b = [0u8; 4];
                r.read_exact(&mut b).unwrap();
                let l = Listener::from_fd(take_fd(child.as_raw(), i32::from_le_bytes(b)).unwrap());
                // Until the child sleeps in its read.
                let asleep = || {
                    std::fs::read_to_string(format!("/proc/{child}/wchan"))
                        .is_ok_and(|w| w.contains("pipe_read"))
                };
                for _ in 0..500 {
                    if asleep() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let mine = |nr: u64| nr == libc::SYS_read as u64;
                let made = make_again(child.as_raw(), mine, || {}).unwrap();
                assert_eq!(made, Again::Made);
                let n = l.recv().unwrap();
                assert!(n.again);
                assert_eq!(i64::from(n.nr), libc::SYS_read);
                assert_eq!(n.args[0], empty as u64);
                assert_eq!(n.args[2], 8);
                l.reply(n.id, 42).unwrap();
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn a_process_in_another_call_goes_on_as_it_was() {
        // SAFETY: the child only sleeps and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                std::thread::sleep(std::time::Duration::from_millis(300));
                // SAFETY: as above.
                unsafe { libc::_exit(7) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                let mine = |nr: u64| nr == libc::SYS_read as u64;
                let made = make_again(child.as_raw(), mine, || {}).unwrap();
                assert_eq!(made, Again::NotInCall);
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 7));
            }
        }
    }
}
