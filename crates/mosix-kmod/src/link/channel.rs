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

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosix_core::proto::{self, FrameError, MAX_PROC_FRAME, ProcMsg};

/// The writing half, shareable.
#[derive(Debug, Clone)]
pub struct Sender {
    w: Arc<Mutex<BufWriter<TcpStream>>>,
    /// Another descriptor of the same socket, to look at its state without the lock.
    probe: Arc<TcpStream>,
}

/// The reading half.
#[derive(Debug)]
pub struct Receiver {
    r: BufReader<TcpStream>,
}

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

/// Splits a process connection into its halves.
pub fn split(stream: TcpStream) -> std::io::Result<(Sender, Receiver)> {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(&stream);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))?;
    let w = stream.try_clone()?;
    let probe = Arc::new(stream.try_clone()?);
    Ok((
        Sender {
            w: Arc::new(Mutex::new(BufWriter::with_capacity(256 * 1024, w))),
            probe,
        },
        Receiver {
            r: BufReader::with_capacity(256 * 1024, stream),
        },
    ))
}

impl Sender {
    fn lock(&self) -> std::sync::MutexGuard<'_, BufWriter<TcpStream>> {
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
        let mut w = self.lock();
        w.write_all(&proto::encode(m))?;
        w.flush()?;
        Ok(())
    }

    /// Sends a page run: its header and its bytes, without flushing (runs follow each other).
    pub fn send_run(&self, vma: u32, offset: u64, data: &[u8]) -> Result<(), FrameError> {
        let mut w = self.lock();
        w.write_all(&proto::encode(&ProcMsg::Pages {
            vma,
            offset,
            len: data.len() as u32,
        }))?;
        w.write_all(data)?;
        Ok(())
    }

    /// Says this side will send no more (the peer reads an end of stream after what was sent).
    pub fn close_write(&self) {
        let w = self.lock();
        let _ = w.get_ref().shutdown(std::net::Shutdown::Write);
    }

    /// Closes the connection (both halves).
    pub fn shutdown(&self) {
        let w = self.lock();
        let _ = w.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

impl Receiver {
    /// Receives one message, checked.
    pub fn recv(&mut self) -> Result<ProcMsg, FrameError> {
        let m: ProcMsg = proto::read_frame(&mut self.r, MAX_PROC_FRAME)?;
        m.validate()?;
        Ok(m)
    }

    /// Reads the raw bytes of a page run.
    pub fn recv_raw(&mut self, buf: &mut [u8]) -> Result<(), FrameError> {
        self.r.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Truncated
            } else {
                FrameError::Io(e)
            }
        })
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
