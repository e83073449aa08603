//! The MOSIX File System's messages: what a node asks of the node that owns a file
//! ([`MfsRequest`]) and what it answers ([`MfsReply`]), on a file connection opened with
//! [`super::LinkMsg::OpenFiles`] and sealed like every link connection.
//!
//! The protocol is by path: the asking node keeps the map from its inodes to paths at the owner,
//! and the owner resolves every path again, as the caller, at each request. So the owner keeps
//! no state but the files the asking node has open (by a handle of the asker's session), and
//! what one node completed, every node sees at its next request: there is one cache, the
//! owner's.
//!
//! Every request says who asks ([`Caller`]): the owner runs it with those ids and groups (root
//! squashed unless the owner trusts the cluster's root), never with more. Everything here is
//! bounded before it is used: paths by [`MAX_PATH`], names by [`MAX_NAME`], groups by
//! [`MAX_GROUPS`], data by [`MAX_IO`], directory batches by [`MAX_DIR_BATCH`]; a frame is at
//! most [`MAX_MFS_FRAME`].

use serde::{Deserialize, Serialize};

use super::FrameError;

/// The longest path a request may carry, in bytes (Linux's `PATH_MAX` with its NUL).
pub const MAX_PATH: usize = 4096;
/// The longest name in a directory (`NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// The most supplementary groups a caller may have (`NGROUPS_MAX`).
pub const MAX_GROUPS: usize = 65536;
/// The most bytes one read or write carries.
pub const MAX_IO: usize = 1 << 20;
/// The most entries of a directory one reply carries.
pub const MAX_DIR_BATCH: usize = 512;
/// The largest frame of a file connection: the largest write or read and its header, or a
/// caller with every group it may have.
pub const MAX_MFS_FRAME: usize = MAX_IO + 64 * 1024 + 4 * MAX_GROUPS;

/// A path at the owning node, as bytes (Linux paths need not be UTF-8).
pub type PathBytes = Vec<u8>;

/// Who asks: the ids the owner runs the request with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The caller's file-system uid.
    pub uid: u32,
    /// The caller's file-system gid.
    pub gid: u32,
    /// Its supplementary groups.
    #[serde(deserialize_with = "groups")]
    pub groups: Vec<u32>,
}

fn groups<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    crate::bounded::seq::<_, _, MAX_GROUPS>(d)
}

/// What a file connection's requests ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MfsOp {
    /// `lstat` of a path.
    Stat {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
    },
    /// The target of a symbolic link.
    ReadLink {
        /// The link.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
    },
    /// `access(2)` with `mask` (`R_OK`, `W_OK`, `X_OK`, `F_OK`).
    Access {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
        /// The mask.
        mask: i32,
    },
    /// Opens a file (never creating it); the answer is [`MfsReply::Opened`].
    Open {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
        /// `open(2)` flags (access mode, `O_APPEND`, `O_TRUNC`, …; `O_CREAT` is refused).
        flags: i32,
    },
    /// Creates and opens a file; the answer is [`MfsReply::Opened`].
    Create {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
        /// `open(2)` flags; `O_CREAT` is added.
        flags: i32,
        /// The mode, the caller's umask already applied.
        mode: u32,
    },
    /// Reads from an open file at an offset.
    Read {
        /// The handle from [`MfsReply::Opened`].
        handle: u64,
        /// Where.
        offset: u64,
        /// At most this many bytes (up to [`MAX_IO`]).
        size: u32,
    },
    /// Writes to an open file at an offset (at its end if it was opened with `O_APPEND`).
    Write {
        /// The handle.
        handle: u64,
        /// Where.
        offset: u64,
        /// The bytes (up to [`MAX_IO`]).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// `fstat` of an open file or directory (it may have been unlinked since).
    FStat {
        /// The handle.
        handle: u64,
    },
    /// `fsync`/`fdatasync` of an open file.
    Fsync {
        /// The handle.
        handle: u64,
        /// `fdatasync` only.
        datasync: bool,
    },
    /// Closes a handle (file or directory); the answer carries the error of the close.
    Release {
        /// The handle.
        handle: u64,
    },
    /// Opens a directory for listing; the answer is [`MfsReply::Opened`].
    OpenDir {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
    },
    /// Entries of an open directory from position `offset` (0 is the first).
    ReadDir {
        /// The handle.
        handle: u64,
        /// The position.
        offset: u64,
    },
    /// Changes attributes; each `Some` is applied in the order mode, owner, size, times.
    SetAttr {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
        /// An open handle of the file (`ftruncate`; a file held for a guest): everything is
        /// done on it, and the path is not used.
        handle: Option<u64>,
        /// `chmod`.
        mode: Option<u32>,
        /// `chown`'s uid.
        uid: Option<u32>,
        /// `chown`'s gid.
        gid: Option<u32>,
        /// `truncate`.
        size: Option<u64>,
        /// Access time.
        atime: Option<SetTime>,
        /// Modification time.
        mtime: Option<SetTime>,
    },
    /// `mkdir`.
    Mkdir {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
        /// The mode, the caller's umask already applied.
        mode: u32,
    },
    /// `mknod` of a regular file or FIFO (devices are refused: `nodev`).
    Mknod {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
        /// The mode with the file type, the caller's umask already applied.
        mode: u32,
    },
    /// `unlink`.
    Unlink {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
    },
    /// `rmdir`.
    Rmdir {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
    },
    /// `symlink(target, path)`.
    Symlink {
        /// What the link says.
        #[serde(with = "serde_bytes")]
        target: PathBytes,
        /// Where the link goes.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
    },
    /// `renameat2(from, to, flags)`.
    Rename {
        /// The old path.
        #[serde(with = "serde_bytes")]
        from: PathBytes,
        /// The new path.
        #[serde(with = "serde_bytes")]
        to: PathBytes,
        /// `RENAME_NOREPLACE`, `RENAME_EXCHANGE`.
        flags: u32,
    },
    /// `link(from, to)`.
    Link {
        /// The existing path.
        #[serde(with = "serde_bytes")]
        from: PathBytes,
        /// The new name.
        #[serde(with = "serde_bytes")]
        to: PathBytes,
    },
    /// `statvfs` of the file system holding a path.
    Statfs {
        /// The path.
        #[serde(with = "serde_bytes")]
        path: PathBytes,
    },
    /// `fstat` of a file a guest of the owner holds open for its home, by the token its
    /// supervisor gave home (`ProcMsg::Twin`): served only to that home, for that owner.
    StatHeld {
        /// The token.
        token: u64,
    },
    /// Opens the file a guest holds for its home ([`MfsOp::StatHeld`]): home's descriptor of it
    /// is the guest's own open file, whatever its name is now (renamed, removed, or never
    /// named: `O_TMPFILE`). Once per token; the answer is [`MfsReply::Opened`].
    OpenHeld {
        /// The token.
        token: u64,
    },
}

/// A time to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetTime {
    /// The owner's clock, now.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, u32),
}

/// A request: who asks, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfsRequest {
    /// The caller.
    pub caller: Caller,
    /// The operation.
    pub op: MfsOp,
}

/// The attributes of a file at its owner (a `struct stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Attr {
    /// Device and inode at the owner, folded.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Links.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device, for device files.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks.
    pub blocks: u64,
    /// The preferred I/O size.
    pub blksize: u32,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Modification time.
    pub mtime: (i64, u32),
    /// Status change time.
    pub ctime: (i64, u32),
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Its inode at the owner.
    pub ino: u64,
    /// Its type (`DT_*`).
    pub kind: u8,
}

/// `statvfs` figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FsStats {
    /// Blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks free to unprivileged users.
    pub bavail: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MfsReply {
    /// The call failed with this errno.
    Err(i32),
    /// Done, nothing to say.
    Done,
    /// Attributes (after `Stat`, `FStat`, `SetAttr`, `Mkdir`, `Mknod`, `Symlink`, `Link`).
    Attr(Attr),
    /// A link's target.
    Target(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A new handle and the attributes of what it opened.
    Opened {
        /// The handle.
        handle: u64,
        /// The attributes.
        attr: Attr,
    },
    /// Bytes read (fewer than asked at the end of the file).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Bytes written.
    Written(u32),
    /// Directory entries from the asked position; `end` when the directory has no more.
    Entries {
        /// The entries.
        #[serde(deserialize_with = "dir_batch")]
        entries: Vec<DirEntry>,
        /// Whether the listing is complete.
        end: bool,
    },
    /// File-system figures.
    Stats(FsStats),
}

fn dir_batch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DirEntry>, D::Error> {
    crate::bounded::seq::<_, _, MAX_DIR_BATCH>(d)
}

fn invalid(what: String) -> FrameError {
    FrameError::Invalid(what)
}

fn check_path(p: &[u8], what: &str) -> Result<(), FrameError> {
    if p.is_empty() || p.len() >= MAX_PATH {
        return Err(invalid(format!(
            "{what} of {} bytes (1..{MAX_PATH})",
            p.len()
        )));
    }
    if p.contains(&0) {
        return Err(invalid(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

fn check_abs(p: &[u8], what: &str) -> Result<(), FrameError> {
    check_path(p, what)?;
    if p[0] != b'/' {
        return Err(invalid(format!("{what} is not absolute")));
    }
    Ok(())
}

impl MfsOp {
    /// The paths it names (none for operations on open files).
    pub fn paths(&self) -> Vec<&[u8]> {
        match self {
            MfsOp::Stat { path }
            | MfsOp::ReadLink { path }
            | MfsOp::Access { path, .. }
            | MfsOp::Open { path, .. }
            | MfsOp::Create { path, .. }
            | MfsOp::OpenDir { path }
            | MfsOp::SetAttr { path, .. }
            | MfsOp::Mkdir { path, .. }
            | MfsOp::Mknod { path, .. }
            | MfsOp::Unlink { path }
            | MfsOp::Rmdir { path }
            | MfsOp::Statfs { path }
            | MfsOp::Symlink { path, .. } => vec![path],
            MfsOp::Rename { from, to, .. } | MfsOp::Link { from, to } => vec![from, to],
            MfsOp::Read { .. }
            | MfsOp::Write { .. }
            | MfsOp::FStat { .. }
            | MfsOp::Fsync { .. }
            | MfsOp::Release { .. }
            | MfsOp::ReadDir { .. }
            | MfsOp::StatHeld { .. }
            | MfsOp::OpenHeld { .. } => Vec::new(),
        }
    }
}

impl MfsRequest {
    /// Checks what a decoded request carries.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.caller.groups.len() > MAX_GROUPS {
            return Err(invalid(format!(
                "{} groups exceed {MAX_GROUPS}",
                self.caller.groups.len()
            )));
        }
        match &self.op {
            MfsOp::Stat { path }
            | MfsOp::ReadLink { path }
            | MfsOp::Access { path, .. }
            | MfsOp::Open { path, .. }
            | MfsOp::Create { path, .. }
            | MfsOp::OpenDir { path }
            | MfsOp::SetAttr { path, .. }
            | MfsOp::Mkdir { path, .. }
            | MfsOp::Mknod { path, .. }
            | MfsOp::Unlink { path }
            | MfsOp::Rmdir { path }
            | MfsOp::Statfs { path } => check_abs(path, "path"),
            MfsOp::Symlink { target, path } => {
                check_path(target, "link target")?;
                check_abs(path, "path")
            }
            MfsOp::Rename { from, to, .. } | MfsOp::Link { from, to } => {
                check_abs(from, "path")?;
                check_abs(to, "new path")
            }
            MfsOp::Read { size, .. } => {
                if *size as usize > MAX_IO {
                    return Err(invalid(format!("read of {size} bytes exceeds {MAX_IO}")));
                }
                Ok(())
            }
            MfsOp::Write { data, .. } => {
                if data.len() > MAX_IO {
                    return Err(invalid(format!(
                        "write of {} bytes exceeds {MAX_IO}",
                        data.len()
                    )));
                }
                Ok(())
            }
            MfsOp::FStat { .. }
            | MfsOp::Fsync { .. }
            | MfsOp::Release { .. }
            | MfsOp::ReadDir { .. }
            | MfsOp::StatHeld { .. }
            | MfsOp::OpenHeld { .. } => Ok(()),
        }
    }
}

impl MfsReply {
    /// Checks what a decoded reply carries.
    pub fn validate(&self) -> Result<(), FrameError> {
        match self {
            MfsReply::Target(t) if t.len() >= MAX_PATH => {
                Err(invalid(format!("link target of {} bytes", t.len())))
            }
            MfsReply::Data(d) if d.len() > MAX_IO => Err(invalid(format!(
                "{} bytes of data exceed {MAX_IO}",
                d.len()
            ))),
            MfsReply::Entries { entries, .. } => {
                if entries.len() > MAX_DIR_BATCH {
                    return Err(invalid(format!(
                        "{} entries exceed {MAX_DIR_BATCH}",
                        entries.len()
                    )));
                }
                for e in entries {
                    if e.name.is_empty()
                        || e.name.len() > MAX_NAME
                        || e.name.contains(&0)
                        || e.name.contains(&b'/')
                    {
                        return Err(invalid(format!(
                            "directory entry {:?} is not a name",
                            String::from_utf8_lossy(&e.name)
                        )));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_frame, encode};
    use proptest::prelude::*;

    fn caller() -> Caller {
        Caller {
            uid: 1000,
            gid: 1000,
            groups: vec![4, 27],
        }
    }

    #[test]
    fn requests_and_replies_go_through_a_frame_unchanged() {
        let reqs = [
            MfsOp::Stat {
                path: b"/etc/hostname".to_vec(),
            },
            MfsOp::Write {
                handle: 7,
                offset: 1 << 40,
                data: vec![0xab; 4096],
            },
            MfsOp::SetAttr {
                path: b"/tmp/x".to_vec(),
                handle: Some(3),
                mode: None,
                uid: Some(0),
                gid: None,
                size: Some(0),
                atime: Some(SetTime::Now),
                mtime: Some(SetTime::At(-5, 999_999_999)),
            },
            MfsOp::Rename {
                from: b"/a".to_vec(),
                to: b"/b".to_vec(),
                flags: 1,
            },
        ];
        for op in reqs {
            let r = MfsRequest {
                caller: caller(),
                op,
            };
            let back: MfsRequest = decode_frame(&encode(&r), MAX_MFS_FRAME).unwrap();
            assert_eq!(back, r);
            back.validate().unwrap();
        }
        let reply = MfsReply::Entries {
            entries: vec![DirEntry {
                name: b"hostname".to_vec(),
                ino: 5,
                kind: 8,
            }],
            end: true,
        };
        let back: MfsReply = decode_frame(&encode(&reply), MAX_MFS_FRAME).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn paths_must_be_absolute_bounded_and_without_nul() {
        let bad = |path: &[u8]| {
            MfsRequest {
                caller: caller(),
                op: MfsOp::Unlink {
                    path: path.to_vec(),
                },
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        assert!(bad(b"etc/passwd").contains("not absolute"));
        assert!(bad(b"").contains("0 bytes"));
        assert!(bad(b"/a\0b").contains("NUL"));
        assert!(bad(&[b'/'; MAX_PATH]).contains("4096 bytes"));
        // A link's target may be relative.
        MfsRequest {
            caller: caller(),
            op: MfsOp::Symlink {
                target: b"../x".to_vec(),
                path: b"/tmp/l".to_vec(),
            },
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn data_and_listings_are_bounded() {
        let big = MfsRequest {
            caller: caller(),
            op: MfsOp::Read {
                handle: 1,
                offset: 0,
                size: MAX_IO as u32 + 1,
            },
        };
        assert!(big.validate().is_err());
        let slash = MfsReply::Entries {
            entries: vec![DirEntry {
                name: b"a/b".to_vec(),
                ino: 1,
                kind: 8,
            }],
            end: false,
        };
        assert!(slash.validate().is_err());
        // More entries than a batch may hold are not kept (one over, for the refusal).
        let many = MfsReply::Entries {
            entries: vec![
                DirEntry {
                    name: b"x".to_vec(),
                    ino: 1,
                    kind: 8
                };
                MAX_DIR_BATCH + 10
            ],
            end: false,
        };
        let r: MfsReply = decode_frame(&encode(&many), MAX_MFS_FRAME).unwrap();
        let MfsReply::Entries { entries, .. } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(entries.len(), MAX_DIR_BATCH + 1);
        assert!(r.validate().is_err());
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_decoder_panic_or_pass_an_unchecked_request(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            if let Ok(r) = postcard::from_bytes::<MfsRequest>(&bytes) {
                let _ = r.validate();
            }
            if let Ok(r) = postcard::from_bytes::<MfsReply>(&bytes) {
                let _ = r.validate();
            }
        }
    }
}
