//! System-call injection: making a stopped tracee run a system call of our choosing.
//!
//! The tracee gets a private page of ours (the *area*) holding `syscall; int3` followed by
//! scratch space for arguments. To inject, we point `rip` at the `syscall`, load the number and
//! arguments, set `orig_rax = -1` (so the stop we resume from is not taken for an interrupted
//! call to restart), and resume; the `int3` after the call brings the tracee back to a stop,
//! with the result in `rax`. Signals are blocked for the whole session so none interrupts an
//! injected call; a call that is interrupted anyway (`-ERESTART*`) is repeated.
//!
//! Before the area exists, one call — the `mmap` that creates it — runs from three bytes
//! borrowed from the tracee's own code and put back at once ([`bootstrap`]).
//!
//! Cost: about 11 µs per call when tracer and tracee share a CPU, 50 µs when they do not
//! (a cross-CPU wakeup each way in this VM). This is for freezing, restoring and rare calls —
//! never for the per-call path of a migrated process.

use mosix_core::image::{MapsLine, Regs};

use crate::kernel::abi::{ERESTART_RESTARTBLOCK, ERESTARTSYS};
use crate::kernel::ptrace::{Error, Mem, Result, Sig, Stop, Stopped};

/// What becomes of a tracee whose [`Held`] guard is dropped while it still holds it: the error
/// paths of a freeze, an injection session or a restore.
#[derive(Debug, Clone, Copy)]
pub enum Release {
    /// Nothing: it stays stopped and traced until this thread lets go of it (with
    /// `PTRACE_O_EXITKILL`, when the thread ends, it dies).
    Keep,
    /// `PTRACE_DETACH`: it runs on.
    Detach,
    /// Its registers and signal mask are put back, then it is detached.
    Restore {
        /// The registers to put back.
        regs: Regs,
        /// The signal mask to put back.
        mask: u64,
    },
    /// Our area is unmapped from it ([`unmap_area`], with `regs` as the base), then as
    /// [`Release::Restore`]. If the unmap fails it is left as [`Release::Keep`] leaves it.
    Unmap {
        /// The area.
        area: Area,
        /// The registers to put back.
        regs: Regs,
        /// The signal mask to put back.
        mask: u64,
    },
    /// It is killed (a half-rebuilt process must not run).
    Kill,
}

/// A stopped tracee held on the way through a sequence of requests that may fail: the
/// injection functions take it by `&mut` and return a plain [`Result`], and if the guard is
/// dropped while it still holds the tracee — an error was propagated with `?` — the tracee is
/// let go as its [`Release`] says. [`Held::disarm`] takes the tracee out on success.
///
/// A request that resumes the tracee takes it out for the time it runs and puts it back when
/// it stops again; if it does not stop again (it died, or the kernel refused to resume it), the
/// guard is left empty and its drop does nothing: there is nothing left to let go.
#[derive(Debug)]
pub struct Held {
    pid: i32,
    tracee: Option<Stopped>,
    release: Release,
}

impl Held {
    /// Holds `t`, to be let go as `release` says if dropped.
    pub fn new(t: Stopped, release: Release) -> Held {
        Held {
            pid: t.pid(),
            tracee: Some(t),
            release,
        }
    }

    /// The pid of the tracee.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Changes what a drop does (a step further, there is more to undo).
    pub fn set_release(&mut self, release: Release) {
        self.release = release;
    }

    /// The tracee, to make requests that do not resume it.
    pub fn get(&self) -> Result<&Stopped> {
        self.tracee.as_ref().ok_or_else(|| self.lost())
    }

    /// Takes the tracee out, to resume it; give it back with [`Held::put`] when it stops.
    pub fn take(&mut self) -> Result<Stopped> {
        self.tracee.take().ok_or_else(|| self.lost())
    }

    /// Gives back the tracee taken with [`Held::take`].
    pub fn put(&mut self, t: Stopped) {
        self.tracee = Some(t);
    }

    /// Takes the tracee out for good (on success); nothing happens to it on drop.
    pub fn disarm(mut self) -> Result<Stopped> {
        self.take()
    }

    /// Takes whatever the guard holds, without letting it go: for callers that decide
    /// themselves what becomes of a tracee after an error.
    pub fn into_inner(mut self) -> Option<Stopped> {
        self.tracee.take()
    }

    fn lost(&self) -> Error {
        Error::Unexpected {
            pid: self.pid,
            what: "the tracee was lost by an earlier failed request".into(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(t) = self.tracee.take() else { return };
        match self.release {
            Release::Keep => {}
            Release::Detach => {
                let _ = t.detach(None);
            }
            Release::Restore { regs, mask } => {
                let _ = t.set_regs(&regs);
                let _ = t.set_sigmask(mask);
                let _ = t.detach(None);
            }
            Release::Unmap { area, regs, mask } => {
                if let Ok(t) = unmap_stopped(t, &area, &regs) {
                    let _ = t.set_regs(&regs);
                    let _ = t.set_sigmask(mask);
                    let _ = t.detach(None);
                }
            }
            Release::Kill => t.kill(),
        }
    }
}

/// `syscall; int3`.
pub const SITE_CODE: [u8; 3] = [0x0f, 0x05, 0xcc];
/// The size of our area: one page of code, the rest scratch.
pub const AREA_LEN: u64 = 256 * 1024;
/// Where the scratch space starts inside the area.
pub const SCRATCH_OFFSET: u64 = 4096;

/// Signals that cannot be blocked; everything else is blocked during injection.
const ALL_BLOCKED: u64 = !((1u64 << (libc::SIGKILL - 1)) | (1u64 << (libc::SIGSTOP - 1)));

/// Whether a system call's raw result is one of the kernel's `-ERESTART*` codes.
fn is_restart(ret: i64) -> bool {
    (i64::from(ERESTARTSYS)..=i64::from(ERESTART_RESTARTBLOCK)).contains(&-ret)
}

/// An injection site in a tracee: our area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// Start of the area (the `syscall` instruction).
    pub start: u64,
}

impl Area {
    /// The address of the `syscall` instruction.
    pub fn site(&self) -> u64 {
        self.start
    }
    /// Start of the scratch space.
    pub fn scratch(&self) -> u64 {
        self.start + SCRATCH_OFFSET
    }
    /// Size of the scratch space.
    pub fn scratch_len(&self) -> u64 {
        AREA_LEN - SCRATCH_OFFSET
    }
    /// The address range.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.start + AREA_LEN)
    }
}

/// Runs system call `nr(args)` in the tracee from `site`, with the other registers from `base`.
/// Returns the raw result (negative errno on failure); the tracee is stopped again in `t`.
pub fn syscall(t: &mut Held, site: u64, base: &Regs, nr: i64, args: [u64; 6]) -> Result<i64> {
    let regs = base.for_syscall(site, nr as u64, args);
    for _attempt in 0..16 {
        t.get()?.set_regs(&regs)?;
        let mut r = t.take()?.cont(None)?;
        loop {
            let s = r.wait()?;
            match s.stop {
                Stop::Signal(Sig::TRAP) => {
                    t.put(s);
                    let after = t.get()?.regs()?;
                    if after.ip() != site + 3 {
                        return Err(Error::Unexpected {
                            pid: t.pid(),
                            what: format!(
                                "trap at {:#x} while injecting {} (expected {:#x})",
                                after.ip(),
                                mosix_core::syscalls::name(nr as u64),
                                site + 3
                            ),
                        });
                    }
                    let ret = after.ax() as i64;
                    if is_restart(ret) {
                        // Interrupted after all (a stop or a non-blockable signal): again.
                        break;
                    }
                    return Ok(ret);
                }
                // A group stop or a signal we blocked cannot be ours; carry on.
                Stop::Signal(_) | Stop::Event(_) | Stop::Group(_) | Stop::Syscall => {
                    r = s.cont(None)?;
                }
            }
        }
    }
    Err(Error::Unexpected {
        pid: t.pid(),
        what: format!(
            "injected {} keeps being interrupted",
            mosix_core::syscalls::name(nr as u64)
        ),
    })
}

/// Runs system call `nr(args)` in a deputy on behalf of its migrated process. Unlike in a
/// freeze or a restore, the deputy's signals are not blocked: they are the process's. A signal
/// that stops the deputy meanwhile is handed to `on_signal` (with the stop, for its signal
/// information) and suppressed here; if it interrupted the call, the call is not restarted but
/// ends with its `-ERESTART*` code, so that the process's own kernel decides what the signal
/// means for it, as it would for a native call. (At the signal's stop `orig_rax` is set to -1,
/// which keeps the kernel from rewinding to the `syscall` instruction after a suppressed
/// signal.) `-ERESTART_RESTARTBLOCK` becomes `-EINTR`: its state stays in this kernel.
pub fn syscall_for_process(
    t: &mut Held,
    site: u64,
    base: &Regs,
    nr: i64,
    args: [u64; 6],
    mut on_signal: impl FnMut(Sig, &Stopped),
) -> Result<i64> {
    let regs = base.for_syscall(site, nr as u64, args);
    t.get()?.set_regs(&regs)?;
    let mut r = t.take()?.cont(None)?;
    loop {
        let s = r.wait()?;
        let Stop::Signal(sig) = s.stop else {
            r = s.cont(None)?;
            continue;
        };
        t.put(s);
        let s = t.get()?;
        let mut now = s.regs()?;
        if sig == Sig::TRAP && now.ip() == site + 3 {
            let ret = now.ax() as i64;
            return Ok(if ret == -i64::from(ERESTART_RESTARTBLOCK) {
                -i64::from(libc::EINTR)
            } else {
                ret
            });
        }
        on_signal(sig, s);
        let ret = now.ax() as i64;
        if now.orig_ax() >= 0 && is_restart(ret) {
            now.0[Regs::ORIG_RAX] = u64::MAX;
            s.set_regs(&now)?;
        }
        r = t.take()?.cont(None)?;
    }
}

/// Runs the tracee from `regs` until it traps (`int3`) with its instruction pointer at `trap`;
/// returns `rax` then. For code of ours longer than the injection site (the agent's start).
/// Stops on the way that are not ours are let through unchanged; the tracee's signals should be
/// blocked.
pub fn run_to_trap(t: &mut Held, regs: &Regs, trap: u64) -> Result<i64> {
    t.get()?.set_regs(regs)?;
    let mut r = t.take()?.cont(None)?;
    loop {
        let s = r.wait()?;
        if s.stop == Stop::Signal(Sig::TRAP) {
            t.put(s);
            let after = t.get()?.regs()?;
            if after.ip() != trap {
                return Err(Error::Unexpected {
                    pid: t.pid(),
                    what: format!("trap at {:#x} (expected {trap:#x})", after.ip()),
                });
            }
            return Ok(after.ax() as i64);
        }
        r = s.cont(None)?;
    }
}

/// At a signal stop that interrupted a system call, keeps the kernel from restarting the call
/// once the (suppressed) signal is gone: the call ends with its `-ERESTART*` code, for whoever
/// made it to decide. Does nothing at other stops.
pub fn dont_restart(s: &Stopped) -> Result<()> {
    let mut now = s.regs()?;
    if now.orig_ax() >= 0 && is_restart(now.ax() as i64) {
        now.0[Regs::ORIG_RAX] = u64::MAX;
        s.set_regs(&now)?;
    }
    Ok(())
}

/// Blocks every blockable signal of the tracee for an injection session; returns its mask, to
/// be given back with `set_sigmask` when the session ends.
pub fn block_signals(t: &Stopped) -> Result<u64> {
    let old = t.sigmask()?;
    t.set_sigmask(ALL_BLOCKED)?;
    Ok(old)
}

/// Finds a free, page-aligned range of `len` bytes that overlaps none of `busy`, preferring high
/// addresses below the usual mmap base (so it does not collide with the heap growing up or with
/// libraries mapped from the top).
pub fn find_hole(busy: &[(u64, u64)], len: u64) -> Option<u64> {
    let mut candidates = Vec::new();
    // Below each busy range, and at a few fixed spots.
    for &(s, _) in busy {
        if s >= len + 0x10000 {
            candidates.push((s - len - 0x10000) & !0xfff);
        }
    }
    candidates.extend([
        0x5e00_0000_0000,
        0x3e00_0000_0000,
        0x1e00_0000_0000,
        0x0e00_0000_0000,
    ]);
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    candidates.into_iter().find(|&c| {
        c >= 0x10000
            && c + len <= 0x7fff_ffff_0000
            && busy.iter().all(|&(s, e)| c + len <= s || c >= e)
    })
}

/// Gives a stopped tracee our area at an address free of both its own mappings and `also_avoid`:
/// the `mmap` runs from three bytes of the tracee's own code, which are put back right after.
/// Signals must already be blocked ([`block_signals`]).
pub fn bootstrap(
    t: &mut Held,
    mem: &Mem,
    maps: &[MapsLine],
    base: &Regs,
    also_avoid: &[(u64, u64)],
) -> Result<Area> {
    let pid = t.pid();
    let Some(code) = maps
        .iter()
        .find(|m| m.perms.starts_with("r-x") && !m.path.starts_with('['))
        .or_else(|| maps.iter().find(|m| m.perms.contains('x')))
    else {
        return Err(Error::Unexpected {
            pid,
            what: "no executable mapping to start injecting from".into(),
        });
    };
    let mut busy: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    busy.extend_from_slice(also_avoid);
    let Some(hint) = find_hole(&busy, AREA_LEN) else {
        return Err(Error::Unexpected {
            pid,
            what: "no free address range for the injection area".into(),
        });
    };
    let borrowed = code.start;
    let mut saved = [0u8; 3];
    mem.read(borrowed, &mut saved)?;
    mem.write(borrowed, &SITE_CODE)?;
    let result = syscall(
        t,
        borrowed,
        base,
        libc::SYS_mmap,
        [
            hint,
            AREA_LEN,
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            u64::MAX,
            0,
        ],
    );
    // Put the code back whatever happened.
    let put_back = mem.write(borrowed, &saved);
    let ret = result?;
    put_back?;
    if ret < 0 || ret as u64 != hint {
        return Err(Error::Unexpected {
            pid,
            what: format!("mmap of the injection area at {hint:#x} returned {ret}"),
        });
    }
    mem.write(hint, &SITE_CODE)?;
    Ok(Area { start: hint })
}

/// Unmaps our area from inside the tracee. The `munmap` runs from the area's own `syscall`, so
/// the tracee cannot return to the `int3` after it: the call is run to its syscall-exit stop
/// (PTRACE_SYSCALL), where the instruction pointer has not been used yet, and the caller then
/// sets whatever registers it wants. If this fails the guard is left empty (the tracee is
/// neither in a known state nor ours to let go).
pub fn unmap_area(t: &mut Held, area: &Area, base: &Regs) -> Result<()> {
    let s = unmap_stopped(t.take()?, area, base)?;
    t.put(s);
    Ok(())
}

/// [`unmap_area`] on a bare tracee (which is lost on failure).
fn unmap_stopped(t: Stopped, area: &Area, base: &Regs) -> Result<Stopped> {
    let regs = base.for_syscall(
        area.site(),
        libc::SYS_munmap as u64,
        [area.start, AREA_LEN, 0, 0, 0, 0],
    );
    t.set_regs(&regs)?;
    let mut r = t.syscall()?;
    // Entry stop, then exit stop.
    let mut seen = 0;
    loop {
        let s = r.wait()?;
        match s.stop {
            Stop::Syscall => {
                seen += 1;
                if seen == 2 {
                    let after = s.regs()?;
                    if (after.ax() as i64) < 0 {
                        return Err(Error::Unexpected {
                            pid: s.pid(),
                            what: format!(
                                "munmap of the injection area failed: {}",
                                after.ax() as i64
                            ),
                        });
                    }
                    return Ok(s);
                }
                r = s.syscall()?;
            }
            _ => {
                r = s.syscall()?;
            }
        }
    }
}

/// The memory map of `pid` (`/proc/PID/maps`, read by `procfs`).
pub fn read_maps(pid: i32) -> std::io::Result<Vec<MapsLine>> {
    // procfs 0.18 slices a path starting with `/SYSV` as `/SYSVkkkkkkkk` without checking its
    // length: a mapped file named `/SYSV` (reachable by anyone with a mount namespace of their
    // own) would panic it. Such a map is an error here instead.
    let read = std::panic::catch_unwind(|| procfs::process::Process::new(pid)?.maps());
    match read {
        Ok(Ok(maps)) => Ok(maps.into_iter().map(|m| maps_line(&m)).collect()),
        Ok(Err(e)) => Err(proc_error(e)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/maps: a line procfs cannot parse"),
        )),
    }
}

/// A `procfs` error as the I/O error it stands for.
pub(crate) fn proc_error(e: procfs::ProcError) -> std::io::Error {
    use procfs::ProcError;
    match e {
        ProcError::Io(e, _) => e,
        ProcError::NotFound(_) => std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
        ProcError::PermissionDenied(_) => {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string())
        }
        e => std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    }
}

/// One line of the map as the kernel printed it (the path column as it reads, `[name]` for the
/// kernel's own mappings, empty for anonymous memory).
fn maps_line(m: &procfs::process::MemoryMap) -> MapsLine {
    use procfs::process::MMapPath;
    let path = match &m.pathname {
        MMapPath::Path(p) => p.to_string_lossy().into_owned(),
        MMapPath::Heap => "[heap]".to_owned(),
        MMapPath::Stack => "[stack]".to_owned(),
        MMapPath::TStack(tid) => format!("[stack:{tid}]"),
        MMapPath::Vdso => "[vdso]".to_owned(),
        MMapPath::Vvar => "[vvar]".to_owned(),
        MMapPath::Vsyscall => "[vsyscall]".to_owned(),
        MMapPath::Rollup => "[rollup]".to_owned(),
        MMapPath::Anonymous => String::new(),
        // A System V shared memory segment: the kernel prints its key so, always "deleted".
        MMapPath::Vsys(key) => format!("/SYSV{:08x} (deleted)", *key as u32),
        MMapPath::Other(name) => format!("[{name}]"),
    };
    MapsLine {
        start: m.address.0,
        end: m.address.1,
        perms: m.perms.as_str(),
        offset: m.offset,
        dev: (m.dev.0 as u32, m.dev.1 as u32),
        inode: m.inode,
        path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<MapsLine> {
        use procfs::FromBufRead;
        procfs::process::MemoryMaps::from_buf_read(text.as_bytes())
            .unwrap()
            .iter()
            .map(maps_line)
            .collect()
    }

    #[test]
    fn maps_lines_parse() {
        let l = parse(
            "7f00aa000000-7f00aa021000 r-xp 00002000 fd:01 123  /usr/lib/x86_64-linux-gnu/libc.so.6\n",
        );
        assert_eq!(l[0].start, 0x7f00aa000000);
        assert_eq!(l[0].end, 0x7f00aa021000);
        assert_eq!(l[0].perms, "r-xp");
        assert_eq!(l[0].offset, 0x2000);
        assert_eq!(l[0].dev, (0xfd, 1));
        assert_eq!(l[0].inode, 123);
        assert_eq!(l[0].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let l = parse(
            "7ffd1000-7ffd3000 rw-p 00000000 00:00 0                          [stack]\n\
             55aa0000-55aa1000 rw-p 00000000 00:00 0 \n\
             7ffd4000-7ffd5000 r--p 00000000 00:00 0                          [vvar_vclock]\n\
             7ffd5000-7ffd6000 rw-s 00000000 00:01 7 /home/a b/c d (deleted)\n\
             7ffd6000-7ffd7000 rw-s 00000000 00:01 32768 /SYSV0000abcd (deleted)\n\
             7ffd7000-7ffd8000 ---p 00000000 00:00 0                          [anon:x y]\n",
        );
        let paths: Vec<&str> = l.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "[stack]",
                "",
                "[vvar_vclock]",
                "/home/a b/c d (deleted)",
                "/SYSV0000abcd (deleted)",
                "[anon:x y]"
            ]
        );
        assert_eq!(l[3].perms, "rw-s");
        assert_eq!(l[5].perms, "---p");
    }

    #[test]
    fn this_process_maps_are_read() {
        let me = std::process::id() as i32;
        let maps = read_maps(me).unwrap();
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        // The same mappings as the kernel prints (the text is read a moment later: compare the
        // stable part, the executable's own mappings).
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy();
        let ours: Vec<&MapsLine> = maps.iter().filter(|m| m.path == exe).collect();
        assert!(!ours.is_empty());
        for m in ours {
            let line = format!("{:x}-{:x} {} {:08x}", m.start, m.end, m.perms, m.offset);
            assert!(text.contains(&line), "{line}");
        }
        assert!(maps.iter().any(|m| m.path == "[stack]"));
    }

    #[test]
    fn holes_avoid_busy_ranges() {
        let busy = [(0x5e00_0000_0000, 0x5e00_1000_0000)];
        let h = find_hole(&busy, AREA_LEN).unwrap();
        assert!(h + AREA_LEN <= busy[0].0 || h >= busy[0].1);
        assert_eq!(h % 4096, 0);
    }
}
