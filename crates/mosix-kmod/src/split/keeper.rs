//! What home keeps so that no write a program was told is written is lost, even if the deputy
//! is killed at home while writes still wait behind on the remote (`kill -9`, which no one can
//! intercept).
//!
//! When home lets the remote write behind on a descriptor ([`crate::split::forward::exec_streamed`]
//! grants it), the executor takes a duplicate of the descriptor and notes the process's
//! credentials. If the deputy dies, its agent is gone, and the writes the remote still sends are
//! finished here on the duplicate — by a short-lived thread that first takes the process's
//! uids, gids and groups (credentials are per thread; the raw calls change only that thread), so
//! the write is checked as the process's would be. Its file size limit cannot be given to a
//! thread of the service, but the remote wrote behind only within the room home vouched for,
//! which that limit bounded.
//!
//! The duplicates are let go when the process closes or replaces the descriptor, and with the
//! executor: they must not keep a file the process closed open.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};

/// The duplicates and the credentials of one process.
#[derive(Debug, Default)]
pub struct Keeper {
    dups: HashMap<i32, OwnedFd>,
    creds: Option<Creds>,
}

/// A thread's identity as `/proc/PID/status` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Creds {
    uid: [u32; 4],
    gid: [u32; 4],
    groups: Vec<u32>,
}

fn creds_of(pid: i32) -> Option<Creds> {
    let s = procfs::process::Process::new(pid).ok()?.status().ok()?;
    Some(Creds {
        uid: [s.ruid, s.euid, s.suid, s.fuid],
        gid: [s.rgid, s.egid, s.sgid, s.fgid],
        groups: s.groups.clone(),
    })
}

impl Keeper {
    /// The deputy `pid` may now write `fd` behind: keep a duplicate of it.
    pub fn grant(&mut self, pid: i32, fd: i32) {
        if let Ok(d) = crate::kernel::seccomp::take_fd(pid, fd) {
            self.dups.insert(fd, d);
        }
        if let Some(c) = creds_of(pid) {
            self.creds = Some(c);
        }
    }

    /// The deputy ran `nr(args)` with result `ret`: descriptors it closed or replaced are let go.
    /// A `close` frees the number whatever it returns (but `EBADF`: there was nothing to
    /// close), so its duplicate goes too: it must not keep the file, its locks or a later write
    /// of the number's next file.
    pub fn after_deputy_call(&mut self, nr: u64, args: &[u64; 6], ret: i64) {
        let n = nr as i64;
        if n == libc::SYS_close {
            if ret != -i64::from(libc::EBADF) {
                self.dups.remove(&(args[0] as i32));
            }
            return;
        }
        if ret < 0 && ret != -i64::from(libc::EINTR) {
            return;
        }
        if n == libc::SYS_dup2 || n == libc::SYS_dup3 {
            self.dups.remove(&(args[1] as i32));
        } else if n == libc::SYS_close_range {
            let (first, last) = (args[0] as i32, args[1] as u32);
            self.dups.retain(|fd, _| *fd < first || (*fd as u32) > last);
        }
    }

    /// Whether a duplicate of `fd` is kept.
    pub fn keeps(&self, fd: i32) -> bool {
        self.dups.contains_key(&fd)
    }

    /// The path of the file `fd`'s duplicate is open on, for messages.
    pub fn path(&self, fd: i32) -> String {
        self.dups
            .get(&fd)
            .and_then(|d| std::fs::read_link(format!("/proc/self/fd/{}", d.as_raw_fd())).ok())
            .map_or_else(|| format!("descriptor {fd}"), |p| p.display().to_string())
    }

    /// The offset of `fd`'s open file description, as our duplicate sees it (it is shared).
    pub fn offset(&self, fd: i32) -> Option<u64> {
        let dup = self.dups.get(&fd)?;
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", dup.as_raw_fd())).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("pos:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Writes `data` to the kept duplicate of `fd`, all of it unless an error stops it, with the
    /// process's credentials; the bytes written, or `-errno` when none were.
    pub fn write(&self, fd: i32, data: &[u8]) -> i64 {
        let (Some(dup), Some(creds)) = (self.dups.get(&fd), self.creds.clone()) else {
            return -i64::from(libc::EBADF);
        };
        let raw = dup.as_raw_fd();
        std::thread::scope(|s| {
            let writer = s.spawn(move || -> i64 {
                if let Err(e) = become_(&creds) {
                    return -i64::from(e);
                }
                let mut done = 0usize;
                while done < data.len() {
                    // SAFETY: write(2) from the unwritten tail of `data`, which outlives the
                    // call, to a descriptor this process owns (`dup`, alive for the scope).
                    let r = unsafe {
                        libc::write(raw, data[done..].as_ptr().cast(), data.len() - done)
                    };
                    if r < 0 {
                        let e = nix::errno::Errno::last_raw();
                        if e == libc::EINTR {
                            continue;
                        }
                        return if done == 0 {
                            -i64::from(e)
                        } else {
                            done as i64
                        };
                    }
                    if r == 0 {
                        break;
                    }
                    done += r as usize;
                }
                done as i64
            });
            writer.join().unwrap_or(-i64::from(libc::EIO))
        })
    }
}

/// Makes the calling thread (only it: raw calls, not the C library's, which would change every
/// thread of the service) take the process's groups, gids and uids. From root to another uid
/// the kernel clears the thread's capabilities too.
fn become_(c: &Creds) -> Result<(), i32> {
    let check = |r: libc::c_long| {
        if r < 0 {
            Err(nix::errno::Errno::last_raw())
        } else {
            Ok(())
        }
    };
    // SAFETY: setgroups(2) reads `c.groups.len()` gids from the vector, which outlives the call.
    check(unsafe { libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) })?;
    // SAFETY: setresgid(2)/setresuid(2)/setfsgid(2)/setfsuid(2) take integers only.
    unsafe {
        check(libc::syscall(
            libc::SYS_setresgid,
            c.gid[0],
            c.gid[1],
            c.gid[2],
        ))?;
        libc::syscall(libc::SYS_setfsgid, c.gid[3]);
        check(libc::syscall(
            libc::SYS_setresuid,
            c.uid[0],
            c.uid[1],
            c.uid[2],
        ))?;
        libc::syscall(libc::SYS_setfsuid, c.uid[3]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeping(fds: &[i32]) -> Keeper {
        let mut k = Keeper::default();
        for &fd in fds {
            let f = std::fs::File::open("/dev/null").unwrap();
            k.dups.insert(fd, OwnedFd::from(f));
        }
        k
    }

    #[test]
    fn a_close_lets_the_duplicate_go_whatever_it_returns_but_ebadf() {
        let close = |fd: u64| [fd, 0, 0, 0, 0, 0];
        let mut k = keeping(&[3, 4, 5]);
        k.after_deputy_call(libc::SYS_close as u64, &close(3), 0);
        k.after_deputy_call(libc::SYS_close as u64, &close(4), -i64::from(libc::EIO));
        k.after_deputy_call(libc::SYS_close as u64, &close(5), -i64::from(libc::EBADF));
        assert!(!k.keeps(3));
        assert!(!k.keeps(4), "a close that failed still freed the number");
        assert!(k.keeps(5), "EBADF: nothing was closed");
    }

    #[test]
    fn dup2_and_close_range_let_replaced_numbers_go() {
        let mut k = keeping(&[3, 4, 7, 9]);
        k.after_deputy_call(libc::SYS_dup2 as u64, &[0, 3, 0, 0, 0, 0], 3);
        assert!(!k.keeps(3));
        k.after_deputy_call(
            libc::SYS_dup2 as u64,
            &[0, 4, 0, 0, 0, 0],
            -i64::from(libc::EBADF),
        );
        assert!(k.keeps(4), "a failed dup2 replaced nothing");
        k.after_deputy_call(libc::SYS_close_range as u64, &[5, 8, 0, 0, 0, 0], 0);
        assert!(!k.keeps(7));
        assert!(k.keeps(9));
    }
}
