//! File mappings of a guest: a private (or read-only shared) mapping of a file at home is made
//! here from a copy of the file's contents, fetched from home into a memfd and bounded per guest.

use std::os::fd::AsRawFd;

use mosix_core::proto::Reply;
use tracing::{debug, warn};

use super::supervisor::{MapFile, Supervisor};
use crate::kernel::seccomp::Notif;
use crate::split::forward::Marshalled;

/// The copy of a mapped file standing at the process's descriptor number until the next
/// notification ([`Supervisor::put_back_stale`]).
#[derive(Debug)]
pub(super) struct StaleMap {
    /// The number.
    pub(super) fd: i32,
    /// For a home file opened here through MFS, that file, to put back.
    pub(super) back: Option<std::os::fd::OwnedFd>,
    /// With a tree of its own, home's offset when the copy took the number.
    pub(super) home_at: Option<u64>,
}

/// The most bytes of home files one guest may have copied here for its file mappings. The
/// copies are made by the supervisor, so they are charged to the service, not to the guests'
/// cgroup: without a bound, `mmap` of a sparse terabyte file would fill the node's memory.
/// Past it (mappings are not counted back when unmapped), a file mapping takes the process
/// home, where it is made natively.
pub(super) const MAPPED_COPY_BUDGET: u64 = 1 << 30;

impl Supervisor {
    /// A private (or read-only shared) mapping of a file at home: the file's contents come
    /// from home into a memfd, which is installed into the process at the same descriptor
    /// number; the kernel then runs the `mmap` as made, mapping the copy. (The dynamic loader
    /// maps every library this way, and so does a Python `import` of a compiled module.)
    ///
    /// A shared mapping is made here only of a descriptor opened read-only at home, and from a
    /// read-only descriptor of the copy: `mprotect(PROT_WRITE)` then fails as it would at home,
    /// instead of giving writes that would never reach the file. A shared mapping of a
    /// descriptor open for writing could be made writable later: it takes the process home.
    /// Copies count against [`MAPPED_COPY_BUDGET`].
    pub(super) fn map_file(&mut self, n: &Notif) -> Result<(), MapFile> {
        // MAP_SHARED (1) and MAP_SHARED_VALIDATE (3) both have bit 0; MAP_PRIVATE is 2.
        const MAP_SHARED_BIT: u64 = 0x1;
        let prot = n.args[2];
        let flags = n.args[3];
        let fd = n.args[4] as i32;
        let off = n.args[5];
        let shared = flags & MAP_SHARED_BIT != 0;
        if flags & libc::MAP_ANONYMOUS as u64 != 0
            || (shared && prot & libc::PROT_WRITE as u64 != 0)
        {
            return Err(MapFile::Home);
        }
        // What file is it, and how big?
        let st = self.call(libc::SYS_fstat, [fd as u64, 1, 0, 0, 0, 0])?;
        if st.ret < 0 {
            let _ = self.listener.reply(n.id, st.ret);
            return Ok(());
        }
        let Some((_, stat)) = st.outs.first() else {
            return Err(MapFile::Home);
        };
        let word = |at: usize| {
            u64::from_le_bytes(
                stat.get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            )
        };
        let mode = word(24) as u32;
        let size = word(48);
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(MapFile::Home);
        }
        // A home file opened here through MFS is read natively through the copy until it is
        // put back (see below): the whole file is copied. So is a file of home's with a tree
        // of its own, whose reads run natively on any number: until the copy is put back,
        // they read it, from home's offset.
        let through = self.dfsa.as_ref().is_some_and(|d| d.is_through(fd));
        let home_at = if self.tree.is_some() && !through {
            let at = self.call(
                libc::SYS_lseek,
                [fd as u64, 0, libc::SEEK_CUR as u64, 0, 0, 0],
            )?;
            if at.ret < 0 {
                return Err(MapFile::Home);
            }
            Some(at.ret as u64)
        } else {
            None
        };
        let (off, end) = if through || home_at.is_some() {
            (0, size)
        } else {
            (off, off.saturating_add(n.args[1]).min(size))
        };
        let copy = end.saturating_sub(off);
        if self.mapped_copy.saturating_add(copy) > MAPPED_COPY_BUDGET {
            debug!(
                "{}: {} bytes of mapped files copied here; {copy} more go home",
                self.h.comm, self.mapped_copy
            );
            return Err(MapFile::Home);
        }
        if shared {
            let fl = self.call(
                libc::SYS_fcntl,
                [fd as u64, libc::F_GETFL as u64, 0, 0, 0, 0],
            )?;
            if fl.ret < 0 || fl.ret & i64::from(libc::O_ACCMODE) != i64::from(libc::O_RDONLY) {
                return Err(MapFile::Home);
            }
        }
        let memfd = match nix::sys::memfd::memfd_create(
            c"mosix-map",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        ) {
            Ok(f) => std::fs::File::from(f),
            Err(_) => return Err(MapFile::Home),
        };
        if memfd.set_len(size).is_err() {
            return Err(MapFile::Home);
        }
        self.mapped_copy += copy;
        let mut at = off;
        while at < end {
            let want = (end - at).min(mosix_core::syscalls::MAX_IO as u64);
            let r = self.call(libc::SYS_pread64, [fd as u64, 1, want, at, 0, 0])?;
            let data = r.outs.first().map(|o| o.1.as_slice()).unwrap_or(&[]);
            if r.ret <= 0 || data.is_empty() {
                break;
            }
            use std::os::unix::fs::FileExt;
            if memfd.write_all_at(data, at).is_err() {
                return Err(MapFile::Home);
            }
            at += data.len() as u64;
        }
        let memfd = if shared || home_at.is_some() {
            // A read-only description of the copy: a shared mapping can never be made
            // writable, and a write of a tree's process before the copy is put back fails
            // (`EBADF`) rather than going into the copy. A private mapping needs no more.
            match std::fs::File::open(format!("/proc/self/fd/{}", memfd.as_raw_fd())) {
                Ok(ro) => ro,
                Err(_) => return Err(MapFile::Home),
            }
        } else {
            memfd
        };
        // A home file opened here through MFS stands at the number: it is kept, and the copy
        // takes its offset, so that a read before the file is put back reads what it would.
        let back = if through {
            let Ok(file) = crate::kernel::seccomp::take_fd(self.pid(), fd) else {
                return Err(MapFile::Home);
            };
            let Ok(pos) = nix::unistd::lseek(&file, 0, nix::unistd::Whence::SeekCur) else {
                return Err(MapFile::Home);
            };
            if nix::unistd::lseek(&memfd, pos, nix::unistd::Whence::SeekSet).is_err() {
                return Err(MapFile::Home);
            }
            Some(file)
        } else {
            None
        };
        if let Some(at) = home_at
            && nix::unistd::lseek(&memfd, at as i64, nix::unistd::Whence::SeekSet).is_err()
        {
            return Err(MapFile::Home);
        }
        if let Err(e) = self.listener.add_fd(n.id, memfd.as_raw_fd(), fd) {
            debug!("installing the copy of a mapped file: {e}");
            return Err(MapFile::Home);
        }
        self.tree_saw(fd);
        let _ = self.listener.allow(n);
        // Once the mmap has run, the copy needs no descriptor of its own in the process.
        self.stale_map_fd = Some(StaleMap { fd, back, home_at });
        Ok(())
    }

    /// At the next notification after a file mapping: the copy leaves the descriptor's number
    /// (so that an unmapped copy is freed), and what stood there comes back — the file it
    /// stood for, at the offset the copy has now (reads may have moved it), or a placeholder,
    /// home then taking the copy's offset if reads moved it. (With a tree of its own the
    /// process may have closed the number natively since: then nothing is put back, and the
    /// look at its descriptors closes the file at home.)
    pub(super) fn put_back_stale(&mut self, n: &Notif) {
        let Some(s) = self.stale_map_fd.take() else {
            return;
        };
        if self.tree.is_some() && !self.copy_still_at(s.fd) {
            return;
        }
        let pos = crate::kernel::seccomp::take_fd(self.pid(), s.fd)
            .ok()
            .and_then(|c| nix::unistd::lseek(&c, 0, nix::unistd::Whence::SeekCur).ok());
        match s.back {
            Some(file) => {
                if let Some(pos) = pos {
                    let _ = nix::unistd::lseek(&file, pos, nix::unistd::Whence::SeekSet);
                }
                let _ = self.listener.add_fd(n.id, file.as_raw_fd(), s.fd);
            }
            None => {
                let _ = self
                    .listener
                    .add_fd(n.id, self.placeholder.as_raw_fd(), s.fd);
                if let (Some(was), Some(now)) = (s.home_at, pos)
                    && now as u64 != was
                {
                    let set = [s.fd as u64, now as u64, libc::SEEK_SET as u64, 0, 0, 0];
                    match self.call(libc::SYS_lseek, set) {
                        Ok(r) if r.ret == now => {}
                        Ok(r) => warn!(
                            "{} ({}): descriptor {}: home's offset could not follow the reads \
                             of its mapped copy ({now}): {}",
                            self.h.comm,
                            self.pid(),
                            s.fd,
                            r.ret
                        ),
                        Err(_) => warn!(
                            "{} ({}): descriptor {}: home's offset could not follow the reads \
                             of its mapped copy ({now}): no answer from home",
                            self.h.comm,
                            self.pid(),
                            s.fd
                        ),
                    }
                }
            }
        }
        self.tree_saw(s.fd);
    }

    /// Whether the copy of a mapped file is still at number `fd` of the process (its own
    /// kernel may have closed it: `close` of the range is native with a tree of its own).
    fn copy_still_at(&self, fd: i32) -> bool {
        std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid())).is_ok_and(|p| {
            p.as_os_str()
                .as_encoded_bytes()
                .starts_with(b"/memfd:mosix-map")
        })
    }

    /// A call home made by the supervisor itself (not by the process).
    fn call(&mut self, nr: i64, args: [u64; 6]) -> Result<Reply, MapFile> {
        let m = Marshalled {
            call: mosix_core::proto::Call {
                nr: nr as u32,
                args,
                bufs: Vec::new(),
                ahead: 0,
            },
            outs: Vec::new(),
        };
        self.call_home(&m).map_err(MapFile::End)
    }
}
