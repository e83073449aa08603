//! Forwarded system calls: marshalling on the remote node, execution at home.
//!
//! On the remote node the supervisor turns a notification into a [`Call`]: the arguments as the
//! process passed them, plus the contents of its input buffers and paths, read from its memory
//! ([`marshal`]). The shapes come from the table in `mosix_core::syscalls`; calls that do not
//! fit it (iovecs, ioctl and fcntl commands, fd sets) are normalised here — `readv` becomes one
//! `read` of the total length, scattered back on return, `writev` one `write` of the gathered
//! bytes (the same atomicity for a pipe).
//!
//! At home, [`Plan`] lays the call out again: [`exec_service`] places it in the buffers of the
//! deputy's agent (a thread of the deputy, [`crate::kernel::agent`]) and makes it there — on the
//! deputy's own descriptors, with the process's credentials, rlimits and namespaces, so the
//! kernel answers every check as it would natively — and the deputy's tracer runs the other
//! calls inside the deputy itself with the same plan placed in its scratch space. The [`Reply`] carries the result and the output buffers, which the remote
//! writes back into the process before answering the notification.

use mosix_core::proto::{Call, IO_ANSWERED, IO_EOF, IO_STREAM, Reply};
use mosix_core::syscalls::{self, Arg, Class, Len, MAX_IO, MAX_PATH};

use crate::kernel::agent::Agent;
use crate::kernel::ptrace::Mem;

const EFAULT: i64 = libc::EFAULT as i64;
const EINVAL: i64 = libc::EINVAL as i64;
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
    } else if nr == libc::SYS_prctl as u64 {
        let (c, a) = syscalls::prctl_class(args[0]);
        class = c;
        shape[1] = a;
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
                    // An fd set of `nfds` bits, at most FD_SETSIZE: the call is made with the
                    // clamped count, so the kernel reads no bit past the buffer made here.
                    args[0] = args[0].min(1024);
                    let n = (args[0].div_ceil(64) * 8) as usize;
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

/// Whether the deputy's `fd` is a regular file opened without `O_DIRECT`, `O_SYNC` or
/// `O_DSYNC`, whose open file description no other descriptor of the deputy shares: then only
/// this process's calls on that one descriptor can see its offset, and its reads may be read
/// ahead and its writes written behind (see [`exec_streamed`]). Asked of `/proc` (the file's
/// type and flags, and `kcmp` against every other descriptor), never of a duplicate.
pub fn streamable(pid: i32, fd: i32) -> bool {
    let Some((regular, _)) = identity(pid, fd) else {
        return false;
    };
    if !regular {
        return false;
    }
    // Writes that must reach the disk in order, or bypass the cache, are never behind.
    let flags = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        });
    let Some(flags) = flags else { return false };
    if flags & (libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC) != 0 {
        return false;
    }
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
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
                pid,
                pid,
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

/// Whether the deputy's `fd` is a file of `/proc`. Such files may answer by *who* asks, not only
/// with what rights: a write to `/proc/PID/timerslack_ns` is allowed to the task itself and to
/// others only with `CAP_SYS_NICE`. The agent is another task of the process, so calls on them
/// run inside the deputy itself (injected, as calls of the deputy class are).
pub fn on_procfs(pid: i32, fd: i32) -> bool {
    fd >= 0
        && nix::sys::statfs::statfs(format!("/proc/{pid}/fd/{fd}").as_str())
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// Cuts the buffers of a call run inside the deputy to what its scratch space carries
/// comfortably (a read or write may always do less than asked, and programs loop).
pub fn clamp_for_deputy(c: &mut Call, max: u64) {
    let (_, shape) = shape(u64::from(c.nr), &c.args);
    for a in shape {
        if let Arg::In(Len::Arg(i)) | Arg::Out(Len::Arg(i)) | Arg::InOut(Len::Arg(i)) = a {
            let i = usize::from(i);
            if c.args[i] > max {
                c.args[i] = max;
                for (_, b) in &mut c.bufs {
                    b.truncate(max as usize);
                }
            }
        }
    }
}

/// Which file the deputy's `fd` is: whether it is a regular file, and its device and inode
/// folded into one number ([`Reply::file`]).
pub fn identity(pid: i32, fd: i32) -> Option<(bool, u64)> {
    use std::os::unix::fs::MetadataExt;
    if fd < 0 {
        return None;
    }
    let m = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let id = m.dev().rotate_left(32) ^ m.ino();
    Some((m.is_file(), id.max(1)))
}

/// The answer to a call the agent could not make (it is gone: the deputy is dying).
fn agent_gone() -> Reply {
    Reply {
        ret: -(libc::EIO as i64),
        outs: Vec::new(),
        io: 0,
        room: 0,
        file: 0,
    }
}

/// Runs a service-class call in the deputy's agent, on the deputy's own descriptors and with
/// its rights.
pub fn exec_service(call: &Call, agent: &Agent) -> Reply {
    let mut plan = match Plan::new(call) {
        Ok(p) => p,
        Err(e) => {
            return Reply {
                ret: e,
                outs: Vec::new(),
                io: 0,
                room: 0,
                file: 0,
            };
        }
    };
    let Some(ret) = run_in_agent(&mut plan, agent) else {
        return agent_gone();
    };
    Reply {
        ret,
        outs: plan.outputs(ret),
        io: 0,
        room: 0,
        file: 0,
    }
}

/// Runs a `read` or `write` that asks about read-ahead or write-behind ([`Call::ahead`]).
///
/// Both are allowed only on a descriptor [`streamable`] says may be: the remote keeps the bytes
/// read ahead and gives them back (an `lseek` backwards) before any call that could see the
/// file's offset, so another descriptor on the same description would read from the wrong
/// place. The check is repeated on every read-ahead (about one per MiB), so a `dup` since the
/// last one is seen.
pub fn exec_streamed(call: &Call, agent: &Agent) -> Reply {
    let fd = call.args[0] as i32;
    let stream = streamable(agent.pid(), fd);
    let file = identity(agent.pid(), fd).map_or(0, |(_, id)| id);
    let nr = i64::from(call.nr);
    if !stream || nr != libc::SYS_read {
        let mut r = exec_service(call, agent);
        r.io = IO_ANSWERED | if stream { IO_STREAM } else { 0 };
        r.file = file;
        if stream && nr == libc::SYS_write {
            r.room = write_room(agent, fd);
        }
        return r;
    }
    let asked = call.args[2].min(MAX_IO as u64) as usize;
    let want = (asked + call.ahead as usize).min(MAX_IO);
    let (buf, _) = agent.data();
    let mut got = 0usize;
    let mut eof = false;
    while got < want {
        let Some(r) = agent.call(
            libc::SYS_read as u64,
            [fd as u64, buf + got as u64, (want - got) as u64, 0, 0, 0],
        ) else {
            return agent_gone();
        };
        if r < 0 {
            if got == 0 {
                return Reply {
                    ret: r,
                    outs: Vec::new(),
                    io: IO_ANSWERED | IO_STREAM,
                    room: 0,
                    file,
                };
            }
            break;
        }
        if r == 0 {
            eof = true;
            break;
        }
        got += (r as usize).min(want - got);
    }
    let Some(data) = agent.get(buf, got) else {
        return agent_gone();
    };
    Reply {
        ret: got.min(asked) as i64,
        outs: vec![(1, data)],
        io: IO_ANSWERED | IO_STREAM | if eof { IO_EOF } else { 0 },
        room: 0,
        file,
    }
}

/// How many more bytes the process may write behind on `fd` (a streamable regular file): what
/// its `RLIMIT_FSIZE` leaves from the descriptor's offset (the file's end for `O_APPEND`), and
/// what its file system has free for it (`f_bavail`, the process's own `fstatfs`), less a
/// margin for the blocks a write needs beyond its bytes. 0 when unsure: the writes then go home
/// one by one, and the kernel answers each.
fn write_room(agent: &Agent, fd: i32) -> u64 {
    let pid = agent.pid();
    let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
        return 0;
    };
    let field = |name: &str, radix: u32| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), radix).ok())
    };
    let (Some(pos), Some(flags)) = (field("pos:", 10), field("flags:", 8)) else {
        return 0;
    };
    let end = if flags & libc::O_APPEND as u64 != 0 {
        match std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            Ok(m) => m.len(),
            Err(_) => return 0,
        }
    } else {
        pos
    };
    let fsize = procfs::process::Process::new(pid)
        .and_then(|p| p.limits())
        .map(|l| match l.max_file_size.soft_limit {
            procfs::process::LimitValue::Unlimited => u64::MAX,
            procfs::process::LimitValue::Value(v) => v,
        });
    let Ok(fsize) = fsize else { return 0 };
    let (buf, _) = agent.data();
    let size = std::mem::size_of::<libc::statfs>();
    let Some(0) = agent.call(libc::SYS_fstatfs as u64, [fd as u64, buf, 0, 0, 0, 0]) else {
        return 0;
    };
    let Some(raw) = agent.get(buf, size) else {
        return 0;
    };
    // SAFETY: `raw` holds size_of::<statfs>() bytes the kernel wrote as a `struct statfs`;
    // every field is a plain integer, so any bytes are a valid value.
    let st: libc::statfs = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let free = (st.f_bavail as u64).saturating_mul(st.f_bsize as u64);
    let margin = free / 64 + (64 << 10);
    fsize.saturating_sub(end).min(free.saturating_sub(margin))
}

/// Lays the plan out in the agent's buffers, makes the call there and reads the output buffers
/// back into the plan. `None` if the agent is gone.
fn run_in_agent(plan: &mut Plan, agent: &Agent) -> Option<i64> {
    let (base, room) = agent.data();
    // Page-aligned buffers: what O_DIRECT asks of a buffer, whatever the process's was.
    let placed = match place(plan, base, room, 4096) {
        Ok(p) => p,
        Err(e) => return Some(e),
    };
    for (i, addr, _) in &placed.at {
        if let Some(b) = &plan.bufs[*i]
            && !agent.put(*addr, b)
        {
            return Some(-EFAULT);
        }
    }
    let mut args = placed.args;
    // pselect6's sixth argument (a sigmask) is not carried: the wait at home is not about the
    // remote's signals.
    if plan.nr == libc::SYS_pselect6 as u64 {
        args[5] = 0;
    }
    let ret = agent.call(plan.nr, args)?;
    for (i, addr, len) in &placed.at {
        if matches!(plan.shape[*i], Arg::Out(_) | Arg::InOut(_) | Arg::Special) {
            plan.bufs[*i] = Some(agent.get(*addr, *len)?);
        }
    }
    Some(ret)
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

/// Places a plan's buffers in a scratch space starting at `scratch` of `len` bytes, each at an
/// offset that is a multiple of `align` (a power of two).
pub fn place(plan: &Plan, scratch: u64, len: u64, align: u64) -> Result<Placed, i64> {
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
            off += n.div_ceil(align) * align;
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
    fn placing_respects_the_scratch_size() {
        let p = Plan::new(&call(
            libc::SYS_readlink,
            [0x1000, 0x2000, 4096, 0, 0, 0],
            vec![(0, b"/x".to_vec())],
        ))
        .unwrap();
        let placed = place(&p, 0x7000, 8192, 16).unwrap();
        assert_eq!(placed.args[0], 0x7000);
        assert_eq!(placed.args[1], 0x7010);
        assert_eq!(place(&p, 0x7000, 100, 16).unwrap_err(), -ENOMEM);
        // Page alignment (O_DIRECT) for the agent's buffers.
        let placed = place(&p, 0x7000, 3 * 4096, 4096).unwrap();
        assert_eq!(placed.args[1], 0x8000);
    }
}
