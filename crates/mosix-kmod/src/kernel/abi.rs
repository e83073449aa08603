//! Values of the kernel's interface that neither `libc` nor `linux-raw-sys` exports, each
//! defined once here with where it comes from. Everything else comes from those two crates.
//!
//! The `ERESTART*` codes are kernel-internal (`include/linux/errno.h`, "should never be seen by
//! user programs"): a process never sees them, but a ptrace tracer does, in `rax` at a stop
//! inside an interrupted system call, and a seccomp supervisor may answer a notification with
//! one to have the kernel restart the call or not as the signal's handler says. Like `libc`'s
//! errno values they are positive; a system call returns them negated.

/// `ERESTARTSYS` (`include/linux/errno.h`): interrupted by a signal; restarted if the
/// handler has `SA_RESTART` (or there is no handler), else `EINTR`.
pub const ERESTARTSYS: i32 = 512;
/// `ERESTARTNOINTR` (`include/linux/errno.h`): interrupted; always restarted.
pub const ERESTARTNOINTR: i32 = 513;
/// `ERESTARTNOHAND` (`include/linux/errno.h`): interrupted; restarted only if no handler ran.
pub const ERESTARTNOHAND: i32 = 514;
/// `ERESTART_RESTARTBLOCK` (`include/linux/errno.h`): interrupted; restarted through
/// `restart_syscall(2)` with state the kernel keeps for the thread.
pub const ERESTART_RESTARTBLOCK: i32 = 516;

/// `RSEQ_FLAG_UNREGISTER` (`include/uapi/linux/rseq.h`, `enum rseq_flags`): the `flags`
/// argument of `rseq(2)` that removes a registration. A uapi enum, which neither crate carries.
pub const RSEQ_FLAG_UNREGISTER: u64 = 1 << 0;

/// `KCMP_FILE` (`include/uapi/linux/kcmp.h`, `enum kcmp_type`): `kcmp(2)` compares two file
/// descriptors' open file descriptions. A uapi enum, which neither crate carries.
pub const KCMP_FILE: i32 = 0;

/// Bit 63 of a `/proc/PID/pagemap` entry: the page is present in RAM
/// (`Documentation/admin-guide/mm/pagemap.rst`; `PM_PRESENT` in `fs/proc/task_mmu.c`).
pub const PAGEMAP_PRESENT: u64 = 1 << 63;
/// Bit 62 of a `/proc/PID/pagemap` entry: the page is swapped out (`PM_SWAP`, same sources).
pub const PAGEMAP_SWAPPED: u64 = 1 << 62;
/// Bit 56 of a `/proc/PID/pagemap` entry: the page is mapped by this process only
/// (`PM_MMAP_EXCLUSIVE`, same sources; set for a present page whose map count is one).
pub const PAGEMAP_EXCLUSIVE: u64 = 1 << 56;
