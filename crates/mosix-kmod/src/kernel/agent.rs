//! The agent: a thread we start inside a deputy that makes system calls for the migrated process,
//! so that every such call runs *in the process itself* — with its credentials, capabilities,
//! rlimits, namespaces, umask, cwd and root, seccomp filters and cgroup — on its own descriptor
//! table, whatever rights the kernel checks at call time. (The service is root: a call it made on
//! a duplicate of the process's descriptor got root's answer to every such check.)
//!
//! The agent is a few instructions of our own ([`CODE`]), copied into the deputy's injection area
//! and started there with an injected `clone` (a thread of the deputy: `CLONE_VM`, `CLONE_FILES`,
//! `CLONE_FS`, `CLONE_SIGHAND`, `CLONE_THREAD`). It uses no stack and no memory of the process:
//! only a region shared with the service (a memfd the deputy itself creates, mapped in both),
//! whose first page is the [`Slot`]: a futex word, the call, its result. The service writes the
//! arguments and the call's input buffers into the region, sets the word and wakes the agent;
//! the agent makes the call and wakes the service. A round trip costs two futex wake-ups, about
//! 5 µs here (same machine, two processes, `FUTEX_WAIT`/`FUTEX_WAKE` on shared memory).
//!
//! The agent is traced by the deputy's tracer, like the deputy: a signal that stops it is the
//! process's (a `SIGPIPE` or `SIGXFSZ` its call raised, or one sent to the process that the
//! kernel gave to this thread), and a queued signal to it is how a blocking call is interrupted.
//! Credentials are per thread: a change the deputy makes later (a forwarded `setuid`) is not the
//! agent's, so whoever changes the deputy's credentials starts a new agent ([`Agent::creds_of`]
//! tells).
//!
//! The service must treat the region as written by the process: it never trusts a length or a
//! pointer read from it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use mosix_core::image::Regs;

use super::inject::{Area, Held};
use super::ptrace::{Error, Mem, Result, Running, Sig, Stop, Stopped};

// The agent's code. Entered at `mosix_agent_begin` in the deputy's main thread with `rax` =
// `SYS_clone` and the clone's arguments in place: the parent traps back to the tracer at
// `mosix_agent_trap`; the child (`rax` = 0) serves the slot at `r12` forever, or until asked to
// exit. No stack, no memory of the process. State word: 0 idle, 1 a call is waiting, 2 done,
// 3 exit.
std::arch::global_asm!(
    ".pushsection .text.mosix_agent,\"ax\",@progbits",
    ".globl mosix_agent_begin",
    ".globl mosix_agent_trap",
    ".globl mosix_agent_end",
    ".p2align 4",
    "mosix_agent_begin:",
    "syscall",
    "test rax, rax",
    "jz 2f",
    "int3",
    "mosix_agent_trap:",
    "2:",
    "mov eax, dword ptr [r12]",
    "cmp eax, 1",
    "je 3f",
    "cmp eax, 3",
    "je 4f",
    // futex(&slot.state, FUTEX_WAIT, state, NULL): shared, not private (the service waits too).
    "mov edx, eax",
    "mov rdi, r12",
    "xor esi, esi",
    "xor r10d, r10d",
    "mov eax, 202",
    "syscall",
    "jmp 2b",
    "3:",
    "mov rax, qword ptr [r12 + 8]",
    "mov rdi, qword ptr [r12 + 16]",
    "mov rsi, qword ptr [r12 + 24]",
    "mov rdx, qword ptr [r12 + 32]",
    "mov r10, qword ptr [r12 + 40]",
    "mov r8, qword ptr [r12 + 48]",
    "mov r9, qword ptr [r12 + 56]",
    "syscall",
    "mov qword ptr [r12 + 64], rax",
    "mov dword ptr [r12], 2",
    // futex(&slot.state, FUTEX_WAKE, 1)
    "mov rdi, r12",
    "mov esi, 1",
    "mov edx, 1",
    "mov eax, 202",
    "syscall",
    "jmp 2b",
    "4:",
    // exit(0): this thread only.
    "xor edi, edi",
    "mov eax, 60",
    "syscall",
    "ud2",
    "mosix_agent_end:",
    ".popsection",
);

unsafe extern "C" {
    static mosix_agent_begin: u8;
    static mosix_agent_trap: u8;
    static mosix_agent_end: u8;
}

/// The agent's code, as our own text holds it (position-independent: relative jumps only).
fn code() -> &'static [u8] {
    let begin = &raw const mosix_agent_begin as usize;
    let end = &raw const mosix_agent_end as usize;
    // SAFETY: both symbols are labels of the `global_asm!` block above, in one section of our
    // own text, `end` after `begin`; the bytes between are our code, mapped and never written.
    unsafe { std::slice::from_raw_parts(begin as *const u8, end - begin) }
}

/// Where the parent's trap lands, from the start of the code.
fn trap_offset() -> u64 {
    (&raw const mosix_agent_trap as usize - &raw const mosix_agent_begin as usize) as u64
}

/// Where the code goes in the injection area: in its code page, after the injection site.
const CODE_OFFSET: u64 = 256;

/// The slot at the start of the shared region (layout fixed by the code above).
#[repr(C)]
struct Slot {
    /// 0 idle, 1 a call is waiting, 2 done, 3 exit. The futex word.
    state: AtomicU32,
    _pad: u32,
    nr: u64,
    args: [u64; 6],
    ret: i64,
}

const IDLE: u32 = 0;
const CALL: u32 = 1;
const DONE: u32 = 2;
const EXIT: u32 = 3;

/// The slot's page; the rest of the region holds the calls' buffers.
const SLOT_PAGE: u64 = 4096;
/// The buffers: room for the largest call (two buffers of `syscalls::MAX_IO` and small ones).
pub const DATA_LEN: u64 = 2 * mosix_core::syscalls::MAX_IO as u64 + (64 << 10);
const REGION_LEN: u64 = SLOT_PAGE + DATA_LEN;

/// How long the service waits for the agent between two checks that it still lives.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The agent of one deputy, as the service sees it. Shared between the deputy's tracer (which
/// starts, traces and stops it) and its executors (which make calls through it).
#[derive(Debug)]
pub struct Agent {
    /// The deputy.
    pid: i32,
    /// The agent thread.
    tid: i32,
    /// Our mapping of the region.
    local: *mut u8,
    /// The region in the deputy.
    remote: u64,
    /// Cleared when the agent is gone (the tracer saw it end, or the deputy died).
    alive: AtomicBool,
    /// One call at a time.
    busy: Mutex<()>,
}

// SAFETY: `local` is a MAP_SHARED mapping owned by the Agent for its whole life (unmapped in
// Drop); every access goes through atomics (the state word) or byte copies under `busy`, so the
// value may move between and be shared by threads.
unsafe impl Send for Agent {}
// SAFETY: as above: shared access is to the atomic state word and to byte copies serialised by
// `busy`.
unsafe impl Sync for Agent {}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: `local` is the start of our REGION_LEN-byte mapping, unmapped once, here.
        unsafe {
            libc::munmap(self.local.cast(), REGION_LEN as usize);
        }
    }
}

fn futex(word: &AtomicU32, op: i32, val: u32, timeout: Option<Duration>) -> i64 {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: futex(2) on a word of a shared mapping we keep mapped; the timeout, if any, is a
    // valid local; the other arguments are unused by WAIT and WAKE.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            tsp,
            std::ptr::null::<u32>(),
            0,
        )
    }
}

impl Agent {
    /// Starts an agent in the stopped deputy `t`, whose injection area is `area` and whose
    /// registers at the stop are `base`. The deputy's signals are blocked for the `clone`, so the
    /// new thread starts with all of them blocked; the caller must [`Agent::trace`] it from this
    /// same thread, which unblocks them.
    pub fn spawn(t: &mut Held, area: &Area, base: &Regs, mem: &Mem) -> Result<Agent> {
        let pid = t.pid();
        let site = area.site();
        let inj = |t: &mut Held, nr: i64, args: [u64; 6]| -> Result<i64> {
            let r = super::inject::syscall(t, site, base, nr, args)?;
            if r < 0 {
                return Err(Error::Unexpected {
                    pid,
                    what: format!(
                        "starting its agent: {} failed: {}",
                        mosix_core::syscalls::name(nr as u64),
                        std::io::Error::from_raw_os_error(-r as i32)
                    ),
                });
            }
            Ok(r)
        };
        // The region: a memfd the deputy makes (so its memory is the process's own), which we
        // take with pidfd_getfd and map too.
        let name = area.scratch();
        mem.write(name, b"mosix-agent\0")?;
        let dfd = inj(
            t,
            libc::SYS_memfd_create,
            [name, libc::MFD_CLOEXEC as u64, 0, 0, 0, 0],
        )?;
        let ours = super::seccomp::take_fd(pid, dfd as i32).map_err(|source| Error::Mem {
            pid,
            addr: 0,
            source,
        });
        let sized = ours.and_then(|f| {
            // SAFETY: ftruncate(2) on a descriptor we own.
            if unsafe { libc::ftruncate(f.as_raw_fd(), REGION_LEN as libc::off_t) } < 0 {
                return Err(Error::Mem {
                    pid,
                    addr: 0,
                    source: std::io::Error::last_os_error(),
                });
            }
            Ok(f)
        });
        let remote = match &sized {
            Ok(_) => inj(
                t,
                libc::SYS_mmap,
                [
                    0,
                    REGION_LEN,
                    (libc::PROT_READ | libc::PROT_WRITE) as u64,
                    libc::MAP_SHARED as u64,
                    dfd as u64,
                    0,
                ],
            ),
            Err(_) => Ok(0),
        };
        // The deputy's descriptor goes whatever happened: the mapping keeps the memory.
        let closed = inj(t, libc::SYS_close, [dfd as u64, 0, 0, 0, 0, 0]);
        let fd: OwnedFd = sized?;
        let remote = remote? as u64;
        closed?;
        // SAFETY: a fresh MAP_SHARED mapping of a memfd we own, of its whole size; nothing else
        // in this process refers to the range.
        let local = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION_LEN as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if local == libc::MAP_FAILED {
            return Err(Error::Mem {
                pid,
                addr: 0,
                source: std::io::Error::last_os_error(),
            });
        }
        let mut agent = Agent {
            pid,
            tid: 0,
            local: local.cast(),
            remote,
            alive: AtomicBool::new(false),
            busy: Mutex::new(()),
        };
        agent.slot().state.store(IDLE, Ordering::Relaxed);
        // The code, then the clone from it with every signal of the deputy blocked.
        let entry = area.start + CODE_OFFSET;
        mem.write(entry, code())?;
        let mask = t.get()?.sigmask()?;
        super::inject::block_signals(t.get()?)?;
        let flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let mut regs = base.for_syscall(
            entry,
            libc::SYS_clone as u64,
            // The stack (never used: the code pushes nothing, and every signal to the agent is
            // suppressed by its tracer) is the top of the slot page.
            [flags, remote + SLOT_PAGE, 0, 0, 0, 0],
        );
        regs.0[R12] = remote;
        let tid = super::inject::run_to_trap(t, &regs, entry + trap_offset())?;
        t.get()?.set_sigmask(mask)?;
        if tid <= 0 {
            return Err(Error::Unexpected {
                pid,
                what: format!(
                    "starting its agent: clone failed: {}",
                    std::io::Error::from_raw_os_error(-tid as i32)
                ),
            });
        }
        agent.tid = tid as i32;
        agent.alive.store(true, Ordering::Release);
        Ok(agent)
    }

    /// Seizes the agent thread from the calling thread (the deputy's tracer). Its signals stay
    /// blocked, as it was started, until [`Agent::unblock`].
    pub fn trace(&self) -> Result<Running> {
        super::ptrace::seize(self.tid, nix::sys::ptrace::Options::empty())
    }

    /// Lets the traced agent take signals: from now on a signal stops it, for the tracer to see
    /// (and forward to the process: it is the process's).
    pub fn unblock(running: Running) -> Result<Running> {
        let t = running.interrupt(|_, _| {})?;
        t.set_sigmask(0)?;
        t.cont(None)
    }

    /// Asks the agent to end and waits, as its tracer, until it has; a signal that stops it on
    /// the way is handed to `on_signal` and suppressed. The agent must be idle (no call under
    /// way, none to come).
    ///
    /// The agent may be in the process's job-control stop (left there with `PTRACE_LISTEN`,
    /// the process stopped by Ctrl-Z): it would not see the request before a `SIGCONT`. So it
    /// is interrupted too; a tracer may resume one thread of a stopped process, which then
    /// ends while the rest of the process stays stopped. Interrupted in its wait for work, the
    /// agent restarts the wait, which returns at once (the request changed the word it waits
    /// on).
    pub fn end(&self, mut running: Running, mut on_signal: impl FnMut(Sig, &Stopped)) {
        self.ask_exit();
        // Fails only if the agent is already gone, which the wait below sees.
        let _ = running.request_interrupt();
        while let Ok(s) = running.wait() {
            if let Stop::Signal(sig) = s.stop {
                on_signal(sig, &s);
            }
            match s.cont(None) {
                Ok(r) => running = r,
                Err(_) => break,
            }
        }
        self.mark_dead();
    }

    /// Unmaps the shared region from the deputy, stopped in `t` (after the agent ended).
    pub fn unmap(&self, t: &mut Held, site: u64, base: &Regs) -> Result<()> {
        super::inject::syscall(
            t,
            site,
            base,
            libc::SYS_munmap,
            [self.remote, REGION_LEN, 0, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// The agent thread.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The deputy.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn slot(&self) -> &Slot {
        // SAFETY: the region starts with a page we own for the Agent's life; `Slot` is a
        // repr(C) struct of atomics and plain integers (any bit pattern is valid), smaller than
        // the page and aligned (the mapping is page-aligned).
        unsafe { &*(self.local as *const Slot) }
    }

    /// Where the buffers are in the deputy, and how much room there is.
    pub fn data(&self) -> (u64, u64) {
        (self.remote + SLOT_PAGE, DATA_LEN)
    }

    /// Copies `bytes` to the deputy's address `at` (inside [`Agent::data`]).
    pub fn put(&self, at: u64, bytes: &[u8]) -> bool {
        let Some(off) = self.offset(at, bytes.len()) else {
            return false;
        };
        // SAFETY: `off..off+len` lies inside our mapping (checked by `offset`); the process may
        // write the same bytes concurrently, which only changes what its own call sees.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.local.add(off), bytes.len());
        }
        true
    }

    /// Copies `len` bytes from the deputy's address `at` (inside [`Agent::data`]).
    pub fn get(&self, at: u64, len: usize) -> Option<Vec<u8>> {
        let off = self.offset(at, len)?;
        let mut v = vec![0u8; len];
        // SAFETY: `off..off+len` lies inside our mapping; the bytes are plain data, read as
        // they are even if the process changes them meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(self.local.add(off), v.as_mut_ptr(), len);
        }
        Some(v)
    }

    fn offset(&self, at: u64, len: usize) -> Option<usize> {
        let (base, room) = self.data();
        let off = at.checked_sub(base)?;
        (off.checked_add(len as u64)? <= room).then_some((SLOT_PAGE + off) as usize)
    }

    /// Whether the agent still runs.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Notes that the agent is gone: a call waiting for it gives up.
    pub fn mark_dead(&self) {
        self.alive.store(false, Ordering::Release);
        futex(&self.slot().state, libc::FUTEX_WAKE, u32::MAX >> 1, None);
    }

    /// Makes system call `nr(args)` in the agent and waits for its raw result (`-errno` on
    /// failure); `None` if the agent is gone. Pointer arguments must point into
    /// [`Agent::data`], as the deputy sees it.
    pub fn call(&self, nr: u64, args: [u64; 6]) -> Option<i64> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let slot = self.slot();
        let p = self.local as *mut Slot;
        // SAFETY: plain stores into the slot we own; the agent reads them only after it sees
        // CALL, which the Release store below orders after them.
        unsafe {
            std::ptr::addr_of_mut!((*p).nr).write_volatile(nr);
            std::ptr::addr_of_mut!((*p).args).write_volatile(args);
        }
        slot.state.store(CALL, Ordering::Release);
        futex(&slot.state, libc::FUTEX_WAKE, 1, None);
        loop {
            let s = slot.state.load(Ordering::Acquire);
            if s == DONE {
                break;
            }
            if !self.alive() {
                return None;
            }
            futex(&slot.state, libc::FUTEX_WAIT, s, Some(CHECK_EVERY));
        }
        // SAFETY: the agent stored the result before DONE (Acquire above); a plain load.
        let ret = unsafe { std::ptr::addr_of!((*p).ret).read_volatile() };
        slot.state.store(IDLE, Ordering::Release);
        Some(ret)
    }

    /// Asks the agent to end (the thread exits; the tracer sees it go). A call under way is not
    /// waited for: ask only when none can be.
    pub fn ask_exit(&self) {
        let slot = self.slot();
        slot.state.store(EXIT, Ordering::Release);
        futex(&slot.state, libc::FUTEX_WAKE, 1, None);
    }

    /// The credentials of a thread of the deputy, as `/proc` shows them (ids, groups,
    /// capability sets, no_new_privs, seccomp mode): what must be the same in the deputy and
    /// its agent for a call to run with the process's rights.
    pub fn creds_of(pid: i32, tid: i32) -> Option<String> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
        let keep = [
            "Uid:",
            "Gid:",
            "Groups:",
            "CapInh:",
            "CapPrm:",
            "CapEff:",
            "CapBnd:",
            "CapAmb:",
            "NoNewPrivs:",
            "Seccomp:",
        ];
        Some(
            s.lines()
                .filter(|l| keep.iter().any(|k| l.starts_with(k)))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// Whether the agent's credentials are still the deputy's.
    pub fn creds_match(&self) -> bool {
        match (
            Self::creds_of(self.pid, self.pid),
            Self::creds_of(self.pid, self.tid),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// The index of `r12` in the register file (`user_regs_struct` order).
const R12: usize = 3;
