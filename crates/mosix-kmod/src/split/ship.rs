//! Shipping a frozen process to another node: the one way every move out of a node goes, from
//! home (the deputy sending its process away) or from a remote (a direct move on).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;

use crate::freezer::freeze::Frozen;
use crate::link::channel::{self, Receiver, Sender};
use crate::link::{self, LinkContext};
use crate::split::failure;

/// A process that runs at its destination.
#[derive(Debug)]
pub struct Shipped {
    /// Its pid there.
    pub pid: u32,
    /// The connection it came on (home keeps it: it carries the process's calls from now on).
    pub tx: Sender,
    /// Its reading half.
    pub rx: Receiver,
    /// How long the image took to send.
    pub sending: Duration,
    /// How long the destination then took to start it.
    pub starting: Duration,
    /// Bytes of memory sent (after a live move's rounds: those sent while it was stopped).
    pub bytes: u64,
}

/// How far a move out of home has come: the bytes of memory it has sent so far and the size of
/// the image (a live move sends more than that: its rounds send again what the process wrote).
/// Kept with the process ([`crate::split::procs::Home::sending`]) while it moves; the sending
/// connection adds to it once per page run, so reading it costs the move nothing.
#[derive(Debug, Clone)]
pub struct Progress {
    to: NodeId,
    live: bool,
    sent: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
}

impl Progress {
    /// Nothing sent yet of a move to `to`.
    pub fn new(to: NodeId, live: bool) -> Progress {
        Progress {
            to,
            live,
            sent: Arc::default(),
            total: Arc::default(),
        }
    }

    /// Counts what `tx` sends of an image of `total` bytes.
    pub fn follow(&self, tx: &Sender, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        tx.count_runs_into(Arc::clone(&self.sent));
    }

    /// As the tools show it.
    pub fn report(&self) -> mosix_core::procs::MoveProgress {
        mosix_core::procs::MoveProgress {
            to: self.to.get(),
            live: self.live,
            sent: self.sent.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
        }
    }
}

/// One move's progress is equal only to itself.
impl PartialEq for Progress {
    fn eq(&self, other: &Progress) -> bool {
        Arc::ptr_eq(&self.sent, &other.sent)
    }
}

impl Eq for Progress {}

/// How long the destination may take, once the image is sent, to say whether it runs the
/// process, when the caller names no other bound (it has every page by then; what is left is
/// finishing the restore).
pub const START_ANSWER: Duration = Duration::from_secs(30);

/// Opens a process connection to `to`, sends the image and its pages, and waits (at most
/// `answer_within`, or [`START_ANSWER`]) for the destination to say it runs the process. A
/// refusal keeps the destination's reason; anything that breaks on the way, or no answer in
/// time, is a lost link to `to`. What is sent is counted into `progress`, if given.
pub fn ship(
    frozen: &Frozen,
    to: NodeId,
    ctx: &LinkContext,
    answer_within: Option<Duration>,
    progress: Option<&Progress>,
) -> Result<Shipped, MoveFailure> {
    let stream = link::connect_process(to, ctx).map_err(|e| failure::link_lost(to, e))?;
    let (tx, mut rx) = channel::split(stream).map_err(|e| failure::link_lost(to, e))?;
    if let Some(p) = progress {
        p.follow(&tx, frozen.header.total_bytes);
    }
    let started = Instant::now();
    frozen
        .send(&tx)
        .map_err(|e| failure::link_lost(to, format!("the transfer broke off ({e})")))?;
    let sent = Instant::now();
    let pid = await_start(&mut rx, to, answer_within.unwrap_or(START_ANSWER))?;
    Ok(Shipped {
        pid,
        tx,
        rx,
        sending: sent - started,
        starting: sent.elapsed(),
        bytes: frozen.header.total_bytes,
    })
}

/// Waits at most `within` for node `to`, which has the whole image, to say it runs the
/// process: its pid there. A refusal keeps the destination's reason; anything else, or no
/// answer in time, is a lost link to `to`.
pub fn await_start(rx: &mut Receiver, to: NodeId, within: Duration) -> Result<u32, MoveFailure> {
    let _ = rx.socket().set_read_timeout(Some(within));
    let answer = rx.recv();
    let _ = rx.socket().set_read_timeout(None);
    match answer {
        Ok(ProcMsg::Started { pid }) => Ok(pid),
        Ok(ProcMsg::Refused { failure }) => Err(failure),
        Ok(other) => Err(failure::link_lost(to, format!("it answered {other:?}"))),
        Err(e) => Err(failure::link_lost(to, format!("no answer ({e})"))),
    }
}
