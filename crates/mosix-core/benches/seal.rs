//! What sealing costs the link (`proto::seal`): seal and open rates of frames of a forwarded
//! call's size and of page runs, in both protections, against a plain `memcpy` of the same bytes
//! measured in the same run. Run with `cargo bench -p mosix-core --bench seal`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::image::MAX_RUN;
use mosix_core::proto::seal::{Protection, Session, TAG_LEN, Transcript, read_sealed};
use mosix_core::proto::{Call, MAX_PROC_FRAME, ProcMsg, Side};

fn sessions(p: Protection) -> (Session, Session) {
    let t = Transcript {
        client: NodeId::new(1).unwrap(),
        server: NodeId::new(2).unwrap(),
        nonce_c: [1; 32],
        nonce_s: [2; 32],
        protection: p,
    };
    let secret = Secret::new(b"0123456789abcdef0123").unwrap();
    (
        t.session(&secret, Side::Client),
        t.session(&secret, Side::Server),
    )
}

/// Seconds per iteration of `f`, over about `budget` seconds.
fn time(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut n = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        let s = t.elapsed().as_secs_f64();
        if s > budget {
            return s / n as f64;
        }
        n *= 2;
    }
}

fn main() {
    println!(
        "{:<26} {:>9} {:>12} {:>12} {:>12}",
        "what", "bytes", "seal", "open", "memcpy"
    );
    for p in [Protection::Encrypted, Protection::Authenticated] {
        let name = match p {
            Protection::Encrypted => "encrypted",
            Protection::Authenticated => "authenticated",
        };
        // A frame: a forwarded read's reply of `n` bytes, encoded and sealed, then opened and
        // decoded, as the process connection does it (buffers reused).
        for n in [1usize, 4096, 64 << 10] {
            let m = ProcMsg::Call(Call {
                nr: 0,
                args: [0; 6],
                bufs: vec![(1, vec![7; n])],
                ahead: 0,
            });
            let (mut c, _) = sessions(p);
            let mut frame = Vec::new();
            let seal = time(0.3, || c.sealer.encode(&m, &mut frame).unwrap());
            // Frames open only in the order they were sealed: a batch, opened whole by a fresh
            // receiver each time (deriving its keys costs microseconds, spread over the batch).
            const BATCH: usize = 256;
            let (mut c, _) = sessions(p);
            let batch: Vec<Vec<u8>> = (0..BATCH)
                .map(|_| {
                    let mut f = Vec::new();
                    c.sealer.encode(&m, &mut f).unwrap();
                    f
                })
                .collect();
            let mut buf = Vec::new();
            let open = time(0.3, || {
                let (_, mut r) = sessions(p);
                for f in &batch {
                    let got: ProcMsg =
                        read_sealed(&mut &f[..], &mut r.opener, MAX_PROC_FRAME, &mut buf).unwrap();
                    std::hint::black_box(got);
                }
            }) / BATCH as f64;
            let src = vec![7u8; frame.len()];
            let mut dst = vec![0u8; frame.len()];
            let copy = time(0.1, || {
                dst.copy_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&mut dst);
            });
            println!(
                "{:<26} {:>9} {:>9.2} µs {:>9.2} µs {:>9.2} µs",
                format!("{name} call frame"),
                frame.len(),
                seal * 1e6,
                open * 1e6,
                copy * 1e6
            );
        }
        // A page run of MAX_RUN bytes: one record.
        let data = vec![0x5au8; MAX_RUN];
        let (mut c, _) = sessions(p);
        let mut scratch = Vec::new();
        let seal = time(0.5, || {
            let (bytes, tag) = c.sealer.seal_run(&data, &mut scratch).unwrap();
            std::hint::black_box((bytes.len(), tag));
        });
        let (mut c, _) = sessions(p);
        let (bytes, tag) = c.sealer.seal_run(&data, &mut scratch).unwrap();
        let sealed: Vec<u8> = bytes.to_vec();
        let tag: [u8; TAG_LEN] = tag;
        let mut work = sealed.clone();
        let open = time(0.5, || {
            // Each open needs a fresh receiver at record 0 (keys are cheap to derive).
            let (_, mut r) = sessions(p);
            work.copy_from_slice(&sealed);
            r.opener.open_run(&mut work, &tag).unwrap();
        });
        let mut dst = vec![0u8; MAX_RUN];
        let copy = time(0.3, || {
            dst.copy_from_slice(std::hint::black_box(&data));
            std::hint::black_box(&mut dst);
        });
        let gbs = |t: f64| MAX_RUN as f64 / t / 1e9;
        println!(
            "{:<26} {:>9} {:>7.1} GB/s {:>7.1} GB/s {:>7.1} GB/s   (open includes a copy back)",
            format!("{name} page run"),
            MAX_RUN,
            gbs(seal),
            gbs(open),
            gbs(copy)
        );
    }
}
