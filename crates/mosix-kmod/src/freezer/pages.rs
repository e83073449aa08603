//! Page arrival: the runs of an image's memory, received off the process connection and
//! written into the process being rebuilt — by userfaultfd copies into a stub (whole runs at
//! once, 4 GB/s here), or by `process_vm_writev` into a deputy coming home.
//!
//! Receiving and writing overlap: one thread reads the runs off the connection into a few
//! buffers while a second writes the previous runs into the tracee, so the arrival costs the
//! slower of the two rather than their sum. Memory stays bounded by [`RUNS_IN_FLIGHT`] buffers
//! whatever the image says.

use mosix_core::image::{ImageHeader, Vma};
use mosix_core::proto::{FrameError, ProcMsg};

use crate::kernel::ptrace::{self, Error};
use crate::kernel::uffd::Uffd;
use crate::link::channel::Receiver;

/// How many page runs may be in flight between the thread that receives them and the one that
/// writes them (each at most [`mosix_core::image::MAX_RUN`] bytes).
pub const RUNS_IN_FLIGHT: usize = 4;

/// Why the pages of an image did not all arrive.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// The connection broke, or a frame on it was bad.
    #[error("receiving the image: {0}")]
    Link(#[from] FrameError),
    /// The sender broke the image's own rules (more bytes than announced, a message out of
    /// place).
    #[error("the image is malformed: {0}")]
    Malformed(String),
    /// Writing into the process failed.
    #[error("writing its memory: {0}")]
    Write(#[from] Error),
    /// The writing thread could not start or died.
    #[error("the page writer: {0}")]
    Writer(String),
}

/// Where the page runs of one restore go. The view can be used from another thread than the
/// tracer's (nothing in it is a ptrace request).
#[derive(Debug, Clone, Copy)]
pub struct Pages<'a> {
    pid: i32,
    sink: Option<&'a Uffd>,
}

impl<'a> Pages<'a> {
    /// Runs for process `pid`, through the userfaultfd `sink` if there is one (a userfaultfd
    /// of that process, its areas registered).
    pub fn new(pid: i32, sink: Option<&'a Uffd>) -> Pages<'a> {
        Pages { pid, sink }
    }

    /// Writes a run of pages of area `vma` of `vmas`, at `offset` inside it.
    pub fn write(&self, vmas: &[Vma], vma: u32, offset: u64, data: &[u8]) -> ptrace::Result<()> {
        let Some(v) = vmas.get(vma as usize) else {
            return Err(Error::Unexpected {
                pid: self.pid,
                what: format!("page run for area {vma}, which the image does not have"),
            });
        };
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > v.len()) {
            return Err(Error::Unexpected {
                pid: self.pid,
                what: format!("page run at {offset:#x}+{} runs past its area", data.len()),
            });
        }
        let addr = v.start + offset;
        let res = match self.sink {
            Some(u) => mixed(u, self.pid, addr, data),
            None => write_vm(self.pid, addr, data),
        };
        res.map_err(|source| Error::Mem {
            pid: self.pid,
            addr,
            source,
        })
    }
}

/// Writes `data` at `addr` through the userfaultfd `u` where pages are missing, and with
/// `process_vm_writev` where they are there already (a live move sends a page again once the
/// process wrote it). A kernel write to a missing page of a registered area fails (the
/// userfaultfd is for user faults only), so each kind of page goes its own way.
fn mixed(u: &Uffd, pid: i32, addr: u64, data: &[u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let n = u.copy_missing(addr + done as u64, &data[done..])?;
        done += n;
        if done == data.len() {
            break;
        }
        if n == 0 {
            // At a page that is there: write pages until one is missing (the write stops
            // short there) or all are written.
            let w = write_vm_some(pid, addr + done as u64, &data[done..])?;
            if w == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
            }
            done += w;
        }
    }
    Ok(())
}

/// `process_vm_writev` of `data` at `addr`, as far as it goes: the bytes written (short at the
/// first page it cannot write; an error only if it wrote nothing).
fn write_vm_some(pid: i32, addr: u64, data: &[u8]) -> std::io::Result<usize> {
    use nix::sys::uio::{RemoteIoVec, process_vm_writev};
    let n = process_vm_writev(
        nix::unistd::Pid::from_raw(pid),
        &[std::io::IoSlice::new(data)],
        &[RemoteIoVec {
            base: addr as usize,
            len: data.len(),
        }],
    )?;
    Ok(n)
}

/// Writes `data` at `addr` in process `pid` with `process_vm_writev` (the areas are writable
/// while they are being filled).
fn write_vm(pid: i32, addr: u64, data: &[u8]) -> std::io::Result<()> {
    use nix::sys::uio::{RemoteIoVec, process_vm_writev};
    let mut done = 0;
    while done < data.len() {
        let n = process_vm_writev(
            nix::unistd::Pid::from_raw(pid),
            &[std::io::IoSlice::new(&data[done..])],
            &[RemoteIoVec {
                base: (addr + done as u64) as usize,
                len: data.len() - done,
            }],
        )?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
        }
        done += n;
    }
    Ok(())
}

/// Receives the page runs of an image (after its header) into `pages`, up to `End`.
pub fn receive(rx: &mut Receiver, h: &ImageHeader, pages: Pages<'_>) -> Result<(), PagesError> {
    receive_runs(rx, &h.vmas, h.total_bytes, pages)
}

/// Receives page runs into areas `vmas` through `pages`, up to `End`, refusing more than
/// `announced` bytes in all.
pub fn receive_runs(
    rx: &mut Receiver,
    vmas: &[Vma],
    announced: u64,
    pages: Pages<'_>,
) -> Result<(), PagesError> {
    use std::sync::mpsc;
    let (full_tx, full_rx) = mpsc::sync_channel::<(u32, u64, usize, Vec<u8>)>(RUNS_IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..RUNS_IN_FLIGHT {
        let _ = empty_tx.send(Vec::new());
    }
    // A step this slow is logged: the process is stopped at its source meanwhile.
    let waited = |what: &str, begun: std::time::Instant| {
        if begun.elapsed() >= super::SLOW_STEP {
            tracing::warn!(
                "an arriving process's memory: {what} took {:.1} s",
                begun.elapsed().as_secs_f64()
            );
        }
    };
    std::thread::scope(|s| {
        let writer = std::thread::Builder::new()
            .name("mosix-pages-in".into())
            .spawn_scoped(s, move || -> Result<(), PagesError> {
                for (vma, offset, len, buf) in full_rx {
                    let begun = std::time::Instant::now();
                    pages.write(vmas, vma, offset, &buf[..len])?;
                    waited("writing a run into it", begun);
                    let _ = empty_tx.send(buf);
                }
                Ok(())
            })
            .map_err(|e| PagesError::Writer(format!("cannot start it: {e}")))?;
        let mut total = 0u64;
        // `Err(None)`: the writer stopped (its own error says why).
        let received = loop {
            let begun = std::time::Instant::now();
            let m = match rx.recv() {
                Ok(m) => m,
                Err(e) => break Err(Some(PagesError::Link(e))),
            };
            waited("waiting for the next frame", begun);
            match m {
                ProcMsg::Pages { vma, offset, len } => {
                    total += u64::from(len);
                    if total > announced {
                        break Err(Some(PagesError::Malformed(format!(
                            "it sends more than the {announced} bytes it announced"
                        ))));
                    }
                    let begun = std::time::Instant::now();
                    let Ok(mut buf) = empty_rx.recv() else {
                        break Err(None);
                    };
                    waited("waiting for a free buffer", begun);
                    let len = len as usize;
                    buf.resize(len, 0);
                    let begun = std::time::Instant::now();
                    if let Err(e) = rx.recv_raw(&mut buf[..len]) {
                        break Err(Some(PagesError::Link(e)));
                    }
                    waited("receiving a run", begun);
                    if full_tx.send((vma, offset, len, buf)).is_err() {
                        break Err(None);
                    }
                }
                ProcMsg::End => break Ok(()),
                other => {
                    break Err(Some(PagesError::Malformed(format!(
                        "unexpected message {other:?}"
                    ))));
                }
            }
        };
        drop(full_tx);
        drop(empty_rx);
        let begun = std::time::Instant::now();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(PagesError::Writer("it panicked".into())));
        waited("waiting for the last writes", begun);
        match (received, written) {
            (Ok(()), w) => w,
            (Err(Some(e)), _) | (Err(None), Err(e)) => Err(e),
            (Err(None), Ok(())) => Err(PagesError::Writer("it stopped".into())),
        }
    })
}
