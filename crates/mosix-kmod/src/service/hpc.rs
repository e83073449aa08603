//! The `/proc`-style file tree openMosix scripts used, mounted by the service at
//! `RUNDIR/hpc` (default `/run/mosix/hpc`): a FUSE file system whose every read and write is a
//! control request to this service, made with the caller's uid, so a file does exactly what
//! the matching tool does and is refused exactly when the tool would be.
//!
//! ```text
//! hpc/PID/{where,lock,nmigs,goto,cantmove}     this node's MOSIX processes
//! hpc/nodes/N/{load,speed,cpus,mem,freemem,util,status}
//! hpc/admin/{block,stay,lstay,quiet,expel,bring,speed,decay}
//! ```
//!
//! `echo 3 > hpc/PID/goto` moves the process to node 3 (`0` home, `-1` where the balancer
//! says), `echo 1 > hpc/PID/lock` locks it; `echo 1 > hpc/admin/block` is `mosctl block`
//! (root only, as the tool). Not in `/proc`: no file system may be mounted there without the
//! kernel's procfs, and a tree of its own under the service's run directory also gives every
//! node of a virtual cluster its own.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use mosix_core::client::{ClusterView, Request as Ask, Response, Target};
use mosix_core::node::{Flag, NodeId, Status};
use nix::errno::Errno;
use nix::mount::MntFlags;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::Event;

const ROOT: u64 = 1;
const NODES: u64 = 2;
const ADMIN: u64 = 3;
/// Inode kinds, in the top bits.
const PID_DIR: u64 = 1 << 40;
const PID_FILE: u64 = 2 << 40;
const NODE_DIR: u64 = 3 << 40;
const NODE_FILE: u64 = 4 << 40;
const ADMIN_FILE: u64 = 5 << 40;
const KIND: u64 = 0xff << 40;

const PID_FILES: [&str; 5] = ["where", "lock", "nmigs", "goto", "cantmove"];
const NODE_FILES: [&str; 7] = ["load", "speed", "cpus", "mem", "freemem", "util", "status"];
const ADMIN_FILES: [&str; 8] = [
    "block", "stay", "lstay", "quiet", "expel", "bring", "speed", "decay",
];

/// The most a write may carry.
const MAX_WRITE: usize = 64;

/// What a file of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Root,
    Nodes,
    Admin,
    PidDir(u32),
    PidFile(u32, usize),
    NodeDir(u16),
    NodeFile(u16, usize),
    AdminFile(usize),
}

impl Entry {
    fn of(ino: u64) -> Option<Entry> {
        let low = ino & !KIND;
        Some(match (ino & KIND, ino) {
            (0, ROOT) => Entry::Root,
            (0, NODES) => Entry::Nodes,
            (0, ADMIN) => Entry::Admin,
            (PID_DIR, _) => Entry::PidDir(u32::try_from(low).ok()?),
            (PID_FILE, _) => Entry::PidFile(u32::try_from(low >> 8).ok()?, (low & 0xff) as usize)
                .checked(PID_FILES.len())?,
            (NODE_DIR, _) => Entry::NodeDir(u16::try_from(low).ok()?),
            (NODE_FILE, _) => Entry::NodeFile(u16::try_from(low >> 8).ok()?, (low & 0xff) as usize)
                .checked(NODE_FILES.len())?,
            (ADMIN_FILE, _) => Entry::AdminFile(low as usize).checked(ADMIN_FILES.len())?,
            _ => return None,
        })
    }

    fn checked(self, n: usize) -> Option<Entry> {
        match self {
            Entry::PidFile(_, i) | Entry::NodeFile(_, i) | Entry::AdminFile(i) if i >= n => None,
            x => Some(x),
        }
    }

    fn ino(self) -> u64 {
        match self {
            Entry::Root => ROOT,
            Entry::Nodes => NODES,
            Entry::Admin => ADMIN,
            Entry::PidDir(p) => PID_DIR | u64::from(p),
            Entry::PidFile(p, i) => PID_FILE | u64::from(p) << 8 | i as u64,
            Entry::NodeDir(n) => NODE_DIR | u64::from(n),
            Entry::NodeFile(n, i) => NODE_FILE | u64::from(n) << 8 | i as u64,
            Entry::AdminFile(i) => ADMIN_FILE | i as u64,
        }
    }

    fn is_dir(self) -> bool {
        matches!(
            self,
            Entry::Root | Entry::Nodes | Entry::Admin | Entry::PidDir(_) | Entry::NodeDir(_)
        )
    }

    /// Whether it may be written (the service decides who may).
    fn writable(self) -> bool {
        match self {
            Entry::PidFile(_, i) => matches!(PID_FILES[i], "lock" | "goto"),
            Entry::AdminFile(_) => true,
            _ => false,
        }
    }
}

/// The mounted tree.
pub(super) struct Hpc {
    mount: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Hpc {
    /// Mounts the tree at `mount`, its requests going to the main loop through `events`.
    pub(super) fn start(mount: &Path, events: mpsc::Sender<Event>) -> std::io::Result<Hpc> {
        if crate::mfs::fuse_mounted_at(mount) {
            let _ = nix::mount::umount2(mount, MntFlags::MNT_DETACH);
        }
        std::fs::create_dir_all(mount)?;
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("mosix-hpc".into()),
            fuser::MountOption::Subtype("mosix".into()),
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoExec,
            fuser::MountOption::RW,
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(2);
        let session =
            fuser::Session::new(Tree { events }, mount, &config).and_then(fuser::Session::spawn)?;
        info!("the hpc tree is mounted at {}", mount.display());
        Ok(Hpc {
            mount: mount.to_owned(),
            session: Some(session),
        })
    }

    /// Unmounts (also when dropped).
    pub(super) fn stop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = nix::mount::umount2(&self.mount, MntFlags::MNT_DETACH) {
                warn!("unmounting {}: {e}", self.mount.display());
            }
            drop(s);
        }
    }
}

impl Drop for Hpc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The file system: every answer asked of the main loop.
struct Tree {
    events: mpsc::Sender<Event>,
}

impl Tree {
    /// Asks the service `req` as the caller of `r`.
    fn ask(&self, r: &Request, req: Ask) -> Result<Response, Errno> {
        let (tx, rx) = oneshot::channel();
        self.events
            .blocking_send(Event::Control {
                req,
                uid: r.uid(),
                pid: r.pid() as i32,
                reply: tx,
            })
            .map_err(|_| Errno::ENOTCONN)?;
        // The main loop answers every request, within its own bounds (an expel waits for the
        // guests to leave); this is a thread of the mount, never one of the runtime.
        rx.blocking_recv().map_err(|_| Errno::ENOTCONN)
    }

    fn view(&self, r: &Request) -> Result<ClusterView, Errno> {
        match self.ask(r, Ask::View)? {
            Response::View(v) => Ok(v),
            _ => Err(Errno::EIO),
        }
    }

    fn rows(&self, r: &Request) -> Result<Vec<mosix_core::client::ProcRow>, Errno> {
        match self.ask(r, Ask::Procs { guests: false })? {
            Response::Procs(rows) => Ok(rows),
            _ => Err(Errno::EIO),
        }
    }

    /// Whether `n` exists now.
    fn exists(&self, r: &Request, n: Entry) -> Result<bool, Errno> {
        Ok(match n {
            Entry::PidDir(p) | Entry::PidFile(p, _) => self.rows(r)?.iter().any(|x| x.pid == p),
            Entry::NodeDir(id) | Entry::NodeFile(id, _) => {
                let v = self.view(r)?;
                NodeId::new(id).is_some_and(|id| v.get(id).is_some())
            }
            _ => true,
        })
    }

    /// The text of file `n`.
    fn content(&self, r: &Request, n: Entry) -> Result<String, Errno> {
        match n {
            Entry::PidFile(pid, i) => {
                let rows = self.rows(r)?;
                let row = rows.iter().find(|x| x.pid == pid).ok_or(Errno::ENOENT)?;
                Ok(pid_file(row, PID_FILES[i]))
            }
            Entry::NodeFile(id, i) => {
                let v = self.view(r)?;
                let nv = NodeId::new(id)
                    .and_then(|id| v.get(id))
                    .ok_or(Errno::ENOENT)?;
                Ok(node_file(nv, NODE_FILES[i]))
            }
            Entry::AdminFile(i) => {
                let name = ADMIN_FILES[i];
                match name {
                    "decay" => match self.ask(r, Ask::GetDecay)? {
                        Response::Decay(d) => {
                            Ok(format!("{} {} {}\n", d.interval_s, d.slow, d.fast))
                        }
                        _ => Err(Errno::EIO),
                    },
                    _ => {
                        let v = self.view(r)?;
                        let me = v.get(v.me).ok_or(Errno::EIO)?;
                        Ok(admin_file(me, name))
                    }
                }
            }
            _ => Err(Errno::EISDIR),
        }
    }

    /// Acts on a write of `text` to file `n`.
    fn act(&self, r: &Request, n: Entry, text: &str) -> Result<(), Errno> {
        let word = text.trim();
        let bool_of = |w: &str| match w {
            "1" => Ok(true),
            "0" => Ok(false),
            _ => Err(Errno::EINVAL),
        };
        let req = match n {
            Entry::PidFile(pid, i) => match PID_FILES[i] {
                "lock" => Ask::Lock {
                    pid,
                    on: bool_of(word)?,
                },
                "goto" => {
                    let to = match word.parse::<i32>().map_err(|_| Errno::EINVAL)? {
                        -1 => Target::Balance,
                        0 => Target::Home,
                        n => Target::Node(
                            u16::try_from(n)
                                .ok()
                                .and_then(NodeId::new)
                                .ok_or(Errno::EINVAL)?,
                        ),
                    };
                    Ask::Migrate {
                        pid,
                        to,
                        wait: false,
                        live: false,
                    }
                }
                _ => return Err(Errno::EACCES),
            },
            Entry::AdminFile(i) => match ADMIN_FILES[i] {
                "expel" | "bring" if !bool_of(word)? => return Ok(()),
                "expel" => Ask::Expel,
                "bring" => Ask::Bring,
                "speed" => Ask::SetSpeed {
                    speed: word.parse().map_err(|_| Errno::EINVAL)?,
                },
                "decay" => {
                    let v: Vec<u32> = word
                        .split_whitespace()
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(|_| Errno::EINVAL)?;
                    let [interval_s, slow, fast] = v[..] else {
                        return Err(Errno::EINVAL);
                    };
                    Ask::SetDecay(mosix_core::config::DecayTunables {
                        interval_s,
                        slow,
                        fast,
                    })
                }
                flag => Ask::SetFlag {
                    flag: match flag {
                        "block" => Flag::Block,
                        "stay" => Flag::Stay,
                        "lstay" => Flag::Lstay,
                        _ => Flag::Quiet,
                    },
                    on: bool_of(word)?,
                },
            },
            _ => return Err(Errno::EACCES),
        };
        match self.ask(r, req)? {
            Response::Error(e) if e.contains("permission denied") => Err(Errno::EPERM),
            Response::Error(e) => {
                info!("hpc: a write to {:?} failed: {e}", n);
                Err(Errno::EINVAL)
            }
            Response::MoveFailed(f) => {
                info!("hpc: a write to {:?} failed: {f}", n);
                Err(Errno::EIO)
            }
            _ => Ok(()),
        }
    }
}

/// The text of a process's file.
fn pid_file(row: &mosix_core::client::ProcRow, name: &str) -> String {
    match name {
        "where" | "goto" => format!("{}\n", row.node),
        "lock" => format!("{}\n", u8::from(row.lock)),
        "nmigs" => format!("{}\n", row.nmigs),
        _ => format!("{}\n", row.cantmove.as_deref().unwrap_or("")),
    }
}

/// The text of a node's file (empty for figures not known: a node down or quiet).
fn node_file(v: &mosix_core::client::NodeView, name: &str) -> String {
    if name == "status" {
        return format!("{}\n", v.status.bits());
    }
    let Some(f) = v.figures else {
        return "\n".into();
    };
    let n = match name {
        "load" => u64::from(f.load),
        "speed" => u64::from(f.speed),
        "cpus" => u64::from(f.cpus),
        "mem" => f.mem_total,
        "freemem" => f.mem_free,
        _ => u64::from(f.util),
    };
    format!("{n}\n")
}

/// The text of an admin file, from this node's view.
fn admin_file(me: &mosix_core::client::NodeView, name: &str) -> String {
    let bit = |s: Status| format!("{}\n", u8::from(me.status.contains(s)));
    match name {
        "block" => bit(Status::BLOCK),
        "stay" => bit(Status::STAY),
        "lstay" => bit(Status::LSTAY),
        "quiet" => bit(Status::QUIET),
        "speed" => me
            .figures
            .map_or_else(|| "\n".into(), |f| format!("{}\n", f.speed)),
        _ => "0\n".into(),
    }
}

fn attr(n: Entry, uid: u32) -> FileAttr {
    let (kind, perm) = if n.is_dir() {
        (FileType::Directory, 0o555)
    } else if n.writable() {
        (FileType::RegularFile, 0o644)
    } else {
        (FileType::RegularFile, 0o444)
    };
    FileAttr {
        ino: INodeNo(n.ino()),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if n.is_dir() { 2 } else { 1 },
        uid,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

const TTL: Duration = Duration::ZERO;

fn fe(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

impl Tree {
    /// The entries of a directory: (node, name).
    fn entries(&self, r: &Request, dir: Entry) -> Result<Vec<(Entry, String)>, Errno> {
        Ok(match dir {
            Entry::Root => {
                let mut v = vec![
                    (Entry::Nodes, "nodes".to_owned()),
                    (Entry::Admin, "admin".to_owned()),
                ];
                v.extend(
                    self.rows(r)?
                        .iter()
                        .map(|x| (Entry::PidDir(x.pid), x.pid.to_string())),
                );
                v
            }
            Entry::Nodes => self
                .view(r)?
                .nodes
                .iter()
                .map(|x| (Entry::NodeDir(x.node.get()), x.node.get().to_string()))
                .collect(),
            Entry::Admin => ADMIN_FILES
                .iter()
                .enumerate()
                .map(|(i, f)| (Entry::AdminFile(i), (*f).to_owned()))
                .collect(),
            Entry::PidDir(p) => PID_FILES
                .iter()
                .enumerate()
                .map(|(i, f)| (Entry::PidFile(p, i), (*f).to_owned()))
                .collect(),
            Entry::NodeDir(id) => NODE_FILES
                .iter()
                .enumerate()
                .map(|(i, f)| (Entry::NodeFile(id, i), (*f).to_owned()))
                .collect(),
            _ => return Err(Errno::ENOTDIR),
        })
    }

    /// The owner shown for `n`: a process's files are its owner's.
    fn owner(&self, r: &Request, n: Entry) -> u32 {
        match n {
            Entry::PidDir(p) | Entry::PidFile(p, _) => self
                .rows(r)
                .ok()
                .and_then(|rows| rows.iter().find(|x| x.pid == p).and_then(|x| x.uid))
                .unwrap_or(0),
            _ => 0,
        }
    }
}

impl Filesystem for Tree {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = (|| {
            let dir = Entry::of(parent.0).ok_or(Errno::ENOENT)?;
            let name = name.to_str().ok_or(Errno::ENOENT)?;
            // A pid or node directory is found by its number without listing them all.
            let n = match dir {
                Entry::Root => match name {
                    "nodes" => Entry::Nodes,
                    "admin" => Entry::Admin,
                    p => Entry::PidDir(p.parse().map_err(|_| Errno::ENOENT)?),
                },
                Entry::Nodes => Entry::NodeDir(name.parse().map_err(|_| Errno::ENOENT)?),
                _ => {
                    self.entries(req, dir)?
                        .into_iter()
                        .find(|(_, f)| f == name)
                        .ok_or(Errno::ENOENT)?
                        .0
                }
            };
            if !self.exists(req, n)? {
                return Err(Errno::ENOENT);
            }
            Ok(attr(n, self.owner(req, n)))
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, fuser::Generation(0)),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match Entry::of(ino.0) {
            Some(n) => reply.attr(&TTL, &attr(n, self.owner(req, n))),
            None => reply.error(fe(Errno::ENOENT)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // `echo 3 > goto` truncates first: nothing to do, the write says it all.
        match Entry::of(ino.0) {
            Some(n) => reply.attr(&TTL, &attr(n, self.owner(req, n))),
            None => reply.error(fe(Errno::ENOENT)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some(n) = Entry::of(ino.0) else {
            return reply.error(fe(Errno::ENOENT));
        };
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if n.is_dir() || (writing && !n.writable()) {
            return reply.error(fe(Errno::EACCES));
        }
        match self.exists(req, n) {
            Ok(true) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Ok(false) => reply.error(fe(Errno::ENOENT)),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = Entry::of(ino.0)
            .ok_or(Errno::ENOENT)
            .and_then(|n| self.content(req, n));
        match r {
            Ok(text) => {
                let b = text.as_bytes();
                let from = (offset as usize).min(b.len());
                let to = (from + size as usize).min(b.len());
                reply.data(&b[from..to]);
            }
            Err(e) => reply.error(fe(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            let n = Entry::of(ino.0).ok_or(Errno::ENOENT)?;
            if data.len() > MAX_WRITE {
                return Err(Errno::EINVAL);
            }
            let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
            self.act(req, n, text)
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match Entry::of(ino.0) {
            Some(n) if n.is_dir() => reply.opened(FileHandle(0), FopenFlags::empty()),
            _ => reply.error(fe(Errno::ENOTDIR)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = Entry::of(ino.0)
            .ok_or(Errno::ENOENT)
            .and_then(|n| self.entries(req, n));
        match r {
            Ok(entries) => {
                let mut all = vec![
                    (ino.0, FileType::Directory, ".".to_owned()),
                    (ROOT, FileType::Directory, "..".to_owned()),
                ];
                all.extend(entries.into_iter().map(|(n, name)| {
                    let kind = if n.is_dir() {
                        FileType::Directory
                    } else {
                        FileType::RegularFile
                    };
                    (n.ino(), kind, name)
                }));
                for (i, (ino, kind, name)) in all.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(fe(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_name_their_files_and_nothing_else() {
        for n in [
            Entry::Root,
            Entry::Nodes,
            Entry::Admin,
            Entry::PidDir(4_194_303),
            Entry::PidFile(1234, 4),
            Entry::NodeDir(65535),
            Entry::NodeFile(7, 6),
            Entry::AdminFile(7),
        ] {
            assert_eq!(Entry::of(n.ino()), Some(n), "{n:?}");
        }
        assert_eq!(Entry::of(PID_FILE | 1234 << 8 | 5), None);
        assert_eq!(Entry::of(ADMIN_FILE | 8), None);
        assert_eq!(Entry::of(99), None);
        assert!(Entry::PidFile(1, 3).writable() && !Entry::PidFile(1, 0).writable());
    }
}
