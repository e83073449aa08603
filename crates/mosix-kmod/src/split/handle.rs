//! What others ask of a deputy while its process is away, and how they reach its tracer: come
//! home ([`ComeHomeHandle::ask`]), move on to another node ([`MoveAsk`]), and the connection of
//! a direct move's destination ([`RejoinOffer`]). The registry ([`crate::split::procs`]) keeps
//! one handle per deputy; the deputy's tracer takes the requests between two things it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mosix_core::NodeId;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;
use tracing::debug;

use crate::kernel::ptrace::{Sig, Stopped};

/// How a move ends, for whoever asked for it.
pub type MoveDone = Box<dyn FnOnce(Result<NodeId, MoveFailure>) + Send>;

/// A direct move asked of a deputy: `migrate PID NODE` of a process that is away.
pub struct MoveAsk {
    /// The destination.
    pub node: NodeId,
    /// Sent while it runs whatever its size (`migrate --live`).
    pub live: bool,
    /// Called with where it went, or why not.
    pub done: MoveDone,
}

impl std::fmt::Debug for MoveAsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MoveAsk({})", self.node)
    }
}

/// The connection the destination of a direct move opened to home, handed to the deputy.
#[derive(Debug)]
pub struct RejoinOffer {
    /// The node that connected.
    pub from: NodeId,
    /// The token it shows.
    pub token: u64,
    /// The process's pid there.
    pub local_pid: u32,
    /// The connection.
    pub stream: crate::link::Conn,
}

impl RejoinOffer {
    /// Turns the offer down: home, node `me`, says why.
    pub fn refuse(mut self, me: NodeId, reason: String) {
        debug!("refusing a rejoin from node {}: {reason}", self.from);
        let failure = crate::split::failure::refused(me, reason);
        let _ = self.stream.send(&ProcMsg::Refused { failure });
    }
}

/// How the control socket asks a deputy's tracer to bring its process home.
///
/// The tracer looks at the request between two things it does; but while it runs a forwarded
/// call inside the deputy (a `wait4` for a child, an `open` of a FIFO) it is blocked in
/// `waitpid` for as long as the call blocks. So [`ComeHomeHandle::ask`] also *nudges* the
/// deputy then: a queued signal that stops the deputy, which wakes the tracer; the tracer
/// recognises the nudge by its sender and a cookie, never forwards it, and ends the call with
/// `-ERESTARTSYS` (it runs again at home after the move). The request and the "in a call" flag
/// are both sequentially consistent, so one of the two sides always sees the other.
#[derive(Debug, Clone)]
pub struct ComeHomeHandle(Arc<HomeRequest>);

#[derive(Debug)]
struct HomeRequest {
    /// This node (the process's home), which refuses a move replaced by another.
    home: NodeId,
    wanted: AtomicBool,
    /// The move home was asked live.
    live: AtomicBool,
    in_deputy_call: AtomicBool,
    nudge: Nudge,
    /// A direct move asked for.
    move_to: std::sync::Mutex<Option<MoveAsk>>,
    /// Connections from destinations of direct moves.
    offers: std::sync::Mutex<Vec<RejoinOffer>>,
}

impl ComeHomeHandle {
    /// A handle for the deputy of process `pid` at node `home`.
    pub fn new(pid: i32, home: NodeId) -> Self {
        Self(Arc::new(HomeRequest {
            home,
            wanted: AtomicBool::new(false),
            live: AtomicBool::new(false),
            in_deputy_call: AtomicBool::new(false),
            nudge: Nudge::new(pid),
            move_to: std::sync::Mutex::new(None),
            offers: std::sync::Mutex::new(Vec::new()),
        }))
    }
    /// Asks for a direct move to another node.
    pub fn ask_move(&self, ask: MoveAsk) {
        let old = self
            .0
            .move_to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(ask);
        if let Some(old) = old {
            (old.done)(Err(crate::split::failure::refused(
                self.0.home,
                "another move was asked meanwhile",
            )));
        }
        if self.0.in_deputy_call.load(Ordering::SeqCst) {
            self.0.nudge.send();
        }
    }
    pub(crate) fn take_move(&self) -> Option<MoveAsk> {
        self.0
            .move_to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
    /// Hands the deputy a destination's connection.
    pub fn offer(&self, o: RejoinOffer) {
        self.0
            .offers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(o);
    }
    pub(crate) fn take_offers(&self) -> Vec<RejoinOffer> {
        std::mem::take(&mut *self.0.offers.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Asks for the process.
    pub fn ask(&self, live: bool) {
        if live {
            self.0.live.store(true, Ordering::SeqCst);
        }
        self.0.wanted.store(true, Ordering::SeqCst);
        if self.0.in_deputy_call.load(Ordering::SeqCst) {
            self.0.nudge.send();
        }
    }
    /// Takes the request, if any: whether it was asked, and live.
    pub fn take(&self) -> Option<bool> {
        self.0
            .wanted
            .swap(false, Ordering::SeqCst)
            .then(|| self.0.live.swap(false, Ordering::SeqCst))
    }
    pub(crate) fn set_in_deputy_call(&self, v: bool) {
        self.0.in_deputy_call.store(v, Ordering::SeqCst);
    }
    pub(crate) fn nudge(&self) -> &Nudge {
        &self.0.nudge
    }
}

/// A signal queued to a deputy only to wake its tracer (see [`ComeHomeHandle`]).
#[derive(Debug)]
pub(crate) struct Nudge {
    pid: i32,
    cookie: u64,
}

impl Nudge {
    pub(crate) fn new(pid: i32) -> Nudge {
        Nudge {
            pid,
            cookie: getrandom::u64().unwrap_or(0x6d6f_7369_785f_6e75),
        }
    }

    fn signal() -> i32 {
        libc::SIGRTMAX()
    }

    /// Queues the nudge to the deputy's main thread (not to the process: the kernel could give a
    /// process-directed signal to its agent instead).
    pub(crate) fn send(&self) {
        self.send_to(self.pid);
    }

    /// Queues the nudge to thread `tid` of the deputy (its main thread, or its agent).
    pub(crate) fn send_to(&self, tid: i32) {
        // The siginfo of a queued signal, x86_64 layout: si_signo at 0, si_errno at 4, si_code
        // at 8, then (the `_rt` member of the union) si_pid at 16, si_uid at 20, si_value at
        // 24. The kernel passes it on as it is (a negative si_code is allowed from anyone who
        // may signal the thread), which is how the tracer recognises the nudge.
        let mut info = [0u8; std::mem::size_of::<libc::siginfo_t>()];
        info[0..4].copy_from_slice(&Self::signal().to_ne_bytes());
        info[8..12].copy_from_slice(&libc::SI_QUEUE.to_ne_bytes());
        info[16..20].copy_from_slice(&(std::process::id() as i32).to_ne_bytes());
        info[20..24].copy_from_slice(&nix::unistd::getuid().as_raw().to_ne_bytes());
        info[24..32].copy_from_slice(&self.cookie.to_ne_bytes());
        // SAFETY: rt_tgsigqueueinfo(2) reads one siginfo_t from `info`, a local buffer of
        // exactly that size; it touches no other memory.
        unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                self.pid,
                tid,
                Self::signal(),
                info.as_ptr(),
            );
        }
    }

    /// Whether a signal stop of the deputy is this nudge.
    pub(crate) fn is(&self, sig: Sig, st: &Stopped) -> bool {
        if sig.raw() != Self::signal() {
            return false;
        }
        let Ok(info) = st.siginfo() else { return false };
        // SAFETY: for a queued signal (si_code SI_QUEUE) the kernel fills the sender's pid and
        // the value, which is what these accessors read.
        let (from, value) = unsafe { (info.si_pid(), info.si_value().sival_ptr as usize as u64) };
        info.si_code == libc::SI_QUEUE
            && u32::try_from(from).is_ok_and(|p| p == std::process::id())
            && value == self.cookie
    }
}
