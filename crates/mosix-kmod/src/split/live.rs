//! Live moves: the memory of a process is sent while it goes on running (pre-copy), so the
//! time it is stopped no longer grows with its size.
//!
//! 1. [`Precopy::start`]: the process is frozen for a moment — its first image (areas,
//!    [`ProcMsg::Precopy`]) is taken, and it makes a userfaultfd that tracks its writes
//!    ([`crate::kernel::dirty`]) — then it runs on. Its present pages go to the destination,
//!    which prepares a stub from the first image and fills it. Then rounds
//!    ([`ProcMsg::Round`]): the pages written since the last round, as long as each round is
//!    smaller than the last and above [`FINAL_BELOW`].
//! 2. The caller freezes the process as for any move (the final image) and starts its agent.
//! 3. [`Precopy::finish`]: the final [`ProcMsg::Image`] and only what the destination does not
//!    have: pages written since the last round in areas it kept
//!    ([`mosix_core::image::kept_areas`]), pages sent before that hold no data any more
//!    (discarded: they read as zeroes), and every page of areas that are new, changed, or not
//!    tracked (writable file mappings), and of the part a kept area grew by in place (a
//!    `mremap`; one that shrank, a heap trimmed by `brk`, keeps the rest). Then `End`, and the
//!    destination's `Started`.
//!
//! The failure rules are those of every move: until `Started` the process is whole at the
//! source (running during the rounds, frozen after), and a cut anywhere leaves it there (the
//! destination kills its stub when the connection breaks).

use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::{ImageHeader, Vma, VmaKind, kept_areas};
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;
use tracing::{debug, warn};

use crate::freezer::freeze::{self, FreezeOptions, Frozen, Run, send_pages, send_pages_of};
use crate::freezer::pages::{self, PagesError};
use crate::freezer::restore::Restorer;
use crate::kernel::dirty::{self, Tracker};
use crate::kernel::ptrace::{Mem, Sig, Stopped};
use crate::link::channel::{self, Receiver, Sender};
use crate::link::{self, LinkContext};
use crate::split::failure;
use crate::split::ship::{START_ANSWER, Shipped, await_start};

/// Below this many bytes written in a round, the process is stopped for the final one (about
/// 4 ms on a 1 GB/s link).
pub const FINAL_BELOW: u64 = 4 << 20;
/// At most this many rounds after the first.
pub const MAX_ROUNDS: u32 = 30;
/// Rounds stop after this long in all (a process that writes faster than the link carries
/// does not converge; it is then stopped and the rest sent at once).
pub const MAX_PRECOPY: Duration = Duration::from_secs(120);

/// Whether a move sends the process's memory while it runs ([`crate::split::live`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Always (`migrate --live`).
    Always,
    /// When its resident memory is larger than this many bytes (`[moves] live_above_mib`).
    Above(u64),
    /// Never.
    Never,
}

impl Live {
    /// Whether process `pid` moves live.
    pub fn wanted(self, pid: i32) -> bool {
        match self {
            Live::Always => true,
            Live::Never => false,
            Live::Above(bytes) => procfs::process::Process::new(pid)
                .and_then(|p| p.statm())
                .is_ok_and(|m| m.resident * procfs::page_size() > bytes),
        }
    }
}

/// A live move under way: the process runs, the destination holds its first image and the
/// pages sent so far.
pub struct Precopy {
    pid: i32,
    to: NodeId,
    tx: Sender,
    /// Where the destination's answer comes (`None`: the caller reads it, as a process going
    /// home over its own connection does).
    rx: Option<Receiver>,
    mem: Mem,
    first: ImageHeader,
    tracker: Tracker,
    /// Per area of the first image that is tracked: which of its pages were sent (a bit
    /// each).
    sent: Vec<Option<Vec<u64>>>,
    /// Written, found by the last scan, not sent yet.
    pending: Vec<(u64, u64)>,
    /// Rounds sent after the first.
    pub rounds: u32,
    /// Bytes sent while the process ran.
    pub bytes: u64,
    started: Instant,
}

/// Whether writes to area `v` can be tracked (private anonymous memory the process may write).
fn trackable(v: &Vma) -> bool {
    v.write && matches!(v.kind, VmaKind::Anon | VmaKind::Heap | VmaKind::Stack)
}

impl Precopy {
    /// Takes the first image of the stopped process `t` (the signals `sigs` arrived while it
    /// was stopped), starts tracking its writes, lets it run, opens a process connection to
    /// `to` and sends its pages, round after round, until what it writes between two rounds is
    /// small. `Err` leaves the process running where it is. What is sent, here and in
    /// [`Precopy::finish`], is counted into `progress`, if given. `rejoin` is a direct move's
    /// token (from a remote node to another), which the final image carries too.
    pub fn start(
        t: Stopped,
        sigs: Vec<Sig>,
        opts: &FreezeOptions,
        to: NodeId,
        ctx: &LinkContext,
        progress: Option<&crate::split::ship::Progress>,
        rejoin: Option<u64>,
    ) -> Result<Precopy, MoveFailure> {
        let connect = || {
            let stream = link::connect_process(to, ctx).map_err(|e| failure::link_lost(to, e))?;
            let (tx, rx) = channel::split(stream).map_err(|e| failure::link_lost(to, e))?;
            Ok((tx, Some(rx)))
        };
        Self::begin(t, sigs, opts, to, connect, progress, rejoin, &mut false)
    }

    /// [`Precopy::start`] over a connection the process already has to `to` (a guest going
    /// home over its own connection): `tx` sends; the caller reads the answer after
    /// [`Precopy::finish_sending`]. On `Err`, `sent` says whether anything went on the
    /// connection (it then carries half a move and cannot go on).
    pub fn start_over(
        t: Stopped,
        sigs: Vec<Sig>,
        opts: &FreezeOptions,
        to: NodeId,
        tx: Sender,
        sent: &mut bool,
    ) -> Result<Precopy, MoveFailure> {
        Self::begin(t, sigs, opts, to, || Ok((tx, None)), None, None, sent)
    }

    /// The first image, the tracker, the connection (`connect`, after which `connected` is
    /// set), the rounds.
    #[allow(clippy::too_many_arguments)]
    fn begin(
        t: Stopped,
        sigs: Vec<Sig>,
        opts: &FreezeOptions,
        to: NodeId,
        connect: impl FnOnce() -> Result<(Sender, Option<Receiver>), MoveFailure>,
        progress: Option<&crate::split::ship::Progress>,
        rejoin: Option<u64>,
        connected: &mut bool,
    ) -> Result<Precopy, MoveFailure> {
        let pid = t.pid();
        let mut frozen = freeze::freeze_stopped(t, sigs, opts)
            .map_err(|e| failure::traced(pid, "freezing it", &e))?;
        // A direct move: the destination checks that the final image names the same one.
        frozen.header.rejoin = rejoin;
        let (frozen, uffd) = frozen.make_uffd();
        let Some(frozen) = frozen else {
            return Err(MoveFailure::Gone {
                pid: pid.unsigned_abs(),
                detail: "it vanished while its writes were set to be tracked".into(),
            });
        };
        let uffd = match uffd {
            Ok(u) => u,
            Err(e) => {
                let _ = frozen.thaw();
                return Err(failure::traced(pid, "making it a userfaultfd", &e));
            }
        };
        let ranges: Vec<(u64, u64)> = frozen
            .header
            .vmas
            .iter()
            .filter(|v| trackable(v))
            .map(|v| (v.start, v.end))
            .collect();
        let tracker = Tracker::start(pid, uffd, &ranges);
        let first = frozen.header.clone();
        let runs = frozen.runs.clone();
        // It runs on from here; its memory is read while it does.
        frozen
            .thaw()
            .map_err(|e| failure::traced(pid, "letting it run on", &e))?;
        let tracker = tracker.map_err(|e| {
            failure::kernel(format!(
                "this kernel cannot track a process's writes (userfaultfd write-protect, PAGEMAP_SCAN): {e}"
            ))
        })?;
        let mem = Mem::open(pid).map_err(|e| failure::traced(pid, "opening its memory", &e))?;
        let (tx, rx) = connect()?;
        *connected = true;
        if let Some(p) = progress {
            p.follow(&tx, runs.iter().map(|r| r.len).sum());
        }
        let tracked: Vec<bool> = first
            .vmas
            .iter()
            .map(|v| {
                tracker
                    .tracked()
                    .iter()
                    .any(|&(s, e)| s <= v.start && v.end <= e)
            })
            .collect();
        let sent = first
            .vmas
            .iter()
            .zip(&tracked)
            .map(|(v, t)| t.then(|| vec![0u64; (v.len() / 4096).div_ceil(64) as usize]))
            .collect();
        let mut p = Precopy {
            pid,
            to,
            tx,
            rx,
            mem,
            first,
            tracker,
            sent,
            pending: Vec::new(),
            rounds: 0,
            bytes: 0,
            started: Instant::now(),
        };
        let lost = |e: &dyn std::fmt::Display| {
            failure::link_lost(to, format!("the transfer broke off ({e})"))
        };
        p.tx.send(&ProcMsg::Precopy(Box::new(p.first.clone())))
            .map_err(|e| lost(&e))?;
        p.send_round(&runs).map_err(|e| lost(&e))?;
        let mut last = u64::MAX;
        loop {
            let written = p
                .tracker
                .written()
                .map_err(|e| failure::kernel(format!("reading what process {pid} wrote: {e}")))?;
            let bytes: u64 = written.iter().map(|(s, e)| e - s).sum();
            let enough = bytes <= FINAL_BELOW
                || bytes >= last
                || p.rounds >= MAX_ROUNDS
                || p.started.elapsed() >= MAX_PRECOPY;
            if enough {
                p.pending = written;
                break;
            }
            let runs = p.runs_of(&written);
            p.send_round(&runs).map_err(|e| lost(&e))?;
            p.rounds += 1;
            last = bytes;
        }
        debug!(
            "process {pid}: {} MiB sent to node {to} while it ran, in {} rounds after the first, {:.0} ms",
            p.bytes >> 20,
            p.rounds,
            p.started.elapsed().as_secs_f64() * 1e3
        );
        Ok(p)
    }

    /// Sends one round: `runs` of the first image's areas, read from the running process.
    fn send_round(&mut self, runs: &[Run]) -> Result<(), mosix_core::proto::FrameError> {
        let bytes: u64 = runs.iter().map(|r| r.len).sum();
        self.tx.send(&ProcMsg::Round { bytes })?;
        // The process may have unmapped an area meanwhile: its runs are left out (the final
        // image says what became of it).
        let sent = send_pages_of(&self.tx, &self.mem, &self.first.vmas, runs, true)?;
        self.tx.send(&ProcMsg::End)?;
        let mut bytes = 0;
        for r in sent.into_iter().map(|i| &runs[i]) {
            bytes += r.len;
            if let Some(Some(bits)) = self.sent.get_mut(r.vma as usize) {
                for p in r.offset / 4096..(r.offset + r.len).div_ceil(4096) {
                    bits[(p / 64) as usize] |= 1 << (p % 64);
                }
            }
        }
        self.bytes += bytes;
        Ok(())
    }

    /// The runs of the first image's areas that cover `ranges` (page-aligned addresses).
    fn runs_of(&self, ranges: &[(u64, u64)]) -> Vec<Run> {
        runs_in(&self.first.vmas, ranges, |i| i)
    }

    /// Sends the final image of the process, frozen again by the caller as `frozen` (its agent
    /// started), with what the destination does not have yet, and waits for the destination to
    /// run it. `Err` leaves the process frozen here, for the caller to thaw.
    pub fn finish(mut self, frozen: &Frozen) -> Result<Shipped, MoveFailure> {
        let to = self.to;
        let started = Instant::now();
        let bytes = self.finish_sending(frozen)?;
        let sent = Instant::now();
        let Some(mut rx) = self.rx.take() else {
            return Err(failure::kernel(
                "a live move without a connection to answer it",
            ));
        };
        let pid = await_start(&mut rx, to, START_ANSWER)?;
        Ok(Shipped {
            pid,
            tx: self.tx,
            rx,
            sending: sent - started,
            starting: sent.elapsed(),
            bytes,
        })
    }

    /// Sends the final image of the process (frozen again as `frozen`) and what the
    /// destination does not have yet, then `End`; the bytes sent. The answer is the caller's
    /// to read ([`Precopy::finish`] does).
    pub fn finish_sending(&mut self, frozen: &Frozen) -> Result<u64, MoveFailure> {
        let to = self.to;
        let pid = self.pid;
        let now = &frozen.header;
        let prep = Instant::now();
        let kept = kept_areas(&self.first.vmas, &now.vmas);
        let mut written = std::mem::take(&mut self.pending);
        written.extend(
            self.tracker
                .written()
                .map_err(|e| failure::kernel(format!("reading what process {pid} wrote: {e}")))?,
        );
        written.sort_unstable();
        // An area is trusted to hold, at the destination, all but what the tracker reports
        // only if it is still the registered one (not unmapped and mapped again in place).
        let registered = dirty::wp_areas(pid)
            .map_err(|e| failure::kernel(format!("reading the areas of process {pid}: {e}")))?;
        let still = |s: u64, e: u64| registered.iter().any(|&(a, b)| a <= s && e <= b);
        // The part of area `v` that area `i` of the first image had too (all of it unless it
        // grew or shrank in place, `kept_areas`).
        let both = |i: u32, v: &Vma| v.end.min(self.first.vmas[i as usize].end);
        let mut runs: Vec<Run> = Vec::new();
        let mut resized = 0;
        for (j, (v, k)) in now.vmas.iter().zip(&kept).enumerate() {
            let j = j as u32;
            match k {
                Some(i) if self.sent[*i as usize].is_some() && still(v.start, both(*i, v)) => {
                    let had = both(*i, v);
                    if v.end != self.first.vmas[*i as usize].end {
                        resized += 1;
                    }
                    // Written since, and sent before but holding no data now, in the part
                    // both images have.
                    let mut again: Vec<(u64, u64)> = written
                        .iter()
                        .filter_map(|&(s, e)| {
                            let (s, e) = (s.max(v.start), e.min(had));
                            (s < e).then_some((s, e))
                        })
                        .collect();
                    again.extend(self.discarded(*i as usize, v)?);
                    let again = merged(again);
                    runs.extend(runs_in(std::slice::from_ref(v), &again, |_| j));
                    // What it grew by is new: its pages as the final image found them.
                    let from = had - v.start;
                    runs.extend(
                        frozen
                            .runs
                            .iter()
                            .filter(|r| r.vma == j && r.offset + r.len > from)
                            .map(|r| {
                                let start = r.offset.max(from);
                                Run {
                                    offset: start,
                                    len: r.offset + r.len - start,
                                    ..*r
                                }
                            }),
                    );
                }
                // A file's pages not written are the file's, which the first round carried;
                // those the process has its own copies of are sent (written at any time).
                Some(_) if !v.write && matches!(v.kind, VmaKind::File { .. }) => {
                    let own = dirty::private_copies(self.tracker.pagemap(), v.start, v.end)
                        .map_err(|e| {
                            failure::kernel(format!("reading the page map of process {pid}: {e}"))
                        })?;
                    runs.extend(runs_in(std::slice::from_ref(v), &own, |_| j));
                }
                _ => runs.extend(frozen.runs.iter().filter(|r| r.vma == j).copied()),
            }
        }
        let computed = prep.elapsed();
        let mut header = now.clone();
        header.total_bytes = runs.iter().map(|r| r.len).sum();
        let header_bytes = header.total_bytes;
        let lost = |e: &dyn std::fmt::Display| {
            failure::link_lost(to, format!("the transfer broke off ({e})"))
        };
        let started = Instant::now();
        self.tx
            .send(&ProcMsg::Image(Box::new(header)))
            .map_err(|e| lost(&e))?;
        send_pages(&self.tx, &frozen.mem, &now.vmas, &runs).map_err(|e| lost(&e))?;
        self.tx.send(&ProcMsg::End).map_err(|e| lost(&e))?;
        let (computed_ms, sent_ms) = (
            computed.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64() * 1e3,
        );
        if computed + started.elapsed() >= crate::freezer::SLOW_STEP {
            warn!(
                "process {pid}: its last pages took long while it was stopped: {computed_ms:.0} ms to find them, {sent_ms:.0} ms to send {} KiB to node {to}",
                header_bytes >> 10
            );
        }
        debug!(
            "process {pid}: the last {} KiB found in {computed_ms:.1} ms ({resized} areas kept though resized), sent to node {to} in {sent_ms:.1} ms",
            header_bytes >> 10
        );
        Ok(header_bytes)
    }

    /// The ranges of area `v` (index `i` of the first image) sent before that hold no data now.
    fn discarded(&self, i: usize, v: &Vma) -> Result<Vec<(u64, u64)>, MoveFailure> {
        let Some(Some(bits)) = self.sent.get(i) else {
            return Ok(Vec::new());
        };
        let data = dirty::with_data(self.tracker.pagemap(), v.start, v.end).map_err(|e| {
            failure::kernel(format!("reading the page map of process {}: {e}", self.pid))
        })?;
        // Pages in address order, the data ranges too: one pass over both.
        let mut k = 0;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (w, word) in bits.iter().enumerate() {
            if *word == 0 {
                continue;
            }
            for b in 0..64 {
                let page = w as u64 * 64 + b;
                let a = v.start + page * 4096;
                while k < data.len() && data[k].1 <= a {
                    k += 1;
                }
                let has = k < data.len() && data[k].0 <= a;
                if word & (1 << b) != 0 && !has {
                    match out.last_mut() {
                        Some(last) if last.1 == a => last.1 = a + 4096,
                        _ => out.push((a, a + 4096)),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The most rounds of pages a receiver takes before the final image (the sender stops at
/// [`MAX_ROUNDS`]).
pub const MAX_ROUNDS_TAKEN: u32 = 64;

/// Why the rounds of a live move could not be taken.
#[derive(Debug)]
pub enum TakeError {
    /// The link, the pages or the order of the messages.
    Pages(PagesError),
    /// Changing the areas to the final image's.
    Reshape(crate::kernel::ptrace::Error),
}

/// The receiving side of a live move, after the first image `first` ([`ProcMsg::Precopy`])
/// was prepared in `rest`: takes the rounds of pages written into it until the final image,
/// which must name the same process (home, owner, pid, the move's token), reshapes `rest` to
/// it and returns it with the bytes the rounds carried. At most [`MAX_ROUNDS_TAKEN`] rounds,
/// none larger than the first image's areas. The same at a remote node and at home.
pub fn take_rounds(
    rx: &mut Receiver,
    first: &ImageHeader,
    rest: &mut Restorer,
) -> Result<(Box<ImageHeader>, u64), TakeError> {
    let malformed = |what: String| TakeError::Pages(PagesError::Malformed(what));
    let size: u64 = first.vmas.iter().map(|v| v.len()).sum();
    let (mut rounds, mut received) = (0u32, 0u64);
    loop {
        match rx
            .recv()
            .map_err(|e| TakeError::Pages(PagesError::Link(e)))?
        {
            ProcMsg::Round { bytes } if rounds < MAX_ROUNDS_TAKEN && bytes <= size => {
                rounds += 1;
                received += bytes;
                pages::receive_runs(rx, &first.vmas, bytes, rest.pages())
                    .map_err(TakeError::Pages)?;
            }
            ProcMsg::Image(now)
                if now.home == first.home
                    && now.creds == first.creds
                    && now.rejoin == first.rejoin
                    && now.cached.pid == first.cached.pid =>
            {
                rest.reshape(first, &now).map_err(TakeError::Reshape)?;
                return Ok((now, received));
            }
            ProcMsg::Round { .. } => {
                return Err(malformed(format!(
                    "more than {MAX_ROUNDS_TAKEN} rounds of pages, or a round larger than the process"
                )));
            }
            ProcMsg::Image(_) => return Err(malformed("a final image of another process".into())),
            other => return Err(malformed(format!("{other:?} during a live move"))),
        }
    }
}

/// `ranges` sorted, overlapping and adjacent ones joined.
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The runs covering `ranges` (sorted, page-aligned addresses) in `vmas`, each run naming its
/// area by `index(position in vmas)`; read through `/proc/PID/mem` (the process may share
/// them copy-on-write).
fn runs_in(vmas: &[Vma], ranges: &[(u64, u64)], index: impl Fn(u32) -> u32) -> Vec<Run> {
    let mut out = Vec::new();
    for &(s, e) in ranges {
        for (i, v) in vmas.iter().enumerate() {
            let (a, b) = (s.max(v.start), e.min(v.end));
            if a < b {
                freeze::cut(&mut out, index(i as u32), a - v.start, b - a, |_, _| false);
            }
        }
    }
    out
}
