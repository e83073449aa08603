//! Freezing a process and capturing its image.
//!
//! The process is seized and interrupted (PTRACE_SEIZE + PTRACE_INTERRUPT: unlike a SIGSTOP this
//! is invisible to it and to its parent), a system call it was blocked in is made restartable
//! ([`Regs::fix_interrupted_syscall`]), and what only the process itself can report (signal
//! actions, the clear-child-tid address, the alternate signal stack, the current brk) is asked
//! by injection. Memory is not copied here: [`Frozen::runs`] says which byte ranges the sender
//! streams out of `/proc/PID/mem` ([`send_pages`]) — every page of file-backed areas (the
//! destination may not have the file), only the pages present or swapped of anonymous ones (a
//! reserved but untouched heap costs nothing to move).
//!
//! [`Frozen::thaw`] undoes everything, should the move fail: the process continues where it was
//! as if nothing had happened.

use crate::kernel::ptrace::Sig;
use mosix_core::NodeId;
use mosix_core::image::{
    Cached, Creds, IMAGE_VERSION, ImageHeader, MapsLine, MmFields, Regs, SigAction, SpecialMaps,
    Vma, VmaKind,
};
use nix::sys::ptrace::Options;

use crate::kernel::abi::{PAGEMAP_EXCLUSIVE, PAGEMAP_PRESENT, PAGEMAP_SWAPPED};
use crate::kernel::inject::{self, Area, Held, Release};
use crate::kernel::ptrace::{self, Error, Mem, Result, Stopped};

/// A byte range of one memory area to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Index of the area in the image.
    pub vma: u32,
    /// Offset inside the area.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Every page of the run is present and mapped by this process alone, so it may be read
    /// with `process_vm_readv` (one copy, pages pinned 16 at a time: 2.4× faster here than
    /// `/proc/PID/mem`, which copies each page twice through a bounce page). Pinning a page
    /// that is shared copy-on-write would make the kernel copy it in the process first
    /// (`gup_must_unshare`), so every other run is read through `/proc/PID/mem`.
    pub exclusive: bool,
}

/// A frozen process: stopped, its signals blocked, our injection area mapped in it.
#[derive(Debug)]
pub struct Frozen {
    /// The tracee.
    pub tracee: Stopped,
    /// Its memory.
    pub mem: Mem,
    /// Our area inside it.
    pub area: Area,
    /// The image header.
    pub header: ImageHeader,
    /// What to send of its memory.
    pub runs: Vec<Run>,
    /// Registers as found (before the interrupted call was made restartable).
    pub original_regs: Regs,
    /// Its signal mask as found.
    pub original_mask: u64,
    /// Signals that arrived while we froze it (suppressed; to be delivered at the destination).
    pub pending: Vec<Sig>,
}

/// How to freeze.
#[derive(Debug, Clone)]
pub struct FreezeOptions {
    /// The home node (stays the same across moves).
    pub home: NodeId,
    /// Moves so far, this one not included.
    pub nmigs: u32,
    /// Locked against automatic moves.
    pub locked: bool,
    /// The process runs under our seccomp filter (a remote): injected calls must bypass it.
    pub under_filter: bool,
    /// Cached facts to carry (for a remote moving on, the ones it has; at home, measured).
    pub cached: Option<Cached>,
    /// Credentials to carry (a remote carries its owner's).
    pub creds: Option<Creds>,
}

/// Seizes and freezes `pid`.
pub fn freeze(pid: i32, opts: &FreezeOptions) -> Result<Frozen> {
    let extra = if opts.under_filter {
        ptrace::SUSPEND_SECCOMP
    } else {
        Options::empty()
    };
    let running = ptrace::seize(pid, extra)?;
    let mut pending = Vec::new();
    let t = running.interrupt(|s, _| pending.push(s))?;
    freeze_stopped(t, pending, opts)
}

/// Freezes a process we already hold stopped (at an exec stop, or interrupted inside a
/// forwarded call); `pending` are signals that arrived meanwhile and were suppressed. On
/// failure the process is let go as it was found: our area unmapped, its registers and mask
/// put back, detached.
pub fn freeze_stopped(t: Stopped, pending: Vec<Sig>, opts: &FreezeOptions) -> Result<Frozen> {
    let pid = t.pid();
    // Until something is changed in it, letting go is detaching.
    let mut t = Held::new(t, Release::Detach);
    let original_regs = t.get()?.regs()?;
    let original_mask = t.get()?.sigmask()?;
    let mem = Mem::open(pid)?;
    let maps = inject::read_maps(pid).map_err(|source| Error::Mem {
        pid,
        addr: 0,
        source,
    })?;
    inject::block_signals(t.get()?)?;
    t.set_release(Release::Restore {
        regs: original_regs,
        mask: original_mask,
    });
    let area = inject::bootstrap(&mut t, &mem, &maps, &original_regs, &[])?;
    t.set_release(Release::Unmap {
        area,
        regs: original_regs,
        mask: original_mask,
    });
    let parts = Parts {
        pid,
        mem,
        area,
        regs: original_regs,
        mask: original_mask,
    };
    let (header, runs) = parts.collect(&mut t, &maps, opts)?;
    Ok(Frozen {
        tracee: t.disarm()?,
        mem: parts.mem,
        area,
        header,
        runs,
        original_regs,
        original_mask,
        pending,
    })
}

struct Parts {
    pid: i32,
    mem: Mem,
    area: Area,
    regs: Regs,
    mask: u64,
}

impl Parts {
    fn inj(&self, t: &mut Held, nr: i64, args: [u64; 6]) -> Result<i64> {
        inject::syscall(t, self.area.site(), &self.regs, nr, args)
    }

    fn collect(
        &self,
        t: &mut Held,
        maps: &[MapsLine],
        opts: &FreezeOptions,
    ) -> Result<(ImageHeader, Vec<Run>)> {
        let pid = self.pid;
        let mut regs = self.regs;
        regs.fix_interrupted_syscall();
        let xstate = t.get()?.xstate()?;
        let rseq = t.get()?.rseq()?;
        let scratch = self.area.scratch();

        // Signal actions, one rt_sigaction(sig, NULL, &old) each.
        let mut sigactions = Vec::new();
        for sig in 1..=64u64 {
            if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
                continue;
            }
            let r = self.inj(t, libc::SYS_rt_sigaction, [sig, 0, scratch, 8, 0, 0])?;
            if r < 0 {
                continue;
            }
            let mut b = [0u8; 32];
            self.mem.read(scratch, &mut b)?;
            let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let a = SigAction {
                sig: sig as u32,
                handler: w(0),
                flags: w(1),
                restorer: w(2),
                mask: w(3),
            };
            if a.handler != 0 || a.flags != 0 || a.mask != 0 {
                sigactions.push(a);
            }
        }
        // clear-child-tid address.
        self.inj(
            t,
            libc::SYS_prctl,
            [libc::PR_GET_TID_ADDRESS as u64, scratch, 0, 0, 0, 0],
        )?;
        let tid_address = self.read_u64(scratch)?;
        // Alternate signal stack.
        self.inj(t, libc::SYS_sigaltstack, [0, scratch, 0, 0, 0, 0])?;
        let mut ss = [0u8; 24];
        self.mem.read(scratch, &mut ss)?;
        let altstack = (
            u64::from_le_bytes(ss[0..8].try_into().unwrap_or([0; 8])),
            u32::from_le_bytes(ss[8..12].try_into().unwrap_or([0; 4])),
            u64::from_le_bytes(ss[16..24].try_into().unwrap_or([0; 8])),
        );
        // Current brk.
        let brk = self.inj(t, libc::SYS_brk, [0; 6])?;
        // Robust futex list (asked from here: get_robust_list works on a traced pid).
        let robust_list = robust_list(pid)?;
        let proc_ = procfs::process::Process::new(pid).map_err(|e| Error::Unexpected {
            pid,
            what: format!("/proc/{pid}: {e}"),
        })?;
        let stat = proc_.stat().map_err(|e| Error::Unexpected {
            pid,
            what: format!("/proc/{pid}/stat: {e}"),
        })?;
        let mm = MmFields {
            start_code: stat.startcode,
            end_code: stat.endcode,
            start_data: stat.start_data.unwrap_or(0),
            end_data: stat.end_data.unwrap_or(0),
            start_brk: stat.start_brk.unwrap_or(0),
            brk: brk as u64,
            start_stack: stat.startstack,
            arg_start: stat.arg_start.unwrap_or(0),
            arg_end: stat.arg_end.unwrap_or(0),
            env_start: stat.env_start.unwrap_or(0),
            env_end: stat.env_end.unwrap_or(0),
        };
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).unwrap_or_default();

        // Memory areas.
        let (vmas, special) = self.areas(maps)?;
        let runs = runs(pid, &vmas)?;
        let creds = opts.creds.clone().unwrap_or_else(|| creds_of(pid));
        let cached = opts.cached.clone().unwrap_or_else(|| Cached {
            pid: pid as u32,
            ppid: stat.ppid as u32,
            pgrp: stat.pgrp as u32,
            uname: uname(),
        });
        let header = ImageHeader {
            version: IMAGE_VERSION,
            home: opts.home,
            comm: stat.comm.clone(),
            nmigs: opts.nmigs + 1,
            locked: opts.locked,
            ceiling: None,
            regs,
            xstate,
            sigmask: self.mask,
            sigactions,
            altstack,
            rseq,
            robust_list,
            tid_address,
            mm,
            auxv,
            vmas,
            special,
            cpu_flags: cpu_flags(),
            creds,
            rlimits: rlimits_of(pid),
            cached,
            total_bytes: runs.iter().map(|r| r.len).sum(),
            rejoin: None,
            write_errors: Vec::new(),
            native_io: None,
        };
        Ok((header, runs))
    }

    fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.mem.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn areas(&self, maps: &[MapsLine]) -> Result<(Vec<Vma>, SpecialMaps)> {
        let mut vmas = Vec::new();
        let mut special = SpecialMaps::default();
        let (a0, a1) = self.area.range();
        for m in maps {
            if m.start >= a0 && m.end <= a1 {
                continue;
            }
            match m.path.as_str() {
                "[vdso]" => {
                    special.vdso = Some((m.start, m.end));
                    let mut b = vec![0u8; (m.end - m.start) as usize];
                    self.mem.read(m.start, &mut b)?;
                    special.vdso_bytes = b;
                    continue;
                }
                "[vvar]" => {
                    special.vvar = Some((m.start, m.end));
                    continue;
                }
                "[vvar_vclock]" => {
                    special.vvar_vclock = Some((m.start, m.end));
                    continue;
                }
                "[vsyscall]" => continue,
                _ => {}
            }
            let p = m.perms.as_bytes();
            let kind = match m.path.as_str() {
                "[heap]" => VmaKind::Heap,
                "[stack]" => VmaKind::Stack,
                "" => VmaKind::Anon,
                p if p.starts_with('/') && m.inode != 0 => VmaKind::File {
                    path: p.to_owned(),
                    offset: m.offset,
                },
                _ => VmaKind::Anon,
            };
            vmas.push(Vma {
                start: m.start,
                end: m.end,
                read: p.first() == Some(&b'r'),
                write: p.get(1) == Some(&b'w'),
                exec: p.get(2) == Some(&b'x'),
                kind,
            });
        }
        Ok((vmas, special))
    }
}

/// How much of a file-backed area has file behind it: the pages past the end of the file
/// cannot be read (a read of them fails with EIO, as a touch would get SIGBUS), so they are
/// not sent; the destination has zeroes there. (A file mapped while remote is a copy of
/// home's file of its exact size, and programs map past the end of files.)
fn file_area_len(pid: i32, v: &Vma, offset: u64) -> u64 {
    let Ok(md) = std::fs::metadata(format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end))
    else {
        return v.len();
    };
    let backed = md.len().saturating_sub(offset).div_ceil(4096) * 4096;
    backed.min(v.len())
}

/// Which bytes of process `pid` to send, area by area: file-backed areas whole (as far as the
/// file goes), anonymous ones page by page where a page is present or swapped (from
/// /proc/PID/pagemap, read by hand: procfs's pagemap reader decodes every entry into an enum,
/// where one mask test per entry is all this needs, on every page of the process). Runs are cut
/// to the wire's bound, [`mosix_core::image::MAX_RUN`].
pub fn runs(pid: i32, vmas: &[Vma]) -> Result<Vec<Run>> {
    use std::os::unix::fs::FileExt;
    let pagemap =
        std::fs::File::open(format!("/proc/{pid}/pagemap")).map_err(|source| Error::Mem {
            pid,
            addr: 0,
            source,
        })?;
    let mut out = Vec::new();
    for (i, v) in vmas.iter().enumerate() {
        let idx = i as u32;
        // Unreadable areas (guard pages, PROT_NONE reservations) are sent whole if they are
        // file-backed; anonymous ones only where pages exist.
        if let VmaKind::File { offset, .. } = &v.kind {
            let len = file_area_len(pid, v, *offset);
            cut(&mut out, idx, 0, len, |_, _| false);
            continue;
        }
        let pages = v.len() / 4096;
        let mut buf = vec![0u8; (pages * 8) as usize];
        pagemap
            .read_exact_at(&mut buf, v.start / 4096 * 8)
            .map_err(|source| Error::Mem {
                pid,
                addr: v.start,
                source,
            })?;
        let entry = |p: u64| {
            let at = (p * 8) as usize;
            u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or([0; 8]))
        };
        // Whether pages `a..b` of the area are all present and this process's alone.
        let exclusive = |a: u64, b: u64| {
            (a..b).all(|p| {
                let e = entry(p);
                e & PAGEMAP_PRESENT != 0 && e & PAGEMAP_EXCLUSIVE != 0
            })
        };
        let mut run_start: Option<u64> = None;
        for p in 0..pages {
            let there = entry(p) & (PAGEMAP_PRESENT | PAGEMAP_SWAPPED) != 0;
            match (there, run_start) {
                (true, None) => run_start = Some(p),
                (false, Some(s)) => {
                    cut(&mut out, idx, s * 4096, (p - s) * 4096, |o, l| {
                        exclusive(o / 4096, (o + l) / 4096)
                    });
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run_start {
            cut(&mut out, idx, s * 4096, (pages - s) * 4096, |o, l| {
                exclusive(o / 4096, (o + l) / 4096)
            });
        }
    }
    Ok(out)
}

/// How long the runs the sender makes are: a quarter of what the wire allows, so that the
/// few runs in flight at each end stay in the CPU's caches between the passes over them (read
/// out of the process, sealed, sent; received, opened, installed).
pub const SEND_RUN: u64 = (mosix_core::image::MAX_RUN / 4) as u64;

/// Appends the bytes `offset..offset + len` of area `vma` to `out`, cut to [`SEND_RUN`];
/// `exclusive(offset, len)` says whether a piece may be read with `process_vm_readv`.
pub(crate) fn cut(
    out: &mut Vec<Run>,
    vma: u32,
    offset: u64,
    len: u64,
    exclusive: impl Fn(u64, u64) -> bool,
) {
    let mut off = 0;
    while off < len {
        let l = (len - off).min(SEND_RUN);
        out.push(Run {
            vma,
            offset: offset + off,
            len: l,
            exclusive: exclusive(offset + off, l),
        });
        off += l;
    }
}

/// Reads run `r` of area `vma` into `buf` (its length): with `process_vm_readv` when the run
/// is the process's alone, through `/proc/PID/mem` otherwise (and when that fails).
fn read_run(mem: &Mem, vma: &Vma, r: &Run, buf: &mut [u8]) -> Result<()> {
    let at = vma.start + r.offset;
    if r.exclusive && mem.read_pinned(at, buf).is_ok() {
        return Ok(());
    }
    let Err(e) = mem.read(at, buf) else {
        return Ok(());
    };
    // Only a file's pages can be unreadable for a living process: the file shrank under its
    // mapping (the process would get SIGBUS there). Zeroes stand for them rather than losing
    // the move half-way through the stream. Anywhere else it is a real fault.
    if !matches!(vma.kind, VmaKind::File { .. }) {
        return Err(e);
    }
    let mut bad = 0;
    for (k, page) in buf.chunks_mut(4096).enumerate() {
        if mem.read(at + (k as u64) * 4096, page).is_err() {
            page.fill(0);
            bad += 1;
        }
    }
    if bad == buf.len().div_ceil(4096) {
        // Nothing readable at all: the process is gone, not a page.
        return Err(e);
    }
    tracing::debug!("{bad} unreadable pages at {at:#x} sent as zeroes");
    Ok(())
}

/// Logs a run of process `pid` whose `what` (reading, sending) took [`super::SLOW_STEP`] or
/// longer.
fn slow(what: &str, pid: i32, r: &Run, begun: std::time::Instant) {
    let took = begun.elapsed();
    if took >= super::SLOW_STEP {
        tracing::warn!(
            "process {pid}: {what} {} KiB of its memory (area {}, offset {:#x}, {}) took {:.1} s",
            r.len >> 10,
            r.vma,
            r.offset,
            if r.exclusive {
                "pinned"
            } else {
                "through /proc"
            },
            took.as_secs_f64()
        );
    }
}

/// How many page runs may be in flight between the thread that reads them out of the process
/// and the one that sends them.
const RUNS_IN_FLIGHT: usize = 4;

/// Sends the `runs` of the memory `mem` of a process whose areas are `vmas` as page runs
/// (after the image header, before `End`).
///
/// Reading and sending overlap: a second thread reads the next runs out of the process into a
/// few buffers while this one seals and sends the previous ones, so the transfer costs the
/// slower of the two rather than their sum. Each buffer is sealed in place and sent from where
/// it was read.
pub fn send_pages(
    tx: &crate::link::channel::Sender,
    mem: &Mem,
    vmas: &[Vma],
    runs: &[Run],
) -> std::result::Result<(), mosix_core::proto::FrameError> {
    send_pages_of(tx, mem, vmas, runs, false).map(|_| ())
}

/// [`send_pages`]; with `skip_unreadable` (a process that runs meanwhile may unmap an area), a
/// run that cannot be read is left out instead of ending the transfer. The runs sent, by
/// index in `runs`.
pub fn send_pages_of(
    tx: &crate::link::channel::Sender,
    mem: &Mem,
    vmas: &[Vma],
    runs: &[Run],
    skip_unreadable: bool,
) -> std::result::Result<Vec<usize>, mosix_core::proto::FrameError> {
    use mosix_core::proto::FrameError;
    use std::sync::mpsc;
    let (full_tx, full_rx) = mpsc::sync_channel::<(usize, Vec<u8>, bool)>(RUNS_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..RUNS_IN_FLIGHT {
        let _ = empty_tx.send(Vec::new());
    }
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("mosix-pages-out".into())
            .spawn_scoped(s, move || -> Result<()> {
                for (i, r) in runs.iter().enumerate() {
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Ok(());
                    };
                    let len = r.len as usize;
                    buf.resize(len, 0);
                    let begun = std::time::Instant::now();
                    let read = read_run(mem, &vmas[r.vma as usize], r, &mut buf[..len]);
                    slow("reading", mem.pid(), r, begun);
                    let ok = match read {
                        Ok(()) => true,
                        Err(_) if skip_unreadable => false,
                        Err(e) => return Err(e),
                    };
                    if full_tx.send((i, buf, ok)).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })
            .map_err(FrameError::Io)?;
        let mut sent = Ok(Vec::new());
        for (i, mut buf, ok) in full_rx.iter() {
            let r = &runs[i];
            if ok {
                let begun = std::time::Instant::now();
                if let Err(e) = tx.send_run(r.vma, r.offset, &mut buf[..r.len as usize]) {
                    sent = Err(e);
                    break;
                }
                slow("sending", mem.pid(), r, begun);
                if let Ok(v) = &mut sent {
                    v.push(i);
                }
            }
            let _ = empty_tx.send(buf);
        }
        drop(full_rx);
        drop(empty_tx);
        let read = reader
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Unexpected {
                    pid: mem.pid(),
                    what: "the page reader panicked".into(),
                })
            })
            .map_err(|e| FrameError::Io(std::io::Error::other(e.to_string())));
        read.and(sent)
    })
}

impl Frozen {
    /// Sends the image and the page runs ([`send_pages`]), then `End`.
    pub fn send(
        &self,
        tx: &crate::link::channel::Sender,
    ) -> std::result::Result<(), mosix_core::proto::FrameError> {
        use mosix_core::proto::ProcMsg;
        tx.send(&ProcMsg::Image(Box::new(self.header.clone())))?;
        send_pages(tx, &self.mem, &self.header.vmas, &self.runs)?;
        tx.send(&ProcMsg::End)
    }

    /// Reads the memory to keep, run by run (one in memory at a time), and hands each to
    /// `write` with its area and offset (a checkpoint writes them to a file).
    pub fn each_run(
        &self,
        mut write: impl FnMut(u32, u64, &[u8]) -> std::io::Result<()>,
    ) -> std::result::Result<(), String> {
        let mut buf = Vec::new();
        for r in &self.runs {
            let len = r.len as usize;
            buf.resize(len, 0);
            read_run(
                &self.mem,
                &self.header.vmas[r.vma as usize],
                r,
                &mut buf[..len],
            )
            .map_err(|e| e.to_string())?;
            write(r.vma, r.offset, &buf[..len]).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Runs `act` with the tracee held (an injection may resume it) and the area, registers
    /// and memory it needs; gives the frozen process back unless the tracee was lost on the
    /// way.
    pub fn with_held<T>(
        self,
        act: impl FnOnce(&mut Held, &Area, &Regs, &Mem) -> T,
    ) -> (Option<Frozen>, T) {
        let Frozen {
            tracee,
            mem,
            area,
            header,
            runs,
            original_regs,
            original_mask,
            pending,
        } = self;
        let mut held = Held::new(tracee, Release::Keep);
        let out = act(&mut held, &area, &original_regs, &mem);
        let f = held.disarm().ok().map(|tracee| Frozen {
            tracee,
            mem,
            area,
            header,
            runs,
            original_regs,
            original_mask,
            pending,
        });
        (f, out)
    }

    /// Has the frozen process make a userfaultfd of its own address space, and takes it here
    /// (to track its writes during a live move, [`crate::kernel::dirty`]). The frozen process
    /// comes back unless it was lost on the way.
    pub fn make_uffd(self) -> (Option<Frozen>, Result<std::os::fd::OwnedFd>) {
        let pid = self.tracee.pid();
        self.with_held(|t, area, regs, _| {
            let fd = inject::syscall(
                t,
                area.site(),
                regs,
                libc::SYS_userfaultfd,
                [crate::kernel::uffd::CREATE_FLAGS, 0, 0, 0, 0, 0],
            )?;
            if fd < 0 {
                return Err(Error::Unexpected {
                    pid,
                    what: format!(
                        "no userfaultfd: {}",
                        nix::errno::Errno::from_raw(-fd as i32)
                    ),
                });
            }
            let taken = crate::kernel::seccomp::take_fd(pid, fd as i32);
            inject::syscall(
                t,
                area.site(),
                regs,
                libc::SYS_close,
                [fd as u64, 0, 0, 0, 0, 0],
            )?;
            taken.map_err(|e| Error::Unexpected {
                pid,
                what: format!("taking its userfaultfd: {e}"),
            })
        })
    }

    /// Undoes the freeze: removes our area and lets the process continue where it was.
    pub fn thaw(self) -> Result<()> {
        let mut t = Held::new(self.tracee, Release::Keep);
        inject::unmap_area(&mut t, &self.area, &self.original_regs)?;
        let t = t.disarm()?;
        t.set_regs(&self.original_regs)?;
        t.set_sigmask(self.original_mask)?;
        t.detach(None)?;
        for s in self.pending {
            let _ = s.send_to(self.header.cached.pid as i32);
        }
        Ok(())
    }
}

fn robust_list(pid: i32) -> Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: get_robust_list(2) writes one pointer into `head` and one size into `len`, both
    // valid, properly aligned locals that outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, pid, &raw mut head, &raw mut len) };
    if r < 0 {
        return Err(Error::Os {
            what: "get_robust_list",
            pid,
            errno: nix::errno::Errno::last(),
        });
    }
    Ok((head, len as u64))
}

/// The credentials of a process, from /proc/PID/status.
pub fn creds_of(pid: i32) -> Creds {
    procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .map(|s| Creds {
            uid: [s.ruid, s.euid, s.suid],
            gid: [s.rgid, s.egid, s.sgid],
            groups: s.groups,
        })
        .unwrap_or_default()
}

/// The resource limits of `pid` (those that cannot be read are left out).
pub fn rlimits_of(pid: i32) -> Vec<mosix_core::image::Rlimit> {
    (0..mosix_core::image::MAX_RLIMITS as u32)
        .filter_map(|resource| {
            let mut old = libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: prlimit64(2) with no new limit writes the old one into `old`, a valid
            // local of the right type.
            let r = unsafe {
                libc::prlimit64(
                    pid,
                    resource as libc::__rlimit_resource_t,
                    std::ptr::null(),
                    &raw mut old,
                )
            };
            (r == 0).then_some(mosix_core::image::Rlimit {
                resource,
                cur: old.rlim_cur,
                max: old.rlim_max,
            })
        })
        .collect()
}

/// This node's uname, as the process sees it at home.
pub fn uname() -> [String; 6] {
    match nix::sys::utsname::uname() {
        Ok(u) => [
            u.sysname().to_string_lossy().into_owned(),
            u.nodename().to_string_lossy().into_owned(),
            u.release().to_string_lossy().into_owned(),
            u.version().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
            u.domainname().to_string_lossy().into_owned(),
        ],
        Err(_) => Default::default(),
    }
}

/// The CPU feature flags of this machine (the first CPU of /proc/cpuinfo).
pub fn cpu_flags() -> Vec<String> {
    use procfs::Current;
    procfs::CpuInfo::current()
        .ok()
        .and_then(|c| {
            c.flags(0)
                .map(|f| f.into_iter().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}
