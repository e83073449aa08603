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

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosix_core::proto::seal::{self, Opener, Sealer, Session, TAG_LEN};
use mosix_core::proto::{FrameError, MAX_PROC_FRAME, ProcMsg};

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
/// and written in one order.
#[derive(Debug)]
struct Out {
    /// Unbuffered: every frame is sealed whole into `frame` and written in one call.
    w: TcpStream,
    sealer: Sealer,
    /// The frame being sent (capacity reused).
    frame: Vec<u8>,
}

/// The writing half, shareable.
#[derive(Debug, Clone)]
pub struct Sender {
    w: Arc<Mutex<Out>>,
    /// Another descriptor of the same socket, to look at its state without the lock.
    probe: Arc<TcpStream>,
}

/// The reading half.
#[derive(Debug)]
pub struct Receiver {
    r: BufReader<TcpStream>,
    opener: Opener,
    /// The frame being received (capacity reused).
    buf: Vec<u8>,
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

/// Splits a process connection into its halves.
pub fn split(conn: Conn) -> std::io::Result<(Sender, Receiver)> {
    let Conn { stream, session } = conn;
    watch(&stream)?;
    let w = stream.try_clone()?;
    let probe = Arc::new(stream.try_clone()?);
    Ok((
        Sender {
            w: Arc::new(Mutex::new(Out {
                w,
                sealer: session.sealer,
                frame: Vec::new(),
            })),
            probe,
        },
        Receiver {
            r: BufReader::with_capacity(256 * 1024, stream),
            opener: session.opener,
            buf: Vec::new(),
        },
    ))
}

impl Sender {
    fn lock(&self) -> std::sync::MutexGuard<'_, Out> {
        self.w.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the connection is known to be dead (reset, closed by the peer, or timed out by
    /// keepalive), without reading from it. For a thread that waits on something else (a call
    /// blocked at home) and must not outlive the other side.
    pub fn peer_gone(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut p = libc::pollfd {
            fd: self.probe.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout.
        let n = unsafe { libc::poll(&raw mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Sends one message.
    pub fn send(&self, m: &ProcMsg) -> Result<(), FrameError> {
        let mut g = self.lock();
        let out = &mut *g;
        out.sealer.encode(m, &mut out.frame)?;
        out.w.write_all(&out.frame)?;
        if out.frame.capacity() > KEEP_BUF {
            out.frame = Vec::new();
        }
        Ok(())
    }

    /// Sends a page run: its `Pages` frame and its bytes, as two records, in one vectored write
    /// (one system call, and no small segment of its own for the frame). `data` is sealed in
    /// place — encrypted where it is, or left as it is when the link only authenticates — so
    /// the caller's buffer holds what went on the wire afterwards. One AEAD call for the whole
    /// run.
    pub fn send_run(&self, vma: u32, offset: u64, data: &mut [u8]) -> Result<(), FrameError> {
        let len = u32::try_from(data.len()).map_err(|_| FrameError::TooLong {
            len: data.len(),
            limit: mosix_core::image::MAX_RUN,
        })?;
        let mut g = self.lock();
        let Out { w, sealer, frame } = &mut *g;
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
        Ok(())
    }

    /// Says this side will send no more (the peer reads an end of stream after what was sent).
    pub fn close_write(&self) {
        let g = self.lock();
        let _ = g.w.shutdown(std::net::Shutdown::Write);
    }

    /// Closes the connection (both halves).
    pub fn shutdown(&self) {
        let g = self.lock();
        let _ = g.w.shutdown(std::net::Shutdown::Both);
    }
}

impl Receiver {
    /// Receives one message, opened and checked.
    pub fn recv(&mut self) -> Result<ProcMsg, FrameError> {
        let m: ProcMsg =
            seal::read_sealed(&mut self.r, &mut self.opener, MAX_PROC_FRAME, &mut self.buf)?;
        if self.buf.capacity() > KEEP_BUF {
            self.buf = Vec::new();
        }
        m.validate()?;
        Ok(m)
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
        // side's CPU in a profile). Only for the run's own bytes: a frame after it may be the
        // last one for a while, and a low-water mark above what is coming would wait for ever.
        let coming = buf.len().saturating_sub(self.r.buffer().len());
        let lowat = coming >= 2 * RUN_LOWAT && set_rcvlowat(self.r.get_ref(), RUN_LOWAT);
        let read = self.r.read_exact(buf);
        if lowat {
            set_rcvlowat(self.r.get_ref(), 1);
        }
        read.map_err(eof)?;
        self.r.read_exact(&mut tag).map_err(eof)?;
        self.opener.open_run(buf, &tag)
    }

    /// Whether buffered bytes are waiting (so a poll on the socket would not show them).
    pub fn has_buffered(&self) -> bool {
        !self.r.buffer().is_empty()
    }

    /// The socket, for poll.
    pub fn socket(&self) -> &TcpStream {
        self.r.get_ref()
    }
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

/// Sets `SO_RCVLOWAT` on `s` (which neither nix nor socket2 carries): a read waits until
/// `min(bytes, what it asks for)` bytes are there. Returns whether it was set.
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
