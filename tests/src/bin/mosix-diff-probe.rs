//! mosix-diff-probe: one attempt at one operation that an unprivileged user may not do, or whose
//! outcome depends on who makes it, printed as one canonical line that does not depend on where
//! the program ran. The cluster test `trust` runs every probe as `nobody`, natively and migrated
//! (`mosrun -2`), and compares the answers.
//!
//! `mosix-diff-probe --list` prints `NAME<TAB>ARGS<TAB>WHAT` for every probe, ARGS being the
//! comma-separated names of the arguments it takes (`fx` the fixture directory, `sock` the
//! directory of the root helper's sockets, `rootpid`/`userpid` a process of root / of the same
//! user, `key` a key of root's, `ext4` a directory on a file system full up to its root reserve,
//! `quota` a directory on a file system where the user's block quota is 64 KiB).
//! `mosix-diff-probe [--hold] NAME ARGS...` runs one probe. With `--hold` it reads a line from
//! stdin before the operation and another (or end of file) after printing, so that the runner
//! can see where it runs.
//!
//! The line: `ret=ok` (0), `ret=fd` (a descriptor), `ret=N` (a count), `ret=-1 errno=EPERM`,
//! then observations as `key=value`. Never a pid, a descriptor number, an address or a time. A
//! probe that a signal may end prints what it has so far as it goes (without the newline); the
//! runner reads the signal from the exit status. The system calls are made with `libc` directly,
//! once each: nothing retries or hides an errno.

use std::ffi::{CStr, CString};
use std::io::Write;
use std::process::ExitCode;

/// The result of one system call: what it returned, or the errno it failed with.
type Res = Result<i64, i32>;

/// What a probe prints: its line (`Err` when a setup step failed, also printed as the line).
type Out = Result<String, String>;

/// The result of a call that returns -1 and sets errno on failure, read at once.
fn chk(r: i64) -> Res {
    if r == -1 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}

fn errname(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::ENOTBLK => "ENOTBLK",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::EDESTADDRREQ => "EDESTADDRREQ",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENOBUFS => "ENOBUFS",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EALREADY => "EALREADY",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EDQUOT => "EDQUOT",
        libc::ENOKEY => "ENOKEY",
        libc::EKEYEXPIRED => "EKEYEXPIRED",
        libc::EKEYREVOKED => "EKEYREVOKED",
        libc::EKEYREJECTED => "EKEYREJECTED",
        _ => return format!("E{e}"),
    };
    n.to_owned()
}

/// `ret=ok`, `ret=N` or `ret=-1 errno=NAME`.
fn ret(r: Res) -> String {
    match r {
        Ok(0) => "ret=ok".to_owned(),
        Ok(n) => format!("ret={n}"),
        Err(e) => format!("ret=-1 errno={}", errname(e)),
    }
}

/// `ret=fd` or `ret=-1 errno=NAME`, for calls that return a descriptor.
fn ret_fd(r: Res) -> String {
    match r {
        Ok(_) => "ret=fd".to_owned(),
        Err(e) => format!("ret=-1 errno={}", errname(e)),
    }
}

/// An observation's value: `ok`, `N` or the errno's name.
fn v(r: Res) -> String {
    match r {
        Ok(0) => "ok".to_owned(),
        Ok(n) => n.to_string(),
        Err(e) => errname(e),
    }
}

/// A number the call returned (0 included), or the errno's name.
fn num(r: Res) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) => errname(e),
    }
}

/// An observation's value for a call that returns a descriptor.
fn v_fd(r: Res) -> String {
    match r {
        Ok(_) => "fd".to_owned(),
        Err(e) => errname(e),
    }
}

/// A setup step that must work: its value, or the line that says it did not.
fn need<T>(r: Result<T, i32>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("setup {what}={}", errname(e)))
}

/// Prints part of the line at once (before a call that a signal may end).
fn part(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("a probe's path has no NUL byte")
}

fn fd32(r: i64) -> i32 {
    i32::try_from(r).unwrap_or(-1)
}

// ---------------------------------------------------------------------------------------------
// Thin wrappers: one system call each, with the errno it set.

mod sys {
    use super::{Res, chk};
    use std::ffi::CStr;

    /// An all-zero value of a C structure made only of integers and arrays of them.
    fn zeroed<T: Copy>() -> T {
        // SAFETY: every T used here (stat, msghdr, cpu_set_t, utsname) is a plain C structure
        // of integers, arrays and raw pointers, for which all-zero bytes (null pointers
        // included) are a valid value.
        unsafe { std::mem::zeroed() }
    }

    pub fn open(path: &CStr, flags: i32, mode: u32) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::open(path.as_ptr(), flags, mode) }))
    }

    pub fn openat(dir: i32, path: &CStr, flags: i32, mode: u32) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe {
            libc::openat(dir, path.as_ptr(), flags, mode)
        }))
    }

    pub fn close(fd: i32) -> Res {
        // SAFETY: closing a descriptor this probe opened; nothing else uses it afterwards.
        chk(i64::from(unsafe { libc::close(fd) }))
    }

    pub fn read(fd: i32, buf: &mut [u8]) -> Res {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we own mutably.
        chk(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as i64)
    }

    pub fn write(fd: i32, buf: &[u8]) -> Res {
        // SAFETY: the kernel reads `buf.len()` bytes from `buf`, which lives for the call.
        chk(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) } as i64)
    }

    pub fn pwrite(fd: i32, buf: &[u8], off: i64) -> Res {
        // SAFETY: the kernel reads `buf.len()` bytes from `buf`, which lives for the call.
        chk(unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) } as i64)
    }

    pub fn writev(fd: i32, bufs: &[&[u8]]) -> Res {
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: `iov` describes buffers that live for the call and that the kernel only
        // reads; its length is given.
        chk(unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as i32) } as i64)
    }

    pub fn ftruncate(fd: i32, len: i64) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::ftruncate(fd, len) }))
    }

    pub fn truncate(path: &CStr, len: i64) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::truncate(path.as_ptr(), len) }))
    }

    pub fn fallocate(fd: i32, mode: i32, off: i64, len: i64) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::fallocate(fd, mode, off, len) }))
    }

    pub fn fsync(fd: i32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::fsync(fd) }))
    }

    pub fn copy_file_range(from: i32, to: i32, len: usize) -> Res {
        // SAFETY: null offset pointers mean "use and update the file offsets".
        chk(unsafe {
            libc::copy_file_range(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, 0)
        } as i64)
    }

    pub fn sendfile(to: i32, from: i32, len: usize) -> Res {
        // SAFETY: a null offset pointer means "use and update the file offset".
        chk(unsafe { libc::sendfile(to, from, std::ptr::null_mut(), len) } as i64)
    }

    pub fn fstat(fd: i32) -> Result<libc::stat, i32> {
        let mut st: libc::stat = zeroed();
        // SAFETY: `st` is a valid, writable stat structure.
        chk(i64::from(unsafe { libc::fstat(fd, &mut st) }))?;
        Ok(st)
    }

    pub fn stat(path: &CStr) -> Result<libc::stat, i32> {
        let mut st: libc::stat = zeroed();
        // SAFETY: `path` is NUL-terminated and `st` is a valid, writable stat structure.
        chk(i64::from(unsafe { libc::stat(path.as_ptr(), &mut st) }))?;
        Ok(st)
    }

    pub fn access(path: &CStr, mode: i32) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::access(path.as_ptr(), mode) }))
    }

    pub fn faccessat2(path: &CStr, mode: i32, flags: i32) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call; the other
        // arguments are integers.
        chk(unsafe {
            libc::syscall(
                libc::SYS_faccessat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                mode,
                flags,
            )
        })
    }

    pub fn readlink(path: &CStr, buf: &mut [u8]) -> Res {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        chk(unsafe { libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } as i64)
    }

    pub fn unlink(path: &CStr) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::unlink(path.as_ptr()) }))
    }

    pub fn rename(from: &CStr, to: &CStr) -> Res {
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        chk(i64::from(unsafe {
            libc::rename(from.as_ptr(), to.as_ptr())
        }))
    }

    pub fn mkdir(path: &CStr, mode: u32) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::mkdir(path.as_ptr(), mode) }))
    }

    pub fn rmdir(path: &CStr) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::rmdir(path.as_ptr()) }))
    }

    pub fn link(from: &CStr, to: &CStr) -> Res {
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        chk(i64::from(unsafe { libc::link(from.as_ptr(), to.as_ptr()) }))
    }

    pub fn symlink(target: &CStr, path: &CStr) -> Res {
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        chk(i64::from(unsafe {
            libc::symlink(target.as_ptr(), path.as_ptr())
        }))
    }

    pub fn chmod(path: &CStr, mode: u32) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::chmod(path.as_ptr(), mode) }))
    }

    pub fn fchmod(fd: i32, mode: u32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::fchmod(fd, mode) }))
    }

    pub fn chown(path: &CStr, uid: u32, gid: u32) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::chown(path.as_ptr(), uid, gid) }))
    }

    pub fn fchown(fd: i32, uid: u32, gid: u32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::fchown(fd, uid, gid) }))
    }

    /// `utimensat(AT_FDCWD, path, times, 0)`; `None` sets both to now.
    pub fn utimensat(path: &CStr, times: Option<&[libc::timespec; 2]>) -> Res {
        let t = times.map_or(std::ptr::null(), |t| t.as_ptr());
        // SAFETY: `path` is NUL-terminated; `t` is null or points to two timespecs.
        chk(i64::from(unsafe {
            libc::utimensat(libc::AT_FDCWD, path.as_ptr(), t, 0)
        }))
    }

    /// `futimens(fd, times)`; `None` sets both to now.
    pub fn futimens(fd: i32, times: Option<&[libc::timespec; 2]>) -> Res {
        let t = times.map_or(std::ptr::null(), |t| t.as_ptr());
        // SAFETY: `t` is null or points to two timespecs that live for the call.
        chk(i64::from(unsafe { libc::futimens(fd, t) }))
    }

    pub fn mknod(path: &CStr, mode: u32, dev: u64) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::mknod(path.as_ptr(), mode, dev) }))
    }

    pub fn umask(mask: u32) -> u32 {
        // SAFETY: no pointers; umask cannot fail.
        unsafe { libc::umask(mask) }
    }

    /// `fcntl(fd, cmd, arg)` with an integer argument.
    pub fn fcntl(fd: i32, cmd: i32, arg: i64) -> Res {
        // SAFETY: every command used with this wrapper takes an integer argument.
        chk(i64::from(unsafe { libc::fcntl(fd, cmd, arg) }))
    }

    pub fn pipe() -> Result<[i32; 2], i32> {
        let mut p = [-1i32; 2];
        // SAFETY: `p` has room for the two descriptors the kernel writes.
        chk(i64::from(unsafe { libc::pipe(p.as_mut_ptr()) }))?;
        Ok(p)
    }

    pub fn socket(domain: i32, ty: i32, proto: i32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::socket(domain, ty, proto) }))
    }

    pub fn socketpair(domain: i32, ty: i32) -> Result<[i32; 2], i32> {
        let mut p = [-1i32; 2];
        // SAFETY: `p` has room for the two descriptors the kernel writes.
        chk(i64::from(unsafe {
            libc::socketpair(domain, ty, 0, p.as_mut_ptr())
        }))?;
        Ok(p)
    }

    pub fn bind(fd: i32, addr: &[u8]) -> Res {
        // SAFETY: `addr` holds a socket address of `addr.len()` bytes; the kernel copies it.
        chk(i64::from(unsafe {
            libc::bind(fd, addr.as_ptr().cast(), addr.len() as u32)
        }))
    }

    pub fn connect(fd: i32, addr: &[u8]) -> Res {
        // SAFETY: `addr` holds a socket address of `addr.len()` bytes; the kernel copies it.
        chk(i64::from(unsafe {
            libc::connect(fd, addr.as_ptr().cast(), addr.len() as u32)
        }))
    }

    /// `sendto(fd, buf, 0, addr)`; no address: a null pointer and length 0.
    pub fn sendto(fd: i32, buf: &[u8], addr: Option<&[u8]>) -> Res {
        let (a, l) = addr.map_or((std::ptr::null(), 0), |a| (a.as_ptr(), a.len() as u32));
        // SAFETY: `buf` and `addr` (if any) live for the call and are only read.
        chk(unsafe { libc::sendto(fd, buf.as_ptr().cast(), buf.len(), 0, a.cast(), l) } as i64)
    }

    /// `sendmsg(fd, {name, [buf], control}, 0)`.
    pub fn sendmsg(fd: i32, name: Option<&[u8]>, buf: &[u8], control: Option<&[u8]>) -> Res {
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut m: libc::msghdr = zeroed();
        if let Some(n) = name {
            m.msg_name = n.as_ptr() as *mut libc::c_void;
            m.msg_namelen = n.len() as u32;
        }
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        if let Some(c) = control {
            m.msg_control = c.as_ptr() as *mut libc::c_void;
            m.msg_controllen = c.len();
        }
        // SAFETY: every pointer in `m` refers to a buffer that lives for the call, with its
        // length; the kernel only reads them.
        chk(unsafe { libc::sendmsg(fd, &m, 0) } as i64)
    }

    pub fn recv(fd: i32, buf: &mut [u8], flags: i32) -> Res {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        chk(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) } as i64)
    }

    /// `recvmsg(fd, .., MSG_DONTWAIT)` with one data buffer and a control buffer; returns the
    /// length of the data and of the control data.
    pub fn recvmsg(fd: i32, buf: &mut [u8], control: &mut [u8]) -> Result<(i64, usize), i32> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut m: libc::msghdr = zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = control.as_mut_ptr().cast();
        m.msg_controllen = control.len();
        // SAFETY: `m` points to `iov` and `control`, writable buffers of the given lengths
        // that live for the call.
        let n = chk(unsafe { libc::recvmsg(fd, &mut m, libc::MSG_DONTWAIT) } as i64)?;
        Ok((n, m.msg_controllen))
    }

    pub fn setsockopt(fd: i32, level: i32, opt: i32, val: &[u8]) -> Res {
        // SAFETY: `val` lives for the call; the kernel reads `val.len()` bytes.
        chk(i64::from(unsafe {
            libc::setsockopt(fd, level, opt, val.as_ptr().cast(), val.len() as u32)
        }))
    }

    pub fn getsockopt_int(fd: i32, level: i32, opt: i32) -> Res {
        let mut val: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `val` and `len` are valid and writable; the kernel writes at most `len` bytes.
        chk(i64::from(unsafe {
            libc::getsockopt(fd, level, opt, (&raw mut val).cast(), &mut len)
        }))?;
        Ok(i64::from(val))
    }

    /// An interface ioctl on a 40-byte `struct ifreq`.
    pub fn ioctl_ifreq(fd: i32, req: u64, ifr: &mut [u8; 40]) -> Res {
        // SAFETY: `ifr` is a writable buffer of the size of `struct ifreq`, as the request
        // expects.
        chk(i64::from(unsafe { libc::ioctl(fd, req, ifr.as_mut_ptr()) }))
    }

    pub fn kill(pid: i32, sig: i32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::kill(pid, sig) }))
    }

    pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> Res {
        // SAFETY: no pointers.
        chk(unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, sig) })
    }

    pub fn rt_sigqueueinfo(pid: i32, sig: i32, info: &[i32; 32]) -> Res {
        // SAFETY: `info` is a 128-byte siginfo the kernel reads.
        chk(unsafe { libc::syscall(libc::SYS_rt_sigqueueinfo, pid, sig, info.as_ptr()) })
    }

    pub fn pidfd_open(pid: i32) -> Res {
        // SAFETY: no pointers.
        chk(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
    }

    pub fn pidfd_send_signal(fd: i32, sig: i32) -> Res {
        // SAFETY: a null siginfo means "as kill(2) would send it".
        chk(unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        })
    }

    pub fn ptrace(req: u32, pid: i32) -> Res {
        // SAFETY: the requests used (ATTACH, SEIZE, DETACH) take no pointers; addr and data
        // are 0.
        chk(unsafe { libc::ptrace(req, pid, 0usize, 0usize) })
    }

    pub fn waitpid(pid: i32, flags: i32) -> Res {
        let mut st = 0;
        // SAFETY: `st` is a valid, writable int.
        chk(i64::from(unsafe { libc::waitpid(pid, &mut st, flags) }))
    }

    pub fn process_vm_readv(pid: i32, remote: usize, buf: &mut [u8]) -> Res {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let rem = libc::iovec {
            iov_base: remote as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes our own writable buffer; the remote address is in the
        // other process and is only read by the kernel, which checks it.
        chk(unsafe { libc::process_vm_readv(pid, &local, 1, &rem, 1, 0) } as i64)
    }

    pub fn prlimit(pid: i32, res: u32, new: Option<libc::rlimit64>) -> Result<libc::rlimit64, i32> {
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let n = new.as_ref().map_or(std::ptr::null(), |n| n as *const _);
        // SAFETY: `n` is null or points to a valid rlimit64; `old` is writable.
        chk(i64::from(unsafe {
            libc::prlimit64(pid, res as _, n, &mut old)
        }))?;
        Ok(old)
    }

    pub fn getrlimit(res: u32) -> Result<libc::rlimit, i32> {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `r` is valid and writable.
        chk(i64::from(unsafe { libc::getrlimit(res as _, &mut r) }))?;
        Ok(r)
    }

    pub fn setrlimit(res: u32, cur: u64, max: u64) -> Res {
        let r = libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        };
        // SAFETY: `r` is valid for the call.
        chk(i64::from(unsafe { libc::setrlimit(res as _, &r) }))
    }

    pub fn setpriority(who: i32, prio: i32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe {
            libc::setpriority(libc::PRIO_PROCESS, who as u32, prio)
        }))
    }

    /// getpriority(PRIO_PROCESS, who): -1 is a valid answer, so errno is cleared first.
    pub fn getpriority(who: i32) -> Res {
        // SAFETY: errno is thread-local; writing it is what the manual page prescribes.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: no pointers.
        let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, who as u32) };
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if r == -1 && e != 0 {
            Err(e)
        } else {
            Ok(i64::from(r))
        }
    }

    pub fn sched_setscheduler(pid: i32, policy: i32) -> Res {
        let p = libc::sched_param { sched_priority: 0 };
        // SAFETY: `p` is valid for the call.
        chk(i64::from(unsafe {
            libc::sched_setscheduler(pid, policy, &p)
        }))
    }

    pub fn sched_setaffinity_cpu0(pid: i32) -> Res {
        let mut set: libc::cpu_set_t = zeroed();
        // SAFETY: CPU_SET writes one bit inside `set`.
        unsafe { libc::CPU_SET(0, &mut set) };
        // SAFETY: `set` is a valid cpu set of the size given.
        chk(i64::from(unsafe {
            libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        }))
    }

    pub fn ioprio_set(pid: i32, prio: i32) -> Res {
        // SAFETY: no pointers (IOPRIO_WHO_PROCESS = 1).
        chk(unsafe { libc::syscall(libc::SYS_ioprio_set, 1, pid, prio) })
    }

    /// Maps `len` bytes of private anonymous memory.
    pub fn mmap_anon(len: usize) -> Result<usize, i32> {
        // SAFETY: a fresh private anonymous mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        } else {
            Ok(p as usize)
        }
    }

    pub fn mlock(addr: usize, len: usize) -> Res {
        // SAFETY: locking pages changes no memory contents; the range is our own mapping.
        chk(i64::from(unsafe {
            libc::mlock(addr as *const libc::c_void, len)
        }))
    }

    /// Sets the disposition of `sig` to SIG_IGN.
    pub fn ignore(sig: i32) {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }

    pub fn mount(src: &CStr, target: &CStr, fstype: &CStr) -> Res {
        // SAFETY: all three are NUL-terminated strings that outlive the call; no data.
        chk(i64::from(unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        }))
    }

    pub fn umount2(target: &CStr) -> Res {
        // SAFETY: `target` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::umount2(target.as_ptr(), 0) }))
    }

    pub fn pivot_root(new: &CStr, old: &CStr) -> Res {
        // SAFETY: both paths are NUL-terminated strings that outlive the call.
        chk(unsafe { libc::syscall(libc::SYS_pivot_root, new.as_ptr(), old.as_ptr()) })
    }

    pub fn chroot(path: &CStr) -> Res {
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        chk(i64::from(unsafe { libc::chroot(path.as_ptr()) }))
    }

    pub fn unshare(flags: i32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::unshare(flags) }))
    }

    pub fn setns(fd: i32, ty: i32) -> Res {
        // SAFETY: no pointers.
        chk(i64::from(unsafe { libc::setns(fd, ty) }))
    }

    /// A raw system call with integer arguments only (setuid, setgid, iopl…): it changes this
    /// thread alone, with no glibc broadcast to other threads.
    pub fn raw_int(nr: i64, a: i64, b: i64, c: i64) -> Res {
        // SAFETY: every call used with this wrapper takes only integers.
        chk(unsafe { libc::syscall(nr, a, b, c) })
    }

    pub fn setgroups(groups: &[u32]) -> Res {
        // SAFETY: `groups` lives for the call; its length is given (raw call: this thread).
        chk(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
    }

    /// capget then capset with `extra` capabilities added to the effective and permitted sets.
    pub fn capset_add(extra: u32) -> Result<(Res, u32), i32> {
        // _LINUX_CAPABILITY_VERSION_3, pid 0 (this thread).
        let mut hdr: [u32; 2] = [0x2008_0522, 0];
        let mut data = [0u32; 6];
        // SAFETY: `hdr` is a cap_user_header and `data` has room for the two
        // cap_user_data structures of version 3.
        chk(unsafe { libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) })?;
        let before = data[0];
        data[0] |= extra;
        data[1] |= extra;
        // SAFETY: as above; the kernel reads both.
        let r = chk(unsafe { libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) });
        Ok((r, before))
    }

    pub fn capget_effective() -> Result<u64, i32> {
        let mut hdr: [u32; 2] = [0x2008_0522, 0];
        let mut data = [0u32; 6];
        // SAFETY: `hdr` is a cap_user_header and `data` has room for the two
        // cap_user_data structures of version 3.
        chk(unsafe { libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) })?;
        Ok(u64::from(data[0]) | (u64::from(data[3]) << 32))
    }

    pub fn quotactl_fd(fd: i32, cmd: u32, id: i32) -> Res {
        // SAFETY: no data pointer (null) for the command used.
        chk(unsafe {
            libc::syscall(
                libc::SYS_quotactl_fd,
                fd,
                cmd,
                id,
                std::ptr::null::<libc::c_void>(),
            )
        })
    }

    pub fn sethostname(name: &[u8]) -> Res {
        // SAFETY: the kernel reads `name.len()` bytes of `name`.
        chk(i64::from(unsafe {
            libc::sethostname(name.as_ptr().cast(), name.len())
        }))
    }

    pub fn setdomainname(name: &[u8]) -> Res {
        // SAFETY: the kernel reads `name.len()` bytes of `name`.
        chk(i64::from(unsafe {
            libc::setdomainname(name.as_ptr().cast(), name.len())
        }))
    }

    pub fn uname() -> Result<libc::utsname, i32> {
        let mut u: libc::utsname = zeroed();
        // SAFETY: `u` is a valid, writable utsname.
        chk(i64::from(unsafe { libc::uname(&mut u) }))?;
        Ok(u)
    }

    /// settimeofday(NULL, tz) with the current time zone: changes nothing even if allowed.
    pub fn settimeofday_same_tz() -> Res {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let mut tz = [0i32; 2];
        // SAFETY: `tv` and `tz` (a struct timezone: two ints) are writable.
        chk(unsafe { libc::syscall(libc::SYS_gettimeofday, &mut tv, tz.as_mut_ptr()) })?;
        // SAFETY: a null time and a valid struct timezone.
        chk(unsafe {
            libc::syscall(
                libc::SYS_settimeofday,
                std::ptr::null::<libc::timeval>(),
                tz.as_ptr(),
            )
        })
    }

    /// clock_settime(CLOCK_REALTIME, now): at most a few microseconds back even if allowed.
    pub fn clock_settime_now() -> Res {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is writable.
        chk(i64::from(unsafe {
            libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts)
        }))?;
        // SAFETY: `ts` is a valid timespec.
        chk(i64::from(unsafe {
            libc::clock_settime(libc::CLOCK_REALTIME, &ts)
        }))
    }

    /// reboot(2) with a wrong first magic number: root gets EINVAL, never a reboot.
    pub fn reboot_bad_magic() -> Res {
        // SAFETY: no pointers (the argument pointer is null); the magic is invalid, so the
        // kernel returns before doing anything.
        chk(unsafe {
            libc::syscall(
                libc::SYS_reboot,
                0x1234_5678,
                libc::LINUX_REBOOT_MAGIC2,
                libc::LINUX_REBOOT_CMD_CAD_OFF,
                std::ptr::null::<libc::c_void>(),
            )
        })
    }

    pub fn ioperm(from: u64, num: u64, on: i32) -> Res {
        // SAFETY: no pointers; it only changes this thread's I/O permission bitmap.
        chk(i64::from(unsafe { libc::ioperm(from, num, on) }))
    }

    /// kexec_load with no segments and a foreign architecture in the flags: root gets EINVAL.
    pub fn kexec_load_garbage() -> Res {
        // SAFETY: no segments (null), an integer entry and flags.
        chk(unsafe {
            libc::syscall(
                libc::SYS_kexec_load,
                0usize,
                0usize,
                std::ptr::null::<libc::c_void>(),
                3usize << 16,
            )
        })
    }

    /// bpf(BPF_PROG_LOAD) of a socket filter `r0 = 0; exit`.
    pub fn bpf_prog_load() -> Res {
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = c"GPL";
        let mut attr = [0u64; 16];
        attr[0] = 1 | (2 << 32); // BPF_PROG_TYPE_SOCKET_FILTER, two instructions
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        // SAFETY: `attr` is a zeroed bpf_attr of 128 bytes whose pointers refer to `insns`
        // and `license`, which live for the call.
        chk(unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), 128) })
    }

    /// perf_event_open of a software CPU clock on CPU 0 for every process.
    pub fn perf_event_open_cpu0() -> Res {
        let mut attr = [0u64; 8];
        attr[0] = 1 | (64 << 32); // PERF_TYPE_SOFTWARE, size 64 (PERF_ATTR_SIZE_VER0)
        attr[5] = 1; // disabled
        // SAFETY: `attr` is a zeroed perf_event_attr of the size it declares.
        chk(unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1, 0, -1, 0) })
    }

    pub fn keyctl_buf(cmd: i32, key: i32, buf: &mut [u8]) -> Res {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
        chk(unsafe { libc::syscall(libc::SYS_keyctl, cmd, key, buf.as_mut_ptr(), buf.len()) })
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments and observations.

/// A probe's arguments, by the names its entry declares.
struct Args<'a> {
    names: &'a [&'a str],
    values: &'a [String],
}

impl Args<'_> {
    fn s(&self, name: &str) -> &str {
        let i = self
            .names
            .iter()
            .position(|n| *n == name)
            .expect("a probe uses only the arguments it declares");
        &self.values[i]
    }

    /// `NAME/rel` as a C path.
    fn p(&self, name: &str, rel: &str) -> CString {
        cs(&format!("{}/{rel}", self.s(name)))
    }

    fn pid(&self, name: &str) -> i32 {
        self.s(name).parse().expect("a pid argument is a number")
    }
}

fn mode(st: &libc::stat) -> String {
    format!("{:04o}", st.st_mode & 0o7777)
}

fn owner(st: &libc::stat) -> String {
    format!("uid={} gid={}", st.st_uid, st.st_gid)
}

/// A sockaddr_un for `path`.
fn sun(path: &str) -> Vec<u8> {
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(path.as_bytes());
    a.push(0);
    a
}

/// A sockaddr_in for `ip:port`.
fn sin(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut a = (libc::AF_INET as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&port.to_be_bytes());
    a.extend_from_slice(&ip);
    a.extend_from_slice(&[0; 8]);
    a
}

/// The sockaddr_nl of the kernel (nl_pid 0, no groups).
fn snl() -> Vec<u8> {
    snl_to(0)
}

/// A sockaddr_nl of port id `pid` (0: the kernel), no groups.
fn snl_to(pid: u32) -> Vec<u8> {
    let mut a = (libc::AF_NETLINK as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&[0; 2]);
    a.extend_from_slice(&pid.to_ne_bytes());
    a.extend_from_slice(&[0; 4]);
    a
}

fn int(v: i32) -> [u8; 4] {
    v.to_ne_bytes()
}

/// The first line of a file, read with one open and one read (both counted as the probe's).
fn read_small(path: &CStr) -> Result<String, i32> {
    let fd = fd32(sys::open(path, libc::O_RDONLY, 0)?);
    let mut b = [0u8; 4096];
    let n = sys::read(fd, &mut b);
    let _ = sys::close(fd);
    let n = n? as usize;
    Ok(String::from_utf8_lossy(&b[..n]).trim_end().to_owned())
}

// ---------------------------------------------------------------------------------------------
// Netlink.

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;

fn nl_msg(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: let the kernel fill it
    m.extend_from_slice(body);
    m
}

fn rta(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(data);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

/// RTM_NEWADDR: 192.0.2.77/32 (TEST-NET-1) on lo (ifindex 1 in every network namespace).
fn nl_newaddr() -> Vec<u8> {
    let mut b = vec![libc::AF_INET as u8, 32, 0, 0];
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend(rta(libc::IFA_LOCAL, &[192, 0, 2, 77]));
    b.extend(rta(libc::IFA_ADDRESS, &[192, 0, 2, 77]));
    nl_msg(
        libc::RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        &b,
    )
}

/// RTM_NEWLINK: lo's MTU to 1280.
fn nl_newlink() -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&1i32.to_ne_bytes()); // ifindex
    b.extend_from_slice(&0u32.to_ne_bytes()); // flags
    b.extend_from_slice(&0u32.to_ne_bytes()); // change
    b.extend(rta(libc::IFLA_MTU, &1280u32.to_ne_bytes()));
    nl_msg(libc::RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, &b)
}

/// RTM_NEWROUTE: 198.51.100.0/24 (TEST-NET-2) on lo, main table.
fn nl_newroute() -> Vec<u8> {
    let b = {
        let mut b = vec![
            libc::AF_INET as u8,
            24,
            0,
            0,
            libc::RT_TABLE_MAIN,
            libc::RTPROT_BOOT,
            libc::RT_SCOPE_LINK,
            libc::RTN_UNICAST,
        ];
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend(rta(libc::RTA_DST, &[198, 51, 100, 0]));
        b.extend(rta(libc::RTA_OIF, &1u32.to_ne_bytes()));
        b
    };
    nl_msg(
        libc::RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        &b,
    )
}

/// How the kernel's answer to a request that asked for an acknowledgement reads.
fn nl_ack(fd: i32) -> String {
    let mut buf = [0u8; 8192];
    match sys::recv(fd, &mut buf, libc::MSG_DONTWAIT) {
        Err(e) => errname(e),
        Ok(n) if n >= 20 => {
            let ty = u16::from_ne_bytes([buf[4], buf[5]]);
            if i32::from(ty) != libc::NLMSG_ERROR {
                return format!("type{ty}");
            }
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err == 0 {
                "ok".to_owned()
            } else {
                errname(-err)
            }
        }
        Ok(n) => format!("short{n}"),
    }
}

#[derive(Clone, Copy)]
enum NlSend {
    /// sendto with an explicit sockaddr_nl{nl_pid = 0}.
    SendTo,
    /// sendmsg with msg_name = sockaddr_nl{nl_pid = 0}.
    SendMsg,
    /// send(): no address, so the kernel checks the socket's opener.
    Send,
}

fn nl_request(msg: &[u8], how: NlSend) -> Out {
    let fd = fd32(need(
        sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        "socket",
    )?);
    let addr = snl();
    let r = match how {
        NlSend::SendTo => sys::sendto(fd, msg, Some(&addr)),
        NlSend::SendMsg => sys::sendmsg(fd, Some(&addr), msg, None),
        NlSend::Send => sys::sendto(fd, msg, None),
    };
    let ack = if r.is_ok() { nl_ack(fd) } else { "-".into() };
    Ok(format!("{} ack={ack}", ret(r)))
}

/// RTM_GETLINK dump: the names of the interfaces this process's network namespace has.
fn nl_links() -> Out {
    let fd = fd32(need(
        sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
        "socket",
    )?);
    let body = [0u8; 16];
    let msg = nl_msg(libc::RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, &body);
    let r = sys::sendto(fd, &msg, Some(&snl()));
    if r.is_err() {
        return Ok(ret(r));
    }
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32768];
    'outer: for _ in 0..64 {
        let n = need(sys::recv(fd, &mut buf, 0), "recv")? as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                break;
            }
            if i32::from(ty) == libc::NLMSG_DONE || i32::from(ty) == libc::NLMSG_ERROR {
                break 'outer;
            }
            if ty == libc::RTM_NEWLINK {
                let mut a = off + 32;
                while a + 4 <= off + len {
                    let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                    let aty = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]);
                    if alen < 4 {
                        break;
                    }
                    if aty == libc::IFLA_IFNAME {
                        let s = &buf[a + 4..(a + alen).min(off + len)];
                        let s = s.split(|b| *b == 0).next().unwrap_or_default();
                        names.push(String::from_utf8_lossy(s).into_owned());
                    }
                    a += (alen + 3) & !3;
                }
            }
            off += (len + 3) & !3;
        }
    }
    names.sort();
    Ok(format!("{} links={}", ret(r.map(|_| 0)), names.join(",")))
}

/// A sock_diag dump of the TCP sockets of the network namespace, sent to an explicit
/// sockaddr_nl{0}: whether it lists any, and whether it shows their marks (INET_DIAG_MARK is
/// given to senders with CAP_NET_ADMIN).
fn nl_sock_diag() -> Out {
    const NETLINK_SOCK_DIAG: i32 = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const INET_DIAG_MARK: u16 = 15;
    let fd = fd32(need(
        sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_SOCK_DIAG),
        "socket",
    )?);
    // struct inet_diag_req_v2: family, protocol, extensions, pad, states, then a zero sockid.
    let mut body = vec![libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0];
    body.extend_from_slice(&u32::MAX.to_ne_bytes());
    body.extend_from_slice(&[0u8; 48]);
    let msg = nl_msg(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, &body);
    let r = sys::sendto(fd, &msg, Some(&snl()));
    if r.is_err() {
        return Ok(ret(r));
    }
    let (mut sockets, mut marks) = (0u32, 0u32);
    let mut buf = vec![0u8; 32768];
    'outer: for _ in 0..256 {
        let n = need(sys::recv(fd, &mut buf, 0), "recv")? as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                break;
            }
            if i32::from(ty) == libc::NLMSG_DONE || i32::from(ty) == libc::NLMSG_ERROR {
                break 'outer;
            }
            if ty == SOCK_DIAG_BY_FAMILY {
                sockets += 1;
                // struct inet_diag_msg is 72 bytes; attributes follow.
                let mut a = off + 16 + 72;
                while a + 4 <= off + len {
                    let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                    let aty = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]) & 0x3fff;
                    if alen < 4 {
                        break;
                    }
                    if aty == INET_DIAG_MARK {
                        marks += 1;
                    }
                    a += (alen + 3) & !3;
                }
            }
            off += (len + 3) & !3;
        }
    }
    Ok(format!(
        "{} sockets={} marks={}",
        ret(r.map(|_| 0)),
        if sockets > 0 { "listed" } else { "none" },
        if marks > 0 { "shown" } else { "hidden" }
    ))
}

// ---------------------------------------------------------------------------------------------
// AF_UNIX and credentials.

fn unix_sendto(path: &str, ty: i32, msg: bool) -> Out {
    let fd = fd32(need(sys::socket(libc::AF_UNIX, ty, 0), "socket")?);
    let a = sun(path);
    let r = if msg {
        sys::sendmsg(fd, Some(&a), b"probe", None)
    } else {
        sys::sendto(fd, b"probe", Some(&a))
    };
    Ok(ret(r))
}

fn unix_connect(path: &str, ty: i32) -> Out {
    let fd = fd32(need(sys::socket(libc::AF_UNIX, ty, 0), "socket")?);
    Ok(ret(sys::connect(fd, &sun(path))))
}

/// A control message carrying `struct ucred`.
#[repr(C)]
struct CredMsg {
    len: usize,
    level: libc::c_int,
    ty: libc::c_int,
    cred: libc::ucred,
    pad: u32,
}

impl CredMsg {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&self.len.to_ne_bytes());
        b.extend_from_slice(&self.level.to_ne_bytes());
        b.extend_from_slice(&self.ty.to_ne_bytes());
        b.extend_from_slice(&self.cred.pid.to_ne_bytes());
        b.extend_from_slice(&self.cred.uid.to_ne_bytes());
        b.extend_from_slice(&self.cred.gid.to_ne_bytes());
        b.extend_from_slice(&self.pad.to_ne_bytes());
        b
    }
}

#[derive(Clone, Copy)]
enum CredSend {
    /// sendmsg with SCM_CREDENTIALS claiming this uid and gid.
    Claim(u32, u32),
    /// sendmsg without control data.
    NoneGiven,
    /// sendto without an address or control data.
    SendTo,
    /// write() on the socket.
    Write,
}

/// Sends one datagram over a socketpair whose receiving end has SO_PASSCRED and says which
/// credentials the receiver sees.
fn creds(how: CredSend) -> Out {
    let [a, b] = need(
        sys::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM),
        "socketpair",
    )?;
    need(
        sys::setsockopt(b, libc::SOL_SOCKET, libc::SO_PASSCRED, &int(1)),
        "passcred",
    )?;
    // SAFETY: getpid cannot fail and takes no pointers.
    let me = unsafe { libc::getpid() };
    let r = match how {
        CredSend::Claim(uid, gid) => {
            let m = CredMsg {
                len: std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<libc::ucred>(),
                level: libc::SOL_SOCKET,
                ty: libc::SCM_CREDENTIALS,
                cred: libc::ucred { pid: me, uid, gid },
                pad: 0,
            };
            sys::sendmsg(a, None, b"x", Some(&m.bytes()))
        }
        CredSend::NoneGiven => sys::sendmsg(a, None, b"x", None),
        CredSend::SendTo => sys::sendto(a, b"x", None),
        CredSend::Write => sys::write(a, b"x"),
    };
    if r.is_err() {
        return Ok(ret(r));
    }
    let mut data = [0u8; 16];
    let mut control = [0u8; 64];
    let (_, clen) = need(sys::recvmsg(b, &mut data, &mut control), "recvmsg")?;
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let mut seen = "none".to_owned();
    let mut off = 0;
    while off + hdr <= clen {
        let len = usize::from_ne_bytes(control[off..off + 8].try_into().expect("8 bytes"));
        let level = i32::from_ne_bytes(control[off + 8..off + 12].try_into().expect("4 bytes"));
        let ty = i32::from_ne_bytes(control[off + 12..off + 16].try_into().expect("4 bytes"));
        if len < hdr {
            break;
        }
        if level == libc::SOL_SOCKET && ty == libc::SCM_CREDENTIALS && len >= hdr + 12 {
            let d = &control[off + hdr..off + hdr + 12];
            let pid = i32::from_ne_bytes(d[0..4].try_into().expect("4 bytes"));
            let uid = u32::from_ne_bytes(d[4..8].try_into().expect("4 bytes"));
            let gid = u32::from_ne_bytes(d[8..12].try_into().expect("4 bytes"));
            let who = if pid == me { "self" } else { "other" };
            seen = format!("uid={uid} gid={gid} pid={who}");
        }
        off += (len + 7) & !7;
    }
    Ok(format!("{} peer_sees {seen}", ret(r.map(|_| 0))))
}

// ---------------------------------------------------------------------------------------------
// RLIMIT_FSIZE.

#[derive(Clone, Copy, PartialEq)]
enum Grow {
    Write,
    Pwrite,
    Writev,
    Ftruncate,
    Fallocate,
    CopyFileRange,
    Sendfile,
}

/// With RLIMIT_FSIZE at 4096 (and SIGXFSZ ignored or not), grows a new file past it. Prints
/// each step as it goes: the default SIGXFSZ ends the process in the middle.
fn fsize(a: &Args, how: Grow, ignore: bool) -> Out {
    let path = a.p("fx", "pub/fsize");
    let src = a.p("fx", "pub/fsize-src");
    let from = if matches!(how, Grow::CopyFileRange | Grow::Sendfile) {
        let s = fd32(need(
            sys::open(&src, libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC, 0o644),
            "open-src",
        )?);
        need(sys::write(s, &[b's'; 8192]), "write-src")?;
        need(sys::fsync(s), "fsync-src")?;
        let _ = sys::close(s);
        fd32(need(sys::open(&src, libc::O_RDONLY, 0), "reopen-src")?)
    } else {
        -1
    };
    let fd = fd32(need(
        sys::open(&path, libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC, 0o644),
        "open",
    )?);
    need(sys::setrlimit(libc::RLIMIT_CORE, 0, 0), "core")?;
    need(sys::setrlimit(libc::RLIMIT_FSIZE, 4096, 4096), "setrlimit")?;
    if ignore {
        sys::ignore(libc::SIGXFSZ);
    }
    let data = [b'd'; 8192];
    match how {
        Grow::Write => {
            part(&format!("w1={} ", v(sys::write(fd, &data))));
            part(&format!("w2={} ", v(sys::write(fd, b"x"))));
        }
        Grow::Pwrite => {
            part(&format!("pw1={} ", v(sys::pwrite(fd, &data, 0))));
            part(&format!("pw2={} ", v(sys::pwrite(fd, b"x", 4096))));
        }
        Grow::Writev => {
            part(&format!(
                "wv1={} ",
                v(sys::writev(fd, &[&data[..4096], &data[4096..]]))
            ));
            part(&format!("wv2={} ", v(sys::writev(fd, &[b"x", b"y"]))));
        }
        Grow::Ftruncate => {
            part(&format!("t1={} ", v(sys::ftruncate(fd, 4096))));
            part(&format!("t2={} ", v(sys::ftruncate(fd, 8192))));
        }
        Grow::Fallocate => {
            part(&format!("fa1={} ", v(sys::fallocate(fd, 0, 0, 4096))));
            part(&format!("fa2={} ", v(sys::fallocate(fd, 0, 0, 8192))));
        }
        Grow::CopyFileRange => {
            part(&format!("c1={} ", v(sys::copy_file_range(from, fd, 8192))));
            part(&format!("c2={} ", v(sys::copy_file_range(from, fd, 8192))));
        }
        Grow::Sendfile => {
            part(&format!("s1={} ", v(sys::sendfile(fd, from, 8192))));
            part(&format!("s2={} ", v(sys::sendfile(fd, from, 8192))));
        }
    }
    let fsync = v(sys::fsync(fd));
    let size = sys::fstat(fd).map_or_else(errname, |st| st.st_size.to_string());
    let close = v(sys::close(fd));
    Ok(format!("fsync={fsync} size={size} close={close}"))
}

// ---------------------------------------------------------------------------------------------
// Helpers of several probes.

fn open_ro(a: &Args, name: &str, rel: &str) -> Result<i32, String> {
    Ok(fd32(need(
        sys::open(&a.p(name, rel), libc::O_RDONLY, 0),
        "open",
    )?))
}

fn times_2001() -> [libc::timespec; 2] {
    [libc::timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    }; 2]
}

fn udp() -> Result<i32, String> {
    Ok(fd32(need(
        sys::socket(libc::AF_INET, libc::SOCK_DGRAM, 0),
        "socket",
    )?))
}

fn sockopt(level: i32, opt: i32, val: &[u8], read_back: bool) -> Out {
    let fd = udp()?;
    let r = sys::setsockopt(fd, level, opt, val);
    if read_back {
        Ok(format!(
            "{} value={}",
            ret(r),
            num(sys::getsockopt_int(fd, level, opt))
        ))
    } else {
        Ok(ret(r))
    }
}

fn ifreq(name: &str) -> [u8; 40] {
    let mut r = [0u8; 40];
    r[..name.len()].copy_from_slice(name.as_bytes());
    r
}

/// Writes `text` to a /proc file of process `who` (a pid or "self").
fn proc_write(who: &str, file: &str, text: &str) -> Out {
    let path = cs(&format!("/proc/{who}/{file}"));
    let fd = match sys::open(&path, libc::O_WRONLY, 0) {
        Ok(fd) => fd32(fd),
        Err(e) => return Ok(format!("open={}", errname(e))),
    };
    Ok(format!(
        "open=fd write={}",
        v(sys::write(fd, text.as_bytes()).map(|_| 0))
    ))
}

/// Reads a /proc file of process `who` (a pid or "self"): whether the read is allowed, and
/// what it says.
fn proc_read(who: &str, file: &str) -> Out {
    let path = cs(&format!("/proc/{who}/{file}"));
    let fd = match sys::open(&path, libc::O_RDONLY, 0) {
        Ok(fd) => fd32(fd),
        Err(e) => return Ok(format!("open={}", errname(e))),
    };
    let mut b = [0u8; 256];
    Ok(match sys::read(fd, &mut b) {
        Ok(n) => format!(
            "open=fd read=ok value={}",
            String::from_utf8_lossy(&b[..n as usize]).trim()
        ),
        Err(e) => format!("open=fd read={}", errname(e)),
    })
}

fn nice_now() -> String {
    num(sys::getpriority(0))
}

fn rlimit_str(r: u64) -> String {
    if r == libc::RLIM_INFINITY {
        "unl".into()
    } else {
        r.to_string()
    }
}

/// Reads a root-only-looking field of `/proc/PID/stat`: start_code (field 26) is shown only to
/// those who may ptrace the process (checked when the file is *read*).
fn proc_stat_startcode(pid: i32) -> Out {
    let path = cs(&format!("/proc/{pid}/stat"));
    let fd = match sys::open(&path, libc::O_RDONLY, 0) {
        Ok(fd) => fd32(fd),
        Err(e) => return Ok(format!("open={}", errname(e))),
    };
    let mut b = [0u8; 4096];
    let n = match sys::read(fd, &mut b) {
        Ok(n) => n as usize,
        Err(e) => return Ok(format!("open=fd read={}", errname(e))),
    };
    let text = String::from_utf8_lossy(&b[..n]).into_owned();
    let after = text.rsplit_once(')').map_or("", |x| x.1);
    // After ")": field 3 (state) is the first; field 26 is the 24th.
    let start = after.split_whitespace().nth(23).unwrap_or("?");
    let shown = if start.parse::<u64>().is_ok_and(|x| x > 1) {
        "visible"
    } else {
        "hidden"
    };
    Ok(format!("open=fd read=ok startcode={shown}"))
}

fn proc_wchan(pid: i32) -> Out {
    match read_small(&cs(&format!("/proc/{pid}/wchan"))) {
        Err(e) => Ok(format!("read={}", errname(e))),
        Ok(s) => Ok(format!(
            "read=ok wchan={}",
            if s == "0" || s.is_empty() {
                "hidden"
            } else {
                "visible"
            }
        )),
    }
}

fn ptrace_probe(pid: i32, seize: bool) -> Out {
    let req = if seize {
        libc::PTRACE_SEIZE
    } else {
        libc::PTRACE_ATTACH
    };
    let r = sys::ptrace(req, pid);
    if r.is_ok() {
        // Leave the process as it was: an attached one is stopped by a SIGSTOP that a detach
        // with signal 0 discards; a seized one is interrupted first so that it can be detached.
        if seize {
            let _ = sys::ptrace(libc::PTRACE_INTERRUPT, pid);
        }
        let _ = sys::waitpid(pid, libc::__WALL);
        let _ = sys::ptrace(libc::PTRACE_DETACH, pid);
    }
    Ok(ret(r))
}

fn sigqueue(pid: i32) -> Out {
    let mut info = [0i32; 32];
    info[0] = libc::SIGTERM;
    info[2] = -1; // SI_QUEUE
    // SAFETY: getpid and getuid cannot fail and take no pointers.
    unsafe {
        info[4] = libc::getpid();
        info[5] = libc::getuid() as i32;
    }
    Ok(ret(sys::rt_sigqueueinfo(pid, libc::SIGTERM, &info)))
}

fn write_until_error(path: &CStr, total: usize) -> Out {
    let fd = fd32(need(
        sys::open(path, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, 0o644),
        "open",
    )?);
    let chunk = [b'u'; 65536];
    let mut written = 0usize;
    let mut err = "none".to_owned();
    while written < total {
        match sys::write(fd, &chunk) {
            Ok(n) if n > 0 => written += n as usize,
            Ok(_) => break,
            Err(e) => {
                err = errname(e);
                break;
            }
        }
    }
    let fsync = v(sys::fsync(fd));
    let close = v(sys::close(fd));
    Ok(format!(
        "written={written} err={err} fsync={fsync} close={close}"
    ))
}

// ---------------------------------------------------------------------------------------------
// The probes.

/// One probe.
struct Probe {
    name: &'static str,
    args: &'static [&'static str],
    what: &'static str,
    run: fn(&Args) -> Out,
}

const FX: &[&str] = &["fx"];
const SOCK: &[&str] = &["sock"];
const ROOT: &[&str] = &["rootpid"];
const USER: &[&str] = &["userpid"];
const NONE: &[&str] = &[];

fn p(
    name: &'static str,
    args: &'static [&'static str],
    what: &'static str,
    run: fn(&Args) -> Out,
) -> Probe {
    Probe {
        name,
        args,
        what,
        run,
    }
}

fn probes() -> Vec<Probe> {
    vec![
        // Identity, as the process sees it.
        p(
            "whoami",
            NONE,
            "uids, gids, groups and effective capabilities",
            |_| {
                // SAFETY: these calls cannot fail and take no pointers.
                let (u, eu, g, eg) = unsafe {
                    (
                        libc::getuid(),
                        libc::geteuid(),
                        libc::getgid(),
                        libc::getegid(),
                    )
                };
                let mut groups = [0u32; 64];
                // SAFETY: `groups` has room for 64 entries, the size given.
                let n = chk(i64::from(unsafe {
                    libc::getgroups(64, groups.as_mut_ptr())
                }));
                let gl = match n {
                    Ok(n) => groups[..n as usize]
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    Err(e) => errname(e),
                };
                let caps = sys::capget_effective().map_or_else(errname, |c| format!("{c:x}"));
                Ok(format!(
                    "uid={u} euid={eu} gid={g} egid={eg} groups={gl} capeff={caps}"
                ))
            },
        ),
        // Netlink: rtnetlink asks CAP_NET_ADMIN of the *sender* when the message names its
        // destination, of the socket's opener when it does not.
        p(
            "nl_newaddr_sendto",
            NONE,
            "RTM_NEWADDR 192.0.2.77/32 on lo by sendto to sockaddr_nl{0}",
            |_| nl_request(&nl_newaddr(), NlSend::SendTo),
        ),
        p(
            "nl_newaddr_sendmsg",
            NONE,
            "RTM_NEWADDR 192.0.2.77/32 on lo by sendmsg to sockaddr_nl{0}",
            |_| nl_request(&nl_newaddr(), NlSend::SendMsg),
        ),
        p(
            "nl_newaddr_send",
            NONE,
            "RTM_NEWADDR 192.0.2.77/32 on lo by send() (no address: the opener is checked)",
            |_| nl_request(&nl_newaddr(), NlSend::Send),
        ),
        p(
            "nl_newlink_sendto",
            NONE,
            "RTM_NEWLINK lo mtu 1280 by sendto to sockaddr_nl{0}",
            |_| nl_request(&nl_newlink(), NlSend::SendTo),
        ),
        p(
            "nl_newlink_sendmsg",
            NONE,
            "RTM_NEWLINK lo mtu 1280 by sendmsg to sockaddr_nl{0}",
            |_| nl_request(&nl_newlink(), NlSend::SendMsg),
        ),
        p(
            "nl_newroute_sendto",
            NONE,
            "RTM_NEWROUTE 198.51.100.0/24 dev lo by sendto to sockaddr_nl{0}",
            |_| nl_request(&nl_newroute(), NlSend::SendTo),
        ),
        p(
            "nl_newroute_sendmsg",
            NONE,
            "RTM_NEWROUTE 198.51.100.0/24 dev lo by sendmsg to sockaddr_nl{0}",
            |_| nl_request(&nl_newroute(), NlSend::SendMsg),
        ),
        p(
            "nl_sendto_portid",
            NONE,
            "sendto a NETLINK_ROUTE message to port id 12345 (a socket, not the kernel)",
            |_| {
                let fd = fd32(need(
                    sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
                    "socket",
                )?);
                Ok(ret(sys::sendto(fd, &nl_newaddr(), Some(&snl_to(12345)))))
            },
        ),
        p(
            "nl_sock_diag_marks",
            NONE,
            "sock_diag dump of TCP sockets sent to sockaddr_nl{0}: are socket marks shown (CAP_NET_ADMIN of the sender)",
            |_| nl_sock_diag(),
        ),
        p(
            "nl_getlink_dump",
            NONE,
            "RTM_GETLINK dump (allowed): the interfaces of the network namespace",
            |_| nl_links(),
        ),
        // AF_UNIX: path lookup and write permission on the socket file, at sendto/connect time.
        p(
            "unix_dgram_sendto_rootdir",
            SOCK,
            "sendto a datagram socket inside a root-only (0700) directory",
            |a| {
                unix_sendto(
                    &format!("{}/rootonly/d.sock", a.s("sock")),
                    libc::SOCK_DGRAM,
                    false,
                )
            },
        ),
        p(
            "unix_dgram_sendto_nowrite",
            SOCK,
            "sendto a root datagram socket file of mode 0644",
            |a| {
                unix_sendto(
                    &format!("{}/nowrite.d", a.s("sock")),
                    libc::SOCK_DGRAM,
                    false,
                )
            },
        ),
        p(
            "unix_dgram_sendto_open",
            SOCK,
            "sendto a root datagram socket file of mode 0666 (allowed)",
            |a| unix_sendto(&format!("{}/open.d", a.s("sock")), libc::SOCK_DGRAM, false),
        ),
        p(
            "unix_dgram_sendmsg_nowrite",
            SOCK,
            "sendmsg to a root datagram socket file of mode 0644",
            |a| {
                unix_sendto(
                    &format!("{}/nowrite.d", a.s("sock")),
                    libc::SOCK_DGRAM,
                    true,
                )
            },
        ),
        p(
            "unix_dgram_connect_rootdir",
            SOCK,
            "connect a datagram socket inside a root-only directory",
            |a| {
                unix_connect(
                    &format!("{}/rootonly/d.sock", a.s("sock")),
                    libc::SOCK_DGRAM,
                )
            },
        ),
        p(
            "unix_dgram_connect_nowrite",
            SOCK,
            "connect a root datagram socket file of mode 0644",
            |a| unix_connect(&format!("{}/nowrite.d", a.s("sock")), libc::SOCK_DGRAM),
        ),
        p(
            "unix_stream_connect_rootdir",
            SOCK,
            "connect a stream socket inside a root-only directory",
            |a| {
                unix_connect(
                    &format!("{}/rootonly/s.sock", a.s("sock")),
                    libc::SOCK_STREAM,
                )
            },
        ),
        p(
            "unix_stream_connect_nowrite",
            SOCK,
            "connect a root stream socket file of mode 0644",
            |a| unix_connect(&format!("{}/nowrite.s", a.s("sock")), libc::SOCK_STREAM),
        ),
        p(
            "unix_stream_connect_open",
            SOCK,
            "connect a root stream socket file of mode 0666 (allowed)",
            |a| unix_connect(&format!("{}/open.s", a.s("sock")), libc::SOCK_STREAM),
        ),
        p(
            "unix_stream_sendto_nowrite",
            SOCK,
            "sendto with an address on an unconnected stream socket",
            |a| {
                unix_sendto(
                    &format!("{}/nowrite.s", a.s("sock")),
                    libc::SOCK_STREAM,
                    false,
                )
            },
        ),
        // SCM_CREDENTIALS: checked, or filled in, from the sending task.
        p(
            "scm_creds_claim_root",
            NONE,
            "sendmsg with SCM_CREDENTIALS claiming uid 0 gid 0",
            |_| creds(CredSend::Claim(0, 0)),
        ),
        p(
            "scm_creds_claim_self",
            NONE,
            "sendmsg with SCM_CREDENTIALS of its own uid and gid (allowed)",
            |_| {
                // SAFETY: getuid and getgid cannot fail and take no pointers.
                let (u, g) = unsafe { (libc::getuid(), libc::getgid()) };
                creds(CredSend::Claim(u, g))
            },
        ),
        p(
            "scm_creds_none_sendmsg",
            NONE,
            "sendmsg without credentials to a SO_PASSCRED peer: what the peer sees",
            |_| creds(CredSend::NoneGiven),
        ),
        p(
            "scm_creds_implicit_sendto",
            NONE,
            "sendto without credentials to a SO_PASSCRED peer: what the peer sees",
            |_| creds(CredSend::SendTo),
        ),
        p(
            "scm_creds_implicit_write",
            NONE,
            "write() to a SO_PASSCRED peer: what the peer sees",
            |_| creds(CredSend::Write),
        ),
        // RLIMIT_FSIZE of the calling task.
        p(
            "fsize_write_sig",
            FX,
            "RLIMIT_FSIZE 4096: write 8192 then 1 byte (SIGXFSZ default)",
            |a| fsize(a, Grow::Write, false),
        ),
        p(
            "fsize_pwrite_sig",
            FX,
            "RLIMIT_FSIZE 4096: pwrite 8192 at 0 then 1 byte at 4096 (SIGXFSZ default)",
            |a| fsize(a, Grow::Pwrite, false),
        ),
        p(
            "fsize_writev_sig",
            FX,
            "RLIMIT_FSIZE 4096: writev 2x4096 then 2 bytes (SIGXFSZ default)",
            |a| fsize(a, Grow::Writev, false),
        ),
        p(
            "fsize_ftruncate_sig",
            FX,
            "RLIMIT_FSIZE 4096: ftruncate to 4096 then 8192 (SIGXFSZ default)",
            |a| fsize(a, Grow::Ftruncate, false),
        ),
        p(
            "fsize_fallocate_sig",
            FX,
            "RLIMIT_FSIZE 4096: fallocate 4096 then 8192 (SIGXFSZ default)",
            |a| fsize(a, Grow::Fallocate, false),
        ),
        p(
            "fsize_write_efbig",
            FX,
            "RLIMIT_FSIZE 4096, SIGXFSZ ignored: write 8192 then 1 byte",
            |a| fsize(a, Grow::Write, true),
        ),
        p(
            "fsize_pwrite_efbig",
            FX,
            "RLIMIT_FSIZE 4096, SIGXFSZ ignored: pwrite 8192 at 0 then 1 byte at 4096",
            |a| fsize(a, Grow::Pwrite, true),
        ),
        p(
            "fsize_writev_efbig",
            FX,
            "RLIMIT_FSIZE 4096, SIGXFSZ ignored: writev 2x4096 then 2 bytes",
            |a| fsize(a, Grow::Writev, true),
        ),
        p(
            "fsize_ftruncate_efbig",
            FX,
            "RLIMIT_FSIZE 4096, SIGXFSZ ignored: ftruncate to 4096 then 8192",
            |a| fsize(a, Grow::Ftruncate, true),
        ),
        p(
            "fsize_fallocate_efbig",
            FX,
            "RLIMIT_FSIZE 4096, SIGXFSZ ignored: fallocate 4096 then 8192",
            |a| fsize(a, Grow::Fallocate, true),
        ),
        p(
            "fsize_copy_file_range_efbig",
            FX,
            "RLIMIT_FSIZE 4096, SIGXFSZ ignored: copy_file_range 8192 twice",
            |a| fsize(a, Grow::CopyFileRange, true),
        ),
        p(
            "fsize_sendfile_efbig",
            FX,
            "RLIMIT_FSIZE 4096, SIGXFSZ ignored: sendfile 8192 twice",
            |a| fsize(a, Grow::Sendfile, true),
        ),
        // Pipes.
        p(
            "pipe_setsz_over_max",
            NONE,
            "F_SETPIPE_SZ 2 MiB, above /proc/sys/fs/pipe-max-size",
            |_| {
                let [r, _w] = need(sys::pipe(), "pipe")?;
                let x = sys::fcntl(r, libc::F_SETPIPE_SZ, 2 << 20);
                Ok(format!(
                    "{} size={}",
                    ret(x),
                    num(sys::fcntl(r, libc::F_GETPIPE_SZ, 0))
                ))
            },
        ),
        p(
            "pipe_setsz_max",
            NONE,
            "F_SETPIPE_SZ 1 MiB, at pipe-max-size (allowed)",
            |_| {
                let [r, _w] = need(sys::pipe(), "pipe")?;
                let x = sys::fcntl(r, libc::F_SETPIPE_SZ, 1 << 20);
                Ok(format!(
                    "{} size={}",
                    ret(x),
                    num(sys::fcntl(r, libc::F_GETPIPE_SZ, 0))
                ))
            },
        ),
        // O_NOATIME: owner or CAP_FOWNER, at open and at fcntl time.
        p(
            "noatime_open_rootfile",
            FX,
            "open a root-owned 0644 file O_RDONLY|O_NOATIME",
            |a| {
                Ok(ret_fd(sys::open(
                    &a.p("fx", "rootfile"),
                    libc::O_RDONLY | libc::O_NOATIME,
                    0,
                )))
            },
        ),
        p(
            "noatime_fcntl_rootfile",
            FX,
            "fcntl(F_SETFL, O_NOATIME) on a root-owned file opened O_RDONLY",
            |a| {
                let fd = open_ro(a, "fx", "rootfile")?;
                let r = sys::fcntl(fd, libc::F_SETFL, i64::from(libc::O_NOATIME));
                let fl = sys::fcntl(fd, libc::F_GETFL, 0)
                    .map(|f| i64::from(f & i64::from(libc::O_NOATIME) != 0));
                Ok(format!("{} noatime={}", ret(r), num(fl)))
            },
        ),
        p(
            "noatime_fcntl_ownfile",
            FX,
            "fcntl(F_SETFL, O_NOATIME) on its own file (allowed)",
            |a| {
                let fd = open_ro(a, "fx", "pub/own")?;
                let r = sys::fcntl(fd, libc::F_SETFL, i64::from(libc::O_NOATIME));
                let fl = sys::fcntl(fd, libc::F_GETFL, 0)
                    .map(|f| i64::from(f & i64::from(libc::O_NOATIME) != 0));
                Ok(format!("{} noatime={}", ret(r), num(fl)))
            },
        ),
        // Names in and of root-only files and directories.
        p("open_rootonly", FX, "open a root 0600 file O_RDONLY", |a| {
            Ok(ret_fd(sys::open(&a.p("fx", "rootonly"), libc::O_RDONLY, 0)))
        }),
        p(
            "open_rootfile_write",
            FX,
            "open a root 0644 file O_WRONLY",
            |a| Ok(ret_fd(sys::open(&a.p("fx", "rootfile"), libc::O_WRONLY, 0))),
        ),
        p(
            "openat_in_rootdir",
            FX,
            "openat(dirfd, \"rootdir/secret\") through a 0700 root directory",
            |a| {
                let d = fd32(need(
                    sys::open(&cs(a.s("fx")), libc::O_RDONLY | libc::O_DIRECTORY, 0),
                    "open-dir",
                )?);
                Ok(ret_fd(sys::openat(d, c"rootdir/secret", libc::O_RDONLY, 0)))
            },
        ),
        p(
            "stat_in_rootdir",
            FX,
            "stat a file inside a 0700 root directory",
            |a| Ok(ret(sys::stat(&a.p("fx", "rootdir/secret")).map(|_| 0))),
        ),
        p(
            "access_rootonly",
            FX,
            "access(R_OK) of a root 0600 file",
            |a| Ok(ret(sys::access(&a.p("fx", "rootonly"), libc::R_OK))),
        ),
        p(
            "faccessat2_rootonly",
            FX,
            "faccessat2(R_OK, AT_EACCESS) of a root 0600 file",
            |a| {
                Ok(ret(sys::faccessat2(
                    &a.p("fx", "rootonly"),
                    libc::R_OK,
                    libc::AT_EACCESS,
                )))
            },
        ),
        p(
            "readlink_in_rootdir",
            FX,
            "readlink of a symlink inside a 0700 root directory",
            |a| {
                let mut b = [0u8; 256];
                Ok(ret(sys::readlink(&a.p("fx", "rootdir/link"), &mut b)))
            },
        ),
        p(
            "unlink_in_rodir",
            FX,
            "unlink a root file in a 0755 root directory",
            |a| Ok(ret(sys::unlink(&a.p("fx", "ro/victim")))),
        ),
        p(
            "rename_in_rodir",
            FX,
            "rename a root file within a 0755 root directory",
            |a| {
                Ok(ret(sys::rename(
                    &a.p("fx", "ro/victim"),
                    &a.p("fx", "ro/moved"),
                )))
            },
        ),
        p(
            "rename_out_of_rodir",
            FX,
            "rename a root file from a 0755 root directory into a 0777 one",
            |a| {
                Ok(ret(sys::rename(
                    &a.p("fx", "ro/victim"),
                    &a.p("fx", "pub/moved"),
                )))
            },
        ),
        p(
            "mkdir_in_rodir",
            FX,
            "mkdir in a 0755 root directory",
            |a| Ok(ret(sys::mkdir(&a.p("fx", "ro/newdir"), 0o755))),
        ),
        p(
            "rmdir_in_rodir",
            FX,
            "rmdir an empty directory in a 0755 root directory",
            |a| Ok(ret(sys::rmdir(&a.p("fx", "ro/sub")))),
        ),
        p(
            "link_rootfile",
            FX,
            "hard link to a root 0644 file from a 0777 directory (protected_hardlinks)",
            |a| {
                Ok(ret(sys::link(
                    &a.p("fx", "rootfile"),
                    &a.p("fx", "pub/hard"),
                )))
            },
        ),
        p(
            "link_in_rodir",
            FX,
            "hard link to its own file inside a 0755 root directory",
            |a| Ok(ret(sys::link(&a.p("fx", "pub/own"), &a.p("fx", "ro/hard")))),
        ),
        p(
            "symlink_in_rodir",
            FX,
            "symlink inside a 0755 root directory",
            |a| Ok(ret(sys::symlink(c"target", &a.p("fx", "ro/sym")))),
        ),
        p("chmod_rootfile", FX, "chmod 0666 a root 0644 file", |a| {
            Ok(ret(sys::chmod(&a.p("fx", "rootfile"), 0o666)))
        }),
        p("chown_rootfile", FX, "chown a root file to itself", |a| {
            Ok(ret(sys::chown(&a.p("fx", "rootfile"), 65534, 65534)))
        }),
        p(
            "utimensat_rootfile_times",
            FX,
            "utimensat with explicit times on a root 0644 file",
            |a| {
                Ok(ret(sys::utimensat(
                    &a.p("fx", "rootfile"),
                    Some(&times_2001()),
                )))
            },
        ),
        p(
            "utimensat_rootfile_now",
            FX,
            "utimensat(NULL) (now) on a root 0644 file",
            |a| Ok(ret(sys::utimensat(&a.p("fx", "rootfile"), None))),
        ),
        p(
            "fchmod_rootfile_rdonly",
            FX,
            "fchmod 0666 on an O_RDONLY fd of a root 0644 file",
            |a| {
                let fd = open_ro(a, "fx", "rootfile")?;
                Ok(ret(sys::fchmod(fd, 0o666)))
            },
        ),
        p(
            "fchown_rootfile_rdonly",
            FX,
            "fchown to itself on an O_RDONLY fd of a root 0644 file",
            |a| {
                let fd = open_ro(a, "fx", "rootfile")?;
                Ok(ret(sys::fchown(fd, 65534, 65534)))
            },
        ),
        p(
            "futimens_rootfile_times",
            FX,
            "futimens with explicit times on an O_RDONLY fd of a root file",
            |a| {
                let fd = open_ro(a, "fx", "rootfile")?;
                Ok(ret(sys::futimens(fd, Some(&times_2001()))))
            },
        ),
        p(
            "futimens_rootfile_now",
            FX,
            "futimens(NULL) (now) on an O_RDONLY fd of a root 0644 file",
            |a| {
                let fd = open_ro(a, "fx", "rootfile")?;
                Ok(ret(sys::futimens(fd, None)))
            },
        ),
        p(
            "truncate_rootfile",
            FX,
            "truncate a root 0644 file to 0",
            |a| Ok(ret(sys::truncate(&a.p("fx", "rootfile"), 0))),
        ),
        p(
            "ftruncate_rootfile_rdonly",
            FX,
            "ftruncate an O_RDONLY fd of a root 0644 file",
            |a| {
                let fd = open_ro(a, "fx", "rootfile")?;
                Ok(ret(sys::ftruncate(fd, 0)))
            },
        ),
        p(
            "chown_own_to_other",
            FX,
            "chown its own file to uid 1",
            |a| Ok(ret(sys::chown(&a.p("fx", "pub/own"), 1, u32::MAX))),
        ),
        p(
            "chgrp_own_to_root",
            FX,
            "chgrp its own file to gid 0 (not a member)",
            |a| Ok(ret(sys::chown(&a.p("fx", "pub/own"), u32::MAX, 0))),
        ),
        // Files it creates, and others' files in a sticky directory.
        p(
            "create_owner",
            FX,
            "create a file in a 0777 directory: its owner, group and mode",
            |a| {
                let fd = fd32(need(
                    sys::open(
                        &a.p("fx", "pub/new"),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                        0o666,
                    ),
                    "open",
                )?);
                let st = sys::fstat(fd).map_err(|e| format!("fstat={}", errname(e)))?;
                Ok(format!("ret=fd {} mode={}", owner(&st), mode(&st)))
            },
        ),
        p(
            "create_owner_sgid_dir",
            FX,
            "create a file in a setgid 2777 directory of group 4242",
            |a| {
                let fd = fd32(need(
                    sys::open(
                        &a.p("fx", "sgid/new"),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                        0o666,
                    ),
                    "open",
                )?);
                let st = sys::fstat(fd).map_err(|e| format!("fstat={}", errname(e)))?;
                Ok(format!("ret=fd {} mode={}", owner(&st), mode(&st)))
            },
        ),
        p(
            "mkdir_sgid_dir",
            FX,
            "mkdir in a setgid 2777 directory of group 4242",
            |a| {
                let path = a.p("fx", "sgid/newdir");
                let r = sys::mkdir(&path, 0o777);
                let st = sys::stat(&path).map_err(|e| format!("{} stat={}", ret(r), errname(e)))?;
                Ok(format!("{} {} mode={}", ret(r), owner(&st), mode(&st)))
            },
        ),
        p(
            "umask_create",
            FX,
            "umask 027, then create a file 0666 and a directory 0777",
            |a| {
                sys::umask(0o027);
                let f = a.p("fx", "pub/masked");
                let d = a.p("fx", "pub/maskeddir");
                let fr = sys::open(&f, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o666);
                let dr = sys::mkdir(&d, 0o777);
                let fm = sys::stat(&f).map_or_else(errname, |s| mode(&s));
                let dm = sys::stat(&d).map_or_else(errname, |s| mode(&s));
                Ok(format!(
                    "file={} mode={fm} dir={} mode={dm}",
                    v_fd(fr),
                    v(dr)
                ))
            },
        ),
        p(
            "write_sticky_other",
            FX,
            "append to another user's 0666 file in a sticky 1777 directory",
            |a| {
                let fd = fd32(need(
                    sys::open(
                        &a.p("fx", "sticky/other"),
                        libc::O_WRONLY | libc::O_APPEND,
                        0,
                    ),
                    "open",
                )?);
                let w = sys::write(fd, b"x");
                let c = sys::close(fd);
                Ok(format!("{} close={}", ret(w), v(c)))
            },
        ),
        p(
            "open_creat_sticky_other",
            FX,
            "open O_CREAT|O_WRONLY another user's file in a sticky directory (protected_regular)",
            |a| {
                Ok(ret_fd(sys::open(
                    &a.p("fx", "sticky/other"),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o644,
                )))
            },
        ),
        p(
            "unlink_sticky_other",
            FX,
            "unlink another user's file in a sticky 1777 directory",
            |a| Ok(ret(sys::unlink(&a.p("fx", "sticky/other")))),
        ),
        p(
            "write_clears_suid",
            FX,
            "write to a root 06777 file: are set-user-ID and set-group-ID cleared",
            |a| {
                let fd = fd32(need(
                    sys::open(&a.p("fx", "suid"), libc::O_WRONLY, 0),
                    "open",
                )?);
                let w = sys::write(fd, b"x");
                let m = sys::fstat(fd).map_or_else(errname, |s| mode(&s));
                Ok(format!("{} mode={m}", ret(w)))
            },
        ),
        p(
            "ftruncate_clears_suid",
            FX,
            "ftruncate a root 06777 file: are set-user-ID and set-group-ID cleared",
            |a| {
                let fd = fd32(need(
                    sys::open(&a.p("fx", "suid"), libc::O_WRONLY, 0),
                    "open",
                )?);
                let w = sys::ftruncate(fd, 2);
                let m = sys::fstat(fd).map_or_else(errname, |s| mode(&s));
                Ok(format!("{} mode={m}", ret(w)))
            },
        ),
        // /proc files whose rights are checked when they are read or written.
        p(
            "proc_root_stat_startcode",
            ROOT,
            "read /proc/ROOT/stat: is start_code shown (ptrace check at read)",
            |a| proc_stat_startcode(a.pid("rootpid")),
        ),
        p(
            "proc_root_wchan",
            ROOT,
            "read /proc/ROOT/wchan: is it shown (ptrace check at read)",
            |a| proc_wchan(a.pid("rootpid")),
        ),
        p("proc_root_environ", ROOT, "open /proc/ROOT/environ", |a| {
            Ok(ret_fd(sys::open(
                &cs(&format!("/proc/{}/environ", a.pid("rootpid"))),
                libc::O_RDONLY,
                0,
            )))
        }),
        p("proc_root_mem", ROOT, "open /proc/ROOT/mem", |a| {
            Ok(ret_fd(sys::open(
                &cs(&format!("/proc/{}/mem", a.pid("rootpid"))),
                libc::O_RDONLY,
                0,
            )))
        }),
        p(
            "proc_user_mem",
            USER,
            "open /proc/USER/mem of a process of the same user",
            |a| {
                Ok(ret_fd(sys::open(
                    &cs(&format!("/proc/{}/mem", a.pid("userpid"))),
                    libc::O_RDONLY,
                    0,
                )))
            },
        ),
        p(
            "timerslack_root_write",
            ROOT,
            "write /proc/ROOT/timerslack_ns (0666; CAP_SYS_NICE checked at write)",
            |a| proc_write(&a.pid("rootpid").to_string(), "timerslack_ns", "123456"),
        ),
        p(
            "timerslack_user_write",
            USER,
            "write /proc/USER/timerslack_ns of a process of the same user",
            |a| proc_write(&a.pid("userpid").to_string(), "timerslack_ns", "123456"),
        ),
        p(
            "timerslack_root_read",
            ROOT,
            "read /proc/ROOT/timerslack_ns (CAP_SYS_NICE checked at read)",
            |a| proc_read(&a.pid("rootpid").to_string(), "timerslack_ns"),
        ),
        p(
            "timerslack_user_read",
            USER,
            "read /proc/USER/timerslack_ns of a process of the same user",
            |a| proc_read(&a.pid("userpid").to_string(), "timerslack_ns"),
        ),
        p(
            "comm_self_write",
            NONE,
            "write its own name to /proc/self/comm (only the task itself may), then read it",
            |_| {
                let r = proc_write("self", "comm", "mdp-renamed")?;
                let now = read_small(c"/proc/self/comm").unwrap_or_else(errname);
                Ok(format!("{r} comm={now}"))
            },
        ),
        p(
            "timerslack_self_write",
            NONE,
            "write /proc/self/timerslack_ns (allowed)",
            |_| proc_write("self", "timerslack_ns", "123456"),
        ),
        p(
            "oom_score_adj_lower",
            NONE,
            "write -500 to /proc/self/oom_score_adj (CAP_SYS_RESOURCE checked at write)",
            |_| {
                let r = proc_write("self", "oom_score_adj", "-500")?;
                let now = read_small(c"/proc/self/oom_score_adj").unwrap_or_else(errname);
                Ok(format!("{r} value={now}"))
            },
        ),
        p(
            "oom_score_adj_raise",
            NONE,
            "write 500 to /proc/self/oom_score_adj (allowed)",
            |_| {
                let r = proc_write("self", "oom_score_adj", "500")?;
                let now = read_small(c"/proc/self/oom_score_adj").unwrap_or_else(errname);
                Ok(format!("{r} value={now}"))
            },
        ),
        // Signals.
        p("kill_root", ROOT, "kill(ROOT, SIGTERM)", |a| {
            Ok(ret(sys::kill(a.pid("rootpid"), libc::SIGTERM)))
        }),
        p("tgkill_root", ROOT, "tgkill(ROOT, ROOT, SIGTERM)", |a| {
            Ok(ret(sys::tgkill(
                a.pid("rootpid"),
                a.pid("rootpid"),
                libc::SIGTERM,
            )))
        }),
        p(
            "sigqueue_root",
            ROOT,
            "rt_sigqueueinfo(ROOT, SIGTERM, SI_QUEUE)",
            |a| sigqueue(a.pid("rootpid")),
        ),
        p(
            "pidfd_send_signal_root",
            ROOT,
            "pidfd_open(ROOT) then pidfd_send_signal(SIGTERM)",
            |a| {
                let fd = fd32(need(sys::pidfd_open(a.pid("rootpid")), "pidfd_open")?);
                Ok(ret(sys::pidfd_send_signal(fd, libc::SIGTERM)))
            },
        ),
        p(
            "kill_user_sig0",
            USER,
            "kill(USER, 0) of a process of the same user (allowed)",
            |a| Ok(ret(sys::kill(a.pid("userpid"), 0))),
        ),
        // ptrace and its relatives.
        p(
            "ptrace_attach_root",
            ROOT,
            "PTRACE_ATTACH a root process",
            |a| ptrace_probe(a.pid("rootpid"), false),
        ),
        p(
            "ptrace_seize_root",
            ROOT,
            "PTRACE_SEIZE a root process",
            |a| ptrace_probe(a.pid("rootpid"), true),
        ),
        p(
            "ptrace_attach_user",
            USER,
            "PTRACE_ATTACH a process of the same user (then detach)",
            |a| ptrace_probe(a.pid("userpid"), false),
        ),
        p(
            "ptrace_seize_user",
            USER,
            "PTRACE_SEIZE a process of the same user (then detach)",
            |a| ptrace_probe(a.pid("userpid"), true),
        ),
        p(
            "process_vm_readv_root",
            ROOT,
            "process_vm_readv 8 bytes at 0x1000 of a root process",
            |a| {
                let mut b = [0u8; 8];
                Ok(ret(sys::process_vm_readv(a.pid("rootpid"), 0x1000, &mut b)))
            },
        ),
        p(
            "process_vm_readv_user",
            USER,
            "process_vm_readv 8 bytes at 0x1000 (unmapped) of a process of the same user",
            |a| {
                let mut b = [0u8; 8];
                Ok(ret(sys::process_vm_readv(a.pid("userpid"), 0x1000, &mut b)))
            },
        ),
        // Scheduling and limits of other processes and of itself.
        p(
            "prlimit_get_root",
            ROOT,
            "prlimit(ROOT, RLIMIT_NOFILE) read only",
            |a| {
                Ok(ret(sys::prlimit(
                    a.pid("rootpid"),
                    libc::RLIMIT_NOFILE,
                    None,
                )
                .map(|_| 0)))
            },
        ),
        p(
            "prlimit_set_root",
            ROOT,
            "prlimit(ROOT, RLIMIT_CORE, 0)",
            |a| {
                Ok(ret(sys::prlimit(
                    a.pid("rootpid"),
                    libc::RLIMIT_CORE,
                    Some(libc::rlimit64 {
                        rlim_cur: 0,
                        rlim_max: 0,
                    }),
                )
                .map(|_| 0)))
            },
        ),
        p(
            "setpriority_root",
            ROOT,
            "setpriority(PRIO_PROCESS, ROOT, 5)",
            |a| Ok(ret(sys::setpriority(a.pid("rootpid"), 5))),
        ),
        p(
            "sched_setscheduler_root",
            ROOT,
            "sched_setscheduler(ROOT, SCHED_BATCH)",
            |a| {
                Ok(ret(sys::sched_setscheduler(
                    a.pid("rootpid"),
                    libc::SCHED_BATCH,
                )))
            },
        ),
        p(
            "sched_setaffinity_root",
            ROOT,
            "sched_setaffinity(ROOT, {cpu 0})",
            |a| Ok(ret(sys::sched_setaffinity_cpu0(a.pid("rootpid")))),
        ),
        p(
            "ioprio_set_root",
            ROOT,
            "ioprio_set(IOPRIO_WHO_PROCESS, ROOT, best-effort 4)",
            |a| Ok(ret(sys::ioprio_set(a.pid("rootpid"), (2 << 13) | 4))),
        ),
        p(
            "setpriority_self_negative",
            NONE,
            "setpriority(self, -5), then the nice value",
            |_| {
                let r = sys::setpriority(0, -5);
                Ok(format!("{} nice={}", ret(r), nice_now()))
            },
        ),
        p(
            "setpriority_self_up",
            NONE,
            "setpriority(self, 5) (allowed), then the nice value",
            |_| {
                let r = sys::setpriority(0, 5);
                Ok(format!("{} nice={}", ret(r), nice_now()))
            },
        ),
        p(
            "rlimits",
            NONE,
            "every resource limit as getrlimit shows it",
            |_| {
                let names = [
                    ("cpu", libc::RLIMIT_CPU),
                    ("fsize", libc::RLIMIT_FSIZE),
                    ("data", libc::RLIMIT_DATA),
                    ("stack", libc::RLIMIT_STACK),
                    ("core", libc::RLIMIT_CORE),
                    ("rss", libc::RLIMIT_RSS),
                    ("nproc", libc::RLIMIT_NPROC),
                    ("nofile", libc::RLIMIT_NOFILE),
                    ("memlock", libc::RLIMIT_MEMLOCK),
                    ("as", libc::RLIMIT_AS),
                    ("locks", libc::RLIMIT_LOCKS),
                    ("sigpending", libc::RLIMIT_SIGPENDING),
                    ("msgqueue", libc::RLIMIT_MSGQUEUE),
                    ("nice", libc::RLIMIT_NICE),
                    ("rtprio", libc::RLIMIT_RTPRIO),
                    ("rttime", libc::RLIMIT_RTTIME),
                ];
                let mut out = Vec::new();
                for (n, r) in names {
                    out.push(match sys::getrlimit(r) {
                        Ok(l) => {
                            format!("{n}={}:{}", rlimit_str(l.rlim_cur), rlimit_str(l.rlim_max))
                        }
                        Err(e) => format!("{n}={}", errname(e)),
                    });
                }
                Ok(out.join(" "))
            },
        ),
        p(
            "mlock_over_limit",
            NONE,
            "RLIMIT_MEMLOCK 64 KiB, then mlock 1 MiB",
            |_| {
                let s = sys::setrlimit(libc::RLIMIT_MEMLOCK, 65536, 65536);
                let m = need(sys::mmap_anon(1 << 20).map(|a| a as i64), "mmap")? as usize;
                Ok(format!(
                    "setrlimit={} mlock={}",
                    v(s),
                    v(sys::mlock(m, 1 << 20))
                ))
            },
        ),
        p(
            "mlock_within_limit",
            NONE,
            "RLIMIT_MEMLOCK 64 KiB, then mlock 16 KiB (allowed)",
            |_| {
                let s = sys::setrlimit(libc::RLIMIT_MEMLOCK, 65536, 65536);
                let m = need(sys::mmap_anon(1 << 20).map(|a| a as i64), "mmap")? as usize;
                Ok(format!(
                    "setrlimit={} mlock={}",
                    v(s),
                    v(sys::mlock(m, 16384))
                ))
            },
        ),
        // Network privileges.
        p(
            "bind_tcp_80",
            NONE,
            "bind a TCP socket to 127.0.0.1:80",
            |_| {
                let fd = fd32(need(
                    sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
                    "socket",
                )?);
                Ok(ret(sys::bind(fd, &sin([127, 0, 0, 1], 80))))
            },
        ),
        p(
            "bind_udp_53",
            NONE,
            "bind a UDP socket to 127.0.0.1:53",
            |_| {
                let fd = udp()?;
                Ok(ret(sys::bind(fd, &sin([127, 0, 0, 1], 53))))
            },
        ),
        p(
            "socket_raw_inet",
            NONE,
            "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)",
            |_| {
                Ok(ret_fd(sys::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW,
                    libc::IPPROTO_ICMP,
                )))
            },
        ),
        p(
            "socket_packet",
            NONE,
            "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)",
            |_| {
                Ok(ret_fd(sys::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from((libc::ETH_P_ALL as u16).to_be()),
                )))
            },
        ),
        p(
            "so_priority_7",
            NONE,
            "setsockopt SO_PRIORITY 7 (above 6 needs CAP_NET_ADMIN)",
            |_| sockopt(libc::SOL_SOCKET, libc::SO_PRIORITY, &int(7), true),
        ),
        p("so_mark", NONE, "setsockopt SO_MARK 1", |_| {
            sockopt(libc::SOL_SOCKET, libc::SO_MARK, &int(1), true)
        }),
        p(
            "so_rcvbufforce",
            NONE,
            "setsockopt SO_RCVBUFFORCE 4 MiB",
            |_| sockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &int(4 << 20), false),
        ),
        p(
            "so_sndbufforce",
            NONE,
            "setsockopt SO_SNDBUFFORCE 4 MiB",
            |_| sockopt(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &int(4 << 20), false),
        ),
        p(
            "so_bindtodevice_lo",
            NONE,
            "setsockopt SO_BINDTODEVICE lo",
            |_| sockopt(libc::SOL_SOCKET, libc::SO_BINDTODEVICE, b"lo\0", false),
        ),
        p(
            "so_debug",
            NONE,
            "setsockopt SO_DEBUG 1 on a TCP socket",
            |_| {
                let fd = fd32(need(
                    sys::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
                    "socket",
                )?);
                Ok(ret(sys::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_DEBUG,
                    &int(1),
                )))
            },
        ),
        p(
            "ip_transparent",
            NONE,
            "setsockopt IP_TRANSPARENT 1",
            |_| sockopt(libc::SOL_IP, libc::IP_TRANSPARENT, &int(1), false),
        ),
        p(
            "siocsifflags",
            NONE,
            "ioctl SIOCSIFFLAGS on a socket (interface mdpnone0: root gets ENODEV)",
            |_| {
                let fd = udp()?;
                let mut r = ifreq("mdpnone0");
                r[16] = libc::IFF_UP as u8;
                Ok(ret(sys::ioctl_ifreq(fd, libc::SIOCSIFFLAGS, &mut r)))
            },
        ),
        p(
            "siocsifaddr",
            NONE,
            "ioctl SIOCSIFADDR on a socket (interface mdpnone0: root gets ENODEV)",
            |_| {
                let fd = udp()?;
                let mut r = ifreq("mdpnone0");
                r[16..32].copy_from_slice(&sin([192, 0, 2, 78], 0));
                Ok(ret(sys::ioctl_ifreq(fd, libc::SIOCSIFADDR, &mut r)))
            },
        ),
        // Special files, leases, owners.
        p(
            "mknod_chardev",
            FX,
            "mknod a character device (1,3) in a 0777 directory",
            |a| {
                Ok(ret(sys::mknod(
                    &a.p("fx", "pub/null"),
                    libc::S_IFCHR | 0o666,
                    libc::makedev(1, 3),
                )))
            },
        ),
        p(
            "mknod_fifo",
            FX,
            "mknod a FIFO in a 0777 directory (allowed)",
            |a| {
                Ok(ret(sys::mknod(
                    &a.p("fx", "pub/fifo"),
                    libc::S_IFIFO | 0o644,
                    0,
                )))
            },
        ),
        p(
            "setlease_rootfile",
            FX,
            "fcntl(F_SETLEASE, F_RDLCK) on an O_RDONLY fd of a root file",
            |a| {
                let fd = open_ro(a, "fx", "rootfile")?;
                Ok(ret(sys::fcntl(
                    fd,
                    libc::F_SETLEASE,
                    i64::from(libc::F_RDLCK),
                )))
            },
        ),
        p(
            "setlease_ownfile",
            FX,
            "fcntl(F_SETLEASE, F_RDLCK) on its own file (allowed)",
            |a| {
                let fd = open_ro(a, "fx", "pub/own")?;
                Ok(ret(sys::fcntl(
                    fd,
                    libc::F_SETLEASE,
                    i64::from(libc::F_RDLCK),
                )))
            },
        ),
        p(
            "setown_root",
            ROOT,
            "fcntl(F_SETOWN, ROOT) on a socket, then F_GETOWN",
            |a| {
                let fd = udp()?;
                let pid = a.pid("rootpid");
                let r = sys::fcntl(fd, libc::F_SETOWN, i64::from(pid));
                let g = sys::fcntl(fd, libc::F_GETOWN, 0);
                let owner = match g {
                    Ok(x) if x == i64::from(pid) => "target".to_owned(),
                    Ok(0) => "none".to_owned(),
                    Ok(_) => "other".to_owned(),
                    Err(e) => errname(e),
                };
                Ok(format!("{} owner={owner}", ret(r)))
            },
        ),
        // Mounts and namespaces (all harmless even where allowed).
        p(
            "mount",
            FX,
            "mount a file system type that does not exist on a 0777 directory",
            |a| {
                Ok(ret(sys::mount(
                    c"none",
                    &a.p("fx", "pub"),
                    c"mosix-diff-probe-none",
                )))
            },
        ),
        p(
            "umount2",
            FX,
            "umount2 of a directory that is no mount point",
            |a| Ok(ret(sys::umount2(&a.p("fx", "pub")))),
        ),
        p(
            "pivot_root",
            NONE,
            "pivot_root to a path that does not exist",
            |_| {
                Ok(ret(sys::pivot_root(
                    c"/nonexistent-mosix-diff-probe",
                    c"/nonexistent-mosix-diff-probe",
                )))
            },
        ),
        p("chroot", FX, "chroot into the fixture directory", |a| {
            Ok(ret(sys::chroot(&cs(a.s("fx")))))
        }),
        p("unshare_net", NONE, "unshare(CLONE_NEWNET)", |_| {
            Ok(ret(sys::unshare(libc::CLONE_NEWNET)))
        }),
        p(
            "unshare_user",
            NONE,
            "unshare(CLONE_NEWUSER) (allowed unless forbidden by sysctl)",
            |_| Ok(ret(sys::unshare(libc::CLONE_NEWUSER))),
        ),
        p(
            "setns_net",
            NONE,
            "setns to its own network namespace",
            |_| {
                let fd = fd32(need(
                    sys::open(c"/proc/self/ns/net", libc::O_RDONLY, 0),
                    "open",
                )?);
                Ok(ret(sys::setns(fd, libc::CLONE_NEWNET)))
            },
        ),
        // Credentials (raw calls: this thread only).
        p("setuid_0", NONE, "setuid(0)", |_| {
            Ok(ret(sys::raw_int(libc::SYS_setuid, 0, 0, 0)))
        }),
        p("setgid_0", NONE, "setgid(0)", |_| {
            Ok(ret(sys::raw_int(libc::SYS_setgid, 0, 0, 0)))
        }),
        p("setresuid_root_saved", NONE, "setresuid(-1, -1, 0)", |_| {
            Ok(ret(sys::raw_int(libc::SYS_setresuid, -1, -1, 0)))
        }),
        p("setgroups_0", NONE, "setgroups([0])", |_| {
            Ok(ret(sys::setgroups(&[0])))
        }),
        p(
            "capset_net_admin",
            NONE,
            "capset adding CAP_NET_ADMIN to the effective and permitted sets",
            |_| {
                // CAP_NET_ADMIN is capability 12.
                let (r, before) =
                    sys::capset_add(1 << 12).map_err(|e| format!("setup capget={}", errname(e)))?;
                Ok(format!("{} capeff_before={before:x}", ret(r)))
            },
        ),
        // The system.
        p(
            "quotactl_fd_quotaon",
            FX,
            "quotactl_fd(Q_QUOTAON, USRQUOTA) on the fixture directory",
            |a| {
                let fd = fd32(need(
                    sys::open(&cs(a.s("fx")), libc::O_RDONLY | libc::O_DIRECTORY, 0),
                    "open",
                )?);
                Ok(ret(sys::quotactl_fd(fd, (0x80_0002 << 8) as u32, 4)))
            },
        ),
        p(
            "sethostname_same",
            NONE,
            "sethostname to the current host name",
            |_| {
                let u = sys::uname().map_err(|e| format!("setup uname={}", errname(e)))?;
                // SAFETY: utsname.nodename is a NUL-terminated array filled by the kernel.
                let name = unsafe { CStr::from_ptr(u.nodename.as_ptr()) };
                Ok(ret(sys::sethostname(name.to_bytes())))
            },
        ),
        p(
            "setdomainname_same",
            NONE,
            "setdomainname to the current domain name",
            |_| {
                let u = sys::uname().map_err(|e| format!("setup uname={}", errname(e)))?;
                // SAFETY: utsname.domainname is a NUL-terminated array filled by the kernel.
                let name = unsafe { CStr::from_ptr(u.domainname.as_ptr()) };
                Ok(ret(sys::setdomainname(name.to_bytes())))
            },
        ),
        p(
            "settimeofday_tz",
            NONE,
            "settimeofday(NULL, current time zone)",
            |_| Ok(ret(sys::settimeofday_same_tz())),
        ),
        p(
            "clock_settime_now",
            NONE,
            "clock_settime(CLOCK_REALTIME, now)",
            |_| Ok(ret(sys::clock_settime_now())),
        ),
        p(
            "reboot_bad_magic",
            NONE,
            "reboot with a wrong magic number (never reboots)",
            |_| Ok(ret(sys::reboot_bad_magic())),
        ),
        p("iopl_3", NONE, "iopl(3)", |_| {
            let r = sys::raw_int(libc::SYS_iopl, 3, 0, 0);
            if r.is_ok() {
                let _ = sys::raw_int(libc::SYS_iopl, 0, 0, 0);
            }
            Ok(ret(r))
        }),
        p("ioperm_0x80", NONE, "ioperm(0x80, 1, 1)", |_| {
            let r = sys::ioperm(0x80, 1, 1);
            if r.is_ok() {
                let _ = sys::ioperm(0x80, 1, 0);
            }
            Ok(ret(r))
        }),
        p(
            "kexec_load_garbage",
            NONE,
            "kexec_load with no segments and a foreign architecture",
            |_| Ok(ret(sys::kexec_load_garbage())),
        ),
        p(
            "bpf_prog_load",
            NONE,
            "bpf(BPF_PROG_LOAD) of a two-instruction socket filter",
            |_| Ok(ret_fd(sys::bpf_prog_load())),
        ),
        p(
            "perf_event_open_cpu",
            NONE,
            "perf_event_open of a CPU clock on CPU 0 for all processes",
            |_| Ok(ret_fd(sys::perf_event_open_cpu0())),
        ),
        p(
            "keyctl_root_key",
            &["key"],
            "KEYCTL_DESCRIBE and KEYCTL_READ of a key of root's",
            |a| {
                let key: i32 = a.s("key").parse().expect("a key serial is a number");
                let mut b = [0u8; 256];
                let d = sys::keyctl_buf(6, key, &mut b).map(|_| 0);
                let r = sys::keyctl_buf(11, key, &mut b).map(|_| 0);
                Ok(format!("describe={} read={}", v(d), v(r)))
            },
        ),
        // Disk quotas and the space reserved for root, checked against the writer.
        p(
            "edquot_write",
            &["quota"],
            "write 1 MiB where nobody's block quota is 64 KiB",
            |a| write_until_error(&a.p("quota", "file"), 1 << 20),
        ),
        // Disk space reserved for root.
        p(
            "enospc_root_reserve",
            &["ext4"],
            "write 1 MiB on an ext4 whose free blocks are all in the root reserve",
            |a| write_until_error(&a.p("ext4", "file"), 1 << 20),
        ),
    ]
}

/// Reads stdin up to a newline or its end.
fn wait_line() {
    let mut b = [0u8; 1];
    while let Ok(1) = sys::read(0, &mut b) {
        if b[0] == b'\n' {
            break;
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = probes();
    if args.first().map(String::as_str) == Some("--list") {
        for p in &all {
            println!("{}\t{}\t{}", p.name, p.args.join(","), p.what);
        }
        return ExitCode::SUCCESS;
    }
    let (hold, rest) = match args.split_first() {
        Some((h, rest)) if h == "--hold" => (true, rest),
        _ => (false, &args[..]),
    };
    let Some((name, values)) = rest.split_first() else {
        eprintln!("usage: mosix-diff-probe --list | [--hold] NAME ARGS...");
        return ExitCode::from(2);
    };
    let Some(probe) = all.iter().find(|p| p.name == name) else {
        eprintln!("mosix-diff-probe: no probe {name} (see --list)");
        return ExitCode::from(2);
    };
    if values.len() != probe.args.len() {
        eprintln!(
            "mosix-diff-probe: {name} takes {} argument(s): {}",
            probe.args.len(),
            probe.args.join(" ")
        );
        return ExitCode::from(2);
    }
    // The same umask however the probe was started.
    sys::umask(0o022);
    if hold {
        wait_line();
    }
    let line = match (probe.run)(&Args {
        names: probe.args,
        values,
    }) {
        Ok(l) | Err(l) => l,
    };
    println!("{line}");
    let _ = std::io::stdout().flush();
    if hold {
        wait_line();
    }
    ExitCode::SUCCESS
}
