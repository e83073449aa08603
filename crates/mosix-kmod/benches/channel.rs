//! The page stream of a move over loopback TCP, without the ptrace around it, against bare TCP
//! moving the same bytes in the same round:
//!
//! - **stream**: 1 GiB of page runs of `image::MAX_RUN` bytes from one buffer, from
//!   `Sender::send_run` to `Receiver::recv_raw` — what the link's own code costs;
//! - **page path**: 1 GiB of another process's memory (a child that touched it, as the
//!   migration bench's memory holder does), read, sealed and sent by `freeze::send_pages`,
//!   received, opened and installed by `pages::receive_runs` through a userfaultfd into fresh
//!   memory — a move's whole page path, both ends.
//!
//! The receiving end is a forked process, so that each end's CPU time is measured apart: `send
//! ns/B` and `recv ns/B` are CPU time per byte moved (system and user), and when each node has
//! a CPU of its own, the end with more bounds the move. Two placements: both ends on CPU 0 (one
//! CPU does everything: every copy and every AEAD pass competes with TCP itself), and the
//! sender on CPU 0 with the receiver on CPU 1 (two nodes of one CPU each, as in the virtual
//! cluster; loopback's receive processing runs in the sender's softirq, as veth's does). Each
//! figure is the median of the rounds (`MOSIX_BENCH_ROUNDS`, 5 by default); every round's rate
//! is printed after it. Run with `cargo bench -p mosix-kmod --bench channel`, on a quiet machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Instant;

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::image::{MAX_RUN, Vma, VmaKind};
use mosix_core::proto::seal::{Protection, Transcript};
use mosix_core::proto::{ProcMsg, Side};
use mosix_kmod::freezer::{freeze, pages};
use mosix_kmod::kernel::ptrace::Mem;
use mosix_kmod::kernel::uffd::{self, Uffd};
use mosix_kmod::link::channel::{self, Conn};

const TOTAL: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq)]
enum What {
    Bare,
    Stream(Protection),
    Path(Protection),
}

impl What {
    fn name(self) -> String {
        let p = |p: Protection| match p {
            Protection::Authenticated => "authenticated (GMAC)",
            Protection::Encrypted => "encrypted (GCM)",
        };
        match self {
            What::Bare => "bare TCP".into(),
            What::Stream(pr) => format!("stream, {}", p(pr)),
            What::Path(pr) => format!("page path, {}", p(pr)),
        }
    }
}

/// The one area of the page path: `TOTAL` bytes of anonymous memory at `start`.
fn area(start: u64) -> Vma {
    Vma {
        start,
        end: start + TOTAL as u64,
        read: true,
        write: true,
        exec: false,
        kind: VmaKind::Anon,
    }
}

/// The process whose memory the page path moves: `TOTAL` bytes, every page written.
struct Holder {
    pid: i32,
    vmas: Vec<Vma>,
}

impl Holder {
    fn start() -> Holder {
        let (r, w) = pipe();
        // SAFETY: the bench has one thread here; the child only maps, writes its own memory,
        // writes to a pipe and pauses until it is killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut v = vec![0u8; TOTAL];
            for (i, c) in v.chunks_mut(4096).enumerate() {
                c[0] = i as u8;
                c[4095] = 0x5a;
            }
            put(&w, &(v.as_ptr() as u64).to_le_bytes());
            loop {
                // SAFETY: pause(2) has no arguments.
                unsafe { libc::pause() };
            }
        }
        let start = u64::from_le_bytes(get(&r));
        Holder {
            pid,
            vmas: vec![area(start)],
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: our own child, killed and reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0i32; 2];
    // SAFETY: pipe(2) fills two descriptors, which become ours.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
    // SAFETY: just made, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

fn put(fd: &OwnedFd, b: &[u8; 8]) {
    std::fs::File::from(fd.try_clone().unwrap())
        .write_all(b)
        .unwrap();
}

fn get(fd: &OwnedFd) -> [u8; 8] {
    let mut b = [0u8; 8];
    std::fs::File::from(fd.try_clone().unwrap())
        .read_exact(&mut b)
        .unwrap();
    b
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity(2) read and
    // write only that local.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
    }
}

/// CPU seconds (user and system) of this process so far, its ended threads included.
fn cpu() -> f64 {
    // SAFETY: getrusage(2) fills the local.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn session(p: Protection, side: Side) -> mosix_core::proto::seal::Session {
    Transcript {
        client: NodeId::new(1).unwrap(),
        server: NodeId::new(2).unwrap(),
        nonce_c: [1; 32],
        nonce_s: [2; 32],
        protection: p,
    }
    .session(&Secret::new(b"0123456789abcdef0123").unwrap(), side)
}

/// The receiving end, in a forked process: gets ready, says so, receives everything, and
/// reports its CPU time.
fn receive(what: What, b: TcpStream, ready: &OwnedFd, done: &OwnedFd) {
    match what {
        What::Bare => {
            let mut b = b;
            let mut buf = vec![0u8; MAX_RUN];
            put(ready, &[0; 8]);
            let c0 = cpu();
            let mut got = 0;
            while got < TOTAL {
                let n = b.read(&mut buf).unwrap();
                assert!(n > 0);
                got += n;
            }
            put(done, &(cpu() - c0).to_le_bytes());
        }
        What::Stream(p) => {
            let (_, mut rx) = channel::split(Conn::new(b, session(p, Side::Server))).unwrap();
            let mut buf = vec![0u8; MAX_RUN];
            put(ready, &[0; 8]);
            let c0 = cpu();
            loop {
                match rx.recv().unwrap() {
                    ProcMsg::Pages { len, .. } => rx.recv_raw(&mut buf[..len as usize]).unwrap(),
                    ProcMsg::End => break,
                    m => panic!("{m:?}"),
                }
            }
            put(done, &(cpu() - c0).to_le_bytes());
        }
        What::Path(p) => {
            let (_, mut rx) = channel::split(Conn::new(b, session(p, Side::Server))).unwrap();
            // Fresh memory registered on a userfaultfd of our own, as a stub's areas are.
            // SAFETY: userfaultfd(2) with flags only; the descriptor becomes ours.
            let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, uffd::CREATE_FLAGS) };
            assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
            // SAFETY: just made, owned by nobody else.
            let mut u = Uffd::adopt(unsafe { OwnedFd::from_raw_fd(fd as i32) }).unwrap();
            // SAFETY: a fresh private anonymous mapping, touched only through the userfaultfd.
            let start = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    TOTAL,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            } as u64;
            u.register(start, start + TOTAL as u64).unwrap();
            let vmas = [area(start)];
            let me = std::process::id() as i32;
            put(ready, &[0; 8]);
            let c0 = cpu();
            pages::receive_runs(
                &mut rx,
                &vmas,
                TOTAL as u64,
                pages::Pages::new(me, Some(&u)),
            )
            .unwrap();
            put(done, &(cpu() - c0).to_le_bytes());
        }
    }
}

/// One transfer of `TOTAL` bytes: (bytes per second, sender's CPU s/B, receiver's CPU s/B).
fn once(what: What, holder: &Holder, runs: &[freeze::Run], cpus: (usize, usize)) -> [f64; 3] {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    let (ready_r, ready_w) = pipe();
    let (done_r, done_w) = pipe();
    pin(cpus.0);
    // SAFETY: the bench has one thread here (every thread of the last transfer was joined);
    // the child receives, reports through the pipes and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        drop(a);
        pin(cpus.1);
        receive(what, b, &ready_w, &done_w);
        // SAFETY: leaves the forked child at once, without running the parent's exit code.
        unsafe { libc::_exit(0) };
    }
    drop(b);
    get(&ready_r);
    let t = Instant::now();
    let c0 = cpu();
    match what {
        What::Bare => {
            let mut a = a;
            let data = vec![0x5au8; MAX_RUN];
            for _ in 0..TOTAL / MAX_RUN {
                a.write_all(&data).unwrap();
            }
        }
        What::Stream(p) => {
            let (tx, _) = channel::split(Conn::new(a, session(p, Side::Client))).unwrap();
            // Sealed in place: encrypted, the buffer holds ciphertext after the first run, which
            // costs the AEAD the same.
            let mut data = vec![0x5au8; MAX_RUN];
            for i in 0..TOTAL / MAX_RUN {
                tx.send_run(0, (i * MAX_RUN) as u64, &mut data).unwrap();
            }
            tx.send(&ProcMsg::End).unwrap();
        }
        What::Path(p) => {
            let (tx, _) = channel::split(Conn::new(a, session(p, Side::Client))).unwrap();
            let mem = Mem::open(holder.pid).unwrap();
            freeze::send_pages(&tx, &mem, &holder.vmas, runs).unwrap();
            tx.send(&ProcMsg::End).unwrap();
        }
    }
    let send_cpu = cpu() - c0;
    let recv_cpu = f64::from_le_bytes(get(&done_r));
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: our own child, reaped.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    let n = TOTAL as f64;
    [n / secs, send_cpu / n, recv_cpu / n]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("MOSIX_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let holder = Holder::start();
    let runs = freeze::runs(holder.pid, &holder.vmas).unwrap();
    assert_eq!(runs.iter().map(|r| r.len).sum::<u64>(), TOTAL as u64);
    let whats = [
        What::Bare,
        What::Stream(Protection::Authenticated),
        What::Stream(Protection::Encrypted),
        What::Path(Protection::Authenticated),
        What::Path(Protection::Encrypted),
    ];
    let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let mut placements = vec![("both ends on CPU 0", (0, 0))];
    if two {
        placements.push(("sender on CPU 0, receiver on CPU 1", (0, 1)));
    }
    for (title, cpus) in placements {
        let mut got = vec![Vec::new(); whats.len()];
        for _ in 0..rounds {
            for (i, w) in whats.iter().enumerate() {
                got[i].push(once(*w, &holder, &runs, cpus));
            }
        }
        println!("== 1 GiB, {title}; median of {rounds} ==");
        println!(
            "{:<36} {:>7} {:>7} {:>10} {:>10}   every round, MB/s",
            "what", "MB/s", "/ bare", "send ns/B", "recv ns/B"
        );
        let col = |i: usize, k: usize| median(got[i].iter().map(|r| r[k]).collect());
        let bare = col(0, 0);
        for (i, w) in whats.iter().enumerate() {
            let every: Vec<String> = got[i]
                .iter()
                .map(|r| format!("{:.0}", r[0] / 1e6))
                .collect();
            println!(
                "{:<36} {:>7.0} {:>7.2} {:>10.3} {:>10.3}   {}",
                w.name(),
                col(i, 0) / 1e6,
                col(i, 0) / bare,
                col(i, 1) * 1e9,
                col(i, 2) * 1e9,
                every.join(" ")
            );
        }
        println!();
    }
}
