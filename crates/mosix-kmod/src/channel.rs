//! A process connection: the authenticated TCP connection that carries one migrating process —
//! its image, its page runs, then its forwarded calls and signals — between two node services.
//!
//! Reads happen on one thread; writes may come from two (a deputy's call executor answers calls
//! while its tracer forwards signals), so the writing half is shared behind a mutex and every
//! frame (with the raw bytes of a page run) is written whole under it.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use mosix_core::proto::{self, FrameError, MAX_PROC_FRAME, ProcMsg};

/// The writing half, shareable.
#[derive(Debug, Clone)]
pub struct Sender {
    w: Arc<Mutex<BufWriter<TcpStream>>>,
}

/// The reading half.
#[derive(Debug)]
pub struct Receiver {
    r: BufReader<TcpStream>,
}

/// Splits a process connection into its halves.
pub fn split(stream: TcpStream) -> std::io::Result<(Sender, Receiver)> {
    let _ = stream.set_nodelay(true);
    let w = stream.try_clone()?;
    Ok((
        Sender {
            w: Arc::new(Mutex::new(BufWriter::with_capacity(256 * 1024, w))),
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
