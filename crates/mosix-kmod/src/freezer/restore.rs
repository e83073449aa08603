//! Rebuilding a process from its image inside a stopped tracee: a fresh stub on the destination
//! node, or the deputy itself when the process comes home.
//!
//! Everything is done by syscall injection from our area, in three phases:
//!
//! 1. [`prepare`]: give the tracee our area (at an address the image does not use), drop the
//!    tracee's own rseq registration (the kernel would keep writing into memory we are about to
//!    unmap), move its `[vvar]`, `[vvar_vclock]` and `[vdso]` to where the image had them —
//!    only if the vdso is byte-for-byte the one the process was using, since its code calls into
//!    the vdso at fixed offsets — unmap everything else, and map each of the image's areas at
//!    its address, writable for now;
//! 2. [`Restorer::write`]: the page runs, as they arrive, through a userfaultfd the tracee made
//!    for us (see [`crate::kernel::uffd`]; `process_vm_writev` where that is not possible);
//! 3. [`Restorer::finish`]: final protections, the memory-descriptor fields (`brk`,
//!    `/proc/PID/cmdline`…, `PR_SET_MM_MAP`), signal actions, alternate stack, clear-child-tid
//!    address, robust list and rseq registrations, and for a stub the owner's credentials and
//!    the seccomp filter (installed last); then the extended state, the signal mask, our area
//!    removed, and the registers.

use std::mem::offset_of;
use std::os::fd::OwnedFd;

use linux_raw_sys::prctl::prctl_mm_map;
use mosix_core::image::{ImageHeader, Regs, VmaKind};

use crate::kernel::abi::RSEQ_FLAG_UNREGISTER;
use crate::kernel::inject::{self, AREA_LEN, Area, Held, Release};
use crate::kernel::ptrace::{Error, Mem, Result, Stopped};
use crate::kernel::uffd::Uffd;

/// A tracee being rebuilt. It is killed if this is dropped before [`Restorer::finish`]
/// succeeds (a half-rebuilt process must not run), or if a phase fails.
#[derive(Debug)]
pub struct Restorer {
    tracee: Held,
    mem: Mem,
    area: Area,
    base: Regs,
    pid: i32,
    /// Where page runs go; `None`: `process_vm_writev`.
    sink: Option<Uffd>,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The address ranges the image will occupy.
fn image_ranges(h: &ImageHeader) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = h.vmas.iter().map(|v| (v.start, v.end)).collect();
    v.extend(h.special.vvar);
    v.extend(h.special.vvar_vclock);
    v.extend(h.special.vdso);
    v
}

/// The image's areas, adjacent ones together (as they are registered on the page sink).
fn merged_ranges(h: &ImageHeader) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for v in &h.vmas {
        match ranges.last_mut() {
            Some(last) if last.1 == v.start => last.1 = v.end,
            _ => ranges.push((v.start, v.end)),
        }
    }
    ranges
}

/// The memory map of the tracee, its errors as memory errors.
fn maps_of(pid: i32) -> Result<Vec<mosix_core::image::MapsLine>> {
    inject::read_maps(pid).map_err(|source| Error::Mem {
        pid,
        addr: 0,
        source,
    })
}

/// Writes `b` into `buf` at `off` (a field of a structure being laid out for the tracee).
fn put(buf: &mut [u8], off: usize, b: &[u8]) {
    buf[off..off + b.len()].copy_from_slice(b);
}

/// The lowest address an unprivileged process may map here (`vm.mmap_min_addr`; the kernel's
/// usual 64 KiB when it cannot be read).
fn mmap_min_addr() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65536)
}

/// Phase 1. `existing` is the area a deputy already has. On failure the tracee is killed.
///
/// A stub (`existing` is `None`) still has root's rights while its areas are mapped, so the
/// image may not ask for what only they allow: an area below `vm.mmap_min_addr` (a mapped
/// page 0 is what kernel NULL-dereference exploits need) is refused.
pub fn prepare(t: Stopped, h: &ImageHeader, existing: Option<Area>) -> Result<Restorer> {
    let pid = t.pid();
    if existing.is_none() {
        let min = mmap_min_addr();
        if let Some(v) = h.vmas.iter().find(|v| v.start < min) {
            return Err(Error::Unexpected {
                pid,
                what: format!(
                    "the image maps {:#x}, below this node's vm.mmap_min_addr ({min:#x})",
                    v.start
                ),
            });
        }
    }
    let mut t = Held::new(t, Release::Kill);
    let base = t.get()?.regs()?;
    inject::block_signals(t.get()?)?;
    let mem = Mem::open(pid)?;
    let maps = maps_of(pid)?;
    let wanted = image_ranges(h);

    // Our area, where the image leaves room.
    let area = match existing {
        Some(a) if !wanted.iter().any(|w| overlaps(*w, a.range())) => a,
        old => {
            let a = inject::bootstrap(&mut t, &mem, &maps, &base, &wanted)?;
            if let Some(o) = old {
                inject::syscall(
                    &mut t,
                    a.site(),
                    &base,
                    libc::SYS_munmap,
                    [o.start, AREA_LEN, 0, 0, 0, 0],
                )?;
            }
            a
        }
    };
    let mut r = Restorer {
        tracee: t,
        mem,
        area,
        base,
        pid,
        sink: None,
    };
    r.drop_own_rseq()?;
    r.place_specials(h)?;
    r.clear(h)?;
    r.map_areas(h)?;
    r.open_sink(h)?;
    Ok(r)
}

impl Restorer {
    /// The pid of the tracee.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Our area in the tracee.
    pub fn area(&self) -> Area {
        self.area
    }

    /// Closes descriptor `fd` of the tracee (a process resumed from a checkpoint in the
    /// `mosrun` that asked for it: its connection to the service goes).
    pub fn close_fd(&mut self, fd: i32) -> Result<()> {
        self.must(
            libc::SYS_close,
            [u64::from(fd.unsigned_abs()), 0, 0, 0, 0, 0],
            "closing a descriptor",
        )
    }

    /// Writes `data` at `addr` of the rebuilt memory (after the pages: a field the image holds
    /// that must say something else here, such as the thread id the C library keeps).
    pub fn poke(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.mem.write(addr, data)
    }

    fn unexpected(&self, what: String) -> Error {
        Error::Unexpected {
            pid: self.pid,
            what,
        }
    }

    fn call(&mut self, nr: i64, args: [u64; 6]) -> Result<i64> {
        inject::syscall(&mut self.tracee, self.area.site(), &self.base, nr, args)
    }

    /// Runs a call that must succeed.
    fn must(&mut self, nr: i64, args: [u64; 6], what: &str) -> Result<()> {
        let ret = self.call(nr, args)?;
        if ret < 0 {
            let msg = format!("{what}: {}", nix::errno::Errno::from_raw(-ret as i32));
            return Err(self.unexpected(msg));
        }
        Ok(())
    }

    fn scratch_write(&self, data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.area.scratch_len() {
            let what = format!("{} bytes do not fit in the scratch space", data.len());
            return Err(self.unexpected(what));
        }
        self.mem.write(self.area.scratch(), data)
    }

    fn drop_own_rseq(&mut self) -> Result<()> {
        let Some(rs) = self.tracee.get()?.rseq()? else {
            return Ok(());
        };
        self.must(
            libc::SYS_rseq,
            [
                rs.ptr,
                u64::from(rs.len),
                RSEQ_FLAG_UNREGISTER,
                u64::from(rs.sig),
                0,
                0,
            ],
            "unregistering the stub's rseq",
        )
    }

    /// Moves [vvar], [vvar_vclock] and [vdso] to the image's addresses (through a parking spot,
    /// since the targets may overlap the current places).
    fn place_specials(&mut self, h: &ImageHeader) -> Result<()> {
        let maps = maps_of(self.pid)?;
        let find = |name: &str| {
            maps.iter()
                .find(|m| m.path == name)
                .map(|m| (m.start, m.end))
        };
        let pairs = [
            ("[vvar]", find("[vvar]"), h.special.vvar),
            (
                "[vvar_vclock]",
                find("[vvar_vclock]"),
                h.special.vvar_vclock,
            ),
            ("[vdso]", find("[vdso]"), h.special.vdso),
        ];
        // Same kernel build? Sizes and the vdso's contents must match.
        for (name, have, want) in pairs {
            let same_size = match (have, want) {
                (Some(a), Some(b)) => a.1 - a.0 == b.1 - b.0,
                (None, None) => true,
                _ => false,
            };
            if !same_size {
                let what = format!(
                    "this node's kernel has another {name} layout than the process's home kernel; it cannot run here"
                );
                return Err(self.unexpected(what));
            }
        }
        if let Some((s, e)) = find("[vdso]") {
            let mut b = vec![0u8; (e - s) as usize];
            self.mem.read(s, &mut b)?;
            if b != h.special.vdso_bytes {
                let what = "this node runs another kernel build (its vdso differs from the process's); it cannot run here".to_owned();
                return Err(self.unexpected(what));
            }
        }
        if pairs.iter().all(|(_, have, want)| have == want) {
            return Ok(());
        }
        let mut busy: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
        busy.extend(image_ranges(h));
        busy.push(self.area.range());
        let total: u64 = pairs
            .iter()
            .filter_map(|(_, have, _)| have.map(|(s, e)| e - s))
            .sum();
        let Some(park) = inject::find_hole(&busy, total + 0x10000) else {
            return Err(self.unexpected("no room to move the vdso".into()));
        };
        let moving = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        let mut parked = Vec::new();
        let mut at = park;
        for (name, have, want) in pairs {
            if let (Some((s, e)), Some(w)) = (have, want) {
                let len = e - s;
                self.must(
                    libc::SYS_mremap,
                    [s, len, len, moving, at, 0],
                    &format!("parking {name}"),
                )?;
                parked.push((name, at, len, w.0));
                at += len;
            }
        }
        for (name, from, len, to) in parked {
            self.must(
                libc::SYS_mremap,
                [from, len, len, moving, to, 0],
                &format!("moving {name}"),
            )?;
        }
        Ok(())
    }

    /// Unmaps everything of the tracee's own but our area and the kernel's special mappings.
    fn clear(&mut self, _h: &ImageHeader) -> Result<()> {
        let maps = maps_of(self.pid)?;
        let keep = |m: &mosix_core::image::MapsLine| {
            overlaps((m.start, m.end), self.area.range())
                || matches!(
                    m.path.as_str(),
                    "[vvar]" | "[vvar_vclock]" | "[vdso]" | "[vsyscall]"
                )
        };
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for m in maps.iter().filter(|m| !keep(m)) {
            match ranges.last_mut() {
                Some(last) if last.1 == m.start => last.1 = m.end,
                _ => ranges.push((m.start, m.end)),
            }
        }
        for (s, e) in ranges {
            self.must(
                libc::SYS_munmap,
                [s, e - s, 0, 0, 0, 0],
                "clearing the address space",
            )?;
        }
        Ok(())
    }

    fn map_areas(&mut self, h: &ImageHeader) -> Result<()> {
        for v in &h.vmas {
            self.map_area(v)?;
        }
        Ok(())
    }

    /// The final image `now` of a live move replaces the first one, `then`, whose areas were
    /// prepared and filled while the process still ran at the source: areas that changed are
    /// unmapped, new ones mapped, kept ones that grew or shrank in place are extended or cut,
    /// and the page sink follows, so that the final runs land where `now` says
    /// ([`mosix_core::image::kept_areas`]: kept areas keep their pages).
    pub fn reshape(&mut self, then: &ImageHeader, now: &ImageHeader) -> Result<()> {
        if then.special != now.special {
            return Err(self.unexpected(
                "the kernel's special mappings moved while the process was sent".into(),
            ));
        }
        if now
            .vmas
            .iter()
            .any(|v| overlaps((v.start, v.end), self.area.range()))
        {
            return Err(self.unexpected(
                "the process mapped an area where the restorer works meanwhile".into(),
            ));
        }
        if let Some(u) = &mut self.sink {
            u.unregister_all().map_err(|source| Error::Mem {
                pid: self.pid,
                addr: 0,
                source,
            })?;
        }
        let kept = mosix_core::image::kept_areas(&then.vmas, &now.vmas);
        let mut kept_then = vec![false; then.vmas.len()];
        for k in kept.iter().flatten() {
            kept_then[*k as usize] = true;
        }
        for (v, kept) in then.vmas.iter().zip(&kept_then) {
            if !kept {
                self.must(
                    libc::SYS_munmap,
                    [v.start, v.len(), 0, 0, 0, 0],
                    "unmapping an area that changed",
                )?;
            }
        }
        // A kept area that shrank loses its tail, before anything new is mapped there.
        for (v, k) in now.vmas.iter().zip(&kept) {
            if let Some(t) = k.map(|i| &then.vmas[i as usize])
                && v.end < t.end
            {
                self.must(
                    libc::SYS_munmap,
                    [v.end, t.end - v.end, 0, 0, 0, 0],
                    "unmapping what an area shrank by",
                )?;
            }
        }
        for (v, k) in now.vmas.iter().zip(&kept) {
            match k.map(|i| &then.vmas[i as usize]) {
                None => self.map_area(v)?,
                // What a kept area grew by, mapped as the area is (its pages come whole).
                Some(t) if v.end > t.end => self.map_area(&mosix_core::image::Vma {
                    start: t.end,
                    ..v.clone()
                })?,
                Some(_) => {}
            }
        }
        if let Some(u) = &mut self.sink {
            for (s, e) in merged_ranges(now) {
                u.register(s, e).map_err(|source| Error::Mem {
                    pid: self.pid,
                    addr: s,
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn map_area(&mut self, v: &mosix_core::image::Vma) -> Result<()> {
        let mut prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        if v.exec {
            prot |= libc::PROT_EXEC as u64;
        }
        let mut flags =
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        if v.kind == VmaKind::Stack {
            flags |= libc::MAP_GROWSDOWN as u64;
        }
        let ret = self.call(libc::SYS_mmap, [v.start, v.len(), prot, flags, u64::MAX, 0])?;
        if ret as u64 != v.start {
            let what = format!(
                "mapping {:#x}-{:#x} returned {}",
                v.start,
                v.end,
                if ret < 0 {
                    nix::errno::Errno::from_raw(-ret as i32).to_string()
                } else {
                    format!("{ret:#x}")
                }
            );
            return Err(self.unexpected(what));
        }
        Ok(())
    }

    /// Has the tracee make a userfaultfd for us and registers every area on it (see
    /// [`crate::kernel::uffd`]). Where that fails (an old kernel, a policy against userfaultfd), pages
    /// go through `process_vm_writev`: slower, same result.
    fn open_sink(&mut self, h: &ImageHeader) -> Result<()> {
        let fd = self.call(
            libc::SYS_userfaultfd,
            [crate::kernel::uffd::CREATE_FLAGS, 0, 0, 0, 0, 0],
        )?;
        if fd < 0 {
            tracing::debug!(
                "process {}: no userfaultfd ({}); pages go through process_vm_writev",
                self.pid,
                nix::errno::Errno::from_raw(-fd as i32)
            );
            return Ok(());
        }
        let taken = crate::kernel::seccomp::take_fd(self.pid, fd as i32);
        self.must(
            libc::SYS_close,
            [fd as u64, 0, 0, 0, 0, 0],
            "closing the tracee's userfaultfd",
        )?;
        let ranges = merged_ranges(h);
        let sink = taken.and_then(Uffd::adopt).and_then(|mut u| {
            for (s, e) in ranges {
                u.register(s, e)?;
            }
            Ok(u)
        });
        match sink {
            Ok(u) => self.sink = Some(u),
            Err(e) => tracing::debug!(
                "process {}: userfaultfd unusable ({e}); pages go through process_vm_writev",
                self.pid
            ),
        }
        Ok(())
    }

    /// Phase 2: where the page runs go. The view can be used from another thread than the
    /// tracer's (nothing in it is a ptrace request).
    pub fn pages(&self) -> super::pages::Pages<'_> {
        super::pages::Pages::new(self.pid, self.sink.as_ref())
    }

    /// Phase 3. For a stub (`stub` given), also its lock-down (see [`StubSetup`]) and the
    /// seccomp filter;
    /// returns the tracee stopped with the image's registers, ready to be let go, and the
    /// filter's listener with the number it had inside the tracee (where, with a tree of its
    /// own, it is closed again: see [`TreeJoin::placeholders`]). On failure the tracee is killed
    /// (unless it was lost on the way: removing our area failed).
    pub fn finish(
        mut self,
        h: &ImageHeader,
        stub: Option<&StubSetup<'_>>,
    ) -> Result<(Stopped, Option<(i32, OwnedFd)>)> {
        let pid = self.pid;
        if let Some(mut u) = self.sink.take() {
            u.unregister_all().map_err(|source| Error::Mem {
                pid,
                addr: 0,
                source,
            })?;
        }
        // Final protections.
        for v in &h.vmas {
            if v.read && v.write {
                continue;
            }
            let mut prot = 0u64;
            if v.read {
                prot |= libc::PROT_READ as u64;
            }
            if v.write {
                prot |= libc::PROT_WRITE as u64;
            }
            if v.exec {
                prot |= libc::PROT_EXEC as u64;
            }
            self.must(
                libc::SYS_mprotect,
                [v.start, v.len(), prot, 0, 0, 0],
                "protecting",
            )?;
        }
        self.set_mm(h)?;
        self.set_sigactions(h)?;
        // Alternate signal stack.
        let (sp, flags, size) = h.altstack;
        let mut ss = Vec::with_capacity(24);
        ss.extend_from_slice(&sp.to_le_bytes());
        ss.extend_from_slice(&flags.to_le_bytes());
        ss.extend_from_slice(&0u32.to_le_bytes());
        ss.extend_from_slice(&size.to_le_bytes());
        if flags & libc::SS_DISABLE as u32 != 0 {
            ss[..8].copy_from_slice(&0u64.to_le_bytes());
            ss[16..].copy_from_slice(&0u64.to_le_bytes());
        }
        self.scratch_write(&ss)?;
        let scratch = self.area.scratch();
        self.must(
            libc::SYS_sigaltstack,
            [scratch, 0, 0, 0, 0, 0],
            "sigaltstack",
        )?;
        self.call(libc::SYS_set_tid_address, [h.tid_address, 0, 0, 0, 0, 0])?;
        if h.robust_list.0 != 0 {
            self.must(
                libc::SYS_set_robust_list,
                [h.robust_list.0, h.robust_list.1, 0, 0, 0, 0],
                "set_robust_list",
            )?;
        }
        if let Some(rs) = h.rseq {
            self.must(
                libc::SYS_rseq,
                [rs.ptr, u64::from(rs.len), 0, u64::from(rs.sig), 0, 0],
                "registering rseq",
            )?;
        }
        // The command name (a stub starts with ours).
        let mut comm = h.comm.as_bytes().to_vec();
        comm.truncate(15);
        comm.push(0);
        self.scratch_write(&comm)?;
        self.must(
            libc::SYS_prctl,
            [libc::PR_SET_NAME as u64, scratch, 0, 0, 0, 0],
            "PR_SET_NAME",
        )?;
        let mut listener = None;
        if let Some(setup) = stub {
            let filter = setup.filter;
            // Nothing of the stub's own descriptors stays: every descriptor call of the process
            // is forwarded home.
            self.call(libc::SYS_close_range, [0, u64::from(u32::MAX), 0, 0, 0, 0])?;
            // Locked down first: limits are then set without CAP_SYS_RESOURCE, so none can go
            // above this node's own hard limits.
            self.lock_down(setup)?;
            self.set_rlimits(h)?;
            if let Some(t) = setup.tree {
                self.placeholders(&t.placeholders)?;
            }
            self.must(
                libc::SYS_prctl,
                [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
                "no_new_privs",
            )?;
            // A `struct sock_fprog` at the start of the scratch space, the instructions after.
            type Fprog = linux_raw_sys::ptrace::sock_fprog;
            let n = filter.len() / std::mem::size_of::<linux_raw_sys::ptrace::sock_filter>();
            let head = std::mem::size_of::<Fprog>();
            let prog_at = scratch + head as u64;
            let mut buf = vec![0u8; head];
            put(&mut buf, offset_of!(Fprog, len), &(n as u16).to_le_bytes());
            put(&mut buf, offset_of!(Fprog, filter), &prog_at.to_le_bytes());
            buf.extend_from_slice(filter);
            self.scratch_write(&buf)?;
            let fd = self.call(
                libc::SYS_seccomp,
                [
                    crate::kernel::seccomp::SET_MODE_FILTER,
                    crate::kernel::seccomp::FLAG_NEW_LISTENER
                        | crate::kernel::seccomp::FLAG_WAIT_KILLABLE_RECV
                        | crate::kernel::seccomp::FLAG_SPEC_ALLOW,
                    scratch,
                    0,
                    0,
                    0,
                ],
            )?;
            if fd < 0 {
                let what = format!(
                    "installing the seccomp filter: {}",
                    nix::errno::Errno::from_raw(-fd as i32)
                );
                return Err(self.unexpected(what));
            }
            let fd = fd as i32;
            let taken = take_listener(self.pid, fd)
                .map_err(|e| self.unexpected(format!("taking the filter's listener: {e}")))?;
            if setup.tree.is_some() {
                // With a tree, every number below it holds a placeholder: the listener is of the
                // native range, where reads and writes run natively. Its copy goes (a close of a
                // number of the range runs natively under the tree's filter).
                self.must(
                    libc::SYS_close,
                    [fd as u64, 0, 0, 0, 0, 0],
                    "closing the listener's copy",
                )?;
            }
            listener = Some((fd, taken));
        }
        // Last: extended state, mask, registers, and our area gone.
        let t = self.tracee.get()?;
        if !h.xstate.is_empty() {
            t.set_xstate(&h.xstate)?;
        }
        t.set_sigmask(h.sigmask)?;
        inject::unmap_area(&mut self.tracee, &self.area, &self.base)?;
        self.tracee.get()?.set_regs(&h.regs)?;
        Ok((self.tracee.disarm()?, listener))
    }

    fn set_mm(&mut self, h: &ImageHeader) -> Result<()> {
        let m = &h.mm;
        // A `struct prctl_mm_map` at the start of the scratch space, the auxv at +128.
        let auxv_at = self.area.scratch() + 128;
        let auxv_len = h.auxv.len() as u32;
        let size = std::mem::size_of::<prctl_mm_map>();
        let mut buf = vec![0u8; size];
        for (off, v) in [
            (offset_of!(prctl_mm_map, start_code), m.start_code),
            (offset_of!(prctl_mm_map, end_code), m.end_code),
            (offset_of!(prctl_mm_map, start_data), m.start_data),
            (offset_of!(prctl_mm_map, end_data), m.end_data),
            (offset_of!(prctl_mm_map, start_brk), m.start_brk),
            (offset_of!(prctl_mm_map, brk), m.brk),
            (offset_of!(prctl_mm_map, start_stack), m.start_stack),
            (offset_of!(prctl_mm_map, arg_start), m.arg_start),
            (offset_of!(prctl_mm_map, arg_end), m.arg_end),
            (offset_of!(prctl_mm_map, env_start), m.env_start),
            (offset_of!(prctl_mm_map, env_end), m.env_end),
            (
                offset_of!(prctl_mm_map, auxv),
                if auxv_len > 0 { auxv_at } else { 0 },
            ),
        ] {
            put(&mut buf, off, &v.to_le_bytes());
        }
        put(
            &mut buf,
            offset_of!(prctl_mm_map, auxv_size),
            &auxv_len.to_le_bytes(),
        );
        // exe_fd -1: keep /proc/PID/exe.
        put(
            &mut buf,
            offset_of!(prctl_mm_map, exe_fd),
            &u32::MAX.to_le_bytes(),
        );
        buf.resize(128, 0);
        buf.extend_from_slice(&h.auxv);
        self.scratch_write(&buf)?;
        let scratch = self.area.scratch();
        self.must(
            libc::SYS_prctl,
            [
                libc::PR_SET_MM as u64,
                libc::PR_SET_MM_MAP as u64,
                scratch,
                size as u64,
                0,
                0,
            ],
            "PR_SET_MM_MAP",
        )
    }

    fn set_sigactions(&mut self, h: &ImageHeader) -> Result<()> {
        for sig in 1..=64u32 {
            if sig == libc::SIGKILL as u32 || sig == libc::SIGSTOP as u32 {
                continue;
            }
            let a = h.sigactions.iter().find(|a| a.sig == sig);
            let mut b = Vec::with_capacity(32);
            for v in [
                a.map_or(0, |a| a.handler),
                a.map_or(0, |a| a.flags),
                a.map_or(0, |a| a.restorer),
                a.map_or(0, |a| a.mask),
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            self.scratch_write(&b)?;
            let scratch = self.area.scratch();
            // Signals 32 and 33 are the C library's and may refuse; that is fine.
            self.call(
                libc::SYS_rt_sigaction,
                [u64::from(sig), scratch, 0, 8, 0, 0],
            )?;
        }
        Ok(())
    }

    /// The process's resource limits, which this kernel enforces, set from inside (another
    /// process's limits need `CAP_SYS_RESOURCE`, which a container may not grant even to root),
    /// after the stub was locked down: a hard limit above the stub's (the service's, this
    /// node's) cannot be raised without that capability, so such a limit stays at the stub's,
    /// and the soft one under it.
    fn set_rlimits(&mut self, h: &ImageHeader) -> Result<()> {
        for l in &h.rlimits {
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&l.cur.to_le_bytes());
            b.extend_from_slice(&l.max.to_le_bytes());
            self.scratch_write(&b)?;
            let scratch = self.area.scratch();
            let ret = self.call(
                libc::SYS_prlimit64,
                [0, u64::from(l.resource), scratch, 0, 0, 0],
            )?;
            if ret < 0 {
                // A hard limit above the stub's: keep the stub's, and the soft one under it.
                let got = self.call(
                    libc::SYS_prlimit64,
                    [0, u64::from(l.resource), 0, scratch, 0, 0],
                )?;
                let mut old = [0u8; 16];
                if got < 0 || self.mem.read(scratch + 8, &mut old[8..]).is_err() {
                    continue;
                }
                let hard = u64::from_le_bytes(old[8..].try_into().unwrap_or([0xff; 8]));
                let mut b = Vec::with_capacity(16);
                b.extend_from_slice(&l.cur.min(hard).to_le_bytes());
                b.extend_from_slice(&hard.to_le_bytes());
                self.scratch_write(&b)?;
                let ret = self.call(
                    libc::SYS_prlimit64,
                    [0, u64::from(l.resource), scratch, 0, 0, 0],
                )?;
                tracing::debug!(
                    "{}: resource limit {} is {}/{} at home; here {}/{hard} ({ret})",
                    h.comm,
                    l.resource,
                    l.cur,
                    l.max,
                    l.cur.min(hard)
                );
            }
        }
        Ok(())
    }

    /// Takes every right the stub had as root's child away, for good, and makes it the guest's
    /// own host identity: no capability in any set (permitted, effective, inheritable, ambient,
    /// bounding), no way for uid 0 to regain any (`SECBIT_NOROOT`, locked), no supplementary
    /// group, and the uid and gid of `setup`, which no account of this node has. Then, since a
    /// credential change clears it, the death signal is armed again (the stub dies with its
    /// supervisor thread), and the stub is made undumpable (no one but root may trace it or
    /// read its memory).
    fn lock_down(&mut self, setup: &StubSetup<'_>) -> Result<()> {
        if let Some(t) = setup.tree {
            self.join_tree(t)?;
        }
        self.must(
            libc::SYS_prctl,
            [
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
                0,
                0,
                0,
                0,
            ],
            "clearing the ambient capabilities",
        )?;
        for cap in 0..=u64::from(last_cap()) {
            self.must(
                libc::SYS_prctl,
                [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
                "dropping the bounding set",
            )?;
        }
        let bits = libc::SECBIT_NOROOT
            | libc::SECBIT_NOROOT_LOCKED
            | libc::SECBIT_KEEP_CAPS_LOCKED
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        self.must(
            libc::SYS_prctl,
            [libc::PR_SET_SECUREBITS as u64, bits as u64, 0, 0, 0, 0],
            "locking the securebits",
        )?;
        match setup.tree {
            Some(t) if !t.groups.is_empty() => {
                let groups: Vec<u8> = t.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
                self.scratch_write(&groups)?;
                let scratch = self.area.scratch();
                self.must(
                    libc::SYS_setgroups,
                    [t.groups.len() as u64, scratch, 0, 0, 0, 0],
                    "setgroups",
                )?;
            }
            _ => self.must(libc::SYS_setgroups, [0, 0, 0, 0, 0, 0], "setgroups")?,
        }
        let gid = setup.tree.map_or(setup.gid, |t| t.gid);
        let (u, g) = (u64::from(setup.uid), u64::from(gid));
        self.must(libc::SYS_setresgid, [g, g, g, 0, 0, 0], "setresgid")?;
        // From root to another uid without SECBIT_KEEP_CAPS: the permitted and effective sets
        // are cleared by the kernel.
        self.must(libc::SYS_setresuid, [u, u, u, 0, 0, 0], "setresuid")?;
        // The inheritable set too: a `struct __user_cap_header_struct` (version, pid 0 = this
        // task) and two all-zero `__user_cap_data_struct`s.
        let mut capbuf = Vec::with_capacity(8 + 24);
        capbuf
            .extend_from_slice(&linux_raw_sys::general::_LINUX_CAPABILITY_VERSION_3.to_le_bytes());
        capbuf.extend_from_slice(&0u32.to_le_bytes());
        capbuf.extend_from_slice(&[0u8; 24]);
        self.scratch_write(&capbuf)?;
        let scratch = self.area.scratch();
        self.must(
            libc::SYS_capset,
            [scratch, scratch + 8, 0, 0, 0, 0],
            "clearing the capability sets",
        )?;
        self.must(
            libc::SYS_prctl,
            [
                libc::PR_SET_PDEATHSIG as u64,
                libc::SIGKILL as u64,
                0,
                0,
                0,
                0,
            ],
            "arming the death signal",
        )?;
        self.must(
            libc::SYS_prctl,
            [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0],
            "making it undumpable",
        )
    }

    /// Joins a tree of its own (`kernel::tree`), still as root: its mount namespace, its root,
    /// the process's umask (files it makes there natively get home's modes).
    fn join_tree(&mut self, t: &TreeJoin) -> Result<()> {
        self.scratch_write(t.ns.as_bytes_with_nul())?;
        let scratch = self.area.scratch();
        let fd = self.call(
            libc::SYS_open,
            [
                scratch,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                0,
                0,
                0,
                0,
            ],
        )?;
        if fd < 0 {
            let what = format!(
                "opening the tree's namespace: {}",
                nix::errno::Errno::from_raw(-fd as i32)
            );
            return Err(self.unexpected(what));
        }
        self.must(
            libc::SYS_setns,
            [fd as u64, libc::CLONE_NEWNS as u64, 0, 0, 0, 0],
            "joining the tree's namespace",
        )?;
        self.must(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0], "close")?;
        self.scratch_write(t.root.as_bytes_with_nul())?;
        self.must(
            libc::SYS_chroot,
            [scratch, 0, 0, 0, 0, 0],
            "taking the tree's root",
        )?;
        self.scratch_write(b"/\0")?;
        self.must(libc::SYS_chdir, [scratch, 0, 0, 0, 0, 0], "chdir")?;
        self.call(libc::SYS_umask, [u64::from(t.umask & 0o777), 0, 0, 0, 0, 0])?;
        Ok(())
    }

    /// Fills number 0 and the others home uses with placeholders (the trap's, opened for
    /// reading and writing: the process's reads and writes on them run natively and the trap
    /// sends them back, to be made at home), so that the process's own kernel gives a file it
    /// opens the number home would: called with no descriptor open, so the first open is
    /// number 0.
    fn placeholders(&mut self, numbers: &[u32]) -> Result<()> {
        let mut path = format!("/{}", crate::mfs::trap::PLACEHOLDER).into_bytes();
        path.push(0);
        self.scratch_write(&path)?;
        let scratch = self.area.scratch();
        let p = self.call(libc::SYS_open, [scratch, libc::O_RDWR as u64, 0, 0, 0, 0])?;
        if p != 0 {
            return Err(self.unexpected(format!("a placeholder opened as {p}, not 0")));
        }
        for &k in numbers.iter().filter(|&&k| k != 0) {
            self.must(
                libc::SYS_dup2,
                [0, u64::from(k), 0, 0, 0, 0],
                "placing a placeholder",
            )?;
        }
        Ok(())
    }

    /// Gives up (after a failure elsewhere, such as the page stream breaking off): the tracee
    /// is killed.
    pub fn kill(self) {
        drop(self);
    }
}

/// How a guest is set up in its stub: the filter it runs under, and the host ids it runs as
/// (the owner's credentials travel in the image and answer its `getuid` and the like on the
/// remote; forwarded calls run with them at home, in the deputy).
#[derive(Debug, Clone, Copy)]
pub struct StubSetup<'a> {
    /// The seccomp filter's program.
    pub filter: &'a [u8],
    /// The host uid.
    pub uid: u32,
    /// The host gid.
    pub gid: u32,
    /// A tree of its own to join, if it gets one.
    pub tree: Option<&'a TreeJoin>,
}

/// How a guest joins its tree of its own (`kernel::tree`) in its stub.
#[derive(Debug, Clone)]
pub struct TreeJoin {
    /// A path by which the stub opens the tree's mount namespace.
    pub ns: std::ffi::CString,
    /// Its root, as a path in that namespace.
    pub root: std::ffi::CString,
    /// Its gid: its owner's (as MFS squashes it); its uid stays its host id.
    pub gid: u32,
    /// Its groups: its owner's. Through the tree's mounts, these give it its owner's rights on
    /// the node's files; nothing else of the node is in its reach.
    pub groups: Vec<u32>,
    /// Its umask at home.
    pub umask: u32,
    /// The descriptor numbers home uses but 0, where placeholders stand (at 0 too: home's
    /// descriptor 0 is in use whenever a process gets a tree). The filter's listener then
    /// lands on a number of the native range, and its copy is closed there.
    pub placeholders: Vec<u32>,
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`), or the
/// highest the C headers know.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(linux_raw_sys::general::CAP_LAST_CAP)
}

/// Takes the seccomp listener out of a restored stub.
fn take_listener(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    crate::kernel::seccomp::take_fd(pid, fd)
}
