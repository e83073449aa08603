//! The trap: the root of a guest's tree of its own (`kernel::tree`), a FUSE file system served
//! by the node service that holds nothing but the directories leading to where this node's data
//! is mounted in the tree (`/mfs`, `/mfs/N`, `/mfs/here`…).
//!
//! A guest with a tree resolves its path calls in its own kernel. Those that stay within this
//! node's data run there, natively. Any other reaches the trap: every request a guest makes of
//! it, but the lookup of a directory on the way to the data, is sent back to the guest's
//! supervisor ([`SendBack`]), which makes the call again, notified (`kernel::again`), and answers
//! it as it answers the path calls of any guest: here as the owner when its paths are this
//! node's, else at home. So the trap never answers a question about a file itself: what the
//! guest sees of everything but its data is what home (or this node, through the supervisor's
//! checks) says. A read or a write of a placeholder (a number of home's) carries its size or
//! its bytes ([`Sent`]): the supervisor answers it itself when the bytes read ahead of home's
//! descriptor, or kept behind, can (`split::remote::tree`), which saves the stop under ptrace
//! that making it again takes.
//!
//! The directories of the skeleton are looked up once (their entries are kept for a year: the
//! data's mounts stand on them) and never shown: their attributes, an `open` or an `access` of
//! one, are sent back like anything else (attributes are kept for no time at all). Requests of
//! anyone but a guest (the node service opening a stand-in for a directory of home) get plain
//! answers: the skeleton, and refusals.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation,
    INodeNo, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use tracing::{debug, info};

/// How long the kernel keeps an entry of the skeleton: as long as it likes (a mount stands on
/// each of the data's directories; the skeleton never changes).
const SKELETON_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The name of the placeholder in the trap's root, for the node service and a stub (a guest's
/// lookup of it is sent back like any other name's).
pub const PLACEHOLDER: &str = ".mosix-placeholder";

/// The placeholder's inode: above any the skeleton can have.
const PLACEHOLDER_INO: u64 = 1 << 62;

/// A request of a guest to send back to its supervisor: the guest's pid (the caller's thread)
/// and the request.
pub struct SendBack {
    /// The caller.
    pub pid: i32,
    /// What it asked.
    pub request: Sent,
}

/// What a guest asked of its trap. A read or a write of a placeholder carries what the
/// supervisor needs to answer it itself (from the bytes read ahead of home's descriptor, or
/// by keeping the bytes behind); anything else can only be failed, and made again.
pub enum Sent {
    /// A read of `size` bytes of a placeholder.
    Read {
        /// The bytes asked.
        size: u32,
        /// Its answer.
        reply: ReplyData,
    },
    /// A write of `data` to a placeholder.
    Write {
        /// The bytes written.
        data: Vec<u8>,
        /// Its answer.
        reply: ReplyWrite,
    },
    /// Any other request: how to fail it.
    Other(Box<dyn FnOnce() + Send>),
}

impl Sent {
    /// Ends the request, failing it with `EINTR` (the guest then stops as its call returns).
    pub fn fail(self) {
        match self {
            Sent::Read { reply, .. } => reply.error(Errno::EINTR),
            Sent::Write { reply, .. } => reply.error(Errno::EINTR),
            Sent::Other(f) => f(),
        }
    }
}

impl std::fmt::Debug for SendBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBack").field("pid", &self.pid).finish()
    }
}

/// Where the requests of one guest wait for its supervisor, and the pipe that wakes it.
#[derive(Debug)]
pub struct Waiting {
    queue: Mutex<VecDeque<SendBack>>,
    /// The supervisor polls the read end.
    wake_rd: OwnedFd,
    wake_wr: OwnedFd,
}

impl Waiting {
    fn new() -> std::io::Result<Waiting> {
        let (rd, wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        Ok(Waiting {
            queue: Mutex::new(VecDeque::new()),
            wake_rd: rd,
            wake_wr: wr,
        })
    }

    /// What the supervisor polls (readable when requests wait).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake_rd.as_fd()
    }

    /// Takes every waiting request (and the wake-ups that announced them).
    pub fn take(&self) -> Vec<SendBack> {
        let mut b = [0u8; 64];
        while matches!(nix::unistd::read(&self.wake_rd, &mut b), Ok(n) if n > 0) {}
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect()
    }

    fn push(&self, s: SendBack) {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(s);
        let _ = nix::unistd::write(&self.wake_wr, &[1]);
    }
}

/// The guests the trap knows, by pid.
type Guests = Arc<Mutex<HashMap<i32, Arc<Waiting>>>>;

/// The directories of the skeleton: inode → (parent, name) and (parent, name) → inode.
#[derive(Debug, Default)]
struct Skeleton {
    children: HashMap<(u64, OsString), u64>,
    count: u64,
}

impl Skeleton {
    /// The skeleton leading to each of `dirs` (absolute, normal components only).
    fn of(dirs: &[&Path]) -> Skeleton {
        let mut s = Skeleton {
            children: HashMap::new(),
            count: 1,
        };
        for d in dirs {
            let mut at = INodeNo::ROOT.0;
            for c in d.components() {
                let Component::Normal(name) = c else {
                    continue;
                };
                let next = s.count + 1;
                let ino = *s.children.entry((at, name.to_os_string())).or_insert(next);
                s.count = s.count.max(ino);
                at = ino;
            }
        }
        s
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.children.get(&(parent, name.to_os_string())).copied()
    }

    fn has(&self, ino: u64) -> bool {
        ino == INodeNo::ROOT.0 || (2..=self.count).contains(&ino)
    }
}

/// The placeholder: a file anyone may open for reading and writing (the node service and a
/// stub, whose requests get plain answers), whose every read and write by a guest is sent back.
fn placeholder_attr() -> FileAttr {
    FileAttr {
        kind: FileType::RegularFile,
        perm: 0o666,
        nlink: 1,
        ..dir_attr(PLACEHOLDER_INO)
    }
}

fn dir_attr(ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0o555,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// The file system the kernel asks.
struct TrapFs {
    skeleton: Skeleton,
    guests: Guests,
}

impl TrapFs {
    /// The waiting room of the guest that made `req`, if a guest made it.
    fn guest(&self, req: &Request) -> Option<Arc<Waiting>> {
        let pid = req.pid() as i32;
        self.guests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&pid)
            .cloned()
    }

    /// Sends the request back to the guest's supervisor, if a guest made it; else returns
    /// `reply` for a plain answer.
    fn send_back<R: Failing>(&self, req: &Request, reply: R) -> Option<R> {
        match self.guest(req) {
            Some(w) => {
                w.push(SendBack {
                    pid: req.pid() as i32,
                    request: Sent::Other(Box::new(move || reply.fail(Errno::EINTR))),
                });
                None
            }
            None => Some(reply),
        }
    }

    /// Sends a read or a write of a placeholder back, as [`TrapFs::send_back`] does, with
    /// what the supervisor needs to answer it; returns `reply` if no guest made it.
    fn send_back_io<R>(&self, req: &Request, reply: R, sent: impl FnOnce(R) -> Sent) -> Option<R> {
        match self.guest(req) {
            Some(w) => {
                w.push(SendBack {
                    pid: req.pid() as i32,
                    request: sent(reply),
                });
                None
            }
            None => Some(reply),
        }
    }
}

/// The replies the trap fails.
trait Failing: Send + 'static {
    fn fail(self, e: Errno);
}

macro_rules! failing {
    ($($t:ty),*) => {$(
        impl Failing for $t {
            fn fail(self, e: Errno) {
                self.error(e);
            }
        }
    )*};
}
failing!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyWrite,
    ReplyEmpty,
    ReplyOpen,
    ReplyStatfs,
    ReplyXattr,
    ReplyCreate
);

impl Filesystem for TrapFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Some(ino) = self.skeleton.child(parent.0, name) {
            // A directory on the way to the data: its attributes are asked again each time
            // (and sent back), its entry is kept.
            reply.entry_with_ttls(
                &Duration::ZERO,
                &SKELETON_TTL,
                &dir_attr(ino),
                Generation(0),
            );
            return;
        }
        if let Some(r) = self.send_back(req, reply) {
            if parent == INodeNo::ROOT && name == PLACEHOLDER {
                // Not kept: a guest's next lookup of the name is asked again (and sent back).
                r.entry_with_ttls(
                    &Duration::ZERO,
                    &Duration::ZERO,
                    &placeholder_attr(),
                    Generation(0),
                );
            } else {
                r.error(Errno::ENOENT);
            }
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if let Some(r) = self.send_back(req, reply) {
            if self.skeleton.has(ino.0) {
                r.attr(&Duration::ZERO, &dir_attr(ino.0));
            } else if ino.0 == PLACEHOLDER_INO {
                r.attr(&Duration::ZERO, &placeholder_attr());
            } else {
                r.error(Errno::ENOENT);
            }
        }
    }

    fn setattr(
        &self,
        req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn readlink(&self, req: &Request, _ino: INodeNo, reply: ReplyData) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EINVAL);
        }
    }

    fn mknod(
        &self,
        req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn unlink(&self, req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn rmdir(&self, req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn symlink(
        &self,
        req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn rename(
        &self,
        req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn link(
        &self,
        req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Some(r) = self.send_back(req, reply) {
            if ino.0 == PLACEHOLDER_INO {
                // Direct: every read and write comes here, none stays in a cache. No flush at
                // a close: the node service holds placeholders too, and a service exiting
                // would wait for its own trap's answer to one (as for MFS's files).
                r.opened(
                    FileHandle(0),
                    fuser::FopenFlags::FOPEN_DIRECT_IO | fuser::FopenFlags::FOPEN_NOFLUSH,
                );
            } else {
                r.error(Errno::EACCES);
            }
        }
    }

    /// A read of a placeholder: a guest's is sent back (its supervisor answers it from what
    /// was read ahead of home's descriptor, or makes it again, notified, and it goes home,
    /// where the descriptor is); anyone else's fails.
    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        if let Some(r) = self.send_back_io(req, reply, |reply| Sent::Read { size, reply }) {
            r.error(Errno::EIO);
        }
    }

    /// A write to a placeholder, as [`TrapFs::read`].
    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let sent = |reply| Sent::Write {
            data: data.to_vec(),
            reply,
        };
        if let Some(r) = self.send_back_io(req, reply, sent) {
            r.error(Errno::EIO);
        }
    }

    /// A close of a placeholder, on a kernel that does not know `FOPEN_NOFLUSH`: nothing to
    /// do.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if let Some(r) = self.send_back(req, reply) {
            // The service itself: a stand-in for a directory of home.
            if self.skeleton.has(ino.0) {
                r.opened(FileHandle(0), fuser::FopenFlags::empty());
            } else {
                r.error(Errno::ENOENT);
            }
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if let Some(r) = self.send_back(req, reply) {
            r.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        }
    }

    fn getxattr(&self, req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::ENODATA);
        }
    }

    fn listxattr(&self, req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        if let Some(r) = self.send_back(req, reply) {
            r.size(0);
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        if let Some(r) = self.send_back(req, reply) {
            if self.skeleton.has(ino.0) {
                r.ok();
            } else {
                r.error(Errno::ENOENT);
            }
        }
    }

    fn create(
        &self,
        req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if let Some(r) = self.send_back(req, reply) {
            r.error(Errno::EPERM);
        }
    }
}

/// A node's trap: its mount (in the service's namespace, in a directory only root may enter)
/// and the guests whose requests it sends back.
pub struct Trap {
    at: std::path::PathBuf,
    guests: Guests,
    dirs: Vec<std::path::PathBuf>,
    _session: fuser::BackgroundSession,
}

impl std::fmt::Debug for Trap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trap")
            .field("at", &self.at)
            .field("dirs", &self.dirs)
            .finish_non_exhaustive()
    }
}

impl Trap {
    /// Mounts a trap at `at` (a directory made if need be, only root's) whose skeleton leads
    /// to each of `dirs` (absolute paths: where the data will be mounted in the trees). A trap
    /// a service before us left there is taken off first.
    pub fn start(at: &Path, dirs: &[&Path]) -> std::io::Result<Trap> {
        use rustix::mount::{
            FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_flag,
            fsconfig_set_string, fsmount, fsopen,
        };
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?;
        let dev: OwnedFd = dev.into();
        let fs = fsopen("fuse", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_set_string(&fs, "source", "mosix-trap")?;
        fsconfig_set_string(&fs, "fd", dev.as_raw_fd().to_string())?;
        fsconfig_set_string(&fs, "rootmode", "40000")?;
        fsconfig_set_string(&fs, "user_id", "0")?;
        fsconfig_set_string(&fs, "group_id", "0")?;
        fsconfig_set_flag(&fs, "allow_other")?;
        fsconfig_create(&fs)?;
        let mount = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )?;
        if super::fuse_mounted_at(at) {
            let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
        }
        std::fs::create_dir_all(at)?;
        std::fs::set_permissions(at, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        rustix::mount::move_mount(
            &mount,
            "",
            rustix::fs::CWD,
            at,
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )?;
        let guests: Guests = Arc::default();
        let fs = TrapFs {
            skeleton: Skeleton::of(dirs),
            guests: Arc::clone(&guests),
        };
        let mut config = fuser::Config::default();
        config.n_threads = Some(1);
        let session = fuser::Session::from_fd(fs, dev, fuser::SessionACL::All, config)?.spawn()?;
        info!(
            "the trap of guests' trees is at {} ({} data directories)",
            at.display(),
            dirs.len()
        );
        Ok(Trap {
            at: at.to_path_buf(),
            guests,
            dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
            _session: session,
        })
    }

    /// Where it is mounted (each tree binds it).
    pub fn at(&self) -> &Path {
        &self.at
    }

    /// Unmounts it (also done when it is dropped): detached at once; the trees that hold it
    /// keep it until their guests end.
    pub fn stop(&self) {
        if super::fuse_mounted_at(&self.at) {
            let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Where the data is mounted in a tree.
    pub fn dirs(&self) -> &[std::path::PathBuf] {
        &self.dirs
    }

    /// From now on the requests of guest `pid` are sent back to its supervisor, which polls
    /// what this returns.
    pub fn watch(&self, pid: i32) -> std::io::Result<Arc<Waiting>> {
        let w = Arc::new(Waiting::new()?);
        self.guests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pid, Arc::clone(&w));
        Ok(w)
    }

    /// Forgets guest `pid`: its requests still waiting are failed (`EIO`, as a reply dropped
    /// unanswered is), and later ones get plain answers.
    pub fn forget(&self, pid: i32) {
        let w = self
            .guests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&pid);
        if let Some(w) = w {
            let left = w.take();
            if !left.is_empty() {
                debug!(
                    "guest {pid}: {} requests of its trap left unanswered",
                    left.len()
                );
            }
        }
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skeleton_leads_to_each_data_directory_and_nowhere_else() {
        let s = Skeleton::of(&[
            Path::new("/mfs/3"),
            Path::new("/mfs/here"),
            Path::new("/data/shared"),
        ]);
        let mfs = s.child(1, OsStr::new("mfs")).unwrap();
        let three = s.child(mfs, OsStr::new("3")).unwrap();
        let here = s.child(mfs, OsStr::new("here")).unwrap();
        let data = s.child(1, OsStr::new("data")).unwrap();
        let shared = s.child(data, OsStr::new("shared")).unwrap();
        let all = [mfs, three, here, data, shared];
        for (i, a) in all.iter().enumerate() {
            assert!(s.has(*a));
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(s.child(1, OsStr::new("etc")).is_none());
        assert!(s.child(mfs, OsStr::new("1")).is_none());
        assert!(s.child(three, OsStr::new("srv")).is_none());
        assert!(!s.has(0) && !s.has(s.count + 1));
    }
}
