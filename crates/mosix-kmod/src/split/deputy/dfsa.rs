//! Home's side of direct file access (DFSA, `split/remote/dfsa.rs` and `here.rs` on the
//! remote): describing a descriptor the remote may adopt, listing the process's descriptor
//! numbers, and the placeholders and twins of files the process opened at its node.
//!
//! A file the process opens at the node where it runs is opened there, at the number home
//! would give (the remote keeps a copy of home's numbers, [`table`]). Home then holds a
//! placeholder at that number (an `O_PATH` descriptor of `/`: it takes the number, and any
//! call that reaches it at home fails loudly with `EBADF` rather than reading or writing
//! something else), and remembers the file's path. The file itself is opened at home — its
//! *twin*, through MFS — only when home needs it: when the process leaves that node, or when a
//! call that must run at home names the descriptor, or before the process removes or renames
//! the file's name there. All of it runs in the deputy through its agent, so it has the
//! process's own rights.

use std::collections::HashMap;

use mosix_core::proto::{Call, ProcMsg};
use tracing::warn;

use crate::kernel::agent::Agent;
use crate::split::forward;

/// The process's descriptor numbers and umask, for a remote that opens files where it runs.
pub(super) fn table(pid: i32) -> ProcMsg {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    let umask = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    ProcMsg::TableIs {
        fds: (fds.len() <= mosix_core::proto::MAX_TABLE_FDS).then_some(fds),
        umask,
    }
}

/// Files opened at the process's node that home holds only a placeholder for: their path as
/// the program named it, and the open flags.
pub(super) struct Twins {
    pid: i32,
    pending: HashMap<i32, (Vec<u8>, i32)>,
}

fn call(nr: i64, args: [u64; 6], path: Option<&[u8]>) -> Call {
    Call {
        nr: nr as u32,
        args,
        bufs: path.map(|p| vec![(1, p.to_vec())]).unwrap_or_default(),
        ahead: 0,
    }
}

/// Moves the descriptor `from`, just made, to number `to` with close-on-exec as `cloexec`
/// says (nothing to do if it already is there). Returns 0 or a negative errno.
fn put_at(agent: &Agent, from: i64, to: i32, cloexec: bool) -> i64 {
    if from < 0 || from == i64::from(to) {
        return from.min(0);
    }
    let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
    let r = forward::exec_service(
        &call(
            libc::SYS_dup3,
            [from as u64, to as u64, flags, 0, 0, 0],
            None,
        ),
        agent,
    )
    .ret;
    forward::exec_service(
        &call(libc::SYS_close, [from as u64, 0, 0, 0, 0, 0], None),
        agent,
    );
    r.min(0)
}

impl Twins {
    pub(super) fn new(pid: i32) -> Twins {
        Twins {
            pid,
            pending: HashMap::new(),
        }
    }

    /// The process opened `path` at its node, at number `fd`: a placeholder takes the number.
    pub(super) fn opened(&mut self, agent: &Agent, fd: i32, path: Vec<u8>, flags: i32) {
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let o = libc::O_PATH | libc::O_DIRECTORY | if cloexec { libc::O_CLOEXEC } else { 0 };
        let at = libc::AT_FDCWD as u64;
        let r = forward::exec_service(
            &call(libc::SYS_openat, [at, 0, o as u64, 0, 0, 0], Some(b"/")),
            agent,
        )
        .ret;
        let r = put_at(agent, r, fd, cloexec);
        if r < 0 {
            warn!(
                "process {}: no placeholder for descriptor {fd} ({}), opened at its node: {}",
                self.pid,
                String::from_utf8_lossy(&path),
                nix::errno::Errno::from_raw(-r as i32)
            );
        }
        self.pending.insert(fd, (path, flags));
    }

    /// The process closed `fd` at its node: home closes its number.
    pub(super) fn closed(&mut self, agent: &Agent, fd: i32) {
        self.pending.remove(&fd);
        forward::exec_service(
            &call(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0], None),
            agent,
        );
    }

    /// Opens the twin of `fd` (if home holds a placeholder for it) and sets its offset to
    /// `pos`: by its path, or with `held`, the remote's own open file through MFS (its name no
    /// longer leads to it). Returns 0 or the errno that stopped it, which home's log names
    /// with the file.
    pub(super) fn twin(
        &mut self,
        agent: &Agent,
        fd: i32,
        pos: u64,
        held: Option<&std::path::Path>,
    ) -> i32 {
        let Some((path, flags)) = self.pending.remove(&fd) else {
            return self.seek(agent, fd, pos, None);
        };
        let cloexec = flags & libc::O_CLOEXEC != 0;
        let o = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_TMPFILE))
            | libc::O_NOCTTY;
        let at = libc::AT_FDCWD as u64;
        let name = held.map_or(&path[..], |h| {
            std::os::unix::ffi::OsStrExt::as_bytes(h.as_os_str())
        });
        let r = forward::exec_service(
            &call(libc::SYS_openat, [at, 0, o as u64, 0, 0, 0], Some(name)),
            agent,
        )
        .ret;
        let r = put_at(agent, r, fd, cloexec);
        if r < 0 {
            warn!(
                "process {}: descriptor {fd}, {} opened at the node where it ran, cannot be opened at home ({}): calls on it at home fail with EBADF",
                self.pid,
                String::from_utf8_lossy(&path),
                nix::errno::Errno::from_raw(-r as i32)
            );
            return -r as i32;
        }
        self.seek(agent, fd, pos, Some(&path))
    }

    fn seek(&self, agent: &Agent, fd: i32, pos: u64, path: Option<&[u8]>) -> i32 {
        let r = forward::exec_service(
            &call(
                libc::SYS_lseek,
                [fd as u64, pos, libc::SEEK_SET as u64, 0, 0, 0],
                None,
            ),
            agent,
        )
        .ret;
        if r < 0 {
            warn!(
                "process {}: the offset {pos} of descriptor {fd} ({}) could not be set at home: {}",
                self.pid,
                path.map_or_else(|| "a file of its node".into(), String::from_utf8_lossy),
                nix::errno::Errno::from_raw(-r as i32)
            );
            return -r as i32;
        }
        0
    }
}

/// What descriptor `fd` of process `pid` is, for a remote that may open it where it runs
/// (DFSA): its path if it is a regular file, its flags and offset, and whether its open file
/// description is shared — with another descriptor of the process or of any other process
/// here (`kcmp`), in which case its offset must stay here.
pub(super) fn describe(pid: i32, fd: i32, fresh: bool) -> ProcMsg {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok();
    // A regular file that still has a name (one unlinked since its open has none to open
    // elsewhere: its readlink would name another file, or none).
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok();
    let regular = meta
        .as_ref()
        .is_some_and(|m| m.is_file() && std::os::unix::fs::MetadataExt::nlink(m) > 0);
    let mode = meta.map_or(0, |m| std::os::unix::fs::MetadataExt::mode(&m));
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("")
            .to_owned()
    };
    let pos = field("pos:").parse().unwrap_or(0);
    let flags = i32::from_str_radix(&field("flags:"), 8).unwrap_or(0);
    let path = link
        .filter(|_| regular)
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
        .filter(|p| p.len() <= mosix_core::syscalls::MAX_PATH);
    let shared = path.is_some() && !fresh && description_shared(pid, fd);
    ProcMsg::Described {
        fd,
        path,
        flags,
        pos,
        shared,
        mode,
    }
}

/// Whether the open file description of `pid`'s `fd` is also another descriptor's. The
/// service's own duplicates (of calls it makes on the deputy's descriptors, of writes it keeps)
/// do not count: they are the process's.
fn description_shared(pid: i32, fd: i32) -> bool {
    let me = std::process::id() as i32;
    let same = |other: i32, ofd: i32| {
        // SAFETY: kcmp(2) takes integers only.
        unsafe {
            libc::syscall(libc::SYS_kcmp, pid, other, 0 /* KCMP_FILE */, fd, ofd) == 0
        }
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    for p in procs.flatten() {
        let Some(other) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if other == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{other}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            let Some(ofd) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if (other, ofd) != (pid, fd) && same(other, ofd) {
                return true;
            }
        }
    }
    false
}
