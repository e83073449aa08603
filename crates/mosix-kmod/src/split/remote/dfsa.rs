//! Direct File System Access: a guest's file under `/mfs/<this node>/…` (or `/mfs/here/…`) is
//! opened here, and the calls on it run here natively, not at home.
//!
//! The open itself still goes home first and runs in the deputy, through home's MFS mount: so
//! it is checked, created, truncated and numbered exactly as it would be at home, and the
//! deputy holds the same file (its `fstat`, `/proc/PID/fd`, coming home). Then the supervisor
//! opens the same file here — the path without the mount's prefix, with the owner's ids
//! ([`crate::kernel::creds::as_user`]) and without `O_CREAT`, `O_EXCL` and `O_TRUNC`, which home
//! already did — and installs it in the guest at the number home gave (`ADDFD`). From then on
//! the calls of [`NATIVE`] on that number are let through to the kernel here (a notification
//! answered with `CONTINUE`: no trip home).
//!
//! One state with home: the offset moves here only. Before anything else uses the
//! descriptor — a call this module does not know to be safe on it, a `dup`, the process leaving
//! — the offset is carried home (an `lseek` forwarded to the deputy) and, unless the process is
//! leaving, the descriptor stops being DFSA (a placeholder takes its number here; its calls go
//! home as any other's). Correctness never depends on this list being complete: what it does
//! not know goes home.
//!
//! A path is taken only if it is absolute, names this node's directory of the mount, and has no
//! `..` component; anything else is opened at home only, as before.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mosix_core::NodeId;
use mosix_core::image::Creds;
use mosix_core::syscalls;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::kernel::creds::{User, as_user};

/// What the node knows of DFSA: where MFS is mounted, and its counters.
#[derive(Debug)]
pub struct DfsaNode {
    /// The MFS mount (`[mfs] mount`).
    pub mount: PathBuf,
    /// `[mfs] trust_root`: without it a guest of root opens files here as `nobody`, as its
    /// requests through MFS would.
    pub trust_root: bool,
    /// `[mfs] dfsa_paths`: file systems mounted the same on every node, whose paths are the
    /// same here as at home.
    pub shared: Vec<PathBuf>,
    /// Files opened here for guests.
    pub opens: AtomicU64,
    /// Calls of guests let through to this node's kernel on such files.
    pub calls: AtomicU64,
    /// The trap of guests' trees (`[mfs] trees`; `None`: no guest gets a tree here).
    pub trap: Option<crate::mfs::trap::Trap>,
    /// MFS's files held for guests' homes (`None` in tests without a server).
    pub held: Option<std::sync::Arc<crate::mfs::server::Held>>,
    /// The same, by guest (its pid here), since the balancer last looked.
    by_guest: std::sync::Mutex<std::collections::HashMap<i32, u64>>,
    /// Nanoseconds each guest (its pid here) waited for its home to answer its calls on home's
    /// files, with that home, since the balancer last looked.
    home_waits: std::sync::Mutex<std::collections::HashMap<i32, (NodeId, u64)>>,
}

/// What one call on a DFSA descriptor is taken to cost, for the balancer (the notification
/// and the file system's own work on a small operation).
pub const CALL_US: u64 = 20;

impl DfsaNode {
    /// Takes the calls counted by guest since the last call.
    pub fn take_calls(&self) -> std::collections::HashMap<i32, u64> {
        std::mem::take(&mut *self.by_guest.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes the guests' waits for their homes' files since the last call.
    pub fn take_home_waits(&self) -> std::collections::HashMap<i32, (NodeId, u64)> {
        std::mem::take(&mut *self.home_waits.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// DFSA under the MFS mount `mount`.
    pub fn new(
        mount: PathBuf,
        trust_root: bool,
        shared: Vec<PathBuf>,
        trap: Option<crate::mfs::trap::Trap>,
        held: Option<std::sync::Arc<crate::mfs::server::Held>>,
    ) -> DfsaNode {
        DfsaNode {
            mount,
            trust_root,
            shared,
            trap,
            held,
            opens: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            by_guest: Default::default(),
            home_waits: Default::default(),
        }
    }
}

/// Whose rights a guest with `creds` has on this node's files: its owner's, root squashed to
/// `nobody` as MFS squashes it unless `trust_root`.
pub(super) fn owner(creds: &Creds, trust_root: bool) -> User {
    let root = creds.uid[1] == 0 || creds.gid[1] == 0 || creds.groups.contains(&0);
    if root && !trust_root {
        User {
            uid: crate::mfs::server::NOBODY,
            gid: crate::mfs::server::NOBODY,
            groups: Vec::new(),
        }
    } else {
        User {
            uid: creds.uid[1],
            gid: creds.gid[1],
            groups: creds.groups.clone(),
        }
    }
}

/// Calls that return a new descriptor number.
fn returns_fd(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_open
            | libc::SYS_openat
            | libc::SYS_openat2
            | libc::SYS_creat
            | libc::SYS_dup
            | libc::SYS_dup2
            | libc::SYS_dup3
            | libc::SYS_fcntl
            | libc::SYS_socket
            | libc::SYS_accept
            | libc::SYS_accept4
            | libc::SYS_epoll_create1
            | libc::SYS_eventfd2
            | libc::SYS_memfd_create
            | libc::SYS_inotify_init1
            | libc::SYS_signalfd4
            | libc::SYS_timerfd_create
            | libc::SYS_pidfd_open
    )
}

/// `syscr + syscw` of process `pid` (`/proc/PID/io`): the read and write calls it ran.
fn rw_calls(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(field("syscr:")?.saturating_add(field("syscw:")?))
}

/// The flags of an open that are kept for the second open here.
fn here_flags(flags: i32) -> OFlag {
    let keep = OFlag::O_ACCMODE
        | OFlag::O_APPEND
        | OFlag::O_NONBLOCK
        | OFlag::O_DIRECT
        | OFlag::O_SYNC
        | OFlag::O_DSYNC
        | OFlag::O_NOATIME
        | OFlag::O_LARGEFILE
        | OFlag::O_DIRECTORY
        | OFlag::O_NOFOLLOW;
    (OFlag::from_bits_truncate(flags) & keep) | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

/// A guest's DFSA descriptors.
#[derive(Debug)]
pub(super) struct Dfsa {
    node: std::sync::Arc<DfsaNode>,
    /// The guest's pid here.
    pid: i32,
    /// `MOUNT/N/` and `MOUNT/here/`.
    prefixes: [Vec<u8>; 2],
    user: User,
    fds: HashSet<i32>,
    /// Numbers where a placeholder stands for a descriptor that stopped being DFSA.
    placeholders: HashSet<i32>,
    /// Descriptors home already described since the process came (whether adopted or not).
    examined: HashSet<i32>,
    /// The DFSA descriptors on file systems that are the same everywhere (`dfsa_paths`).
    everywhere: HashSet<i32>,
    /// Home files opened here through MFS at a number of the native range (see
    /// [`Dfsa::through_mfs`]): only their reads, writes, seeks and private mappings run
    /// here; home answers the questions about them on its own descriptor of the file.
    through: HashSet<i32>,
    /// Calls on this node's files run here since [`Dfsa::report_calls`].
    unreported: u64,
    /// The process's home, and the nanoseconds it waited there for calls on home's files
    /// since [`Dfsa::report_calls`].
    home: NodeId,
    home_wait_ns: u64,
    /// The copy of home's descriptor numbers and umask, for opens made here.
    pub(super) table: super::here::HomeTable,
    /// Descriptors opened here ([`super::here`]) that home holds only a placeholder for yet:
    /// the device and inode of their file here, and the path it was opened by.
    pending: std::collections::HashMap<i32, ((u64, u64), PathBuf)>,
    /// The process's real and effective ids are the same.
    pub(super) same_ids: bool,
    /// Its effective uid at home (as home's requests through MFS carry it).
    home_uid: u32,
    /// Opens and closes made here that home has not been told of yet, in order: they go home
    /// before anything else does ([`Dfsa::take_notices`]), and a close cancels the notice of
    /// an open still waiting (a file opened and closed between two trips home costs home
    /// nothing).
    notices: Vec<mosix_core::proto::ProcMsg>,
    /// The process's `RLIMIT_NOFILE` here, once read (forgotten after a call that may set it).
    nofile: Option<i64>,
    /// With native file I/O (the filter lets it run without a notification): the process's
    /// read and write calls (`syscr + syscw` of `/proc/PID/io`) when last counted, and those of
    /// them the supervisor let through itself since.
    native_io: Option<(u64, u64)>,
}

impl Dfsa {
    pub(super) fn new(
        node: std::sync::Arc<DfsaNode>,
        pid: i32,
        me: NodeId,
        home: NodeId,
        creds: &Creds,
    ) -> Dfsa {
        let m = node.mount.as_os_str().as_bytes();
        let prefixes = [
            [m, format!("/{}/", me.get()).as_bytes()].concat(),
            [m, b"/here/"].concat(),
        ];
        let user = owner(creds, node.trust_root);
        Dfsa {
            node,
            pid,
            prefixes,
            user,
            fds: HashSet::new(),
            placeholders: HashSet::new(),
            examined: HashSet::new(),
            everywhere: HashSet::new(),
            through: HashSet::new(),
            unreported: 0,
            home,
            home_wait_ns: 0,
            table: super::here::HomeTable::default(),
            pending: std::collections::HashMap::new(),
            same_ids: creds.uid[0] == creds.uid[1] && creds.gid[0] == creds.gid[1],
            home_uid: creds.uid[1],
            notices: Vec::new(),
            nofile: None,
            native_io: None,
        }
    }

    /// The filter lets the process's file I/O run natively from here on: its calls are counted
    /// from `/proc/PID/io` ([`Dfsa::count_native`]), from now (also to start again, leaving out
    /// what the kernel counted meanwhile).
    pub(super) fn native_io(&mut self) {
        self.native_io = Some((rw_calls(self.pid).unwrap_or(0), 0));
    }

    /// Counts the read and write calls the process made natively on its files here since the
    /// last time (the kernel counts every read and write call it runs; those the supervisor
    /// let through itself are counted already). Files of file systems declared the same
    /// everywhere cannot be told apart here: they count as this node's.
    pub(super) fn count_native(&mut self) {
        self.count_native_if(self.through.is_empty());
    }

    /// Counts the native calls since the last time as this node's whatever is open (a process
    /// with a tree of its own closed its home files natively, at a moment the supervisor does
    /// not know: their last calls count as this node's rather than all of this node's being
    /// lost).
    pub(super) fn count_native_all(&mut self) {
        self.count_native_if(true);
    }

    fn count_native_if(&mut self, mine: bool) {
        let Some((base, seen)) = self.native_io else {
            return;
        };
        let Some(now) = rw_calls(self.pid) else {
            return;
        };
        let native = now.saturating_sub(base).saturating_sub(seen);
        self.native_io = Some((now, 0));
        tracing::trace!(
            "DFSA: {native} native read and write calls ({} through MFS open)",
            self.through.len()
        );
        // With home files open through MFS the kernel's count mixes their calls with those on
        // this node's files: none is counted for this node then.
        if native > 0 && mine {
            self.node.calls.fetch_add(native, Ordering::Relaxed);
            self.unreported = self.unreported.saturating_add(native);
        }
    }

    /// A read or a write the process made natively on a placeholder (a descriptor of home's,
    /// `mfs::trap`): the kernel counted it, but it touched no file of this node.
    pub(super) fn native_not_here(&mut self) {
        if let Some((_, seen)) = &mut self.native_io {
            *seen += 1;
        }
    }

    /// Home is to be told that `fd` was opened here at `path` (its path at home).
    pub(super) fn notice_open(&mut self, fd: i32, path: Vec<u8>, flags: i32) {
        self.notices
            .push(mosix_core::proto::ProcMsg::OpenedHere { fd, path, flags });
    }

    /// Home is to be told that `fd` was closed here, unless it has not heard of its open yet.
    pub(super) fn notice_close(&mut self, fd: i32) {
        use mosix_core::proto::ProcMsg;
        let last = self.notices.iter().rposition(|m| {
            matches!(m, ProcMsg::OpenedHere { fd: f, .. } | ProcMsg::ClosedHere { fd: f } if *f == fd)
        });
        match last.map(|i| (i, &self.notices[i])) {
            Some((i, ProcMsg::OpenedHere { .. })) => {
                self.notices.remove(i);
            }
            _ => self.notices.push(ProcMsg::ClosedHere { fd }),
        }
    }

    /// The notices home has not had yet, to send before anything else.
    pub(super) fn take_notices(&mut self) -> Vec<mosix_core::proto::ProcMsg> {
        std::mem::take(&mut self.notices)
    }

    /// The process's limit on descriptors (`RLIMIT_NOFILE`, soft) as this kernel enforces it.
    pub(super) fn open_limit(&mut self) -> i64 {
        if let Some(n) = self.nofile {
            return n;
        }
        let n = std::fs::read_to_string(format!("/proc/{}/limits", self.pid))
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("Max open files"))?;
                let soft = l.split_whitespace().nth(3)?;
                Some(soft.parse().unwrap_or(i64::MAX))
            })
            .unwrap_or(i64::MAX);
        self.nofile = Some(n);
        n
    }

    /// A call that may have changed the process's limits ran.
    pub(super) fn limits_changed(&mut self) {
        self.nofile = None;
    }

    /// The ids file work here runs with.
    pub(super) fn user(&self) -> &User {
        &self.user
    }

    /// Counts time the process waited for home on a call on one of home's files.
    pub(super) fn waited_home(&mut self, d: std::time::Duration) {
        self.home_wait_ns = self
            .home_wait_ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts a path call run here on `local` (a file system declared the same everywhere is
    /// no reason to stay here).
    pub(super) fn count_here(&mut self, local: &Path) {
        self.node.calls.fetch_add(1, Ordering::Relaxed);
        if !self.node.shared.iter().any(|s| local.starts_with(s)) {
            self.unreported = self.unreported.saturating_add(1);
        }
    }

    /// Records `fd`, opened here at `local` by [`super::here`], as a DFSA descriptor home holds
    /// only a placeholder for (`id`: the device and inode of its file).
    pub(super) fn opened_alone(&mut self, fd: i32, local: &Path, id: (u64, u64)) {
        self.opened(fd, local);
        self.pending.insert(fd, (id, local.to_owned()));
    }

    /// Whether home must open the twin of `fd` through the file itself ([`Dfsa::hold`]) rather
    /// than by its path: a file of this node whose path no longer leads to it (removed,
    /// renamed, replaced, or never named: `O_TMPFILE`). Files of a file system the same
    /// everywhere are opened by their path at home, as before.
    pub(super) fn name_gone(&self, fd: i32) -> bool {
        let Some((id, local)) = self.pending.get(&fd) else {
            return false;
        };
        if self.everywhere.contains(&fd) {
            return false;
        }
        nix::sys::stat::stat(local).map_or(true, |s| (s.st_dev, s.st_ino) != *id)
    }

    /// Holds the process's own open file `fd` for home to open through MFS: the token of
    /// `MOUNT/.held/N/TOKEN`, opened by home for the process's owner only. `None` if the
    /// descriptor cannot be taken (the process is gone).
    pub(super) fn hold(&self, fd: i32) -> Option<u64> {
        let held = self.node.held.as_ref()?;
        let file = crate::kernel::seccomp::take_fd(self.pid, fd).ok()?;
        Some(held.put(self.home, self.home_uid, file))
    }

    /// Lets go of a token home has answered for.
    pub(super) fn unhold(&self, token: u64) {
        if let Some(h) = &self.node.held {
            h.forget(token);
        }
    }

    /// Whether home holds only a placeholder for `fd`.
    pub(super) fn is_pending(&self, fd: i32) -> bool {
        self.pending.contains_key(&fd)
    }

    /// Home holds the file of `fd` now.
    pub(super) fn twinned(&mut self, fd: i32) {
        self.pending.remove(&fd);
    }

    /// The descriptors home holds only a placeholder for whose file is `id`, of a file system
    /// the same everywhere (home opens them by their path).
    pub(super) fn pending_on_everywhere(&self, id: (u64, u64)) -> Vec<i32> {
        self.pending
            .iter()
            .filter(|(fd, (v, _))| *v == id && self.everywhere.contains(fd))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether any descriptor waits for its twin at home.
    pub(super) fn any_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The DFSA descriptors.
    pub(super) fn fds(&self) -> Vec<i32> {
        self.fds.iter().copied().collect()
    }

    /// Whether `fd` is a DFSA descriptor.
    pub(super) fn holds(&self, fd: i32) -> bool {
        self.fds.contains(&fd)
    }

    /// Forgets a descriptor (closed, or no longer DFSA).
    pub(super) fn forget(&mut self, fd: i32) {
        self.pending.remove(&fd);
        self.everywhere.remove(&fd);
        self.no_longer_through(fd);
        self.fds.remove(&fd);
    }

    /// Where a home file named `path` at home is opened here: its own path if it is a file of
    /// this node or of a file system the same everywhere ([`Dfsa::local_of`]), the same path if
    /// it is under the MFS mount (MFS names are the same on every node), else the path through
    /// MFS to home (`MOUNT/HOME/path`). The second member tells whether it is through MFS.
    pub(super) fn here_path_of(&self, path: &[u8]) -> Option<(PathBuf, bool)> {
        if let Some(local) = self.local_of(path) {
            return Some((local, false));
        }
        if !path.starts_with(b"/") || path.split(|&b| b == b'/').any(|c| c == b"..") {
            return None;
        }
        let p = Path::new(OsStr::from_bytes(path));
        if p.starts_with(&self.node.mount) {
            return Some((p.to_owned(), true));
        }
        let home = self.node.mount.join(self.home.get().to_string());
        Some((home.join(p.strip_prefix("/").ok()?), true))
    }

    /// Records `fd` as a home file opened here through MFS (`local`).
    pub(super) fn opened_through(&mut self, fd: i32, local: &Path) {
        // The calls so far were on this node's files only: counted before this one opens.
        self.count_native();
        self.examined.insert(fd);
        self.placeholders.remove(&fd);
        self.fds.insert(fd);
        self.everywhere.insert(fd);
        self.through.insert(fd);
        tracing::debug!("DFSA: descriptor {fd} is home's {} here", local.display());
    }

    /// `fd` is no home file through MFS any more: the calls made while it was are not
    /// counted for this node (the kernel's count cannot tell them apart).
    fn no_longer_through(&mut self, fd: i32) {
        if self.through.remove(&fd) && self.native_io.is_some() {
            self.native_io();
        }
    }

    /// Whether any home file is open here through MFS.
    pub(super) fn any_through(&self) -> bool {
        !self.through.is_empty()
    }

    /// The numbers where placeholders or stand-ins stand.
    pub(super) fn standing(&self) -> Vec<i32> {
        self.placeholders.iter().copied().collect()
    }

    /// Whether a placeholder or a stand-in stands at `fd` (home holds the real descriptor).
    pub(super) fn stands_in(&self, fd: i32) -> bool {
        self.placeholders.contains(&fd)
    }

    /// Whether `fd` is a home file opened here through MFS.
    pub(super) fn is_through(&self, fd: i32) -> bool {
        self.through.contains(&fd)
    }

    /// Whether a call on a home file opened here through MFS can go home as it is, to home's own
    /// descriptor of the same file: it asks about the file or acts on the file itself, never on
    /// this description's offset or flags.
    pub(super) fn asks_home(nr: i64, args: &[u64; 6]) -> bool {
        match nr {
            libc::SYS_fstat
            | libc::SYS_newfstatat
            | libc::SYS_statx
            | libc::SYS_fstatfs
            | libc::SYS_fsync
            | libc::SYS_fdatasync
            | libc::SYS_ftruncate
            | libc::SYS_fallocate
            | libc::SYS_fadvise64
            | libc::SYS_readahead
            | libc::SYS_flock => true,
            // The close-on-exec flag is home's descriptor's (`exec` runs at home).
            libc::SYS_fcntl => matches!(
                args[1] as i32,
                libc::F_GETFD
                    | libc::F_SETFD
                    | libc::F_GETFL
                    | libc::F_GETLK
                    | libc::F_SETLK
                    | libc::F_SETLKW
            ),
            libc::SYS_ioctl => matches!(args[1], libc::TCGETS | libc::FIOCLEX | libc::FIONCLEX),
            _ => false,
        }
    }

    /// Whether call `nr` runs natively here: it names a DFSA descriptor first and is known to
    /// be safe on it. `empty_path` tells whether the path argument of `newfstatat`/`statx` is
    /// empty (asked only for those).
    pub(super) fn native(
        &mut self,
        nr: i64,
        args: &[u64; 6],
        empty_path: impl FnOnce() -> bool,
    ) -> bool {
        let fd = if nr == libc::SYS_mmap {
            args[4]
        } else {
            args[0]
        } as i32;
        if !self.fds.contains(&fd) {
            return false;
        }
        if self.through.contains(&fd) {
            // A home file through MFS: its data and offset here, anything else at home.
            const MAP_SHARED_BIT: u64 = 0x1;
            let io = syscalls::is_native_io(nr)
                || nr == libc::SYS_lseek
                || (nr == libc::SYS_mmap && args[3] & MAP_SHARED_BIT == 0);
            return io;
        }
        let yes = syscalls::dfsa_native(nr as u64, args, empty_path);
        if yes
            && let Some((_, seen)) = &mut self.native_io
            && syscalls::is_native_io(nr)
        {
            *seen += 1;
        }
        if yes {
            self.node.calls.fetch_add(1, Ordering::Relaxed);
            // A file of a file system that is the same everywhere is no reason to stay here.
            if !self.everywhere.contains(&fd) {
                self.unreported = self.unreported.saturating_add(1);
            }
        }
        yes
    }

    /// Hands the calls counted since the last time to the node's balancer (about once a
    /// second, with the statistics: no lock on the path of every call).
    pub(super) fn report_calls(&mut self) {
        if self.home_wait_ns > 0 {
            let mut w = self
                .node
                .home_waits
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let e = w.entry(self.pid).or_insert((self.home, 0));
            e.1 = e.1.saturating_add(std::mem::take(&mut self.home_wait_ns));
        }
        if self.unreported > 0 {
            *self
                .node
                .by_guest
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(self.pid)
                .or_default() += std::mem::take(&mut self.unreported);
        }
    }

    /// The DFSA descriptors a call that does not run natively names: its descriptor arguments,
    /// a mapping's descriptor, and the number `dup2`/`dup3` would replace.
    pub(super) fn named_by(
        &self,
        nr: i64,
        args: &[u64; 6],
        shape: &[mosix_core::syscalls::Arg; 6],
    ) -> Vec<i32> {
        if self.fds.is_empty() {
            return Vec::new();
        }
        let mut v: Vec<i32> = shape
            .iter()
            .zip(args)
            .filter(|(a, _)| matches!(a, mosix_core::syscalls::Arg::Fd))
            .map(|(_, &x)| x as i32)
            .filter(|fd| self.fds.contains(fd))
            .collect();
        let extra = match nr {
            libc::SYS_dup2 | libc::SYS_dup3 => Some(args[1] as i32),
            libc::SYS_mmap => Some(args[4] as i32),
            _ => None,
        };
        if let Some(fd) = extra
            && self.fds.contains(&fd)
            && !v.contains(&fd)
        {
            v.push(fd);
        }
        v
    }

    /// A descriptor that call `nr` would run natively on if it were DFSA, and that home has
    /// not described yet since the process came (so: one it had before).
    pub(super) fn adoptable(&self, nr: i64, args: &[u64; 6]) -> Option<i32> {
        let fd = args[0] as i32;
        let io = syscalls::dfsa_adoptable(nr as u64);
        (io && fd >= 0 && !self.fds.contains(&fd) && !self.examined.contains(&fd)).then_some(fd)
    }

    /// Records that home was asked about `fd`.
    pub(super) fn examine(&mut self, fd: i32) {
        self.examined.insert(fd);
    }

    /// After a call home that may have closed or replaced descriptors: their numbers may name
    /// other files now.
    pub(super) fn numbers_changed(&mut self, nr: i64, args: &[u64; 6], ret: i64) {
        match nr {
            libc::SYS_close => {
                self.examined.remove(&(args[0] as i32));
            }
            libc::SYS_dup2 | libc::SYS_dup3 => {
                self.examined.remove(&(args[1] as i32));
            }
            libc::SYS_close_range => self.examined.clear(),
            _ => {}
        }
        if ret >= 0 && ret <= i64::from(i32::MAX) && returns_fd(nr) {
            self.examined.remove(&(ret as i32));
        }
    }

    /// The path here of a path at home under this node's directory of the mount, or on a file
    /// system declared the same on every node (`[mfs] dfsa_paths`: the same path).
    pub(super) fn local_of(&self, path: &[u8]) -> Option<PathBuf> {
        if path.starts_with(b"/") && !path.split(|&b| b == b'/').any(|c| c == b"..") {
            let p = Path::new(OsStr::from_bytes(path));
            if self.node.shared.iter().any(|s| p.starts_with(s)) {
                return Some(p.to_owned());
            }
        }
        let rest = self
            .prefixes
            .iter()
            .find_map(|p| path.strip_prefix(p.as_slice()))?;
        if rest.split(|&b| b == b'/').any(|c| c == b"..") {
            return None;
        }
        let mut local = b"/".to_vec();
        local.extend_from_slice(rest);
        Some(PathBuf::from(OsStr::from_bytes(&local)))
    }

    /// Opens `path` here as the process's owner, for the descriptor home just opened.
    pub(super) fn open_here(&self, path: &Path, flags: i32) -> Result<OwnedFd, Errno> {
        let fd = as_user(&self.user, || {
            nix::fcntl::open(path, here_flags(flags), Mode::empty())
        })?;
        Ok(fd)
    }

    /// Records that a placeholder stands at `fd` for a descriptor home holds, which may still
    /// be adopted here (a guest with a tree of its own: every number home uses holds one).
    pub(super) fn home_holds(&mut self, fd: i32) {
        self.placeholders.insert(fd);
    }

    /// Records that a placeholder (or a stand-in) stands at `fd`: home holds the descriptor,
    /// which is never adopted here.
    pub(super) fn placeholder_at(&mut self, fd: i32) {
        self.placeholders.insert(fd);
        self.examined.insert(fd);
    }

    /// Home closed `fd`: whether something stands at that number here to close as well.
    pub(super) fn closed(&mut self, fd: i32) -> bool {
        self.pending.remove(&fd);
        self.everywhere.remove(&fd);
        self.no_longer_through(fd);
        self.fds.remove(&fd) | self.placeholders.remove(&fd)
    }

    /// `close_range(first, last, flags)` ran at home: unless it only set close-on-exec
    /// (`CLOSE_RANGE_CLOEXEC`), the numbers in the range are free here too.
    pub(super) fn closed_range(&mut self, first: u64, last: u64, flags: u64) {
        const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;
        if flags & CLOSE_RANGE_CLOEXEC != 0 {
            return;
        }
        let (first, last) = (first as u32, last as u32);
        let inside = |fd: &i32| (first..=last).contains(&(*fd as u32));
        for fd in self.fds().into_iter().filter(inside) {
            self.closed(fd);
        }
        self.placeholders.retain(|fd| !inside(fd));
        self.examined.retain(|fd| !inside(fd));
    }

    /// Records `fd`, opened here at `local`, as a DFSA descriptor.
    pub(super) fn opened(&mut self, fd: i32, local: &Path) {
        if self.node.shared.iter().any(|s| local.starts_with(s)) {
            self.everywhere.insert(fd);
        } else {
            self.everywhere.remove(&fd);
        }
        self.examined.insert(fd);
        self.placeholders.remove(&fd);
        self.fds.insert(fd);
        self.node.opens.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dfsa() -> Dfsa {
        Dfsa::new(
            std::sync::Arc::new(DfsaNode::new(
                PathBuf::from("/mfs"),
                false,
                vec![PathBuf::from("/nfs")],
                None,
                None,
            )),
            1,
            NodeId::new(3).unwrap(),
            NodeId::new(1).unwrap(),
            &Creds::default(),
        )
    }

    #[test]
    fn only_this_nodes_files_without_dotdot_are_opened_here() {
        let d = dfsa();
        let c = |p: &str| d.local_of(p.as_bytes());
        assert_eq!(c("/mfs/3/srv/data"), Some(PathBuf::from("/srv/data")));
        assert_eq!(c("/mfs/here/srv/data"), Some(PathBuf::from("/srv/data")));
        assert_eq!(c("/mfs/2/srv/data"), None);
        assert_eq!(c("/mfs/33/srv/data"), None);
        assert_eq!(c("/mfs/3/srv/../../etc/shadow"), None);
        assert_eq!(
            c("/nfs/home/u/data"),
            Some(PathBuf::from("/nfs/home/u/data"))
        );
        assert_eq!(c("/nfsx/data"), None);
        assert_eq!(c("/nfs/../etc/shadow"), None);
        assert_eq!(c("srv/data"), None);
        assert_eq!(c("/srv/data"), None);
    }

    #[test]
    fn the_second_open_neither_creates_nor_truncates() {
        let f = here_flags(
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_APPEND,
        );
        assert!(f.contains(OFlag::O_RDWR | OFlag::O_APPEND | OFlag::O_CLOEXEC));
        assert!(!f.intersects(OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_TRUNC));
    }

    #[test]
    fn known_calls_run_here_and_others_name_the_descriptor() {
        let mut d = dfsa();
        d.opened(5, Path::new("/srv/x"));
        let args = |a0: u64, a1: u64| [a0, a1, 0, 0, 0, 0];
        assert!(d.native(libc::SYS_read, &args(5, 0), || false));
        assert!(!d.native(libc::SYS_read, &args(6, 0), || false));
        assert!(d.native(libc::SYS_fcntl, &args(5, libc::F_GETFL as u64), || false));
        assert!(!d.native(libc::SYS_fcntl, &args(5, libc::F_DUPFD as u64), || false));
        assert!(!d.native(libc::SYS_ioctl, &args(5, libc::FIOCLEX), || false));
        assert!(d.native(libc::SYS_ioctl, &args(5, libc::TCGETS), || false));
        let statx = [5, 0, libc::AT_EMPTY_PATH as u64, 0, 0, 0];
        assert!(d.native(libc::SYS_statx, &statx, || true));
        assert!(!d.native(libc::SYS_statx, &statx, || false));
        use mosix_core::syscalls::Arg::{Fd, Int, None as No};
        assert_eq!(
            d.named_by(libc::SYS_dup2, &args(1, 5), &[Fd, Int, No, No, No, No]),
            vec![5]
        );
        assert_eq!(
            d.named_by(libc::SYS_dup, &args(5, 0), &[Fd, No, No, No, No, No]),
            vec![5]
        );
        assert!(
            d.named_by(libc::SYS_dup, &args(4, 0), &[Fd, No, No, No, No, No])
                .is_empty()
        );
    }

    #[test]
    fn a_close_cancels_the_notice_of_an_open_home_has_not_heard_of() {
        use mosix_core::proto::ProcMsg;
        let mut d = dfsa();
        d.notice_open(3, b"/mfs/3/a".to_vec(), 0);
        d.notice_close(3);
        assert!(d.take_notices().is_empty());
        d.notice_open(3, b"/mfs/3/a".to_vec(), 0);
        let sent = d.take_notices();
        assert_eq!(sent.len(), 1);
        // Home heard of the open: the close must go, and a later open of the number too.
        d.notice_close(3);
        d.notice_open(3, b"/mfs/3/b".to_vec(), 0);
        d.notice_open(4, b"/mfs/3/c".to_vec(), 0);
        d.notice_close(3);
        let sent = d.take_notices();
        assert!(
            matches!(
                sent.as_slice(),
                [
                    ProcMsg::ClosedHere { fd: 3 },
                    ProcMsg::OpenedHere { fd: 4, .. }
                ]
            ),
            "{sent:?}"
        );
    }
}
