//! Checkpoint files (`migrate PID checkpoint`, `mosrun -C FILE`, `mosrun -I FILE`, `mosrun -R
//! FILE`): what a process needs to be resumed later, on any node of the cluster, as a new
//! process of the user who made it.
//!
//! A file is, in order:
//!
//! 1. [`MAGIC`] and the format's [`VERSION`] (4 bytes, little-endian), read before anything
//!    else is decoded: an old, future or foreign file is refused with that reason;
//! 2. the [`Meta`] as one frame ([`crate::proto::encode`], at most [`MAX_META_FRAME`]): who
//!    made it, when, where, the kernel it was taken on, the process's command line, cwd, umask,
//!    environment and its descriptor table (each regular file with its path, offset, flags and
//!    what it was then: size, mtime, device and inode, so that a changed file is seen);
//! 3. the process's image in the freeze-file format ([`ImageWriter`]): the image header as one
//!    frame, then each page run as area, offset, length and bytes, then an end mark;
//! 4. [`TRAILER`] and the SHA-256 of everything before it: a file cut short or changed is
//!    refused.
//!
//! Writing and reading keep one page run in memory at a time; every count and length read is
//! bounded before anything is allocated for it, as for a process arriving over the network.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::image::{ImageHeader, MAX_RUN};
use crate::proto::{self, FrameError, MAX_PROC_FRAME, ProcMsg};

/// The first bytes of a checkpoint file.
pub const MAGIC: [u8; 8] = *b"MOSIXCKP";
/// The version of the format this build writes and reads.
pub const VERSION: u32 = 1;
/// The bytes before the digest at the end of a file.
pub const TRAILER: [u8; 8] = *b"MOSIXEND";
/// The largest [`Meta`] frame.
pub const MAX_META_FRAME: usize = 4 << 20;
/// The most descriptors a checkpoint records.
pub const MAX_FDS: usize = 4096;
/// The longest path or text of one descriptor (bytes).
pub const MAX_TEXT: usize = 4096;
/// The largest environment kept (bytes; the whole environment is in the memory anyway, this
/// copy is for `mosrun -I`).
pub const MAX_ENV: usize = 256 << 10;

/// The end of the page runs in an image file.
const END: u32 = u32::MAX;

/// What a checkpoint says of the process, besides its memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// When it was taken, ms since the Unix epoch.
    pub taken_ms: u64,
    /// The node it was taken on (the process's home).
    pub node: u16,
    /// The process's pid then.
    pub pid: u32,
    /// Its real uid and gid: a checkpoint is resumed only as that user.
    pub uid: u32,
    /// Its real gid.
    pub gid: u32,
    /// Its command line, words joined by spaces (for people).
    pub command: String,
    /// The kernel it was taken on (`uname -r` and `-v`): the process's vDSO belongs to it.
    pub kernel: String,
    /// Its working directory.
    pub cwd: String,
    /// Its umask.
    pub umask: u32,
    /// Its environment as the kernel shows it (NUL-separated; cut at [`MAX_ENV`]).
    #[serde(with = "serde_bytes")]
    pub env: Vec<u8>,
    /// Its open descriptors.
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_FDS>")]
    pub fds: Vec<Fd>,
    /// Bytes of memory in the image.
    pub image_bytes: u64,
    /// Why it was taken (`migrate checkpoint`, `periodic (-A)`, ...).
    pub why: String,
}

/// One open descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fd {
    /// Its number.
    pub fd: i32,
    /// Close-on-exec.
    pub cloexec: bool,
    /// What it is.
    pub kind: FdKind,
}

/// What a descriptor is, as far as resuming it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FdKind {
    /// A regular file: reopened at its path, offset and flags.
    File {
        /// Its path.
        path: String,
        /// The open flags (`O_ACCMODE`, `O_APPEND`, ...).
        flags: i32,
        /// The offset.
        pos: u64,
        /// What it was when the checkpoint was taken.
        seen: FileSeen,
    },
    /// A directory (reopened at its path).
    Dir {
        /// Its path.
        path: String,
    },
    /// A device other than a terminal (`/dev/null`, ...): reopened at its path and flags.
    Device {
        /// Its path.
        path: String,
        /// The open flags.
        flags: i32,
    },
    /// A terminal: on resuming, the resuming `mosrun`'s own descriptor of that number, if it
    /// has one.
    Tty {
        /// Its path then.
        path: String,
    },
    /// A pipe, a socket, a file deleted since it was opened, an anonymous inode: what cannot be
    /// reopened (closed on resuming, or what `-O` says).
    Gone {
        /// What it was (`pipe:[123]`, `socket:[456]`, `/tmp/x (deleted)`).
        what: String,
        /// The open flags (the access mode a file given with `-O` is opened with).
        flags: i32,
    },
}

/// A regular file as it was when the checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSeen {
    /// Its size.
    pub size: u64,
    /// Its modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
}

impl FileSeen {
    /// How `now` differs from what was seen, in words (`None`: the same file, unchanged).
    pub fn changed(&self, now: &FileSeen) -> Option<String> {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            return Some("it is another file now (device and inode differ)".into());
        }
        if self.size != now.size {
            return Some(format!(
                "its size was {} and is {} now",
                self.size, now.size
            ));
        }
        if self.mtime_ns != now.mtime_ns {
            return Some("it was modified since".into());
        }
        None
    }
}

impl FdKind {
    /// The open flags recorded (a directory's and a terminal's: read-write).
    pub fn flags(&self) -> i32 {
        match self {
            FdKind::File { flags, .. }
            | FdKind::Device { flags, .. }
            | FdKind::Gone { flags, .. } => *flags,
            FdKind::Dir { .. } => nix::libc::O_RDONLY,
            FdKind::Tty { .. } => nix::libc::O_RDWR,
        }
    }

    /// The path it was opened at, if it has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            FdKind::File { path, .. }
            | FdKind::Dir { path }
            | FdKind::Device { path, .. }
            | FdKind::Tty { path } => Some(path),
            FdKind::Gone { .. } => None,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            FdKind::File {
                path, flags, pos, ..
            } => format!("{path} at offset {pos} ({})", access(*flags)),
            FdKind::Dir { path } => format!("directory {path}"),
            FdKind::Device { path, flags } => format!("{path} ({})", access(*flags)),
            FdKind::Tty { path } => format!("terminal {path}"),
            FdKind::Gone { what, .. } => format!("{what}: cannot be reopened"),
        }
    }
}

/// The access mode of open flags, in words.
pub fn access(flags: i32) -> &'static str {
    let append = flags & nix::libc::O_APPEND != 0;
    match (flags & nix::libc::O_ACCMODE, append) {
        (nix::libc::O_RDONLY, _) => "read",
        (nix::libc::O_WRONLY, false) => "write",
        (nix::libc::O_WRONLY, true) => "append",
        (_, false) => "read-write",
        (_, true) => "read-append",
    }
}

/// Why a checkpoint file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing it.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a checkpoint.
    #[error("not a MOSIX checkpoint file")]
    NotCheckpoint,
    /// Another version of the format.
    #[error(
        "a checkpoint of format version {found}, this build reads version {VERSION} ({})",
        if *found < VERSION { "an older MOSIX wrote it" } else { "a newer MOSIX wrote it" }
    )]
    Version {
        /// The file's version.
        found: u32,
    },
    /// A frame of it is bad.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// Its contents break a bound or a rule.
    #[error("{0}")]
    Invalid(String),
    /// It was cut short or changed after it was written.
    #[error("it is damaged: {0}")]
    Damaged(String),
}

impl Meta {
    /// Checks the counts and lengths a decoded record may carry.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        let bad = |s: String| Err(CheckpointError::Invalid(s));
        if self.fds.len() > MAX_FDS {
            return bad(format!(
                "{} descriptors exceed the {MAX_FDS} a checkpoint records",
                self.fds.len()
            ));
        }
        if self.env.len() > MAX_ENV {
            return bad(format!("an environment of {} bytes", self.env.len()));
        }
        let texts = [&self.command, &self.kernel, &self.cwd, &self.why];
        if texts.iter().any(|t| t.len() > MAX_TEXT) {
            return bad("a text of more than 4096 bytes".into());
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.fds {
            if f.fd < 0 || !seen.insert(f.fd) {
                return bad(format!("descriptor {} is negative or twice", f.fd));
            }
            let text = match &f.kind {
                FdKind::Gone { what, .. } => what,
                k => k.path().unwrap_or_default(),
            };
            if text.len() > MAX_TEXT {
                return bad(format!(
                    "descriptor {} is described in more than {MAX_TEXT} bytes",
                    f.fd
                ));
            }
        }
        Ok(())
    }
}

/// A writer that hashes what passes (SHA-256).
pub struct Hashing<W> {
    inner: W,
    digest: aws_lc_rs::digest::Context,
    /// Bytes written.
    pub bytes: u64,
}

impl<W> Hashing<W> {
    /// Hashes what goes to (or comes from) `inner`.
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            digest: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            bytes: 0,
        }
    }

    /// The digest so far, and the inner writer or reader.
    pub fn finish(self) -> ([u8; 32], W) {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.digest.finish().as_ref());
        (out, self.inner)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Writes the start of a checkpoint: the magic, the version and the record.
pub fn write_meta(w: &mut impl Write, meta: &Meta) -> std::io::Result<()> {
    w.write_all(&MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    w.write_all(&proto::encode(meta))
}

/// Reads the start of a checkpoint: refuses another format or version before decoding, and
/// checks the record's bounds.
pub fn read_meta(r: &mut impl Read) -> Result<Meta, CheckpointError> {
    let mut magic = [0u8; 8];
    read_or_short(r, &mut magic, "its start")?;
    if magic != MAGIC {
        return Err(CheckpointError::NotCheckpoint);
    }
    let mut v = [0u8; 4];
    read_or_short(r, &mut v, "its version")?;
    let v = u32::from_le_bytes(v);
    if v != VERSION {
        return Err(CheckpointError::Version { found: v });
    }
    let frame = read_frame(r, MAX_META_FRAME)?;
    let meta: Meta = proto::decode_frame(&frame, MAX_META_FRAME)?;
    meta.validate()?;
    Ok(meta)
}

fn read_or_short(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), CheckpointError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            CheckpointError::Damaged(format!("it ends before {what}"))
        } else {
            CheckpointError::Io(e)
        }
    })
}

/// Reads one frame (header and payload) of at most `limit` bytes of payload.
fn read_frame(r: &mut impl Read, limit: usize) -> Result<Vec<u8>, CheckpointError> {
    let mut head = [0u8; proto::HEADER_LEN];
    read_or_short(r, &mut head, "a frame")?;
    let len = proto::decode_header(&head, limit)?;
    let mut frame = head.to_vec();
    frame.resize(proto::HEADER_LEN + len, 0);
    read_or_short(r, &mut frame[proto::HEADER_LEN..], "the end of a frame")?;
    Ok(frame)
}

/// Writes a process image in the freeze-file format: the header, then page runs, then
/// [`ImageWriter::end`].
pub struct ImageWriter<W> {
    w: W,
}

impl<W: Write> ImageWriter<W> {
    /// Starts an image with its header.
    pub fn new(mut w: W, header: &ImageHeader) -> std::io::Result<ImageWriter<W>> {
        w.write_all(&proto::encode(&ProcMsg::Image(Box::new(header.clone()))))?;
        Ok(ImageWriter { w })
    }

    /// One page run: `data` at `offset` of area `vma`.
    pub fn run(&mut self, vma: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(data.len()).map_err(std::io::Error::other)?;
        self.w.write_all(&vma.to_le_bytes())?;
        self.w.write_all(&offset.to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(data)
    }

    /// The end mark; the writer back.
    pub fn end(mut self) -> std::io::Result<W> {
        self.w.write_all(&END.to_le_bytes())?;
        Ok(self.w)
    }
}

/// Reads a process image written by [`ImageWriter`], with the bounds of an image arriving
/// over the network: one header frame under [`MAX_PROC_FRAME`], validated; runs under
/// [`MAX_RUN`] in areas of the image.
pub struct ImageReader<R> {
    r: R,
    /// The image's header.
    pub header: ImageHeader,
    done: bool,
}

impl<R: Read> ImageReader<R> {
    /// Reads and checks the header.
    pub fn new(mut r: R) -> Result<ImageReader<R>, CheckpointError> {
        let frame = read_frame(&mut r, MAX_PROC_FRAME)?;
        let header = match proto::decode_frame(&frame, MAX_PROC_FRAME)? {
            ProcMsg::Image(h) => *h,
            _ => return Err(CheckpointError::Invalid("no process image".into())),
        };
        header
            .validate()
            .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
        Ok(ImageReader {
            r,
            header,
            done: false,
        })
    }

    /// The next page run into `buf` (resized to it): its area and offset; `None` at the end.
    pub fn next_run(&mut self, buf: &mut Vec<u8>) -> Result<Option<(u32, u64)>, CheckpointError> {
        if self.done {
            return Ok(None);
        }
        let mut w = [0u8; 4];
        read_or_short(&mut self.r, &mut w, "the end of the memory")?;
        let vma = u32::from_le_bytes(w);
        if vma == END {
            self.done = true;
            return Ok(None);
        }
        let mut o = [0u8; 8];
        read_or_short(&mut self.r, &mut o, "the end of the memory")?;
        read_or_short(&mut self.r, &mut w, "the end of the memory")?;
        let len = u32::from_le_bytes(w) as usize;
        if vma as usize >= self.header.vmas.len() || len > MAX_RUN {
            return Err(CheckpointError::Invalid(format!(
                "a page run of {len} bytes in area {vma} of {}",
                self.header.vmas.len()
            )));
        }
        buf.resize(len, 0);
        read_or_short(&mut self.r, buf, "the end of the memory")?;
        Ok(Some((vma, u64::from_le_bytes(o))))
    }

    /// The reader back (after the end mark).
    pub fn into_inner(self) -> R {
        self.r
    }
}

/// Writes the end of a checkpoint: [`TRAILER`] and the digest of all before it.
pub fn write_trailer<W: Write>(w: Hashing<W>) -> std::io::Result<W> {
    let (digest, mut inner) = w.finish();
    inner.write_all(&TRAILER)?;
    inner.write_all(&digest)?;
    Ok(inner)
}

/// Checks the end of a checkpoint read through `r`: the trailer, the digest, and nothing after.
pub fn check_trailer<R: Read>(r: Hashing<R>) -> Result<(), CheckpointError> {
    let (digest, mut inner) = r.finish();
    let mut t = [0u8; 40];
    read_or_short(&mut inner, &mut t, "its digest")?;
    if t[..8] != TRAILER {
        return Err(CheckpointError::Damaged(
            "no end mark after the memory".into(),
        ));
    }
    if t[8..] != digest {
        return Err(CheckpointError::Damaged(
            "its digest does not match its contents".into(),
        ));
    }
    let mut more = [0u8; 1];
    if inner.read(&mut more)? != 0 {
        return Err(CheckpointError::Damaged("bytes follow its end".into()));
    }
    Ok(())
}

/// The file a checkpoint of a process started with `-C BASE` goes to: `BASE.N` for the Nth.
pub fn numbered(base: &str, n: u32) -> String {
    format!("{base}.{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            taken_ms: 1,
            node: 1,
            pid: 42,
            uid: 1000,
            gid: 1000,
            command: "gzip -9".into(),
            kernel: "6.1 #1".into(),
            cwd: "/home/u".into(),
            umask: 0o022,
            env: b"A=1\0B=2\0".to_vec(),
            fds: vec![
                Fd {
                    fd: 0,
                    cloexec: false,
                    kind: FdKind::File {
                        path: "/home/u/in".into(),
                        flags: nix::libc::O_RDONLY,
                        pos: 4096,
                        seen: FileSeen {
                            size: 10_000,
                            mtime_ns: 5,
                            dev: 1,
                            ino: 2,
                        },
                    },
                },
                Fd {
                    fd: 3,
                    cloexec: true,
                    kind: FdKind::Gone {
                        what: "pipe:[7]".into(),
                        flags: nix::libc::O_WRONLY,
                    },
                },
            ],
            image_bytes: 0,
            why: "migrate checkpoint".into(),
        }
    }

    #[test]
    fn the_record_reads_back_and_another_version_or_format_is_refused_first() {
        let mut out = Vec::new();
        write_meta(&mut out, &meta()).unwrap();
        assert_eq!(read_meta(&mut &out[..]).unwrap(), meta());
        let mut old = out.clone();
        old[8..12].copy_from_slice(&0u32.to_le_bytes());
        let e = read_meta(&mut &old[..]).unwrap_err().to_string();
        assert!(e.contains("version 0") && e.contains("older"), "{e}");
        let mut new = out.clone();
        new[8..12].copy_from_slice(&9u32.to_le_bytes());
        let e = read_meta(&mut &new[..]).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
        let e = read_meta(&mut &b"#!/bin/sh\necho hi\n"[..]).unwrap_err();
        assert!(matches!(e, CheckpointError::NotCheckpoint));
        let e = read_meta(&mut &out[..20]).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }

    #[test]
    fn a_record_past_its_bounds_is_refused() {
        let mut m = meta();
        m.fds.push(m.fds[0].clone());
        assert!(m.validate().unwrap_err().to_string().contains("twice"));
        let mut m = meta();
        m.cwd = "x".repeat(MAX_TEXT + 1);
        assert!(m.validate().is_err());
    }

    #[test]
    fn the_digest_finds_a_cut_or_a_change() {
        let mut w = Hashing::new(Vec::new());
        write_meta(&mut w, &meta()).unwrap();
        w.write_all(b"memory").unwrap();
        let file = write_trailer(w).unwrap();
        let check = |bytes: &[u8]| {
            let mut r = Hashing::new(bytes);
            read_meta(&mut r)?;
            let mut body = [0u8; 6];
            r.read_exact(&mut body)?;
            check_trailer(r)
        };
        check(&file).unwrap();
        let mut changed = file.clone();
        let at = file.len() - 45;
        changed[at] ^= 1;
        assert!(check(&changed).unwrap_err().to_string().contains("digest"));
        assert!(check(&file[..file.len() - 1]).is_err());
        let mut longer = file.clone();
        longer.push(0);
        assert!(check(&longer).unwrap_err().to_string().contains("follow"));
    }

    #[test]
    fn a_changed_file_is_named_by_what_changed() {
        let s = FileSeen {
            size: 1,
            mtime_ns: 2,
            dev: 3,
            ino: 4,
        };
        assert_eq!(s.changed(&s), None);
        assert!(
            s.changed(&FileSeen { size: 9, ..s })
                .unwrap()
                .contains("size")
        );
        assert!(
            s.changed(&FileSeen { ino: 9, ..s })
                .unwrap()
                .contains("another file")
        );
        assert!(
            s.changed(&FileSeen { mtime_ns: 9, ..s })
                .unwrap()
                .contains("modified")
        );
    }
}
