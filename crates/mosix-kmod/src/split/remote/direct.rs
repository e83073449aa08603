//! The supervisor's side of direct file access ([`super::dfsa`]): letting calls on DFSA
//! descriptors run here, adopting descriptors the process had before it came, installing the
//! files home opened, and carrying offsets home.

use std::os::fd::AsRawFd;
use std::path::Path;

use mosix_core::proto::ProcMsg;
use mosix_core::syscalls::MAX_PATH;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tracing::{debug, warn};

use super::here::{self, Here};
use super::supervisor::{End, Supervisor};
use crate::kernel::seccomp::Notif;
use crate::split::forward::Marshalled;

/// The supervisor's side of DFSA: running calls here, adopting, carrying offsets home.
impl Supervisor {
    /// Lets a call run here as made. One that came marked to be made again (a read or a write
    /// a placeholder sent back, on a number where the supervisor has since put the file itself)
    /// cannot be let run as it is (its number is an x32 call's): it is made once more, plain,
    /// and runs natively (`again::make_plain`; as root, which the caller is).
    fn allow_native(&self, n: &Notif) {
        if !n.again {
            let _ = self.listener.allow(n);
            return;
        }
        let answer = || {
            let _ = self.listener.reply(n.id, -i64::from(libc::EINTR));
        };
        match crate::kernel::again::make_plain(n.pid as i32, n.nr as u64, answer) {
            Ok(crate::kernel::again::Again::Made) => {}
            Ok(crate::kernel::again::Again::NotInCall) => warn!(
                "{} ({}): {} could not be made again here: it returned EINTR",
                self.h.comm,
                n.pid,
                mosix_core::syscalls::name(n.nr as u64)
            ),
            Err(e) => warn!(
                "{} ({}): {} could not be made again here ({e}): it returned EINTR",
                self.h.comm,
                n.pid,
                mosix_core::syscalls::name(n.nr as u64)
            ),
        }
    }

    /// A call on a DFSA descriptor: runs here if it is known to be safe (returns true); any
    /// other call that names one first carries its offset home and ends its DFSA (it then goes
    /// home as any other call).
    pub(super) fn dfsa_call(
        &mut self,
        n: &Notif,
        shape: &[mosix_core::syscalls::Arg; 6],
    ) -> Result<bool, End> {
        if self.dfsa.is_none() {
            return Ok(false);
        }
        let nr = i64::from(n.nr);
        if here::path_args(nr).is_some() && self.dfsa_here(n)? {
            return Ok(true);
        }
        self.look_if_due();
        let fd = n.args[0] as i32;
        if nr == libc::SYS_close
            && let Some(d) = &mut self.dfsa
            && d.holds(fd)
        {
            // Closed here, where the file is; home closes its number after (no wait). Only a
            // home file through MFS needs root (its count reads the process's /proc/PID/io);
            // for the rest the thread may stay the owner.
            if d.is_through(fd) {
                crate::kernel::creds::root_again();
            }
            d.closed(fd);
            d.table.freed(fd);
            d.notice_close(fd);
            self.allow_native(n);
            return Ok(true);
        }
        // Not run here as the owner: root again for the rest (see `Supervisor::on_call`).
        crate::kernel::creds::root_again();
        if let Some(r) = self.stat_through_tree(n) {
            let _ = self.listener.reply(n.id, r);
            return Ok(true);
        }
        let Some(d) = &self.dfsa else {
            return Ok(false);
        };
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
            self.allow_native(n);
            return Ok(true);
        }
        if nr == libc::SYS_close {
            // A placeholder's number: closed at home first, then here (`closes_here`).
            return Ok(false);
        }
        let named = d.named_by(nr, &n.args, shape);
        if !named.is_empty()
            && named.iter().all(|&fd| d.is_through(fd))
            && (super::dfsa::Dfsa::asks_home(nr, &n.args) || nr == libc::SYS_mmap)
        {
            // (A shared mapping of one is made from a copy, as of any home file: see
            // `mapping`; the file goes back to its number at the next call.)
            // Home files read here through MFS: home answers on its own descriptor of the
            // file (its status as home sees it, its locks, its syncs).
            return Ok(false);
        }
        if let Some(range) = &self.native_from
            && named.iter().any(|&fd| range.covers(i64::from(fd)))
        {
            // Its number is native here: it cannot stand for home's twin. The call runs at
            // home, and the process with it.
            debug!(
                "DFSA: {} ({:#x}) names descriptor(s) {named:?} of the native range: going home",
                mosix_core::syscalls::name(nr as u64),
                n.args[1]
            );
            return match self.home_only(*n) {
                Some(end) => Err(end),
                None => Ok(true),
            };
        }
        for fd in named {
            self.undfsa(Some(n.id), fd)?;
        }
        Ok(false)
    }

    /// Carries a DFSA descriptor's offset home; with a notification's `id` its DFSA ends and a
    /// placeholder takes its number here (the process goes on; without one it is leaving).
    pub(super) fn undfsa(&mut self, id: Option<u64>, fd: i32) -> Result<(), End> {
        let off = crate::kernel::seccomp::take_fd(self.pid(), fd)
            .ok()
            .and_then(|c| nix::unistd::lseek(&c, 0, nix::unistd::Whence::SeekCur).ok());
        if self.dfsa.as_ref().is_some_and(|d| d.is_pending(fd)) {
            // Home holds a placeholder only: it opens the file now, at this offset.
            self.twin(fd, off.unwrap_or(0) as u64)?;
        } else if let Some(off) = off {
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
        // Leaving (no `id`), it stays DFSA here: should the move fail, the process goes on
        // with its file here and carries the offset home again at its next try.
        if let Some(d) = &mut self.dfsa
            && let Some(id) = id
        {
            d.forget(fd);
            let _ = self.listener.add_fd(id, self.placeholder.as_raw_fd(), fd);
            d.placeholder_at(fd);
            self.tree_saw(fd);
        }
        Ok(())
    }

    /// A descriptor the process had before it came, on its first call here: if home says it
    /// is a file of this node whose description nobody else shares, it is opened here at its
    /// offset and becomes DFSA.
    fn adopt(&mut self, id: u64, fd: i32) -> Result<(), End> {
        if let Some(d) = &mut self.dfsa {
            d.examine(fd);
        }
        let described = self.describe(fd, false)?;
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
        if flags & libc::O_PATH != 0 {
            // Opened here it would read and write; home's reads nothing.
            return Ok(());
        }
        let Some(d) = &mut self.dfsa else {
            return Ok(());
        };
        let Some(local) = d.local_of(&path) else {
            return Ok(());
        };
        if self.install_here(id, fd, &local, flags, pos)
            && let Some(d) = &mut self.dfsa
        {
            d.opened(fd, &local);
            debug!(
                "DFSA: descriptor {fd} ({}) is here now, at {pos}",
                local.display()
            );
        }
        Ok(())
    }

    /// Opens `here` as the process's owner with home's `flags`, sets it at offset `pos` and
    /// installs it at `fd` (close-on-exec as home has it) for the waiting call `id`. Whether it
    /// is there now.
    fn install_here(&mut self, id: u64, fd: i32, here: &Path, flags: i32, pos: u64) -> bool {
        let Some(d) = &self.dfsa else {
            return false;
        };
        let f = match d.open_here(here, flags) {
            Ok(f) => f,
            Err(e) => {
                debug!("DFSA: {} not opened here ({e})", here.display());
                return false;
            }
        };
        if nix::unistd::lseek(&f, pos as i64, nix::unistd::Whence::SeekSet).is_err() {
            return false;
        }
        let cloexec = flags & libc::O_CLOEXEC != 0;
        if let Err(e) = self.listener.add_fd_cloexec(id, f.as_raw_fd(), fd, cloexec) {
            debug!("DFSA: installing {} at {fd}: {e}", here.display());
            return false;
        }
        self.tree_saw(fd);
        true
    }

    /// A file the process just opened at home at `fd`, a number of the native range: opened
    /// here too, as the owner — directly if it is a file of this node, else through MFS — at
    /// the same offset with the same flags, and installed at `fd` (the call `id` is still
    /// waiting). From then on its reads, writes and seeks run here; home keeps its own
    /// descriptor of the file, which answers everything else and takes the offset when the
    /// process leaves. A directory or an `O_PATH` descriptor gets a stand-in of the same kind
    /// here, on which the native calls fail as on home's (`EISDIR`, `EBADF`); every other
    /// call on it goes home. `false`: it cannot be (a device, a pipe, refused here…): the
    /// process must go home.
    pub(super) fn represent(&mut self, id: u64, fd: i32) -> Result<bool, End> {
        // What waits to be written home, or was read ahead from it, is settled first: the
        // file may be one of those, and its bytes must be there for native calls.
        self.settle_io()?;
        let described = self.describe(fd, true)?;
        if let ProcMsg::Described { flags, mode, .. } = described
            && (flags & libc::O_PATH != 0 || mode & libc::S_IFMT == libc::S_IFDIR)
        {
            let kind = if flags & libc::O_PATH != 0 {
                OFlag::O_PATH
            } else {
                OFlag::O_RDONLY | OFlag::O_DIRECTORY
            };
            // In a tree of its own, the stand-in is the root of its tree (the trap), taken in
            // its own namespace: a path the process resolves from it comes to the supervisor,
            // and `..` stays there (a root opened in the node's namespace would lead out).
            let root = if self.tree.is_some() {
                std::path::PathBuf::from(format!("/proc/{}/root", self.pid()))
            } else {
                std::path::PathBuf::from("/")
            };
            let Ok(stand_in) = nix::fcntl::open(&root, kind | OFlag::O_CLOEXEC, Mode::empty())
            else {
                return Ok(false);
            };
            let cloexec = flags & libc::O_CLOEXEC != 0;
            if self
                .listener
                .add_fd_cloexec(id, stand_in.as_raw_fd(), fd, cloexec)
                .is_err()
            {
                return Ok(false);
            }
            self.tree_saw(fd);
            if let Some(d) = &mut self.dfsa {
                d.placeholder_at(fd);
            }
            return Ok(true);
        }
        let ProcMsg::Described {
            path: Some(path),
            flags,
            pos,
            shared: false,
            ..
        } = described
        else {
            debug!("DFSA: descriptor {fd} of home is not a file to open here: {described:?}");
            return Ok(false);
        };
        let Some((here, through)) = self.dfsa.as_ref().and_then(|d| d.here_path_of(&path)) else {
            return Ok(false);
        };
        if !self.install_here(id, fd, &here, flags, pos) {
            return Ok(false);
        }
        let Some(d) = &mut self.dfsa else {
            return Ok(false);
        };
        if through {
            d.opened_through(fd, &here);
        } else {
            d.opened(fd, &here);
        }
        Ok(true)
    }

    /// Whether descriptor `fd`, just closed at home, has something here to close too.
    pub(super) fn closes_here(&mut self, fd: i32) -> bool {
        self.dfsa.as_mut().is_some_and(|d| d.closed(fd))
    }

    /// Carries the offsets of every DFSA descriptor home before the process leaves this node.
    pub(super) fn offsets_home(&mut self) -> Result<(), End> {
        self.flush_notices()?;
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

    /// A path call of [`mosix_core::syscalls::DFSA_HERE`]: if every path it names is a file of
    /// this node, it runs here ([`here`]; returns true); otherwise, or for anything
    /// [`here`] does not do, it goes home as before.
    fn dfsa_here(&mut self, n: &Notif) -> Result<bool, End> {
        let nr = i64::from(n.nr);
        let (Some(which), Some(d)) = (here::path_args(nr), &self.dfsa) else {
            return Ok(false);
        };
        let mut home_paths = Vec::with_capacity(2);
        let mut local = Vec::with_capacity(2);
        for &i in which {
            let Ok(p) = self.mem.read_cstr(n.args[i], MAX_PATH) else {
                return Ok(false);
            };
            let Some(l) = d.local_of(&p) else {
                return Ok(false);
            };
            home_paths.push(p);
            local.push(l);
        }
        if here::open_args(nr, &n.args).is_some() {
            // The numbers as they are now.
            self.look_if_due();
        }
        let Some(d) = &self.dfsa else {
            return Ok(false);
        };
        if let Some((flags, mode)) = here::open_args(nr, &n.args) {
            let home_path = home_paths.swap_remove(0);
            return self.open_here(n, &local[0], home_path, flags, mode);
        }
        if here::renames(nr) && d.any_pending() {
            // A file home may still have to open by this name: home opens it first. Only one
            // of a file system the same everywhere: home opens a file of this node whose name
            // is gone through MFS as the process's own open file (`Supervisor::twin`).
            crate::kernel::creds::root_again();
            let user = d.user().clone();
            for l in &local {
                let Some(id) = here::identity(&user, l) else {
                    continue;
                };
                let fds = self
                    .dfsa
                    .as_ref()
                    .map(|d| d.pending_on_everywhere(id))
                    .unwrap_or_default();
                for fd in fds {
                    let pos = crate::kernel::seccomp::take_fd(self.pid(), fd)
                        .ok()
                        .and_then(|c| nix::unistd::lseek(&c, 0, nix::unistd::Whence::SeekCur).ok())
                        .unwrap_or(0);
                    self.twin(fd, pos as u64)?;
                }
            }
        }
        if matches!(nr, libc::SYS_mkdir | libc::SYS_mkdirat) && !self.table_known()? {
            return Ok(false);
        }
        let Some(d) = &mut self.dfsa else {
            return Ok(false);
        };
        let paths: Vec<&std::path::Path> = local.iter().map(|p| p.as_path()).collect();
        match here::run(d.user(), nr, &n.args, &paths, d.table.umask(), d.same_ids) {
            Here::Home => Ok(false),
            Here::Done(ret, out) => {
                d.count_here(&local[0]);
                let ret = match out {
                    Some((at, bytes)) if ret >= 0 => {
                        if self.mem.write(at, &bytes).is_ok() {
                            ret
                        } else {
                            -i64::from(libc::EFAULT)
                        }
                    }
                    _ => ret,
                };
                let _ = self.listener.reply(n.id, ret);
                Ok(true)
            }
        }
    }

    /// Whether the copy of home's numbers is there, fetching it if not ([`ProcMsg::Table`]).
    pub(super) fn table_known(&mut self) -> Result<bool, End> {
        if self.dfsa.as_ref().is_none_or(|d| d.table.known()) {
            return Ok(self.dfsa.is_some());
        }
        self.send_home(&ProcMsg::Table)?;
        if let ProcMsg::TableIs { fds, umask } =
            self.answer_from_home(|m| matches!(m, ProcMsg::TableIs { .. }))?
            && let Some(d) = &mut self.dfsa
        {
            d.table.set(fds, umask);
        }
        Ok(self.dfsa.as_ref().is_some_and(|d| d.table.known()))
    }

    /// An open of a file of this node: opened here as the owner, at the number home would
    /// give, and home told after.
    fn open_here(
        &mut self,
        n: &Notif,
        local: &std::path::Path,
        home_path: Vec<u8>,
        flags: i32,
        mode: u32,
    ) -> Result<bool, End> {
        if flags & (libc::O_PATH | libc::O_TMPFILE | libc::O_DIRECTORY) != 0
            || !self.table_known()?
        {
            return Ok(false);
        }
        let Some(d) = &mut self.dfsa else {
            return Ok(false);
        };
        let Some(fd) = d.table.lowest_free() else {
            return Ok(false);
        };
        if i64::from(fd) >= d.open_limit() {
            d.count_here(local);
            let _ = self.listener.reply(n.id, -i64::from(libc::EMFILE));
            return Ok(true);
        }
        let (file, id) = match here::open(d.user(), local, flags, mode, d.table.umask()) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(false),
            Err(e) => {
                d.count_here(local);
                let _ = self.listener.reply(n.id, -(e as i64));
                return Ok(true);
            }
        };
        let cloexec = flags & libc::O_CLOEXEC != 0;
        // Home hears of it before anything else goes there.
        d.count_here(local);
        d.table.taken(fd);
        d.opened_alone(fd, local, id);
        d.notice_open(fd, home_path, flags);
        if let Err(e) = self
            .listener
            .add_fd_cloexec(n.id, file.as_raw_fd(), fd, cloexec)
        {
            if let Some(d) = &mut self.dfsa {
                d.closed(fd);
                d.table.freed(fd);
                d.notice_close(fd);
            }
            // The process is gone, or its limit changed: it hears the kernel's reason.
            let errno = e.raw_os_error().unwrap_or(libc::EMFILE);
            let errno = if errno == libc::EBADF {
                libc::EMFILE
            } else {
                errno
            };
            let _ = self.listener.reply(n.id, -i64::from(errno));
            return Ok(true);
        }
        // Installed, then answered (what stands at the number is recorded in between: the
        // process may change it as soon as it runs). Two steps, not one `ADDFD` with
        // `SECCOMP_ADDFD_FLAG_SEND`: that wakes the process on the other CPU, and every later
        // notification crosses CPUs (96–160 µs an open here, against 8–40; docs/mfs.md). Safe:
        // the filter has `WAIT_KILLABLE_RECV`, only a fatal signal ends the call in between.
        self.tree_saw(fd);
        let _ = self.listener.reply(n.id, i64::from(fd));
        Ok(true)
    }

    /// Asks home to open the file of DFSA descriptor `fd` itself, at offset `pos`
    /// ([`ProcMsg::Twin`]) and waits for it to be done.
    pub(super) fn twin(&mut self, fd: i32, pos: u64) -> Result<(), End> {
        // By its name, unless the name no longer leads to it (see `Dfsa::name_gone`): then
        // home opens this very open file, held for it by MFS until it has answered.
        let held = self
            .dfsa
            .as_ref()
            .filter(|d| d.name_gone(fd))
            .and_then(|d| d.hold(fd));
        if let Some(t) = held {
            debug!(
                "DFSA: descriptor {fd}'s name no longer leads to its file: home opens it held ({t})"
            );
        }
        let sent = self.send_home(&ProcMsg::Twin { fd, pos, held });
        let answer = sent.and_then(|()| {
            self.answer_from_home(|m| matches!(m, ProcMsg::TwinIs { fd: f, .. } if *f == fd))
        });
        if let (Some(t), Some(d)) = (held, &self.dfsa) {
            d.unhold(t);
        }
        if let ProcMsg::TwinIs { errno, .. } = answer?
            && errno != 0
        {
            warn!(
                "{}: home could not open the file of descriptor {fd} ({}); home's log says which",
                self.h.comm,
                nix::errno::Errno::from_raw(errno)
            );
        }
        if let Some(d) = &mut self.dfsa {
            d.twinned(fd);
        }
        Ok(())
    }
}
