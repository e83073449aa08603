//! The page stream of a process connection over loopback TCP, without the rest of a migration:
//! 1 GiB of page runs of `image::MAX_RUN` bytes from one thread's `Sender::send_run` to another's
//! `Receiver::recv_raw`, with the link authenticated only and encrypted, against bare TCP moving
//! the same bytes in the same run. Both ends on one machine, so the figures bound what the
//! link's code costs the stream; the migration bench measures whole moves. Run with
//! `cargo bench -p mosix-kmod --bench channel`.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::image::MAX_RUN;
use mosix_core::proto::seal::{Protection, Transcript};
use mosix_core::proto::{ProcMsg, Side};
use mosix_kmod::link::channel::{self, Conn};

const TOTAL: usize = 1 << 30;

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Bytes per second of bare TCP: `TOTAL` bytes in writes of `MAX_RUN`.
fn bare() -> f64 {
    let (mut a, mut b) = pair();
    let rx = std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_RUN];
        let mut got = 0;
        while got < TOTAL {
            let n = b.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
    });
    let data = vec![0x5au8; MAX_RUN];
    let t = Instant::now();
    for _ in 0..TOTAL / MAX_RUN {
        a.write_all(&data).unwrap();
    }
    rx.join().unwrap();
    TOTAL as f64 / t.elapsed().as_secs_f64()
}

/// Bytes per second of the sealed page stream.
fn sealed(p: Protection) -> f64 {
    let (a, b) = pair();
    let t = Transcript {
        client: NodeId::new(1).unwrap(),
        server: NodeId::new(2).unwrap(),
        nonce_c: [1; 32],
        nonce_s: [2; 32],
        protection: p,
    };
    let secret = Secret::new(b"0123456789abcdef0123").unwrap();
    let (tx, _) = channel::split(Conn::new(a, t.session(&secret, Side::Client))).unwrap();
    let (_, mut rx) = channel::split(Conn::new(b, t.session(&secret, Side::Server))).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_RUN];
        loop {
            match rx.recv().unwrap() {
                ProcMsg::Pages { len, .. } => rx.recv_raw(&mut buf[..len as usize]).unwrap(),
                ProcMsg::End => return,
                m => panic!("{m:?}"),
            }
        }
    });
    let data = vec![0x5au8; MAX_RUN];
    let t = Instant::now();
    for i in 0..TOTAL / MAX_RUN {
        tx.send_run(0, (i * MAX_RUN) as u64, &data).unwrap();
    }
    tx.send(&ProcMsg::End).unwrap();
    reader.join().unwrap();
    TOTAL as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    println!(
        "{:<28} {:>10} {:>8}",
        "1 GiB of 4 MiB runs", "MB/s", "/ bare"
    );
    for round in 0..2 {
        let base = bare();
        let auth = sealed(Protection::Authenticated);
        let enc = sealed(Protection::Encrypted);
        println!("round {}", round + 1);
        println!("{:<28} {:>10.0} {:>8.2}", "bare TCP", base / 1e6, 1.0);
        println!(
            "{:<28} {:>10.0} {:>8.2}",
            "authenticated (GMAC)",
            auth / 1e6,
            auth / base
        );
        println!(
            "{:<28} {:>10.0} {:>8.2}",
            "encrypted (GCM)",
            enc / 1e6,
            enc / base
        );
    }
}
