//! Freezing a process at home (`migrate PID freeze`): its memory goes to a file in the node's
//! freeze area and leaves RAM; `migrate PID continue` (or `home`) brings it back.
//!
//! A frozen process is a migrated process whose "remote" is a *keeper* on this very node: the
//! deputy sends it away exactly as to another node (the image and its pages over a process
//! connection, here a sealed loopback pair made for it, [`crate::link::local_pair`]), and
//! stands in for it as for any process away — its pid, parent, descriptors and terminal stay,
//! its memory is released. The keeper writes what arrives to a file and holds the connection:
//!
//! - a signal home forwards (every one but `SIGKILL`, which ends the deputy at once) is kept
//!   and sent back when the process continues, as a remote sends home the signals it could not
//!   deliver before leaving (at most [`MAX_MOVED_SIGNALS`]; repeats of a standard signal are
//!   one, as the kernel keeps them);
//! - "come home" makes it send the image back from the file, as a remote coming home does; the
//!   file is removed once home runs the process again;
//! - the deputy's end (the process killed, `kill -9`) or a broken connection removes the file;
//! - a move on to another node is refused (continue it first).
//!
//! The file: `DIR/UID/PID.frz` (the directory root's, 0700; the file 0600), holding the image
//! header as one frame ([`proto::encode`]) and then each page run as its area, offset, length
//! and bytes. It is written as the pages arrive (bounded memory: one run at a time), synced,
//! and dropped from the page cache, so that freezing frees memory rather than moving it to the
//! cache. It is read back with the same bounds as a process arriving over the network.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mosix_core::NodeId;
use mosix_core::checkpoint::{ImageReader, ImageWriter};
use mosix_core::moves::MoveFailure;
use mosix_core::proto::{MAX_MOVED_SIGNALS, ProcMsg};
use tracing::{info, warn};

use crate::link::channel::{self, Receiver, Sender};
use crate::split::failure;

/// Where frozen processes' memory goes (`[freeze]` of mosix.toml).
#[derive(Debug, Clone)]
pub struct FreezeArea {
    /// The directory.
    pub dir: PathBuf,
    /// The most MiB one user may have frozen here (0: no limit).
    pub max_user_mib: u64,
}

impl FreezeArea {
    /// The user's directory, made if needed (root's, 0700, as is the area).
    fn user_dir(&self, uid: u32) -> std::io::Result<PathBuf> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let d = self.dir.join(uid.to_string());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)?;
        Ok(d)
    }

    /// Bytes the user has frozen here now.
    fn used_by(&self, uid: u32) -> u64 {
        std::fs::read_dir(self.dir.join(uid.to_string()))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The file for process `pid` of `uid`, `bytes` big, if the user's limit allows it.
    pub fn file_for(&self, uid: u32, pid: i32, bytes: u64) -> Result<PathBuf, String> {
        if self.max_user_mib > 0 {
            let used = self.used_by(uid);
            let limit = self.max_user_mib << 20;
            if used.saturating_add(bytes) > limit {
                return Err(format!(
                    "uid {uid} has {} MiB frozen here; {} MiB more would pass the limit of {} MiB (freeze.max_user_mib)",
                    used >> 20,
                    bytes.div_ceil(1 << 20),
                    self.max_user_mib
                ));
            }
        }
        let dir = self
            .user_dir(uid)
            .map_err(|e| format!("the freeze area {}: {e}", self.dir.display()))?;
        Ok(dir.join(format!("{pid}.frz")))
    }
}

/// Keeps the process arriving on `conn` (from its deputy on this node) frozen in `path` until
/// it continues, ends, or the connection breaks. Runs on its own thread.
pub fn keep(conn: crate::link::Conn, path: PathBuf, me: NodeId) {
    let (tx, mut rx) = match channel::split(conn) {
        Ok(x) => x,
        Err(e) => {
            warn!("freezing: {e}");
            return;
        }
    };
    let started = Instant::now();
    let comm = match store(&mut rx, &path) {
        Ok(comm) => comm,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            let _ = tx.send(&ProcMsg::Refused {
                failure: failure::kernel(format!(
                    "its memory could not be written to {}: {e}",
                    path.display()
                )),
            });
            return;
        }
    };
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    info!(
        "{comm} frozen to {} ({} MiB in {:.0} ms)",
        path.display(),
        size >> 20,
        started.elapsed().as_secs_f64() * 1000.0
    );
    if tx.send(&ProcMsg::Started { pid: 0 }).is_err() {
        let _ = std::fs::remove_file(&path);
        return;
    }
    let mut held: Vec<i32> = Vec::new();
    loop {
        match rx.recv() {
            Ok(ProcMsg::Signal { sig } | ProcMsg::OrphanedStop { sig }) => {
                let standard = sig < libc::SIGRTMIN();
                if !(standard && held.contains(&sig)) && held.len() < MAX_MOVED_SIGNALS {
                    held.push(sig);
                }
            }
            Ok(ProcMsg::ComeHome { .. }) => match thaw(&tx, &mut rx, &path) {
                Ok(true) => {
                    for sig in held {
                        let _ = tx.send(&ProcMsg::Signal { sig });
                    }
                    let _ = std::fs::remove_file(&path);
                    info!("{comm} continues at home ({})", path.display());
                    return;
                }
                Ok(false) => warn!("{comm}: home did not take it back; it stays frozen"),
                Err(e) => {
                    warn!(
                        "{comm}: continuing it failed ({e}); {} kept",
                        path.display()
                    );
                    return;
                }
            },
            Ok(ProcMsg::MoveTo { .. }) => {
                let _ = tx.send(&ProcMsg::MoveFailed {
                    failure: failure::refused(
                        me,
                        "it is frozen: continue it first (migrate PID continue)",
                    ),
                });
            }
            Ok(ProcMsg::Kill) | Err(_) => {
                let _ = std::fs::remove_file(&path);
                info!("{comm}, frozen, ended; {} removed", path.display());
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Writes the image arriving on `rx` to a new file at `path`; its command name.
fn store(rx: &mut Receiver, path: &Path) -> Result<String, String> {
    let h = match rx.recv() {
        Ok(ProcMsg::Image(h)) => *h,
        Ok(other) => return Err(format!("the deputy sent {other:?} first")),
        Err(e) => return Err(e.to_string()),
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| e.to_string();
    let mut w = ImageWriter::new(BufWriter::with_capacity(1 << 20, &file), &h).map_err(io)?;
    let mut buf = Vec::new();
    loop {
        match rx.recv() {
            Ok(ProcMsg::Pages { vma, offset, len }) => {
                buf.resize(len as usize, 0);
                rx.recv_raw(&mut buf).map_err(|e| e.to_string())?;
                w.run(vma, offset, &buf).map_err(io)?;
            }
            Ok(ProcMsg::End) => break,
            Ok(other) => return Err(format!("the deputy sent {other:?} among the pages")),
            Err(e) => return Err(e.to_string()),
        }
    }
    w.end().map_err(io)?.flush().map_err(io)?;
    file.sync_data().map_err(io)?;
    // Out of the page cache too: what is frozen is not to take RAM.
    let _ = nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    Ok(h.comm)
}

/// Sends the frozen image home and waits for home's answer: whether it runs the process again.
fn thaw(tx: &Sender, rx: &mut Receiver, path: &Path) -> Result<bool, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = ImageReader::new(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tx.send(&ProcMsg::Image(Box::new(r.header.clone())))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    while let Some((vma, offset)) = r
        .next_run(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        tx.send_run(vma, offset, &mut buf)
            .map_err(|e| e.to_string())?;
    }
    tx.send(&ProcMsg::End).map_err(|e| e.to_string())?;
    loop {
        match rx.recv() {
            Ok(ProcMsg::Started { .. }) => return Ok(true),
            Ok(ProcMsg::Refused { failure }) => {
                warn!("home refused to take the frozen process back: {failure}");
                return Ok(false);
            }
            // Signals while it is on its way: home has them once it runs there (its deputy
            // stood in meanwhile); nothing else is expected.
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Ships a frozen process to a keeper on this node (see the module): what [`crate::split::ship::ship`]
/// does for another node.
pub fn ship(
    frozen: &crate::freezer::freeze::Frozen,
    me: NodeId,
    area: &FreezeArea,
) -> Result<crate::split::ship::Shipped, MoveFailure> {
    let pid = frozen.header.cached.pid as i32;
    let uid = frozen.header.creds.uid[0];
    let path = area
        .file_for(uid, pid, frozen.header.total_bytes)
        .map_err(|e| failure::refused(me, e))?;
    let (client, server) =
        crate::link::local_pair(me).map_err(|e| failure::kernel(format!("freezing: {e}")))?;
    let p = path.clone();
    std::thread::Builder::new()
        .name(format!("mosix-frozen-{pid}"))
        .spawn(move || keep(server, p, me))
        .map_err(|e| failure::kernel(format!("cannot start a thread: {e}")))?;
    let (tx, mut rx) =
        channel::split(client).map_err(|e| failure::kernel(format!("freezing: {e}")))?;
    let started = Instant::now();
    frozen.send(&tx).map_err(|e| {
        failure::kernel(format!("writing it to {} broke off ({e})", path.display()))
    })?;
    let sent = Instant::now();
    match rx.recv() {
        Ok(ProcMsg::Started { pid }) => Ok(crate::split::ship::Shipped {
            pid,
            tx,
            rx,
            sending: sent - started,
            starting: sent.elapsed(),
            bytes: frozen.header.total_bytes,
        }),
        Ok(ProcMsg::Refused { failure }) => Err(failure),
        Ok(other) => Err(failure::kernel(format!("the keeper answered {other:?}"))),
        Err(e) => Err(failure::kernel(format!("the keeper did not answer ({e})"))),
    }
}
