//! The supervisor's side of direct file access ([`super::dfsa`]): letting calls on DFSA
//! descriptors run here, adopting descriptors the process had before it came, installing the
//! files home opened, and carrying offsets home.

use std::os::fd::AsRawFd;

use mosix_core::proto::ProcMsg;
use tracing::{debug, warn};

use super::supervisor::{End, Supervisor};
use crate::kernel::seccomp::Notif;
use crate::split::forward::Marshalled;

/// The supervisor's side of DFSA: running calls here, adopting, carrying offsets home.
impl Supervisor {
    /// A call on a DFSA descriptor: runs here if it is known to be safe (returns true); any
    /// other call that names one first carries its offset home and ends its DFSA (it then goes
    /// home as any other call).
    pub(super) fn dfsa_call(
        &mut self,
        n: &Notif,
        shape: &[mosix_core::syscalls::Arg; 6],
    ) -> Result<bool, End> {
        let Some(d) = &self.dfsa else {
            return Ok(false);
        };
        let nr = i64::from(n.nr);
        if let Some(fd) = d.adoptable(nr, &n.args) {
            self.adopt(n.id, fd)?;
        }
        let Some(d) = &mut self.dfsa else {
            return Ok(false);
        };
        let mem = &self.mem;
        let empty = || {
            let mut b = [1u8; 1];
            mem.read(n.args[1], &mut b).is_ok() && b[0] == 0
        };
        if d.native(nr, &n.args, empty) {
            let _ = self.listener.allow(n.id);
            return Ok(true);
        }
        if nr == libc::SYS_close {
            // Closed at home first, then here (`closes_here`).
            return Ok(false);
        }
        for fd in d.named_by(nr, &n.args, shape) {
            self.undfsa(Some(n.id), fd)?;
        }
        Ok(false)
    }

    /// Carries a DFSA descriptor's offset home and ends its DFSA; with a notification's `id`,
    /// a placeholder takes its number here (the process goes on; without one it is leaving).
    pub(super) fn undfsa(&mut self, id: Option<u64>, fd: i32) -> Result<(), End> {
        let off = crate::kernel::seccomp::take_fd(self.pid(), fd)
            .ok()
            .and_then(|c| nix::unistd::lseek(&c, 0, nix::unistd::Whence::SeekCur).ok());
        if let Some(off) = off {
            let m = Marshalled {
                call: mosix_core::proto::Call {
                    nr: libc::SYS_lseek as u32,
                    args: [fd as u64, off as u64, libc::SEEK_SET as u64, 0, 0, 0],
                    bufs: Vec::new(),
                    ahead: 0,
                },
                outs: Vec::new(),
            };
            let r = self.call_home(&m)?;
            if r.ret < 0 {
                warn!(
                    "{}: the offset {off} of descriptor {fd} could not be set at home (errno {})",
                    self.h.comm, -r.ret
                );
            }
        }
        if let Some(d) = &mut self.dfsa {
            d.forget(fd);
            if let Some(id) = id {
                let _ = self.listener.add_fd(id, self.placeholder.as_raw_fd(), fd);
                d.placeholder_at(fd);
            }
        }
        Ok(())
    }

    /// After home opened `path` at number `fd` for a DFSA open: the same file opened here and
    /// put at that number. If it cannot be, the descriptor simply stays home's.
    pub(super) fn install_here(&mut self, id: u64, path: &std::path::Path, flags: i32, fd: i32) {
        let Some(d) = &mut self.dfsa else { return };
        match d.open_here(path, flags) {
            Ok(local) => {
                // A directory's position means different things here and at home: not DFSA.
                let dir = nix::sys::stat::fstat(&local)
                    .is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR);
                if dir {
                    return;
                }
                match self.listener.add_fd(id, local.as_raw_fd(), fd) {
                    Ok(_) => d.opened(fd, path),
                    Err(e) => debug!("DFSA: cannot install {} at {fd}: {e}", path.display()),
                }
            }
            Err(e) => debug!(
                "DFSA: {} not opened here ({e}); it stays at home",
                path.display()
            ),
        }
    }

    /// A descriptor the process had before it came, on its first call here: if home says it
    /// is a file of this node whose description nobody else shares, it is opened here at its
    /// offset and becomes DFSA.
    fn adopt(&mut self, id: u64, fd: i32) -> Result<(), End> {
        if let Some(d) = &mut self.dfsa {
            d.examine(fd);
        }
        let described = self.describe(fd)?;
        debug!("DFSA: home describes descriptor {fd}: {described:?}");
        let ProcMsg::Described {
            path: Some(path),
            flags,
            pos,
            shared: false,
            ..
        } = described
        else {
            return Ok(());
        };
        let Some(d) = &mut self.dfsa else {
            return Ok(());
        };
        let Some(local) = d.local_of(&path) else {
            return Ok(());
        };
        match d.open_here(&local, flags) {
            Ok(f) => {
                let at = nix::unistd::lseek(&f, pos as i64, nix::unistd::Whence::SeekSet);
                if at.is_ok() && self.listener.add_fd(id, f.as_raw_fd(), fd).is_ok() {
                    d.opened(fd, &local);
                    debug!(
                        "DFSA: descriptor {fd} ({}) is here now, at {pos}",
                        local.display()
                    );
                }
            }
            Err(e) => debug!("DFSA: {} not opened here ({e})", local.display()),
        }
        Ok(())
    }

    /// Whether descriptor `fd`, just closed at home, has something here to close too.
    pub(super) fn closes_here(&mut self, fd: i32) -> bool {
        self.dfsa.as_mut().is_some_and(|d| d.closed(fd))
    }

    /// Carries the offsets of every DFSA descriptor home before the process leaves this node.
    pub(super) fn offsets_home(&mut self) -> Result<(), End> {
        for fd in self
            .dfsa
            .as_ref()
            .map(super::dfsa::Dfsa::fds)
            .unwrap_or_default()
        {
            self.undfsa(None, fd)?;
        }
        Ok(())
    }
}
