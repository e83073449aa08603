//! `mosrun -R FILE [-O FD=FILE,...] [--changed-ok]`: this process becomes the checkpointed one.
//!
//! mosrun reads the checkpoint's record with the user's rights, puts the descriptors in place
//! as the record says (each regular file reopened at its path, flags and offset; a file it read
//! that changed since the checkpoint is refused unless `--changed-ok`, one it writes is said
//! and written again from its offset; a standard descriptor whose file the user cannot open is
//! mosrun's own, said; terminals, and standard descriptors
//! that were pipes or sockets, are mosrun's own; other pipes and sockets are closed, or opened
//! on the file `-O` names), enters the working directory, sets the umask, and asks the node
//! service to rebuild the memory, registers and signal state in this very process. It keeps
//! its pid and parent from then on: the process of the user who asked, never with more rights.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use mosix_core::checkpoint::{self, FdKind, FileSeen, ImageReader};
use mosix_core::client::Client;
use mosix_core::config::Paths;
use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::sys::stat::Mode;

/// Parses `-O 1=out.txt,3=log` into descriptor numbers and files.
pub fn parse_reopen(list: &str) -> Result<Vec<(RawFd, PathBuf)>, String> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (fd, file) = p
                .split_once('=')
                .ok_or_else(|| format!("'{p}' is not FD=FILE"))?;
            let fd: RawFd = fd
                .parse()
                .map_err(|_| format!("'{fd}' is not a descriptor number"))?;
            if fd < 0 || file.is_empty() {
                return Err(format!("'{p}' is not FD=FILE"));
            }
            Ok((fd, PathBuf::from(file)))
        })
        .collect()
}

/// What goes at one descriptor number.
enum Place {
    /// A descriptor opened for it.
    Open(OwnedFd),
    /// mosrun's own of that number, as it is.
    Own,
}

pub fn run(file: &Path, reopen: &[(RawFd, PathBuf)], changed_ok: bool) -> Result<ExitCode> {
    let file = std::path::absolute(file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let name = file.display().to_string();
    let f = std::fs::File::open(&file).map_err(|e| anyhow!("{name}: {e}"))?;
    let mut r = BufReader::new(f);
    let meta = checkpoint::read_meta(&mut r).map_err(|e| anyhow!("{name}: {e}"))?;
    let header = ImageReader::new(&mut r)
        .map_err(|e| anyhow!("{name}: {e}"))?
        .header;
    drop(r);
    become_owner(meta.uid, meta.gid, &header.creds.groups)?;
    let mut opened: HashMap<RawFd, Place> = HashMap::new();
    let mut changed = Vec::new();
    let given: HashMap<RawFd, &PathBuf> = reopen.iter().map(|(fd, p)| (*fd, p)).collect();
    for (fd, path) in &given {
        if !meta.fds.iter().any(|f| f.fd == *fd) {
            bail!(
                "-O {fd}={}: the process had no descriptor {fd}",
                path.display()
            );
        }
    }
    for rec in &meta.fds {
        let flags = OFlag::from_bits_truncate(rec.kind.flags())
            & !(OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_TRUNC | OFlag::O_NOCTTY);
        let place = if let Some(path) = given.get(&rec.fd) {
            // A file of the user's choice, with the descriptor's access mode.
            let writes = rec.kind.flags() & libc::O_ACCMODE != libc::O_RDONLY;
            let extra = if writes {
                OFlag::O_CREAT
            } else {
                OFlag::empty()
            };
            let fd = open(path, flags | extra)?;
            if let FdKind::File { pos, .. } = &rec.kind {
                seek(&fd, *pos, path)?;
            }
            Place::Open(fd)
        } else {
            match &rec.kind {
                FdKind::File { path, .. } | FdKind::Dir { path } | FdKind::Device { path, .. } => {
                    let how = match rec.kind {
                        FdKind::Dir { .. } => OFlag::O_DIRECTORY,
                        _ => flags,
                    };
                    match open(Path::new(path), how) {
                        // A standard descriptor the user cannot open by its path (an inherited
                        // log of someone else's): this mosrun's own, as for a pipe.
                        Err(e) if rec.fd <= 2 => {
                            eprintln!(
                                "mosrun: descriptor {}: {e}; mosrun's own descriptor {} is used",
                                rec.fd, rec.fd
                            );
                            Place::Own
                        }
                        Err(e) => bail!(
                            "descriptor {}: {e} (-O {}=FILE gives it another file)",
                            rec.fd,
                            rec.fd
                        ),
                        Ok(fd) => {
                            if let FdKind::File { pos, seen, .. } = &rec.kind {
                                if let Some(why) = seen.changed(&seen_now(&fd)?) {
                                    let note = format!("descriptor {} ({path}): {why}", rec.fd);
                                    // What the process reads must be what it read; what it
                                    // writes it writes again from its offset.
                                    if rec.kind.flags() & libc::O_ACCMODE == libc::O_RDONLY {
                                        changed.push(note);
                                    } else {
                                        eprintln!(
                                            "mosrun: {note}; the process writes it again from offset {pos}"
                                        );
                                    }
                                }
                                seek(&fd, *pos, Path::new(path))?;
                            }
                            Place::Open(fd)
                        }
                    }
                }
                FdKind::Tty { .. } => Place::Own,
                FdKind::Gone { .. } if rec.fd <= 2 => Place::Own,
                FdKind::Gone { what, .. } => {
                    eprintln!(
                        "mosrun: descriptor {} ({what}) cannot be reopened: closed (-O {}=FILE gives it a file)",
                        rec.fd, rec.fd
                    );
                    continue;
                }
            }
        };
        opened.insert(rec.fd, place);
    }
    if !changed.is_empty() && !changed_ok {
        bail!(
            "{name}: files changed since the checkpoint (--changed-ok resumes anyway):\n  {}",
            changed.join("\n  ")
        );
    }
    for c in &changed {
        eprintln!("mosrun: resuming although {c}");
    }
    nix::unistd::chdir(Path::new(&meta.cwd))
        .map_err(|e| anyhow!("its working directory {}: {}", meta.cwd, e.desc()))?;
    nix::sys::stat::umask(Mode::from_bits_truncate(meta.umask));
    let mut client = Client::connect(&Paths::from_env())?;
    // Out of the way: every descriptor and the connection to the service above the highest
    // number the process had.
    let above = meta.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2) + 1;
    let mut staged: Vec<(RawFd, OwnedFd)> = Vec::new();
    for (fd, place) in opened.iter_mut() {
        if let Place::Open(o) = place {
            staged.push((*fd, dup_above(o.as_fd(), above)?));
        }
    }
    let sock = dup_above(client.socket(), above)?;
    client.replace_socket(std::os::unix::net::UnixStream::from(sock));
    let keep_sock = client.socket().as_raw_fd();
    let own: Vec<RawFd> = opened
        .iter()
        .filter(|(_, p)| matches!(p, Place::Own))
        .map(|(fd, _)| *fd)
        .collect();
    drop(opened);
    for (fd, o) in &staged {
        // SAFETY: dup2(2) on two descriptors of this process; `fd` is a number the process
        // had, which this single-threaded mosrun does not use for anything else.
        if unsafe { libc::dup2(o.as_raw_fd(), *fd) } < 0 {
            bail!(
                "putting descriptor {fd} in place: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let wanted: HashMap<RawFd, bool> = meta.fds.iter().map(|f| (f.fd, f.cloexec)).collect();
    let placed: Vec<RawFd> = staged.iter().map(|(fd, _)| *fd).collect();
    drop(staged);
    // Every other descriptor goes; each kept one gets its close-on-exec flag.
    for fd in open_fds() {
        if fd == keep_sock {
            continue;
        }
        let keep = placed.contains(&fd) || own.contains(&fd);
        if !keep {
            // SAFETY: close(2) of a descriptor of this process nothing here holds any more.
            unsafe { libc::close(fd) };
            continue;
        }
        let flag = if wanted.get(&fd).copied().unwrap_or(false) {
            FdFlag::FD_CLOEXEC
        } else {
            FdFlag::empty()
        };
        // SAFETY: the descriptor is open (listed just now) and stays open during the call.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(b, FcntlArg::F_SETFD(flag))
            .map_err(|e| anyhow!("descriptor {fd}: {}", e.desc()))?;
    }
    let e = client.restore(&name);
    eprintln!("mosrun: {name}: {e}");
    Ok(ExitCode::FAILURE)
}

/// Switches to the checkpoint's owner if this is root; refuses another user's checkpoint.
fn become_owner(uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    let me = nix::unistd::getuid().as_raw();
    if me == uid {
        return Ok(());
    }
    if me != 0 {
        bail!("a checkpoint of uid {uid}: only that user (or root, as that user) resumes it");
    }
    let gids: Vec<nix::unistd::Gid> = groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let (u, g) = (
        nix::unistd::Uid::from_raw(uid),
        nix::unistd::Gid::from_raw(gid),
    );
    nix::unistd::setgroups(&gids)
        .and_then(|()| nix::unistd::setresgid(g, g, g))
        .and_then(|()| nix::unistd::setresuid(u, u, u))
        .map_err(|e| anyhow!("becoming uid {uid}: {}", e.desc()))
}

fn open(path: &Path, flags: OFlag) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o666),
    )
    .map_err(|e| anyhow!("{}: {}", path.display(), e.desc()))
}

fn seek(fd: &OwnedFd, pos: u64, path: &Path) -> Result<()> {
    let off = i64::try_from(pos).map_err(|_| anyhow!("{}: offset {pos}", path.display()))?;
    nix::unistd::lseek(fd, off, nix::unistd::Whence::SeekSet)
        .map_err(|e| anyhow!("{}: offset {pos}: {}", path.display(), e.desc()))?;
    Ok(())
}

fn seen_now(fd: &OwnedFd) -> Result<FileSeen> {
    let s = nix::sys::stat::fstat(fd).map_err(|e| anyhow!("{}", e.desc()))?;
    Ok(FileSeen {
        size: s.st_size as u64,
        mtime_ns: s.st_mtime.saturating_mul(1_000_000_000) + s.st_mtime_nsec,
        dev: s.st_dev,
        ino: s.st_ino,
    })
}

/// A duplicate of `fd` numbered `min` or more, close-on-exec.
fn dup_above(fd: std::os::fd::BorrowedFd<'_>, min: RawFd) -> Result<OwnedFd> {
    let n = nix::fcntl::fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))
        .map_err(|e| anyhow!("moving a descriptor: {}", e.desc()))?;
    // SAFETY: F_DUPFD_CLOEXEC just made descriptor `n`; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The descriptors open in this process.
fn open_fds() -> Vec<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_lists() {
        assert_eq!(
            parse_reopen("1=out.txt,3=/tmp/log").unwrap(),
            vec![
                (1, PathBuf::from("out.txt")),
                (3, PathBuf::from("/tmp/log"))
            ]
        );
        assert!(parse_reopen("x=1").is_err());
        assert!(parse_reopen("1").is_err());
        assert!(parse_reopen("1=").is_err());
    }
}
