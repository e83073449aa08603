//! A process connection: the authenticated TCP connection that carries one migrating process —
//! its image, its page runs, then its forwarded calls and signals — between two node services.
//!
//! Reads happen on one thread; writes may come from two (a deputy's call executor answers calls
//! while its tracer forwards signals), so the writing half is shared behind a mutex and every
//! frame (with the raw bytes of a page run) is written whole under it.
//!
//! A peer that vanishes (its machine halts, its network is cut) sends no FIN: without help the
//! connection would stay open and the process's two halves wait for each other forever. Keepalive
//! probes after [`KEEPALIVE_IDLE`] of silence and `TCP_USER_TIMEOUT` on unacknowledged data end
//! the connection with `ETIMEDOUT` within [`DEAD_PEER_BOUND`]; both sides then act as for a
//! broken connection (home: the process is reported killed; remote: the guest is killed).
//!
//! Every frame and every page run is a sealed record of [`mosix_core::proto::seal`]: the writing
//! half holds the connection's [`Sealer`] (and its record count) under the same mutex as the
//! socket, so records leave in the order they were sealed; the reading half holds the
//! [`Opener`]. A record that does not open is an error like a broken connection: the thread that
//! reads it ends the connection, and nothing more is read from it.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::proto::replay::{AckWindow, Replay};
use mosix_core::proto::seal::{self, Opener, Sealer, Session, TAG_LEN};
use mosix_core::proto::{FrameError, MAX_PROC_FRAME, ProcMsg};
use tracing::{debug, info, warn};

/// An authenticated blocking connection and its session, before it is split into halves.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    session: Session,
}

impl Conn {
    /// A connection whose handshake gave `session`.
    pub fn new(stream: TcpStream, session: Session) -> Conn {
        Conn { stream, session }
    }

    /// The socket.
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends one message (a refusal before the connection is dropped).
    pub fn send(&mut self, m: &ProcMsg) -> Result<(), FrameError> {
        let mut buf = Vec::new();
        seal::write_sealed(&mut self.stream, &mut self.session.sealer, m, &mut buf)?;
        self.stream.flush()?;
        Ok(())
    }
}

/// What the writing half guards: the socket and the sealing state, so that records are sealed
/// and written in one order, and what was sent and may have to be sent again.
struct Out {
    /// Unbuffered: every frame is sealed whole into `frame` and written in one call.
    w: TcpStream,
    sealer: Sealer,
    /// The frame being sent (capacity reused).
    frame: Vec<u8>,
    /// Counted messages sent so far.
    sent: u64,
    /// The counted messages sent and not acknowledged, plain (`None`: a cut ends the
    /// connection).
    replay: Option<Replay>,
    /// Where the bytes of page runs sent are added up (a move's progress), if anywhere.
    runs_into: Option<Arc<AtomicU64>>,
}

/// How a cut connection goes on.
enum Resume {
    /// It does not: a cut ends it.
    Off,
    /// Home: the remote reconnects ([`offer_resume`]).
    Wait,
    /// The remote: dials home, with the token and the count of messages received.
    Dial(Dialer),
}

/// Opens a connection to home that asks to resume (`LinkMsg::Resume`).
pub type Dialer = Box<dyn FnMut(&[u8; 16], u64) -> Result<Conn, String> + Send>;

/// What the reading half shares with the one that installs a resumed connection (home).
struct RxState {
    /// Counted messages received so far.
    received: u64,
    window: AckWindow,
    /// A resumed connection for the reader to take: its socket and opener.
    pending: Option<(TcpStream, Opener)>,
    resume: Resume,
    /// The current connection's resume token.
    token: [u8; 16],
    /// The node at the other end (once resumable).
    peer: Option<NodeId>,
    /// Why the connection cannot go on (a resume that failed): the reader says it.
    ended: Option<String>,
}

/// The state both halves share.
struct Shared {
    out: Mutex<Out>,
    rx: Mutex<RxState>,
    /// Signalled when a resumed connection is installed (or cannot be).
    installed: Condvar,
    /// The current socket, to look at or shut without the other locks.
    probe: Mutex<Arc<TcpStream>>,
    /// A cut may be resumed (the master switch; `RxState::resume` says how).
    resumable: AtomicBool,
    /// The socket failed as a cut does (no route, timed out): seen by a writer, the reader or
    /// [`Sender::peer_gone`] (whichever asked the kernel first: it reports an error once).
    cut: AtomicBool,
    /// When the peer's kernel was first seen to reset the connection, in milliseconds since
    /// `epoch` (0: not seen).
    reset_ms: AtomicU64,
    /// Home is installing a resumed connection: the reader waits for it.
    installing: AtomicBool,
    /// When a frame was last received, in milliseconds since `epoch`.
    heard_ms: AtomicU64,
    /// `RxState::grace`, readable without its lock.
    grace_ms: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rx(&self) -> MutexGuard<'_, RxState> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn probe(&self) -> Arc<TcpStream> {
        Arc::clone(&self.probe.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn heard(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_ms.store(ms, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Notes what a failed read or write of the socket says about the connection.
    fn note(&self, e: &std::io::Error) {
        if is_cut(e) {
            self.cut.store(true, Ordering::SeqCst);
        } else if is_reset(e) {
            let _ = self.reset_ms.compare_exchange(
                0,
                self.now_ms(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// The connection works again (resumed): nothing is broken.
    fn mended(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.reset_ms.store(0, Ordering::SeqCst);
    }

    /// How long (of silence) a broken connection may be waited for, `full` for a cut: `None`
    /// when nothing says it may come back (the peer closed it). A reset is waited for only as
    /// long as a peer that is alive and reconnecting takes ([`RESET_WAIT`]): it reset the
    /// connection because it saw the cut first; one that closed it for good does not come
    /// back.
    fn may_come_back(&self, full: Duration) -> Option<Duration> {
        if self.cut.load(Ordering::SeqCst) {
            return Some(full);
        }
        match self.reset_ms.load(Ordering::SeqCst) {
            0 => None,
            at => {
                let heard = self.heard_ms.load(Ordering::Relaxed);
                let silent_then = Duration::from_millis(at.saturating_sub(heard));
                Some(full.min(silent_then + RESET_WAIT))
            }
        }
    }

    /// How long a cut may last (`[link] resume_grace_s`; zero until resumable).
    fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    /// How long ago a frame was last received.
    fn silent_for(&self) -> Duration {
        self.epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(self.heard_ms.load(Ordering::Relaxed)))
    }

    /// No cut is resumed from now on (the process leaves, or the connection is done).
    fn stop_resuming(&self, st: &mut RxState, out: &mut Out) {
        self.resumable.store(false, Ordering::SeqCst);
        st.resume = Resume::Off;
        out.replay = None;
        forget(&st.token);
    }

    /// Sends an acknowledgement of `received` (errors are left to the reader to see).
    fn ack(&self, received: u64) {
        let mut g = self.out();
        let out = &mut *g;
        if self.cut.load(Ordering::SeqCst) {
            return;
        }
        if out
            .sealer
            .encode(&ProcMsg::Ack { received }, &mut out.frame)
            .is_ok()
            && let Err(e) = out.w.write_all(&out.frame)
        {
            self.note(&e);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let st = self.rx.get_mut().unwrap_or_else(|p| p.into_inner());
        forget(&st.token);
    }
}

/// Connections home may resume, by token.
static RESUMABLE: LazyLock<Mutex<HashMap<[u8; 16], Weak<Shared>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn registry() -> MutexGuard<'static, HashMap<[u8; 16], Weak<Shared>>> {
    RESUMABLE.lock().unwrap_or_else(|p| p.into_inner())
}

fn forget(token: &[u8; 16]) {
    registry().remove(token);
}

/// An I/O error that a network cut gives (the peer may come back), as opposed to one that
/// says the peer closed or reset the connection (it will not).
fn is_cut(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIMEDOUT | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ENETDOWN)
            | Some(libc::EHOSTDOWN)
    )
}

/// An I/O error of a connection the peer's kernel reset: the peer closed it, or it had
/// already given it up after a cut and the link is back (then it reconnects at once).
fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED)
    )
}

/// A read timeout the caller set (`SO_RCVTIMEO`), not a failure.
fn is_timeout(e: &FrameError) -> bool {
    matches!(e, FrameError::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The writing half, shareable.
#[derive(Clone)]
pub struct Sender {
    sh: Arc<Shared>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The reading half.
pub struct Receiver {
    sh: Arc<Shared>,
    r: BufReader<TcpStream>,
    opener: Opener,
    /// The frame being received (capacity reused).
    buf: Vec<u8>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// A frame buffer larger than this is given back after use (image headers, large calls), so an
/// idle connection holds little memory.
const KEEP_BUF: usize = 1 << 20;

/// Silence after which the kernel starts probing the peer.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Between two probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes before the connection is declared dead.
const KEEPALIVE_PROBES: u32 = 3;
/// How long sent data may stay unacknowledged.
const USER_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a vanished peer goes unnoticed (keepalive: 5 s + 3 × 2 s; data in flight: 15 s).
pub const DEAD_PEER_BOUND: Duration = Duration::from_secs(15);
/// Home waits this much longer than the grace for a cut connection to resume: the remote,
/// which counts the grace from the last frame it received, gives up first, so the two never
/// both go on.
const HOME_MARGIN: Duration = Duration::from_secs(10);
/// How long a connection reset by the peer is waited for: a peer that reset it because it saw
/// a cut first is reconnecting (every [`REDIAL_EVERY`]); one that closed it for good is not.
const RESET_WAIT: Duration = Duration::from_secs(10);
/// Between two attempts of the remote to reconnect.
const REDIAL_EVERY: Duration = Duration::from_secs(2);
/// How long home may take to answer a resume.
const RESUME_ANSWER: Duration = Duration::from_secs(10);

/// Sets no delay, keepalive and the user timeout of a connection that leaves the runtime, so
/// a vanished peer is noticed within [`DEAD_PEER_BOUND`].
fn watch(stream: &TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

/// Splits a process connection into its halves. A cut ends it until one end says otherwise
/// ([`Sender::resume_by_waiting`], [`Sender::resume_by_dialing`]).
pub fn split(conn: Conn) -> std::io::Result<(Sender, Receiver)> {
    let Conn { stream, session } = conn;
    watch(&stream)?;
    let w = stream.try_clone()?;
    let probe = Arc::new(stream.try_clone()?);
    let sh = Arc::new(Shared {
        out: Mutex::new(Out {
            w,
            sealer: session.sealer,
            frame: Vec::new(),
            sent: 0,
            replay: None,
            runs_into: None,
        }),
        rx: Mutex::new(RxState {
            received: 0,
            window: AckWindow::default(),
            pending: None,
            resume: Resume::Off,
            token: session.token,
            peer: None,
            ended: None,
        }),
        installed: Condvar::new(),
        probe: Mutex::new(probe),
        resumable: AtomicBool::new(false),
        cut: AtomicBool::new(false),
        installing: AtomicBool::new(false),
        heard_ms: AtomicU64::new(0),
        grace_ms: AtomicU64::new(0),
        reset_ms: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    Ok((
        Sender {
            sh: Arc::clone(&sh),
        },
        Receiver {
            sh,
            r: BufReader::with_capacity(256 * 1024, stream),
            opener: session.opener,
            buf: Vec::new(),
        },
    ))
}

impl Sender {
    /// Whether the connection is known to be dead (reset, closed by the peer, or timed out by
    /// keepalive and not resumed within the grace), without reading from it. For a thread
    /// that waits on something else (a call blocked at home) and must not outlive the other
    /// side.
    pub fn peer_gone(&self) -> bool {
        use std::os::fd::AsRawFd;
        let probe = self.sh.probe();
        let mut p = libc::pollfd {
            fd: probe.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout.
        let n = unsafe { libc::poll(&raw mut p, 1, 0) };
        let dead = n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
        if !dead || !self.sh.resumable.load(Ordering::SeqCst) {
            return dead;
        }
        // Which way it broke (the kernel says it once: noted for the reader too). A peer that
        // closed it is gone now; a cut or a reset may be mended, for a while.
        if let Ok(Some(e)) = probe.take_error() {
            self.sh.note(&e);
        }
        let grace = self.sh.grace();
        self.sh
            .may_come_back(grace + HOME_MARGIN)
            .is_none_or(|limit| self.sh.silent_for() > limit)
    }

    /// Home: from now on a cut of this connection to `peer` is waited out for `grace` (and a
    /// margin), the remote reconnecting ([`offer_resume`]); nothing sent is lost meanwhile.
    /// A zero grace changes nothing.
    pub fn resume_by_waiting(&self, peer: NodeId, grace: Duration) {
        self.resumable_as(peer, grace, Resume::Wait);
    }

    /// The remote: from now on a cut of this connection to home (`peer`) is mended by dialing
    /// home with `dial` every few seconds, for `grace` after the last frame received.
    pub fn resume_by_dialing(&self, peer: NodeId, grace: Duration, dial: Dialer) {
        self.resumable_as(peer, grace, Resume::Dial(dial));
    }

    fn resumable_as(&self, peer: NodeId, grace: Duration, how: Resume) {
        if grace.is_zero() {
            return;
        }
        let waits = matches!(how, Resume::Wait);
        let mut st = self.sh.rx();
        let mut out = self.sh.out();
        st.resume = how;
        st.peer = Some(peer);
        self.sh.grace_ms.store(
            u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        out.replay = Some(Replay::new());
        self.sh.heard();
        self.sh.resumable.store(true, Ordering::SeqCst);
        if waits {
            registry().insert(st.token, Arc::downgrade(&self.sh));
        }
    }

    /// Sends one message. On a connection that may be resumed, a counted message is kept
    /// until the peer acknowledges it, and one the socket could not take is sent when the
    /// connection resumes (`Ok`): the reader decides whether it was a cut or the end.
    pub fn send(&self, m: &ProcMsg) -> Result<(), FrameError> {
        let sh = &self.sh;
        let mut g = sh.out();
        let out = &mut *g;
        let control = m.is_control();
        if !control {
            out.sent += 1;
            if matches!(m, ProcMsg::Image(_) | ProcMsg::Precopy(_)) {
                // The process leaves this connection: a cut of what follows (its pages) ends
                // it, as a cut move does.
                sh.resumable.store(false, Ordering::SeqCst);
                out.replay = None;
            }
        }
        let keep = !control && sh.resumable.load(Ordering::SeqCst) && out.replay.is_some();
        if keep {
            let plain = mosix_core::proto::encode(m);
            out.sealer.seal_plain(&plain, &mut out.frame)?;
            let seq = out.sent;
            if let Some(r) = &mut out.replay
                && let Err(bytes) = r.push(seq, plain)
            {
                warn!(
                    "a process connection holds {bytes} bytes not acknowledged by its peer: it no longer survives a cut"
                );
                out.replay = None;
                sh.resumable.store(false, Ordering::SeqCst);
            }
        } else {
            out.sealer.encode(m, &mut out.frame)?;
        }
        let resumable = sh.resumable.load(Ordering::SeqCst);
        if sh.cut.load(Ordering::SeqCst) && resumable {
            // Sent when the connection resumes.
            return Ok(());
        }
        let written = out.w.write_all(&out.frame);
        if out.frame.capacity() > KEEP_BUF {
            out.frame = Vec::new();
        }
        match written {
            Ok(()) => Ok(()),
            Err(e) if resumable => {
                sh.note(&e);
                debug!("a process connection could not send now ({e}): kept for a resume");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a page run: its `Pages` frame and its bytes, as two records, in one vectored write
    /// (one system call, and no small segment of its own for the frame). `data` is sealed in
    /// place — encrypted where it is, or left as it is when the link only authenticates — so
    /// the caller's buffer holds what went on the wire afterwards. One AEAD call for the whole
    /// run. Only while an image is sent, when a cut ends the connection.
    pub fn send_run(&self, vma: u32, offset: u64, data: &mut [u8]) -> Result<(), FrameError> {
        let len = u32::try_from(data.len()).map_err(|_| FrameError::TooLong {
            len: data.len(),
            limit: mosix_core::image::MAX_RUN,
        })?;
        let mut g = self.sh.out();
        let Out {
            w,
            sealer,
            frame,
            sent,
            runs_into,
            ..
        } = &mut *g;
        *sent += 1;
        sealer.encode(&ProcMsg::Pages { vma, offset, len }, frame)?;
        let tag = sealer.seal_run_in_place(data)?;
        let mut parts = [
            std::io::IoSlice::new(frame),
            std::io::IoSlice::new(data),
            std::io::IoSlice::new(&tag),
        ];
        let mut parts = &mut parts[..];
        while !parts.is_empty() {
            match w.write_vectored(parts) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
                Ok(n) => std::io::IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(c) = runs_into {
            c.fetch_add(u64::from(len), Ordering::Relaxed);
        }
        Ok(())
    }

    /// From now on, adds the bytes of every page run sent ([`Sender::send_run`], once written)
    /// to `counter`: how far a move has come, read by whoever asks while it goes on.
    pub fn count_runs_into(&self, counter: Arc<AtomicU64>) {
        self.sh.out().runs_into = Some(counter);
    }

    /// Says this side will send no more (the peer reads an end of stream after what was sent).
    pub fn close_write(&self) {
        self.sh.resumable.store(false, Ordering::SeqCst);
        let g = self.sh.out();
        let _ = g.w.shutdown(std::net::Shutdown::Write);
    }

    /// Closes the connection (both halves); it is not resumed.
    pub fn shutdown(&self) {
        self.sh.resumable.store(false, Ordering::SeqCst);
        let _ = self.sh.probe().shutdown(std::net::Shutdown::Both);
    }
}

/// What a resume attempt of the remote came to.
enum Attempt {
    /// The connection goes on (what was sent again).
    Done(String),
    /// Try again (home was not reached, or the new connection broke at once).
    Again(String),
    /// It cannot resume: the connection ends with this reason.
    Never(String),
}

impl Receiver {
    /// Receives one message, opened and checked. On a connection that may be resumed, a cut
    /// is mended here (the remote dials home, home waits for it), within the grace: the caller
    /// only sees a delay, and every message once.
    pub fn recv(&mut self) -> Result<ProcMsg, FrameError> {
        loop {
            if let Some(m) = self.next(false)? {
                return Ok(m);
            }
        }
    }

    /// [`Receiver::recv`] for a caller that reads when its poll says the socket is readable:
    /// `None` when what was there was only a message of the connection itself (an
    /// acknowledgement), so that it goes back to its poll instead of waiting here for the
    /// next message.
    pub fn try_recv(&mut self) -> Result<Option<ProcMsg>, FrameError> {
        self.next(true)
    }

    /// One message; with `control_too`, `None` after a control message.
    fn next(&mut self, control_too: bool) -> Result<Option<ProcMsg>, FrameError> {
        let sh = Arc::clone(&self.sh);
        let mut st = sh.rx();
        loop {
            if let Some(why) = &st.ended {
                return Err(std::io::Error::other(why.clone()).into());
            }
            if let Some((s, o)) = st.pending.take() {
                self.r = BufReader::with_capacity(256 * 1024, s);
                self.opener = o;
            }
            let read: Result<ProcMsg, FrameError> =
                seal::read_sealed(&mut self.r, &mut self.opener, MAX_PROC_FRAME, &mut self.buf);
            if self.buf.capacity() > KEEP_BUF {
                self.buf = Vec::new();
            }
            match read {
                Ok(m) => {
                    sh.heard();
                    if m.is_control() {
                        match m {
                            ProcMsg::Ack { received } => {
                                if let Some(r) = &mut sh.out().replay {
                                    r.ack(received);
                                }
                            }
                            ProcMsg::AckPlease => {
                                st.window.reset();
                                sh.ack(st.received);
                            }
                            other => {
                                return Err(FrameError::Invalid(format!("{other:?} out of turn")));
                            }
                        }
                        if control_too {
                            return Ok(None);
                        }
                        continue;
                    }
                    m.validate()?;
                    st.received += 1;
                    if matches!(m, ProcMsg::Image(_) | ProcMsg::Precopy(_)) {
                        // The process comes over this connection: a cut of its pages ends it.
                        let mut out = sh.out();
                        sh.stop_resuming(&mut st, &mut out);
                    } else if sh.resumable.load(Ordering::SeqCst)
                        && (m.wants_ack() || st.window.received(approx_len(&m)))
                    {
                        st.window.reset();
                        sh.ack(st.received);
                    }
                    return Ok(Some(m));
                }
                Err(e) if is_timeout(&e) => return Err(e),
                Err(e) => {
                    if sh.installing.load(Ordering::SeqCst) {
                        // Home swaps the connection under us: wait for the new one.
                        st = sh
                            .installed
                            .wait_while(st, |st| {
                                sh.installing.load(Ordering::SeqCst)
                                    && st.pending.is_none()
                                    && st.ended.is_none()
                            })
                            .unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    // How long (of silence) the connection may be waited for: a cut, the
                    // grace; a reset, only as long as a peer that is alive and reconnecting
                    // takes (it reset the connection because it saw the cut first; one that
                    // closed it for good does not come back).
                    if let FrameError::Io(io) = &e {
                        sh.note(io);
                    }
                    let silent = sh.silent_for();
                    let full = match st.resume {
                        Resume::Wait => sh.grace() + HOME_MARGIN,
                        _ => sh.grace(),
                    };
                    let limit = match &e {
                        FrameError::Io(_) | FrameError::Truncated | FrameError::Closed => {
                            sh.may_come_back(full)
                        }
                        _ => None,
                    };
                    let Some(limit) = limit.filter(|_| sh.resumable.load(Ordering::SeqCst)) else {
                        sh.resumable.store(false, Ordering::SeqCst);
                        return Err(e);
                    };
                    let peer = st.peer.map_or_else(|| "?".to_owned(), |n| n.to_string());
                    let grace = sh.grace();
                    if matches!(st.resume, Resume::Wait) {
                        info!(
                            "the connection to node {peer} was cut ({e}): waiting up to {}s for it to reconnect",
                            limit.saturating_sub(silent).as_secs()
                        );
                        st = self.wait_for_resume(st, limit);
                        if st.pending.is_none() && st.ended.is_none() {
                            let why = if limit < full {
                                format!("node {peer} reset the connection and did not take it back")
                            } else {
                                format!(
                                    "the link to node {peer} was cut for more than {}s ([link] resume_grace_s)",
                                    grace.as_secs()
                                )
                            };
                            let mut out = sh.out();
                            sh.stop_resuming(&mut st, &mut out);
                            return Err(
                                std::io::Error::new(std::io::ErrorKind::TimedOut, why).into()
                            );
                        }
                        continue;
                    }
                    info!(
                        "the connection to home (node {peer}) was cut ({e}): reconnecting for up to {}s",
                        limit.saturating_sub(silent).as_secs()
                    );
                    if let Err(why) = self.redial(&mut st, limit) {
                        let mut out = sh.out();
                        sh.stop_resuming(&mut st, &mut out);
                        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why).into());
                    }
                }
            }
        }
    }

    /// Home: waits until a resumed connection is installed, the resume failed, or the
    /// connection was silent for `limit`.
    fn wait_for_resume<'a>(
        &self,
        mut st: MutexGuard<'a, RxState>,
        limit: Duration,
    ) -> MutexGuard<'a, RxState> {
        let sh = &self.sh;
        loop {
            if st.pending.is_some() || st.ended.is_some() {
                return st;
            }
            let left = limit.saturating_sub(sh.silent_for());
            if left.is_zero() && !sh.installing.load(Ordering::SeqCst) {
                return st;
            }
            let wait = left
                .max(Duration::from_millis(100))
                .min(Duration::from_secs(1));
            st = sh
                .installed
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// The remote: dials home until the connection resumes or it was silent for `limit`
    /// (at most the grace, counted from the last frame received). `Err` says why it did not.
    fn redial(&mut self, st: &mut RxState, limit: Duration) -> Result<(), String> {
        let grace = self.sh.grace();
        let peer = st.peer.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let mut last = String::from("not tried");
        loop {
            if self.sh.silent_for() >= limit {
                return Err(if limit < grace {
                    format!(
                        "home (node {peer}) reset the connection and did not take it back (last attempt: {last})"
                    )
                } else {
                    format!(
                        "the link to its home (node {peer}) was cut for more than {}s ([link] resume_grace_s; last attempt: {last})",
                        grace.as_secs()
                    )
                });
            }
            let Resume::Dial(dial) = &mut st.resume else {
                return Err("not resumable".into());
            };
            let attempt = match dial(&st.token, st.received) {
                Ok(conn) => self.resume_on(st, conn),
                Err(e) => Attempt::Again(e),
            };
            match attempt {
                Attempt::Done(what) => {
                    info!("the connection to home (node {peer}) resumed ({what})");
                    return Ok(());
                }
                Attempt::Again(why) => {
                    debug!("resuming the connection to node {peer}: {why}");
                    last = why;
                }
                Attempt::Never(why) => return Err(format!("home would not resume it: {why}")),
            }
            let left = limit.saturating_sub(self.sh.silent_for());
            std::thread::sleep(REDIAL_EVERY.min(left));
        }
    }

    /// The remote: reads home's answer on a new connection and, if home resumes, makes it
    /// this connection and sends home what it missed.
    fn resume_on(&mut self, st: &mut RxState, conn: Conn) -> Attempt {
        let Conn { stream, session } = conn;
        let again = |e: &dyn std::fmt::Display| Attempt::Again(e.to_string());
        if let Err(e) = watch(&stream).and_then(|()| stream.set_read_timeout(Some(RESUME_ANSWER))) {
            return again(&e);
        }
        let (reader, writer, probe) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(r), Ok(w)) => (r, w, stream),
            (Err(e), _) | (_, Err(e)) => return again(&e),
        };
        let mut r = BufReader::with_capacity(256 * 1024, reader);
        let mut opener = session.opener;
        let first: ProcMsg =
            match seal::read_sealed(&mut r, &mut opener, MAX_PROC_FRAME, &mut self.buf) {
                Ok(m) => m,
                Err(e) => return again(&e),
            };
        let home_received = match first {
            ProcMsg::Resumed { received } => received,
            ProcMsg::NotResumed { why } => return Attempt::Never(why),
            other => return Attempt::Never(format!("it answered {other:?}")),
        };
        // Home took this connection: from now on it is the one to name.
        st.token = session.token;
        self.sh.heard();
        let mut g = self.sh.out();
        let out = &mut *g;
        let frames = match &out.replay {
            Some(rp) => rp.since(home_received, out.sent).map_err(|e| e.to_string()),
            None => Err("what home missed was not kept".into()),
        };
        let frames: Vec<Vec<u8>> = match frames {
            Ok(f) => f.into_iter().map(<[u8]>::to_vec).collect(),
            Err(why) => return Attempt::Never(why),
        };
        out.w = writer;
        out.sealer = session.sealer;
        for f in &frames {
            if let Err(e) = out
                .sealer
                .seal_plain(f, &mut out.frame)
                .and_then(|()| out.w.write_all(&out.frame).map_err(FrameError::from))
            {
                return again(&e);
            }
        }
        drop(g);
        let _ = r.get_ref().set_read_timeout(None);
        *self.sh.probe.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(probe);
        self.r = r;
        self.opener = opener;
        self.sh.mended();
        Attempt::Done(format!("{} messages sent again", frames.len()))
    }

    /// Reads the bytes of a page run (as many as `buf` holds, which the [`ProcMsg::Pages`] frame
    /// before said) and its tag, and opens it in place.
    pub fn recv_raw(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        let eof = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Truncated
            } else {
                FrameError::Io(e)
            }
        };
        let mut tag = [0u8; TAG_LEN];
        // The run's bytes are all coming: the thread need not wake for each burst of
        // segments, only every RUN_LOWAT bytes (waking it was a visible part of the receiving
        // side's CPU in a profile). The kernel wakes a sleeping reader only once SO_RCVLOWAT
        // bytes are queued, however few the read asks for (`tcp_data_ready`), so the mark holds
        // only while at least that many bytes of the run are still to come: up to the run's
        // last RUN_LOWAT bytes. Beyond, a reader waiting for the run's tail, which arrives with
        // the frames after it in less than the mark (the last run of a move, then `End`, then
        // nothing until the answer), slept until its read timeout: the 10 s stops seen in live
        // moves (docs/migration.md).
        let coming = buf.len().saturating_sub(self.r.buffer().len());
        if coming >= 2 * RUN_LOWAT && set_rcvlowat(self.r.get_ref(), RUN_LOWAT) {
            let (head, tail) = buf.split_at_mut(buf.len() - RUN_LOWAT);
            let read = self.read_marked(head);
            let unset = set_rcvlowat(self.r.get_ref(), 1);
            read.map_err(eof)?;
            if !unset {
                return Err(FrameError::Io(std::io::Error::last_os_error()));
            }
            self.r.read_exact(tail).map_err(eof)?;
        } else {
            self.r.read_exact(buf).map_err(eof)?;
        }
        self.r.read_exact(&mut tag).map_err(eof)?;
        self.opener.open_run(buf, &tag)
    }

    /// Fills `buf` while `SO_RCVLOWAT` is raised. A reader that slept after copying part of
    /// what it asked for was not always woken, though the rest was queued: the kernel wakes a
    /// sleeper once the mark's bytes are queued, counting none that the same read copied
    /// before it slept, and the window it clamps to the mark may not let that many queue. In
    /// the unit test below 2 reads in 40 slept until their 20 s timeout. Here each read waits
    /// at most `MARK_WAIT` and returns what it copied; the next read takes what is queued at
    /// once (seen: one read in 40 returned 101 461 bytes after 24 ms, where it had slept 20 s).
    /// A read that returns nothing lowers the mark to one byte and goes on with the socket's
    /// own timeout.
    fn read_marked(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        use std::io::ErrorKind;
        let was = self.r.get_ref().read_timeout()?;
        self.r.get_ref().set_read_timeout(Some(MARK_WAIT))?;
        let mut marked = true;
        let mut filled = 0;
        let out = loop {
            if filled == buf.len() {
                break Ok(());
            }
            match self.r.read(&mut buf[filled..]) {
                Ok(0) => break Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if marked
                        && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    marked = false;
                    if !set_rcvlowat(self.r.get_ref(), 1) {
                        break Err(std::io::Error::last_os_error());
                    }
                    if let Err(e) = self.r.get_ref().set_read_timeout(was) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if marked {
            self.r.get_ref().set_read_timeout(was)?;
        }
        out
    }

    /// Waits, at most `limit`, until the peer has acknowledged every message sent (asking it
    /// to), mending a cut meanwhile: before a remote lets go of the connection after its last
    /// message (the process ended or moved on), so that a cut does not lose it. Messages that
    /// arrive meanwhile are dropped. Whether all were acknowledged (true at once on a
    /// connection that is not resumed).
    pub fn settle(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut asked = false;
        loop {
            if !self.sh.resumable.load(Ordering::SeqCst) {
                return true;
            }
            if self.sh.out().replay.as_ref().is_none_or(Replay::is_empty) {
                return true;
            }
            if !asked {
                let _ = self.sh.ack_please();
                asked = true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.r.get_ref().set_read_timeout(Some(left)).is_err() {
                return false;
            }
            match self.next(true) {
                Ok(Some(m)) => debug!("after its last message: {m:?} dropped"),
                Ok(None) => {}
                Err(e) if is_timeout(&e) => return false,
                Err(e) => {
                    debug!("settling a process connection: {e}");
                    return false;
                }
            }
        }
    }

    /// Whether buffered bytes are waiting (so a poll on the socket would not show them).
    pub fn has_buffered(&self) -> bool {
        !self.r.buffer().is_empty()
    }

    /// The socket, for poll (after a resume, the new one).
    pub fn socket(&self) -> &TcpStream {
        self.r.get_ref()
    }
}

impl Shared {
    /// Asks the peer to acknowledge now.
    fn ack_please(&self) -> Result<(), FrameError> {
        let mut g = self.out();
        let out = &mut *g;
        out.sealer.encode(&ProcMsg::AckPlease, &mut out.frame)?;
        out.w.write_all(&out.frame)?;
        Ok(())
    }
}

/// Roughly how many bytes a message took (to acknowledge every so many bytes).
fn approx_len(m: &ProcMsg) -> usize {
    match m {
        ProcMsg::Call(c) => 64 + c.bufs.iter().map(|b| b.1.len()).sum::<usize>(),
        ProcMsg::Reply(r) => 64 + r.outs.iter().map(|b| b.1.len()).sum::<usize>(),
        _ => 64,
    }
}

/// Home: the remote of process `pid` at node `from` reconnected on `conn`, naming a cut
/// connection by `token`, having received `received` messages on it. If that connection may
/// be resumed by that node, `conn` replaces it: home answers [`ProcMsg::Resumed`], resends
/// what the remote missed, and the reader takes the new socket. Otherwise the remote hears
/// why ([`ProcMsg::NotResumed`]). Runs on a thread of its own (it may wait for the reader to
/// let go of the old socket).
pub fn offer_resume(from: NodeId, pid: u32, token: [u8; 16], received: u64, mut conn: Conn) {
    let sh = registry().get(&token).and_then(Weak::upgrade);
    let refuse = |conn: &mut Conn, why: String| {
        info!("node {from} asked to resume the connection of process {pid}: {why}");
        let _ = conn.send(&ProcMsg::NotResumed { why });
    };
    let Some(sh) = sh else {
        return refuse(
            &mut conn,
            format!(
                "home has no connection of process {pid} to resume (it ended, was given up, or home's service restarted)"
            ),
        );
    };
    if !sh.resumable.load(Ordering::SeqCst) {
        return refuse(&mut conn, "the connection is no longer resumable".into());
    }
    // Wake the reader from the old socket; it waits for the new one.
    sh.installing.store(true, Ordering::SeqCst);
    let _ = sh.probe().shutdown(std::net::Shutdown::Both);
    let mut st = sh.rx();
    let done = install(&sh, &mut st, from, received, conn);
    if let Ok(again) = done {
        info!("process {pid}: the connection to node {from} resumed ({again} messages sent again)");
    }
    if let Err(why) = done {
        info!("node {from} asked to resume the connection of process {pid}: {why}");
        st.ended = Some(format!("its connection could not be resumed: {why}"));
        let mut out = sh.out();
        sh.stop_resuming(&mut st, &mut out);
    }
    sh.installing.store(false, Ordering::SeqCst);
    drop(st);
    sh.installed.notify_all();
}

/// Makes `conn` the connection of `sh` (home's side of [`offer_resume`]).
fn install(
    sh: &Arc<Shared>,
    st: &mut RxState,
    from: NodeId,
    received: u64,
    mut conn: Conn,
) -> Result<usize, String> {
    let mut refuse = |why: String| {
        let _ = conn.send(&ProcMsg::NotResumed { why: why.clone() });
        Err(why)
    };
    if st.peer != Some(from) || !matches!(st.resume, Resume::Wait) {
        return refuse(format!("the process does not run at node {from}"));
    }
    let mut g = sh.out();
    let out = &mut *g;
    let frames: Vec<Vec<u8>> = match out.replay.as_ref().map(|r| r.since(received, out.sent)) {
        Some(Ok(f)) => f.into_iter().map(<[u8]>::to_vec).collect(),
        Some(Err(e)) => return refuse(e.to_string()),
        None => return refuse("what the remote missed was not kept".to_owned()),
    };
    let Conn { stream, session } = conn;
    let clones = watch(&stream)
        .and_then(|()| Ok((stream.try_clone()?, stream.try_clone()?)))
        .map_err(|e| e.to_string())?;
    let (reader, writer) = clones;
    out.w = writer;
    out.sealer = session.sealer;
    let mut sent = out
        .sealer
        .encode(
            &ProcMsg::Resumed {
                received: st.received,
            },
            &mut out.frame,
        )
        .and_then(|()| out.w.write_all(&out.frame).map_err(FrameError::from));
    for f in &frames {
        if sent.is_err() {
            break;
        }
        sent = out
            .sealer
            .seal_plain(f, &mut out.frame)
            .and_then(|()| out.w.write_all(&out.frame).map_err(FrameError::from));
    }
    // A new connection that broke at once is a new cut: the remote tries again, naming it.
    sh.mended();
    if let Err(FrameError::Io(e)) = &sent {
        sh.note(e);
    }
    drop(g);
    *sh.probe.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(stream);
    st.pending = Some((reader, session.opener));
    let mut reg = registry();
    reg.remove(&st.token);
    st.token = session.token;
    reg.insert(st.token, Arc::downgrade(sh));
    sh.heard();
    Ok(frames.len())
}

/// A connection that one thread uses both ways, one message after the other (a file
/// connection: a request, then its answer).
#[derive(Debug)]
pub struct Duplex {
    r: BufReader<TcpStream>,
    w: TcpStream,
    session: Session,
    /// The frame being sent or received (capacity reused).
    buf: Vec<u8>,
}

impl Duplex {
    /// Makes `conn` a duplex connection, watched like a process connection.
    pub fn new(conn: Conn) -> std::io::Result<Duplex> {
        let Conn { stream, session } = conn;
        watch(&stream)?;
        Ok(Duplex {
            r: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
            w: stream,
            session,
            buf: Vec::new(),
        })
    }

    /// Sends one message, sealed, in one write.
    pub fn send<M: serde::Serialize>(&mut self, m: &M) -> Result<(), FrameError> {
        seal::write_sealed(&mut self.w, &mut self.session.sealer, m, &mut self.buf)?;
        self.keep_small();
        Ok(())
    }

    /// Receives one message of at most `limit` bytes, opened (its own checks are the caller's).
    pub fn recv<M: serde::de::DeserializeOwned>(&mut self, limit: usize) -> Result<M, FrameError> {
        let m = seal::read_sealed(&mut self.r, &mut self.session.opener, limit, &mut self.buf)?;
        self.keep_small();
        Ok(m)
    }

    /// The socket (a read timeout, a shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.w
    }

    fn keep_small(&mut self) {
        // Room for the largest file request is kept: they come in runs.
        if self.buf.capacity() > 2 * KEEP_BUF {
            self.buf = Vec::new();
        }
    }
}

/// How many bytes of a page run may gather before the receiving thread is woken.
const RUN_LOWAT: usize = 256 * 1024;

/// How long a read of a page run waits with `SO_RCVLOWAT` raised before it lowers it
/// ([`Receiver::read_marked`]).
const MARK_WAIT: Duration = Duration::from_millis(20);

/// Sets `SO_RCVLOWAT` on `s` (which neither nix nor socket2 carries): a read returns once
/// `min(bytes, what it asks for)` bytes are there, but a reader that sleeps is woken only when
/// `bytes` are queued (whatever it asked for): set it only while that many are sure to come.
/// Returns whether it was set.
fn set_rcvlowat(s: &TcpStream, bytes: usize) -> bool {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a socket we own, with a pointer to an int and its size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&raw const v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}
