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
    /// The user this thread was left as by [`as_user_staying`] (`None`: it is root).
    static STAYING: std::cell::RefCell<Option<User>> = const { std::cell::RefCell::new(None) };
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

/// Makes the process non-dumpable, once and for good, before any of its threads takes a
/// user's ids. While a thread's effective uid is a user's, a dumpable process's `/proc` entries
/// would belong to that user (the kernel's `task_dump_owner`), who could then raise the
/// service's `oom_score_adj` or its autogroup's nice value through them; non-dumpable, they stay
/// root's whatever ids a thread has. (The kernel clears the flag at the first change of
/// effective uid anyway; putting it back after each switch cost two `prctl`s and left the
/// window open while the work ran.)
fn undumpable() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: prctl(2) PR_SET_DUMPABLE takes an integer.
    ONCE.call_once(|| unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong);
    });
}

/// Runs `work` on this thread as `user` and leaves the thread so, until [`root_again`]: a run
/// of file calls for one user (a guest's path calls) pays for the switch once, not twice per
/// call (six credential calls and two `prctl`s, about 20 µs on this machine). The caller must
/// call [`root_again`] before it does anything else, anything that needs root's rights
/// included (it fails with `EPERM` otherwise: never with more rights than the user's).
pub fn as_user_staying<T>(
    user: &User,
    work: impl FnOnce() -> Result<T, Errno>,
) -> Result<T, Errno> {
    let already = STAYING.with(|s| s.borrow().as_ref() == Some(user));
    if !already {
        root_again();
        own_fs()?;
        undumpable();
        if let Err(e) = set_groups(&user.groups).and_then(|()| set_ids(user.uid, user.gid)) {
            become_root();
            return Err(e);
        }
        STAYING.with(|s| *s.borrow_mut() = Some(user.clone()));
    }
    work()
}

/// Whether this thread was left as a user by [`as_user_staying`].
pub fn staying() -> bool {
    STAYING.with(|s| s.borrow().is_some())
}

/// Makes a thread left as a user by [`as_user_staying`] root again (nothing if it is root).
pub fn root_again() {
    if STAYING.with(|s| s.borrow_mut().take()).is_some() {
        become_root();
    }
}

/// The thread's own file-system context with umask 0, made once.
fn own_fs() -> Result<(), Errno> {
    if !OWN_FS.get() {
        // SAFETY: unshare(CLONE_FS) and umask(2) change only this thread's file-system
        // context, which no other thread shares after the unshare.
        unsafe {
            if libc::unshare(libc::CLONE_FS) != 0 {
                return Err(Errno::last());
            }
            libc::umask(0);
        }
        OWN_FS.set(true);
    }
    Ok(())
}

/// Runs `work` on this thread as `user`, then makes the thread root again. An error of
/// switching is returned as the work's errno would be (`EPERM` when the service is not root).
pub fn as_user<T>(user: &User, work: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    root_again();
    own_fs()?;
    undumpable();
    let switched = set_groups(&user.groups).and_then(|()| set_ids(user.uid, user.gid));
    let out = switched.and_then(|()| work());
    become_root();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests change the process's credentials and dumpable flag: one at a time.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn work_runs_with_the_users_rights_and_the_thread_is_root_again_after() {
        let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
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
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE) }, 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_left_as_a_user_has_the_users_rights_until_it_is_root_again() {
        let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let nobody = User {
            uid: 65534,
            gid: 65534,
            groups: Vec::new(),
        };
        std::thread::spawn(move || {
            let read = || std::fs::read(&secret).map_err(|_| Errno::EACCES);
            assert_eq!(as_user_staying(&nobody, read), Err(Errno::EACCES));
            // Still nobody between calls: even root's own work fails now.
            assert_eq!(nix::unistd::geteuid().as_raw(), 65534);
            // Its /proc entries stay root's, not nobody's (the process is not dumpable).
            let tid = nix::unistd::gettid();
            let me = std::fs::metadata(format!("/proc/self/task/{tid}/oom_score_adj")).unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&me), 0);
            assert!(read().is_err());
            assert_eq!(as_user_staying(&nobody, read), Err(Errno::EACCES));
            root_again();
            assert!(nix::unistd::geteuid().is_root());
            assert_eq!(read(), Ok(b"x".to_vec()));
            // as_user from a staying thread starts from root and ends there.
            assert_eq!(as_user_staying(&nobody, || Ok(1)), Ok(1));
            assert_eq!(as_user(&nobody, read), Err(Errno::EACCES));
            assert!(nix::unistd::geteuid().is_root());
        })
        .join()
        .unwrap();
    }
}
