//! Filling another process's fresh memory fast: a userfaultfd of the target's, used from here.
//!
//! Writing pages into a process that does not have them yet is the bulk of a migration's
//! arrival. Through `/proc/PID/mem` every 4 KiB page is a separate remote fault (the kernel
//! pins, faults and copies one page at a time): about 330 MB/s on our test machine, five times
//! slower than the link. `process_vm_writev` batches the pinning but still faults page by page
//! (about 900 MB/s to 2 GB/s). `UFFDIO_COPY` on a userfaultfd allocates, fills and maps the
//! pages of a whole run in one call, without faulting: about 4 GB/s. That is what CRIU's lazy
//! pages use, and it also leaves the door open to moving a process before all its memory has
//! arrived.
//!
//! A userfaultfd belongs to the address space of the process that created it, so the target
//! creates it (an injected `userfaultfd(2)` call) and we take a copy of the descriptor with
//! `pidfd_getfd`; the `UFFDIO_*` ioctls then work from our side on the target's memory. It is
//! made with `UFFD_USER_MODE_ONLY`, which needs no privilege and makes a kernel-mode access to
//! a page that has not arrived fail rather than wait for us. The registration ends (explicitly,
//! and in any case when the last descriptor closes) before the process runs: a missing page is
//! then an ordinary zero page again.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use linux_raw_sys::general::{
    UFFD_API, UFFDIO_REGISTER_MODE_MISSING, uffdio_api, uffdio_copy, uffdio_range, uffdio_register,
};
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_COPY, UFFDIO_REGISTER, UFFDIO_UNREGISTER};

/// The flags for the target's `userfaultfd(2)` call.
pub const CREATE_FLAGS: u64 =
    (libc::O_CLOEXEC as u64) | linux_raw_sys::general::UFFD_USER_MODE_ONLY as u64;

/// A userfaultfd of another process, held here.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    registered: Vec<(u64, u64)>,
}

/// `ioctl(fd, req, arg)`: its non-negative result, or the error.
pub(crate) fn ioctl<T>(fd: &impl AsRawFd, req: u32, arg: &mut T) -> io::Result<i64> {
    // SAFETY: every request made with this takes a pointer to the matching structure
    // (`uffdio_*`, `pm_scan_arg`), which `arg` is (the callers pair them); the kernel reads and
    // writes only that structure and, for PAGEMAP_SCAN, the region array it points to, which
    // the caller keeps alive and sized as it says.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            req as libc::c_ulong,
            std::ptr::from_mut(arg),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i64::from(r))
    }
}

impl Uffd {
    /// Takes over a userfaultfd descriptor that has not been through `UFFDIO_API` yet.
    pub fn adopt(fd: OwnedFd) -> io::Result<Uffd> {
        let mut api = uffdio_api {
            api: u64::from(UFFD_API),
            features: 0,
            ioctls: 0,
        };
        ioctl(&fd, UFFDIO_API, &mut api)?;
        Ok(Uffd {
            fd,
            registered: Vec::new(),
        })
    }

    /// Registers `[start, end)` of the target's memory for missing pages.
    pub fn register(&mut self, start: u64, end: u64) -> io::Result<()> {
        let mut reg = uffdio_register {
            range: uffdio_range {
                start,
                len: end - start,
            },
            mode: u64::from(UFFDIO_REGISTER_MODE_MISSING),
            ioctls: 0,
        };
        ioctl(&self.fd, UFFDIO_REGISTER, &mut reg)?;
        self.registered.push((start, end));
        Ok(())
    }

    /// Places `data` at `dst` in the target's memory; the pages must be missing there.
    pub fn copy(&self, dst: u64, data: &[u8]) -> io::Result<()> {
        let done = self.copy_missing(dst, data)?;
        if done < data.len() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(())
    }

    /// Places as much of `data` at `dst` as it can up to the first page the target already
    /// has, and says how many bytes that was (all of it when every page was missing).
    pub fn copy_missing(&self, dst: u64, data: &[u8]) -> io::Result<usize> {
        let mut done = 0usize;
        let mut idle = 0;
        while done < data.len() {
            let mut c = uffdio_copy {
                dst: dst + done as u64,
                src: data[done..].as_ptr() as u64,
                len: (data.len() - done) as u64,
                mode: 0,
                copy: 0,
            };
            match ioctl(&self.fd, UFFDIO_COPY, &mut c) {
                Ok(_) => done += c.copy as usize,
                // Interrupted part way: `copy` says how far it got.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && c.copy > 0 => {
                    done += c.copy as usize;
                }
                // The address space is changing under us (it should not: the target is
                // stopped and we asked for no events); give up after a while.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && idle < 1000 => idle += 1,
                // A page that is there already (a live move sends pages again).
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(done),
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Ends every registration (missing pages are ordinary zero pages again).
    pub fn unregister_all(&mut self) -> io::Result<()> {
        for (start, end) in std::mem::take(&mut self.registered) {
            let mut r = uffdio_range {
                start,
                len: end - start,
            };
            ioctl(&self.fd, UFFDIO_UNREGISTER, &mut r)?;
        }
        Ok(())
    }
}
