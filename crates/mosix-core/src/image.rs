//! The image of a process in flight: everything that crosses the link when a process migrates,
//! except the contents of its memory, which follow in raw page runs.
//!
//! The image is what the source node captured while the process was frozen: its registers and
//! extended FPU state, its memory map, its signal state, its registrations with the kernel
//! (rseq, robust futex list, clear-child-tid address), the bounds the kernel keeps for `brk`,
//! `/proc/PID/cmdline` and friends, and the facts the remote node answers locally for it (its
//! home pid, ids, host name). Every list in it has a named bound, checked after decoding, so a
//! peer cannot make a node allocate without limit.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// The image format's version.
pub const IMAGE_VERSION: u32 = 8;
/// The most memory areas an image may have.
pub const MAX_VMAS: usize = 65_536;
/// The most signal actions (signals 1..64).
pub const MAX_SIGACTIONS: usize = 64;
/// The largest xstate area (AMX machines use about 11 KiB).
pub const MAX_XSTATE: usize = 64 * 1024;
/// The largest auxiliary vector.
pub const MAX_AUXV: usize = 4096;
/// The largest vdso we compare.
pub const MAX_VDSO: usize = 64 * 1024;
/// The most supplementary groups (NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65_536;
/// The most CPU feature words.
pub const MAX_CPU_FLAGS: usize = 1024;
/// The largest chunk of page data in one run.
pub const MAX_RUN: usize = 4 << 20;

/// The general registers of x86_64, in the order of the kernel's `struct user_regs_struct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regs(pub [u64; 27]);

impl Regs {
    /// Index of `rax`.
    pub const RAX: usize = 10;
    /// Index of `rcx`.
    pub const RCX: usize = 11;
    /// Index of `rdx`.
    pub const RDX: usize = 12;
    /// Index of `rsi`.
    pub const RSI: usize = 13;
    /// Index of `rdi`.
    pub const RDI: usize = 14;
    /// Index of `orig_rax`.
    pub const ORIG_RAX: usize = 15;
    /// Index of `rip`.
    pub const RIP: usize = 16;
    /// Index of `eflags`.
    pub const EFLAGS: usize = 18;
    /// Index of `rsp`.
    pub const RSP: usize = 19;
    /// Index of `fs_base`.
    pub const FS_BASE: usize = 21;
    /// Index of `gs_base`.
    pub const GS_BASE: usize = 22;
    /// Index of `r10`.
    pub const R10: usize = 7;
    /// Index of `r8`.
    pub const R8: usize = 9;
    /// Index of `r9`.
    pub const R9: usize = 8;
    /// Index of `r11`.
    pub const R11: usize = 6;

    /// `rip`.
    pub fn ip(&self) -> u64 {
        self.0[Self::RIP]
    }
    /// `rax`.
    pub fn ax(&self) -> u64 {
        self.0[Self::RAX]
    }
    /// `orig_rax` as a signed number (-1 outside a system call).
    pub fn orig_ax(&self) -> i64 {
        self.0[Self::ORIG_RAX] as i64
    }

    /// The six argument registers of a system call (rdi, rsi, rdx, r10, r8, r9).
    pub fn syscall_args(&self) -> [u64; 6] {
        [
            self.0[Self::RDI],
            self.0[Self::RSI],
            self.0[Self::RDX],
            self.0[Self::R10],
            self.0[Self::R8],
            self.0[Self::R9],
        ]
    }

    /// Prepares these registers to run system call `nr` with `args` at `site` (the address of a
    /// `syscall` instruction): `orig_rax = -1` so that the kernel does not treat the stop we
    /// resume from as an interrupted call to restart.
    pub fn for_syscall(&self, site: u64, nr: u64, args: [u64; 6]) -> Regs {
        let mut r = *self;
        r.0[Self::RIP] = site;
        r.0[Self::RAX] = nr;
        r.0[Self::ORIG_RAX] = u64::MAX;
        r.0[Self::RDI] = args[0];
        r.0[Self::RSI] = args[1];
        r.0[Self::RDX] = args[2];
        r.0[Self::R10] = args[3];
        r.0[Self::R8] = args[4];
        r.0[Self::R9] = args[5];
        r
    }

    /// Makes a system call interrupted by the freeze restartable at the destination: the
    /// `-ERESTART*` codes mean "run the call again", so rewind to the `syscall` instruction with
    /// the call number in `rax`; a `-ERESTART_RESTARTBLOCK` call (its remaining time lives in the
    /// kernel and cannot move) returns `-EINTR` instead. Returns whether anything changed.
    pub fn fix_interrupted_syscall(&mut self) -> bool {
        const ERESTARTSYS: i64 = -512;
        const ERESTARTNOINTR: i64 = -513;
        const ERESTARTNOHAND: i64 = -514;
        const ERESTART_RESTARTBLOCK: i64 = -516;
        const EINTR: i64 = -4;
        let orig = self.orig_ax();
        if orig < 0 {
            return false;
        }
        match self.0[Self::RAX] as i64 {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                self.0[Self::RAX] = orig as u64;
                self.0[Self::RIP] = self.0[Self::RIP].wrapping_sub(2);
                self.0[Self::ORIG_RAX] = u64::MAX;
                true
            }
            ERESTART_RESTARTBLOCK => {
                self.0[Self::RAX] = EINTR as u64;
                self.0[Self::ORIG_RAX] = u64::MAX;
                true
            }
            _ => {
                self.0[Self::ORIG_RAX] = u64::MAX;
                false
            }
        }
    }
}

/// What kind of memory area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmaKind {
    /// Private anonymous memory (heap, stack, malloc arenas).
    Anon,
    /// A private mapping of a file at home (code, data of binaries and libraries). The remote
    /// gets a private anonymous mapping with the same contents.
    File {
        /// The file's path at home, for messages and `/proc` listings.
        path: String,
        /// Offset in the file.
        offset: u64,
    },
    /// The `[heap]` (brk) area.
    Heap,
    /// The main `[stack]`.
    Stack,
}

/// One memory area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// What it is.
    pub kind: VmaKind,
}

impl Vma {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// For a process whose memory was sent while it ran (a live move): for each area of the final
/// image `now`, the index of the area of the first image `then` it is the same as, whose pages
/// the destination already holds; `None` for an area that is new or changed, which is sent
/// whole. The same means the same range, rights and kind, except that an area of private
/// memory or the heap may have grown or shrunk at its end in place (`mremap`, a heap trimmed
/// by `brk`, a tail unmapped): the part both have keeps its pages, a part it grew by is new.
/// Both lists are in address order.
pub fn kept_areas(then: &[Vma], now: &[Vma]) -> Vec<Option<u32>> {
    let mut out = Vec::with_capacity(now.len());
    let mut i = 0;
    for v in now {
        while i < then.len() && then[i].start < v.start {
            i += 1;
        }
        out.push((i < then.len() && same_area(&then[i], v)).then_some(i as u32));
    }
    out
}

/// Whether `now` is the area `then` (see [`kept_areas`]).
fn same_area(then: &Vma, now: &Vma) -> bool {
    then == now
        || (matches!(now.kind, VmaKind::Anon | VmaKind::Heap)
            && then.kind == now.kind
            && (then.start, then.read, then.write, then.exec)
                == (now.start, now.read, now.write, now.exec))
}

/// The kernel's special mappings at the time of the freeze.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialMaps {
    /// `[vvar]` (start, end).
    pub vvar: Option<(u64, u64)>,
    /// `[vvar_vclock]` (start, end), Linux 6.13 and later.
    pub vvar_vclock: Option<(u64, u64)>,
    /// `[vdso]` (start, end).
    pub vdso: Option<(u64, u64)>,
    /// The vdso's contents: a destination whose kernel has another vdso cannot take the
    /// process (its code calls into the vdso at fixed offsets).
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_VDSO>")]
    pub vdso_bytes: Vec<u8>,
}

/// The memory-descriptor fields behind `brk`, `/proc/PID/cmdline`, `/environ` and `/auxv`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    /// Start of code.
    pub start_code: u64,
    /// End of code.
    pub end_code: u64,
    /// Start of data.
    pub start_data: u64,
    /// End of data.
    pub end_data: u64,
    /// Start of the brk area.
    pub start_brk: u64,
    /// Current brk.
    pub brk: u64,
    /// Start of the stack.
    pub start_stack: u64,
    /// Start of the arguments.
    pub arg_start: u64,
    /// End of the arguments.
    pub arg_end: u64,
    /// Start of the environment.
    pub env_start: u64,
    /// End of the environment.
    pub env_end: u64,
}

/// One signal's action, as `rt_sigaction` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    /// The signal number.
    pub sig: u32,
    /// Handler address, or SIG_DFL (0) / SIG_IGN (1).
    pub handler: u64,
    /// `sa_flags`.
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// `sa_mask`.
    pub mask: u64,
}

/// The registration of a restartable-sequences area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rseq {
    /// Address of `struct rseq`.
    pub ptr: u64,
    /// Its registered length.
    pub len: u32,
    /// The signature.
    pub sig: u32,
}

/// Credentials of the process (its owner's, for the sandbox on the remote node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    /// Real, effective, saved uid.
    pub uid: [u32; 3],
    /// Real, effective, saved gid.
    pub gid: [u32; 3],
    /// Supplementary groups.
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_GROUPS>")]
    pub groups: Vec<u32>,
}

impl Creds {
    /// Whether these are root's credentials (any uid 0) or in a set-id state (real, effective
    /// and saved ids not all the same: a set-uid or set-gid program): what a node refuses as a
    /// guest unless its `guests.accept_root` says otherwise.
    pub fn root_or_setid(&self) -> bool {
        self.uid.contains(&0)
            || self.uid.iter().any(|u| *u != self.uid[0])
            || self.gid.iter().any(|g| *g != self.gid[0])
    }
}

/// One resource limit (`getrlimit(2)`): the resource number, the soft and the hard limit
/// (`u64::MAX` = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_*`.
    pub resource: u32,
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// The number of resource limits Linux has (`RLIM_NLIMITS`).
pub const MAX_RLIMITS: usize = 16;

/// What the remote answers for the process without asking home.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    /// The home pid (also its tid: the process is single-threaded).
    pub pid: u32,
    /// The home parent pid.
    pub ppid: u32,
    /// The process group at home.
    pub pgrp: u32,
    /// `uname` of the home node: sysname, nodename, release, version, machine, domainname.
    pub uname: [String; 6],
}

/// Everything about a frozen process but its memory contents.
///
/// Decoding keeps at most one element more than the limit of each list (the rest of a longer
/// list is read and dropped), so a peer cannot make the receiver allocate past the limits;
/// [`ImageHeader::validate`] refuses such an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageHeader {
    /// [`IMAGE_VERSION`].
    pub version: u32,
    /// The home node.
    pub home: NodeId,
    /// The command name (`comm`).
    pub comm: String,
    /// How many times the process has migrated, this move included.
    pub nmigs: u32,
    /// Locked at home (`mosrun -L`): the node it runs on must not move it automatically.
    pub locked: bool,
    /// An automatic move: the most load the process may see at its destination for the move
    /// to pay ([`crate::balance::Move::ceiling`]); the destination refuses it above that.
    /// `None` for moves people asked for and for going home.
    pub ceiling: Option<u32>,
    /// General registers (the interrupted call already made restartable).
    pub regs: Regs,
    /// The XSAVE area (NT_X86_XSTATE).
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_XSTATE>")]
    pub xstate: Vec<u8>,
    /// Blocked signals.
    pub sigmask: u64,
    /// Signal actions that are not the default.
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_SIGACTIONS>")]
    pub sigactions: Vec<SigAction>,
    /// `sigaltstack` (sp, flags, size).
    pub altstack: (u64, u32, u64),
    /// rseq registration, if any.
    pub rseq: Option<Rseq>,
    /// Robust futex list (head, len).
    pub robust_list: (u64, u64),
    /// `set_tid_address` pointer.
    pub tid_address: u64,
    /// Memory-descriptor fields.
    pub mm: MmFields,
    /// The auxiliary vector.
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_AUXV>")]
    pub auxv: Vec<u8>,
    /// The memory areas, in address order.
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_VMAS>")]
    pub vmas: Vec<Vma>,
    /// vvar/vdso.
    pub special: SpecialMaps,
    /// The CPU features the process may use (`/proc/cpuinfo` flags of the source).
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_CPU_FLAGS>")]
    pub cpu_flags: Vec<String>,
    /// The owner's credentials.
    pub creds: Creds,
    /// Its resource limits, which the remote kernel enforces (memory, stack, CPU time…).
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_RLIMITS>")]
    pub rlimits: Vec<Rlimit>,
    /// Facts answered remotely.
    pub cached: Cached,
    /// Bytes of page data that follow.
    pub total_bytes: u64,
    /// Set when the image goes from one remote node straight to another: the token with
    /// which the destination rejoins the process's home ([`crate::proto::LinkMsg::Rejoin`]).
    pub rejoin: Option<u64>,
    /// Errors of writes behind the program has not heard yet, by descriptor (`fd`, `errno`):
    /// they travel with it to the next remote node, where its next call on the descriptor
    /// reports them.
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_WRITE_ERRORS>")]
    pub write_errors: Vec<(i32, i32)>,
    /// The descriptor numbers on which the destination may let the process's reads, writes
    /// and seeks run without a notification: those free at home when it left. `None`: not
    /// asked for (the process is not declared I/O-bound and has no file of the destination
    /// open); its file calls there are notified as before.
    pub native_io: Option<NativeIo>,
}

/// The most write errors an image carries (one per descriptor).
pub const MAX_WRITE_ERRORS: usize = 1024;

/// The most numbers a [`NativeIo`] leaves out (beyond, it starts past the highest).
pub const MAX_NATIVE_EXCEPT: usize = 32;

/// The descriptor numbers of a migrated process whose reads, writes and seeks its node's
/// kernel runs with no notification: from `from` up, but for `except` — numbers home had in
/// use when the process left. The remote keeps each of them free or one of the process's
/// files opened there, and sends the process home before anything else would stand there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeIo {
    /// The lowest number of the range.
    pub from: u32,
    /// Numbers above `from` that are not in it (at most [`MAX_NATIVE_EXCEPT`]).
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_NATIVE_EXCEPT>")]
    pub except: Vec<u32>,
    /// The numbers not in the range are exactly those home uses (every number below `from`
    /// is in use there, and the left-out ones are all the others): the process's own kernel
    /// then gives a new descriptor the number home would, and a tree of its own may open
    /// files natively (`mosix_kmod::kernel::tree`).
    pub exact: bool,
    /// The process's umask at home when it left (for files a tree makes natively).
    pub umask: u32,
}

impl NativeIo {
    /// The range for a process whose descriptors at home are `fds`: from the lowest free
    /// number (at least `min`), leaving out the numbers in use above it — or, if there are more
    /// than [`MAX_NATIVE_EXCEPT`] of those, from one past the highest.
    pub fn of_table(fds: &[i32], min: u32, umask: u32) -> NativeIo {
        let used: std::collections::BTreeSet<u32> =
            fds.iter().filter_map(|&f| u32::try_from(f).ok()).collect();
        let mut from = min;
        while used.contains(&from) {
            from += 1;
        }
        let below_used = (0..min).all(|f| used.contains(&f));
        let except: Vec<u32> = used.range(from..).copied().collect();
        if except.len() > MAX_NATIVE_EXCEPT {
            let past = used.last().map_or(min, |&h| h.saturating_add(1).max(min));
            return NativeIo {
                from: past,
                except: Vec::new(),
                exact: false,
                umask,
            };
        }
        NativeIo {
            from,
            except,
            exact: below_used,
            umask,
        }
    }

    /// Whether descriptor number `fd` is in the range.
    pub fn covers(&self, fd: i64) -> bool {
        u32::try_from(fd).is_ok_and(|f| f >= self.from && !self.except.contains(&f))
    }
}

/// Why an image is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Another image version.
    #[error("image version {0} is not supported (this node reads version {IMAGE_VERSION})")]
    Version(u32),
    /// A list is over its bound.
    #[error("image has more than {limit} {what}")]
    TooMany {
        /// What.
        what: &'static str,
        /// How many were decoded: at most `limit + 1` (decoding drops the rest).
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Areas overlap or are out of order.
    #[error("memory areas overlap or are out of order at {0:#x}")]
    Overlap(u64),
    /// An area is not page-aligned or is empty.
    #[error("memory area {0:#x}-{1:#x} is empty or not page-aligned")]
    BadVma(u64, u64),
    /// The destination lacks CPU features the process may use.
    #[error("this CPU lacks features the process may use: {0}")]
    CpuFeatures(String),
}

fn bound(what: &'static str, count: usize, limit: usize) -> Result<(), ImageError> {
    if count > limit {
        Err(ImageError::TooMany { what, count, limit })
    } else {
        Ok(())
    }
}

impl ImageHeader {
    /// Checks the bounds and the consistency of the memory map.
    pub fn validate(&self) -> Result<(), ImageError> {
        if self.version != IMAGE_VERSION {
            return Err(ImageError::Version(self.version));
        }
        bound("memory areas", self.vmas.len(), MAX_VMAS)?;
        bound("signal actions", self.sigactions.len(), MAX_SIGACTIONS)?;
        bound("bytes of xstate", self.xstate.len(), MAX_XSTATE)?;
        bound("bytes of auxv", self.auxv.len(), MAX_AUXV)?;
        bound("bytes of vdso", self.special.vdso_bytes.len(), MAX_VDSO)?;
        bound("groups", self.creds.groups.len(), MAX_GROUPS)?;
        bound("CPU flags", self.cpu_flags.len(), MAX_CPU_FLAGS)?;
        bound("resource limits", self.rlimits.len(), MAX_RLIMITS)?;
        bound("write errors", self.write_errors.len(), MAX_WRITE_ERRORS)?;
        if let Some(n) = &self.native_io {
            bound("native numbers left out", n.except.len(), MAX_NATIVE_EXCEPT)?;
        }
        let mut last_end = 0u64;
        for v in &self.vmas {
            if v.is_empty() || v.start % 4096 != 0 || v.end % 4096 != 0 {
                return Err(ImageError::BadVma(v.start, v.end));
            }
            if v.start < last_end {
                return Err(ImageError::Overlap(v.start));
            }
            last_end = v.end;
        }
        Ok(())
    }

    /// The CPU features the image may use that `have` lacks.
    pub fn missing_cpu_flags(&self, have: &[String]) -> Vec<String> {
        let have: std::collections::HashSet<&str> = have.iter().map(String::as_str).collect();
        self.cpu_flags
            .iter()
            .filter(|f| !have.contains(f.as_str()))
            .cloned()
            .collect()
    }
}

/// Why a process cannot migrate, in the words `mps` and `migrate` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CantMove {
    /// It has more than one thread.
    Threads,
    /// It maps shared memory (MAP_SHARED, SysV shm).
    SharedMemory,
    /// It maps a device.
    DeviceMapping,
    /// It has locked memory.
    LockedMemory,
    /// It is not a MOSIX process (not started by mosrun).
    NotMosix,
    /// It is a zombie or is exiting.
    Exiting,
    /// It is being traced by another program.
    Traced,
    /// It is stopped by job control (Ctrl-Z); it may move once it runs again.
    Stopped,
}

impl CantMove {
    /// The reason word.
    pub fn word(self) -> &'static str {
        match self {
            CantMove::Threads => "threads",
            CantMove::SharedMemory => "shared-memory",
            CantMove::DeviceMapping => "device-mapping",
            CantMove::LockedMemory => "locked-memory",
            CantMove::NotMosix => "not-mosix",
            CantMove::Exiting => "exiting",
            CantMove::Traced => "traced",
            CantMove::Stopped => "stopped",
        }
    }

    /// A sentence for error messages.
    pub fn explain(self) -> &'static str {
        match self {
            CantMove::Threads => {
                "it has more than one thread (MOSIX moves single-threaded processes)"
            }
            CantMove::SharedMemory => "it maps shared memory, which cannot be shared across nodes",
            CantMove::DeviceMapping => "it maps a device of this node",
            CantMove::LockedMemory => "it has locked memory (mlock)",
            CantMove::NotMosix => "it is not a MOSIX process (start it with mosrun)",
            CantMove::Exiting => "it is exiting",
            CantMove::Traced => "another program is tracing it",
            CantMove::Stopped => "it is stopped (job control): it can move once it runs again",
        }
    }
}

/// One line of `/proc/PID/maps`, as far as the mobility of a process is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine {
    /// Start.
    pub start: u64,
    /// End.
    pub end: u64,
    /// The permission letters, e.g. `rw-p`.
    pub perms: String,
    /// Offset.
    pub offset: u64,
    /// The device `maj:min` of the file (0:0 for anonymous).
    pub dev: (u32, u32),
    /// The inode.
    pub inode: u64,
    /// The path or `[name]`.
    pub path: String,
}

/// Decides whether a process can move, from its thread count, its locked memory and its maps.
pub fn cantmove(threads: u32, locked_kb: u64, maps: &[MapsLine]) -> Option<CantMove> {
    if threads > 1 {
        return Some(CantMove::Threads);
    }
    if locked_kb > 0 {
        return Some(CantMove::LockedMemory);
    }
    for m in maps {
        let p = m.perms.as_bytes();
        let shared = p.get(3) == Some(&b's');
        let writable = p.get(1) == Some(&b'w');
        // Anonymous shared memory shows as /dev/zero (deleted), SysV segments as /SYSV...,
        // memfds as /memfd:...: all of them are memory shared with other processes.
        let shmem = m.path.is_empty()
            || m.path.starts_with("/dev/zero")
            || m.path.starts_with("/SYSV")
            || m.path.starts_with("/memfd:")
            || m.path.starts_with("/dev/shm/");
        if shared && (writable || shmem) {
            return Some(CantMove::SharedMemory);
        }
        if m.path.starts_with("/dev/") && !shmem && m.inode != 0 {
            return Some(CantMove::DeviceMapping);
        }
        // A read-only shared mapping of a regular file (a cache like gconv-modules.cache) cannot
        // be written through; a copy of its contents behaves the same and moves.
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn kept_areas_are_the_unchanged_ones() {
        let a = |start: u64, end: u64, write: bool| Vma {
            start,
            end,
            read: true,
            write,
            exec: false,
            kind: VmaKind::Anon,
        };
        let then = [
            a(0x1000, 0x3000, true),
            a(0x5000, 0x9000, true),
            a(0xa000, 0xb000, true),
        ];
        let now = [
            a(0x1000, 0x3000, true),
            a(0x4000, 0x5000, true),
            // Grown in place: kept (its first part's pages are there).
            a(0x5000, 0xa000, true),
            a(0xa000, 0xb000, false),
            a(0xc000, 0xd000, true),
        ];
        assert_eq!(
            kept_areas(&then, &now),
            vec![Some(0), None, Some(1), None, None]
        );
        // Shrunk: kept; a file's area that changed its size is not (its pages are the file's
        // at an offset), nor one that starts elsewhere.
        let file = |start: u64, end: u64| Vma {
            kind: VmaKind::File {
                path: "/lib/x".into(),
                offset: 0,
            },
            ..a(start, end, false)
        };
        let before = [a(0x1000, 0x4000, true), file(0x5000, 0x8000)];
        let after = [a(0x1000, 0x2000, true), file(0x5000, 0x6000)];
        assert_eq!(kept_areas(&before, &after), vec![Some(0), None]);
        assert_eq!(kept_areas(&before, &[a(0x2000, 0x4000, true)]), vec![None]);
        assert_eq!(kept_areas(&then, &then), vec![Some(0), Some(1), Some(2)]);
        assert_eq!(kept_areas(&[], &then), vec![None, None, None]);
    }
    use super::*;

    fn line(perms: &str, path: &str) -> MapsLine {
        MapsLine {
            start: 0x1000,
            end: 0x2000,
            perms: perms.into(),
            offset: 0,
            dev: (0, 0),
            inode: u64::from(!path.is_empty() && !path.starts_with('[')),
            path: path.into(),
        }
    }

    #[test]
    fn mobility_reasons() {
        assert_eq!(
            cantmove(1, 0, &[line("rw-p", ""), line("r-xp", "/usr/bin/x")]),
            None
        );
        assert_eq!(cantmove(2, 0, &[]), Some(CantMove::Threads));
        assert_eq!(cantmove(1, 4, &[]), Some(CantMove::LockedMemory));
        assert_eq!(
            cantmove(1, 0, &[line("rw-s", "/dev/shm/x")]),
            Some(CantMove::SharedMemory)
        );
        assert_eq!(
            cantmove(1, 0, &[line("rw-s", "/dev/zero (deleted)")]),
            Some(CantMove::SharedMemory),
            "anonymous shared memory"
        );
        assert_eq!(
            cantmove(1, 0, &[line("rw-p", "/dev/fb0")]),
            Some(CantMove::DeviceMapping)
        );
        assert_eq!(
            cantmove(1, 0, &[line("rw-s", "")]),
            Some(CantMove::SharedMemory)
        );
    }

    #[test]
    fn interrupted_calls_become_restartable() {
        let mut r = Regs([0; 27]);
        r.0[Regs::ORIG_RAX] = 0; // read
        r.0[Regs::RAX] = (-512i64) as u64;
        r.0[Regs::RIP] = 0x1002;
        assert!(r.fix_interrupted_syscall());
        assert_eq!(r.ax(), 0);
        assert_eq!(r.ip(), 0x1000);
        assert_eq!(r.orig_ax(), -1);
        let mut r = Regs([0; 27]);
        r.0[Regs::ORIG_RAX] = 35; // nanosleep
        r.0[Regs::RAX] = (-516i64) as u64;
        r.0[Regs::RIP] = 0x1002;
        assert!(r.fix_interrupted_syscall());
        assert_eq!(r.ax() as i64, -4);
        assert_eq!(r.ip(), 0x1002);
        let mut r = Regs([0; 27]);
        r.0[Regs::ORIG_RAX] = u64::MAX;
        assert!(!r.fix_interrupted_syscall());
    }

    #[test]
    fn images_are_bounded_and_ordered() {
        let vma = |s: u64, e: u64| Vma {
            start: s,
            end: e,
            read: true,
            write: true,
            exec: false,
            kind: VmaKind::Anon,
        };
        let mut h = header();
        h.vmas = vec![vma(0x1000, 0x3000), vma(0x3000, 0x4000)];
        h.cpu_flags = vec!["sse2".into(), "avx512f".into()];
        assert!(h.validate().is_ok());
        h.vmas.push(vma(0x2000, 0x5000));
        assert_eq!(h.validate(), Err(ImageError::Overlap(0x2000)));
        h.vmas.pop();
        h.vmas.push(vma(0x5000, 0x5001));
        assert!(matches!(h.validate(), Err(ImageError::BadVma(..))));
        h.vmas.pop();
        assert_eq!(
            h.missing_cpu_flags(&["sse2".into()]),
            vec!["avx512f".to_owned()]
        );
    }

    #[test]
    fn a_list_over_its_limit_is_not_kept_whole() {
        // Found by the decoder properties (tests/properties.rs): 16 MiB of empty CPU-flag
        // strings decoded into half a gigabyte of Strings before validate looked at the count.
        let mut h = header();
        h.cpu_flags = vec![String::new(); 200_000];
        h.creds.groups = vec![1, 2, 3];
        let bytes = postcard::to_stdvec(&h).unwrap();
        let back: ImageHeader = crate::proto::decode_payload(&bytes).unwrap();
        assert_eq!(back.cpu_flags.len(), MAX_CPU_FLAGS + 1);
        assert_eq!(
            back.creds.groups,
            [1, 2, 3],
            "what follows the list is read in place"
        );
        assert_eq!(
            back.validate().unwrap_err().to_string(),
            "image has more than 1024 CPU flags"
        );
        h.cpu_flags.truncate(MAX_CPU_FLAGS);
        let bytes = postcard::to_stdvec(&h).unwrap();
        let back: ImageHeader = crate::proto::decode_payload(&bytes).unwrap();
        assert_eq!(back, h, "a list at its limit reads back whole");
    }

    fn header() -> ImageHeader {
        ImageHeader {
            version: IMAGE_VERSION,
            home: NodeId::new(1).unwrap(),
            comm: "x".into(),
            nmigs: 1,
            locked: false,
            ceiling: None,
            regs: Regs([0; 27]),
            xstate: vec![],
            sigmask: 0,
            sigactions: vec![],
            altstack: (0, 2, 0),
            rseq: None,
            robust_list: (0, 0),
            tid_address: 0,
            mm: MmFields::default(),
            auxv: vec![],
            vmas: vec![],
            special: SpecialMaps::default(),
            cpu_flags: vec![],
            creds: Creds::default(),
            rlimits: vec![],
            cached: Cached::default(),
            total_bytes: 0,
            rejoin: None,
            write_errors: Vec::new(),
            native_io: None,
        }
    }

    #[test]
    fn the_native_range_leaves_out_what_home_has() {
        let n = NativeIo::of_table(&[0, 1, 2, 250, 251], 1, 0o22);
        assert_eq!((n.from, n.except.clone()), (3, vec![250, 251]));
        assert!(n.exact && n.umask == 0o22);
        assert!(n.covers(3) && n.covers(249) && n.covers(252) && n.covers(i64::from(u32::MAX)));
        assert!(!n.covers(2) && !n.covers(250) && !n.covers(251) && !n.covers(-1));
        // No descriptor 0 at home: the range still starts at `min`, and is not exact (home
        // would give 0, the process's kernel would not).
        let n = NativeIo::of_table(&[1, 2], 1, 0);
        assert_eq!((n.from, n.except.clone(), n.exact), (3, vec![], false));
        let n = NativeIo::of_table(&[], 1, 0);
        assert_eq!((n.from, n.except.clone(), n.exact), (1, vec![], false));
        let many: Vec<i32> = (0..3).chain((10..10 + 40).map(|x| x * 2)).collect();
        let n = NativeIo::of_table(&many, 1, 0);
        assert_eq!((n.from, n.except.len(), n.exact), (99, 0, false));
    }
}
