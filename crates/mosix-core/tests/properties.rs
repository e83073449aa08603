//! Property tests of every decoder that sees bytes from outside: the share of the fuzzing that
//! runs in CI (docs/fuzzing.md). The properties are the fuzz targets' own (`fuzz/src/checks.rs`,
//! included here), checked on
//! * every input of the fuzz corpus (`fuzz/corpus/<target>/`: the seeds and every regression
//!   the fuzzers found);
//! * arbitrary bytes, and arbitrary payloads behind a valid frame header;
//! * arbitrary valid values, written by the code's own encoders, which must be accepted;
//!
//! and limits are shown to be enforced before allocating, with the checks' counting allocator.
#![allow(clippy::unwrap_used)]

#[path = "../../../fuzz/src/checks.rs"]
mod checks;

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use mosix_core::NodeId;
use mosix_core::client::{DecayMode, Request, Target};
use mosix_core::config::{DecayTunables, Tunables};
use mosix_core::gossip::{GossipMsg, WireEntry};
use mosix_core::image::{self, ImageHeader, Vma, VmaKind};
use mosix_core::load::NodeInfo;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::{
    self, Call, FrameError, HEADER_LEN, LinkMsg, MAX_CALL_BUFS, MAX_CONTROL_FRAME,
    MAX_HANDSHAKE_FRAME, MAX_LINK_FRAME, MAX_PROC_FRAME, ProcMsg, Reply,
};
use mosix_core::{Flag, map};
use proptest::collection::vec;
use proptest::prelude::*;

use checks::alloc::measure;

/// The properties of one fuzz target, on one input.
type Check = fn(&[u8]);

/// Every fuzz target by name, as its corpus directory is named.
const TARGETS: [(&str, Check); 11] = [
    ("link_frame", checks::link_frame),
    ("handshake", checks::handshake),
    ("sealed", checks::sealed),
    ("proc_msg", checks::proc_msg),
    ("mfs_msg", checks::mfs_msg),
    ("image", checks::image),
    ("control_request", checks::control_request),
    ("map", checks::map),
    ("overheads", checks::overheads),
    ("tunables", checks::tunables),
    ("checkpoint", checks::checkpoint),
];

fn id(n: u16) -> NodeId {
    NodeId::new(n).unwrap()
}

/// A frame header announcing `len` bytes, and the payload.
fn framed(len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b'M', b'X', proto::PROTOCOL_VERSION, 0];
    f.extend(len.to_le_bytes());
    f.extend(payload);
    f
}

#[test]
fn every_corpus_input_holds_the_properties_of_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut seen = Vec::new();
    for dir in std::fs::read_dir(&corpus).unwrap() {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some((_, check)) = TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("fuzz/corpus/{name} belongs to no target of TARGETS");
        };
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "fuzz/corpus/{name} is empty");
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            if std::panic::catch_unwind(|| check(&bytes)).is_err() {
                panic!(
                    "{} breaks a property of {name} (message above)",
                    f.display()
                );
            }
        }
        seen.push(name);
    }
    for (t, _) in TARGETS {
        assert!(seen.iter().any(|s| s == t), "no corpus for the target {t}");
    }
}

// ---------------------------------------------------------------------------------------------
// Limits before allocation.

#[test]
fn a_header_over_the_limit_is_refused_before_any_allocation() {
    for limit in [
        MAX_HANDSHAKE_FRAME,
        MAX_LINK_FRAME,
        checks::MAX_REQUEST,
        MAX_PROC_FRAME,
        MAX_CONTROL_FRAME,
    ] {
        for len in [limit as u32 + 1, u32::MAX] {
            let f = framed(len, &[]);
            let (r, peak) = measure(|| proto::read_frame::<Request, _>(&mut &f[..], limit));
            assert!(
                matches!(r, Err(FrameError::TooLong { .. })),
                "{limit}: {r:?}"
            );
            assert!(
                peak < 1024,
                "{limit}: allocated {peak} bytes for a refused header"
            );
            let (r, peak) = measure(|| proto::decode_frame::<Request>(&f, limit));
            assert!(matches!(r, Err(FrameError::TooLong { .. })));
            assert!(peak < 1024);
        }
        // A header at the limit costs the limit, and no more, before the stream runs dry.
        let f = framed(limit as u32, &[0]);
        let (r, peak) = measure(|| proto::read_frame::<Request, _>(&mut &f[..], limit));
        assert!(matches!(r, Err(FrameError::Truncated)), "{r:?}");
        assert!(peak <= limit, "{peak} > {limit}");
    }
}

#[test]
fn an_image_cannot_make_the_receiver_allocate_past_its_limits() {
    // A megabyte frame of a million empty CPU-flag strings, and of 200 000 memory areas: before
    // the lists were bounded while decoding, these allocated 32 MiB and 16 MiB at once.
    let mut h = image_header();
    h.cpu_flags = vec![String::new(); 1_000_000];
    let f = proto::encode(&ProcMsg::Image(Box::new(h.clone())));
    let (m, peak) = measure(|| proto::decode_frame::<ProcMsg>(&f, MAX_PROC_FRAME));
    assert!(
        peak < 256 * 1024,
        "{peak} bytes at once for {} bytes",
        f.len()
    );
    let e = m.unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("more than 1024 CPU flags"), "{e}");

    h.cpu_flags.clear();
    h.vmas = (0..200_000u64)
        .map(|i| Vma {
            start: i << 12,
            end: (i + 1) << 12,
            read: true,
            write: false,
            exec: false,
            kind: VmaKind::Anon,
        })
        .collect();
    let f = proto::encode(&ProcMsg::Image(Box::new(h)));
    let (m, peak) = measure(|| proto::decode_frame::<ProcMsg>(&f, MAX_PROC_FRAME));
    assert!(
        peak < 16 << 20,
        "{peak} bytes at once for {} bytes",
        f.len()
    );
    assert!(m.unwrap().validate().is_err());
    // Every limit of the image at once, kept exactly.
    let mut h = image_header();
    h.vmas = (0..image::MAX_VMAS as u64)
        .map(|i| Vma {
            start: i << 12,
            end: (i + 1) << 12,
            read: true,
            write: true,
            exec: false,
            kind: VmaKind::Anon,
        })
        .collect();
    h.cpu_flags = vec!["f".into(); image::MAX_CPU_FLAGS];
    h.creds.groups = vec![7; image::MAX_GROUPS];
    h.xstate = vec![1; image::MAX_XSTATE];
    let payload = postcard::to_stdvec(&h).unwrap();
    let back: ImageHeader = proto::decode_payload(&payload).unwrap();
    assert!(back.validate().is_ok());
    assert_eq!(back, h);
}

/// Found by fuzzing (docs/fuzzing.md): a gossip window entry takes 64 bytes in memory for 4 on
/// the wire, so a 1 MiB link frame once allocated 16 MiB; the window is now bounded while it
/// is decoded.
#[test]
fn a_gossip_frame_cannot_make_the_receiver_allocate_past_the_frame_limit() {
    let e = WireEntry {
        node: id(1),
        age_ms: 0,
        info: NodeInfo {
            flags: Default::default(),
            figures: None,
            queue: None,
            isolation: None,
        },
    };
    let f = proto::encode(&LinkMsg::Gossip(GossipMsg {
        entries: vec![e; 260_000],
    }));
    let (_, peak) = measure(|| proto::decode_frame::<LinkMsg>(&f, MAX_LINK_FRAME));
    assert!(
        peak <= MAX_LINK_FRAME,
        "{peak} bytes at once for {} bytes",
        f.len()
    );
}

/// A node's answer to `mps -A` keeps at most its limit of rows while it is decoded, and
/// validation refuses one past it; a command past its length is refused too.
#[test]
fn an_answer_cannot_list_past_its_limits() {
    use mosix_core::client::ProcRow;
    use mosix_core::proto::{Answer, MAX_LISTED_PROCS, MAX_LISTING_FRAME, MAX_QUEUE_COMMAND};
    let row = ProcRow {
        pid: 1,
        node: 0,
        from: None,
        tty: 0,
        state: 'R',
        cpu_ms: 0,
        cpu_age_ms: 0,
        command: String::new(),
        nmigs: 0,
        lock: false,
        cantmove: None,
        remote_pid: None,
        frozen: None,
        uid: None,
    };
    let f = proto::encode(&Answer::Procs(vec![row.clone(); MAX_LISTED_PROCS + 100]));
    let (back, peak) = measure(|| proto::decode_frame::<Answer>(&f, MAX_LISTING_FRAME));
    let back = back.unwrap();
    assert!(back.validate().is_err());
    assert!(peak <= MAX_LISTING_FRAME, "{peak} bytes at once");
    let long = ProcRow {
        command: "x".repeat(MAX_QUEUE_COMMAND + 1),
        ..row
    };
    let f = proto::encode(&Answer::Procs(vec![long]));
    let back = proto::decode_frame::<Answer>(&f, MAX_LISTING_FRAME).unwrap();
    assert!(back.validate().is_err());
}

/// Found by fuzzing: an empty call buffer is 2 bytes on the wire and 32 in memory; the buffers
/// are now counted while they are decoded.
#[test]
fn a_call_cannot_make_the_receiver_allocate_past_the_frame_limit() {
    let f = proto::encode(&ProcMsg::Call(Call {
        nr: 0,
        args: [0; 6],
        bufs: vec![(0, vec![]); 1_000_000],
        ahead: 0,
    }));
    let (_, peak) = measure(|| proto::decode_frame::<ProcMsg>(&f, MAX_PROC_FRAME));
    assert!(
        peak <= f.len(),
        "{peak} bytes at once for {} bytes",
        f.len()
    );
}

/// Found by fuzzing: a handshake error repeated the peer's refusal reason verbatim, so a
/// stranger, before authenticating, could put line breaks and terminal escapes into the log.
#[test]
fn a_strangers_refusal_reason_stays_on_one_line() {
    let p = proto::Protection::Encrypted;
    let mut server = proto::ServerHandshake::new(id(1), [7; 32], p);
    let secret = mosix_core::config::Secret::new(checks::SECRET).unwrap();
    let hello = proto::Handshake::Hello {
        node: id(2),
        nonce: [9; 32],
        protection: p,
    };
    server.on_hello(&secret, hello, |_| Ok(())).unwrap();
    let refuse = proto::Handshake::Refuse {
        reason: "x\nWARN forged line".into(),
    };
    let (e, _) = server.on_proof(&secret, refuse).unwrap_err();
    assert!(!e.to_string().contains('\n'), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Arbitrary bytes.

fn text() -> impl Strategy<Value = String> {
    // Mostly the characters the text formats are made of, with anything now and then.
    vec(
        prop_oneof![
            8 => proptest::sample::select(
                " \t\n#.=:-[]\"{},0123456789abcdefghijklmnopqrstuvwxyzALIAS_".chars().collect::<Vec<_>>()
            ),
            1 => any::<char>(),
        ],
        0..160,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_break_no_decoder(bytes in vec(any::<u8>(), 0..300)) {
        for (_, check) in TARGETS {
            check(&bytes);
        }
    }

    #[test]
    fn arbitrary_payloads_behind_a_valid_header_break_no_decoder(
        payload in vec(any::<u8>(), 0..300),
        extra in 0u32..3,
    ) {
        // The announced length is right, or a little longer than what follows.
        let f = framed(payload.len() as u32 + extra, &payload);
        for check in [checks::link_frame, checks::handshake, checks::proc_msg, checks::control_request] {
            check(&f);
        }
        checks::image(&payload);
        if let Ok(a) = proto::decode_frame::<mosix_core::proto::Answer>(&f, proto::MAX_LISTING_FRAME) {
            let _ = a.validate();
        }
    }

    #[test]
    fn arbitrary_text_breaks_no_text_format(t in text()) {
        checks::map(t.as_bytes());
        checks::overheads(t.as_bytes());
        checks::tunables(t.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary valid values: accepted, and read back the same.

fn image_header() -> ImageHeader {
    let payload = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/image/seed-header"),
    )
    .unwrap();
    proto::decode_payload(&payload).unwrap()
}

fn arb_failure() -> impl Strategy<Value = MoveFailure> {
    prop_oneof![
        (1u16.., ".{0,40}").prop_map(|(n, reason)| MoveFailure::Refused { by: id(n), reason }),
        (any::<u32>(), ".{0,40}").prop_map(|(pid, detail)| MoveFailure::Gone { pid, detail }),
        (1u16.., ".{0,40}").prop_map(|(n, detail)| MoveFailure::LinkLost {
            node: id(n),
            detail
        }),
        ".{0,40}".prop_map(|detail| MoveFailure::Kernel { detail }),
    ]
}

fn arb_bufs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    vec((0u8..6, vec(any::<u8>(), 0..64)), 0..=MAX_CALL_BUFS)
}

fn arb_image() -> impl Strategy<Value = ImageHeader> {
    let vmas = vec(
        (
            0u64..16,
            1u64..16,
            any::<bool>(),
            proptest::option::of("/[a-z/]{0,20}"),
        ),
        0..24,
    )
    .prop_map(|spans| {
        let mut at = 0x1000u64;
        spans
            .into_iter()
            .map(|(gap, len, write, file)| {
                let start = at + (gap << 12);
                at = start + (len << 12);
                Vma {
                    start,
                    end: at,
                    read: true,
                    write,
                    exec: !write,
                    kind: file.map_or(VmaKind::Anon, |path| VmaKind::File {
                        path,
                        offset: gap << 12,
                    }),
                }
            })
            .collect::<Vec<_>>()
    });
    (
        vmas,
        vec("[a-z0-9_]{1,10}", 0..20),
        vec(any::<u32>(), 0..20),
        vec(any::<u8>(), 0..600),
        any::<[u64; 27]>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u64>()),
        ".{0,16}",
    )
        .prop_map(
            |(vmas, cpu_flags, groups, xstate, regs, ceiling, rejoin, comm)| {
                let mut h = image_header();
                h.vmas = vmas;
                h.cpu_flags = cpu_flags;
                h.creds.groups = groups;
                h.xstate = xstate;
                h.regs = image::Regs(regs);
                h.ceiling = ceiling;
                h.rejoin = rejoin;
                h.comm = comm;
                h
            },
        )
}

fn arb_proc() -> impl Strategy<Value = ProcMsg> {
    prop_oneof![
        arb_image().prop_map(|h| ProcMsg::Image(Box::new(h))),
        (any::<u32>(), any::<u64>(), 0..=image::MAX_RUN as u32)
            .prop_map(|(vma, offset, len)| ProcMsg::Pages { vma, offset, len }),
        (any::<u32>(), any::<[u64; 6]>(), arb_bufs(), any::<u32>()).prop_map(
            |(nr, args, bufs, ahead)| ProcMsg::Call(Call {
                nr,
                args,
                bufs,
                ahead
            })
        ),
        (
            any::<i64>(),
            arb_bufs(),
            any::<u8>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(ret, outs, io, room, file)| ProcMsg::Reply(Reply {
                ret,
                outs,
                io,
                room,
                file
            })),
        (any::<i32>(), any::<i32>()).prop_map(|(fd, errno)| ProcMsg::WriteFailed { fd, errno }),
        vec(any::<i32>(), 0..100).prop_map(|signals| ProcMsg::Moved { signals }),
        arb_failure().prop_map(|failure| ProcMsg::Refused { failure }),
        arb_failure().prop_map(|failure| ProcMsg::MoveFailed { failure }),
        (any::<u64>(), any::<u64>(), any::<u8>(), any::<u64>()).prop_map(
            |(utime_ms, stime_ms, state, rss)| ProcMsg::Stats {
                utime_ms,
                stime_ms,
                state,
                rss
            }
        ),
        (1u16.., any::<u64>(), any::<bool>()).prop_map(|(n, token, live)| ProcMsg::MoveTo {
            node: id(n),
            token,
            live
        }),
        (any::<i32>(), any::<u32>()).prop_map(|(sig, conts)| ProcMsg::Stopped { sig, conts }),
        (any::<i32>(), any::<bool>()).prop_map(|(sig, core)| ProcMsg::Died { sig, core }),
        any::<i32>().prop_map(|status| ProcMsg::Exit { status }),
        Just(ProcMsg::End),
        Just(ProcMsg::Kill),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::View),
        (0usize..5, any::<bool>()).prop_map(|(f, on)| Request::SetFlag {
            flag: [
                Flag::Stay,
                Flag::Lstay,
                Flag::Block,
                Flag::Quiet,
                Flag::NoMfs
            ][f],
            on
        }),
        any::<u32>().prop_map(|speed| Request::SetSpeed { speed }),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(interval_s, slow, fast)| {
            Request::SetDecay(DecayTunables {
                interval_s,
                slow,
                fast,
            })
        }),
        (".{0,20}", arb_map_text(), proptest::option::of(1u16..)).prop_map(
            |(map_name, map_text, node)| Request::Reconfigure {
                map_name,
                map_text,
                node: node.map(id),
            }
        ),
        (
            any::<bool>(),
            0usize..5,
            proptest::option::of(1u16..),
            any::<bool>()
        )
            .prop_map(|(lock, d, placement, fallback_home)| Request::Register {
                lock,
                decay: [
                    DecayMode::Slow,
                    DecayMode::Fast,
                    DecayMode::None,
                    DecayMode::CpuBound,
                    DecayMode::IoBound
                ][d],
                placement: placement.map(id),
                fallback_home,
                checkpoint: lock.then(|| mosix_core::client::CheckpointSpec {
                    file: "/home/u/ckpt".into(),
                    every_s: d as u32 * 60,
                    max: 2,
                }),
                best: fallback_home && placement.is_none(),
            }),
        (
            any::<u32>(),
            proptest::option::of(1u16..),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(pid, to, wait, live)| Request::Migrate {
                pid,
                to: to.map_or(Target::Home, |n| Target::Node(id(n))),
                wait,
                live,
            }),
        any::<bool>().prop_map(|guests| Request::Procs { guests }),
    ]
}

/// A valid map: ranges of nodes that do not overlap, at addresses that do not overlap, some
/// aliases, comments and blank lines, in any order.
fn arb_map_text() -> impl Strategy<Value = String> {
    (
        vec((0u16..50, 1u16..40, any::<bool>(), any::<bool>()), 1..12),
        any::<bool>(),
    )
        .prop_map(|(ranges, tabs)| {
            let sep = if tabs { "\t" } else { "   " };
            let mut out = String::from("# generated\n\n");
            let mut next = 1u16;
            for (i, (gap, count, alias, comment)) in ranges.into_iter().enumerate() {
                let first = next + gap;
                next = first + count;
                let _ = write!(out, "{first}{sep}10.{}.{}.1{sep}{count}", i / 200, i % 200);
                if comment {
                    out.push_str("  # a range");
                }
                out.push('\n');
                if alias {
                    let _ = writeln!(out, "{} 172.16.{i}.9 alias", first + count - 1);
                }
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn process_messages_round_trip(m in arb_proc()) {
        let f = proto::encode(&m);
        prop_assert!(m.validate().is_ok());
        let back: ProcMsg = proto::decode_frame(&f, MAX_PROC_FRAME).unwrap();
        prop_assert_eq!(&back, &m);
        checks::proc_msg(&f);
        if let ProcMsg::Image(h) = &m {
            checks::image(&postcard::to_stdvec(h).unwrap());
        }
    }

    #[test]
    fn control_requests_round_trip(r in arb_request()) {
        let f = proto::encode(&r);
        prop_assert!(f.len() - HEADER_LEN <= checks::MAX_REQUEST);
        let back: Request = proto::read_frame(&mut &f[..], checks::MAX_REQUEST).unwrap();
        prop_assert_eq!(&back, &r);
        checks::control_request(&f);
    }

    #[test]
    fn valid_maps_are_accepted_and_written_back(text in arb_map_text()) {
        let m = map::parse_and_resolve("m", &text, &checks::fake_resolver);
        prop_assert!(m.is_ok(), "{}\n{}", m.unwrap_err(), text);
        checks::map(text.as_bytes());
    }

    #[test]
    fn valid_tunables_are_accepted_and_a_bad_value_names_its_line(
        interval in 10u64..=60_000,
        window in 1usize..=1024,
        port in 1u16..,
        sample in 10u64..=10_000,
        fast in 0u32..=1000,
        bad in 0usize..4,
        blank in 0usize..4,
    ) {
        let mut lines = vec![
            "[gossip]".to_owned(),
            format!("interval_ms = {interval}"),
            format!("window = {window}"),
            "[link]".to_owned(),
            format!("port = {port}"),
            "[node]".to_owned(),
            format!("sample_ms = {sample}"),
            "[decay]".to_owned(),
            format!("fast = {fast}"),
            "slow = 1000".to_owned(),
        ];
        for _ in 0..blank {
            lines.insert(1, "# blank and comment lines move the keys".to_owned());
        }
        let text = lines.join("\n");
        let t = Tunables::parse("t.toml", &text).unwrap();
        prop_assert_eq!((t.gossip.interval_ms, t.gossip.window, t.link.port), (interval, window, port));
        checks::tunables(text.as_bytes());
        // One value out of range: the error names that line.
        let (key, value) = [("interval_ms", "5"), ("window", "0"), ("sample_ms", "1"), ("fast", "1001")][bad];
        let at = lines.iter().position(|l| l.starts_with(key)).unwrap();
        lines[at] = format!("{key} = {value}");
        let e = Tunables::parse("t.toml", &lines.join("\n")).unwrap_err().to_string();
        prop_assert!(e.starts_with(&format!("t.toml:{}: ", at + 1)), "{}", e);
        checks::tunables(lines.join("\n").as_bytes());
    }
}

#[test]
fn the_fake_resolver_fails_some_names_and_resolves_others() {
    // The map checks need both outcomes.
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let ok = names
        .iter()
        .filter(|n| checks::fake_resolver(n).is_ok())
        .count();
    assert!(ok > 0 && ok < names.len());
    assert_eq!(checks::fake_resolver("a"), checks::fake_resolver("a"));
    assert_ne!(
        checks::fake_resolver("node1").ok(),
        Some(Ipv4Addr::UNSPECIFIED)
    );
}
