//! Read-ahead and write-behind for a remote process's forwarded descriptors: the remote side's
//! bookkeeping, with no I/O of its own (the supervisor sends what it says and feeds it replies).
//!
//! A forwarded `read` costs a network round trip; a program that reads a home file 32 KiB at a
//! time would spend most of its time waiting. So a `read` asks home to read *ahead*
//! ([`Call::ahead`]): home reads up to a window more, and the remote serves the following reads
//! from what came back. A `write` on a descriptor home has vouched for is answered at once and
//! kept *behind*; the bytes go home, without waiting for an answer, before anything else does.
//!
//! Home vouches for a descriptor ([`IO_STREAM`]) only when it is a regular file whose open file
//! description no other descriptor of the process shares: then only this process's calls on
//! that one descriptor can see its offset, and the rules are simple:
//!
//! * **Writes behind** go home before any other call, in order (one stream, one executor), so
//!   every later call — on any descriptor, any path, a file mapping, the exit — sees them done.
//!   They also go when 512 KiB wait, or when the oldest has waited [`BEHIND_MAX_AGE`] (someone
//!   may be watching the file grow), and before the process exits or leaves, waiting for their
//!   answers: an error home met is reported by the next `write`, `fsync` or `close` of that
//!   descriptor (as NFS does).
//! * **Bytes read ahead** are given back — an `lseek` backwards by what was not consumed, sent
//!   ahead of the call — before any call that names the descriptor (`lseek`, `fstat`, `close`,
//!   a `write` on it…), any call that can make another descriptor share its description (`dup*`,
//!   `fcntl`, `sendmsg` with rights, `close_range`), and before the process exits or leaves. An
//!   end of file is never served from the cache: a file that grows (`tail -f`) is read again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mosix_core::proto::{Call, IO_ANSWERED, IO_EOF, IO_STREAM, Reply};
use mosix_core::syscalls::{Arg, MAX_IO};

/// The first read-ahead window, doubled on every refill up to [`AHEAD_MAX`].
pub const AHEAD_START: u32 = 128 << 10;
/// The largest read-ahead (a reply carries at most `MAX_IO` bytes, the asked ones included).
pub const AHEAD_MAX: u32 = MAX_IO as u32;
/// Writes kept behind on one descriptor before they go.
pub const BEHIND_MAX: usize = 512 << 10;
/// How long a write stays behind at most.
pub const BEHIND_MAX_AGE: Duration = Duration::from_millis(50);

/// What a descriptor's bytes do.
#[derive(Debug, Default)]
struct FdIo {
    /// Home's word on it: `None` until asked.
    stream: Option<bool>,
    /// Bytes read ahead, and how many of them the process has had.
    ahead: Vec<u8>,
    pos: usize,
    /// The read-ahead reached the end of the file.
    eof: bool,
    /// The next read-ahead window.
    window: u32,
    /// How many more bytes may be written behind (home's word, [`Reply::room`]).
    room: u64,
    /// Which file it is ([`Reply::file`]; 0 unknown).
    file: u64,
    /// Bytes written behind, and since when the oldest waits.
    behind: Vec<u8>,
    since: Option<Instant>,
    /// An error home met writing behind, for the next call that can report it.
    error: Option<i64>,
}

impl FdIo {
    fn unread(&self) -> usize {
        self.ahead.len() - self.pos
    }
}

/// A reply the remote is owed for a call it sent without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// Written behind: `len` bytes on `fd`.
    Write { fd: i32, len: usize },
    /// A give-back `lseek`.
    Rewind,
}

/// What to do with a `read`.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadPlan {
    /// Answer it from these bytes.
    Serve(Vec<u8>),
    /// Forward it, asking for this much read-ahead ([`Call::ahead`]; 0: none).
    Forward(u32),
}

/// What to do with a `write`.
#[derive(Debug, PartialEq, Eq)]
pub enum WritePlan {
    /// Kept behind: answer that it wrote everything.
    Behind,
    /// Report this error (from an earlier write behind).
    Error(i64),
    /// Forward it, asking whether the descriptor can be written behind if `probe`.
    Forward {
        /// Ask ([`Call::ahead`] = 1).
        probe: bool,
    },
}

/// The remote's read-ahead and write-behind state for one process.
#[derive(Debug, Default)]
pub struct IoCache {
    fds: HashMap<i32, FdIo>,
    owed: VecDeque<Owed>,
    /// Writes behind that must go now (a descriptor's buffer was full).
    ready: Vec<Call>,
}

/// The `write` that carries bytes written behind home.
fn write_call(fd: i32, data: Vec<u8>) -> Call {
    Call {
        nr: libc::SYS_write as u32,
        args: [fd as u64, 0, data.len() as u64, 0, 0, 0],
        bufs: vec![(1, data)],
        ahead: mosix_core::proto::WRITTEN_BEHIND,
    }
}

fn rewind_call(fd: i32, by: usize) -> Call {
    Call {
        nr: libc::SYS_lseek as u32,
        args: [
            fd as u64,
            (-(by as i64)) as u64,
            libc::SEEK_CUR as u64,
            0,
            0,
            0,
        ],
        bufs: Vec::new(),
        ahead: 0,
    }
}

/// Whether call `nr(args)` changes a file's contents, and through which descriptor (`None`
/// inside: through a path, or a descriptor this table does not name); `None` for the calls that
/// do not.
fn changes_contents(nr: i64, args: &[u64; 6]) -> Option<Option<i32>> {
    let fd = |i: usize| Some(Some(args[i] as i32));
    match nr {
        libc::SYS_write
        | libc::SYS_pwrite64
        | libc::SYS_writev
        | libc::SYS_pwritev
        | libc::SYS_pwritev2
        | libc::SYS_ftruncate
        | libc::SYS_fallocate
        | libc::SYS_sendfile => fd(0),
        libc::SYS_copy_file_range | libc::SYS_splice => fd(2),
        libc::SYS_truncate | libc::SYS_creat => Some(None),
        libc::SYS_open if args[1] & libc::O_TRUNC as u64 != 0 => Some(None),
        libc::SYS_openat if args[2] & libc::O_TRUNC as u64 != 0 => Some(None),
        // openat2 carries its flags in a struct; assume the worst.
        libc::SYS_openat2 => Some(None),
        _ => None,
    }
}

/// Calls after which another descriptor may share a description (or the process's table
/// changed wholesale): every read-ahead is given back and every descriptor asked about again.
fn reshapes_descriptors(nr: i64) -> bool {
    [
        libc::SYS_dup,
        libc::SYS_dup2,
        libc::SYS_dup3,
        libc::SYS_fcntl,
        libc::SYS_close_range,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
        libc::SYS_recvmsg,
        libc::SYS_recvmmsg,
    ]
    .contains(&nr)
}

impl IoCache {
    /// Whether home said `fd` is a regular file only this process uses (its reads and writes
    /// go ahead and behind): its calls are file access, for the balancer.
    pub fn is_file(&self, fd: i32) -> bool {
        self.fds.get(&fd).is_some_and(|s| s.stream == Some(true))
    }

    /// Replies owed for calls sent without waiting.
    pub fn owed(&self) -> usize {
        self.owed.len()
    }

    /// A `read(fd, .., want)`.
    pub fn read(&mut self, fd: i32, want: usize) -> ReadPlan {
        let st = self.fds.entry(fd).or_default();
        let unread = st.unread();
        if unread > 0 && (unread >= want || st.eof) {
            let n = unread.min(want);
            let out = st.ahead[st.pos..st.pos + n].to_vec();
            st.pos += n;
            if st.pos == st.ahead.len() {
                st.ahead.clear();
                st.pos = 0;
            }
            return ReadPlan::Serve(out);
        }
        match st.stream {
            Some(false) => ReadPlan::Forward(0),
            _ => {
                if st.window == 0 {
                    st.window = AHEAD_START;
                }
                let room = AHEAD_MAX.saturating_sub(u32::try_from(want).unwrap_or(AHEAD_MAX));
                ReadPlan::Forward(st.window.min(room).max(1))
            }
        }
    }

    /// Home's reply to a `read(fd, .., want)` sent with read-ahead: keeps the bytes after the
    /// asked ones (the reply then carries only those).
    pub fn after_read(&mut self, fd: i32, reply: &mut Reply) {
        if reply.io & IO_ANSWERED == 0 {
            return;
        }
        let st = self.fds.entry(fd).or_default();
        st.stream = Some(reply.io & IO_STREAM != 0);
        st.file = reply.file;
        if reply.ret < 0 || st.stream != Some(true) {
            return;
        }
        let ret = reply.ret as usize;
        if let Some((_, data)) = reply.outs.iter_mut().find(|(i, _)| *i == 1)
            && data.len() > ret
        {
            st.ahead = data.split_off(ret);
            st.pos = 0;
        }
        st.eof = reply.io & IO_EOF != 0;
        st.window = st.window.saturating_mul(2).min(AHEAD_MAX);
    }

    /// A `write(fd, data)`.
    pub fn write(&mut self, fd: i32, data: &[u8], now: Instant) -> WritePlan {
        if let Some(e) = self.fds.get_mut(&fd).and_then(|s| s.error.take()) {
            return WritePlan::Error(e);
        }
        // What was read ahead of this file through another descriptor is stale now.
        let file = self.fds.get(&fd).map_or(0, |s| s.file);
        self.drop_ahead_of(file, fd);
        let st = self.fds.entry(fd).or_default();
        match st.stream {
            Some(true) if st.unread() == 0 && data.len() as u64 <= st.room => {
                // Each descriptor's room is what its file system had free when home last
                // answered; two descriptors may be on one file system, so bytes written behind
                // on one are taken from the room of every one (never promising a byte twice).
                for other in self.fds.values_mut() {
                    if other.stream == Some(true) {
                        other.room = other.room.saturating_sub(data.len() as u64);
                    }
                }
                let Some(st) = self.fds.get_mut(&fd) else {
                    return WritePlan::Forward { probe: true };
                };
                // One call home carries at most MAX_IO bytes.
                if !st.behind.is_empty() && st.behind.len() + data.len() > BEHIND_MAX {
                    self.ready.push(Self::take_behind(&mut self.owed, fd, st));
                }
                st.behind.extend_from_slice(data);
                st.since.get_or_insert(now);
                if st.behind.len() >= BEHIND_MAX {
                    self.ready.push(Self::take_behind(&mut self.owed, fd, st));
                }
                WritePlan::Behind
            }
            // A streamable descriptor without room left: home writes this one now and says
            // how much room there is after it.
            Some(true) => WritePlan::Forward { probe: true },
            Some(false) => WritePlan::Forward { probe: false },
            None => WritePlan::Forward { probe: true },
        }
    }

    /// Home's answer to a probing `write`.
    pub fn after_write(&mut self, fd: i32, reply: &Reply) {
        if reply.io & IO_ANSWERED != 0 {
            let st = self.fds.entry(fd).or_default();
            st.stream = Some(reply.io & IO_STREAM != 0);
            st.file = reply.file;
            st.room = if reply.io & IO_STREAM != 0 {
                reply.room
            } else {
                0
            };
        }
    }

    /// Descriptors whose writes behind must go now: too many bytes, or waiting too long.
    pub fn due(&mut self, now: Instant) -> Vec<Call> {
        let mut out = std::mem::take(&mut self.ready);
        for (fd, st) in &mut self.fds {
            if !st.behind.is_empty()
                && (st.behind.len() >= BEHIND_MAX
                    || st
                        .since
                        .is_some_and(|t| now.duration_since(t) >= BEHIND_MAX_AGE))
            {
                out.push(Self::take_behind(&mut self.owed, *fd, st));
            }
        }
        out
    }

    /// Whether writes wait behind (the supervisor then wakes up in time for them).
    pub fn has_behind(&self) -> bool {
        !self.ready.is_empty() || self.fds.values().any(|s| !s.behind.is_empty())
    }

    fn take_behind(owed: &mut VecDeque<Owed>, fd: i32, st: &mut FdIo) -> Call {
        let data = std::mem::take(&mut st.behind);
        st.since = None;
        owed.push_back(Owed::Write {
            fd,
            len: data.len(),
        });
        write_call(fd, data)
    }

    fn take_ahead(owed: &mut VecDeque<Owed>, fd: i32, st: &mut FdIo) -> Option<Call> {
        let unread = st.unread();
        st.ahead.clear();
        st.pos = 0;
        st.eof = false;
        if unread == 0 {
            return None;
        }
        owed.push_back(Owed::Rewind);
        Some(rewind_call(fd, unread))
    }

    /// What must go home, without waiting for answers, before call `c` (`shape`: which of its
    /// arguments are descriptors): every write behind, and the read-ahead of any descriptor the
    /// call could observe. Allocates nothing when nothing waits.
    pub fn before_call(&mut self, c: &Call, shape: &[Arg; 6]) -> Vec<Call> {
        let nr = i64::from(c.nr);
        // A call that changes a file's contents: what was read ahead of that file (through any
        // descriptor) goes back; of every file when it is not known which.
        let changed = changes_contents(nr, &c.args).map(|fd| match fd {
            Some(fd) => self.fds.get(&fd).map_or(0, |s| s.file),
            None => 0,
        });
        let all = reshapes_descriptors(nr) || changed == Some(0);
        let names = |fd: i32, st: &FdIo| {
            (0..6).any(|i| shape[i] == Arg::Fd && c.args[i] as i32 == fd)
                || changed.is_some_and(|f| f != 0 && st.file == f)
        };
        let mut out = std::mem::take(&mut self.ready);
        for (fd, st) in &mut self.fds {
            if !st.behind.is_empty() {
                out.push(Self::take_behind(&mut self.owed, *fd, st));
            }
            // A read forwarded with bytes still unread (fewer than it wants) starts where the
            // process is, too.
            if (all || names(*fd, st))
                && let Some(r) = Self::take_ahead(&mut self.owed, *fd, st)
            {
                out.push(r);
            }
        }
        out
    }

    /// After call `c` returned `ret` at home: forgets what it may have changed.
    pub fn after_call(&mut self, c: &Call, ret: i64) {
        let nr = i64::from(c.nr);
        if reshapes_descriptors(nr) {
            for st in self.fds.values_mut() {
                st.stream = None;
                st.room = 0;
            }
        }
        // Closed, whatever close said (but EBADF: it was not open): the number may come back
        // as another file.
        if nr == libc::SYS_close && ret != -i64::from(libc::EBADF) {
            self.fds.remove(&(c.args[0] as i32));
        }
    }

    /// Drops (gives back) what was read ahead of `file` through descriptors other than
    /// `except`; of every file when `file` is 0 (unknown).
    fn drop_ahead_of(&mut self, file: u64, except: i32) {
        for (fd, st) in &mut self.fds {
            if *fd != except
                && st.unread() > 0
                && (file == 0 || st.file == file)
                && let Some(r) = Self::take_ahead(&mut self.owed, *fd, st)
            {
                self.ready.push(r);
            }
        }
    }

    /// The errors of writes behind on the descriptors call `c` closes or replaces without
    /// being able to report them (`dup2`/`dup3` onto one, `close_range`): taken, for home to log.
    pub fn errors_lost_by(&mut self, c: &Call) -> Vec<(i32, i32)> {
        let nr = i64::from(c.nr);
        let lost = |fd: i32| -> bool {
            if nr == libc::SYS_dup2 || nr == libc::SYS_dup3 {
                fd == c.args[1] as i32 && c.args[0] as i32 != fd
            } else if nr == libc::SYS_close_range {
                fd >= c.args[0] as i32 && (fd as u32) <= c.args[1] as u32
            } else {
                false
            }
        };
        let mut out = Vec::new();
        for (fd, st) in &mut self.fds {
            if lost(*fd)
                && let Some(e) = st.error.take()
            {
                out.push((*fd, (-e) as i32));
            }
        }
        out
    }

    /// Every error of a write behind the program has not heard yet, taken (it exits or leaves).
    pub fn take_errors(&mut self) -> Vec<(i32, i32)> {
        let mut v: Vec<(i32, i32)> = self
            .fds
            .iter_mut()
            .filter_map(|(fd, st)| st.error.take().map(|e| (*fd, (-e) as i32)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Puts back errors taken by [`IoCache::take_errors`] (a move that did not happen).
    pub fn put_errors(&mut self, errors: &[(i32, i32)]) {
        for (fd, errno) in errors {
            self.fds.entry(*fd).or_default().error = Some(-i64::from(*errno));
        }
    }

    /// A cache that starts with errors of writes behind the program has not heard yet (carried
    /// from the node it left).
    pub fn with_errors(errors: &[(i32, i32)]) -> IoCache {
        let mut io = IoCache::default();
        io.put_errors(errors);
        io
    }

    /// Everything that must go home before the process exits or leaves.
    pub fn settle(&mut self) -> Vec<Call> {
        let mut out = std::mem::take(&mut self.ready);
        for (fd, st) in &mut self.fds {
            if !st.behind.is_empty() {
                out.push(Self::take_behind(&mut self.owed, *fd, st));
            }
            if let Some(r) = Self::take_ahead(&mut self.owed, *fd, st) {
                out.push(r);
            }
        }
        out
    }

    /// Every write behind, to go home now (the process was killed: nothing is given back).
    pub fn all_behind(&mut self) -> Vec<Call> {
        let mut out = std::mem::take(&mut self.ready);
        for (fd, st) in &mut self.fds {
            if !st.behind.is_empty() {
                out.push(Self::take_behind(&mut self.owed, *fd, st));
            }
        }
        out
    }

    /// Takes the reply owed for the oldest call sent without waiting.
    pub fn on_owed_reply(&mut self, r: &Reply) {
        if let Some(Owed::Write { fd, len }) = self.owed.pop_front()
            && r.ret != len as i64
        {
            let e = if r.ret < 0 {
                r.ret
            } else {
                -i64::from(libc::EIO)
            };
            self.fds.entry(fd).or_default().error.get_or_insert(e);
        }
    }

    /// An error home met writing `fd` behind, taken (for `fsync` and `close`).
    pub fn take_error(&mut self, fd: i32) -> Option<i64> {
        self.fds.get_mut(&fd).and_then(|s| s.error.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(ret: i64, data: Vec<u8>, io: u8) -> Reply {
        Reply {
            ret,
            outs: vec![(1, data)],
            io,
            room: u64::MAX,
            file: 0,
        }
    }

    #[test]
    fn writes_wait_behind_only_within_the_room_home_gave() {
        let mut io = IoCache::default();
        let now = Instant::now();
        assert_eq!(io.write(1, b"a", now), WritePlan::Forward { probe: true });
        // 5 bytes of room left (a file size limit, or a nearly full disk).
        let mut r = reply(1, vec![], IO_ANSWERED | IO_STREAM);
        r.room = 5;
        io.after_write(1, &r);
        assert_eq!(io.write(1, b"bcd", now), WritePlan::Behind);
        assert_eq!(io.write(1, b"ef", now), WritePlan::Behind);
        // The next byte would pass it: home writes it now, and the kernel answers there.
        assert_eq!(io.write(1, b"g", now), WritePlan::Forward { probe: true });
        let mut r = reply(-i64::from(libc::EFBIG), vec![], IO_ANSWERED | IO_STREAM);
        r.room = 0;
        io.after_write(1, &r);
        assert_eq!(io.write(1, b"h", now), WritePlan::Forward { probe: true });
    }

    #[test]
    fn two_descriptors_share_the_room_of_their_file_system() {
        let mut io = IoCache::default();
        let now = Instant::now();
        for fd in [3, 4] {
            assert_eq!(io.write(fd, b"a", now), WritePlan::Forward { probe: true });
            // Home vouches for 10 free bytes: the same 10 bytes, seen through each.
            let mut r = reply(1, vec![], IO_ANSWERED | IO_STREAM);
            r.room = 10;
            io.after_write(fd, &r);
        }
        assert_eq!(io.write(3, b"123456", now), WritePlan::Behind);
        // 4 bytes are left for both: 6 more through the other are not promised.
        assert_eq!(
            io.write(4, b"123456", now),
            WritePlan::Forward { probe: true }
        );
        assert_eq!(io.write(4, b"1234", now), WritePlan::Behind);
        assert_eq!(io.write(3, b"1", now), WritePlan::Forward { probe: true });
        // Behind writes go home marked as such.
        let calls = io.settle();
        assert_eq!(calls.len(), 2);
        assert!(
            calls
                .iter()
                .all(|c| c.ahead == mosix_core::proto::WRITTEN_BEHIND)
        );
    }

    const FD_SHAPE: [Arg; 6] = [
        Arg::Fd,
        Arg::None,
        Arg::Int,
        Arg::None,
        Arg::None,
        Arg::None,
    ];

    fn call(nr: i64, fd: i32) -> Call {
        Call {
            nr: nr as u32,
            args: [fd as u64, 0, 10, 0, 0, 0],
            bufs: Vec::new(),
            ahead: 0,
        }
    }

    #[test]
    fn reads_are_served_from_what_came_ahead_and_the_rest_is_given_back() {
        let mut io = IoCache::default();
        let ReadPlan::Forward(ahead) = io.read(3, 10) else {
            panic!("the first read goes home")
        };
        assert_eq!(ahead, AHEAD_START);
        let mut r = reply(10, (0u8..40).collect(), IO_ANSWERED | IO_STREAM);
        io.after_read(3, &mut r);
        assert_eq!(
            r.outs[0].1,
            (0u8..10).collect::<Vec<_>>(),
            "the asked bytes"
        );
        assert_eq!(io.read(3, 10), ReadPlan::Serve((10u8..20).collect()));
        assert_eq!(io.read(3, 5), ReadPlan::Serve((20u8..25).collect()));
        // 15 unread; an lseek on it gives them back first.
        let pre = io.before_call(&call(libc::SYS_lseek, 3), &FD_SHAPE);
        assert_eq!(pre.len(), 1);
        assert_eq!(pre[0].nr, libc::SYS_lseek as u32);
        assert_eq!(pre[0].args[1] as i64, -15);
        assert_eq!(io.owed(), 1);
        // A call on another descriptor leaves it alone.
        let mut r = reply(10, (0u8..30).collect(), IO_ANSWERED | IO_STREAM);
        io.after_read(3, &mut r);
        assert!(
            io.before_call(&call(libc::SYS_fstat, 4), &FD_SHAPE)
                .is_empty()
        );
        assert_eq!(io.read(3, 20), ReadPlan::Serve((10u8..30).collect()));
    }

    #[test]
    fn a_partial_buffer_is_given_back_before_the_next_read_and_eof_is_asked_again() {
        let mut io = IoCache::default();
        io.read(3, 10);
        let mut r = reply(10, (0u8..15).collect(), IO_ANSWERED | IO_STREAM);
        io.after_read(3, &mut r);
        // 5 unread, 10 wanted, not at the end: home reads again from where the process is.
        assert!(matches!(io.read(3, 10), ReadPlan::Forward(_)));
        let pre = io.before_call(&call(libc::SYS_read, 3), &FD_SHAPE);
        assert_eq!(pre.len(), 1);
        assert_eq!(pre[0].args[1] as i64, -5);
        // At the end of the file the rest is served, then the next read goes home.
        let mut r = reply(10, (0u8..13).collect(), IO_ANSWERED | IO_STREAM | IO_EOF);
        io.after_read(3, &mut r);
        assert_eq!(io.read(3, 10), ReadPlan::Serve(vec![10, 11, 12]));
        assert!(matches!(io.read(3, 10), ReadPlan::Forward(_)));
    }

    #[test]
    fn writes_wait_behind_only_where_home_vouched_and_go_first() {
        let mut io = IoCache::default();
        let now = Instant::now();
        assert_eq!(io.write(1, b"a", now), WritePlan::Forward { probe: true });
        io.after_write(1, &reply(1, vec![], IO_ANSWERED | IO_STREAM));
        assert_eq!(io.write(1, b"bc", now), WritePlan::Behind);
        assert_eq!(io.write(1, b"de", now), WritePlan::Behind);
        assert!(io.has_behind());
        // A pipe: home says no.
        assert_eq!(io.write(5, b"x", now), WritePlan::Forward { probe: true });
        io.after_write(5, &reply(1, vec![], IO_ANSWERED));
        assert_eq!(io.write(5, b"y", now), WritePlan::Forward { probe: false });
        // Any call home sends them first, in one write.
        let pre = io.before_call(&call(libc::SYS_getcwd, -1), &[Arg::None; 6]);
        assert_eq!(pre.len(), 1);
        assert_eq!(pre[0].bufs[0].1, b"bcde");
        assert!(!io.has_behind());
        // An error home met comes back on the next write.
        io.on_owed_reply(&reply(-i64::from(libc::ENOSPC), vec![], 0));
        assert_eq!(
            io.write(1, b"f", now),
            WritePlan::Error(-i64::from(libc::ENOSPC))
        );
    }

    #[test]
    fn writes_go_when_old_or_many_and_everything_settles() {
        let mut io = IoCache::default();
        let t0 = Instant::now();
        io.write(1, b"a", t0);
        io.after_write(1, &reply(1, vec![], IO_ANSWERED | IO_STREAM));
        io.write(1, b"b", t0);
        assert!(io.due(t0).is_empty());
        assert_eq!(io.due(t0 + BEHIND_MAX_AGE).len(), 1);
        io.write(1, &vec![0; BEHIND_MAX], t0);
        assert_eq!(io.due(t0).len(), 1);
        io.read(3, 1);
        let mut r = reply(1, vec![1, 2, 3], IO_ANSWERED | IO_STREAM);
        io.after_read(3, &mut r);
        io.write(1, b"z", t0);
        let s = io.settle();
        assert_eq!(s.len(), 2, "the write behind and the give-back");
        assert_eq!(io.owed(), 4);
    }

    #[test]
    fn no_call_home_carries_more_than_max_io() {
        let mut io = IoCache::default();
        let t0 = Instant::now();
        io.write(1, b"a", t0);
        io.after_write(1, &reply(1, vec![], IO_ANSWERED | IO_STREAM));
        let mut sent = 0usize;
        for len in [300 << 10, MAX_IO, 1, MAX_IO, 700 << 10, 5] {
            assert_eq!(io.write(1, &vec![1; len], t0), WritePlan::Behind);
            for c in io.due(t0) {
                assert!(c.bufs[0].1.len() <= MAX_IO, "{}", c.bufs[0].1.len());
                sent += c.bufs[0].1.len();
            }
        }
        for c in io.settle() {
            assert!(c.bufs[0].1.len() <= MAX_IO);
            sent += c.bufs[0].1.len();
        }
        assert_eq!(
            sent,
            (300 << 10) + 2 * MAX_IO + 1 + (700 << 10) + 5,
            "every byte, once"
        );
    }

    #[test]
    fn a_dup_gives_everything_back_and_descriptors_are_asked_again() {
        let mut io = IoCache::default();
        io.read(3, 1);
        let mut r = reply(1, vec![1, 2, 3], IO_ANSWERED | IO_STREAM);
        io.after_read(3, &mut r);
        let dup = call(libc::SYS_dup, 7);
        let pre = io.before_call(&dup, &FD_SHAPE);
        assert_eq!(pre.len(), 1, "given back although the dup names another fd");
        io.after_call(&dup, 8);
        assert_eq!(
            io.write(3, b"x", Instant::now()),
            WritePlan::Forward { probe: true }
        );
    }

    #[test]
    fn a_write_through_another_descriptor_of_the_file_drops_what_was_read_ahead() {
        let mut io = IoCache::default();
        let now = Instant::now();
        // fd 4 is file 9, fd 6 file 7 (home says so at their first write).
        for (fd, file) in [(4, 9), (6, 7)] {
            io.write(fd, b"a", now);
            let mut w = reply(1, vec![], IO_ANSWERED | IO_STREAM);
            w.file = file;
            io.after_write(fd, &w);
        }
        // fd 3 is file 7 too, read ahead.
        io.read(3, 1);
        let mut r = reply(1, vec![1, 2, 3], IO_ANSWERED | IO_STREAM);
        r.file = 7;
        io.after_read(3, &mut r);
        // Writing file 9 leaves file 7's read-ahead alone.
        assert_eq!(io.write(4, b"b", now), WritePlan::Behind);
        assert_eq!(io.read(3, 1), ReadPlan::Serve(vec![2]));
        // Writing file 7 through fd 6 gives fd 3's bytes back.
        assert_eq!(io.write(6, b"y", now), WritePlan::Behind);
        let due = io.due(now);
        assert!(
            due.iter()
                .any(|c| c.nr == libc::SYS_lseek as u32 && c.args[0] == 3),
            "{due:?}"
        );
        assert!(matches!(io.read(3, 1), ReadPlan::Forward(_)));
        // A truncate by path: every read-ahead goes back.
        io.read(5, 1);
        let mut r = reply(1, vec![1, 2, 3], IO_ANSWERED | IO_STREAM);
        r.file = 9;
        io.after_read(5, &mut r);
        let t = Call {
            nr: libc::SYS_truncate as u32,
            args: [0x1000, 0, 0, 0, 0, 0],
            bufs: Vec::new(),
            ahead: 0,
        };
        let pre = io.before_call(
            &t,
            &[
                Arg::Path,
                Arg::Int,
                Arg::None,
                Arg::None,
                Arg::None,
                Arg::None,
            ],
        );
        assert!(
            pre.iter()
                .any(|c| c.nr == libc::SYS_lseek as u32 && c.args[0] == 5)
        );
    }

    #[test]
    fn write_errors_are_heard_once_at_close_or_travel_or_are_handed_over() {
        let mut io = IoCache::default();
        let now = Instant::now();
        io.write(1, b"a", now);
        io.after_write(1, &reply(1, vec![], IO_ANSWERED | IO_STREAM));
        io.write(1, b"bc", now);
        io.due(now + BEHIND_MAX_AGE);
        io.on_owed_reply(&reply(-i64::from(libc::ENOSPC), vec![], 0));
        // Carried to another node, and heard there.
        let carried = io.take_errors();
        assert_eq!(carried, vec![(1, libc::ENOSPC)]);
        let mut there = IoCache::with_errors(&carried);
        assert_eq!(there.take_error(1), Some(-i64::from(libc::ENOSPC)));
        // A close forgets the descriptor whatever it returned (but EBADF).
        there.after_call(&call(libc::SYS_close, 1), -i64::from(libc::EIO));
        assert_eq!(
            there.write(1, b"z", now),
            WritePlan::Forward { probe: true },
            "asked about again"
        );
        // dup2 onto a descriptor whose write failed: the error is handed over, to be logged.
        let mut io = IoCache::with_errors(&[(4, libc::EDQUOT)]);
        let dup2 = Call {
            nr: libc::SYS_dup2 as u32,
            args: [3, 4, 0, 0, 0, 0],
            bufs: Vec::new(),
            ahead: 0,
        };
        assert_eq!(io.errors_lost_by(&dup2), vec![(4, libc::EDQUOT)]);
        assert!(io.take_errors().is_empty());
    }
}
