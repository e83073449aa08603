//! Running a piece of work, on the calling thread only, with a user's ids and groups.
//!
//! The node service runs as root; work it does for a user (a file operation of the MOSIX File
//! System) must have that user's rights and no more. Linux keeps credentials per thread: the
//! raw `setgroups`, `setresgid` and `setresuid` calls change only the calling thread (the C
//! library's wrappers would change every thread of the service). With the effective uid no
//! longer 0 the kernel clears the thread's effective capabilities, so the work has exactly the
//! user's rights: no `CAP_DAC_OVERRIDE`, no `CAP_FOWNER`, no `CAP_SYS_RESOURCE` (reserved
//! blocks, quotas); files it creates belong to the user. The real and saved uids stay 0, which
//! is what lets the thread become root again afterwards, restoring its capabilities.
//!
//! The thread's umask would be the whole service's; [`as_user`] gives the thread a file-system
//! context of its own (`unshare(CLONE_FS)`) with umask 0 once, so that modes arrive as the
//! caller computed them with its own umask.

use std::cell::Cell;

use nix::errno::Errno;

/// A user's ids for file work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The uid.
    pub uid: u32,
    /// The gid.
    pub gid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
}

thread_local! {
    static OWN_FS: Cell<bool> = const { Cell::new(false) };
}

fn check(r: libc::c_long) -> Result<(), Errno> {
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn set_groups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: setgroups(2) reads `groups.len()` gids from the slice, which outlives the call.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
}

fn set_ids(uid: u32, gid: u32) -> Result<(), Errno> {
    const KEEP: libc::c_long = -1;
    // SAFETY: setresgid(2)/setresuid(2) take integers only.
    unsafe {
        check(libc::syscall(
            libc::SYS_setresgid,
            KEEP,
            libc::c_long::from(gid),
            KEEP,
        ))?;
        check(libc::syscall(
            libc::SYS_setresuid,
            KEEP,
            libc::c_long::from(uid),
            KEEP,
        ))
    }
}

/// Back to root: uid first (it gives back the capabilities that setting the gid and groups
/// needs).
fn become_root() {
    // SAFETY: setresuid(2)/setresgid(2) take integers only; setgroups(2) with 0 entries reads
    // nothing.
    let ok = unsafe {
        libc::syscall(
            libc::SYS_setresuid,
            -1 as libc::c_long,
            0 as libc::c_long,
            -1 as libc::c_long,
        ) == 0
            && libc::syscall(
                libc::SYS_setresgid,
                -1 as libc::c_long,
                0 as libc::c_long,
                -1 as libc::c_long,
            ) == 0
            && libc::syscall(
                libc::SYS_setgroups,
                0 as libc::c_long,
                std::ptr::null::<u32>(),
            ) == 0
    };
    if !ok {
        // The thread would go on with a user's rights and do root's work wrongly, or with
        // root's and do a user's work with too many: neither may happen.
        tracing::error!(
            "cannot give a service thread its root credentials back ({}); stopping",
            Errno::last()
        );
        std::process::abort();
    }
}

/// The process's dumpable flag before any thread changed ids (-1: not read yet). A change of
/// effective uid makes the whole process non-dumpable (`suid_dumpable`), which would change
/// who may read its `/proc` files and trace it; the flag is put back after each piece of work.
static DUMPABLE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

fn dumpable() -> i32 {
    let d = DUMPABLE.load(std::sync::atomic::Ordering::Relaxed);
    if d >= 0 {
        return d;
    }
    // SAFETY: prctl(2) PR_GET_DUMPABLE takes no pointer.
    let now = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
    let _ = DUMPABLE.compare_exchange(
        -1,
        now.max(0),
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
    DUMPABLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `work` on this thread as `user`, then makes the thread root again. An error of
/// switching is returned as the work's errno would be (`EPERM` when the service is not root).
pub fn as_user<T>(user: &User, work: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    if !OWN_FS.get() {
        // SAFETY: unshare(2) with CLONE_FS affects only the calling thread's fs context;
        // umask(2) then sets this thread's own mask.
        unsafe {
            if libc::unshare(libc::CLONE_FS) != 0 {
                return Err(Errno::last());
            }
            libc::umask(0);
        }
        OWN_FS.set(true);
    }
    let was = dumpable();
    let switched = set_groups(&user.groups).and_then(|()| set_ids(user.uid, user.gid));
    let out = switched.and_then(|()| work());
    become_root();
    // SAFETY: prctl(2) PR_SET_DUMPABLE takes an integer.
    unsafe {
        if libc::prctl(libc::PR_GET_DUMPABLE) != was {
            libc::prctl(
                libc::PR_SET_DUMPABLE,
                libc::c_ulong::try_from(was).unwrap_or(1),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_with_the_users_rights_and_the_thread_is_root_again_after() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let made = dir.path().join("made");
        // On a thread of its own: the test harness's threads stay as they are.
        std::thread::spawn(move || {
            let user = User {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            let read = as_user(&user, || {
                std::fs::read(&secret).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
            });
            assert_eq!(read, Err(Errno::EACCES), "root's file read as nobody");
            let created = as_user(&user, || {
                // The directory is root's 0700: nobody cannot create in it either.
                std::fs::write(&made, b"y")
                    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
            });
            assert_eq!(created, Err(Errno::EACCES));
            // Root again: the same read works.
            assert!(std::fs::read(&secret).is_ok());
            assert!(nix::unistd::geteuid().is_root());
            // SAFETY: prctl(2) PR_GET_DUMPABLE takes no pointer.
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE) }, dumpable());
        })
        .join()
        .unwrap();
    }
}
