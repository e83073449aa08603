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

/// An error that may leave the tracee in our hands (stopped) or not (it died, or the kernel
/// would not resume it): callers that must put a process back the way it was need the tracee.
pub type Failed = (Option<Stopped>, Error);

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
/// Returns the tracee (stopped again) and the raw result (negative errno on failure).
pub fn syscall(
    t: Stopped,
    site: u64,
    base: &Regs,
    nr: i64,
    args: [u64; 6],
) -> std::result::Result<(Stopped, i64), Failed> {
    let regs = base.for_syscall(site, nr as u64, args);
    let mut t = t;
    for _attempt in 0..16 {
        if let Err(e) = t.set_regs(&regs) {
            return Err((Some(t), e));
        }
        let mut r = t.cont(None).map_err(|e| (None, e))?;
        loop {
            let s = r.wait().map_err(|e| (None, e))?;
            match s.stop {
                Stop::Signal(Sig::TRAP) => {
                    let after = match s.regs() {
                        Ok(a) => a,
                        Err(e) => return Err((Some(s), e)),
                    };
                    if after.ip() != site + 3 {
                        let e = Error::Unexpected {
                            pid: s.pid(),
                            what: format!(
                                "trap at {:#x} while injecting {} (expected {:#x})",
                                after.ip(),
                                mosix_core::syscalls::name(nr as u64),
                                site + 3
                            ),
                        };
                        return Err((Some(s), e));
                    }
                    let ret = after.ax() as i64;
                    if is_restart(ret) {
                        // Interrupted after all (a stop or a non-blockable signal): again.
                        t = s;
                        break;
                    }
                    return Ok((s, ret));
                }
                // A group stop or a signal we blocked cannot be ours; carry on.
                Stop::Signal(_) | Stop::Event(_) | Stop::Group(_) | Stop::Syscall => {
                    r = s.cont(None).map_err(|e| (None, e))?;
                }
            }
        }
    }
    let e = Error::Unexpected {
        pid: t.pid(),
        what: format!(
            "injected {} keeps being interrupted",
            mosix_core::syscalls::name(nr as u64)
        ),
    };
    Err((Some(t), e))
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
    t: Stopped,
    site: u64,
    base: &Regs,
    nr: i64,
    args: [u64; 6],
    mut on_signal: impl FnMut(Sig, &Stopped),
) -> std::result::Result<(Stopped, i64), Failed> {
    let regs = base.for_syscall(site, nr as u64, args);
    if let Err(e) = t.set_regs(&regs) {
        return Err((Some(t), e));
    }
    let mut r = t.cont(None).map_err(|e| (None, e))?;
    loop {
        let s = r.wait().map_err(|e| (None, e))?;
        let Stop::Signal(sig) = s.stop else {
            r = s.cont(None).map_err(|e| (None, e))?;
            continue;
        };
        let mut now = match s.regs() {
            Ok(x) => x,
            Err(e) => return Err((Some(s), e)),
        };
        if sig == Sig::TRAP && now.ip() == site + 3 {
            let ret = now.ax() as i64;
            return Ok((
                s,
                if ret == -i64::from(ERESTART_RESTARTBLOCK) {
                    -i64::from(libc::EINTR)
                } else {
                    ret
                },
            ));
        }
        on_signal(sig, &s);
        let ret = now.ax() as i64;
        if now.orig_ax() >= 0 && is_restart(ret) {
            now.0[Regs::ORIG_RAX] = u64::MAX;
            if let Err(e) = s.set_regs(&now) {
                return Err((Some(s), e));
            }
        }
        r = s.cont(None).map_err(|e| (None, e))?;
    }
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
    t: Stopped,
    mem: &Mem,
    maps: &[MapsLine],
    base: &Regs,
    also_avoid: &[(u64, u64)],
) -> std::result::Result<(Stopped, Area), Failed> {
    let pid = t.pid();
    let Some(code) = maps
        .iter()
        .find(|m| m.perms.starts_with("r-x") && !m.path.starts_with('['))
        .or_else(|| maps.iter().find(|m| m.perms.contains('x')))
    else {
        let e = Error::Unexpected {
            pid,
            what: "no executable mapping to start injecting from".into(),
        };
        return Err((Some(t), e));
    };
    let mut busy: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    busy.extend_from_slice(also_avoid);
    let Some(hint) = find_hole(&busy, AREA_LEN) else {
        let e = Error::Unexpected {
            pid,
            what: "no free address range for the injection area".into(),
        };
        return Err((Some(t), e));
    };
    let borrowed = code.start;
    let mut saved = [0u8; 3];
    if let Err(e) = mem
        .read(borrowed, &mut saved)
        .and_then(|()| mem.write(borrowed, &SITE_CODE))
    {
        return Err((Some(t), e));
    }
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
    let (t, ret) = result?;
    if let Err(e) = put_back {
        return Err((Some(t), e));
    }
    if ret < 0 || ret as u64 != hint {
        let e = Error::Unexpected {
            pid,
            what: format!("mmap of the injection area at {hint:#x} returned {ret}"),
        };
        return Err((Some(t), e));
    }
    if let Err(e) = mem.write(hint, &SITE_CODE) {
        return Err((Some(t), e));
    }
    Ok((t, Area { start: hint }))
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
