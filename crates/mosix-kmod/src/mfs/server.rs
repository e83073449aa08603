//! The owning side of MFS: requests of other nodes (and of this node's own mount, for
//! `/mfs/<this node>`) run here, each as its caller.
//!
//! Every path is resolved again at each request with the caller's ids and groups
//! ([`crate::kernel::creds::as_user`]), so the file system here checks the access as it would for
//! the caller logged in here: nothing runs with more rights than the caller has. Root from
//! another node is `nobody` unless `[mfs] trust_root`. What a session opened stays open here,
//! by handle, until it is released or the session ends (its last connection closed): an
//! unlinked file that some node still has open lives on until then.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mosix_core::NodeId;
use mosix_core::proto::FrameError;
use mosix_core::proto::mfs::{
    Attr, Caller, DirEntry, FsStats, MAX_DIR_BATCH, MAX_MFS_FRAME, MfsOp, MfsReply, MfsRequest,
    SetTime,
};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use tracing::{debug, warn};

use crate::kernel::creds::{User, as_user};
use crate::link::channel::{Conn, Duplex};

/// The uid and gid a squashed root runs as.
pub const NOBODY: u32 = 65534;

/// The errno of a node that refuses MFS service (`mosctl nomfs`): "Connection refused".
pub const REFUSED: Errno = Errno::ECONNREFUSED;

/// An open file or directory of a session.
#[derive(Debug)]
enum Handle {
    File(File),
    Dir(Mutex<DirStream>),
}

/// A directory being listed: its descriptor (the kernel keeps the position) and the index of
/// the next entry it will give.
#[derive(Debug)]
struct DirStream {
    fd: OwnedFd,
    next: u64,
    /// Entries read from the kernel and not yet given.
    pending: std::collections::VecDeque<DirEntry>,
    end: bool,
}

/// The files one session has open here.
#[derive(Debug, Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Handle>>>,
}

impl Handles {
    fn add(&self, h: Handle) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, Arc::new(h));
        id
    }

    fn get(&self, id: u64) -> Result<Arc<Handle>, Errno> {
        self.lock().get(&id).cloned().ok_or(Errno::EBADF)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Handle>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
struct SessionEntry {
    id: u64,
    handles: Arc<Handles>,
    conns: usize,
}

/// The threads doing owner-side work now, by thread id: a file request from one of them is
/// refused (it would wait for itself, see `client`'s notes).
#[derive(Debug, Default)]
pub struct Working(Mutex<std::collections::HashSet<i32>>);

impl Working {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<i32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether thread `tid` is doing owner-side work.
    pub fn contains(&self, tid: i32) -> bool {
        self.lock().contains(&tid)
    }

    /// Marks this thread as working until the guard is dropped.
    pub fn enter(&self) -> WorkingGuard<'_> {
        let tid = nix::unistd::gettid().as_raw();
        self.lock().insert(tid);
        WorkingGuard(self, tid)
    }
}

/// A thread doing owner-side work.
#[derive(Debug)]
pub struct WorkingGuard<'a>(&'a Working, i32);

impl Drop for WorkingGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Files guests of this node hold that their homes may open through MFS by a token
/// ([`MfsOp::OpenHeld`]): the guest's own open file, given to the guest's home, for the
/// guest's owner, once. A supervisor puts one here when home must open a file the process has
/// open here whose name no longer leads to it (`split::remote`, the twin of a DFSA
/// descriptor), and takes it back when home has answered.
#[derive(Debug, Default)]
pub struct Held {
    next: AtomicU64,
    files: Mutex<HashMap<u64, HeldFile>>,
}

#[derive(Debug)]
struct HeldFile {
    home: NodeId,
    uid: u32,
    file: OwnedFd,
}

impl HeldFile {
    /// Whether it is served to a request of node `from` (`None`: this node's own mount) by
    /// user `uid`: only its home's, by the process's user.
    fn serves(&self, from: Option<NodeId>, uid: u32) -> bool {
        Some(self.home) == from && self.uid == uid
    }
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, HeldFile>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `file` for node `home`'s requests by user `uid` (the uid the request carries, the
    /// process's own at home: the file is the process's, no more than it has); returns its
    /// token.
    pub fn put(&self, home: NodeId, uid: u32, file: OwnedFd) -> u64 {
        let token = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(token, HeldFile { home, uid, file });
        token
    }

    /// Lets go of a token (home opened it, or could not).
    pub fn forget(&self, token: u64) {
        self.lock().remove(&token);
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The status of a held file, for its home and owner only (anyone else: `ENOENT`, as if
    /// there were none).
    fn stat(&self, token: u64, from: Option<NodeId>, uid: u32) -> Result<MfsReply, Errno> {
        let g = self.lock();
        let h = g
            .get(&token)
            .filter(|h| h.serves(from, uid))
            .ok_or(Errno::ENOENT)?;
        Ok(MfsReply::Attr(attr_of(&nix::sys::stat::fstat(
            h.file.as_fd(),
        )?)))
    }

    /// Takes a held file for its home and owner: a handle of the session on the guest's open
    /// file itself (reads and writes go by offset; its flags are the guest's).
    fn open(
        &self,
        token: u64,
        from: Option<NodeId>,
        uid: u32,
        handles: &Handles,
    ) -> Result<MfsReply, Errno> {
        let mut g = self.lock();
        if !g.get(&token).is_some_and(|h| h.serves(from, uid)) {
            return Err(Errno::ENOENT);
        }
        let h = g.remove(&token).ok_or(Errno::ENOENT)?;
        drop(g);
        opened(handles, h.file)
    }
}

/// The owning side.
#[derive(Debug)]
pub struct Server {
    /// The threads serving requests now.
    pub working: Working,
    trust_root: bool,
    refusing: AtomicBool,
    sessions: Mutex<HashMap<NodeId, SessionEntry>>,
    /// Requests served for other nodes, and bytes read and written for them.
    pub served: AtomicU64,
    /// Bytes read and written for other nodes.
    pub bytes: AtomicU64,
    /// Files guests hold for their homes.
    pub held: Arc<Held>,
}

impl Server {
    /// A server; `trust_root` keeps other nodes' root as root.
    pub fn new(trust_root: bool) -> Server {
        Server {
            working: Working::default(),
            trust_root,
            refusing: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            served: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            held: Arc::default(),
        }
    }

    /// Starts or stops refusing every request (`mosctl nomfs` / `mfs`).
    pub fn set_refusing(&self, on: bool) {
        self.refusing.store(on, Ordering::Relaxed);
    }

    /// Whether it refuses.
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins a connection to `from`'s session `id`: a new session of the node replaces the old
    /// one (the node's service restarted; what the old one had open is closed).
    fn join(&self, from: NodeId, id: u64) -> Arc<Handles> {
        let mut s = self.sessions();
        let e = s.entry(from).or_insert_with(|| SessionEntry {
            id,
            handles: Arc::default(),
            conns: 0,
        });
        if e.id != id {
            debug!(
                "node {from} has a new MFS session: closing the {} files of the old one",
                e.handles.len()
            );
            *e = SessionEntry {
                id,
                handles: Arc::default(),
                conns: 0,
            };
        }
        e.conns += 1;
        Arc::clone(&e.handles)
    }

    fn leave(&self, from: NodeId, id: u64) {
        let mut s = self.sessions();
        if let Some(e) = s.get_mut(&from)
            && e.id == id
        {
            e.conns = e.conns.saturating_sub(1);
            if e.conns == 0 {
                let open = e.handles.len();
                if open > 0 {
                    warn!(
                        "MFS: the last connection of node {from} ended with {open} of its files open here; they are closed"
                    );
                }
                s.remove(&from);
            }
        }
    }

    /// Serves one file connection of `from` until it ends.
    pub fn serve(self: Arc<Self>, from: NodeId, session: u64, conn: Conn) {
        let mut d = match Duplex::new(conn) {
            Ok(d) => d,
            Err(e) => {
                warn!("MFS: cannot take the file connection of node {from}: {e}");
                return;
            }
        };
        let handles = self.join(from, session);
        let _working = self.working.enter();
        loop {
            let req: MfsRequest = match d.recv(MAX_MFS_FRAME) {
                Ok(r) => r,
                Err(FrameError::Closed) => break,
                Err(e) => {
                    warn!("MFS: closing the file connection of node {from}: {e}");
                    break;
                }
            };
            if let Err(e) = req.validate() {
                warn!("MFS: closing the file connection of node {from}: {e}");
                break;
            }
            let reply = self.execute(&req, &handles, Some(from));
            if let Err(e) = d.send(&reply) {
                debug!("MFS: the file connection of node {from} ended: {e}");
                break;
            }
        }
        self.leave(from, session);
    }

    /// Runs one request as its caller: `from` is the asking node, `None` for this node's own
    /// mount (whose root is this node's root).
    pub fn execute(&self, req: &MfsRequest, handles: &Handles, from: Option<NodeId>) -> MfsReply {
        if self.refusing() {
            return MfsReply::Err(REFUSED as i32);
        }
        let user = self.user(&req.caller, from.is_some());
        if from.is_some() {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
        let out = match &req.op {
            // Operations on what is already open need no ids: the access was checked at open.
            MfsOp::Read {
                handle,
                offset,
                size,
            } => read(handles, *handle, *offset, *size),
            MfsOp::Write {
                handle,
                offset,
                data,
            } => as_user(&user, || write(handles, *handle, *offset, data)),
            MfsOp::FStat { handle } => fstat(handles, *handle),
            MfsOp::Fsync { handle, datasync } => fsync(handles, *handle, *datasync),
            MfsOp::Release { handle } => release(handles, *handle),
            MfsOp::ReadDir { handle, offset } => readdir(handles, *handle, *offset),
            MfsOp::StatHeld { token } => self.held.stat(*token, from, req.caller.uid),
            MfsOp::OpenHeld { token } => self.held.open(*token, from, req.caller.uid, handles),
            op if op.paths().iter().any(|p| names_own_proc(p)) => Err(Errno::EACCES),
            op => as_user(&user, || path_op(op, handles)),
        };
        if from.is_some() {
            match &out {
                Ok(MfsReply::Data(d)) => self.bytes.fetch_add(d.len() as u64, Ordering::Relaxed),
                Ok(MfsReply::Written(n)) => self.bytes.fetch_add(u64::from(*n), Ordering::Relaxed),
                _ => 0,
            };
        }
        out.unwrap_or_else(|e| MfsReply::Err(e as i32))
    }

    /// The ids a caller's request runs with here.
    fn user(&self, c: &Caller, remote: bool) -> User {
        if remote && !self.trust_root && (c.uid == 0 || c.gid == 0 || c.groups.contains(&0)) {
            if c.uid == 0 {
                return User {
                    uid: NOBODY,
                    gid: NOBODY,
                    groups: Vec::new(),
                };
            }
            // A user in root's group keeps its uid but not the group.
            let gid = if c.gid == 0 { NOBODY } else { c.gid };
            return User {
                uid: c.uid,
                gid,
                groups: c.groups.iter().copied().filter(|&g| g != 0).collect(),
            };
        }
        User {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.clone(),
        }
    }
}

/// Whether `path` names the service's own entries in `/proc` (`self`, `thread-self`, its pid or
/// one of its threads' ids). A thread of the service reads them whatever ids it runs with (the
/// kernel lets a process see its own descriptors and maps), so a caller would see the
/// service's: they are refused (`EACCES`), as other users' would be.
pub fn names_own_proc(path: &[u8]) -> bool {
    let mut parts = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".");
    if parts.next() != Some(b"proc") {
        return false;
    }
    match parts.next() {
        Some(b"self" | b"thread-self") => true,
        Some(n) if !n.is_empty() && n.iter().all(u8::is_ascii_digit) => std::str::from_utf8(n)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(|id| {
                id == std::process::id() || Path::new(&format!("/proc/self/task/{id}")).exists()
            }),
        _ => false,
    }
}

fn p(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// The attributes of a `stat`.
pub fn attr_of(s: &libc::stat) -> Attr {
    Attr {
        ino: s.st_ino ^ (s.st_dev << 48),
        mode: s.st_mode,
        nlink: u32::try_from(s.st_nlink).unwrap_or(u32::MAX),
        uid: s.st_uid,
        gid: s.st_gid,
        rdev: s.st_rdev,
        size: u64::try_from(s.st_size).unwrap_or(0),
        blocks: u64::try_from(s.st_blocks).unwrap_or(0),
        blksize: u32::try_from(s.st_blksize).unwrap_or(4096),
        atime: (s.st_atime, u32::try_from(s.st_atime_nsec).unwrap_or(0)),
        mtime: (s.st_mtime, u32::try_from(s.st_mtime_nsec).unwrap_or(0)),
        ctime: (s.st_ctime, u32::try_from(s.st_ctime_nsec).unwrap_or(0)),
    }
}

fn lstat(path: &[u8]) -> Result<Attr, Errno> {
    nix::sys::stat::lstat(p(path)).map(|s| attr_of(&s))
}

fn file(handles: &Handles, id: u64) -> Result<Arc<Handle>, Errno> {
    let h = handles.get(id)?;
    match *h {
        Handle::File(_) => Ok(h),
        Handle::Dir(_) => Err(Errno::EISDIR),
    }
}

fn with_file<T>(
    handles: &Handles,
    id: u64,
    f: impl FnOnce(&File) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let h = file(handles, id)?;
    match &*h {
        Handle::File(file) => f(file),
        Handle::Dir(_) => Err(Errno::EISDIR),
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn read(handles: &Handles, id: u64, offset: u64, size: u32) -> Result<MfsReply, Errno> {
    with_file(handles, id, |f| {
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if got > 0 => {
                    debug!("MFS: short read after {got} bytes: {e}");
                    break;
                }
                Err(e) => return Err(io_errno(&e)),
            }
        }
        buf.truncate(got);
        Ok(MfsReply::Data(buf))
    })
}

fn write(handles: &Handles, id: u64, offset: u64, data: &[u8]) -> Result<MfsReply, Errno> {
    with_file(handles, id, |f| {
        let mut done = 0;
        while done < data.len() {
            match f.write_at(&data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // What was written is reported; the error comes at the next write, where the
                // kernel gives it again.
                Err(_) if done > 0 => break,
                Err(e) => return Err(io_errno(&e)),
            }
        }
        Ok(MfsReply::Written(u32::try_from(done).unwrap_or(u32::MAX)))
    })
}

fn fstat(handles: &Handles, id: u64) -> Result<MfsReply, Errno> {
    let h = handles.get(id)?;
    let s = match &*h {
        Handle::File(f) => nix::sys::stat::fstat(f.as_fd())?,
        Handle::Dir(d) => {
            let d = d.lock().unwrap_or_else(|p| p.into_inner());
            nix::sys::stat::fstat(d.fd.as_fd())?
        }
    };
    Ok(MfsReply::Attr(attr_of(&s)))
}

fn fsync(handles: &Handles, id: u64, datasync: bool) -> Result<MfsReply, Errno> {
    with_file(handles, id, |f| {
        if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        }
        .map_err(|e| io_errno(&e))?;
        Ok(MfsReply::Done)
    })
}

fn release(handles: &Handles, id: u64) -> Result<MfsReply, Errno> {
    let h = handles.lock().remove(&id).ok_or(Errno::EBADF)?;
    // The last holder closes; a close that fails (a file system that writes back at close)
    // is answered as the error of the release.
    if let Ok(Handle::File(f)) = Arc::try_unwrap(h) {
        let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
        // SAFETY: `fd` was just taken out of the only owner of the descriptor.
        if unsafe { libc::close(fd) } != 0 {
            return Err(Errno::last());
        }
    }
    Ok(MfsReply::Done)
}

/// Reads entries from a directory descriptor with getdents64.
fn getdents(fd: &OwnedFd, out: &mut std::collections::VecDeque<DirEntry>) -> Result<bool, Errno> {
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: getdents64(2) writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(Errno::last());
    }
    let n = n as usize;
    if n == 0 {
        return Ok(true);
    }
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    let mut at = 0;
    while at + 19 <= n {
        let ino = u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap_or_default());
        let reclen = usize::from(u16::from_ne_bytes(
            buf[at + 16..at + 18].try_into().unwrap_or_default(),
        ));
        let kind = buf[at + 18];
        if reclen < 19 || at + reclen > n {
            return Err(Errno::EIO);
        }
        let name = &buf[at + 19..at + reclen];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if !name.is_empty() {
            out.push_back(DirEntry {
                name: name.to_vec(),
                ino,
                kind,
            });
        }
        at += reclen;
    }
    Ok(false)
}

fn readdir(handles: &Handles, id: u64, offset: u64) -> Result<MfsReply, Errno> {
    let h = handles.get(id)?;
    let Handle::Dir(d) = &*h else {
        return Err(Errno::ENOTDIR);
    };
    let mut d = d.lock().unwrap_or_else(|p| p.into_inner());
    let d = &mut *d;
    if offset < d.next {
        // A listing begun again (rewinddir, or a seek back): from the start.
        nix::unistd::lseek(d.fd.as_fd(), 0, nix::unistd::Whence::SeekSet)?;
        d.next = 0;
        d.pending.clear();
        d.end = false;
    }
    while d.next < offset {
        if d.pending.pop_front().is_some() {
            d.next += 1;
        } else if d.end {
            break;
        } else {
            d.end = getdents(&d.fd, &mut d.pending)?;
        }
    }
    let mut entries = Vec::new();
    while entries.len() < MAX_DIR_BATCH {
        if let Some(e) = d.pending.pop_front() {
            d.next += 1;
            entries.push(e);
        } else if d.end {
            break;
        } else {
            d.end = getdents(&d.fd, &mut d.pending)?;
        }
    }
    Ok(MfsReply::Entries {
        entries,
        end: d.end && d.pending.is_empty(),
    })
}

fn timespec(t: Option<SetTime>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(SetTime::Now) => TimeSpec::UTIME_NOW,
        Some(SetTime::At(s, ns)) => TimeSpec::new(s, i64::from(ns)),
    }
}

fn open_flags(flags: i32) -> OFlag {
    // What a caller may not ask through MFS: a controlling terminal of the service, or a
    // descriptor kept across the service's exec.
    let f = OFlag::from_bits_truncate(flags) & !(OFlag::O_CREAT | OFlag::O_NOCTTY | OFlag::O_PATH);
    f | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

fn opened(handles: &Handles, fd: OwnedFd) -> Result<MfsReply, Errno> {
    let s = nix::sys::stat::fstat(fd.as_fd())?;
    let attr = attr_of(&s);
    let handle = handles.add(Handle::File(File::from(fd)));
    Ok(MfsReply::Opened { handle, attr })
}

/// The operations that resolve a path: run as the caller.
fn path_op(op: &MfsOp, handles: &Handles) -> Result<MfsReply, Errno> {
    Ok(match op {
        MfsOp::Stat { path } => MfsReply::Attr(lstat(path)?),
        MfsOp::ReadLink { path } => {
            MfsReply::Target(nix::fcntl::readlink(p(path))?.as_bytes().to_vec())
        }
        MfsOp::Access { path, mask } => {
            nix::unistd::faccessat(
                AT_FDCWD,
                p(path),
                nix::unistd::AccessFlags::from_bits_truncate(*mask),
                nix::fcntl::AtFlags::AT_EACCESS,
            )?;
            MfsReply::Done
        }
        MfsOp::Open { path, flags } => {
            let fd = nix::fcntl::open(p(path), open_flags(*flags), Mode::empty())?;
            opened(handles, fd)?
        }
        MfsOp::Create { path, flags, mode } => {
            let fd = nix::fcntl::open(
                p(path),
                open_flags(*flags) | OFlag::O_CREAT,
                Mode::from_bits_truncate(*mode & 0o7777),
            )?;
            opened(handles, fd)?
        }
        MfsOp::OpenDir { path } => {
            let fd = nix::fcntl::open(
                p(path),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let s = nix::sys::stat::fstat(fd.as_fd())?;
            let handle = handles.add(Handle::Dir(Mutex::new(DirStream {
                fd,
                next: 0,
                pending: Default::default(),
                end: false,
            })));
            MfsReply::Opened {
                handle,
                attr: attr_of(&s),
            }
        }
        MfsOp::SetAttr {
            path,
            handle,
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        } => {
            if let Some(h) = handle {
                // On the open file (`ftruncate`, or the file home holds for a guest): its name
                // may lead elsewhere now, or nowhere.
                return with_file(handles, *h, |f| {
                    let fd = f.as_fd();
                    if let Some(m) = mode {
                        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(m & 0o7777))?;
                    }
                    if uid.is_some() || gid.is_some() {
                        nix::unistd::fchown(
                            fd,
                            uid.map(nix::unistd::Uid::from_raw),
                            gid.map(nix::unistd::Gid::from_raw),
                        )?;
                    }
                    if let Some(sz) = size {
                        let len = i64::try_from(*sz).map_err(|_| Errno::EFBIG)?;
                        nix::unistd::ftruncate(fd, len)?;
                    }
                    if atime.is_some() || mtime.is_some() {
                        nix::sys::stat::futimens(fd, &timespec(*atime), &timespec(*mtime))?;
                    }
                    Ok(MfsReply::Attr(attr_of(&nix::sys::stat::fstat(fd)?)))
                });
            }
            if let Some(m) = mode {
                nix::sys::stat::fchmodat(
                    AT_FDCWD,
                    p(path),
                    Mode::from_bits_truncate(m & 0o7777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )?;
            }
            if uid.is_some() || gid.is_some() {
                nix::unistd::fchownat(
                    AT_FDCWD,
                    p(path),
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
            if let Some(sz) = size {
                let len = i64::try_from(*sz).map_err(|_| Errno::EFBIG)?;
                nix::unistd::truncate(p(path), len)?;
            }
            if atime.is_some() || mtime.is_some() {
                nix::sys::stat::utimensat(
                    AT_FDCWD,
                    p(path),
                    &timespec(*atime),
                    &timespec(*mtime),
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )?;
            }
            MfsReply::Attr(lstat(path)?)
        }
        MfsOp::Mkdir { path, mode } => {
            nix::unistd::mkdir(p(path), Mode::from_bits_truncate(*mode & 0o7777))?;
            MfsReply::Attr(lstat(path)?)
        }
        MfsOp::Mknod { path, mode } => {
            let kind = SFlag::from_bits_truncate(*mode & libc::S_IFMT);
            if kind != SFlag::S_IFREG && kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK {
                // Devices: MFS is mounted nodev, and a device node made for another node's
                // user would be this node's device.
                return Err(Errno::EPERM);
            }
            nix::sys::stat::mknod(p(path), kind, Mode::from_bits_truncate(*mode & 0o7777), 0)?;
            MfsReply::Attr(lstat(path)?)
        }
        MfsOp::Unlink { path } => {
            nix::unistd::unlink(p(path))?;
            MfsReply::Done
        }
        MfsOp::Rmdir { path } => {
            nix::unistd::unlinkat(AT_FDCWD, p(path), nix::unistd::UnlinkatFlags::RemoveDir)?;
            MfsReply::Done
        }
        MfsOp::Symlink { target, path } => {
            nix::unistd::symlinkat(p(target), AT_FDCWD, p(path))?;
            MfsReply::Attr(lstat(path)?)
        }
        MfsOp::Rename { from, to, flags } => {
            nix::fcntl::renameat2(
                AT_FDCWD,
                p(from),
                AT_FDCWD,
                p(to),
                nix::fcntl::RenameFlags::from_bits_truncate(*flags),
            )?;
            MfsReply::Done
        }
        MfsOp::Link { from, to } => {
            nix::unistd::linkat(
                AT_FDCWD,
                p(from),
                AT_FDCWD,
                p(to),
                nix::fcntl::AtFlags::empty(),
            )?;
            MfsReply::Attr(lstat(to)?)
        }
        MfsOp::Statfs { path } => {
            let s = nix::sys::statvfs::statvfs(p(path))?;
            MfsReply::Stats(FsStats {
                blocks: s.blocks(),
                bfree: s.blocks_free(),
                bavail: s.blocks_available(),
                files: s.files(),
                ffree: s.files_free(),
                bsize: u32::try_from(s.block_size()).unwrap_or(4096),
                namelen: u32::try_from(s.name_max()).unwrap_or(255),
                frsize: u32::try_from(s.fragment_size()).unwrap_or(4096),
            })
        }
        MfsOp::Read { .. }
        | MfsOp::Write { .. }
        | MfsOp::FStat { .. }
        | MfsOp::Fsync { .. }
        | MfsOp::Release { .. }
        | MfsOp::ReadDir { .. }
        | MfsOp::StatHeld { .. }
        | MfsOp::OpenHeld { .. } => return Err(Errno::EINVAL),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_own_proc_entries_are_known_however_named() {
        let me = std::process::id();
        assert!(names_own_proc(b"/proc/self/maps"));
        assert!(names_own_proc(b"//proc/./thread-self/fd"));
        assert!(names_own_proc(format!("/proc/{me}/fd").as_bytes()));
        assert!(names_own_proc(b"/proc/self"));
        assert!(!names_own_proc(b"/proc/1/status"));
        assert!(!names_own_proc(b"/proc/cpuinfo"));
        assert!(!names_own_proc(b"/srv/proc/self"));
    }

    #[test]
    fn a_held_file_is_served_once_to_its_home_for_its_user_and_to_no_one_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"held bytes").unwrap();
        let file: OwnedFd = File::open(&path).unwrap().into();
        // Its name is gone: only the held descriptor leads to it.
        std::fs::remove_file(&path).unwrap();
        let server = Server::new(false);
        let (home, other) = (NodeId::new(1).unwrap(), NodeId::new(2).unwrap());
        let token = server.held.put(home, 1000, file);
        let ask = |uid: u32, op: MfsOp, from: Option<NodeId>, handles: &Handles| {
            let req = MfsRequest {
                caller: Caller {
                    uid,
                    gid: uid,
                    groups: Vec::new(),
                },
                op,
            };
            server.execute(&req, handles, from)
        };
        let handles = Handles::default();
        let enoent = MfsReply::Err(libc::ENOENT);
        // Another node, another user, this node's own mount, another token: none.
        for (uid, from) in [(1000, Some(other)), (1001, Some(home)), (1000, None)] {
            assert_eq!(ask(uid, MfsOp::StatHeld { token }, from, &handles), enoent);
            assert_eq!(ask(uid, MfsOp::OpenHeld { token }, from, &handles), enoent);
        }
        let wrong = MfsOp::OpenHeld { token: token + 1 };
        assert_eq!(ask(1000, wrong, Some(home), &handles), enoent);
        assert!(handles.is_empty());
        // Its home, for its user: its status, then the file itself, once.
        let MfsReply::Attr(a) = ask(1000, MfsOp::StatHeld { token }, Some(home), &handles) else {
            panic!("no status");
        };
        assert_eq!((a.size, a.nlink), (10, 0));
        let MfsReply::Opened { handle, .. } =
            ask(1000, MfsOp::OpenHeld { token }, Some(home), &handles)
        else {
            panic!("not opened");
        };
        let read = MfsOp::Read {
            handle,
            offset: 5,
            size: 100,
        };
        assert_eq!(
            ask(1000, read, Some(home), &handles),
            MfsReply::Data(b"bytes".to_vec())
        );
        assert_eq!(
            ask(1000, MfsOp::OpenHeld { token }, Some(home), &handles),
            enoent
        );
        assert!(server.held.is_empty());
    }
}
