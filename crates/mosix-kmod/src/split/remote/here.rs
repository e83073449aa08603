//! Path calls of a migrated process that run on the node it runs on (DFSA, second form): the
//! calls of [`mosix_core::syscalls::DFSA_HERE`] whose paths all name files of this node run
//! here, on the supervisor's thread with the owner's ids ([`as_user`]), instead of going home
//! and from there through MFS back to this node.
//!
//! - **Same answers as through MFS.** Links resolve here as MFS has them resolve (MFS shows an
//!   absolute target at this node under this node's directory); a last component that is a
//!   link, for a call other than an open that follows it, still goes home (simplest to keep
//!   exact). Nothing on a proc file system is resolved here (its `self` is the node service),
//!   and magic links are refused. Root is squashed as MFS squashes it
//!   ([`super::dfsa::Dfsa`]'s user). `access` checks the effective ids, so a process whose
//!   real and effective ids differ asks home.
//! - **Numbers as home gives them.** An `open` here must return the number home's kernel would
//!   have given: the lowest free one at home. [`HomeTable`] is the remote's copy of home's
//!   numbers, fetched once ([`ProcMsg::Table`](mosix_core::proto::ProcMsg::Table)) and kept by
//!   following every forwarded call's effect on the table
//!   ([`mosix_core::syscalls::fd_effect`]); a call whose effect is not known makes the copy
//!   stale, and the next open here asks home again. Home is told of the open afterwards
//!   ([`ProcMsg::OpenedHere`](mosix_core::proto::ProcMsg::OpenedHere), no answer awaited) and
//!   holds a placeholder at the number; it opens the file itself only when it needs it.
//! - **Modes as home makes them.** A created file or directory gets the mode the program gave
//!   less the process's umask (home's, kept in [`HomeTable`]; the thread's own umask is 0).

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use mosix_core::syscalls::{FdEffect, fd_effect};
use nix::errno::Errno;

use crate::kernel::creds::{User, as_user, as_user_staying};

/// The remote's copy of home's descriptor numbers, and the process's umask.
#[derive(Debug, Default)]
pub(super) struct HomeTable {
    /// The numbers in use at home; `None` until fetched, or after a call whose effect on the
    /// table is not known.
    fds: Option<BTreeSet<i32>>,
    /// The umask (valid once fetched; kept through forwarded `umask` calls).
    umask: u32,
}

impl HomeTable {
    /// Whether the copy is there and current.
    pub(super) fn known(&self) -> bool {
        self.fds.is_some()
    }

    /// Takes home's answer.
    pub(super) fn set(&mut self, fds: Option<Vec<i32>>, umask: u32) {
        self.fds = fds.map(|v| v.into_iter().collect());
        self.umask = umask & 0o777;
    }

    /// The umask.
    pub(super) fn umask(&self) -> u32 {
        self.umask
    }

    /// The number an open would get at home: the lowest free one.
    pub(super) fn lowest_free(&self) -> Option<i32> {
        let fds = self.fds.as_ref()?;
        let mut want = 0;
        for &fd in fds.range(0..) {
            if fd != want {
                break;
            }
            want += 1;
        }
        Some(want)
    }

    /// The numbers in use at home, in order (empty if the copy is not there).
    pub(super) fn numbers(&self) -> Vec<i32> {
        self.fds
            .as_ref()
            .map(|f| f.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Records a number now in use (an open here).
    pub(super) fn taken(&mut self, fd: i32) {
        if let Some(f) = &mut self.fds {
            f.insert(fd);
        }
    }

    /// Records a number now free (a close here).
    pub(super) fn freed(&mut self, fd: i32) {
        if let Some(f) = &mut self.fds {
            f.remove(&fd);
        }
    }

    /// Follows a call that ran at home and returned `ret`.
    pub(super) fn after(&mut self, nr: i64, args: &[u64; 6], ret: i64) {
        if nr == libc::SYS_umask {
            self.umask = (args[0] as u32) & 0o777;
        }
        let Some(fds) = &mut self.fds else { return };
        let fd = |x: i64| i32::try_from(x).ok().filter(|&f| f >= 0);
        match fd_effect(nr as u64, args) {
            FdEffect::None => {}
            FdEffect::Returns => {
                if let Some(f) = fd(ret) {
                    fds.insert(f);
                }
            }
            FdEffect::Replaces => {
                if ret >= 0
                    && let Some(f) = fd(args[1] as i32 as i64)
                {
                    fds.insert(f);
                }
            }
            FdEffect::Closes => {
                if let Some(f) = fd(args[0] as i32 as i64) {
                    fds.remove(&f);
                }
            }
            FdEffect::Unknown => self.fds = None,
        }
    }
}

/// Which arguments of a call of [`mosix_core::syscalls::DFSA_HERE`] are paths; `None` for any
/// other call.
pub(super) fn path_args(nr: i64) -> Option<&'static [usize]> {
    Some(match nr {
        libc::SYS_open
        | libc::SYS_creat
        | libc::SYS_stat
        | libc::SYS_lstat
        | libc::SYS_access
        | libc::SYS_unlink
        | libc::SYS_mkdir
        | libc::SYS_rmdir
        | libc::SYS_readlink => &[0],
        libc::SYS_openat
        | libc::SYS_newfstatat
        | libc::SYS_statx
        | libc::SYS_faccessat
        | libc::SYS_faccessat2
        | libc::SYS_unlinkat
        | libc::SYS_mkdirat
        | libc::SYS_readlinkat => &[1],
        libc::SYS_rename => &[0, 1],
        libc::SYS_renameat | libc::SYS_renameat2 => &[1, 3],
        _ => return None,
    })
}

/// The flags and mode of an open of [`mosix_core::syscalls::DFSA_HERE`] (`None`: not one).
pub(super) fn open_args(nr: i64, args: &[u64; 6]) -> Option<(i32, u32)> {
    match nr {
        libc::SYS_open => Some((args[1] as i32, args[2] as u32)),
        libc::SYS_openat => Some((args[2] as i32, args[3] as u32)),
        libc::SYS_creat => Some((
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
            args[1] as u32,
        )),
        _ => None,
    }
}

/// Whether a call changes or removes the names it is given (so a file home may still have to
/// open by its name must be opened at home first).
pub(super) fn renames(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_unlink
            | libc::SYS_unlinkat
            | libc::SYS_rmdir
            | libc::SYS_rename
            | libc::SYS_renameat
            | libc::SYS_renameat2
    )
}

/// A file's device and inode.
pub(super) type FileId = (u64, u64);

/// How a path call ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Here {
    /// Not for here (a symbolic link on the way, or a case this module does not do): home.
    Home,
    /// Done: the result, and bytes to write into the process at an address.
    Done(i64, Option<(u64, Vec<u8>)>),
}

fn errno_of(e: Errno) -> i64 {
    -(e as i64)
}

fn c_name(b: &[u8]) -> Option<CString> {
    CString::new(b).ok()
}

/// The directory of `path` opened (`O_PATH`) without following any link, and its last name.
/// `Ok(None)`: not for here (a link on the way, a path ending in `/`, `.` or `..`).
fn parent(path: &Path) -> Result<Option<(OwnedFd, CString)>, Errno> {
    let b = path.as_os_str().as_bytes();
    let Some(cut) = b.iter().rposition(|&c| c == b'/') else {
        return Ok(None);
    };
    let (dir, name) = (&b[..cut.max(1)], &b[cut + 1..]);
    if name.is_empty() || name == b"." || name == b".." {
        return Ok(None);
    }
    let Some(dir) = c_name(dir) else {
        return Ok(None);
    };
    let Some(name) = c_name(name) else {
        return Ok(None);
    };
    match open2(&dir, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC, 0) {
        Ok(fd) if on_procfs(&fd) => Ok(None),
        Ok(fd) => Ok(Some((fd, name))),
        Err(Errno::ELOOP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `fd` is on a proc file system. Such a path is never resolved here: `/proc/self` of
/// this thread is the node service, whose descriptors and maps its own threads may see
/// whatever their ids; home resolves it through MFS, whose owner refuses the service's own
/// entries.
fn on_procfs(fd: &OwnedFd) -> bool {
    nix::sys::statfs::fstatfs(fd)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// `openat2(AT_FDCWD, path, flags, mode)` refusing magic links (`/proc/PID/fd/N`). Symbolic
/// links are followed here as MFS has them followed: an absolute target at this node is shown
/// through MFS as the same path under this node's directory, so both reach the same file.
fn open2(path: &CString, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    // `struct open_how` (libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: u64::from(mode),
        resolve: libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2(2) reads the NUL-terminated `path` and `how` (its size given), both
    // valid for the call; the result, if not negative, is a new descriptor we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &raw const how,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        // SAFETY: a new descriptor, ours alone.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

/// The last name's status, not following it.
fn lstat_at(dir: &OwnedFd, name: &CString) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat(2) reads the NUL-terminated `name` and writes one `stat` into `st`.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &raw mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(st) }
}

fn is_link(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: `v` is a plain C struct of `size_of::<T>()` initialized bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

/// The device and inode a path names here (not following a last link), for a file that home
/// may still have to open by that name (an unlink or rename is about to change it).
pub(super) fn identity(user: &User, path: &Path) -> Option<FileId> {
    as_user(user, || {
        let Some((dir, name)) = parent(path)? else {
            return Err(Errno::ENOENT);
        };
        let st = lstat_at(&dir, &name)?;
        Ok((st.st_dev, st.st_ino))
    })
    .ok()
}

/// Opens `path` here for the process as `user`: `flags` as it gave them (with `O_CLOEXEC` and
/// `O_NOCTTY` for this copy; the number's own close-on-exec flag is set where it is
/// installed), `mode` less `umask` for a file it creates, with the device and inode of the
/// file. `Ok(None)`: not for here (on a proc file system, a magic link, or a directory).
pub(super) fn open(
    user: &User,
    path: &Path,
    flags: i32,
    mode: u32,
    umask: u32,
) -> Result<Option<(OwnedFd, FileId)>, Errno> {
    let Some(p) = c_name(path.as_os_str().as_bytes()) else {
        return Ok(None);
    };
    let creates = flags & libc::O_CREAT != 0;
    let mode = if creates { mode & 0o7777 & !umask } else { 0 };
    let fd = match as_user_staying(user, || {
        open2(&p, flags | libc::O_CLOEXEC | libc::O_NOCTTY, mode)
    }) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    if on_procfs(&fd) {
        return Ok(None);
    }
    let Ok(st) = nix::sys::stat::fstat(&fd) else {
        return Ok(None);
    };
    // A directory's position means different things here and at home.
    let dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    Ok((!dir).then_some((fd, (st.st_dev, st.st_ino))))
}

/// One path call other than an open, its paths already found to be files of this node
/// (`local`: one path, two for a rename). `args` are the call's; `same_ids`: the process's real
/// and effective ids are the same (else `access` goes home).
pub(super) fn run(
    user: &User,
    nr: i64,
    args: &[u64; 6],
    local: &[&Path],
    umask: u32,
    same_ids: bool,
) -> Here {
    let r = as_user_staying(user, || Ok(run_as_user(nr, args, local, umask, same_ids)));
    match r {
        Ok(h) => h,
        Err(e) => Here::Done(errno_of(e), None),
    }
}

fn run_as_user(nr: i64, args: &[u64; 6], local: &[&Path], umask: u32, same_ids: bool) -> Here {
    let Some(first) = local.first() else {
        return Here::Home;
    };
    let (dir, name) = match parent(first) {
        Ok(Some(x)) => x,
        Ok(None) => return Here::Home,
        Err(e) => return Here::Done(errno_of(e), None),
    };
    let d = dir.as_raw_fd();
    let done = |r: libc::c_int| {
        if r < 0 {
            Here::Done(errno_of(Errno::last()), None)
        } else {
            Here::Done(i64::from(r), None)
        }
    };
    match nr {
        libc::SYS_stat | libc::SYS_lstat | libc::SYS_newfstatat => {
            let (buf, flags) = match nr {
                libc::SYS_stat => (args[1], 0),
                libc::SYS_lstat => (args[1], libc::AT_SYMLINK_NOFOLLOW),
                _ => (args[2], args[3] as i32),
            };
            match lstat_at(&dir, &name) {
                Ok(st) if is_link(&st) && flags & libc::AT_SYMLINK_NOFOLLOW == 0 => Here::Home,
                Ok(st) => Here::Done(0, Some((buf, bytes_of(&st)))),
                Err(e) => Here::Done(errno_of(e), None),
            }
        }
        libc::SYS_statx => {
            let (flags, mask, buf) = (args[2] as i32, args[3] as u32, args[4]);
            // SAFETY: an all-zero `statx` is a valid value of the plain C struct.
            let mut stx: libc::statx = unsafe { std::mem::zeroed() };
            // SAFETY: statx(2) reads the NUL-terminated `name` and writes one `statx`.
            let r = unsafe {
                libc::statx(
                    d,
                    name.as_ptr(),
                    (flags & !libc::AT_EMPTY_PATH) | libc::AT_SYMLINK_NOFOLLOW,
                    mask,
                    &raw mut stx,
                )
            };
            if r < 0 {
                return Here::Done(errno_of(Errno::last()), None);
            }
            if u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFLNK
                && flags & libc::AT_SYMLINK_NOFOLLOW == 0
            {
                return Here::Home;
            }
            Here::Done(0, Some((buf, bytes_of(&stx))))
        }
        libc::SYS_access | libc::SYS_faccessat | libc::SYS_faccessat2 => {
            let (mode, flags) = match nr {
                libc::SYS_access => (args[1] as i32, 0),
                libc::SYS_faccessat => (args[2] as i32, 0),
                _ => (args[2] as i32, args[3] as i32),
            };
            if flags & libc::AT_EACCESS == 0 && !same_ids {
                return Here::Home;
            }
            match lstat_at(&dir, &name) {
                Ok(st) if is_link(&st) && flags & libc::AT_SYMLINK_NOFOLLOW == 0 => Here::Home,
                Ok(_) => {
                    // SAFETY: faccessat(2) reads the NUL-terminated `name`.
                    done(unsafe {
                        libc::faccessat(
                            d,
                            name.as_ptr(),
                            mode,
                            libc::AT_EACCESS | libc::AT_SYMLINK_NOFOLLOW,
                        )
                    })
                }
                Err(e) => Here::Done(errno_of(e), None),
            }
        }
        libc::SYS_unlink | libc::SYS_unlinkat | libc::SYS_rmdir => {
            let flags = match nr {
                libc::SYS_unlink => 0,
                libc::SYS_rmdir => libc::AT_REMOVEDIR,
                _ => args[2] as i32,
            };
            // SAFETY: unlinkat(2) reads the NUL-terminated `name`.
            done(unsafe { libc::unlinkat(d, name.as_ptr(), flags) })
        }
        libc::SYS_mkdir | libc::SYS_mkdirat => {
            let mode = if nr == libc::SYS_mkdir {
                args[1]
            } else {
                args[2]
            } as u32;
            // SAFETY: mkdirat(2) reads the NUL-terminated `name`.
            done(unsafe { libc::mkdirat(d, name.as_ptr(), mode & 0o7777 & !umask) })
        }
        libc::SYS_rename | libc::SYS_renameat | libc::SYS_renameat2 => {
            let Some(second) = local.get(1) else {
                return Here::Home;
            };
            let (dir2, name2) = match parent(second) {
                Ok(Some(x)) => x,
                Ok(None) => return Here::Home,
                Err(e) => return Here::Done(errno_of(e), None),
            };
            let flags = if nr == libc::SYS_renameat2 {
                args[4] as u32
            } else {
                0
            };
            // SAFETY: renameat2(2) reads the two NUL-terminated names.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    d,
                    name.as_ptr(),
                    dir2.as_raw_fd(),
                    name2.as_ptr(),
                    flags,
                )
            };
            done(r as libc::c_int)
        }
        libc::SYS_readlink | libc::SYS_readlinkat => {
            let (buf, size) = if nr == libc::SYS_readlink {
                (args[1], args[2] as i32)
            } else {
                (args[2], args[3] as i32)
            };
            if size <= 0 {
                return Here::Done(-i64::from(libc::EINVAL), None);
            }
            let mut out = vec![0u8; (size as usize).min(mosix_core::syscalls::MAX_PATH)];
            // SAFETY: readlinkat(2) reads the NUL-terminated `name` and writes at most
            // `out.len()` bytes into `out`.
            let r =
                unsafe { libc::readlinkat(d, name.as_ptr(), out.as_mut_ptr().cast(), out.len()) };
            if r < 0 {
                return Here::Done(errno_of(Errno::last()), None);
            }
            out.truncate(r as usize);
            Here::Done(r as i64, Some((buf, out)))
        }
        _ => Here::Home,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_of_homes_numbers_follows_calls_and_forgets_what_it_cannot_follow() {
        let mut t = HomeTable::default();
        assert_eq!(t.lowest_free(), None);
        t.set(Some(vec![0, 1, 2, 4]), 0o022);
        assert_eq!(t.lowest_free(), Some(3));
        t.taken(3);
        assert_eq!(t.lowest_free(), Some(5));
        t.after(libc::SYS_close, &[1, 0, 0, 0, 0, 0], 0);
        assert_eq!(t.lowest_free(), Some(1));
        t.after(libc::SYS_openat, &[0; 6], 1);
        t.after(libc::SYS_dup2, &[0, 5, 0, 0, 0, 0], 5);
        assert_eq!(t.lowest_free(), Some(6));
        t.after(libc::SYS_umask, &[0o077, 0, 0, 0, 0, 0], 0o022);
        assert_eq!(t.umask(), 0o077);
        t.freed(4);
        assert_eq!(t.lowest_free(), Some(4));
        t.after(libc::SYS_recvmsg, &[0; 6], 10);
        assert!(!t.known());
        assert_eq!(t.lowest_free(), None);
    }

    #[test]
    fn the_calls_run_here_are_the_tables() {
        for s in mosix_core::syscalls::DFSA_HERE {
            assert!(path_args(s as i64).is_some(), "{s:?}");
        }
        assert!(path_args(libc::SYS_truncate).is_none());
        assert!(path_args(libc::SYS_openat2).is_none());
    }

    #[test]
    fn links_resolve_here_as_through_mfs_and_proc_is_never_resolved_here() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("f", real.join("flink")).unwrap();
        let me = User {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: Vec::new(),
        };
        // Run on a thread of its own: as_user changes the thread.
        std::thread::spawn(move || {
            let ok = open(&me, &real.join("f"), libc::O_RDONLY, 0, 0).unwrap();
            assert!(ok.is_some());
            let via = open(&me, &dir.path().join("link/f"), libc::O_RDONLY, 0, 0).unwrap();
            assert!(via.is_some(), "links resolve here as through MFS");
            let proc = open(&me, Path::new("/proc/self/status"), libc::O_RDONLY, 0, 0);
            assert!(
                proc.unwrap().is_none(),
                "the service's /proc/self is never opened here"
            );
            let magic = open(&me, Path::new("/proc/self/fd/0"), libc::O_RDONLY, 0, 0);
            assert!(magic.unwrap().is_none());
            assert!(open(&me, &real, libc::O_RDONLY, 0, 0).unwrap().is_none());
            let a = [0u64; 6];
            let pst = run(
                &me,
                libc::SYS_stat,
                &a,
                &[Path::new("/proc/self/status")],
                0,
                true,
            );
            assert_eq!(pst, Here::Home);
            let st = run(&me, libc::SYS_stat, &a, &[&real.join("flink")], 0, true);
            assert_eq!(st, Here::Home);
            let lst = run(&me, libc::SYS_lstat, &a, &[&real.join("flink")], 0, true);
            assert!(matches!(lst, Here::Done(0, Some(_))));
            let gone = run(&me, libc::SYS_unlink, &a, &[&real.join("nothing")], 0, true);
            assert_eq!(gone, Here::Done(-i64::from(libc::ENOENT), None));
            let mk = [0, 0o777, 0, 0, 0, 0];
            let made = run(&me, libc::SYS_mkdir, &mk, &[&real.join("d")], 0o027, true);
            assert_eq!(made, Here::Done(0, None));
            let mode = std::fs::metadata(real.join("d")).unwrap();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
                0o750
            );
        })
        .join()
        .unwrap();
    }
}
