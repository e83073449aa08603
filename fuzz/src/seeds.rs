//! The seed corpus: valid examples of every input, made with mosix-core's own encoders, plus the
//! project's files and fixtures (the frame and map fixtures of `crates/mosix-core/tests/`, the
//! example `etc/mosix.map` and `etc/mosix/mosix.toml`). `cargo run --example seeds` writes them
//! to `fuzz/corpus/<target>/`; see docs/fuzzing.md.

use std::net::Ipv4Addr;
use std::path::Path;

use mosix_core::client::{
    ClusterView, DecayMode, NodeView, ProcRow, Request, Response, RunningConfig, ServiceInfo,
    Target,
};
use mosix_core::config::{DecayTunables, Secret};
use mosix_core::gossip::{GossipMsg, WireEntry};
use mosix_core::image::{
    Cached, Creds, IMAGE_VERSION, ImageHeader, MmFields, Regs, Rlimit, Rseq, SigAction,
    SpecialMaps, Vma, VmaKind,
};
use mosix_core::load::{Figures, NodeInfo};
use mosix_core::moves::MoveFailure;
use mosix_core::overheads::{BUILTIN_DEFAULT, Overhead, Overheads};
use mosix_core::proto::{
    self, Call, Handshake, LinkMsg, ProcMsg, Protection, Reply, Side, Transcript,
};
use mosix_core::{Flag, NodeId, Status};

use crate::checks::{CLIENT, SECRET, SERVER};

/// One seed: the file name under `fuzz/corpus/<target>/` and its bytes.
pub type Seed = (String, Vec<u8>);

fn id(n: u16) -> NodeId {
    match NodeId::new(n) {
        Some(n) => n,
        None => panic!("seed node numbers are not 0"),
    }
}

fn seed(name: &str, bytes: Vec<u8>) -> Seed {
    (name.to_owned(), bytes)
}

fn info(load: u32) -> NodeInfo {
    NodeInfo {
        flags: Status::STAY | Status::NOMFS,
        figures: Some(Figures {
            load,
            speed: 10_000,
            cpus: 4,
            mem_total: 8 << 30,
            mem_free: 6 << 30,
            mem_rawfree: 2 << 30,
            util: 37,
            foreign: 0,
            foreign_guests: 0,
            own: 0,
        }),
        isolation: None,
        queue: Some(mosix_core::queue::Head {
            priority: 50,
            submitted_ms: 1_764_000_000_000,
            queued: 3,
        }),
    }
}

/// Seeds of `link_frame`: one frame of each kind, a stream of several, and the frame fixtures.
pub fn link_frame(root: &Path) -> Vec<Seed> {
    let gossip = LinkMsg::Gossip(GossipMsg {
        entries: vec![
            WireEntry {
                node: id(3),
                age_ms: 0,
                info: info(150),
            },
            WireEntry {
                node: id(20),
                age_ms: 1_500,
                info: NodeInfo {
                    flags: Status::QUIET,
                    figures: None,
                    queue: None,
                    isolation: Some((1_764_000_000_000, true)),
                },
            },
            WireEntry {
                node: id(7),
                age_ms: 40_000,
                info: info(0),
            },
        ],
    });
    let open = LinkMsg::OpenProcess;
    let rejoin = LinkMsg::Rejoin {
        pid: 4242,
        token: 0x1234_5678_9abc,
        local_pid: 77,
    };
    let mut stream = proto::encode(&gossip);
    stream.extend(proto::encode(&gossip));
    stream.extend(proto::encode(&rejoin));
    let mut v = vec![
        seed("gossip", proto::encode(&gossip)),
        seed("open-process", proto::encode(&open)),
        seed("rejoin", proto::encode(&rejoin)),
        seed("list-queue", proto::encode(&LinkMsg::ListQueue)),
        seed(
            "resume",
            proto::encode(&LinkMsg::Resume {
                pid: 4242,
                token: [7; 16],
                received: 1_000_000,
            }),
        ),
        seed("stream", stream),
    ];
    v.extend(frame_fixtures(root));
    v
}

/// The frame fixtures of mosix-core's tests (hex text after a `# expect:` line), as bytes.
fn frame_fixtures(root: &Path) -> Vec<Seed> {
    let dir = root.join("crates/mosix-core/tests/fixtures/frames");
    let mut v = Vec::new();
    for (name, text) in files(&dir) {
        let hex: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .concat();
        let bytes = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        let stem = name.trim_end_matches(".hex");
        v.push(seed(&format!("fixture-{stem}"), bytes));
    }
    v
}

/// The files of a directory, sorted by name.
fn files(dir: &Path) -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    let mut v: Vec<(String, String)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), text))
        })
        .collect();
    v.sort();
    v
}

/// Seeds of `handshake`: a client's Hello and right Proof (what the server of the checks
/// accepts), a server's Challenge and Welcome (what the client accepts), and refusals.
pub fn handshake() -> Vec<Seed> {
    let Ok(secret) = Secret::new(SECRET) else {
        panic!("the checks' secret is refused");
    };
    let (s, ns) = (id(SERVER.0), SERVER.1);
    let (c, nc) = (id(CLIENT.0), CLIENT.1);
    let p = Protection::Encrypted;
    let t = Transcript {
        client: c,
        server: s,
        nonce_c: nc,
        nonce_s: ns,
        protection: p,
    };
    let hello = Handshake::Hello {
        node: c,
        nonce: nc,
        protection: p,
    };
    let proof_c = Handshake::Proof {
        proof: t.proof(&secret, Side::Client),
    };
    let challenge = Handshake::Challenge {
        node: s,
        nonce: ns,
        proof: t.proof(&secret, Side::Server),
        protection: p,
    };
    let frames = |ms: &[&Handshake]| ms.iter().flat_map(proto::encode).collect();
    let refuse = Handshake::Refuse {
        reason: "wrong cluster secret".into(),
    };
    vec![
        seed("server-accepts", frames(&[&hello, &proof_c])),
        seed("client-accepts", frames(&[&challenge, &Handshake::Welcome])),
        seed(
            "stranger",
            frames(&[&Handshake::Hello {
                node: id(9),
                nonce: [0; 32],
                protection: p,
            }]),
        ),
        seed("refuse", frames(&[&hello, &refuse])),
        seed(
            "clear-asked",
            frames(&[&Handshake::Hello {
                node: c,
                nonce: nc,
                protection: Protection::Authenticated,
            }]),
        ),
    ]
}

/// Seeds of `sealed`: the first byte chooses the protection (bit 0) and the number of records
/// (the rest), the next the plan (bit i: record i is a page run), then one size byte per
/// record, then the edits (four bytes each: what, where, with what).
pub fn sealed() -> Vec<Seed> {
    vec![
        seed("intact-encrypted", vec![0b101, 0b0010, 3, 200, 0]),
        seed("intact-authenticated", vec![0b100, 0b0100, 9, 0, 250]),
        seed("flipped", vec![0b011, 0b01, 40, 40, 0, 30, 0, 0x80]),
        seed("cut", vec![0b100, 0b000, 10, 10, 10, 1, 60, 0, 0]),
        seed("swapped", vec![0b101, 0b000, 5, 5, 5, 2, 0, 0, 1]),
        seed("replayed", vec![0b110, 0b010, 5, 5, 5, 3, 1, 0, 0]),
    ]
}

/// A plausible image header: a small static program with its heap, stack and vdso.
pub fn image_header() -> ImageHeader {
    let vma = |start: u64, end: u64, write: bool, exec: bool, kind: VmaKind| Vma {
        start,
        end,
        read: true,
        write,
        exec,
        kind,
    };
    let file = |offset| VmaKind::File {
        path: "/usr/bin/spin".into(),
        offset,
    };
    let mut regs = Regs([0; 27]);
    regs.0[Regs::RIP] = 0x40_1000;
    regs.0[Regs::RSP] = 0x7ffd_0000_1000;
    regs.0[Regs::ORIG_RAX] = 0;
    regs.0[Regs::RAX] = (-512i64) as u64;
    ImageHeader {
        version: IMAGE_VERSION,
        home: id(1),
        comm: "spin".into(),
        nmigs: 2,
        locked: false,
        ceiling: Some(250),
        regs,
        xstate: vec![0x7f; 64],
        sigmask: 1 << 9,
        sigactions: vec![SigAction {
            sig: 2,
            handler: 0x40_2000,
            flags: 0x0400_0000,
            restorer: 0x40_3000,
            mask: 0,
        }],
        altstack: (0, 2, 0),
        rseq: Some(Rseq {
            ptr: 0x7f00_0000_0020,
            len: 32,
            sig: 0x5305_3053,
        }),
        robust_list: (0x7f00_0000_0040, 24),
        tid_address: 0x7f00_0000_0080,
        mm: MmFields {
            start_code: 0x40_0000,
            end_code: 0x40_4000,
            start_brk: 0x60_0000,
            brk: 0x62_1000,
            ..MmFields::default()
        },
        auxv: vec![6, 0, 0, 0, 0, 16, 0, 0],
        vmas: vec![
            vma(0x40_0000, 0x40_4000, false, true, file(0)),
            vma(0x40_4000, 0x40_5000, true, false, file(0x4000)),
            vma(0x60_0000, 0x62_1000, true, false, VmaKind::Heap),
            vma(
                0x7f00_0000_0000,
                0x7f00_0000_1000,
                true,
                false,
                VmaKind::Anon,
            ),
            vma(
                0x7ffd_0000_0000,
                0x7ffd_0002_1000,
                true,
                false,
                VmaKind::Stack,
            ),
        ],
        special: SpecialMaps {
            vvar: Some((0x7ffd_1000_0000, 0x7ffd_1000_4000)),
            vvar_vclock: None,
            vdso: Some((0x7ffd_1000_4000, 0x7ffd_1000_6000)),
            vdso_bytes: b"\x7fELF".to_vec(),
        },
        cpu_flags: vec!["fpu".into(), "sse2".into(), "avx2".into()],
        creds: Creds {
            uid: [1000; 3],
            gid: [1000; 3],
            groups: vec![4, 27, 1000],
        },
        rlimits: vec![Rlimit {
            resource: 3,
            cur: 8 << 20,
            max: u64::MAX,
        }],
        cached: Cached {
            pid: 4242,
            ppid: 4000,
            pgrp: 4242,
            uname: [
                "Linux".into(),
                "node1".into(),
                "6.12.0".into(),
                "#1 SMP".into(),
                "x86_64".into(),
                "(none)".into(),
            ],
        },
        total_bytes: 0x2_6000,
        rejoin: None,
        write_errors: Vec::new(),
        native_io: Some(mosix_core::image::NativeIo {
            from: 3,
            except: vec![250, 251],
            exact: true,
            umask: 0o22,
        }),
    }
}

/// Seeds of `image`: the header of [`image_header`] as a bare payload, and one that comes
/// straight from another remote node.
pub fn image() -> Vec<Seed> {
    let payload = |h: &ImageHeader| match postcard::to_stdvec(h) {
        Ok(v) => v,
        Err(e) => panic!("an image header does not serialise: {e}"),
    };
    let h = image_header();
    let mut moving = h.clone();
    moving.rejoin = Some(99);
    moving.locked = true;
    moving.ceiling = None;
    vec![
        seed("header", payload(&h)),
        seed("rejoining", payload(&moving)),
    ]
}

/// Seeds of `proc_msg`: one frame of every message, and a migration as a stream (image, a page
/// run with its data, end, started).
pub fn proc_msg() -> Vec<Seed> {
    let failure = MoveFailure::Refused {
        by: id(3),
        reason: "node 3 is blocked".into(),
    };
    let msgs = [
        ("image", ProcMsg::Image(Box::new(image_header()))),
        (
            "pages",
            ProcMsg::Pages {
                vma: 2,
                offset: 0x1000,
                len: 0,
            },
        ),
        ("end", ProcMsg::End),
        ("started", ProcMsg::Started { pid: 77 }),
        (
            "describe",
            ProcMsg::Describe {
                fd: 3,
                fresh: false,
            },
        ),
        ("orphaned-stop", ProcMsg::OrphanedStop { sig: 20 }),
        (
            "described",
            ProcMsg::Described {
                fd: 3,
                path: Some(b"/mfs/3/srv/data".to_vec()),
                flags: 0o100000,
                pos: 4096,
                shared: false,
                mode: 0o100644,
            },
        ),
        ("refused", ProcMsg::Refused { failure }),
        (
            "call",
            ProcMsg::Call(Call {
                nr: 1,
                args: [1, 0x7ffd_0000_0100, 12, 0, 0, 0],
                bufs: vec![(1, b"hello world\n".to_vec())],
                ahead: 1,
            }),
        ),
        (
            "call-path",
            ProcMsg::Call(Call {
                nr: 257,
                args: [u64::MAX - 99, 0x7ffd_0000_0200, 0, 0, 0, 0],
                bufs: vec![(1, b"/etc/hostname".to_vec())],
                ahead: 0,
            }),
        ),
        (
            "reply",
            ProcMsg::Reply(Reply {
                ret: 5,
                outs: vec![(1, b"node1".to_vec())],
                io: proto::IO_ANSWERED | proto::IO_STREAM,
                room: 1 << 20,
                file: 0x0801_0000_0000_1234,
            }),
        ),
        ("signal", ProcMsg::Signal { sig: 15 }),
        ("write-failed", ProcMsg::WriteFailed { fd: 3, errno: 28 }),
        ("come-home", ProcMsg::ComeHome { live: true }),
        ("kill", ProcMsg::Kill),
        ("exit", ProcMsg::Exit { status: 3 }),
        (
            "died",
            ProcMsg::Died {
                sig: 11,
                core: true,
            },
        ),
        (
            "stats",
            ProcMsg::Stats {
                utime_ms: 1200,
                stime_ms: 30,
                state: b'R',
                rss: 2 << 20,
            },
        ),
        (
            "expelled",
            ProcMsg::Expelled {
                why: mosix_core::proto::Expulsion::Displaced,
            },
        ),
        ("leave", ProcMsg::Leave { to: id(4) }),
        ("ack", ProcMsg::Ack { received: 1234 }),
        ("precopy", ProcMsg::Precopy(Box::new(image_header()))),
        ("round", ProcMsg::Round { bytes: 1 << 20 }),
        ("ack-please", ProcMsg::AckPlease),
        ("resumed", ProcMsg::Resumed { received: 99 }),
        (
            "not-resumed",
            ProcMsg::NotResumed {
                why: "no such connection".into(),
            },
        ),
        (
            "move-to",
            ProcMsg::MoveTo {
                node: id(5),
                token: 0xdead_beef,
                live: false,
            },
        ),
        (
            "moved",
            ProcMsg::Moved {
                signals: vec![10, 12, 34],
            },
        ),
        (
            "move-failed",
            ProcMsg::MoveFailed {
                failure: MoveFailure::LinkLost {
                    node: id(5),
                    detail: "connection reset".into(),
                },
            },
        ),
        ("rejoined", ProcMsg::Rejoined),
        ("stopped", ProcMsg::Stopped { sig: 20, conts: 1 }),
    ];
    let mut v: Vec<Seed> = msgs
        .iter()
        .map(|(name, m)| seed(name, proto::encode(m)))
        .collect();
    let mut migration = proto::encode(&ProcMsg::Image(Box::new(image_header())));
    migration.extend(proto::encode(&ProcMsg::Pages {
        vma: 3,
        offset: 0,
        len: 32,
    }));
    migration.extend([0xa5; 32]);
    migration.extend(proto::encode(&ProcMsg::End));
    migration.extend(proto::encode(&ProcMsg::Started { pid: 77 }));
    v.push(seed("migration", migration));
    v
}

/// Seeds of `control_request`: a frame of every request, a session of several, and some of the
/// service's answers (the target reads its input as both).
pub fn control_request(root: &Path) -> Vec<Seed> {
    let map_text = std::fs::read_to_string(root.join("etc/mosix.map")).unwrap_or_default();
    let reqs = [
        ("ping", Request::Ping),
        ("view", Request::View),
        (
            "set-flag",
            Request::SetFlag {
                flag: Flag::Block,
                on: true,
            },
        ),
        ("set-speed", Request::SetSpeed { speed: 20_000 }),
        ("get-decay", Request::GetDecay),
        ("set-decay", Request::SetDecay(DecayTunables::default())),
        ("get-tune", Request::GetTune),
        ("load-tune", Request::LoadTune),
        ("get-config", Request::GetConfig),
        (
            "reconfigure",
            Request::Reconfigure {
                map_name: "/etc/mosix.map".into(),
                map_text,
                node: Some(id(1)),
            },
        ),
        ("shutdown", Request::Shutdown),
        (
            "register",
            Request::Register {
                lock: true,
                decay: DecayMode::CpuBound,
                placement: Some(id(2)),
                fallback_home: true,
                checkpoint: Some(mosix_core::client::CheckpointSpec {
                    file: "/home/u/ck".into(),
                    every_s: 600,
                    max: 3,
                }),
                best: false,
            },
        ),
        (
            "checkpoint",
            Request::Checkpoint {
                pid: 4242,
                then: mosix_core::client::CheckpointThen::Stop,
            },
        ),
        (
            "restore",
            Request::Restore {
                file: "/home/u/ck.3".into(),
                fd: 17,
            },
        ),
        (
            "migrate",
            Request::Migrate {
                pid: 4242,
                to: Target::Node(id(3)),
                wait: true,
                live: true,
            },
        ),
        (
            "migrate-home",
            Request::Migrate {
                pid: 4242,
                to: Target::Home,
                wait: false,
                live: false,
            },
        ),
        ("expel", Request::Expel),
        ("bring", Request::Bring),
        ("procs", Request::Procs { guests: true }),
    ];
    let mut v: Vec<Seed> = reqs
        .iter()
        .map(|(name, r)| seed(name, proto::encode(r)))
        .collect();
    let session: Vec<u8> = [
        Request::Ping,
        Request::View,
        Request::Procs { guests: false },
    ]
    .iter()
    .flat_map(proto::encode)
    .collect();
    v.push(seed("session", session));
    let answers = [
        (
            "answer-pong",
            Response::Pong(ServiceInfo {
                node: id(1),
                pid: 100,
                version: mosix_core::VERSION.into(),
            }),
        ),
        (
            "answer-view",
            Response::View(ClusterView {
                files: Default::default(),
                me: id(1),
                interval_ms: 1000,
                dead_after_ms: 10_000,
                nodes: vec![NodeView {
                    node: id(2),
                    addr: Ipv4Addr::new(10, 0, 0, 2),
                    is_self: false,
                    up: true,
                    age_ms: Some(800),
                    status: Status::CONF | Status::UP,
                    figures: info(100).figures,
                    cluster: Some("physics".into()),
                }],
                cluster: "chem".into(),
                partners: vec![mosix_core::client::PartnerView {
                    name: "physics".into(),
                    priority: 10,
                    go: true,
                    take: true,
                    idle_only: false,
                    nodes: 1,
                    up: 1,
                    guests_here: 0,
                }],
                own_guests: 0,
                max_grid_guests: None,
            }),
        ),
        (
            "answer-tune",
            Response::Tune(Overheads {
                source: "/etc/overheads".into(),
                rows: vec![BUILTIN_DEFAULT],
            }),
        ),
        (
            "answer-config",
            Response::Config(RunningConfig {
                node: id(1),
                map_text: "1 10.0.0.1 4\n".into(),
                map_name: "/etc/mosix.map".into(),
                port: 4249,
                interval_ms: 1000,
                window: 16,
                dead_after_ms: 10_000,
                measuring: "machine".into(),
                mfs_mount: "/mfs".into(),
                partner_map_text: "101 10.0.1.1 2\n".into(),
            }),
        ),
        (
            "answer-procs",
            Response::Procs(vec![ProcRow {
                pid: 4242,
                node: 3,
                from: None,
                tty: 34816,
                state: 'R',
                cpu_ms: 1200,
                cpu_age_ms: 400,
                command: "spin 10".into(),
                nmigs: 1,
                lock: false,
                cantmove: None,
                remote_pid: Some(77),
                frozen: None,
                uid: None,
            }]),
        ),
        (
            "answer-move-failed",
            Response::MoveFailed(MoveFailure::Gone {
                pid: 4242,
                detail: "it exited".into(),
            }),
        ),
    ];
    v.extend(answers.iter().map(|(name, r)| seed(name, proto::encode(r))));
    v
}

/// Seeds of `map`: the example map and the map fixtures, valid and invalid.
pub fn map(root: &Path) -> Vec<Seed> {
    let mut v = vec![seed(
        "etc-mosix.map",
        std::fs::read(root.join("etc/mosix.map")).unwrap_or_default(),
    )];
    for kind in ["valid", "invalid"] {
        let dir = root
            .join("crates/mosix-core/tests/fixtures/maps")
            .join(kind);
        for (name, text) in files(&dir) {
            v.push(seed(&format!("fixture-{kind}-{name}"), text.into_bytes()));
        }
    }
    v
}

/// Seeds of `overheads`: the built-in defaults and a measured file, as `to_text` writes them,
/// and a file written by hand.
pub fn overheads() -> Vec<Seed> {
    let measured = Overheads {
        source: "measured by tune on node 1".into(),
        rows: vec![
            BUILTIN_DEFAULT,
            Overhead {
                peer: Some(id(2)),
                mig_fixed_us: 3_100,
                mig_page_ns: 1_900,
                call_rtt_us: 70,
            },
            Overhead {
                peer: Some(id(65535)),
                mig_fixed_us: 0,
                mig_page_ns: u64::MAX,
                call_rtt_us: 1,
            },
        ],
    };
    let by_hand = "# by hand\npeer mig_fixed_us mig_page_ns call_rtt_us\n\n\
                   default 5000 4000 100   # the rest\n3\t1200\t900\t60\n";
    vec![
        seed("builtin", Overheads::builtin().to_text().into_bytes()),
        seed("measured", measured.to_text().into_bytes()),
        seed("by-hand", by_hand.as_bytes().to_vec()),
    ]
}

/// Seeds of `tunables`: the example `mosix.toml`, and a few small files.
pub fn tunables(root: &Path) -> Vec<Seed> {
    let small = [
        ("empty", ""),
        (
            "all-set",
            "[gossip]\ninterval_ms = 500\nwindow = 8\ndead_after_ms = 5000\n\
             [link]\nport = 5000\nconnect_timeout_ms = 200\n\
             [node]\nspeed = 20000\ncgroup = \"/mosix/node1\"\nsample_ms = 50\n\
             [decay]\ninterval_s = 2\nslow = 990\nfast = 900\n",
        ),
        ("inline", "gossip = { window = 4 }\ndecay.slow = 1000\n"),
        ("out-of-range", "[gossip]\n\ninterval_ms = 5\n"),
        ("unknown-key", "[link]\nprot = 1\n"),
    ];
    let mut v = vec![seed(
        "etc-mosix.toml",
        std::fs::read(root.join("etc/mosix/mosix.toml")).unwrap_or_default(),
    )];
    v.extend(
        small
            .iter()
            .map(|(name, text)| seed(name, text.as_bytes().to_vec())),
    );
    v
}

/// Seeds of `mfs_msg`: a request of every kind and a reply of every kind, one frame each.
pub fn mfs_msg() -> Vec<Seed> {
    use mosix_core::proto::mfs::{
        Attr, Caller, DirEntry, FsStats, MfsOp, MfsReply, MfsRequest, SetTime,
    };
    let caller = Caller {
        uid: 1000,
        gid: 100,
        groups: vec![4, 24, 27],
    };
    let p = |s: &str| s.as_bytes().to_vec();
    let ops = [
        (
            "stat",
            MfsOp::Stat {
                path: p("/etc/hostname"),
            },
        ),
        (
            "open",
            MfsOp::Open {
                path: p("/srv/data"),
                flags: 2,
            },
        ),
        (
            "create",
            MfsOp::Create {
                path: p("/tmp/new"),
                flags: 0o1101,
                mode: 0o644,
            },
        ),
        (
            "read",
            MfsOp::Read {
                handle: 3,
                offset: 4096,
                size: 65536,
            },
        ),
        (
            "write",
            MfsOp::Write {
                handle: 3,
                offset: 0,
                data: vec![7; 300],
            },
        ),
        (
            "readdir",
            MfsOp::ReadDir {
                handle: 9,
                offset: 12,
            },
        ),
        (
            "setattr",
            MfsOp::SetAttr {
                path: p("/tmp/new"),
                handle: Some(3),
                mode: Some(0o600),
                uid: None,
                gid: Some(100),
                size: Some(0),
                atime: Some(SetTime::Now),
                mtime: Some(SetTime::At(1_700_000_000, 5)),
            },
        ),
        (
            "rename",
            MfsOp::Rename {
                from: p("/a/b"),
                to: p("/a/c"),
                flags: 1,
            },
        ),
        (
            "symlink",
            MfsOp::Symlink {
                target: p("../x"),
                path: p("/tmp/l"),
            },
        ),
    ];
    let mut v: Vec<Seed> = ops
        .into_iter()
        .map(|(name, op)| {
            let r = MfsRequest {
                caller: caller.clone(),
                op,
            };
            seed(&format!("request-{name}"), proto::encode(&r))
        })
        .collect();
    let replies = [
        ("err", MfsReply::Err(13)),
        (
            "attr",
            MfsReply::Attr(Attr {
                ino: 5,
                mode: 0o100644,
                nlink: 1,
                size: 6,
                ..Attr::default()
            }),
        ),
        ("data", MfsReply::Data(b"node 3\n".to_vec())),
        (
            "entries",
            MfsReply::Entries {
                entries: vec![DirEntry {
                    name: p("hostname"),
                    ino: 77,
                    kind: 8,
                }],
                end: true,
            },
        ),
        (
            "stats",
            MfsReply::Stats(FsStats {
                blocks: 100,
                bsize: 4096,
                ..FsStats::default()
            }),
        ),
    ];
    v.extend(
        replies
            .into_iter()
            .map(|(name, r)| seed(&format!("reply-{name}"), proto::encode(&r))),
    );
    v
}

/// Every target's seeds, by target name. `root` is the project's top directory.
pub fn all(root: &Path) -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("link_frame", link_frame(root)),
        ("handshake", handshake()),
        ("sealed", sealed()),
        ("proc_msg", proc_msg()),
        ("mfs_msg", mfs_msg()),
        ("image", image()),
        ("control_request", control_request(root)),
        ("map", map(root)),
        ("overheads", overheads()),
        ("tunables", tunables(root)),
        ("checkpoint", checkpoint()),
    ]
}

/// Seeds of `checkpoint`: a whole checkpoint file (record, the image of [`image_header`] with
/// one page run, digest), and the same cut short.
pub fn checkpoint() -> Vec<Seed> {
    use mosix_core::checkpoint::{self, Fd, FdKind, FileSeen, Hashing, ImageWriter, Meta};
    let meta = Meta {
        taken_ms: 1_700_000_000_000,
        node: 1,
        pid: 4242,
        uid: 1000,
        gid: 1000,
        command: "gzip -9".into(),
        kernel: "6.1.0 #1 SMP".into(),
        cwd: "/home/u".into(),
        umask: 0o022,
        env: b"HOME=/home/u\0".to_vec(),
        fds: vec![
            Fd {
                fd: 0,
                cloexec: false,
                kind: FdKind::File {
                    path: "/home/u/big.tar".into(),
                    flags: 0,
                    pos: 65536,
                    seen: FileSeen {
                        size: 1 << 20,
                        mtime_ns: 5,
                        dev: 2049,
                        ino: 77,
                    },
                },
            },
            Fd {
                fd: 1,
                cloexec: false,
                kind: FdKind::Gone {
                    what: "pipe:[9]".into(),
                    flags: 1,
                },
            },
        ],
        image_bytes: 4096,
        why: "migrate checkpoint".into(),
    };
    let mut w = Hashing::new(Vec::new());
    let written = checkpoint::write_meta(&mut w, &meta).and_then(|()| {
        let mut iw = ImageWriter::new(&mut w, &image_header())?;
        iw.run(0, 0, &[0x90; 4096])?;
        iw.end().map(|_| ())
    });
    if let Err(e) = written {
        panic!("a checkpoint does not serialise: {e}");
    }
    let file = match checkpoint::write_trailer(w) {
        Ok(f) => f,
        Err(e) => panic!("a checkpoint does not serialise: {e}"),
    };
    let cut = file[..file.len() - 10].to_vec();
    vec![seed("whole", file), seed("cut", cut)]
}
