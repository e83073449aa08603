//! A small program the benchmarks and tests run as a MOSIX process.
//!
//! * `mosix-probe calls N`: N one-byte reads from /dev/zero (each a forwarded call when the
//!   process runs remotely); prints the mean time per call in nanoseconds.
//! * `mosix-probe spin SECS`: a CPU-bound loop for SECS seconds; prints iterations per second.
//! * `mosix-probe work N`: N iterations of the spin loop, then exits (fixed work for makespans).
//! * `mosix-probe mem MIB`: fills MIB MiB of memory, prints `ready`, then waits for a line on
//!   standard input, checks that every page still holds what it wrote, and exits (status 3
//!   if one does not).
//! * `mosix-probe dirty MIB MBPS SECS`: fills MIB MiB, prints `ready`, then for SECS seconds
//!   rewrites whole pages one after the other at MBPS MB/s (busy-waiting between them), each
//!   page holding its number and how many times it was written in every word; then checks
//!   every page, and prints `max_gap_ms G pages_written N` — G is the longest time the loop
//!   did not run (what a move's stop costs the process) — then `gaps AT:MS …`, every pause of
//!   5 ms or more with when it began (`CLOCK_MONOTONIC`, ns: one clock for every node of a
//!   virtual cluster, so a caller can tell which pause a move of its own caused) — or exits 3
//!   naming the first page that
//!   does not hold what was written last. With a fifth argument `churn`, every 64th page due is
//!   discarded instead (`MADV_DONTNEED`: it must read as zeroes from then on), and twice a
//!   second a fresh 1 MiB area is mapped, filled and the previous one unmapped (its contents
//!   are checked at the end too).
//! * `mosix-probe touch MIB`: maps MIB MiB of fresh memory and writes every page once; prints
//!   the time that took in milliseconds (the machine's cost of new memory, which every arrival
//!   of a migrated process pays).
//! * `mosix-probe readfile PATH KIB [PASSES]`: reads PATH to its end KIB KiB at a time,
//!   PASSES times (default once; opened again for each); prints MB/s.
//! * `mosix-probe writefile PATH MIB KIB`: writes MIB MiB to PATH (created or truncated) KIB
//!   KiB at a time, then closes it; prints MB/s.
//! * `mosix-probe writer PATH`: prints the address of a counter, then writes 4 KiB records to
//!   PATH (created or truncated) forever, record `i` holding `i` in every 8-byte word, and
//!   after each `write` that returned counts it (a test reads the counter from the process's
//!   memory, kills the process, and checks that no counted record is missing).
//! * `mosix-probe notify N`: the bare cost of a seccomp user notification: a child under a
//!   USER_NOTIF filter makes N getppid calls that this process answers at once; prints the mean
//!   round trip in nanoseconds (`notify-sync N`: with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

/// A fresh private anonymous mapping of `len` bytes, readable and writable.
/// An area that grows in place (`mremap` without moving) and shrinks (its tail unmapped) by
/// 1 MiB at a time, placed away from where the kernel puts other mappings so that the room it
/// gives up stays free for it; each word holds [`Resizing::word`] of its index.
struct Resizing {
    at: *mut u64,
    len: usize,
    steps: u32,
}

impl Resizing {
    const MAX: usize = 16 << 20;
    const STEP: usize = 1 << 20;

    fn word(i: usize) -> u64 {
        (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn new() -> Resizing {
        let len = Self::MAX / 2;
        // SAFETY: mmap(2) of new anonymous memory, at the hint only if nothing is there.
        let p = unsafe {
            libc::mmap(
                0x5000_0000_0000usize as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        let at = if p == libc::MAP_FAILED {
            fresh_area(len)
        } else {
            p.cast()
        }
        .cast::<u64>();
        let r = Resizing { at, len, steps: 0 };
        r.fill(0, len);
        r
    }

    fn fill(&self, from: usize, to: usize) {
        for i in from / 8..to / 8 {
            // SAFETY: inside the area's current length.
            unsafe { *self.at.add(i) = Self::word(i) };
        }
    }

    /// Grows it twice, then shrinks it once (within 1 and 16 MiB).
    fn step(&mut self) {
        self.steps += 1;
        if !self.steps.is_multiple_of(3) && self.len < Self::MAX {
            // SAFETY: mremap(2) of our own area, in place or not at all.
            let p = unsafe { libc::mremap(self.at.cast(), self.len, self.len + Self::STEP, 0) };
            if p != libc::MAP_FAILED {
                self.len += Self::STEP;
                self.fill(self.len - Self::STEP, self.len);
            }
        } else if self.len > Self::STEP {
            self.len -= Self::STEP;
            // SAFETY: the area's last MiB, no longer referred to.
            unsafe { libc::munmap(self.at.cast::<u8>().add(self.len).cast(), Self::STEP) };
        }
    }

    /// The first word that does not hold what was written, if any.
    fn bad(&self) -> Option<usize> {
        // SAFETY: inside the area's current length.
        (0..self.len / 8).find(|&i| unsafe { *self.at.add(i) } != Self::word(i))
    }
}

fn fresh_area(len: usize) -> *mut u8 {
    // SAFETY: mmap(2) of new anonymous memory at an address the kernel chooses: nothing that
    // exists is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    match args.get(1).map(String::as_str) {
        Some("writer") => {
            static WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let path = args.get(2).expect("writer PATH");
            let mut f = std::fs::File::create(path).unwrap();
            println!("{:#x}", WRITTEN.as_ptr() as usize);
            std::io::stdout().flush().unwrap();
            let mut rec = vec![0u8; 4096];
            for i in 0u64.. {
                for w in rec.chunks_mut(8) {
                    w.copy_from_slice(&i.to_le_bytes());
                }
                f.write_all(&rec).unwrap();
                WRITTEN.store(i + 1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        Some("calls") => {
            let mut f = std::fs::File::open("/dev/zero").unwrap();
            let mut b = [0u8; 1];
            for _ in 0..100 {
                f.read_exact(&mut b).unwrap();
            }
            let t = Instant::now();
            for _ in 0..n {
                f.read_exact(&mut b).unwrap();
            }
            println!("{}", t.elapsed().as_nanos() / u128::from(n));
        }
        Some("spin") => {
            let t = Instant::now();
            let mut iters = 0u64;
            let mut x = 1u64;
            while t.elapsed() < Duration::from_secs(n) {
                for _ in 0..10_000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                }
                iters += 10_000;
            }
            std::hint::black_box(x);
            println!("{}", iters as f64 / t.elapsed().as_secs_f64());
        }
        Some("work") => {
            // A fixed amount of CPU work: N iterations of the spin loop (its wall time depends on
            // the CPU it gets, not on a clock).
            let mut x = 1u64;
            for _ in 0..n.div_ceil(10_000) {
                for _ in 0..10_000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                }
                std::hint::black_box(&mut x);
            }
            println!("{x}");
        }
        Some("mem") => {
            let mut v = vec![0u8; (n as usize) << 20];
            for (i, c) in v.chunks_mut(4096).enumerate() {
                c[0] = i as u8;
            }
            println!("ready");
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).unwrap();
            // Every page still holds what was written: a move lost or mixed up nothing.
            let bad = v
                .chunks(4096)
                .enumerate()
                .filter(|(i, c)| c[0] != *i as u8 || c[1..].iter().any(|b| *b != 0))
                .count();
            if bad > 0 {
                eprintln!("mem: {bad} pages changed");
                std::process::exit(3);
            }
        }
        Some("dirty") => {
            let mbps: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100.0);
            let secs: f64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(10.0);
            let churn = args.get(5).is_some_and(|a| a == "churn");
            // The area mapped afresh twice a second, and what it holds.
            let mut scratch: Option<(*mut u64, u64)> = None;
            // With churn: an area that grows and shrinks in place.
            let mut resizing = churn.then(Resizing::new);
            let mut next_churn = 0.5;
            let pages = (n as usize) << 8;
            // One page more, so that the pages counted are the machine's (page-aligned).
            let mut raw = vec![0u64; (pages + 1) * 512];
            let off = (4096 - raw.as_ptr() as usize % 4096) % 4096 / 8;
            let mem = &mut raw[off..off + pages * 512];
            let mut gens = vec![0u32; pages];
            let word = |p: usize, g: u32| ((p as u64) << 32) | u64::from(g);
            for (p, page) in mem.chunks_mut(512).enumerate() {
                page.fill(word(p, 0));
            }
            println!("ready");
            std::io::stdout().flush().unwrap();
            let start = Instant::now();
            let per_page = 4096.0 / (mbps * 1e6);
            let mut last = Instant::now();
            let mut max_gap = Duration::ZERO;
            // Pauses of 5 ms or more: when each began (monotonic ns) and how long it was.
            let mut gaps: Vec<(u128, Duration)> = Vec::new();
            let mono_ns = || {
                nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
                    t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128
                })
            };
            let mut written = 0usize;
            let mut p = 0usize;
            loop {
                let now = Instant::now();
                let gap = now - last;
                max_gap = max_gap.max(gap);
                if gap >= Duration::from_millis(5) && gaps.len() < 10_000 {
                    gaps.push((mono_ns().saturating_sub(gap.as_nanos()), gap));
                }
                last = now;
                let t = now.duration_since(start).as_secs_f64();
                if t >= secs {
                    break;
                }
                if (written as f64) * per_page > t {
                    continue;
                }
                if churn && t >= next_churn {
                    next_churn += 0.5;
                    if let Some(r) = &mut resizing {
                        r.step();
                    }
                    let len = 1 << 20;
                    // Written only through the pointer kept with it; the previous one is
                    // unmapped after.
                    let q = fresh_area(len).cast::<u64>();
                    let mark = written as u64;
                    for i in 0..len / 8 {
                        // SAFETY: within the mapping just made.
                        unsafe { *q.add(i) = mark ^ i as u64 };
                    }
                    if let Some((old, _)) = scratch.replace((q, mark)) {
                        // SAFETY: the previous scratch area, no longer referred to.
                        unsafe { libc::munmap(old.cast(), len) };
                    }
                }
                if churn && written % 64 == 63 {
                    let at = mem[p * 512..].as_mut_ptr();
                    // SAFETY: one whole page of our own vector (page-aligned, see `off`); it
                    // reads as zeroes afterwards, which `gens` records.
                    let r = unsafe { libc::madvise(at.cast(), 4096, libc::MADV_DONTNEED) };
                    if r == 0 {
                        gens[p] = u32::MAX;
                    }
                } else {
                    gens[p] = gens[p].wrapping_add(1) % u32::MAX;
                    mem[p * 512..(p + 1) * 512].fill(word(p, gens[p]));
                }
                written += 1;
                p = (p + 1) % pages;
            }
            let expect = |p: usize| {
                if gens[p] == u32::MAX {
                    0
                } else {
                    word(p, gens[p])
                }
            };
            if let Some(i) = resizing.as_ref().and_then(Resizing::bad) {
                eprintln!("dirty: word {i} of the area that grows and shrinks changed");
                std::process::exit(3);
            }
            if let Some((q, mark)) = scratch {
                let bad = (0..(1usize << 20) / 8)
                    // SAFETY: within the scratch mapping, still mapped.
                    .find(|&i| unsafe { *q.add(i) } != mark ^ i as u64);
                if let Some(i) = bad {
                    eprintln!("dirty: word {i} of the last scratch area changed");
                    std::process::exit(3);
                }
            }
            if let Some(bad) =
                (0..pages).find(|&p| mem[p * 512..(p + 1) * 512].iter().any(|w| *w != expect(p)))
            {
                eprintln!(
                    "dirty: page {bad} holds {:#x}, not {:#x}",
                    mem[bad * 512],
                    expect(bad)
                );
                std::process::exit(3);
            }
            println!(
                "max_gap_ms {:.1} pages_written {written}",
                max_gap.as_secs_f64() * 1e3
            );
            let listed: Vec<String> = gaps
                .iter()
                .map(|(at, g)| format!("{at}:{:.1}", g.as_secs_f64() * 1e3))
                .collect();
            println!("gaps {}", listed.join(" "));
        }
        Some("touch") => {
            let len = (n as usize) << 20;
            // Written only through the slice made from it below, unmapped at exit.
            let p = fresh_area(len);
            // SAFETY: `p` is a readable and writable mapping of `len` bytes that nothing else
            // refers to.
            let m = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
            let t = Instant::now();
            for c in m.chunks_mut(4096) {
                c[0] = 1;
            }
            println!("{}", t.elapsed().as_secs_f64() * 1000.0);
        }
        Some("readfile") => {
            let kib: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
            let passes: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
            let mut b = vec![0u8; kib << 10];
            let t = Instant::now();
            let mut total = 0usize;
            for _ in 0..passes {
                let mut f = std::fs::File::open(&args[2]).unwrap();
                loop {
                    let k = f.read(&mut b).unwrap();
                    if k == 0 {
                        break;
                    }
                    total += k;
                }
            }
            println!("{}", total as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        Some("writefile") => {
            let mib: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
            let kib: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(64);
            let b = vec![7u8; kib << 10];
            let t = Instant::now();
            let mut f = std::fs::File::create(&args[2]).unwrap();
            let mut left = mib << 20;
            while left > 0 {
                let k = left.min(b.len());
                f.write_all(&b[..k]).unwrap();
                left -= k;
            }
            drop(f);
            println!("{}", (mib << 20) as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        Some(m @ ("notify" | "notify-sync")) => notify(n, m == "notify-sync"),
        Some("postmark") => {
            let arg = |i: usize| -> u64 {
                args.get(i)
                    .and_then(|s| s.parse().ok())
                    .expect("postmark DIR FILES TRANSACTIONS BLOCK")
            };
            let dir = std::path::Path::new(args.get(2).expect("postmark DIR"));
            let secs = postmark(dir, arg(3) as usize, arg(4), arg(5) as usize);
            println!("{secs}");
        }
        Some("filecalls") => {
            let dir = std::path::Path::new(args.get(2).expect("filecalls DIR N"));
            let n: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
            let [read, open, stat, create] = filecalls(dir, n);
            println!("{read} {open} {stat} {create}");
        }
        _ => {
            eprintln!(
                "usage: mosix-probe calls N | spin SECS | mem MIB | touch MIB | readfile PATH KIB [PASSES] | writefile PATH MIB KIB | notify N | notify-sync N | postmark DIR FILES TRANSACTIONS BLOCK | filecalls DIR N"
            );
            std::process::exit(2);
        }
    }
}

/// What single file calls cost in `dir`, in microseconds each over `n` rounds: a 64-byte
/// `pread`, an `open` and `close`, a `stat`, a creation (`O_CREAT|O_EXCL`, close) and its
/// `unlink`. The file `probe` is made first and removed after.
fn filecalls(dir: &std::path::Path, n: u32) -> [f64; 4] {
    use std::os::unix::fs::FileExt;
    let f = dir.join("probe");
    std::fs::write(&f, [7u8; 4096]).unwrap();
    let us = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let file = std::fs::File::open(&f).unwrap();
    let mut b = [0u8; 64];
    let t = std::time::Instant::now();
    for _ in 0..n {
        file.read_at(&mut b, 0).unwrap();
    }
    let read = us(t);
    let t = std::time::Instant::now();
    for _ in 0..n {
        drop(std::fs::File::open(&f).unwrap());
    }
    let open = us(t);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::fs::metadata(&f).unwrap();
    }
    let stat = us(t);
    let t = std::time::Instant::now();
    for i in 0..n {
        let g = dir.join(format!("c{}", i % 8));
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&g)
                .unwrap(),
        );
        std::fs::remove_file(&g).unwrap();
    }
    let create = us(t);
    std::fs::remove_file(&f).unwrap();
    [read, open, stat, create]
}

/// PostMark's workload (J. Katcher, NetApp TR3022, 1997), as its defaults describe it: a pool
/// of `files` files of 500 B..9.77 KB is created in `dir`, then `transactions` transactions run,
/// each a read of a whole file or an append to one (even odds), then a creation of a new file or
/// a deletion of one (even odds); then every file left is deleted. Every read and write is done
/// in `block`-byte calls. Returns the seconds the whole took (creation and deletion included).
fn postmark(dir: &std::path::Path, files: usize, transactions: u64, block: usize) -> f64 {
    const MIN: u64 = 500;
    const MAX: u64 = 9_770;
    let mut seed = 42u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    let buf = vec![b'p'; block.max(1)];
    let mut rbuf = vec![0u8; block.max(1)];
    let write_n = |f: &mut std::fs::File, mut n: u64| {
        while n > 0 {
            let k = (n as usize).min(buf.len());
            f.write_all(&buf[..k]).unwrap();
            n -= k as u64;
        }
    };
    let mut live: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let name = |i: u64| dir.join(format!("pm{i}"));
    let t = Instant::now();
    let create = |live: &mut Vec<u64>, next: &mut u64, size: u64| {
        let mut f = std::fs::File::create(name(*next)).unwrap();
        write_n(&mut f, size);
        live.push(*next);
        *next += 1;
    };
    for _ in 0..files {
        let size = MIN + rnd(MAX - MIN + 1);
        create(&mut live, &mut next, size);
    }
    for _ in 0..transactions {
        if !live.is_empty() {
            let i = live[rnd(live.len() as u64) as usize];
            if rnd(2) == 0 {
                let mut f = std::fs::File::open(name(i)).unwrap();
                while f.read(&mut rbuf).unwrap() > 0 {}
            } else {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(name(i))
                    .unwrap();
                write_n(&mut f, MIN + rnd(MAX - MIN + 1));
            }
        }
        if rnd(2) == 0 || live.is_empty() {
            let size = MIN + rnd(MAX - MIN + 1);
            create(&mut live, &mut next, size);
        } else {
            let k = rnd(live.len() as u64) as usize;
            let i = live.swap_remove(k);
            std::fs::remove_file(name(i)).unwrap();
        }
    }
    for i in live {
        std::fs::remove_file(name(i)).unwrap();
    }
    t.elapsed().as_secs_f64()
}

fn notify(n: u64, sync: bool) {
    let ns = mosix_kmod::kernel::seccomp::notify_round_trip_ns(n, sync).unwrap();
    println!("{ns}");
}
