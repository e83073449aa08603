//! Where each system call of a migrated process runs: the table of the deputy/remote split.
//!
//! A migrated process (the *remote*) runs under a seccomp filter built from this table:
//!
//! | class | what happens |
//! |---|---|
//! | [`Class::Local`] | runs on the remote node, at full speed, never trapped |
//! | [`Class::Cached`] | answered by the remote node's supervisor from facts fetched at migration (pid, uid…) |
//! | [`Class::Service`] | forwarded home and executed by the home node's service on a duplicate of the deputy's descriptor |
//! | [`Class::Deputy`] | forwarded home and executed inside the deputy (the original process), so its cwd, root, credentials, umask and fd table are the real ones |
//! | [`Class::Exit`] | the process ends; the deputy ends with the same status |
//! | [`Class::HomeOnly`] | the process is brought home and the call then runs natively there |
//!
//! A call on a *DFSA descriptor* — a file of the node the process runs on, opened there for it
//! (`/mfs/<that node>/…`; see `mosix_kmod::split::remote::dfsa`) — runs on that node natively if
//! [`dfsa_native`] says so, whatever its class above; any other call naming such a descriptor
//! first carries the descriptor's offset home, and the descriptor stops being DFSA. A path
//! call of [`DFSA_HERE`] whose paths are all files of that node runs there too.
//!
//! Anything not in the table is home-only: correctness never depends on the table being complete,
//! only speed does. The table also says, for forwarded calls, which arguments are buffers going
//! home (`In`), buffers coming back (`Out`, with their capacity), and paths, so the remote side
//! can marshal a call without knowing what it does. Calls whose arguments need more than that
//! (iovecs, ioctl and fcntl commands, poll arrays, fd sets, messages) are [`Arg::Special`] and
//! handled by dedicated code on both sides.

use serde::{Deserialize, Serialize};
use syscalls::Sysno;

/// Where a system call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Class {
    /// On the remote node, untrapped.
    Local,
    /// Answered by the remote supervisor from the facts cached at migration.
    Cached,
    /// At home, by the service, on a duplicate of the deputy's file descriptor.
    Service,
    /// At home, injected into the deputy.
    Deputy,
    /// `exit` / `exit_group`: the process ends.
    Exit,
    /// Only at home: the process migrates home and the call runs natively.
    HomeOnly,
}

/// How big a buffer argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Len {
    /// A fixed number of bytes (a struct).
    Fixed(u32),
    /// The value of argument N, in bytes.
    Arg(u8),
    /// The value of argument N times a fixed element size.
    ArgTimes(u8, u32),
    /// The `socklen_t` that argument N points to, at most M bytes: a value-result length
    /// (`recvfrom`'s address, `getsockopt`'s value). The call writes no more than that, and the
    /// length it writes back says how much it wrote.
    Deref(u8, u32),
}

/// What one argument of a forwarded call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arg {
    /// Unused.
    None,
    /// A plain integer (flags, modes, offsets, counts).
    Int,
    /// A file descriptor of the process (at home).
    Fd,
    /// A NUL-terminated path.
    Path,
    /// A buffer the call reads.
    In(Len),
    /// A buffer the call writes.
    Out(Len),
    /// A buffer the call reads and writes.
    InOut(Len),
    /// Needs dedicated marshalling (iovecs, ioctl, fcntl, poll, select, messages).
    Special,
}

/// The largest path we forward (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// The largest single buffer a forwarded call moves; larger reads and writes are cut to it
/// (which system calls are allowed to do: a short read or write is a valid result).
pub const MAX_IO: usize = 1 << 20;

/// The entry of one system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The call.
    pub nr: Sysno,
    /// Where it runs.
    pub class: Class,
    /// Its arguments (for forwarded calls).
    pub args: [Arg; 6],
}

use Arg::{Fd, In, InOut, Int, None as No, Out, Path, Special};
use Len::{Arg as L, ArgTimes, Deref, Fixed};

const STAT: u32 = 144;
const STATX: u32 = 256;
const STATFS: u32 = 120;
const TIMESPEC: u32 = 16;
const TIMEVAL: u32 = 16;
const RLIMIT: u32 = 16;
const SOCKLEN: u32 = 4;
const SOCKADDR: u32 = 128;
const FLOCK: u32 = 32;
const RUSAGE: u32 = 144;
const SIGINFO: u32 = 128;
const OPEN_HOW: u32 = 24;

const fn s(nr: Sysno, class: Class, args: [Arg; 6]) -> Spec {
    Spec { nr, class, args }
}

const fn local(nr: Sysno) -> Spec {
    s(nr, Class::Local, [No; 6])
}

const fn cached(nr: Sysno) -> Spec {
    s(nr, Class::Cached, [No; 6])
}

/// The table. Order does not matter; [`spec`] builds an index on first use.
const TABLE: &[Spec] = &[
    // Memory, scheduling, time, signals of the process itself: local.
    local(Sysno::brk),
    local(Sysno::mmap), // the filter lets only private anonymous mappings through untrapped
    local(Sysno::munmap),
    local(Sysno::mprotect),
    local(Sysno::mremap),
    local(Sysno::madvise),
    local(Sysno::mincore),
    local(Sysno::msync),
    local(Sysno::mlock),
    local(Sysno::munlock),
    local(Sysno::mlock2),
    local(Sysno::futex),
    local(Sysno::futex_waitv),
    local(Sysno::set_robust_list),
    local(Sysno::get_robust_list),
    local(Sysno::set_tid_address),
    local(Sysno::rseq),
    local(Sysno::arch_prctl),
    local(Sysno::prctl),
    local(Sysno::rt_sigaction),
    local(Sysno::rt_sigprocmask),
    local(Sysno::rt_sigreturn),
    local(Sysno::rt_sigsuspend),
    local(Sysno::rt_sigpending),
    local(Sysno::rt_sigtimedwait),
    local(Sysno::sigaltstack),
    local(Sysno::pause),
    local(Sysno::nanosleep),
    local(Sysno::clock_nanosleep),
    local(Sysno::clock_gettime),
    local(Sysno::clock_getres),
    local(Sysno::gettimeofday),
    local(Sysno::time),
    local(Sysno::times),
    local(Sysno::getrusage),
    local(Sysno::getrandom),
    local(Sysno::sched_yield),
    local(Sysno::sched_getaffinity),
    local(Sysno::getcpu),
    local(Sysno::membarrier),
    local(Sysno::restart_syscall),
    local(Sysno::sysinfo),
    local(Sysno::capget),
    // Identity: cached at migration.
    cached(Sysno::getpid),
    cached(Sysno::getppid),
    cached(Sysno::gettid),
    cached(Sysno::getuid),
    cached(Sysno::geteuid),
    cached(Sysno::getgid),
    cached(Sysno::getegid),
    cached(Sysno::getresuid),
    cached(Sysno::getresgid),
    cached(Sysno::getgroups),
    cached(Sysno::getpgrp),
    cached(Sysno::uname),
    // I/O on descriptors: the home service, on a duplicate of the deputy's descriptor.
    s(
        Sysno::read,
        Class::Service,
        [Fd, Out(L(2)), Int, No, No, No],
    ),
    s(
        Sysno::write,
        Class::Service,
        [Fd, In(L(2)), Int, No, No, No],
    ),
    s(
        Sysno::pread64,
        Class::Service,
        [Fd, Out(L(2)), Int, Int, No, No],
    ),
    s(
        Sysno::pwrite64,
        Class::Service,
        [Fd, In(L(2)), Int, Int, No, No],
    ),
    s(Sysno::readv, Class::Service, [Fd, Special, Int, No, No, No]),
    s(
        Sysno::writev,
        Class::Service,
        [Fd, Special, Int, No, No, No],
    ),
    s(
        Sysno::preadv,
        Class::Service,
        [Fd, Special, Int, Int, Int, No],
    ),
    s(
        Sysno::pwritev,
        Class::Service,
        [Fd, Special, Int, Int, Int, No],
    ),
    s(
        Sysno::preadv2,
        Class::Service,
        [Fd, Special, Int, Int, Int, Int],
    ),
    s(
        Sysno::pwritev2,
        Class::Service,
        [Fd, Special, Int, Int, Int, Int],
    ),
    s(Sysno::lseek, Class::Service, [Fd, Int, Int, No, No, No]),
    s(
        Sysno::fstat,
        Class::Service,
        [Fd, Out(Fixed(STAT)), No, No, No, No],
    ),
    s(
        Sysno::fstatfs,
        Class::Service,
        [Fd, Out(Fixed(STATFS)), No, No, No, No],
    ),
    s(
        Sysno::getdents64,
        Class::Service,
        [Fd, Out(L(2)), Int, No, No, No],
    ),
    s(
        Sysno::getdents,
        Class::Service,
        [Fd, Out(L(2)), Int, No, No, No],
    ),
    s(Sysno::fsync, Class::Service, [Fd, No, No, No, No, No]),
    s(Sysno::fdatasync, Class::Service, [Fd, No, No, No, No, No]),
    s(Sysno::ftruncate, Class::Service, [Fd, Int, No, No, No, No]),
    s(
        Sysno::fadvise64,
        Class::Service,
        [Fd, Int, Int, Int, No, No],
    ),
    s(
        Sysno::fallocate,
        Class::Service,
        [Fd, Int, Int, Int, No, No],
    ),
    s(Sysno::flock, Class::Service, [Fd, Int, No, No, No, No]),
    s(
        Sysno::sendfile,
        Class::Service,
        [Fd, Fd, InOut(Fixed(8)), Int, No, No],
    ),
    s(
        Sysno::copy_file_range,
        Class::Service,
        [Fd, InOut(Fixed(8)), Fd, InOut(Fixed(8)), Int, Int],
    ),
    s(Sysno::ioctl, Class::Service, [Fd, Int, Special, No, No, No]),
    s(
        Sysno::poll,
        Class::Service,
        [InOut(ArgTimes(1, 8)), Int, Int, No, No, No],
    ),
    s(
        Sysno::ppoll,
        Class::Service,
        [
            InOut(ArgTimes(1, 8)),
            Int,
            In(Fixed(TIMESPEC)),
            In(Fixed(8)),
            Int,
            No,
        ],
    ),
    s(
        Sysno::select,
        Class::Service,
        [Int, Special, Special, Special, InOut(Fixed(TIMEVAL)), No],
    ),
    s(
        Sysno::pselect6,
        Class::Service,
        [
            Int,
            Special,
            Special,
            Special,
            InOut(Fixed(TIMESPEC)),
            Special,
        ],
    ),
    s(
        Sysno::recvfrom,
        Class::Service,
        [
            Fd,
            Out(L(2)),
            Int,
            Int,
            Out(Deref(5, SOCKADDR)),
            InOut(Fixed(SOCKLEN)),
        ],
    ),
    s(
        Sysno::sendto,
        Class::Service,
        [Fd, In(L(2)), Int, Int, In(L(5)), Int],
    ),
    s(Sysno::shutdown, Class::Service, [Fd, Int, No, No, No, No]),
    s(
        Sysno::getsockname,
        Class::Service,
        [
            Fd,
            Out(Deref(2, SOCKADDR)),
            InOut(Fixed(SOCKLEN)),
            No,
            No,
            No,
        ],
    ),
    s(
        Sysno::getpeername,
        Class::Service,
        [
            Fd,
            Out(Deref(2, SOCKADDR)),
            InOut(Fixed(SOCKLEN)),
            No,
            No,
            No,
        ],
    ),
    // fcntl: some commands are about the descriptor table or the process (deputy), the others
    // about the open file description (service); decided per command.
    s(Sysno::fcntl, Class::Service, [Fd, Int, Special, No, No, No]),
    // The process's namespace of names: inside the deputy.
    s(Sysno::open, Class::Deputy, [Path, Int, Int, No, No, No]),
    s(Sysno::openat, Class::Deputy, [Fd, Path, Int, Int, No, No]),
    s(
        Sysno::openat2,
        Class::Deputy,
        [Fd, Path, In(Fixed(OPEN_HOW)), Int, No, No],
    ),
    s(Sysno::creat, Class::Deputy, [Path, Int, No, No, No, No]),
    s(Sysno::close, Class::Deputy, [Fd, No, No, No, No, No]),
    s(
        Sysno::close_range,
        Class::Deputy,
        [Int, Int, Int, No, No, No],
    ),
    s(Sysno::dup, Class::Deputy, [Fd, No, No, No, No, No]),
    s(Sysno::dup2, Class::Deputy, [Fd, Int, No, No, No, No]),
    s(Sysno::dup3, Class::Deputy, [Fd, Int, Int, No, No, No]),
    s(
        Sysno::pipe,
        Class::Deputy,
        [Out(Fixed(8)), No, No, No, No, No],
    ),
    s(
        Sysno::pipe2,
        Class::Deputy,
        [Out(Fixed(8)), Int, No, No, No, No],
    ),
    s(
        Sysno::stat,
        Class::Deputy,
        [Path, Out(Fixed(STAT)), No, No, No, No],
    ),
    s(
        Sysno::lstat,
        Class::Deputy,
        [Path, Out(Fixed(STAT)), No, No, No, No],
    ),
    s(
        Sysno::newfstatat,
        Class::Deputy,
        [Fd, Path, Out(Fixed(STAT)), Int, No, No],
    ),
    s(
        Sysno::statx,
        Class::Deputy,
        [Fd, Path, Int, Int, Out(Fixed(STATX)), No],
    ),
    s(
        Sysno::statfs,
        Class::Deputy,
        [Path, Out(Fixed(STATFS)), No, No, No, No],
    ),
    s(Sysno::access, Class::Deputy, [Path, Int, No, No, No, No]),
    s(Sysno::faccessat, Class::Deputy, [Fd, Path, Int, No, No, No]),
    s(
        Sysno::faccessat2,
        Class::Deputy,
        [Fd, Path, Int, Int, No, No],
    ),
    s(
        Sysno::readlink,
        Class::Deputy,
        [Path, Out(L(2)), Int, No, No, No],
    ),
    s(
        Sysno::readlinkat,
        Class::Deputy,
        [Fd, Path, Out(L(3)), Int, No, No],
    ),
    s(
        Sysno::getcwd,
        Class::Deputy,
        [Out(L(1)), Int, No, No, No, No],
    ),
    s(Sysno::chdir, Class::Deputy, [Path, No, No, No, No, No]),
    s(Sysno::fchdir, Class::Deputy, [Fd, No, No, No, No, No]),
    s(Sysno::unlink, Class::Deputy, [Path, No, No, No, No, No]),
    s(Sysno::unlinkat, Class::Deputy, [Fd, Path, Int, No, No, No]),
    s(Sysno::mkdir, Class::Deputy, [Path, Int, No, No, No, No]),
    s(Sysno::mkdirat, Class::Deputy, [Fd, Path, Int, No, No, No]),
    s(Sysno::rmdir, Class::Deputy, [Path, No, No, No, No, No]),
    s(Sysno::rename, Class::Deputy, [Path, Path, No, No, No, No]),
    s(Sysno::renameat, Class::Deputy, [Fd, Path, Fd, Path, No, No]),
    s(
        Sysno::renameat2,
        Class::Deputy,
        [Fd, Path, Fd, Path, Int, No],
    ),
    s(Sysno::link, Class::Deputy, [Path, Path, No, No, No, No]),
    s(Sysno::linkat, Class::Deputy, [Fd, Path, Fd, Path, Int, No]),
    s(Sysno::symlink, Class::Deputy, [Path, Path, No, No, No, No]),
    s(
        Sysno::symlinkat,
        Class::Deputy,
        [Path, Fd, Path, No, No, No],
    ),
    s(Sysno::chmod, Class::Deputy, [Path, Int, No, No, No, No]),
    s(Sysno::fchmod, Class::Deputy, [Fd, Int, No, No, No, No]),
    s(Sysno::fchmodat, Class::Deputy, [Fd, Path, Int, No, No, No]),
    s(Sysno::chown, Class::Deputy, [Path, Int, Int, No, No, No]),
    s(Sysno::fchown, Class::Deputy, [Fd, Int, Int, No, No, No]),
    s(Sysno::lchown, Class::Deputy, [Path, Int, Int, No, No, No]),
    s(
        Sysno::fchownat,
        Class::Deputy,
        [Fd, Path, Int, Int, Int, No],
    ),
    s(
        Sysno::utimensat,
        Class::Deputy,
        [Fd, Path, In(Fixed(2 * TIMESPEC)), Int, No, No],
    ),
    s(Sysno::truncate, Class::Deputy, [Path, Int, No, No, No, No]),
    s(Sysno::umask, Class::Deputy, [Int, No, No, No, No, No]),
    s(Sysno::sync, Class::Deputy, [No; 6]),
    s(Sysno::syncfs, Class::Deputy, [Fd, No, No, No, No, No]),
    s(Sysno::socket, Class::Deputy, [Int, Int, Int, No, No, No]),
    s(
        Sysno::socketpair,
        Class::Deputy,
        [Int, Int, Int, Out(Fixed(8)), No, No],
    ),
    s(
        Sysno::connect,
        Class::Deputy,
        [Fd, In(L(2)), Int, No, No, No],
    ),
    s(Sysno::bind, Class::Deputy, [Fd, In(L(2)), Int, No, No, No]),
    s(Sysno::listen, Class::Deputy, [Fd, Int, No, No, No, No]),
    s(
        Sysno::accept,
        Class::Deputy,
        [
            Fd,
            Out(Deref(2, SOCKADDR)),
            InOut(Fixed(SOCKLEN)),
            No,
            No,
            No,
        ],
    ),
    s(
        Sysno::accept4,
        Class::Deputy,
        [
            Fd,
            Out(Deref(2, SOCKADDR)),
            InOut(Fixed(SOCKLEN)),
            Int,
            No,
            No,
        ],
    ),
    s(
        Sysno::setsockopt,
        Class::Deputy,
        [Fd, Int, Int, In(L(4)), Int, No],
    ),
    s(
        Sysno::getsockopt,
        Class::Deputy,
        [Fd, Int, Int, Out(Deref(4, 256)), InOut(Fixed(SOCKLEN)), No],
    ),
    s(Sysno::kill, Class::Deputy, [Int, Int, No, No, No, No]),
    s(Sysno::tkill, Class::Deputy, [Int, Int, No, No, No, No]),
    s(Sysno::tgkill, Class::Deputy, [Int, Int, Int, No, No, No]),
    s(
        Sysno::wait4,
        Class::Deputy,
        [Int, Out(Fixed(4)), Int, Out(Fixed(RUSAGE)), No, No],
    ),
    s(
        Sysno::waitid,
        Class::Deputy,
        [Int, Int, Out(Fixed(SIGINFO)), Int, Out(Fixed(RUSAGE)), No],
    ),
    s(Sysno::getpgid, Class::Deputy, [Int, No, No, No, No, No]),
    s(Sysno::getsid, Class::Deputy, [Int, No, No, No, No, No]),
    s(Sysno::setpgid, Class::Deputy, [Int, Int, No, No, No, No]),
    s(Sysno::setsid, Class::Deputy, [No; 6]),
    s(
        Sysno::getrlimit,
        Class::Deputy,
        [Int, Out(Fixed(RLIMIT)), No, No, No, No],
    ),
    s(
        Sysno::setrlimit,
        Class::Deputy,
        [Int, In(Fixed(RLIMIT)), No, No, No, No],
    ),
    s(
        Sysno::prlimit64,
        Class::Deputy,
        [Int, Int, In(Fixed(RLIMIT)), Out(Fixed(RLIMIT)), No, No],
    ),
    s(
        Sysno::getpriority,
        Class::Deputy,
        [Int, Int, No, No, No, No],
    ),
    s(
        Sysno::setpriority,
        Class::Deputy,
        [Int, Int, Int, No, No, No],
    ),
    s(Sysno::eventfd2, Class::Deputy, [Int, Int, No, No, No, No]),
    s(
        Sysno::inotify_init1,
        Class::Deputy,
        [Int, No, No, No, No, No],
    ),
    s(
        Sysno::inotify_add_watch,
        Class::Deputy,
        [Fd, Path, Int, No, No, No],
    ),
    s(
        Sysno::inotify_rm_watch,
        Class::Deputy,
        [Fd, Int, No, No, No, No],
    ),
    // The end.
    s(Sysno::exit_group, Class::Exit, [Int, No, No, No, No, No]),
    s(Sysno::exit, Class::Exit, [Int, No, No, No, No, No]),
];

/// The largest system call number on x86_64 we index.
const MAX_NR: usize = 512;

fn index() -> &'static [Option<Spec>] {
    static INDEX: std::sync::OnceLock<Vec<Option<Spec>>> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let mut v = vec![None; MAX_NR];
        for sp in TABLE {
            if let Ok(i) = usize::try_from(sp.nr.id())
                && i < MAX_NR
            {
                v[i] = Some(*sp);
            }
        }
        v
    })
}

/// The calls that run natively on a DFSA descriptor named by their first argument (the file is
/// on this node, opened here with the owner's rights; these calls only use the open file).
pub const DFSA_NATIVE: [Sysno; 21] = [
    Sysno::read,
    Sysno::write,
    Sysno::pread64,
    Sysno::pwrite64,
    Sysno::readv,
    Sysno::writev,
    Sysno::preadv,
    Sysno::pwritev,
    Sysno::preadv2,
    Sysno::pwritev2,
    Sysno::lseek,
    Sysno::fstat,
    Sysno::fstatfs,
    Sysno::fsync,
    Sysno::fdatasync,
    Sysno::ftruncate,
    Sysno::fallocate,
    Sysno::fadvise64,
    Sysno::readahead,
    Sysno::getdents64,
    Sysno::flock,
];

/// The calls a guest's filter lets run with no notification at all on the descriptor numbers of
/// its native range (see `ImageHeader::native_io`): reads and writes, which use only the open
/// file description and behave alike on a file of the node opened there (DFSA), on a home file
/// opened there through MFS, and — failing alike — on a stand-in for a home directory or
/// `O_PATH` descriptor. The supervisor keeps every number of the range one of those or free;
/// other calls on them (seeks included: a directory's position is home's) are notified.
///
/// A guest with a tree of its own runs them natively on every descriptor, without a test of
/// the number (so that the kernel's action cache lets them by without running the filter): each
/// number home uses holds a placeholder of its trap there, which sends a read or a write back
/// to the supervisor to be made again, notified (`mosix_kmod::mfs::trap`).
pub const NATIVE_IO: [Sysno; 10] = [
    Sysno::read,
    Sysno::write,
    Sysno::pread64,
    Sysno::pwrite64,
    Sysno::readv,
    Sysno::writev,
    Sysno::preadv,
    Sysno::pwritev,
    Sysno::preadv2,
    Sysno::pwritev2,
];

/// Whether call `nr` is one of [`NATIVE_IO`] (the calls the kernel counts in `syscr` and
/// `syscw` of `/proc/PID/io`, one each).
pub fn is_native_io(nr: i64) -> bool {
    NATIVE_IO.iter().any(|s| s.id() as i64 == nr)
}

/// Whether call `nr` with `args` runs natively on a DFSA descriptor (its first argument, or the
/// mapping's descriptor of `mmap`): the calls of [`DFSA_NATIVE`]; `fcntl`'s flag queries and
/// locks (the locks are the file's, and the file is here); `ioctl`s other than those that
/// change the descriptor's flags (which home keeps); `mmap` of the file; `newfstatat` and
/// `statx` of the descriptor itself (`AT_EMPTY_PATH` with an empty path: `empty_path` is asked
/// only then).
pub fn dfsa_native(nr: u64, args: &[u64; 6], empty_path: impl FnOnce() -> bool) -> bool {
    const FCNTL: [u64; 8] = [
        libc_consts::F_GETFL,
        libc_consts::F_GETFD,
        libc_consts::F_GETLK,
        libc_consts::F_SETLK,
        libc_consts::F_SETLKW,
        libc_consts::F_OFD_GETLK,
        libc_consts::F_OFD_SETLK,
        libc_consts::F_OFD_SETLKW,
    ];
    const FD_FLAG_IOCTLS: [u64; 4] = [0x5451, 0x5450, 0x5421, 0x5452]; // FIOCLEX FIONCLEX FIONBIO FIOASYNC
    const AT_EMPTY_PATH: u64 = 0x1000;
    match Sysno::new(nr as usize) {
        Some(s) if DFSA_NATIVE.contains(&s) => true,
        Some(Sysno::fcntl) => FCNTL.contains(&args[1]),
        Some(Sysno::ioctl) => !FD_FLAG_IOCTLS.contains(&args[1]),
        Some(Sysno::mmap) => true,
        Some(Sysno::newfstatat) => args[3] & AT_EMPTY_PATH != 0 && empty_path(),
        Some(Sysno::statx) => args[2] & AT_EMPTY_PATH != 0 && empty_path(),
        _ => false,
    }
}

/// Whether call `nr` on a descriptor the process had before it came to this node makes the
/// remote ask home whether that descriptor is a file of this node it can adopt for DFSA: the
/// I/O of [`DFSA_NATIVE`] (not `flock` or `fstatfs`, which say nothing of a file's use).
pub fn dfsa_adoptable(nr: u64) -> bool {
    Sysno::new(nr as usize)
        .is_some_and(|s| DFSA_NATIVE.contains(&s) && s != Sysno::flock && s != Sysno::fstatfs)
}

/// Path calls that run on the node a migrated process runs on, as its owner, when every path
/// they name is a file of that node (`/mfs/<that node>/…`, `/mfs/here/…`, or a file system
/// declared the same everywhere) and nothing in the way is a symbolic link (a link resolves at
/// home through MFS; here it would resolve differently): opens (numbered as home would number
/// them, home told after), `stat`s, `access`, `unlink`, `mkdir`, `rmdir`, `rename`, `readlink`.
/// See `mosix_kmod::split::remote::here`. Anything else, or any doubt, goes home.
pub const DFSA_HERE: [Sysno; 20] = [
    Sysno::open,
    Sysno::openat,
    Sysno::creat,
    Sysno::stat,
    Sysno::lstat,
    Sysno::newfstatat,
    Sysno::statx,
    Sysno::access,
    Sysno::faccessat,
    Sysno::faccessat2,
    Sysno::unlink,
    Sysno::unlinkat,
    Sysno::mkdir,
    Sysno::mkdirat,
    Sysno::rmdir,
    Sysno::rename,
    Sysno::renameat,
    Sysno::renameat2,
    Sysno::readlink,
    Sysno::readlinkat,
];

/// The path calls a guest with a tree of its own runs with no notification (see
/// `mosix_kmod::kernel::tree`): resolved by its node's kernel in its own mount namespace, whose
/// data directories are this node's files seen with its owner's rights and whose every other
/// name is a trap that sends the call to the supervisor to be made again, notified. The calls
/// that take no directory descriptor. Not the `stat`s: through the mount that gives the guest's
/// host uid its owner's rights, the owner's files show that uid, so the supervisor answers
/// them (as `readlink`, whose absolute targets MFS shows under `/mfs/N`). The removals and
/// renames are: a file the process has open here that loses its name is opened at home, when
/// home needs it, as the process's own open file (`MfsOp::OpenHeld`), not by a name.
pub const TREE_PLAIN: [Sysno; 7] = [
    Sysno::open,
    Sysno::creat,
    Sysno::access,
    Sysno::mkdir,
    Sysno::unlink,
    Sysno::rmdir,
    Sysno::rename,
];

/// The path calls of a tree ([`TREE_PLAIN`]) that take a directory descriptor as their first
/// argument: native only when it is `AT_FDCWD` or a number of the native range (a descriptor
/// the guest's kernel holds as home has it); any other goes to the supervisor. `close` of a
/// number of the range is native too. Those of [`TREE_AT2`] need their second directory
/// descriptor so as well.
pub const TREE_AT: [Sysno; 8] = [
    Sysno::openat,
    Sysno::faccessat,
    Sysno::faccessat2,
    Sysno::mkdirat,
    Sysno::unlinkat,
    Sysno::renameat,
    Sysno::renameat2,
    Sysno::close,
];

/// The calls of [`TREE_AT`] with a second directory descriptor, their third argument.
pub const TREE_AT2: [Sysno; 2] = [Sysno::renameat, Sysno::renameat2];

/// Whether `nr` is one of the calls a tree runs natively ([`TREE_PLAIN`], [`TREE_AT`], and
/// [`NATIVE_IO`] on any descriptor): the calls its trap may send back to be made again.
pub fn tree_native(nr: u64) -> bool {
    Sysno::new(nr as usize)
        .is_some_and(|s| TREE_PLAIN.contains(&s) || TREE_AT.contains(&s) || NATIVE_IO.contains(&s))
}

/// What a forwarded call does to the process's table of descriptors at home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdEffect {
    /// Nothing.
    None,
    /// Its result, if not negative, is a new descriptor number.
    Returns,
    /// On success, argument 1 is the number of a descriptor (`dup2`, `dup3`).
    Replaces,
    /// Argument 0 is no longer a descriptor (`close`, whatever it returns).
    Closes,
    /// Not known: the table must be asked again.
    Unknown,
}

/// What call `nr` with `args` does to the descriptor table. Calls not listed are
/// [`FdEffect::Unknown`] (one that installs descriptors it received, an `ioctl` that returns
/// one…): a remote that keeps a copy of home's numbers asks home again, never guesses.
pub fn fd_effect(nr: u64, args: &[u64; 6]) -> FdEffect {
    use Sysno as S;
    const F_DUPFD: u64 = 0;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    // ioctls that neither make nor close descriptors: the terminal's, FIONREAD, FIONBIO,
    // FIOCLEX/FIONCLEX (a flag), FIOASYNC.
    const IOCTLS: [u64; 16] = [
        0x5401, 0x5402, 0x5403, 0x5404, 0x540f, 0x5410, 0x5413, 0x5414, 0x541b, 0x5421, 0x5450,
        0x5451, 0x5452, 0x5429, 0x540e, 0x5422,
    ];
    let Some(s) = Sysno::new(nr as usize) else {
        return FdEffect::Unknown;
    };
    match s {
        S::open
        | S::openat
        | S::openat2
        | S::creat
        | S::dup
        | S::socket
        | S::accept
        | S::accept4
        | S::epoll_create
        | S::epoll_create1
        | S::eventfd
        | S::eventfd2
        | S::memfd_create
        | S::inotify_init
        | S::inotify_init1
        | S::signalfd
        | S::signalfd4
        | S::timerfd_create
        | S::pidfd_open
        | S::pidfd_getfd
        | S::userfaultfd
        | S::fanotify_init
        | S::open_by_handle_at => FdEffect::Returns,
        S::dup2 | S::dup3 => FdEffect::Replaces,
        S::close => FdEffect::Closes,
        S::fcntl if args[1] == F_DUPFD || args[1] == F_DUPFD_CLOEXEC => FdEffect::Returns,
        S::fcntl => FdEffect::None,
        S::ioctl if IOCTLS.contains(&args[1]) => FdEffect::None,
        S::read
        | S::write
        | S::pread64
        | S::pwrite64
        | S::readv
        | S::writev
        | S::preadv
        | S::pwritev
        | S::preadv2
        | S::pwritev2
        | S::lseek
        | S::fstat
        | S::stat
        | S::lstat
        | S::newfstatat
        | S::statx
        | S::statfs
        | S::fstatfs
        | S::access
        | S::faccessat
        | S::faccessat2
        | S::getdents
        | S::getdents64
        | S::fsync
        | S::fdatasync
        | S::sync
        | S::syncfs
        | S::ftruncate
        | S::truncate
        | S::fallocate
        | S::fadvise64
        | S::readahead
        | S::flock
        | S::mkdir
        | S::mkdirat
        | S::rmdir
        | S::unlink
        | S::unlinkat
        | S::rename
        | S::renameat
        | S::renameat2
        | S::link
        | S::linkat
        | S::symlink
        | S::symlinkat
        | S::readlink
        | S::readlinkat
        | S::chmod
        | S::fchmod
        | S::fchmodat
        | S::chown
        | S::fchown
        | S::lchown
        | S::fchownat
        | S::utime
        | S::utimes
        | S::utimensat
        | S::futimesat
        | S::chdir
        | S::fchdir
        | S::getcwd
        | S::umask
        | S::poll
        | S::ppoll
        | S::select
        | S::pselect6
        | S::epoll_wait
        | S::epoll_pwait
        | S::epoll_ctl
        | S::sendto
        | S::recvfrom
        | S::sendmsg
        | S::sendmmsg
        | S::connect
        | S::bind
        | S::listen
        | S::shutdown
        | S::getsockname
        | S::getpeername
        | S::getsockopt
        | S::setsockopt
        | S::sendfile
        | S::splice
        | S::tee
        | S::copy_file_range
        | S::getxattr
        | S::lgetxattr
        | S::fgetxattr
        | S::listxattr
        | S::flistxattr
        | S::setxattr
        | S::fsetxattr
        | S::nanosleep
        | S::wait4
        | S::waitid
        | S::kill
        | S::tgkill
        | S::setpgid
        | S::setsid
        | S::getpgid
        | S::getsid
        | S::getrusage
        | S::prlimit64
        | S::setrlimit
        | S::getrlimit => FdEffect::None,
        _ => FdEffect::Unknown,
    }
}

/// The few `fcntl` commands [`dfsa_native`] names (x86_64 values).
mod libc_consts {
    pub const F_GETFD: u64 = 1;
    pub const F_GETFL: u64 = 3;
    pub const F_GETLK: u64 = 5;
    pub const F_SETLK: u64 = 6;
    pub const F_SETLKW: u64 = 7;
    pub const F_OFD_GETLK: u64 = 36;
    pub const F_OFD_SETLK: u64 = 37;
    pub const F_OFD_SETLKW: u64 = 38;
}

/// The entry of system call `nr`; unknown calls are home-only.
pub fn spec(nr: u64) -> Spec {
    let known = usize::try_from(nr)
        .ok()
        .and_then(|i| index().get(i).copied().flatten());
    known.unwrap_or_else(|| Spec {
        nr: usize::try_from(nr)
            .ok()
            .and_then(Sysno::new)
            .unwrap_or(Sysno::restart_syscall),
        class: Class::HomeOnly,
        args: [No; 6],
    })
}

/// The name of system call `nr`, for messages.
pub fn name(nr: u64) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(Sysno::new)
        .map_or_else(|| format!("syscall {nr}"), |s| s.name().to_owned())
}

/// The numbers of all local calls, for the seccomp filter (sorted).
pub fn local_calls() -> Vec<u32> {
    let mut v: Vec<u32> = TABLE
        .iter()
        .filter(|s| s.class == Class::Local && s.nr != Sysno::mmap)
        .filter_map(|s| u32::try_from(s.nr.id()).ok())
        .collect();
    v.sort_unstable();
    v
}

/// Where a `fcntl` command runs: commands about the descriptor table or about the process
/// (close-on-exec, duplication, POSIX record locks, owners) run in the deputy; those about the
/// open file description (status flags, pipe size, OFD locks, leases) in the service.
pub fn fcntl_class(cmd: u64) -> (Class, Arg) {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_GETLK: u64 = 5;
    const F_SETLK: u64 = 6;
    const F_SETLKW: u64 = 7;
    const F_OFD_GETLK: u64 = 36;
    const F_OFD_SETLK: u64 = 37;
    const F_OFD_SETLKW: u64 = 38;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const F_SETPIPE_SZ: u64 = 1031;
    const F_GETPIPE_SZ: u64 = 1032;
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC | F_GETFD | F_SETFD => (Class::Deputy, Int),
        F_GETLK | F_SETLK | F_SETLKW => (Class::Deputy, InOut(Fixed(FLOCK))),
        F_GETFL | F_SETFL | F_SETPIPE_SZ | F_GETPIPE_SZ => (Class::Service, Int),
        F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW => (Class::Service, InOut(Fixed(FLOCK))),
        _ => (Class::HomeOnly, No),
    }
}

/// Where a `prctl` option runs when the filter sends it to the supervisor (every other option
/// runs on the remote, untrapped): the death signal is about the process's parent, which is at
/// home (it runs in the deputy), and the one the kernel holds for the guest — that it dies with
/// its supervisor — must stay as it is.
pub fn prctl_class(option: u64) -> (Class, Arg) {
    const PR_SET_PDEATHSIG: u64 = 1;
    const PR_GET_PDEATHSIG: u64 = 2;
    match option & 0xffff_ffff {
        PR_SET_PDEATHSIG => (Class::Deputy, Arg::Int),
        PR_GET_PDEATHSIG => (Class::Deputy, Arg::Out(Len::Fixed(4))),
        _ => (Class::Local, Arg::Int),
    }
}

/// Where an `ioctl` request runs and what its argument is. Terminal queries and settings work
/// on the duplicate in the service; changing the foreground process group needs the deputy
/// (the caller must have the terminal as its controlling terminal).
pub fn ioctl_class(req: u64) -> (Class, Arg) {
    const TCGETS: u64 = 0x5401;
    const TCSETS: u64 = 0x5402;
    const TCSETSW: u64 = 0x5403;
    const TCSETSF: u64 = 0x5404;
    const TIOCGPGRP: u64 = 0x540F;
    const TIOCSPGRP: u64 = 0x5410;
    const TIOCGWINSZ: u64 = 0x5413;
    const TIOCSWINSZ: u64 = 0x5414;
    const FIONREAD: u64 = 0x541B;
    const FIONBIO: u64 = 0x5421;
    const FIOCLEX: u64 = 0x5451;
    const FIONCLEX: u64 = 0x5450;
    const TIOCGSID: u64 = 0x5429;
    // The kernel's struct termios (not glibc's) is 36 bytes.
    const TERMIOS: u32 = 36;
    match req {
        TCGETS => (Class::Service, Out(Fixed(TERMIOS))),
        TCSETS | TCSETSW | TCSETSF => (Class::Service, In(Fixed(TERMIOS))),
        TIOCGWINSZ => (Class::Service, Out(Fixed(8))),
        TIOCSWINSZ => (Class::Service, In(Fixed(8))),
        TIOCGPGRP | TIOCGSID | FIONREAD => (Class::Service, Out(Fixed(4))),
        FIONBIO => (Class::Service, In(Fixed(4))),
        TIOCSPGRP => (Class::Deputy, In(Fixed(4))),
        FIOCLEX | FIONCLEX => (Class::Deputy, Int),
        _ => (Class::HomeOnly, No),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for s in TABLE {
            assert!(seen.insert(s.nr), "{} twice", s.nr.name());
        }
    }

    #[test]
    fn classes_of_the_basics() {
        let c = |n: Sysno| spec(n.id() as u64).class;
        assert_eq!(c(Sysno::read), Class::Service);
        assert_eq!(c(Sysno::openat), Class::Deputy);
        assert_eq!(c(Sysno::brk), Class::Local);
        assert_eq!(c(Sysno::getpid), Class::Cached);
        assert_eq!(c(Sysno::exit_group), Class::Exit);
        assert_eq!(c(Sysno::fork), Class::HomeOnly);
        assert_eq!(c(Sysno::execve), Class::HomeOnly);
        assert_eq!(
            spec(100_000).class,
            Class::HomeOnly,
            "unknown numbers go home"
        );
    }

    #[test]
    fn forwarded_calls_describe_their_arguments() {
        for s in TABLE {
            match s.class {
                Class::Service | Class::Deputy => {}
                _ => continue,
            }
            for a in s.args {
                let len_arg = match a {
                    In(L(i))
                    | Out(L(i))
                    | InOut(L(i))
                    | In(ArgTimes(i, _))
                    | InOut(ArgTimes(i, _)) => Some(i),
                    _ => None,
                };
                if let Some(i) = len_arg {
                    assert!(i < 6, "{}", s.nr.name());
                    assert_eq!(
                        s.args[usize::from(i)],
                        Int,
                        "{}: length argument {i} is an Int",
                        s.nr.name()
                    );
                }
            }
        }
    }

    #[test]
    fn the_filter_list_is_sorted_local_calls() {
        let l = local_calls();
        assert!(l.windows(2).all(|w| w[0] < w[1]));
        assert!(l.contains(&(Sysno::futex.id() as u32)));
        assert!(
            !l.contains(&(Sysno::mmap.id() as u32)),
            "mmap is checked by argument"
        );
        assert!(!l.contains(&(Sysno::read.id() as u32)));
    }

    #[test]
    fn fcntl_and_ioctl_commands_are_placed() {
        assert_eq!(fcntl_class(4).0, Class::Service);
        assert_eq!(fcntl_class(1030).0, Class::Deputy);
        assert_eq!(fcntl_class(6), (Class::Deputy, InOut(Fixed(FLOCK))));
        assert_eq!(fcntl_class(9999).0, Class::HomeOnly);
        assert_eq!(ioctl_class(0x5401), (Class::Service, Out(Fixed(36))));
        assert_eq!(ioctl_class(0x5410).0, Class::Deputy);
        assert_eq!(ioctl_class(0xdead).0, Class::HomeOnly);
    }

    #[test]
    fn dfsa_runs_only_calls_that_use_the_open_file_here() {
        let a = |a1: u64, a2: u64, a3: u64| [5, a1, a2, a3, 0, 0];
        assert!(dfsa_native(Sysno::read.id() as u64, &a(0, 0, 0), || false));
        assert!(dfsa_native(Sysno::fcntl.id() as u64, &a(3, 0, 0), || false));
        // F_DUPFD and F_SETFL change what home keeps.
        assert!(!dfsa_native(Sysno::fcntl.id() as u64, &a(0, 0, 0), || {
            false
        }));
        assert!(!dfsa_native(Sysno::fcntl.id() as u64, &a(4, 0, 0), || {
            false
        }));
        assert!(!dfsa_native(
            Sysno::ioctl.id() as u64,
            &a(0x5451, 0, 0),
            || false
        ));
        assert!(dfsa_native(
            Sysno::ioctl.id() as u64,
            &a(0x5401, 0, 0),
            || false
        ));
        assert!(dfsa_native(
            Sysno::statx.id() as u64,
            &a(0, 0x1000, 0),
            || true
        ));
        assert!(!dfsa_native(
            Sysno::statx.id() as u64,
            &a(0, 0x1000, 0),
            || false
        ));
        assert!(!dfsa_native(
            Sysno::newfstatat.id() as u64,
            &a(0, 0, 0),
            || true
        ));
        for s in [
            Sysno::close,
            Sysno::dup,
            Sysno::fchmod,
            Sysno::fchown,
            Sysno::sendfile,
        ] {
            assert!(!dfsa_native(s.id() as u64, &a(0, 0, 0), || true), "{s}");
        }
    }

    #[test]
    fn what_a_call_does_to_the_descriptor_table_is_known_or_unknown() {
        let a = |a1: u64| [3, a1, 0, 0, 0, 0];
        assert_eq!(fd_effect(Sysno::openat as u64, &a(0)), FdEffect::Returns);
        assert_eq!(fd_effect(Sysno::close as u64, &a(0)), FdEffect::Closes);
        assert_eq!(fd_effect(Sysno::dup2 as u64, &a(7)), FdEffect::Replaces);
        assert_eq!(fd_effect(Sysno::fcntl as u64, &a(0)), FdEffect::Returns);
        assert_eq!(fd_effect(Sysno::fcntl as u64, &a(1030)), FdEffect::Returns);
        assert_eq!(fd_effect(Sysno::fcntl as u64, &a(4)), FdEffect::None);
        assert_eq!(fd_effect(Sysno::read as u64, &a(0)), FdEffect::None);
        assert_eq!(fd_effect(Sysno::ioctl as u64, &a(0x5401)), FdEffect::None);
        // TIOCGPTPEER returns a descriptor; recvmsg may install some; unknown numbers too.
        assert_eq!(
            fd_effect(Sysno::ioctl as u64, &a(0x5441)),
            FdEffect::Unknown
        );
        assert_eq!(fd_effect(Sysno::recvmsg as u64, &a(0)), FdEffect::Unknown);
        assert_eq!(
            fd_effect(Sysno::close_range as u64, &a(0)),
            FdEffect::Unknown
        );
        assert_eq!(fd_effect(100_000, &a(0)), FdEffect::Unknown);
        for s in NATIVE_IO {
            assert!(DFSA_NATIVE.contains(&s), "{s:?}");
            assert_eq!(fd_effect(s as u64, &a(0)), FdEffect::None, "{s:?}");
        }
        for s in DFSA_HERE {
            assert_eq!(spec(s as u64).nr, s, "{s:?} is in the table");
        }
    }

    #[test]
    fn a_tree_runs_path_calls_of_this_node_and_close_nothing_else() {
        // Every path call a tree runs natively is one a supervisor runs here when its paths are
        // of this node (so one sent back by the trap is handled as before), but `close`; links
        // are read at home (MFS shows absolute targets under /mfs/N), never natively. Reads and
        // writes a placeholder sends back are the DFSA calls on a descriptor.
        for s in TREE_PLAIN.iter().chain(&TREE_AT) {
            assert!(*s == Sysno::close || DFSA_HERE.contains(s), "{s:?}");
            assert!(tree_native(s.id() as u64), "{s:?}");
        }
        for s in NATIVE_IO {
            assert!(DFSA_NATIVE.contains(&s), "{s:?}");
            assert!(tree_native(s.id() as u64), "{s:?}");
        }
        for s in TREE_AT2 {
            assert!(TREE_AT.contains(&s), "{s:?}");
        }
        for s in [
            Sysno::link,
            Sysno::linkat,
            Sysno::symlink,
            Sysno::readlink,
            Sysno::readlinkat,
            Sysno::execve,
            Sysno::chdir,
            Sysno::lseek,
            Sysno::fstat,
        ] {
            assert!(!tree_native(s.id() as u64), "{s:?}");
        }
        assert!(!tree_native(u64::MAX));
    }
}
