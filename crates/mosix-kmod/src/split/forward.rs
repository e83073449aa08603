//! Forwarded system calls: marshalling on the remote node, execution at home.
//!
//! On the remote node the supervisor turns a notification into a [`Call`]: the arguments as the
//! process passed them, plus the contents of its input buffers and paths, read from its memory
//! ([`marshal`]). The shapes come from the table in `mosix_core::syscalls`; calls that do not
//! fit it (iovecs, ioctl and fcntl commands, fd sets) are normalised here — `readv` becomes one
//! `read` of the total length, scattered back on return, `writev` one `write` of the gathered
//! bytes (the same atomicity for a pipe).
//!
//! At home, [`Plan`] lays the call out again over local buffers: [`exec_service`] runs it in the
//! service on duplicates of the deputy's descriptors (taken once with `pidfd_getfd` and cached:
//! the open file description — offset, flags — is shared, so this is the deputy's I/O),
//! and the deputy thread runs the other calls inside the deputy with the same plan placed in its
//! scratch space. The [`Reply`] carries the result and the output buffers, which the remote
//! writes back into the process before answering the notification.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use mosix_core::proto::{Call, IO_ANSWERED, IO_EOF, IO_STREAM, Reply};
use mosix_core::syscalls::{self, Arg, Class, Len, MAX_IO, MAX_PATH};

use crate::kernel::ptrace::Mem;

const EFAULT: i64 = libc::EFAULT as i64;
const EINVAL: i64 = libc::EINVAL as i64;
const EBADF: i64 = libc::EBADF as i64;
const ENOMEM: i64 = libc::ENOMEM as i64;

/// The most elements of a poll array or an iovec we accept (the kernel's own limits are 1 << 20
/// open files and IOV_MAX = 1024).
pub const MAX_POLL: u64 = 65_536;
/// IOV_MAX.
pub const MAX_IOV: u64 = 1024;

/// The shape of a call's arguments once the command-dependent ones (ioctl, fcntl) are resolved.
pub fn shape(nr: u64, args: &[u64; 6]) -> (Class, [Arg; 6]) {
    let sp = syscalls::spec(nr);
    let mut shape = sp.args;
    let mut class = sp.class;
    if nr == libc::SYS_ioctl as u64 {
        let (c, a) = syscalls::ioctl_class(args[1]);
        class = c;
        shape[2] = a;
    } else if nr == libc::SYS_fcntl as u64 {
        let (c, a) = syscalls::fcntl_class(args[1]);
        class = c;
        shape[2] = a;
    }
    (class, shape)
}

/// A buffer's size. `deref` reads the `socklen_t` a [`Len::Deref`] argument points to (from the
/// process's memory on the remote, from the call's own buffer at home).
fn len_of(l: Len, args: &[u64; 6], deref: impl Fn(u8) -> Option<u32>) -> u64 {
    match l {
        Len::Fixed(n) => u64::from(n),
        Len::Arg(i) => args[usize::from(i)],
        Len::ArgTimes(i, sz) => args[usize::from(i)].saturating_mul(u64::from(sz)),
        Len::Deref(i, max) => u64::from(deref(i).unwrap_or(0).min(max)),
    }
}

fn socklen_in(b: Option<&Vec<u8>>) -> Option<u32> {
    b.and_then(|b| b.get(..4))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Bounds the lengths of a call's buffers, rewriting the count arguments a too-large buffer
/// depends on (a short read or write is a valid result). Returns `Err(-errno)` for an
/// impossible request.
pub fn bound_lengths(shape: &[Arg; 6], args: &mut [u64; 6]) -> Result<(), i64> {
    for a in shape {
        match a {
            Arg::In(Len::Arg(i)) | Arg::Out(Len::Arg(i)) | Arg::InOut(Len::Arg(i)) => {
                let i = usize::from(*i);
                args[i] = args[i].min(MAX_IO as u64);
            }
            Arg::In(Len::ArgTimes(i, _))
            | Arg::Out(Len::ArgTimes(i, _))
            | Arg::InOut(Len::ArgTimes(i, _))
                if args[usize::from(*i)] > MAX_POLL =>
            {
                return Err(-EINVAL);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where a reply's output buffer goes in the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutKind {
    /// One buffer at this address.
    Plain(u64),
    /// Scattered over these (address, length) pieces (readv).
    Scatter(Vec<(u64, u64)>),
}

/// An output buffer the remote will write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutSlot {
    /// The argument index it belongs to.
    pub arg: u8,
    /// Its capacity: a reply may not write more.
    pub cap: u64,
    /// Where it goes.
    pub kind: OutKind,
}

/// A call ready to go home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marshalled {
    /// The call.
    pub call: Call,
    /// Where its results go.
    pub outs: Vec<OutSlot>,
}

fn read_buf(mem: &Mem, addr: u64, len: u64) -> Result<Vec<u8>, i64> {
    let mut b = vec![0u8; usize::try_from(len).map_err(|_| -ENOMEM)?];
    mem.read(addr, &mut b).map_err(|_| -EFAULT)?;
    Ok(b)
}

fn read_iov(mem: &Mem, addr: u64, count: u64) -> Result<Vec<(u64, u64)>, i64> {
    if count > MAX_IOV {
        return Err(-EINVAL);
    }
    let raw = read_buf(mem, addr, count * 16)?;
    Ok(raw
        .chunks_exact(16)
        .map(|c| {
            let base = u64::from_le_bytes(c[0..8].try_into().unwrap_or([0; 8]));
            let len = u64::from_le_bytes(c[8..16].try_into().unwrap_or([0; 8]));
            (base, len)
        })
        .collect())
}

/// Builds the call for a notification of call `nr` with `args`, reading what it needs from the
/// process's memory. `Err(-errno)` is the answer to give the process at once (EFAULT for a bad
/// pointer, as the kernel would).
pub fn marshal(nr: u64, args: [u64; 6], mem: &Mem) -> Result<Marshalled, i64> {
    let mut args = args;
    // Vectored I/O becomes plain I/O of the total length.
    let vectored = [
        (libc::SYS_readv, false, false),
        (libc::SYS_preadv, false, true),
        (libc::SYS_preadv2, false, true),
        (libc::SYS_writev, true, false),
        (libc::SYS_pwritev, true, true),
        (libc::SYS_pwritev2, true, true),
    ];
    if let Some(&(_, write, positioned)) = vectored.iter().find(|v| v.0 as u64 == nr) {
        let iov = read_iov(mem, args[1], args[2])?;
        let mut total = 0u64;
        let mut pieces = Vec::new();
        for (b, l) in iov {
            let take = l.min(MAX_IO as u64 - total);
            if take > 0 {
                pieces.push((b, take));
                total += take;
            }
            if total >= MAX_IO as u64 {
                break;
            }
        }
        // preadv2/pwritev2 with offset -1 use the file position.
        let positioned = positioned && args[3] != u64::MAX;
        let (nr2, a) = match (write, positioned) {
            (false, false) => (libc::SYS_read, [args[0], 1, total, 0, 0, 0]),
            (false, true) => (libc::SYS_pread64, [args[0], 1, total, args[3], 0, 0]),
            (true, false) => (libc::SYS_write, [args[0], 1, total, 0, 0, 0]),
            (true, true) => (libc::SYS_pwrite64, [args[0], 1, total, args[3], 0, 0]),
        };
        let mut call = Call {
            nr: nr2 as u32,
            args: a,
            bufs: Vec::new(),
            ahead: 0,
        };
        let mut outs = Vec::new();
        if write {
            let mut data = Vec::with_capacity(total as usize);
            for (b, l) in &pieces {
                data.extend_from_slice(&read_buf(mem, *b, *l)?);
            }
            call.bufs.push((1, data));
        } else {
            outs.push(OutSlot {
                arg: 1,
                cap: total,
                kind: OutKind::Scatter(pieces),
            });
        }
        return Ok(Marshalled { call, outs });
    }

    let (_, shape) = shape(nr, &args);
    bound_lengths(&shape, &mut args)?;
    let deref = |i: u8| {
        let at = args[usize::from(i)];
        let mut b = [0u8; 4];
        (at != 0 && mem.read(at, &mut b).is_ok()).then(|| u32::from_le_bytes(b))
    };
    let mut bufs = Vec::new();
    let mut outs = Vec::new();
    for (i, a) in shape.iter().enumerate() {
        let ptr = args[i];
        let idx = i as u8;
        match *a {
            Arg::Path if ptr != 0 => {
                let p = mem.read_cstr(ptr, MAX_PATH).map_err(|_| -EFAULT)?;
                bufs.push((idx, p));
            }
            Arg::In(l) if ptr != 0 => {
                bufs.push((idx, read_buf(mem, ptr, len_of(l, &args, deref))?));
            }
            Arg::Out(l) if ptr != 0 => outs.push(OutSlot {
                arg: idx,
                cap: len_of(l, &args, deref),
                kind: OutKind::Plain(ptr),
            }),
            Arg::InOut(l) if ptr != 0 => {
                let n = len_of(l, &args, deref);
                bufs.push((idx, read_buf(mem, ptr, n)?));
                outs.push(OutSlot {
                    arg: idx,
                    cap: n,
                    kind: OutKind::Plain(ptr),
                });
            }
            Arg::Special if ptr != 0 => {
                // select / pselect6: fd sets of nfds bits, in and out.
                let nfds = args[0].min(1024);
                let n = nfds.div_ceil(64) * 8;
                bufs.push((idx, read_buf(mem, ptr, n)?));
                outs.push(OutSlot {
                    arg: idx,
                    cap: n,
                    kind: OutKind::Plain(ptr),
                });
            }
            _ => {}
        }
    }
    Ok(Marshalled {
        call: Call {
            nr: nr as u32,
            args,
            bufs,
            ahead: 0,
        },
        outs,
    })
}

/// Writes a reply's output buffers into the process. A buffer larger than its slot, or for an
/// argument that has no slot, is refused (a home that misbehaves cannot scribble over a guest).
pub fn write_back(m: &Marshalled, reply: &Reply, mem: &Mem) -> Result<(), String> {
    for (arg, data) in &reply.outs {
        let Some(slot) = m.outs.iter().find(|s| s.arg == *arg) else {
            return Err(format!(
                "reply writes argument {arg}, which has no output buffer"
            ));
        };
        if data.len() as u64 > slot.cap {
            return Err(format!(
                "reply writes {} bytes into a buffer of {}",
                data.len(),
                slot.cap
            ));
        }
        match &slot.kind {
            OutKind::Plain(addr) => mem.write(*addr, data).map_err(|e| e.to_string())?,
            OutKind::Scatter(pieces) => {
                let mut off = 0usize;
                for (addr, len) in pieces {
                    if off >= data.len() {
                        break;
                    }
                    let n = (*len as usize).min(data.len() - off);
                    mem.write(*addr, &data[off..off + n])
                        .map_err(|e| e.to_string())?;
                    off += n;
                }
            }
        }
    }
    Ok(())
}

/// A call laid out over local buffers: what [`exec_service`] and the deputy both run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The call number.
    pub nr: u64,
    /// The arguments, pointers still the remote's (NULL or not).
    pub args: [u64; 6],
    /// The shape.
    pub shape: [Arg; 6],
    /// A buffer per argument that has one: inputs filled, outputs zeroed to their capacity;
    /// paths NUL-terminated.
    pub bufs: [Option<Vec<u8>>; 6],
}

impl Plan {
    /// Lays out a call. Buffers the call needs but did not bring are zero-filled to their
    /// capacity; sizes are bounded again here (the remote is trusted to be a node of ours, not to
    /// be right).
    pub fn new(call: &Call) -> Result<Plan, i64> {
        let nr = u64::from(call.nr);
        let mut args = call.args;
        let (_, shape) = shape(nr, &args);
        bound_lengths(&shape, &mut args)?;
        let mut bufs: [Option<Vec<u8>>; 6] = Default::default();
        for (i, data) in &call.bufs {
            let i = usize::from(*i);
            if i < 6 {
                bufs[i] = Some(data.clone());
            }
        }
        // A value-result length is clamped to the buffer we make for it, so the kernel here
        // never writes past that buffer whatever the remote said.
        for a in &shape {
            if let Arg::Out(Len::Deref(j, max)) = *a
                && let Some(b) = bufs.get_mut(usize::from(j)).and_then(Option::as_mut)
                && let Some(v) = socklen_in(Some(b))
            {
                b[..4].copy_from_slice(&v.min(max).to_le_bytes());
            }
        }
        let lens: [Option<u32>; 6] =
            std::array::from_fn(|i| socklen_in(bufs[i].as_ref().filter(|b| b.len() == 4)));
        let deref = |i: u8| lens.get(usize::from(i)).copied().flatten();
        for (i, a) in shape.iter().enumerate() {
            let ptr = args[i];
            match *a {
                Arg::Path => {
                    if let Some(b) = &mut bufs[i] {
                        if b.len() > MAX_PATH {
                            return Err(-EINVAL);
                        }
                        b.push(0);
                    } else if ptr != 0 {
                        return Err(-EFAULT);
                    }
                }
                Arg::In(l) | Arg::InOut(l) => {
                    let n = len_of(l, &args, deref) as usize;
                    match &mut bufs[i] {
                        Some(b) => b.resize(n, 0),
                        None if ptr != 0 => return Err(-EFAULT),
                        None => {}
                    }
                }
                Arg::Out(l) if ptr != 0 => {
                    let n = len_of(l, &args, deref) as usize;
                    if n > MAX_IO + MAX_PATH {
                        return Err(-EINVAL);
                    }
                    bufs[i] = Some(vec![0u8; n]);
                }
                Arg::Special => {
                    let n = (args[0].min(1024).div_ceil(64) * 8) as usize;
                    if let Some(b) = &mut bufs[i] {
                        b.resize(n, 0);
                    }
                }
                _ => {}
            }
        }
        Ok(Plan {
            nr,
            args,
            shape,
            bufs,
        })
    }

    /// The output buffers to send back, given the call's result.
    pub fn outputs(&self, ret: i64) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        if ret < 0 {
            return v;
        }
        for (i, a) in self.shape.iter().enumerate() {
            let Some(b) = &self.bufs[i] else { continue };
            match a {
                // A buffer sized by an argument holds as many bytes as the call returns (read,
                // getdents, readlink, recvfrom, getcwd).
                Arg::Out(Len::Arg(_)) => {
                    let n = (ret as usize).min(b.len());
                    v.push((i as u8, b[..n].to_vec()));
                }
                // As many bytes as the call says it wrote, if it wrote fewer than there is room.
                Arg::Out(Len::Deref(j, _)) => {
                    let said = socklen_in(self.bufs[usize::from(*j)].as_ref()).unwrap_or(0);
                    let n = (said as usize).min(b.len());
                    v.push((i as u8, b[..n].to_vec()));
                }
                Arg::Out(_) | Arg::InOut(_) | Arg::Special => v.push((i as u8, b.clone())),
                _ => {}
            }
        }
        v
    }
}

/// The deputy's descriptors as duplicates in the service, taken on first use.
#[derive(Debug)]
pub struct FdTable {
    pid: i32,
    pidfd: OwnedFd,
    /// Our duplicates, and whether each is a terminal.
    cache: HashMap<i32, (OwnedFd, bool)>,
}

impl FdTable {
    /// For the process `pid` (the deputy).
    pub fn new(pid: i32) -> std::io::Result<FdTable> {
        Ok(FdTable {
            pid,
            pidfd: crate::kernel::seccomp::pidfd_open(pid)?,
            cache: HashMap::new(),
        })
    }

    /// Our duplicate of the deputy's descriptor `fd`.
    pub fn get(&mut self, fd: i32) -> Result<RawFd, i64> {
        if fd < 0 {
            return Err(-EBADF);
        }
        if let Some((f, _)) = self.cache.get(&fd) {
            return Ok(f.as_raw_fd());
        }
        match crate::kernel::seccomp::getfd(&self.pidfd, fd) {
            Ok(f) => {
                let raw = f.as_raw_fd();
                // SAFETY: isatty(3) only asks the kernel about a descriptor we own.
                let tty = unsafe { libc::isatty(raw) } == 1;
                self.cache.insert(fd, (f, tty));
                Ok(raw)
            }
            Err(_) => Err(-EBADF),
        }
    }

    /// Whether the deputy's descriptor `fd` is a terminal. Calls on a terminal run inside the
    /// deputy, not here: the terminal's job control (`SIGTTIN` for a read from the background,
    /// `SIGTTOU` for a write or a mode change) applies to the caller's process group, and the
    /// service is in none of the terminal's.
    pub fn is_terminal(&mut self, fd: i32) -> bool {
        self.get(fd).is_ok() && self.cache.get(&fd).is_some_and(|(_, tty)| *tty)
    }

    /// Whether the deputy's `fd` is a regular file whose open file description no other
    /// descriptor of the deputy shares (see [`exec_streamed`]).
    pub fn streamable(&mut self, fd: i32) -> bool {
        let Ok(raw) = self.get(fd) else { return false };
        // SAFETY: fstat(2) fills a stat struct we own.
        let regular = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(raw, &raw mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
        };
        if !regular {
            return false;
        }
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return false;
        };
        for e in dir.flatten() {
            let Some(other) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if other == fd {
                continue;
            }
            // SAFETY: kcmp(2) compares two descriptors of a process by number; no memory.
            let same = unsafe {
                libc::syscall(
                    libc::SYS_kcmp,
                    self.pid,
                    self.pid,
                    crate::kernel::abi::KCMP_FILE,
                    fd,
                    other,
                )
            };
            if same == 0 {
                return false;
            }
        }
        true
    }

    /// Forgets our duplicate of `fd` (after the deputy closed it or replaced it).
    pub fn forget(&mut self, fd: i32) {
        self.cache.remove(&fd);
    }

    /// Forgets every duplicate from `first` up.
    pub fn forget_from(&mut self, first: i32) {
        self.cache.retain(|k, _| *k < first);
    }

    /// Updates the cache after the deputy ran `nr(args)` with result `ret`.
    pub fn after_deputy_call(&mut self, nr: u64, args: &[u64; 6], ret: i64) {
        if ret < 0 {
            return;
        }
        let n = nr as i64;
        if n == libc::SYS_close {
            self.forget(args[0] as i32);
        } else if n == libc::SYS_dup2 || n == libc::SYS_dup3 {
            self.forget(args[1] as i32);
        } else if n == libc::SYS_close_range {
            self.forget_from(args[0] as i32);
        }
    }
}

/// Runs a service-class call on duplicates of the deputy's descriptors.
pub fn exec_service(call: &Call, fds: &mut FdTable) -> Reply {
    let mut plan = match Plan::new(call) {
        Ok(p) => p,
        Err(e) => {
            return Reply {
                ret: e,
                outs: Vec::new(),
                io: 0,
            };
        }
    };
    let ret = run_local(&mut plan, fds);
    Reply {
        ret,
        outs: plan.outputs(ret),
        io: 0,
    }
}

/// Runs a `read` or `write` that asks about read-ahead or write-behind ([`Call::ahead`]).
///
/// Both are allowed only on a regular file whose open file description no other descriptor of
/// the deputy shares (`kcmp`): the remote keeps the bytes read ahead and gives them back (an
/// `lseek` backwards) before any call that could see the file's offset, so another descriptor
/// on the same description would read from the wrong place. The scan is repeated on every
/// read-ahead (about one per MiB), so a `dup` since the last one is seen.
pub fn exec_streamed(call: &Call, fds: &mut FdTable) -> Reply {
    let fd = call.args[0] as i32;
    let stream = fds.streamable(fd);
    let nr = i64::from(call.nr);
    if !stream || nr != libc::SYS_read {
        let mut r = exec_service(call, fds);
        r.io = IO_ANSWERED | if stream { IO_STREAM } else { 0 };
        return r;
    }
    let Ok(raw) = fds.get(fd) else {
        return Reply {
            ret: -EBADF,
            outs: Vec::new(),
            io: IO_ANSWERED,
        };
    };
    let asked = call.args[2].min(MAX_IO as u64) as usize;
    let want = (asked + call.ahead as usize).min(MAX_IO);
    let mut buf = vec![0u8; want];
    let mut got = 0usize;
    let mut eof = false;
    while got < want {
        // SAFETY: read(2) into the unfilled tail of our own buffer.
        let r = unsafe { libc::read(raw, buf[got..].as_mut_ptr().cast(), want - got) };
        if r < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if got == 0 {
                return Reply {
                    ret: -i64::from(e),
                    outs: Vec::new(),
                    io: IO_ANSWERED | IO_STREAM,
                };
            }
            break;
        }
        if r == 0 {
            eof = true;
            break;
        }
        got += r as usize;
    }
    buf.truncate(got);
    Reply {
        ret: got.min(asked) as i64,
        outs: vec![(1, buf)],
        io: IO_ANSWERED | IO_STREAM | if eof { IO_EOF } else { 0 },
    }
}

fn run_local(plan: &mut Plan, fds: &mut FdTable) -> i64 {
    let nr = plan.nr as i64;
    let mut a = [0u64; 6];
    // poll/ppoll: the fds inside the array are the deputy's.
    let mut poll_fds: Vec<i32> = Vec::new();
    if (nr == libc::SYS_poll || nr == libc::SYS_ppoll)
        && let Some(b) = &mut plan.bufs[0]
    {
        for c in b.chunks_exact_mut(8) {
            let fd = i32::from_le_bytes(c[0..4].try_into().unwrap_or([0; 4]));
            poll_fds.push(fd);
            let local = if fd < 0 {
                -1
            } else {
                fds.get(fd).unwrap_or(-1)
            };
            c[0..4].copy_from_slice(&local.to_le_bytes());
        }
    }
    // select/pselect6: translate the fd sets.
    let mut select_map: Vec<(i32, RawFd)> = Vec::new();
    if nr == libc::SYS_select || nr == libc::SYS_pselect6 {
        let nfds = plan.args[0].min(1024) as i32;
        let mut max_local = -1;
        for fd in 0..nfds {
            let set = (1..=3).any(|i| {
                plan.bufs[i].as_ref().is_some_and(|b| {
                    b.get((fd / 8) as usize)
                        .is_some_and(|x| x & (1 << (fd % 8)) != 0)
                })
            });
            if set {
                match fds.get(fd) {
                    Ok(l) => {
                        select_map.push((fd, l));
                        max_local = max_local.max(l);
                    }
                    Err(e) => return e,
                }
            }
        }
        let words = ((max_local + 64) / 64).max(1) as usize;
        for i in 1..=3 {
            if let Some(b) = &mut plan.bufs[i] {
                let old = std::mem::take(b);
                let mut new = vec![0u8; words * 8];
                for &(fd, l) in &select_map {
                    if old
                        .get((fd / 8) as usize)
                        .is_some_and(|x| x & (1 << (fd % 8)) != 0)
                    {
                        new[(l / 8) as usize] |= 1 << (l % 8);
                    }
                }
                *b = new;
            }
        }
        a[0] = (max_local + 1) as u64;
    }
    for (i, s) in plan.shape.iter().enumerate() {
        a[i] = match s {
            Arg::Fd => match fds.get(plan.args[i] as i32) {
                Ok(fd) => fd as u64,
                Err(e) => return e,
            },
            Arg::Int | Arg::None => {
                if i == 0 && !select_map.is_empty() {
                    a[0]
                } else {
                    plan.args[i]
                }
            }
            _ => match &mut plan.bufs[i] {
                Some(b) => b.as_mut_ptr() as u64,
                None => 0,
            },
        };
    }
    // pselect6's sixth argument (a sigmask) is not carried: the wait at home is not about the
    // remote's signals.
    if nr == libc::SYS_pselect6 {
        a[5] = 0;
    }
    // SAFETY: `nr` is a service-class call from the table, whose pointer arguments were just
    // replaced by pointers to buffers owned by `plan`, each at least as large as the shape says
    // the kernel may access (Plan::new sized them), and whose descriptor arguments are
    // descriptors this process owns (the cache); everything outlives the call.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    let ret = if r < 0 {
        -(nix::errno::Errno::last_raw() as i64)
    } else {
        r
    };
    // Put the deputy's numbers back into the arrays we hand back.
    if !poll_fds.is_empty()
        && let Some(b) = &mut plan.bufs[0]
    {
        for (c, fd) in b.chunks_exact_mut(8).zip(&poll_fds) {
            c[0..4].copy_from_slice(&fd.to_le_bytes());
        }
    }
    if !select_map.is_empty() {
        let nfds = plan.args[0].min(1024) as usize;
        for i in 1..=3 {
            if let Some(b) = &mut plan.bufs[i] {
                let local = std::mem::take(b);
                let mut out = vec![0u8; nfds.div_ceil(64) * 8];
                for &(fd, l) in &select_map {
                    if local
                        .get((l / 8) as usize)
                        .is_some_and(|x| x & (1 << (l % 8)) != 0)
                    {
                        out[(fd / 8) as usize] |= 1 << (fd % 8);
                    }
                }
                *b = out;
            }
        }
    }
    ret
}

/// A plan placed in the deputy's scratch space: the arguments to inject, and where each buffer
/// lives (argument index, offset in the scratch space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The arguments with buffers pointing into the scratch space.
    pub args: [u64; 6],
    /// (argument, scratch address, length) of each buffer.
    pub at: Vec<(usize, u64, usize)>,
}

/// Places a plan's buffers in a scratch space starting at `scratch` of `len` bytes.
pub fn place(plan: &Plan, scratch: u64, len: u64) -> Result<Placed, i64> {
    let mut args = plan.args;
    let mut at = Vec::new();
    let mut off = 0u64;
    for (i, b) in plan.bufs.iter().enumerate() {
        if let Some(b) = b {
            let n = b.len() as u64;
            if off + n > len {
                return Err(-ENOMEM);
            }
            args[i] = scratch + off;
            at.push((i, scratch + off, b.len()));
            off += n.div_ceil(16) * 16;
        } else if matches!(
            plan.shape[i],
            Arg::Path | Arg::In(_) | Arg::Out(_) | Arg::InOut(_)
        ) {
            args[i] = 0;
        }
    }
    Ok(Placed { args, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(nr: i64, args: [u64; 6], bufs: Vec<(u8, Vec<u8>)>) -> Call {
        Call {
            nr: nr as u32,
            args,
            bufs,
            ahead: 0,
        }
    }

    #[test]
    fn plans_size_their_buffers() {
        let p = Plan::new(&call(libc::SYS_read, [0, 0x1000, 100, 0, 0, 0], vec![])).unwrap();
        assert_eq!(p.bufs[1].as_ref().unwrap().len(), 100);
        let p = Plan::new(&call(libc::SYS_read, [0, 0x1000, 1 << 40, 0, 0, 0], vec![])).unwrap();
        assert_eq!(
            p.bufs[1].as_ref().unwrap().len(),
            MAX_IO,
            "reads are bounded"
        );
        assert_eq!(p.args[2], MAX_IO as u64);
        let p = Plan::new(&call(
            libc::SYS_openat,
            [100, 0x1000, 0, 0, 0, 0],
            vec![(1, b"/etc/x".to_vec())],
        ))
        .unwrap();
        assert_eq!(p.bufs[1].as_deref(), Some(&b"/etc/x\0"[..]));
        assert_eq!(
            Plan::new(&call(libc::SYS_openat, [100, 0x1000, 0, 0, 0, 0], vec![])).unwrap_err(),
            -EFAULT,
            "a path pointer without its path"
        );
        let p = Plan::new(&call(libc::SYS_fstat, [3, 0x1000, 0, 0, 0, 0], vec![])).unwrap();
        assert_eq!(p.bufs[1].as_ref().unwrap().len(), 144);
    }

    #[test]
    fn value_result_lengths_size_and_bound_their_buffers() {
        // getsockopt(fd, level, name, optval, &optlen) with optlen = 4: a 4-byte buffer, not
        // the largest option there is (writing more smashed the caller's stack).
        let p = Plan::new(&call(
            libc::SYS_getsockopt,
            [3, 1, 4, 0x1000, 0x2000, 0],
            vec![(4, 4u32.to_le_bytes().to_vec())],
        ))
        .unwrap();
        assert_eq!(p.bufs[3].as_ref().unwrap().len(), 4);
        // A length larger than any option is clamped, here too, before the kernel sees it.
        let mut p = Plan::new(&call(
            libc::SYS_getsockopt,
            [3, 1, 4, 0x1000, 0x2000, 0],
            vec![(4, 100_000u32.to_le_bytes().to_vec())],
        ))
        .unwrap();
        assert_eq!(p.bufs[3].as_ref().unwrap().len(), 256);
        assert_eq!(p.bufs[4].as_deref(), Some(&256u32.to_le_bytes()[..]));
        // The call wrote 4 bytes and said so: 4 bytes go back.
        p.bufs[4] = Some(4u32.to_le_bytes().to_vec());
        let outs = p.outputs(0);
        assert_eq!(outs.iter().find(|o| o.0 == 3).unwrap().1.len(), 4);
        // recvfrom's address: as many bytes as addrlen allows.
        let p = Plan::new(&call(
            libc::SYS_recvfrom,
            [3, 0x1000, 10, 0, 0x2000, 0x3000],
            vec![(5, 16u32.to_le_bytes().to_vec())],
        ))
        .unwrap();
        assert_eq!(p.bufs[4].as_ref().unwrap().len(), 16);
    }

    #[test]
    fn outputs_hold_what_the_call_returned() {
        let mut p = Plan::new(&call(libc::SYS_read, [0, 0x1000, 8, 0, 0, 0], vec![])).unwrap();
        p.bufs[1] = Some(b"abcdefgh".to_vec());
        assert_eq!(p.outputs(3), vec![(1, b"abc".to_vec())]);
        assert!(p.outputs(-5).is_empty());
    }

    #[test]
    fn service_calls_run_on_duplicates() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let me = std::process::id() as i32;
        let mut fds = FdTable::new(me).unwrap();
        let wr = exec_service(
            &call(
                libc::SYS_write,
                [w.as_raw_fd() as u64, 0x1000, 5, 0, 0, 0],
                vec![(1, b"hello".to_vec())],
            ),
            &mut fds,
        );
        assert_eq!(wr.ret, 5);
        let rd = exec_service(
            &call(
                libc::SYS_read,
                [r.as_raw_fd() as u64, 0x1000, 64, 0, 0, 0],
                vec![],
            ),
            &mut fds,
        );
        assert_eq!(rd.ret, 5);
        assert_eq!(rd.outs, vec![(1, b"hello".to_vec())]);
        let bad = exec_service(
            &call(libc::SYS_read, [9999, 0x1000, 64, 0, 0, 0], vec![]),
            &mut fds,
        );
        assert_eq!(bad.ret, -EBADF);
        // poll on the deputy's numbers.
        let mut pfd = Vec::new();
        pfd.extend_from_slice(&(w.as_raw_fd()).to_le_bytes());
        pfd.extend_from_slice(&(libc::POLLOUT).to_le_bytes());
        pfd.extend_from_slice(&0i16.to_le_bytes());
        let pr = exec_service(
            &call(libc::SYS_poll, [0x1000, 1, 0, 0, 0, 0], vec![(0, pfd)]),
            &mut fds,
        );
        assert_eq!(pr.ret, 1);
        let out = &pr.outs[0].1;
        assert_eq!(
            i32::from_le_bytes(out[0..4].try_into().unwrap()),
            w.as_raw_fd(),
            "the deputy's number comes back"
        );
        assert_ne!(
            i16::from_le_bytes(out[6..8].try_into().unwrap()) & libc::POLLOUT,
            0
        );
    }

    #[test]
    fn placing_respects_the_scratch_size() {
        let p = Plan::new(&call(
            libc::SYS_readlink,
            [0x1000, 0x2000, 4096, 0, 0, 0],
            vec![(0, b"/x".to_vec())],
        ))
        .unwrap();
        let placed = place(&p, 0x7000, 8192).unwrap();
        assert_eq!(placed.args[0], 0x7000);
        assert_eq!(placed.args[1], 0x7010);
        assert_eq!(place(&p, 0x7000, 100).unwrap_err(), -ENOMEM);
    }
}
