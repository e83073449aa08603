//! The deputy's state, shared by its rooms: the [`Deputy`] itself, what the executor asks the
//! tracer ([`Req`]), job control ([`Job`]), where signals go ([`Outbox`]), a direct move under
//! way ([`Relay`]), and how the tracer ends ([`TracerEnd`]).

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::{ImageHeader, Regs};
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;

use crate::kernel::agent::Agent;
use crate::kernel::inject::Area;
use crate::kernel::ptrace::{Mem, Running, Sig};
use crate::link::channel::{Receiver, Sender};
use crate::split::forward::Plan;
use crate::split::handle::{ComeHomeHandle, MoveDone};

/// A result and its output buffers.
pub(super) type Outcome = (i64, Vec<(u8, Vec<u8>)>);

/// What the executor asks the tracer.
pub(super) enum Req {
    /// Run this call inside the deputy.
    Call(Box<Plan>, mpsc::Sender<Outcome>),
    /// The process exited with this status.
    Exit(i32),
    /// The process was killed by this signal.
    Died(i32),
    /// The process comes home: its image, the connection to read its pages from, and whether
    /// the image is the first of a live move ([`ProcMsg::Precopy`]: rounds of pages and the
    /// final image follow).
    Image(Box<ImageHeader>, Receiver, bool),
    /// The connection to the remote broke.
    Lost(String),
    /// The process stopped (job control): the signal, and the `SIGCONT`s it had seen.
    Stopped(i32, u32),
    /// The process runs at the destination of the direct move; the signals it could not take
    /// on the node it left. The connection to that node ends.
    Moved(Vec<i32>),
    /// The direct move failed; the process goes on where it is.
    MoveFailed(MoveFailure),
}

/// The deputy's part in job control (see [`Deputy::job_stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// Not stopped.
    Running,
    /// The stop signal has been sent to the deputy, with its default action.
    Stopping(Sig),
    /// Stopped for its parent; `SIGCONT` wakes it.
    Stopped(Sig),
}

/// The connection to the remote, and where the signals that hit the deputy go: to the
/// remote, or held while a direct move is under way (they then go to wherever the process
/// ends up).
pub(super) struct Outbox {
    pub(super) tx: Sender,
    /// `SIGCONT`s forwarded to the remote (a stop it reports before it saw the latest one is
    /// stale).
    pub(super) conts: u32,
    /// Signals held during a direct move.
    pub(super) held: Option<Vec<Sig>>,
}

impl Outbox {
    pub(super) fn forward(&mut self, sig: Sig) {
        if let Some(h) = &mut self.held {
            h.push(sig);
            return;
        }
        if sig.raw() == libc::SIGCONT {
            self.conts = self.conts.wrapping_add(1);
        }
        let _ = self.tx.send(&ProcMsg::Signal { sig: sig.raw() });
    }

    /// Forwards a stop signal of a process whose group at home is orphaned
    /// ([`ProcMsg::OrphanedStop`]).
    pub(super) fn forward_orphaned_stop(&mut self, sig: Sig) {
        if let Some(h) = &mut self.held {
            h.push(sig);
            return;
        }
        let _ = self.tx.send(&ProcMsg::OrphanedStop { sig: sig.raw() });
    }

    /// Stops holding signals and forwards those held, after `first`.
    pub(super) fn release(&mut self, first: impl IntoIterator<Item = Sig>) {
        let held = self.held.take().unwrap_or_default();
        for s in first.into_iter().chain(held) {
            self.forward(s);
        }
    }
}

/// The current agent of a deputy.
pub(super) type AgentSlot = Arc<RwLock<Arc<Agent>>>;

/// The agent in `slot` now.
pub(super) fn current(slot: &AgentSlot) -> Arc<Agent> {
    Arc::clone(&slot.read().unwrap_or_else(|p| p.into_inner()))
}

/// A deputy: the stopped original process, sleeping in pause() run from our area.
pub(super) struct Deputy {
    pub(super) pid: i32,
    /// This node (the process's home).
    pub(super) me: NodeId,
    /// The node the process runs on.
    pub(super) at: NodeId,
    pub(super) running: Option<Running>,
    pub(super) area: Area,
    pub(super) pause: Regs,
    pub(super) mem: Mem,
    pub(super) out: Outbox,
    /// The agent that makes forwarded calls inside the deputy (replaced when the deputy's
    /// credentials change), shared with the executors.
    pub(super) agent: AgentSlot,
    /// The agent thread, traced by this tracer.
    pub(super) agent_run: Option<Running>,
    /// An executor waits for a forwarded call in the agent.
    pub(super) in_call: Arc<AtomicBool>,
    /// Until when a forwarded call blocked at home is to be interrupted (see [`Deputy::kick`]).
    pub(super) kick_until: Option<Instant>,
    /// Requests to come home.
    pub(super) home_req: ComeHomeHandle,
    /// Home has asked the process back: calls are no longer run here.
    pub(super) homing: bool,
    /// Job control.
    pub(super) job: Job,
    /// A direct move under way.
    pub(super) relay: Option<Relay>,
    /// For the executors this tracer starts (one per connection to a remote).
    pub(super) reqs: Option<mpsc::Sender<Req>>,
}

pub(super) enum TracerEnd {
    /// The process runs at home again.
    Home,
    /// The process is gone.
    Gone,
}

/// How long home waits for the destination of a direct move to rejoin after losing the node
/// the process left (the destination may hold the whole image by then).
pub(super) const REJOIN_GRACE: Duration = Duration::from_secs(10);

/// A direct move under way (see [`Deputy::start_relay`]).
pub(super) struct Relay {
    pub(super) node: NodeId,
    /// The process (its pid at home).
    pub(super) pid: i32,
    pub(super) token: u64,
    pub(super) done: Option<MoveDone>,
    /// The destination's connection, once it rejoined: sender, receiver, its pid there.
    pub(super) pending: Option<(Sender, Receiver, u32)>,
    /// When the connection to the node the process leaves broke.
    pub(super) source_lost: Option<Instant>,
}

impl Relay {
    pub(super) fn finish(&mut self, r: Result<NodeId, MoveFailure>) {
        if let Some(done) = self.done.take() {
            done(r);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some((tx, _, _)) = self.pending.take() {
            // The copy at the destination never became the process: it is ended there.
            tx.shutdown();
        }
        let pid = self.pid.unsigned_abs();
        self.finish(Err(MoveFailure::Gone {
            pid,
            detail: format!(
                "the move to node {} was abandoned: the process ended or was lost",
                self.node
            ),
        }));
    }
}
