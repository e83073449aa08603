//! The seccomp-BPF program that splits a migrated process's system calls, and the user-notify
//! interface through which the remote node's supervisor receives the calls that must go home.
//!
//! The program looks only at the architecture and the call number — except for `mmap`, whose
//! flags decide — so the kernel's per-call cache of "always allowed" (Linux 5.11) answers local
//! calls without running the program at all. Everything not local is
//! `SECCOMP_RET_USER_NOTIF`: the process sleeps until the supervisor answers.
//!
//! The filter is installed with `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the
//! supervisor has received a call, only a fatal signal interrupts the wait. Without it, a signal
//! arriving while a forwarded `read` runs at home would cancel the notification and the kernel
//! would restart the call — a second read, and the data of the first lost.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use mosix_core::syscalls;

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `SECCOMP_RET_ALLOW`.
const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_USER_NOTIF`.
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `SECCOMP_RET_KILL_PROCESS`.
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_ERRNO` with `ENOSYS`.
const RET_ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;

/// `SECCOMP_SET_MODE_FILTER`.
pub const SET_MODE_FILTER: u64 = 1;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
pub const FLAG_NEW_LISTENER: u64 = 1 << 3;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`.
pub const FLAG_WAIT_KILLABLE_RECV: u64 = 1 << 5;

/// One BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

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

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG3_LO: u32 = 16 + 3 * 8;

/// Builds the filter: kill anything that is not x86_64 (a 32-bit `int 0x80` call: its numbers
/// and layouts are another ABI, which we cannot forward), answer x32 calls `ENOSYS` (as a kernel
/// without x32 support does), allow the local calls, allow `mmap` of private anonymous memory,
/// send everything else to the supervisor.
pub fn program() -> Vec<Insn> {
    let local = syscalls::local_calls();
    let mmap = libc::SYS_mmap as u32;
    let mut p = vec![
        ld(OFF_ARCH),
        jmp(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        ret(RET_KILL_PROCESS),
        ld(OFF_NR),
        // x32 system calls (bit 30).
        jmp(BPF_JGE_K, 0x4000_0000, 0, 1),
        ret(RET_ENOSYS),
    ];
    // A linear chain of "allow" tests. `local` is short (about fifty calls), and allowed calls
    // never reach this program once the kernel has cached them.
    let n = local.len();
    for (i, nr) in local.iter().enumerate() {
        // Jump to the ALLOW at the end of the chain when equal.
        let to_allow = (n - i - 1) + 5; // the rest of the chain + the mmap block (4) + notify
        p.push(jmp(
            BPF_JEQ_K,
            *nr,
            u8::try_from(to_allow).unwrap_or(255),
            0,
        ));
    }
    // mmap: shared (MAP_SHARED = 1, MAP_SHARED_VALIDATE = 3: bit 0; MAP_PRIVATE is 2) or of a
    // file (no MAP_ANONYMOUS, 0x20) goes to the supervisor.
    p.push(jmp(BPF_JEQ_K, mmap, 0, 3));
    p.push(ld(OFF_ARG3_LO));
    p.push(jmp(BPF_JSET_K, 0x1, 1, 0));
    p.push(jmp(BPF_JSET_K, 0x20, 1, 0));
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
    /// The call number.
    pub nr: i32,
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

// `struct seccomp_notif_sizes`, `seccomp_notif`, `seccomp_notif_resp` and the ioctls.
const IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
const USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: let the kernel run the call as made.
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Default)]
struct Data {
    /// The system call number.
    nr: i32,
    /// `AUDIT_ARCH_*`.
    arch: u32,
    /// The instruction pointer at the call.
    instruction_pointer: u64,
    /// The arguments.
    args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Default)]
struct RawNotif {
    /// Unique id of this notification.
    id: u64,
    /// The caller's pid.
    pid: u32,
    /// Flags (none defined).
    flags: u32,
    /// The call.
    data: Data,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
struct RawResp {
    /// The notification answered.
    id: u64,
    /// Return value when `error` is 0.
    val: i64,
    /// 0, or a negative errno to return.
    error: i32,
    /// `SECCOMP_USER_NOTIF_FLAG_*`.
    flags: u32,
}

impl Listener {
    /// Takes ownership of a listener descriptor.
    pub fn from_fd(fd: OwnedFd) -> Listener {
        Listener { fd }
    }

    /// The descriptor, for poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: not needed; AsFd gives the borrow.
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Asks the kernel to hand the CPU directly from the caller to us and back (Linux 6.6):
    /// without it, each notification costs two cross-CPU wakeups (31 µs here instead of 5).
    pub fn sync_wakeups(&self) -> std::io::Result<()> {
        // SAFETY: the ioctl reads one u64 flag word from the pointer, a valid local.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                IOCTL_NOTIF_SET_FLAGS,
                USER_NOTIF_FD_SYNC_WAKE_UP,
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
        let mut n = RawNotif::default();
        loop {
            // SAFETY: SECCOMP_IOCTL_NOTIF_RECV fills a `struct seccomp_notif`, which `n` is
            // (zeroed, as the kernel requires), valid for the call.
            let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), IOCTL_NOTIF_RECV, &raw mut n) };
            if r == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(Notif {
            id: n.id,
            pid: n.pid,
            nr: n.data.nr,
            ip: n.data.instruction_pointer,
            args: n.data.args,
        })
    }

    fn send_raw(&self, id: u64, val: i64, error: i32, flags: u32) -> std::io::Result<()> {
        let resp = RawResp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads a `struct seccomp_notif_resp`, which `resp` is,
        // valid for the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), IOCTL_NOTIF_SEND, &raw const resp) };
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
        let mut a = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
            srcfd: src as u32,
            newfd: newfd as u32,
            newfd_flags: 0,
        };
        // SAFETY: SECCOMP_IOCTL_NOTIF_ADDFD reads a `struct seccomp_notif_addfd`, which `a`
        // is, valid for the call; `src` is a descriptor we own.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD as _,
                &raw mut a,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    /// Lets the kernel run the call as the process made it.
    pub fn allow(&self, id: u64) -> std::io::Result<()> {
        self.send_raw(id, 0, 0, USER_NOTIF_FLAG_CONTINUE)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_allow() {
        let p = program();
        let allow = p.len() - 1;
        assert_eq!(p[allow], ret(RET_ALLOW));
        for (i, insn) in p.iter().enumerate() {
            if insn.code == BPF_JEQ_K && insn.jt > 0 && i > 5 && insn.k != libc::SYS_mmap as u32 {
                assert_eq!(i + 1 + usize::from(insn.jt), allow, "insn {i}");
            }
        }
        assert_eq!(program_bytes(&p).len(), p.len() * 8);
    }

    /// Runs the program on one call, as the kernel would (the instructions it uses only).
    fn run(p: &[Insn], arch: u32, nr: u32, arg3: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16 + 24..16 + 32].copy_from_slice(&arg3.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            let k = i.k;
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    let o = k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                BPF_RET_K => return k,
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
        let p = program();
        let local = syscalls::local_calls();
        for nr in 0..500u32 {
            let got = run(&p, AUDIT_ARCH_X86_64, nr, 0);
            if nr == libc::SYS_mmap as u32 {
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
        // x32 calls: ENOSYS, as on a kernel without x32; a 32-bit int 0x80: killed.
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, 0x4000_0000 | 39, 0), RET_ENOSYS);
        assert_eq!(run(&p, 0x4000_0003, 20, 0), RET_KILL_PROCESS);
    }
}
