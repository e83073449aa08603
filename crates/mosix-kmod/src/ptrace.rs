//! ptrace, with the kernel's protocol in the types.
//!
//! A seized process is either [`Running`] or [`Stopped`]; only a stopped one can be read,
//! written or injected into, and resuming it consumes the [`Stopped`] value. A process that
//! vanishes under us (`ESRCH`, or a wait that reports its death) becomes [`Error::Died`] or
//! [`Error::Exited`], never a panic. Every request must come from the thread that seized the
//! process (a ptrace rule): the types are not `Send`, so they stay on that thread.
//!
//! Requests nix does not wrap (the XSAVE regset, the signal mask, the rseq configuration) go
//! through `libc::ptrace` with the layouts documented next to them.

use std::fs::File;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;

use mosix_core::image::{Regs, Rseq};
use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// What can go wrong with a tracee.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process is gone (killed, or reaped by someone).
    #[error("process {0} died")]
    Died(i32),
    /// The process exited with a status while we traced it.
    #[error("process {pid} exited with status {status}")]
    Exited {
        /// Its pid.
        pid: i32,
        /// Its exit status.
        status: i32,
    },
    /// The process was killed by a signal while we traced it.
    #[error("process {pid} was killed by signal {sig}")]
    Killed {
        /// Its pid.
        pid: i32,
        /// The signal.
        sig: i32,
    },
    /// The kernel refused a request.
    #[error("{what} on process {pid}: {errno}")]
    Os {
        /// The request.
        what: &'static str,
        /// The pid.
        pid: i32,
        /// The error.
        errno: Errno,
    },
    /// The process stopped where we did not expect it.
    #[error("process {pid}: {what}")]
    Unexpected {
        /// The pid.
        pid: i32,
        /// What happened.
        what: String,
    },
    /// Reading or writing its memory failed.
    #[error("memory of process {pid} at {addr:#x}: {source}")]
    Mem {
        /// The pid.
        pid: i32,
        /// The address.
        addr: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A result of a ptrace operation.
pub type Result<T> = std::result::Result<T, Error>;

fn os(what: &'static str, pid: Pid) -> impl Fn(Errno) -> Error {
    move |errno| {
        if errno == Errno::ESRCH {
            Error::Died(pid.as_raw())
        } else {
            Error::Os {
                what,
                pid: pid.as_raw(),
                errno,
            }
        }
    }
}

/// Why a tracee stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A `PTRACE_EVENT_*` stop (`PTRACE_EVENT_STOP` = 128 after an interrupt or a group stop).
    Event(i32),
    /// A signal is about to be delivered; resuming with it delivers it, with 0 suppresses it.
    Signal(Signal),
    /// A system-call entry or exit stop (`PTRACE_SYSCALL` with `TRACESYSGOOD`).
    Syscall,
}

/// `PTRACE_O_SUSPEND_SECCOMP` (nix has no name for it): the tracee's seccomp filters do not
/// apply while we trace it, so calls we inject into a migrated process are not trapped by its
/// own filter. Needs CAP_SYS_ADMIN.
pub const SUSPEND_SECCOMP: Options = Options::from_bits_retain(0x0020_0000);

/// The `PTRACE_EVENT_STOP` event number.
pub const EVENT_STOP: i32 = 128;

/// A seized process that runs (or sleeps).
#[derive(Debug)]
pub struct Running {
    pid: Pid,
    _not_send: PhantomData<*const ()>,
}

/// A seized process in a ptrace stop.
#[derive(Debug)]
pub struct Stopped {
    pid: Pid,
    /// Why it stopped.
    pub stop: Stop,
    _not_send: PhantomData<*const ()>,
}

/// The options every seize uses: report syscall stops distinguishably, and kill the tracee if
/// the tracer dies (a deputy without its service, a half-restored stub). Options given by the
/// caller are added.
pub fn seize(pid: i32, extra: Options) -> Result<Running> {
    let p = Pid::from_raw(pid);
    ptrace::seize(
        p,
        Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_EXITKILL | extra,
    )
    .map_err(|e| {
        // The kernel says EPERM for a zombie; that is a process that died.
        let zombie = procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .map_or(true, |s| s.state == 'Z' || s.state == 'X');
        if e == Errno::EPERM && zombie {
            Error::Died(pid)
        } else {
            os("PTRACE_SEIZE", p)(e)
        }
    })?;
    Ok(Running {
        pid: p,
        _not_send: PhantomData,
    })
}

fn decode(pid: Pid, st: WaitStatus) -> Result<Stop> {
    match st {
        WaitStatus::PtraceEvent(_, _, ev) => Ok(Stop::Event(ev)),
        WaitStatus::Stopped(_, sig) => Ok(Stop::Signal(sig)),
        WaitStatus::PtraceSyscall(_) => Ok(Stop::Syscall),
        WaitStatus::Exited(_, status) => Err(Error::Exited {
            pid: pid.as_raw(),
            status,
        }),
        WaitStatus::Signaled(_, sig, _) => Err(Error::Killed {
            pid: pid.as_raw(),
            sig: sig as i32,
        }),
        other => Err(Error::Unexpected {
            pid: pid.as_raw(),
            what: format!("unexpected wait status {other:?}"),
        }),
    }
}

impl Running {
    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Waits for the next stop.
    pub fn wait(self) -> Result<Stopped> {
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
                Ok(st) => {
                    let stop = decode(self.pid, st)?;
                    return Ok(Stopped {
                        pid: self.pid,
                        stop,
                        _not_send: PhantomData,
                    });
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Err(Error::Died(self.pid.as_raw())),
                Err(e) => return Err(os("waitpid", self.pid)(e)),
            }
        }
    }

    /// Returns a stop if one is pending, without blocking; `Err(self)` if it still runs.
    pub fn try_wait(self) -> std::result::Result<Result<Stopped>, Running> {
        match waitpid(self.pid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => Err(self),
            Ok(st) => Ok(decode(self.pid, st).map(|stop| Stopped {
                pid: self.pid,
                stop,
                _not_send: PhantomData,
            })),
            Err(Errno::ECHILD) => Ok(Err(Error::Died(self.pid.as_raw()))),
            Err(e) => Ok(Err(os("waitpid", self.pid)(e))),
        }
    }

    /// Asks for a stop (`PTRACE_INTERRUPT`) without waiting for it.
    pub fn request_interrupt(&self) -> Result<()> {
        ptrace::interrupt(self.pid).map_err(os("PTRACE_INTERRUPT", self.pid))
    }

    /// Waits for the stop an interrupt asked for; signal stops on the way are handed to
    /// `on_signal` and suppressed.
    pub fn wait_interrupt(self, mut on_signal: impl FnMut(Signal)) -> Result<Stopped> {
        let mut r = self;
        loop {
            let s = r.wait()?;
            match s.stop {
                Stop::Event(_) | Stop::Syscall => return Ok(s),
                Stop::Signal(Signal::SIGTRAP) => return Ok(s),
                Stop::Signal(sig) => {
                    on_signal(sig);
                    r = s.cont(None)?;
                    ptrace::interrupt(r.pid).map_err(os("PTRACE_INTERRUPT", r.pid))?;
                }
            }
        }
    }

    /// Stops it (`PTRACE_INTERRUPT`) and waits for the stop. Signals that arrive first are
    /// reported as their own stops; `on_signal` decides what to do with each (its return value
    /// is kept pending for the caller) and the interrupt stop is awaited again.
    pub fn interrupt(self, mut on_signal: impl FnMut(Signal)) -> Result<Stopped> {
        ptrace::interrupt(self.pid).map_err(os("PTRACE_INTERRUPT", self.pid))?;
        let mut r = self;
        loop {
            let s = r.wait()?;
            match s.stop {
                Stop::Event(_) | Stop::Syscall => return Ok(s),
                Stop::Signal(Signal::SIGTRAP) => return Ok(s),
                Stop::Signal(sig) => {
                    // Suppress it here; the caller re-raises or forwards it.
                    on_signal(sig);
                    r = s.cont(None)?;
                    ptrace::interrupt(r.pid).map_err(os("PTRACE_INTERRUPT", r.pid))?;
                }
            }
        }
    }

    /// Detaches from a running tracee is not possible; stop it first. Kills it instead.
    pub fn kill(self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, Some(WaitPidFlag::__WALL));
    }
}

/// The size of the kernel's `struct user_regs_struct` on x86_64.
const REGS_WORDS: usize = 27;

/// `NT_X86_XSTATE`.
const NT_X86_XSTATE: libc::c_int = 0x202;
/// `PTRACE_GETSIGMASK`.
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
/// `PTRACE_SETSIGMASK`.
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
/// `PTRACE_GET_RSEQ_CONFIGURATION`.
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;

/// `struct ptrace_rseq_configuration` (Linux 5.13): where the rseq area is and how it was
/// registered.
#[repr(C)]
#[derive(Default)]
struct RseqConfig {
    /// Address of the registered `struct rseq`.
    rseq_abi_pointer: u64,
    /// Its registered length.
    rseq_abi_size: u32,
    /// The signature the process registered.
    signature: u32,
    /// Registration flags.
    flags: u32,
    /// Padding.
    pad: u32,
}

impl Stopped {
    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    fn raw(
        &self,
        req: libc::c_uint,
        addr: usize,
        data: *mut libc::c_void,
        what: &'static str,
    ) -> Result<libc::c_long> {
        // SAFETY: `req` is one of the ptrace requests above whose `data` argument points to a
        // buffer the caller sized for that request (an iovec over a buffer, a u64 sigmask, an
        // rseq configuration struct), valid for the duration of the call; the tracee is in a
        // ptrace stop and traced by this thread, as these requests require.
        let r = unsafe { libc::ptrace(req, self.pid.as_raw(), addr, data) };
        if r == -1 {
            Err(os(what, self.pid)(Errno::last()))
        } else {
            Ok(r)
        }
    }

    /// The general registers.
    pub fn regs(&self) -> Result<Regs> {
        let mut words = [0u64; REGS_WORDS];
        self.raw(
            libc::PTRACE_GETREGS,
            0,
            words.as_mut_ptr().cast(),
            "PTRACE_GETREGS",
        )?;
        Ok(Regs(words))
    }

    /// Sets the general registers.
    pub fn set_regs(&self, r: &Regs) -> Result<()> {
        let mut words = r.0;
        self.raw(
            libc::PTRACE_SETREGS,
            0,
            words.as_mut_ptr().cast(),
            "PTRACE_SETREGS",
        )?;
        Ok(())
    }

    /// The XSAVE area (FPU, SSE, AVX, AVX-512 state).
    pub fn xstate(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; mosix_core::image::MAX_XSTATE];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        self.raw(
            libc::PTRACE_GETREGSET,
            NT_X86_XSTATE as usize,
            (&raw mut iov).cast(),
            "PTRACE_GETREGSET(NT_X86_XSTATE)",
        )?;
        buf.truncate(iov.iov_len);
        Ok(buf)
    }

    /// Sets the XSAVE area.
    pub fn set_xstate(&self, x: &[u8]) -> Result<()> {
        let mut buf = x.to_vec();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        self.raw(
            libc::PTRACE_SETREGSET,
            NT_X86_XSTATE as usize,
            (&raw mut iov).cast(),
            "PTRACE_SETREGSET(NT_X86_XSTATE)",
        )?;
        Ok(())
    }

    /// The blocked-signal mask.
    pub fn sigmask(&self) -> Result<u64> {
        let mut m = 0u64;
        self.raw(
            PTRACE_GETSIGMASK,
            8,
            (&raw mut m).cast(),
            "PTRACE_GETSIGMASK",
        )?;
        Ok(m)
    }

    /// Sets the blocked-signal mask.
    pub fn set_sigmask(&self, mask: u64) -> Result<()> {
        let mut m = mask;
        self.raw(
            PTRACE_SETSIGMASK,
            8,
            (&raw mut m).cast(),
            "PTRACE_SETSIGMASK",
        )?;
        Ok(())
    }

    /// The rseq registration, if the process has one.
    pub fn rseq(&self) -> Result<Option<Rseq>> {
        let mut c = RseqConfig::default();
        self.raw(
            PTRACE_GET_RSEQ_CONFIGURATION,
            std::mem::size_of::<RseqConfig>(),
            (&raw mut c).cast(),
            "PTRACE_GET_RSEQ_CONFIGURATION",
        )?;
        Ok((c.rseq_abi_pointer != 0).then_some(Rseq {
            ptr: c.rseq_abi_pointer,
            len: c.rseq_abi_size,
            sig: c.signature,
        }))
    }

    /// Resumes it, delivering `sig` if given.
    pub fn cont(self, sig: Option<Signal>) -> Result<Running> {
        ptrace::cont(self.pid, sig).map_err(os("PTRACE_CONT", self.pid))?;
        Ok(Running {
            pid: self.pid,
            _not_send: PhantomData,
        })
    }

    /// Resumes it to the next system-call entry or exit.
    pub fn syscall(self) -> Result<Running> {
        ptrace::syscall(self.pid, None).map_err(os("PTRACE_SYSCALL", self.pid))?;
        Ok(Running {
            pid: self.pid,
            _not_send: PhantomData,
        })
    }

    /// Lets it go, delivering `sig` if given.
    pub fn detach(self, sig: Option<Signal>) -> Result<()> {
        ptrace::detach(self.pid, sig).map_err(os("PTRACE_DETACH", self.pid))
    }

    /// Kills it and reaps the trace of it.
    pub fn kill(self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
        let _ = ptrace::cont(self.pid, None);
        let _ = waitpid(self.pid, Some(WaitPidFlag::__WALL));
    }
}

/// Reads and writes a process's memory through `/proc/PID/mem`, which needs no page pinning
/// (process_vm_readv pins pages and, on pages shared copy-on-write with another process, forces
/// a copy in the target: 4.7× slower here) and can write read-only mappings (FOLL_FORCE), as
/// the restorer needs.
#[derive(Debug)]
pub struct Mem {
    pid: i32,
    file: File,
}

impl Mem {
    /// Opens the memory of `pid`.
    pub fn open(pid: i32) -> Result<Mem> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| Error::Mem {
                pid,
                addr: 0,
                source,
            })?;
        Ok(Mem { pid, file })
    }

    /// Reads exactly `buf.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, addr)
            .map_err(|source| Error::Mem {
                pid: self.pid,
                addr,
                source,
            })
    }

    /// Reads what can be read at `addr`, up to `buf.len()`; returns the count.
    pub fn read_some(&self, addr: u64, buf: &mut [u8]) -> Result<usize> {
        self.file.read_at(buf, addr).map_err(|source| Error::Mem {
            pid: self.pid,
            addr,
            source,
        })
    }

    /// Writes all of `buf` at `addr`.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<()> {
        self.file
            .write_all_at(buf, addr)
            .map_err(|source| Error::Mem {
                pid: self.pid,
                addr,
                source,
            })
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL).
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        let mut a = addr;
        while out.len() < max {
            // Do not cross into the next page in one read: it may be unmapped.
            let to_page_end = 4096 - (a % 4096) as usize;
            let n = chunk.len().min(to_page_end);
            let got = self.read_some(a, &mut chunk[..n])?;
            if got == 0 {
                return Err(Error::Mem {
                    pid: self.pid,
                    addr: a,
                    source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                });
            }
            if let Some(z) = chunk[..got].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..z]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..got]);
            a += got as u64;
        }
        Err(Error::Mem {
            pid: self.pid,
            addr,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "string too long"),
        })
    }
}
