//! Which pages a running process writes, so that its memory can be sent while it runs and only
//! what it wrote since is sent again (pre-copy, for moves that barely pause).
//!
//! Soft-dirty bits are absent on this kernel. What replaces them (Linux 6.7, as CRIU uses it):
//! the process's anonymous areas are registered on a userfaultfd of its own in write-protect
//! mode with `UFFD_FEATURE_WP_ASYNC` — a write to a protected page is resolved by the kernel
//! itself, with no message to us and no wait, and marks the page written — and
//! `UFFD_FEATURE_WP_UNPOPULATED`, so that a page the process touches for the first time is
//! marked too. The `PAGEMAP_SCAN` ioctl on `/proc/PID/pagemap` then lists the written ranges
//! and protects them again in the same walk (`PM_SCAN_WP_MATCHING`): one call per round, about
//! half a millisecond for 1 GiB here. The price is one minor fault per page on the first write
//! after each scan (measured in `docs/migration.md`).
//!
//! The userfaultfd must belong to the target's address space: the target makes it (injected,
//! or by itself in the tests) and we take a copy with `pidfd_getfd`, as for
//! [`crate::kernel::uffd`]. Areas that could not be registered (a kind the kernel does not
//! protect) and areas made after the start are not tracked: the caller sends them whole at
//! the end. Closing the tracker ends the registrations; nothing is left in the process.

use std::io;
use std::os::fd::OwnedFd;

use crate::kernel::uffd::ioctl;

use linux_raw_sys::general::{
    PAGE_IS_FILE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WPALLOWED,
    PAGE_IS_WRITTEN, PM_SCAN_WP_MATCHING, UFFD_API, UFFD_FEATURE_WP_ASYNC,
    UFFD_FEATURE_WP_UNPOPULATED, UFFDIO_REGISTER_MODE_WP, page_region, pm_scan_arg, uffdio_api,
    uffdio_range, uffdio_register, uffdio_writeprotect,
};
use linux_raw_sys::ioctl::{UFFDIO_API, UFFDIO_REGISTER, UFFDIO_UNREGISTER, UFFDIO_WRITEPROTECT};

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)` (not in linux-raw-sys's ioctl list).
const PAGEMAP_SCAN: u32 =
    (3 << 30) | ((std::mem::size_of::<pm_scan_arg>() as u32) << 16) | (0x66 << 8) | 16;
/// `UFFDIO_WRITEPROTECT_MODE_WP`.
const WRITEPROTECT_MODE_WP: u64 = 1;
/// Regions one `PAGEMAP_SCAN` call returns at most (it is called again from where it stopped).
const REGIONS_PER_SCAN: usize = 4096;

/// Tracks the pages a process writes in some of its areas.
#[derive(Debug)]
pub struct Tracker {
    uffd: OwnedFd,
    pagemap: std::fs::File,
    /// The ranges registered and protected.
    tracked: Vec<(u64, u64)>,
}

impl Tracker {
    /// Starts tracking `ranges` of process `pid`'s memory with `uffd`, a userfaultfd the
    /// process made (with [`crate::kernel::uffd::CREATE_FLAGS`]) that has not been through
    /// `UFFDIO_API`. Every page of the ranges counts as written from now on only if it is
    /// written. A range the kernel will not register is left out: see [`Tracker::tracked`].
    /// `Err` when the kernel has no asynchronous write-protection at all.
    pub fn start(pid: i32, uffd: OwnedFd, ranges: &[(u64, u64)]) -> io::Result<Tracker> {
        let mut api = uffdio_api {
            api: u64::from(UFFD_API),
            features: u64::from(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED),
            ioctls: 0,
        };
        ioctl(&uffd, UFFDIO_API, &mut api)?;
        let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
        let mut tracked = Vec::new();
        for &(start, end) in ranges {
            let mut reg = uffdio_register {
                range: uffdio_range {
                    start,
                    len: end - start,
                },
                mode: u64::from(UFFDIO_REGISTER_MODE_WP),
                ioctls: 0,
            };
            if ioctl(&uffd, UFFDIO_REGISTER, &mut reg).is_err() {
                continue;
            }
            let mut wp = uffdio_writeprotect {
                range: uffdio_range {
                    start,
                    len: end - start,
                },
                mode: WRITEPROTECT_MODE_WP,
            };
            if ioctl(&uffd, UFFDIO_WRITEPROTECT, &mut wp).is_err() {
                let mut r = uffdio_range {
                    start,
                    len: end - start,
                };
                let _ = ioctl(&uffd, UFFDIO_UNREGISTER, &mut r);
                continue;
            }
            tracked.push((start, end));
        }
        Ok(Tracker {
            uffd,
            pagemap,
            tracked,
        })
    }

    /// The ranges whose writes are tracked (the others must be taken as written).
    pub fn tracked(&self) -> &[(u64, u64)] {
        &self.tracked
    }

    /// The ranges written since the start or the last call, page-aligned, in address order;
    /// they are protected again, so the next call reports only what is written after this
    /// one.
    pub fn written(&mut self) -> io::Result<Vec<(u64, u64)>> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &range in &self.tracked {
            // Only areas still registered: one the process unmapped is not scanned, and one
            // it mapped in its place is not tracked (see [`wp_areas`]).
            let found = scan(
                &self.pagemap,
                range,
                Select {
                    flags: PM_SCAN_WP_MATCHING,
                    inverted: 0,
                    mask: PAGE_IS_WRITTEN | PAGE_IS_WPALLOWED,
                    anyof: 0,
                    report: PAGE_IS_WRITTEN,
                },
            )?;
            for r in found {
                match out.last_mut() {
                    Some(last) if last.1 == r.0 => last.1 = r.1,
                    _ => out.push(r),
                }
            }
        }
        Ok(out)
    }
}

/// The areas of process `pid` that are registered for write-protection now (`uw` among their
/// `VmFlags` in `/proc/PID/smaps`). An area the tracker registered that is not among them was
/// unmapped — and whatever the process mapped in its place is not tracked, even at the same
/// addresses: its pages must be sent whole.
pub fn wp_areas(pid: i32) -> io::Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut out = Vec::new();
    let mut range: Option<(u64, u64)> = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(r) = range.take()
                && flags.split_whitespace().any(|f| f == "uw")
            {
                out.push(r);
            }
            continue;
        }
        let Some((span, _)) = line.split_once(' ') else {
            continue;
        };
        if let Some((s, e)) = span.split_once('-')
            && let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
        {
            range = Some((s, e));
        }
    }
    Ok(out)
}

/// The ranges of `start..end` (through a process's `pagemap`) whose pages hold data: present
/// or swapped, and not the shared zero page. A page sent earlier that holds none now was
/// discarded (`MADV_DONTNEED`) and reads as zeroes: a live move sends it again.
pub fn with_data(pagemap: &std::fs::File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    // Not the zero page, and present or swapped.
    scan(
        pagemap,
        (start, end),
        Select {
            flags: 0,
            inverted: PAGE_IS_PFNZERO,
            mask: PAGE_IS_PFNZERO,
            anyof: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            report: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        },
    )
}

/// The ranges of `start..end` of a private file mapping whose pages are the process's own
/// copies (written at some time: they differ from the file), present or swapped.
pub fn private_copies(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
) -> io::Result<Vec<(u64, u64)>> {
    scan(
        pagemap,
        (start, end),
        Select {
            flags: 0,
            inverted: PAGE_IS_FILE,
            mask: PAGE_IS_FILE,
            anyof: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            report: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        },
    )
}

/// Which pages a `PAGEMAP_SCAN` reports: those with every category of `mask` (each flipped
/// first where `inverted` says) and one of `anyof`; `flags` may protect them again.
struct Select {
    flags: u32,
    inverted: u32,
    mask: u32,
    anyof: u32,
    report: u32,
}

/// The ranges of `start..end` whose pages `sel` selects, adjacent ones joined.
fn scan(
    pagemap: &std::fs::File,
    (start, end): (u64, u64),
    sel: Select,
) -> io::Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut regions = vec![
        page_region {
            start: 0,
            end: 0,
            categories: 0,
        };
        REGIONS_PER_SCAN
    ];
    let mut from = start;
    while from < end {
        let mut a = pm_scan_arg {
            size: std::mem::size_of::<pm_scan_arg>() as u64,
            flags: u64::from(sel.flags),
            start: from,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            category_inverted: u64::from(sel.inverted),
            category_mask: u64::from(sel.mask),
            category_anyof_mask: u64::from(sel.anyof),
            return_mask: u64::from(sel.report),
        };
        let n = ioctl(pagemap, PAGEMAP_SCAN, &mut a)? as usize;
        for r in &regions[..n.min(regions.len())] {
            match out.last_mut() {
                Some(last) if last.1 == r.start => last.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
        if a.walk_end <= from {
            break;
        }
        from = a.walk_end;
    }
    Ok(out)
}

impl Tracker {
    /// The process's `pagemap` (for [`with_data`]).
    pub fn pagemap(&self) -> &std::fs::File {
        &self.pagemap
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for &(start, end) in &self.tracked {
            let mut r = uffdio_range {
                start,
                len: end - start,
            };
            let _ = ioctl(&self.uffd, UFFDIO_UNREGISTER, &mut r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;
    const PAGES: u64 = 4096;

    /// Reads exactly one byte from `fd`.
    fn byte(fd: i32) -> u8 {
        let mut b = [0u8];
        // SAFETY: read(2) into a valid one-byte buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 1, "the child went away");
        b[0]
    }

    fn send(fd: i32, b: &[u8]) {
        // SAFETY: write(2) from a valid buffer of that length.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        assert_eq!(n, b.len() as isize);
    }

    /// A child makes a userfaultfd and 16 MiB, half of it touched; the parent tracks it, then
    /// the child writes some pages (one never touched before, one by the kernel in a `read`),
    /// and the parent is told exactly those; then one more, and only that one.
    #[test]
    fn the_pages_a_process_writes_are_reported_once() {
        let mut to_child = [0i32; 2];
        let mut to_parent = [0i32; 2];
        let mut data = [0i32; 2];
        // SAFETY: pipe(2) fills two descriptors each.
        unsafe {
            assert_eq!(libc::pipe(to_child.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(to_parent.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(data.as_mut_ptr()), 0);
        }
        // SAFETY: the child only makes system calls (no allocation, no lock) and ends with
        // _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: system calls on our own memory and descriptors; every pointer is into
            // the area just mapped or a local.
            unsafe {
                let len = (PAGES * PAGE) as usize;
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
                .cast::<u8>();
                for p in 0..PAGES / 2 {
                    *m.add((p * PAGE) as usize) = 1;
                }
                let fd = libc::syscall(
                    libc::SYS_userfaultfd,
                    crate::kernel::uffd::CREATE_FLAGS as libc::c_long,
                );
                let mut msg = [0u8; 12];
                msg[..8].copy_from_slice(&(m as u64).to_le_bytes());
                msg[8..].copy_from_slice(&(fd as i32).to_le_bytes());
                libc::write(to_parent[1], msg.as_ptr().cast(), 12);
                let mut b = [0u8];
                libc::read(to_child[0], b.as_mut_ptr().cast(), 1);
                *m.add((3 * PAGE) as usize) = 2;
                *m.add((5 * PAGE + 100) as usize) = 2;
                *m.add(((PAGES - 2) * PAGE) as usize) = 2;
                // The kernel writes page 7 for us.
                libc::read(data[0], m.add((7 * PAGE) as usize).cast(), 4);
                libc::write(to_parent[1], b.as_ptr().cast(), 1);
                libc::read(to_child[0], b.as_mut_ptr().cast(), 1);
                *m.add((9 * PAGE) as usize) = 3;
                libc::write(to_parent[1], b.as_ptr().cast(), 1);
                libc::read(to_child[0], b.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let mut msg = [0u8; 12];
        for b in &mut msg {
            *b = byte(to_parent[0]);
        }
        let base = u64::from_le_bytes(msg[..8].try_into().unwrap());
        let fd = i32::from_le_bytes(msg[8..].try_into().unwrap());
        assert!(fd >= 0, "the child has no userfaultfd");
        let uffd = crate::kernel::seccomp::take_fd(pid, fd).unwrap();
        let mut t = Tracker::start(pid, uffd, &[(base, base + PAGES * PAGE)]).unwrap();
        assert_eq!(t.tracked(), &[(base, base + PAGES * PAGE)]);
        assert_eq!(t.written().unwrap(), vec![]);
        send(data[1], b"abcd");
        send(to_child[1], b"g");
        byte(to_parent[0]);
        let pages = |v: Vec<(u64, u64)>| -> Vec<(u64, u64)> {
            v.into_iter()
                .map(|(s, e)| ((s - base) / PAGE, (e - base) / PAGE))
                .collect()
        };
        assert_eq!(
            pages(t.written().unwrap()),
            vec![(3, 4), (5, 6), (7, 8), (PAGES - 2, PAGES - 1)]
        );
        send(to_child[1], b"g");
        byte(to_parent[0]);
        assert_eq!(pages(t.written().unwrap()), vec![(9, 10)]);
        assert_eq!(t.written().unwrap(), vec![]);
        drop(t);
        send(to_child[1], b"g");
        let mut st = 0;
        // SAFETY: waitpid(2) on our child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &raw mut st, 0) }, pid);
        assert!(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0, "{st:#x}");
    }
}
