//! The FUSE operations of the mount: each takes the caller, finds the node and path of its
//! inode, asks the owner ([`MfsClient::call`]) and answers the kernel.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

use fuser::{
    AccessFlags, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use mosix_core::proto::mfs::{MAX_IO, MfsOp, MfsReply};
use nix::errno::Errno;

use super::{
    ALIAS, FIRST_DYNAMIC, HELD, HERE, HOME, MfsClient, ROOT, SELECTED, TTL, child,
    climbs_above_root, fe, file_attr, handle_caller, is_held, kind_of_dt, synthetic, to_settime,
};
use crate::link::snapshot;

/// How a file of MFS is opened in the kernel: direct (every read and write goes to the owner,
/// the one cache), and without `FLUSH` at each close (`FOPEN_NOFLUSH`, Linux 5.16): every
/// write reached the owner before it returned, so a flush has nothing to do, and a close that
/// waited for one would hang when the service is gone — or is itself exiting, closing a file
/// of its own mount that its own threads can no longer answer.
const FILE_OPEN: FopenFlags = FopenFlags::FOPEN_DIRECT_IO.union(FopenFlags::FOPEN_NOFLUSH);

impl Filesystem for MfsClient {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = (|| {
            let (_, caller) = self.who(req)?;
            if parent.0 == ROOT {
                return self.lookup_root(name.as_bytes());
            }
            if parent.0 == HELD {
                return self.lookup_held(name.as_bytes());
            }
            let (node, dir) = self.at(parent)?;
            let path = child(&dir, name.as_bytes());
            match self.call(node, caller, MfsOp::Stat { path: path.clone() })? {
                MfsReply::Attr(a) => Ok(self.entry_at(node, path, &a)),
                _ => Err(Errno::EIO),
            }
        })();
        self.reply_entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = (|| {
            match ino.0 {
                ROOT => return Ok(synthetic(ROOT, FileType::Directory, 0o755, 0)),
                HELD => return Ok(synthetic(HELD, FileType::Directory, 0o555, 0)),
                HOME | HERE | SELECTED => {
                    return Ok(synthetic(ino.0, FileType::Symlink, 0o777, 8));
                }
                i if (ALIAS..FIRST_DYNAMIC).contains(&i) => {
                    return Ok(synthetic(i, FileType::Symlink, 0o777, 8));
                }
                _ => {}
            }
            let (_, caller) = self.who(req)?;
            let (node, path) = self.at(ino)?;
            let held = || {
                fh.map(|h| h.0)
                    .or_else(|| self.opened().get(&ino.0).and_then(|v| v.first().copied()))
            };
            let r = match fh {
                Some(h) => self.call(node, caller, MfsOp::FStat { handle: h.0 }),
                None => match self.call(node, caller.clone(), MfsOp::Stat { path }) {
                    // Unlinked (or renamed by another node) while open here.
                    Err(Errno::ENOENT) if held().is_some() => self.call(
                        node,
                        caller,
                        MfsOp::FStat {
                            handle: held().unwrap_or_default(),
                        },
                    ),
                    r => r,
                },
            };
            match r? {
                MfsReply::Attr(a) => Ok(file_attr(ino.0, &a)),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = (|| {
            let (_, caller) = self.who(req)?;
            let (node, path) = self.at(ino)?;
            // A held file has no name: what is asked of it is done on the handle home has.
            let handle = fh.map(|h| h.0).or_else(|| {
                is_held(&path)
                    .then(|| self.opened().get(&ino.0).and_then(|v| v.first().copied()))
                    .flatten()
            });
            let op = MfsOp::SetAttr {
                path,
                handle,
                mode,
                uid,
                gid,
                size,
                atime: to_settime(atime),
                mtime: to_settime(mtime),
            };
            match self.call(node, caller, op)? {
                MfsReply::Attr(a) => Ok(file_attr(ino.0, &a)),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = (|| {
            let (tgid, caller) = self.who(req)?;
            if let Some(t) = self.link_target(ino.0, tgid) {
                return Ok(t);
            }
            let (node, path) = self.at(ino)?;
            match self.call(node, caller, MfsOp::ReadLink { path: path.clone() })? {
                MfsReply::Target(t) if t.starts_with(b"/") => {
                    let mut shown = self.mount.as_os_str().as_bytes().to_vec();
                    shown.extend_from_slice(format!("/{}", node.get()).as_bytes());
                    shown.extend_from_slice(&t);
                    Ok(shown)
                }
                MfsReply::Target(t) => Ok(match climbs_above_root(&path, &t) {
                    // At the node `..` stops at its root; below the mount it would leave the
                    // node's directory: the link is shown as the path it means at the node.
                    Some(meant) => [
                        self.mount.as_os_str().as_bytes(),
                        format!("/{}", node.get()).as_bytes(),
                        &meant,
                    ]
                    .concat(),
                    None => t,
                }),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.made(req, parent, name, |path| MfsOp::Mknod {
            path,
            mode: mode & !(umask & 0o777),
        });
        self.reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.made(req, parent, name, |path| MfsOp::Mkdir {
            path,
            mode: mode & !umask & 0o7777,
        });
        self.reply_entry(reply, r);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.removed(req, parent, name, |path| MfsOp::Unlink { path });
        self.done(r, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self.removed(req, parent, name, |path| MfsOp::Rmdir { path });
        self.done(r, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes().to_vec();
        let r = self.made(req, parent, link_name, |path| MfsOp::Symlink {
            target,
            path,
        });
        self.reply_entry(reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let (_, caller) = self.who(req)?;
            let (node, dir) = self.at(parent)?;
            let (node2, dir2) = self.at(newparent)?;
            if node != node2 {
                return Err(Errno::EXDEV);
            }
            let from = child(&dir, name.as_bytes());
            let to = child(&dir2, newname.as_bytes());
            let r = self.call(
                node,
                caller,
                MfsOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    flags: flags.bits(),
                },
            )?;
            self.inodes().renamed(node, &from, &to);
            Ok(r)
        })();
        self.done(r, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let (node, from) = self.at(ino)?;
            let (node2, _) = self.at(newparent)?;
            if node != node2 {
                return Err(Errno::EXDEV);
            }
            self.made(req, newparent, newname, |to| MfsOp::Link { from, to })
        })();
        self.reply_entry(reply, r);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let (_, caller) = self.who(req)?;
            let (node, path) = self.at(ino)?;
            match self.call(
                node,
                caller,
                MfsOp::Open {
                    path,
                    flags: flags.0,
                },
            )? {
                MfsReply::Opened { handle, .. } => Ok(handle),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(h) => {
                self.opened().entry(ino.0).or_default().push(h);
                reply.opened(FileHandle(h), FILE_OPEN);
            }
            Err(e) => reply.error(fe(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = (|| {
            let (node, _) = self.at(ino)?;
            let caller = handle_caller(req);
            match self.call(
                node,
                caller,
                MfsOp::Read {
                    handle: fh.0,
                    offset,
                    size: size.min(MAX_IO as u32),
                },
            )? {
                MfsReply::Data(d) => Ok(d),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = (|| {
            let (node, _) = self.at(ino)?;
            let caller = handle_caller(req);
            match self.call(
                node,
                caller,
                MfsOp::Write {
                    handle: fh.0,
                    offset,
                    data: data.to_vec(),
                },
            )? {
                MfsReply::Written(n) => Ok(n),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Every write went to the owner before it returned: nothing is held here.
        reply.ok();
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        {
            let mut open = self.opened();
            if let Some(v) = open.get_mut(&ino.0) {
                v.retain(|&h| h != fh.0);
                if v.is_empty() {
                    open.remove(&ino.0);
                }
            }
        }
        self.release_handle(req, ino, fh, reply);
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let (node, _) = self.at(ino)?;
            self.call(
                node,
                handle_caller(req),
                MfsOp::Fsync {
                    handle: fh.0,
                    datasync,
                },
            )
        })();
        self.done(r, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino.0 == ROOT {
            reply.opened(FileHandle(0), FopenFlags::empty());
            return;
        }
        let r = (|| {
            let (_, caller) = self.who(req)?;
            let (node, path) = self.at(ino)?;
            match self.call(node, caller, MfsOp::OpenDir { path })? {
                MfsReply::Opened { handle, .. } => Ok(handle),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(h) => reply.opened(FileHandle(h), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 == ROOT {
            let mut names: Vec<(u64, FileType, String)> = vec![
                (ROOT, FileType::Directory, ".".into()),
                (ROOT, FileType::Directory, "..".into()),
                (HOME, FileType::Symlink, "home".into()),
                (HERE, FileType::Symlink, "here".into()),
                (SELECTED, FileType::Symlink, "selected".into()),
            ];
            for n in snapshot(&self.link).map.nodes() {
                names.push((
                    FIRST_DYNAMIC - 1 - u64::from(n.get()),
                    FileType::Directory,
                    n.get().to_string(),
                ));
            }
            for (i, (ino, kind, name)) in names.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                    break;
                }
            }
            reply.ok();
            return;
        }
        let r = (|| {
            let (node, _) = self.at(ino)?;
            let caller = handle_caller(req);
            let mut at = offset;
            loop {
                let MfsReply::Entries { entries, end } = self.call(
                    node,
                    caller.clone(),
                    MfsOp::ReadDir {
                        handle: fh.0,
                        offset: at,
                    },
                )?
                else {
                    return Err(Errno::EIO);
                };
                if entries.is_empty() {
                    return Ok(());
                }
                for e in entries {
                    at += 1;
                    if reply.add(
                        INodeNo(e.ino.max(1)),
                        at,
                        kind_of_dt(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        return Ok(());
                    }
                }
                if end {
                    return Ok(());
                }
            }
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if ino.0 == ROOT {
            reply.ok();
            return;
        }
        self.release_handle(req, ino, fh, reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let r = (|| {
            let (_, caller) = self.who(req)?;
            let (node, path) = if ino.0 == ROOT {
                (self.me, b"/".to_vec())
            } else {
                self.at(ino)?
            };
            match self.call(node, caller, MfsOp::Statfs { path })? {
                MfsReply::Stats(s) => Ok(s),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = (|| {
            let (_, caller) = self.who(req)?;
            if ino.0 == ROOT
                || ino.0 == HELD
                || ino.0 == HOME
                || ino.0 == HERE
                || ino.0 >= ALIAS && ino.0 < FIRST_DYNAMIC
            {
                return if mask.bits() & libc::W_OK != 0 && ino.0 == ROOT {
                    Err(Errno::EACCES)
                } else {
                    Ok(MfsReply::Done)
                };
            }
            let (node, path) = self.at(ino)?;
            self.call(
                node,
                caller,
                MfsOp::Access {
                    path,
                    mask: mask.bits(),
                },
            )
        })();
        self.done(r, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let (_, caller) = self.who(req)?;
            let (node, dir) = self.at(parent)?;
            let path = child(&dir, name.as_bytes());
            match self.call(
                node,
                caller,
                MfsOp::Create {
                    path: path.clone(),
                    flags,
                    mode: mode & !umask & 0o7777,
                },
            )? {
                MfsReply::Opened { handle, attr } => Ok((self.entry_at(node, path, &attr), handle)),
                _ => Err(Errno::EIO),
            }
        })();
        match r {
            Ok((a, h)) => {
                self.opened().entry(a.ino.0).or_default().push(h);
                reply.created(&TTL, &a, Generation(0), FileHandle(h), FILE_OPEN);
            }
            Err(e) => reply.error(fe(e)),
        }
    }
}
