//! The seccomp-BPF program that splits a migrated process's system calls, and the user-notify
//! interface through which the remote node's supervisor receives the calls that must go home.
//!
//! The program looks at the architecture and the call number, and at arguments only where a
//! call's class depends on them (`mmap`'s flags, `prctl`'s option, the descriptor numbers of a
//! native range, the directory descriptors of a tree's path calls), so the kernel's per-call
//! cache of "always allowed" (Linux 5.11) answers local calls without running the program at
//! all. Everything not local is `SECCOMP_RET_USER_NOTIF`: the process sleeps until the
//! supervisor answers.
//!
//! The filter is installed with `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the
//! supervisor has received a call, only a fatal signal interrupts the wait. Without it, a signal
//! arriving while a forwarded `read` runs at home would cancel the notification and the kernel
//! would restart the call — a second read, and the data of the first lost.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use mosix_core::image::{MAX_NATIVE_EXCEPT, NativeIo};
use mosix_core::syscalls;

use linux_raw_sys::ptrace::{AUDIT_ARCH_X86_64, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP};

/// `SECCOMP_RET_ALLOW`.
const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
/// `SECCOMP_RET_USER_NOTIF`.
const RET_USER_NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;
/// `SECCOMP_RET_KILL_PROCESS`.
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
/// `SECCOMP_RET_ERRNO` with `ENOSYS`.
const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// `SECCOMP_SET_MODE_FILTER`, the `seccomp(2)` operation that installs a filter.
pub const SET_MODE_FILTER: u64 = libc::SECCOMP_SET_MODE_FILTER as u64;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: `seccomp(2)` returns a listener descriptor.
pub const FLAG_NEW_LISTENER: u64 = linux_raw_sys::ptrace::SECCOMP_FILTER_FLAG_NEW_LISTENER as u64;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`: once received, only a fatal signal interrupts.
pub const FLAG_WAIT_KILLABLE_RECV: u64 =
    linux_raw_sys::ptrace::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV as u64;

/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: the filter does not turn on the Speculative Store Bypass
/// mitigation for the process. A kernel whose `spec_store_bypass_disable` is `seccomp` (the
/// default before 5.16) otherwise makes every guest run with SSBD, slower than the same process
/// at home, where it has no filter; with it, the guest runs as it would at home.
pub const FLAG_SPEC_ALLOW: u64 = linux_raw_sys::ptrace::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u64;

/// One BPF instruction (`struct sock_filter`, from `linux-raw-sys`).
pub type Insn = linux_raw_sys::ptrace::sock_filter;

/// `BPF_LD | BPF_W | BPF_ABS`: load the 32-bit word at a constant offset of `seccomp_data`.
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JSET | BPF_K`.
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
/// `BPF_JMP | BPF_JA`: jump `k` instructions ahead.
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const fn ld(off: u32) -> Insn {
    Insn {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: off,
    }
}
const fn ret(k: u32) -> Insn {
    Insn {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}
const fn jmp(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}
const fn alu_and(k: u32) -> Insn {
    Insn {
        code: (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The mark of a call made again ([`super::again`]): the x32 bit of the call number
/// (`__X32_SYSCALL_BIT`). The filter of a process with a tree of its own notifies the calls of
/// its tree carrying it, and [`Listener::recv`] takes it off: the call is the 64-bit one, made
/// by the same instruction with the same arguments. A process that sets the bit itself gets
/// what the plain call would get from the supervisor — no more.
pub const AGAIN: u32 = 0x4000_0000;

/// The numbers of every call a tree runs natively.
fn tree_calls() -> Vec<u32> {
    syscalls::TREE_PLAIN
        .iter()
        .chain(&syscalls::TREE_AT)
        .chain(&syscalls::NATIVE_IO)
        .filter_map(|s| u32::try_from(s.id()).ok())
        .collect()
}

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
const OFF_ARCH: u32 = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
/// The low half of the first argument (little-endian).
const OFF_ARG0_LO: u32 = std::mem::offset_of!(libc::seccomp_data, args) as u32;
/// The low half of the third argument (little-endian).
const OFF_ARG2_LO: u32 =
    (std::mem::offset_of!(libc::seccomp_data, args) + 2 * std::mem::size_of::<u64>()) as u32;
/// The low half of the fourth argument (little-endian).
const OFF_ARG3_LO: u32 =
    (std::mem::offset_of!(libc::seccomp_data, args) + 3 * std::mem::size_of::<u64>()) as u32;

/// Builds the filter: kill anything that is not x86_64 (a 32-bit `int 0x80` call: its numbers
/// and layouts are another ABI, which we cannot forward), answer x32 calls `ENOSYS` (as a kernel
/// without x32 support does), allow the local calls, allow `mmap` of private anonymous memory,
/// send everything else to the supervisor.
///
/// With `native`, the file I/O of [`syscalls::NATIVE_IO`] on a descriptor number of its range
/// is allowed too: it runs in this kernel with no notification. The supervisor keeps every
/// such number either free or one of the process's files opened here, and takes the process
/// home before anything else would stand there (`split::remote`). The number is compared as
/// the kernel reads it, its low 32 bits (`unsigned int fd`): a negative one is in the range
/// and fails here with `EBADF`, as it would at home.
///
/// With `tree` too (and a range), the process has a tree of its own ([`super::tree`]): the
/// path calls of [`syscalls::TREE_PLAIN`] run natively, and the reads and writes whatever
/// their descriptor (every number home uses holds a placeholder of the trap), those of
/// [`syscalls::TREE_AT`] (and `close`) when their directory descriptors
/// ([`syscalls::TREE_AT2`]: both) are `AT_FDCWD` or numbers of the range; and a call of those
/// made again with [`AGAIN`] set in its number — by the trap, through [`super::again`] — is
/// notified, where any other x32 number is answered `ENOSYS`.
pub fn program(native: Option<&NativeIo>, tree: bool) -> Vec<Insn> {
    let tree = tree && native.is_some();
    let prctl = libc::SYS_prctl as u32;
    // prctl is local but for a few options ([`syscalls::prctl_class`]): it has a test of its
    // own below, and is not in the chain of calls allowed whatever their arguments.
    let mut local: Vec<u32> = syscalls::local_calls()
        .into_iter()
        .filter(|nr| *nr != prctl)
        .collect();
    if tree {
        // Whatever their arguments: the kernel's action cache then lets the reads and writes
        // by without running this program (60-75 ns a call here, docs/mfs.md).
        local.extend(
            syscalls::TREE_PLAIN
                .iter()
                .chain(&syscalls::NATIVE_IO)
                .filter_map(|s| u32::try_from(s.id()).ok()),
        );
    }
    let mmap = libc::SYS_mmap as u32;
    let mut p = vec![
        ld(OFF_ARCH),
        jmp(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        ret(RET_KILL_PROCESS),
        ld(OFF_NR),
    ];
    if tree {
        // x32 numbers (bit 30): a tree's call made again is notified, any other is ENOSYS.
        let again: Vec<u32> = tree_calls();
        let m = again.len();
        p.push(jmp(BPF_JGE_K, AGAIN, 0, (m + 3) as u8));
        p.push(alu_and(!AGAIN));
        for (i, nr) in again.iter().enumerate() {
            p.push(jmp(BPF_JEQ_K, *nr, (m - i) as u8, 0));
        }
        p.push(ret(RET_ENOSYS));
        p.push(ret(RET_USER_NOTIF));
    } else {
        // x32 system calls (bit 30).
        p.push(jmp(BPF_JGE_K, AGAIN, 0, 1));
        p.push(ret(RET_ENOSYS));
    }
    // The native range: its first number and the numbers left out of it (bounded by
    // MAX_NATIVE_EXCEPT when it came; a longer list is cut to an empty range).
    let (from, except): (u32, &[u32]) = match native {
        Some(range) if range.except.len() <= MAX_NATIVE_EXCEPT => (range.from, &range.except),
        _ => (u32::MAX, &[]),
    };
    if tree {
        // The calls with a second directory descriptor (the third argument): to the
        // supervisor unless it is AT_FDCWD or of the range; the first is tested below.
        let two: Vec<u32> = syscalls::TREE_AT2
            .iter()
            .filter_map(|s| u32::try_from(s.id()).ok())
            .collect();
        let (m, e) = (two.len(), except.len());
        for (i, nr) in two.iter().enumerate() {
            p.push(jmp(BPF_JEQ_K, *nr, (m - i) as u8, 0));
        }
        // Over the test: the load, the range, the left-out numbers, the reload, the jump, the
        // notification.
        p.push(jmp(BPF_JA, (e + 5) as u32, 0, 0));
        p.push(ld(OFF_ARG2_LO));
        p.push(jmp(BPF_JGE_K, from, 0, (e + 2) as u8));
        for (j, x) in except.iter().enumerate() {
            p.push(jmp(BPF_JEQ_K, *x, (e + 1 - j) as u8, 0));
        }
        p.push(ld(OFF_NR));
        p.push(jmp(BPF_JA, 1, 0, 0));
        p.push(ret(RET_USER_NOTIF));
    }
    if native.is_some() {
        // A chain of tests of the native calls, each jumping to the descriptor test after
        // it; no match jumps over that test to the rest of the program.
        let calls: Vec<u32> = if tree {
            &syscalls::TREE_AT[..]
        } else {
            &syscalls::NATIVE_IO[..]
        }
        .iter()
        .filter_map(|s| u32::try_from(s.id()).ok())
        .collect();
        let m = calls.len();
        for (i, nr) in calls.iter().enumerate() {
            let to_test = (m - i - 1) + 1;
            p.push(jmp(BPF_JEQ_K, *nr, u8::try_from(to_test).unwrap_or(0), 0));
        }
        let e = except.len();
        // Over: the descriptor's load, its two tests, the left-out numbers, the allow.
        p.push(jmp(BPF_JA, (e + 3) as u32, 0, 0));
        p.push(ld(OFF_ARG0_LO));
        p.push(jmp(BPF_JGE_K, from, 0, (e + 1) as u8));
        for (j, x) in except.iter().enumerate() {
            p.push(jmp(BPF_JEQ_K, *x, (e - j) as u8, 0));
        }
        p.push(ret(RET_ALLOW));
        // Not in the range: the call number again, for the rest of the program.
        p.push(ld(OFF_NR));
    }
    // A linear chain of "allow" tests. `local` is short (about fifty calls), and allowed calls
    // never reach this program once the kernel has cached them.
    let n = local.len();
    for (i, nr) in local.iter().enumerate() {
        // Jump to the ALLOW at the end of the chain when equal.
        // The rest of the chain + the prctl block (6) + the mmap block (4) + notify.
        let to_allow = (n - i - 1) + 6 + 5;
        p.push(jmp(
            BPF_JEQ_K,
            *nr,
            u8::try_from(to_allow).unwrap_or(255),
            0,
        ));
    }
    // prctl: the death-signal options go to the supervisor, the others are allowed.
    p.push(jmp(BPF_JEQ_K, prctl, 0, 5));
    p.push(ld(OFF_ARG0_LO));
    p.push(jmp(BPF_JEQ_K, libc::PR_SET_PDEATHSIG as u32, 2, 0));
    p.push(jmp(BPF_JEQ_K, libc::PR_GET_PDEATHSIG as u32, 1, 0));
    p.push(ret(RET_ALLOW));
    p.push(ret(RET_USER_NOTIF));
    // mmap: shared (MAP_SHARED = 1, MAP_SHARED_VALIDATE = 3: bit 0; MAP_PRIVATE is 2) or of a
    // file (no MAP_ANONYMOUS) goes to the supervisor.
    p.push(jmp(BPF_JEQ_K, mmap, 0, 3));
    p.push(ld(OFF_ARG3_LO));
    p.push(jmp(BPF_JSET_K, libc::MAP_SHARED as u32, 1, 0));
    p.push(jmp(BPF_JSET_K, libc::MAP_ANONYMOUS as u32, 1, 0));
    p.push(ret(RET_USER_NOTIF));
    p.push(ret(RET_ALLOW));
    p
}

/// The program as the bytes of its instructions, for writing into a process.
pub fn program_bytes(p: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() * 8);
    for i in p {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    out
}

/// A received notification: which call, with which arguments, from which process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notif {
    /// The notification id (to answer).
    pub id: u64,
    /// The pid (in our namespace) of the caller.
    pub pid: u32,
    /// The call number (without [`AGAIN`]).
    pub nr: i32,
    /// Made again: a call of a tree its trap sent back ([`super::again`]), notified because its
    /// number carried [`AGAIN`]. It must be answered, never let through ([`Listener::allow`]).
    pub again: bool,
    /// The instruction pointer.
    pub ip: u64,
    /// The arguments.
    pub args: [u64; 6],
}

/// The listening end of a process's filter.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Takes ownership of a listener descriptor.
    pub fn from_fd(fd: OwnedFd) -> Listener {
        Listener { fd }
    }

    /// The descriptor, for poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Asks the kernel to hand the CPU directly from the caller to us and back (Linux 6.6):
    /// without it, each notification costs two cross-CPU wakeups (31 µs here instead of 5).
    pub fn sync_wakeups(&self) -> std::io::Result<()> {
        // SAFETY: SECCOMP_IOCTL_NOTIF_SET_FLAGS takes the flag word itself as its argument (not
        // a pointer); nothing of ours is read or written.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                u64::from(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP),
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives the next notification (blocks).
    pub fn recv(&self) -> std::io::Result<Notif> {
        let mut n = libc::seccomp_notif {
            id: 0,
            pid: 0,
            flags: 0,
            data: libc::seccomp_data {
                nr: 0,
                arch: 0,
                instruction_pointer: 0,
                args: [0; 6],
            },
        };
        loop {
            // SAFETY: SECCOMP_IOCTL_NOTIF_RECV fills a `struct seccomp_notif`, which `n` is
            // (zeroed, as the kernel requires), valid for the call.
            let r = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    &raw mut n,
                )
            };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        // Only a tree's calls come with the mark (the filter answers any other x32 call).
        let again = n.data.nr as u32 & AGAIN != 0;
        Ok(Notif {
            id: n.id,
            pid: n.pid,
            nr: (n.data.nr as u32 & !AGAIN) as i32,
            again,
            ip: n.data.instruction_pointer,
            args: n.data.args,
        })
    }

    fn send_raw(&self, id: u64, val: i64, error: i32, flags: u32) -> std::io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads a `struct seccomp_notif_resp`, which `resp` is,
        // valid for the call.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &raw const resp,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Answers a notification with a return value (or a negative errno).
    pub fn reply(&self, id: u64, ret: i64) -> std::io::Result<()> {
        if (-4095..0).contains(&ret) {
            self.send_raw(id, 0, ret as i32, 0)
        } else {
            self.send_raw(id, ret, 0, 0)
        }
    }

    /// Installs our descriptor `src` into the process at number `newfd` (replacing what is
    /// there), as part of answering notification `id` (Linux 5.9, `SECCOMP_IOCTL_NOTIF_ADDFD`
    /// with `SECCOMP_ADDFD_FLAG_SETFD`).
    pub fn add_fd(&self, id: u64, src: RawFd, newfd: i32) -> std::io::Result<i32> {
        self.add_fd_cloexec(id, src, newfd, false)
    }

    /// [`Listener::add_fd`], with the new descriptor's close-on-exec flag set as `cloexec`
    /// says.
    pub fn add_fd_cloexec(
        &self,
        id: u64,
        src: RawFd,
        newfd: i32,
        cloexec: bool,
    ) -> std::io::Result<i32> {
        self.addfd(
            id,
            src,
            newfd,
            cloexec,
            libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        )
    }

    fn addfd(
        &self,
        id: u64,
        src: RawFd,
        newfd: i32,
        cloexec: bool,
        flags: u32,
    ) -> std::io::Result<i32> {
        let mut a = libc::seccomp_notif_addfd {
            id,
            flags,
            srcfd: src as u32,
            newfd: newfd as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: SECCOMP_IOCTL_NOTIF_ADDFD reads a `struct seccomp_notif_addfd`, which `a`
        // is, valid for the call; `src` is a descriptor we own.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                &raw mut a,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// Lets the kernel run the call as the process made it. Never a call made again
    /// ([`Notif::again`]): its number carries the x32 bit, and the kernel would run it as an
    /// x32 call; it is answered `ENOSYS` instead (the supervisor answers those itself).
    pub fn allow(&self, n: &Notif) -> std::io::Result<()> {
        if n.again {
            return self.reply(n.id, -i64::from(libc::ENOSYS));
        }
        self.send_raw(n.id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
    }
}

/// Takes a copy of descriptor `fd` of process `pid` (pidfd_getfd, Linux 5.6; needs the right to
/// ptrace it).
pub fn take_fd(pid: i32, fd: RawFd) -> std::io::Result<OwnedFd> {
    let pidfd = pidfd_open(pid)?;
    getfd(&pidfd, fd)
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `pidfd_getfd(pidfd, fd, 0)`.
pub fn getfd(pidfd: &OwnedFd, fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags 0, and returns a new
    // descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// A filter that sends call `nr` (its number as the filter sees it: with the x32 bit for a
/// call made again) to the listener and allows everything else: for measurements and tests.
pub fn notify_only(nr: u32) -> [Insn; 4] {
    [
        ld(OFF_NR),
        jmp(BPF_JEQ_K, nr, 0, 1),
        ret(RET_USER_NOTIF),
        ret(RET_ALLOW),
    ]
}

/// Installs the filter of `bytes` ([`program_bytes`]) on the calling thread, after
/// `no_new_privs`, and returns its listener's number (negative: the error). System calls only:
/// fit for a child between `fork` and `_exit`.
pub fn install_with_listener(bytes: &[u8]) -> i64 {
    let fprog = libc::sock_fprog {
        len: (bytes.len() / std::mem::size_of::<Insn>()) as u16,
        filter: bytes.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl and seccomp calls; the program is valid for the call.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &raw const fprog,
        )
    }
}

/// The mean round trip of a seccomp user notification on this machine, in nanoseconds: a
/// child process under a filter that sends `getppid` to a listener makes `n` such calls, which
/// this process answers (with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` if `sync`). What every call
/// of a migrated process that its supervisor must see costs beside the call itself (mtune,
/// the probe of the benchmarks).
///
/// It forks; the child only makes system calls and writes to a pipe before it exits, so the
/// caller may have other threads.
pub fn notify_round_trip_ns(n: u64, sync: bool) -> std::io::Result<u64> {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    // A filter that sends getppid to the listener and allows everything else.
    let prog = notify_only(libc::SYS_getppid as u32);
    let bytes = program_bytes(&prog);
    let n = n.max(1);
    let (rd, wr) = nix::unistd::pipe()?;
    // SAFETY: the child only makes system calls (prctl, seccomp, write, nanosleep, getppid,
    // exit) on values prepared before the fork, so it touches no state another thread of the
    // parent could have held locked.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let fd = install_with_listener(&bytes);
            let mut w = std::fs::File::from(wr);
            let _ = w.write_all(&(fd as i32).to_le_bytes());
            std::thread::sleep(Duration::from_millis(100));
            for _ in 0..100 {
                // SAFETY: getppid takes no arguments.
                unsafe { libc::getppid() };
            }
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: as above.
                unsafe { libc::getppid() };
            }
            let _ = w.write_all(&(t.elapsed().as_nanos() as u64 / n).to_le_bytes());
            // SAFETY: _exit ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(wr);
            let mut r = std::fs::File::from(rd);
            let mut b = [0u8; 4];
            let answered = (|| {
                r.read_exact(&mut b)?;
                let fd = i32::from_le_bytes(b);
                if fd < 0 {
                    return Err(std::io::Error::other(
                        "the child could not install its filter",
                    ));
                }
                let l = Listener::from_fd(take_fd(child.as_raw(), fd)?);
                if sync {
                    l.sync_wakeups()?;
                }
                let done = std::thread::spawn(move || {
                    let mut b = [0u8; 8];
                    r.read_exact(&mut b).map(|()| u64::from_le_bytes(b))
                });
                for _ in 0..(n + 100) {
                    let Ok(x) = l.recv() else { break };
                    let _ = l.reply(x.id, 1);
                }
                done.join()
                    .map_err(|_| std::io::Error::other("the timing thread panicked"))?
            })();
            if answered.is_err() {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = nix::sys::wait::waitpid(child, None);
            answered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_allow() {
        let p = program(None, false);
        let allow = p.len() - 1;
        let fields = |i: &Insn| (i.code, i.jt, i.jf, i.k);
        assert_eq!(fields(&p[allow]), fields(&ret(RET_ALLOW)));
        for (i, insn) in p.iter().enumerate() {
            // The chain of local calls; the prctl and mmap blocks jump elsewhere.
            let block = [
                libc::SYS_mmap as u32,
                libc::SYS_prctl as u32,
                libc::PR_SET_PDEATHSIG as u32,
                libc::PR_GET_PDEATHSIG as u32,
            ];
            if insn.code == BPF_JEQ_K && insn.jt > 0 && i > 5 && !block.contains(&insn.k) {
                assert_eq!(i + 1 + usize::from(insn.jt), allow, "insn {i}");
            }
        }
        assert_eq!(program_bytes(&p).len(), p.len() * 8);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }

    /// Runs the program on one call, as the kernel would (the instructions it uses only).
    fn run(p: &[Insn], arch: u32, nr: u32, arg3: u64) -> u32 {
        run_args(p, arch, nr, [0, 0, 0, arg3])
    }

    fn run_args(p: &[Insn], arch: u32, nr: u32, args: [u64; 4]) -> u32 {
        run_traced(p, arch, nr, args).0
    }

    /// Whether the kernel's action cache lets call `nr` by without running the program: its
    /// way to "allow" reads the arch and the number only (the kernel emulates the program so,
    /// and any load of an argument ends the emulation: `seccomp_is_const_allow`).
    fn cached(p: &[Insn], nr: u32) -> bool {
        run_traced(p, AUDIT_ARCH_X86_64, nr, [0; 4]) == (RET_ALLOW, false)
    }

    /// [`run_args`], and whether an argument was loaded on the way.
    fn run_traced(p: &[Insn], arch: u32, nr: u32, args: [u64; 4]) -> (u32, bool) {
        let mut loaded_arg = false;
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            let k = i.k;
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    let o = k as usize;
                    loaded_arg |= o >= 16;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                BPF_RET_K => return (k, loaded_arg),
                BPF_JA => pc += k as usize,
                c if c == alu_and(0).code => acc &= k,
                BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match i.code {
                        BPF_JEQ_K => acc == k,
                        BPF_JGE_K => acc >= k,
                        _ => acc & k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("instruction {c:#x} not expected"),
            }
        }
    }

    #[test]
    fn every_call_gets_what_the_table_says() {
        let p = program(None, false);
        let local = syscalls::local_calls();
        for nr in 0..500u32 {
            let got = run(&p, AUDIT_ARCH_X86_64, nr, 0);
            if nr == libc::SYS_mmap as u32 || nr == libc::SYS_prctl as u32 {
                continue;
            }
            let want = if local.contains(&nr) {
                RET_ALLOW
            } else {
                RET_USER_NOTIF
            };
            assert_eq!(got, want, "call {nr}");
        }
        let mmap = libc::SYS_mmap as u32;
        let (private, shared, anon) = (0x02u64, 0x01u64, 0x20u64);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, mmap, private | anon), RET_ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, mmap, private), RET_USER_NOTIF);
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, mmap, shared | anon),
            RET_USER_NOTIF
        );
        assert_eq!(
            run(&p, AUDIT_ARCH_X86_64, mmap, 0x03 | anon),
            RET_USER_NOTIF
        );
        // prctl: local but for the death signal, which is the parent's (at home) and which the
        // guest may not take off its own.
        let prctl = libc::SYS_prctl as u32;
        for (option, want) in [
            (libc::PR_SET_NAME, RET_ALLOW),
            (libc::PR_SET_PDEATHSIG, RET_USER_NOTIF),
            (libc::PR_GET_PDEATHSIG, RET_USER_NOTIF),
            (libc::PR_SET_DUMPABLE, RET_ALLOW),
        ] {
            assert_eq!(
                run_args(&p, AUDIT_ARCH_X86_64, prctl, [option as u64, 0, 0, 0]),
                want,
                "prctl option {option}"
            );
        }
        // x32 calls: ENOSYS, as on a kernel without x32; a 32-bit int 0x80: killed.
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 0x4000_0000 | 39, 0), RET_ENOSYS);
        assert_eq!(run(&p, 0x4000_0003, 20, 0), RET_KILL_PROCESS);
    }

    #[test]
    fn file_io_on_numbers_of_the_range_runs_natively_and_the_rest_is_as_without() {
        let range = NativeIo {
            from: 7,
            except: vec![8, 1000],
            exact: false,
            umask: 0,
        };
        let fast = program(Some(&range), false);
        let slow = program(None, false);
        let native: Vec<u32> = syscalls::NATIVE_IO.iter().map(|s| s.id() as u32).collect();
        for nr in 0..500u32 {
            for fd in [
                0u64,
                3,
                6,
                7,
                8,
                9,
                999,
                1000,
                1001,
                0xffff_ffff,
                0x1_0000_0003,
                0x1_0000_0009,
                0x1_0000_0008,
            ] {
                let args = [fd, 0, 0, 0x22];
                let got = run_args(&fast, AUDIT_ARCH_X86_64, nr, args);
                let low = fd as u32;
                let want = if native.contains(&nr) && low >= 7 && low != 8 && low != 1000 {
                    RET_ALLOW
                } else {
                    run_args(&slow, AUDIT_ARCH_X86_64, nr, args)
                };
                assert_eq!(got, want, "call {nr} on {fd:#x}");
            }
        }
        // Still killed, still ENOSYS.
        assert_eq!(run(&fast, 0x4000_0003, 0, 9), RET_KILL_PROCESS);
        assert_eq!(run(&fast, AUDIT_ARCH_X86_64, 0x4000_0000, 0), RET_ENOSYS);
    }

    #[test]
    fn a_tree_runs_its_path_calls_natively_and_a_call_made_again_is_notified() {
        let range = NativeIo {
            from: 7,
            except: vec![8, 1000],
            exact: false,
            umask: 0,
        };
        let tree = program(Some(&range), true);
        let fast = program(Some(&range), false);
        // The path calls without a descriptor, and the reads and writes on any: allowed
        // whatever their arguments, so that the kernel caches them.
        let plain: Vec<u32> = syscalls::TREE_PLAIN
            .iter()
            .chain(&syscalls::NATIVE_IO)
            .map(|s| s.id() as u32)
            .collect();
        for &nr in &plain {
            assert!(cached(&tree, nr), "{nr} is not cached");
            assert!(!cached(&fast, nr), "{nr} is cached without a tree");
        }
        let at: Vec<u32> = syscalls::TREE_AT.iter().map(|s| s.id() as u32).collect();
        let two: Vec<u32> = syscalls::TREE_AT2.iter().map(|s| s.id() as u32).collect();
        let fds = [0u64, 6, 7, 8, 9, 1000, 1001, 0xffff_ff9c, 0x1_0000_0008];
        let ok = |fd: u64| {
            let low = fd as u32;
            low >= 7 && low != 8 && low != 1000
        };
        for nr in 0..500u32 {
            for a in fds {
                for b in [7u64, 8, 0xffff_ff9c] {
                    let args = [a, 0, b, 0x22];
                    let got = run_args(&tree, AUDIT_ARCH_X86_64, nr, args);
                    // Two directory descriptors (renameat): both must be native.
                    let second = !two.contains(&nr) || ok(b);
                    let want = if plain.contains(&nr) || at.contains(&nr) && ok(a) && second {
                        RET_ALLOW
                    } else if two.contains(&nr) && ok(a) {
                        RET_USER_NOTIF
                    } else {
                        run_args(&fast, AUDIT_ARCH_X86_64, nr, args)
                    };
                    assert_eq!(got, want, "call {nr} with {a:#x}, {b:#x}");
                }
            }
            // Made again: notified if a call of the tree, ENOSYS otherwise (as any x32 call).
            let again = run(&tree, AUDIT_ARCH_X86_64, AGAIN | nr, 0);
            let mine = plain.contains(&nr) || at.contains(&nr);
            assert_eq!(
                again,
                if mine { RET_USER_NOTIF } else { RET_ENOSYS },
                "{nr}"
            );
            assert_eq!(run(&fast, AUDIT_ARCH_X86_64, AGAIN | nr, 0), RET_ENOSYS);
            assert_eq!(
                run(&tree, AUDIT_ARCH_X86_64, 0x8000_0000 | AGAIN | nr, 0),
                RET_ENOSYS
            );
        }
        // An unnamed file is the process's own too (home opens it as the process's open file).
        let tmp = libc::O_TMPFILE as u64 | libc::O_DIRECTORY as u64 | 2;
        let (open, openat) = (libc::SYS_open as u32, libc::SYS_openat as u32);
        assert_eq!(
            run_args(&tree, AUDIT_ARCH_X86_64, open, [0, tmp, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run_args(&tree, AUDIT_ARCH_X86_64, openat, [0xffff_ff9c, 0, tmp, 0]),
            RET_ALLOW
        );
        // renameat2 between two directories of the range, and from one of it to one not.
        let r2 = libc::SYS_renameat2 as u32;
        assert_eq!(
            run_args(&tree, AUDIT_ARCH_X86_64, r2, [9, 0, 0xffff_ff9c, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run_args(&tree, AUDIT_ARCH_X86_64, r2, [9, 0, 6, 0]),
            RET_USER_NOTIF
        );
        assert_eq!(
            run_args(&tree, AUDIT_ARCH_X86_64, r2, [6, 0, 9, 0]),
            RET_USER_NOTIF
        );
        // No range, no tree.
        let none = program(None, true);
        let slow = program(None, false);
        assert_eq!(program_bytes(&none), program_bytes(&slow));
    }
}
