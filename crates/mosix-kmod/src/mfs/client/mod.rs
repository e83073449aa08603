//! The mount: a FUSE file system whose `N/path` is node N's `/path`.
//!
//! The root lists the nodes of the map by number, and `home` and `here`, symbolic links read
//! per caller (a link's target is asked at every walk: the kernel keeps no link targets of a
//! FUSE file system unless told to): `home` is the caller's home node, `here` the node it runs
//! on — for a process that runs away from home, whose path calls run at home in its deputy,
//! `here` is where it runs. A node's address and its host name as the map writes them are links
//! to its number too (found by lookup, not listed).
//!
//! Below a node, every request goes to that node's [`super::server::Server`] (this node's own
//! in-process, the others' over a file connection), with entry and attribute times of 0 and
//! direct I/O: the kernel here caches nothing, so what one node completed every node sees next.
//! An inode here is a (node, path) pair; the owner resolves the path again at each request.
//! Absolute targets of symbolic links at a node are shown below that node's directory (a
//! link to `/usr/lib` at node 3 reads as `/mfs/3/usr/lib`).
//!
//! A thread of the service doing owner-side work never enters the mount (its request is
//! refused with `ELOOP`): an owner resolving a path into its own `/mfs` would wait for itself.
//! Its other threads may (home describing a deputy's descriptor for DFSA looks at its file).

mod fs;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno as FErrno, FileAttr, FileHandle, FileType, Generation, INodeNo, ReplyEmpty, ReplyEntry,
    Request, TimeOrNow,
};
use mosix_core::NodeId;
use mosix_core::map::Host;
use mosix_core::proto::LinkMsg;
use mosix_core::proto::mfs::{
    Attr, Caller, MAX_MFS_FRAME, MfsOp, MfsReply, MfsRequest, PathBytes, SetTime,
};
use nix::errno::Errno;
use tracing::{debug, warn};

use super::server::{Handles, REFUSED, Server};
use crate::link::channel::Duplex;
use crate::link::{SharedContext, snapshot};

/// Where a process is, as the mount's `home` and `here` need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whereabouts {
    /// Its home node.
    pub home: NodeId,
    /// The node it runs on.
    pub here: NodeId,
}

/// Tells where the process with a pid (of this node) is.
pub type Locate = Arc<dyn Fn(i32) -> Whereabouts + Send + Sync>;

const ROOT: u64 = 1;
const HOME: u64 = 2;
const HERE: u64 = 3;
const SELECTED: u64 = 4;
/// `MOUNT/.held`: the files guests of other nodes hold for their homes (`MOUNT/.held/N/TOKEN`,
/// [`MfsOp::OpenHeld`]). Not listed; a host name cannot begin with a dot.
const HELD: u64 = 5;
/// The path of a node's directory of held files in the table of inodes, and the start of its
/// files' (`.held/TOKEN`): not absolute, so never a path of a node's files, and never sent.
const HELD_DIR: &[u8] = b".held";
/// Links named after a node's address or host name: this plus the node's number.
const ALIAS: u64 = 1 << 32;
/// The first inode given to a (node, path).
const FIRST_DYNAMIC: u64 = 1 << 33;

const TTL: Duration = Duration::ZERO;
/// Idle file connections kept per peer.
const KEEP_IDLE: usize = 8;

#[derive(Debug)]
struct Entry {
    node: NodeId,
    path: PathBytes,
    lookups: u64,
}

#[derive(Debug, Default)]
struct Inodes {
    next: u64,
    by_ino: HashMap<u64, Entry>,
    by_key: HashMap<(NodeId, PathBytes), u64>,
}

impl Inodes {
    fn get(&self, ino: u64) -> Option<(NodeId, PathBytes)> {
        self.by_ino.get(&ino).map(|e| (e.node, e.path.clone()))
    }

    /// The inode of (node, path), counted as one more lookup.
    fn intern(&mut self, node: NodeId, path: PathBytes) -> u64 {
        if let Some(&ino) = self.by_key.get(&(node, path.clone())) {
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.lookups += 1;
            }
            return ino;
        }
        let ino = FIRST_DYNAMIC + self.next;
        self.next += 1;
        self.by_key.insert((node, path.clone()), ino);
        self.by_ino.insert(
            ino,
            Entry {
                node,
                path,
                lookups: 1,
            },
        );
        ino
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.lookups = e.lookups.saturating_sub(n);
            if e.lookups == 0
                && let Some(e) = self.by_ino.remove(&ino)
            {
                self.by_key.remove(&(e.node, e.path));
            }
        }
    }

    /// A rename at `node`: every inode at or below `from` now lives below `to`.
    fn renamed(&mut self, node: NodeId, from: &[u8], to: &[u8]) {
        let moved: Vec<(u64, PathBytes)> = self
            .by_ino
            .iter()
            .filter(|(_, e)| e.node == node && under(&e.path, from))
            .map(|(&ino, e)| (ino, [to, &e.path[from.len()..]].concat()))
            .collect();
        for (ino, new) in moved {
            if let Some(e) = self.by_ino.get_mut(&ino) {
                self.by_key.remove(&(e.node, std::mem::take(&mut e.path)));
                e.path.clone_from(&new);
                // An inode already at the new path (the target replaced) loses its name.
                if let Some(old) = self.by_key.insert((node, new), ino)
                    && old != ino
                    && let Some(o) = self.by_ino.get_mut(&old)
                {
                    // Its requests now fail with ESTALE (see `MfsClient::call`).
                    o.path = Vec::new();
                }
            }
        }
    }
}

/// If the relative target `t` of the link at `link` (a path at its node) climbs above the
/// node's root with `..`, the absolute path at the node it resolves to there.
fn climbs_above_root(link: &[u8], t: &[u8]) -> Option<Vec<u8>> {
    let parent = &link[..link.iter().rposition(|&b| b == b'/').unwrap_or(0)];
    let mut parts: Vec<&[u8]> = parent
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut climbed = false;
    for c in t.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => climbed |= parts.pop().is_none(),
            c => parts.push(c),
        }
    }
    climbed.then(|| {
        let mut out = Vec::new();
        for p in &parts {
            out.push(b'/');
            out.extend_from_slice(p);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    })
}

fn under(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

fn child(dir: &[u8], name: &[u8]) -> PathBytes {
    if dir == b"/" {
        [b"/", name].concat()
    } else {
        [dir, b"/", name].concat()
    }
}

/// Counters of the mount.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Requests sent to other nodes.
    pub remote_requests: AtomicU64,
    /// Bytes read and written through other nodes.
    pub remote_bytes: AtomicU64,
    /// Time each process (by pid) waited for other nodes' files since the balancer last
    /// looked, by node, in nanoseconds: where its data is.
    waits: Mutex<HashMap<i32, HashMap<NodeId, u64>>>,
}

impl ClientStats {
    fn waited(&self, pid: i32, node: NodeId, ns: u64) {
        let mut w = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        *w.entry(pid).or_default().entry(node).or_default() += ns;
    }

    /// Takes the waits recorded since the last call.
    pub fn take_waits(&self) -> HashMap<i32, HashMap<NodeId, u64>> {
        std::mem::take(&mut *self.waits.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

thread_local! {
    /// The process the mount thread is serving now (set from the request), for the waits.
    static CALLER: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// The FUSE file system.
pub struct MfsClient {
    me: NodeId,
    mount: PathBuf,
    link: SharedContext,
    session: u64,
    server: Arc<Server>,
    own: Arc<Handles>,
    locate: Locate,
    my_pid: i32,
    inodes: Mutex<Inodes>,
    idle: Mutex<HashMap<NodeId, Vec<Duplex>>>,
    /// The handles of open files, by inode: the kernel asks the attributes of an open file by
    /// its inode (`fstat`), and a file unlinked since is only reached through a handle.
    open: Mutex<HashMap<u64, Vec<u64>>>,
    /// When each node's refusal or absence was last logged.
    said: Mutex<HashMap<(NodeId, i32), std::time::Instant>>,
    /// Counters.
    pub stats: Arc<ClientStats>,
}

impl std::fmt::Debug for MfsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfsClient")
            .field("me", &self.me)
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

fn fe(e: Errno) -> FErrno {
    FErrno::from_i32(e as i32)
}

fn time(t: (i64, u32)) -> SystemTime {
    if t.0 >= 0 {
        UNIX_EPOCH + Duration::new(t.0.unsigned_abs(), t.1)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.0.unsigned_abs()) + Duration::from_nanos(u64::from(t.1))
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dt(dt: u8) -> FileType {
    match dt {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn file_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: kind_of(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

fn synthetic(ino: u64, kind: FileType, perm: u16, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

thread_local! {
    /// The process of each thread that made a request of this mount thread, for requests on
    /// open files, which need no groups (the owner checked the access at the open): one read
    /// of `/proc` per thread, not per read or write.
    static TGIDS: std::cell::RefCell<HashMap<u32, i32>> = std::cell::RefCell::new(HashMap::new());
}

/// The caller of a request on an open file: its ids without groups (not used by the owner for
/// reads, writes, syncs, listings and closes), and its process remembered for the waits.
fn handle_caller(req: &Request) -> Caller {
    let tid = req.pid();
    let tgid = TGIDS.with(|m| {
        let mut m = m.borrow_mut();
        if let Some(t) = m.get(&tid) {
            return *t;
        }
        let t = std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Tgid:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(tid as i32);
        // Bounded: thread ids are reused, and a stale entry only misplaces a wait.
        if m.len() >= 4096 {
            m.clear();
        }
        m.insert(tid, t);
        t
    });
    CALLER.set(tgid);
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        groups: Vec::new(),
    }
}

/// What `/proc/TID/status` says of a caller: its process and its groups.
fn caller_of(req: &Request) -> (i32, Caller) {
    let tid = req.pid();
    let mut tgid = tid as i32;
    CALLER.set(tgid);
    let mut groups = Vec::new();
    if tid != 0
        && let Ok(s) = std::fs::read_to_string(format!("/proc/{tid}/status"))
    {
        for line in s.lines() {
            if let Some(v) = line.strip_prefix("Tgid:") {
                tgid = v.trim().parse().unwrap_or(tgid);
            } else if let Some(v) = line.strip_prefix("Groups:") {
                groups = v
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect();
            }
        }
    }
    CALLER.set(tgid);
    (
        tgid,
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            groups,
        },
    )
}

fn to_settime(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (s, ns) = (d.as_secs() as i64, d.subsec_nanos());
                if ns == 0 {
                    SetTime::At(-s, 0)
                } else {
                    SetTime::At(-s - 1, 1_000_000_000 - ns)
                }
            }
        },
    })
}

/// Whether `path` (of the table of inodes) is of a node's directory of held files.
fn is_held(path: &[u8]) -> bool {
    path.starts_with(HELD_DIR) && matches!(path.get(HELD_DIR.len()), None | Some(b'/'))
}

/// A request on a path of the held files ([`HELD`]) as it goes to the owner: a `stat` or an
/// open of one by its token; the directory's own `stat` and `access` are answered here. The
/// rest is refused (`EPERM`): a held file has no name to remove, rename or list. `Ok` with
/// any other request as it is.
fn held_op(op: MfsOp) -> Result<MfsOp, Result<MfsReply, Errno>> {
    let Some(path) = op.paths().first().map(|p| p.to_vec()) else {
        return Ok(op);
    };
    if !is_held(&path) {
        return Ok(op);
    }
    let token = path
        .strip_prefix(HELD_DIR)
        .and_then(|t| t.strip_prefix(b"/"))
        .and_then(|t| std::str::from_utf8(t).ok())
        .map(|t| t.parse::<u64>().map_err(|_| Errno::ENOENT));
    match (op, token) {
        (MfsOp::Stat { .. }, None) => Err(Ok(MfsReply::Attr(Attr {
            mode: libc::S_IFDIR | 0o555,
            nlink: 2,
            ..Attr::default()
        }))),
        (MfsOp::Access { mask, .. }, None) if mask & libc::W_OK == 0 => Err(Ok(MfsReply::Done)),
        (MfsOp::Stat { .. }, Some(t)) => t.map(|token| MfsOp::StatHeld { token }).map_err(Err),
        (MfsOp::Open { .. }, Some(t)) => t.map(|token| MfsOp::OpenHeld { token }).map_err(Err),
        (
            mut op @ MfsOp::SetAttr {
                handle: Some(_), ..
            },
            Some(_),
        ) => {
            // Done on the handle; the path is not used.
            if let MfsOp::SetAttr { path, .. } = &mut op {
                *path = b"/".to_vec();
            }
            Ok(op)
        }
        _ => Err(Err(Errno::EPERM)),
    }
}

/// Whether a request may be sent again on a new connection when the old one broke before
/// the answer: it changes nothing at the owner.
fn repeatable(op: &MfsOp) -> bool {
    matches!(
        op,
        MfsOp::Stat { .. }
            | MfsOp::StatHeld { .. }
            | MfsOp::ReadLink { .. }
            | MfsOp::Access { .. }
            | MfsOp::Statfs { .. }
            | MfsOp::OpenDir { .. }
    )
}

impl MfsClient {
    /// The file system of node `me`, mounted at `mount`.
    pub fn new(
        me: NodeId,
        mount: PathBuf,
        link: SharedContext,
        server: Arc<Server>,
        locate: Locate,
    ) -> MfsClient {
        let mut session = [0u8; 8];
        let _ = getrandom::fill(&mut session);
        MfsClient {
            me,
            mount,
            link,
            session: u64::from_ne_bytes(session),
            server,
            own: Arc::default(),
            locate,
            my_pid: std::process::id() as i32,
            inodes: Mutex::new(Inodes::default()),
            idle: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            said: Mutex::new(HashMap::new()),
            stats: Arc::default(),
        }
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node a root entry names: its number, an address or a host name of the map.
    fn node_named(&self, name: &[u8]) -> Option<NodeId> {
        let name = std::str::from_utf8(name).ok()?;
        let ctx = snapshot(&self.link);
        if let Ok(n) = name.parse::<u16>() {
            return NodeId::new(n).filter(|n| ctx.map.contains(*n));
        }
        None.or_else(|| {
            let a: Ipv4Addr = name.parse().ok()?;
            ctx.map.node_of(a)
        })
        .or_else(|| {
            ctx.map.ranges().iter().find_map(|r| match &r.host {
                Host::Name(h) if h == name && r.count == 1 => Some(r.first),
                _ => None,
            })
        })
    }

    fn say_once(&self, node: NodeId, errno: i32, what: impl FnOnce() -> String) {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let last = said.get(&(node, errno));
        if last.is_none_or(|t| now.duration_since(*t) > Duration::from_secs(60)) {
            said.insert((node, errno), now);
            warn!("{}", what());
        }
    }

    /// Sends one request to `node` (this node's own in-process) and returns its answer.
    fn call(&self, node: NodeId, caller: Caller, op: MfsOp) -> Result<MfsReply, Errno> {
        let op = match held_op(op) {
            Ok(op) => op,
            Err(r) => return r,
        };
        let req = MfsRequest { caller, op };
        // A request the owner would refuse is not sent: an inode whose name another request
        // took (a rename over it) has no path any more, and a path over `MAX_PATH` is too long.
        if req.validate().is_err() {
            let stale = req.op.paths().iter().any(|p| p.is_empty());
            return Err(if stale {
                Errno::ESTALE
            } else {
                Errno::ENAMETOOLONG
            });
        }
        let reply = if node == self.me {
            let _working = self.server.working.enter();
            self.server.execute(&req, &self.own, None)
        } else {
            self.stats.remote_requests.fetch_add(1, Ordering::Relaxed);
            if let MfsOp::Write { data, .. } = &req.op {
                self.stats
                    .remote_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            let t = std::time::Instant::now();
            let r = self.remote(node, &req);
            let pid = CALLER.get();
            if pid > 0 {
                self.stats.waited(pid, node, t.elapsed().as_nanos() as u64);
            }
            let r = r?;
            if let MfsReply::Data(d) = &r {
                self.stats
                    .remote_bytes
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            r
        };
        match reply {
            MfsReply::Err(e) => {
                if e == REFUSED as i32 {
                    self.say_once(node, e, || {
                        format!("MFS: node {node} refuses file service (mosctl nomfs there)")
                    });
                }
                Err(Errno::from_raw(e))
            }
            r => Ok(r),
        }
    }

    fn take_conn(&self, node: NodeId) -> Option<Duplex> {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&node)
            .and_then(Vec::pop)
    }

    fn put_conn(&self, node: NodeId, d: Duplex) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let v = idle.entry(node).or_default();
        if v.len() < KEEP_IDLE {
            v.push(d);
        }
    }

    fn connect(&self, node: NodeId) -> Result<Duplex, Errno> {
        let ctx = snapshot(&self.link);
        let conn = crate::link::connect_blocking(
            node,
            &ctx,
            &LinkMsg::OpenFiles {
                session: self.session,
            },
        )
        .map_err(|e| {
            self.say_once(node, libc::EHOSTDOWN, || {
                format!("MFS: cannot reach node {node}: {e}")
            });
            Errno::EHOSTDOWN
        })?;
        Duplex::new(conn).map_err(|e| {
            warn!("MFS: the connection to node {node}: {e}");
            Errno::EIO
        })
    }

    fn remote(&self, node: NodeId, req: &MfsRequest) -> Result<MfsReply, Errno> {
        let mut reused = true;
        let mut d = match self.take_conn(node) {
            Some(d) => d,
            None => {
                reused = false;
                self.connect(node)?
            }
        };
        loop {
            let answer = d.send(req).and_then(|()| d.recv::<MfsReply>(MAX_MFS_FRAME));
            match answer.and_then(|r| r.validate().map(|()| r)) {
                Ok(r) => {
                    self.put_conn(node, d);
                    return Ok(r);
                }
                Err(e) if reused && repeatable(&req.op) => {
                    debug!(
                        "MFS: an idle connection to node {node} had ended ({e}); again on a new one"
                    );
                    reused = false;
                    d = self.connect(node)?;
                }
                Err(e) => {
                    self.say_once(node, libc::EIO, || {
                        format!("MFS: the file connection to node {node} failed: {e}")
                    });
                    return Err(Errno::EIO);
                }
            }
        }
    }

    /// The node and path of an inode below a node's directory.
    fn at(&self, ino: INodeNo) -> Result<(NodeId, PathBytes), Errno> {
        self.inodes().get(ino.0).ok_or(Errno::ENOENT)
    }

    /// Refuses the threads doing owner-side work (see the module's notes).
    fn who(&self, req: &Request) -> Result<(i32, Caller), Errno> {
        let (tgid, c) = caller_of(req);
        if tgid == self.my_pid && self.server.working.contains(req.pid() as i32) {
            return Err(Errno::ELOOP);
        }
        Ok((tgid, c))
    }

    /// What a link of the root says for process `tgid`: `home`, `here`, `selected` (none if it
    /// selected no node), or a node's address or name.
    fn link_target(&self, ino: u64, tgid: i32) -> Option<Vec<u8>> {
        let n = match ino {
            HOME => (self.locate)(tgid).home,
            HERE => (self.locate)(tgid).here,
            SELECTED => self.node_named(&selected(tgid)?)?,
            _ if (ALIAS..FIRST_DYNAMIC).contains(&ino) => NodeId::new((ino - ALIAS) as u16)?,
            _ => return None,
        };
        Some(n.get().to_string().into_bytes())
    }

    fn entry_at(&self, node: NodeId, path: PathBytes, a: &Attr) -> FileAttr {
        let ino = self.inodes().intern(node, path);
        file_attr(ino, a)
    }

    fn lookup_root(&self, name: &[u8]) -> Result<FileAttr, Errno> {
        match name {
            b"home" => return Ok(synthetic(HOME, FileType::Symlink, 0o777, 8)),
            b"here" => return Ok(synthetic(HERE, FileType::Symlink, 0o777, 8)),
            b"selected" => return Ok(synthetic(SELECTED, FileType::Symlink, 0o777, 8)),
            b".held" => return Ok(synthetic(HELD, FileType::Directory, 0o555, 0)),
            _ => {}
        }
        let node = self.node_named(name).ok_or(Errno::ENOENT)?;
        if name == node.get().to_string().as_bytes() {
            let ino = self.inodes().intern(node, b"/".to_vec());
            Ok(synthetic(ino, FileType::Directory, 0o755, 0))
        } else {
            Ok(synthetic(
                ALIAS + u64::from(node.get()),
                FileType::Symlink,
                0o777,
                8,
            ))
        }
    }

    /// `MOUNT/.held/N`: node N's held files.
    fn lookup_held(&self, name: &[u8]) -> Result<FileAttr, Errno> {
        let node = std::str::from_utf8(name)
            .ok()
            .and_then(|n| n.parse::<u16>().ok())
            .and_then(NodeId::new)
            .filter(|n| snapshot(&self.link).map.contains(*n))
            .ok_or(Errno::ENOENT)?;
        let ino = self.inodes().intern(node, HELD_DIR.to_vec());
        Ok(synthetic(ino, FileType::Directory, 0o555, 0))
    }

    fn reply_entry(&self, reply: ReplyEntry, r: Result<FileAttr, Errno>) {
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(fe(e)),
        }
    }

    /// A new entry (mkdir, symlink, …) from the owner's attributes.
    fn made(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        op: impl FnOnce(PathBytes) -> MfsOp,
    ) -> Result<FileAttr, Errno> {
        let (_, caller) = self.who(req)?;
        let (node, dir) = self.at(parent)?;
        let path = child(&dir, name.as_bytes());
        match self.call(node, caller, op(path.clone()))? {
            MfsReply::Attr(a) => Ok(self.entry_at(node, path, &a)),
            _ => Err(Errno::EIO),
        }
    }

    /// An entry removed (unlink, rmdir) at its owner.
    fn removed(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        op: impl FnOnce(PathBytes) -> MfsOp,
    ) -> Result<MfsReply, Errno> {
        let (_, caller) = self.who(req)?;
        let (node, dir) = self.at(parent)?;
        self.call(node, caller, op(child(&dir, name.as_bytes())))
    }

    fn done(&self, r: Result<MfsReply, Errno>, reply: ReplyEmpty) {
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(fe(e)),
        }
    }
}

impl MfsClient {
    fn opened(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<u64>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release_handle(&self, req: &Request, ino: INodeNo, fh: FileHandle, reply: ReplyEmpty) {
        let r = (|| {
            let (node, path) = self.at(ino)?;
            let caller = handle_caller(req);
            self.call(node, caller, MfsOp::Release { handle: fh.0 })
                .inspect_err(|e| {
                    // The program closed long ago: say at least here what went wrong.
                    warn!(
                        "MFS: closing {} at node {node} failed: {e}",
                        String::from_utf8_lossy(&path)
                    );
                })
        })();
        self.done(r, reply);
    }
}

/// The node process `tgid` selected: its `MOSIX_SELECTED` environment variable as it started
/// (children inherit it; `/proc/self/selected` of MOSIX has no place in this kernel's `/proc`).
fn selected(tgid: i32) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut env = Vec::new();
    std::fs::File::open(format!("/proc/{tgid}/environ"))
        .ok()?
        .take(256 << 10)
        .read_to_end(&mut env)
        .ok()?;
    env.split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"MOSIX_SELECTED="))
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_files_are_asked_by_token_and_nothing_else_is_asked_of_them() {
        let stat = |p: &[u8]| MfsOp::Stat { path: p.to_vec() };
        let open = |p: &[u8]| MfsOp::Open {
            path: p.to_vec(),
            flags: libc::O_RDWR,
        };
        // A path of a node's files goes as it is.
        assert_eq!(held_op(stat(b"/.held/7")), Ok(stat(b"/.held/7")));
        assert_eq!(held_op(stat(b".helder")), Ok(stat(b".helder")));
        assert_eq!(held_op(stat(b".held/7")), Ok(MfsOp::StatHeld { token: 7 }));
        assert_eq!(held_op(open(b".held/7")), Ok(MfsOp::OpenHeld { token: 7 }));
        assert!(matches!(
            held_op(stat(b".held")),
            Err(Ok(MfsReply::Attr(a))) if a.mode & libc::S_IFMT == libc::S_IFDIR
        ));
        assert_eq!(held_op(stat(b".held/x")), Err(Err(Errno::ENOENT)));
        for op in [
            MfsOp::Unlink {
                path: b".held/7".to_vec(),
            },
            MfsOp::OpenDir {
                path: b".held".to_vec(),
            },
            MfsOp::Rename {
                from: b".held/7".to_vec(),
                to: b"/x".to_vec(),
                flags: 0,
            },
            MfsOp::Create {
                path: b".held/8".to_vec(),
                flags: 0,
                mode: 0o600,
            },
        ] {
            assert_eq!(held_op(op), Err(Err(Errno::EPERM)));
        }
        // A size set on the handle home has: done on it, with no path.
        let set = |handle| MfsOp::SetAttr {
            path: b".held/7".to_vec(),
            handle,
            mode: None,
            uid: None,
            gid: None,
            size: Some(3),
            atime: None,
            mtime: None,
        };
        let Ok(MfsOp::SetAttr { path, handle, .. }) = held_op(set(Some(9))) else {
            panic!("not sent");
        };
        assert_eq!((path, handle), (b"/".to_vec(), Some(9)));
        assert_eq!(held_op(set(None)), Err(Err(Errno::EPERM)));
    }

    #[test]
    fn a_relative_link_that_climbs_above_the_nodes_root_is_shown_as_what_it_means_there() {
        assert_eq!(climbs_above_root(b"/a/b/l", b"../x"), None);
        assert_eq!(
            climbs_above_root(b"/a/l", b"../../etc/passwd"),
            Some(b"/etc/passwd".to_vec())
        );
        assert_eq!(climbs_above_root(b"/l", b".."), Some(b"/".to_vec()));
        assert_eq!(climbs_above_root(b"/a/b/l", b"./c/../../d"), None);
    }

    #[test]
    fn a_rename_moves_the_inodes_below_it() {
        let n = NodeId::new(3).unwrap();
        let mut i = Inodes::default();
        let dir = i.intern(n, b"/a".to_vec());
        let f = i.intern(n, b"/a/f".to_vec());
        let other = i.intern(n, b"/ab".to_vec());
        let replaced = i.intern(n, b"/z".to_vec());
        i.renamed(n, b"/a", b"/z");
        // The file the rename replaced has no name any more: its path requests fail (ESTALE).
        assert_eq!(i.get(replaced).unwrap().1, Vec::<u8>::new());
        let op = MfsOp::Stat { path: Vec::new() };
        assert!(op.paths().iter().any(|p| p.is_empty()));
        assert_eq!(i.get(dir).unwrap().1, b"/z".to_vec());
        assert_eq!(i.get(f).unwrap().1, b"/z/f".to_vec());
        assert_eq!(i.get(other).unwrap().1, b"/ab".to_vec());
        i.forget(f, 1);
        assert!(i.get(f).is_none());
    }
}
