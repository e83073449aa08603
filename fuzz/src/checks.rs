//! The properties of every decoder of `mosix-core` that sees bytes from outside, one function
//! per decoder. Each takes arbitrary bytes and panics when a property does not hold; that panic
//! is the crash the fuzzer reports.
//!
//! This file is shared: the fuzz targets (`fuzz/fuzz_targets/*.rs`) call it through the
//! `mosix-fuzz` library, and `crates/mosix-core/tests/properties.rs` includes it with `#[path]`,
//! feeds it proptest's bytes and replays every file of `fuzz/corpus/` through it under plain
//! `cargo test`, so CI keeps each input the fuzzer ever found. It therefore uses nothing but std
//! and `mosix-core`'s own dependencies (postcard, serde, toml).
//!
//! What is checked, for every decoder:
//! * it never panics, and an error is one non-empty line (a text format's error names the file
//!   and the line);
//! * what it accepts re-encodes to something that decodes to the same value, within the limit
//!   of its channel, and encoding that value again gives the same bytes;
//! * what `validate` accepts is within every named limit (checked here again, independently);
//! * the stream reader and the in-memory decoder agree;
//! * no single allocation while decoding is larger than the channel's frame limit
//!   ([`alloc::measure`]).

use std::fmt::{Debug, Display};
use std::io::Read;
use std::net::Ipv4Addr;

use mosix_core::NodeId;
use mosix_core::client::{Request, Response};
use mosix_core::config::{Secret, Tunables};
use mosix_core::gossip::{self, Dissemination, GossipConfig, GossipMsg, MAX_WINDOW};
use mosix_core::image::{self, ImageHeader};
use mosix_core::load::NodeInfo;
use mosix_core::map::{self, MapErrorKind};
use mosix_core::overheads::Overheads;
use mosix_core::proto::{
    self, ClientHandshake, FrameError, HEADER_LEN, Handshake, LinkMsg, MAX_CALL_BUFS,
    MAX_CONTROL_FRAME, MAX_HANDSHAKE_FRAME, MAX_LINK_FRAME, MAX_MOVED_SIGNALS, MAX_PROC_FRAME,
    ProcMsg, Protection, ServerHandshake, Side, Transcript,
};
use mosix_core::syscalls::{MAX_IO, MAX_PATH};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The most the node service reads of any control request (a new map from root; every other
/// request is held to [`mosix_core::client::MAX_REQUEST`]).
pub const MAX_REQUEST: usize = mosix_core::client::MAX_RECONFIGURE;

/// The name text formats are parsed under here, which their errors must show.
pub const MAP_NAME: &str = "fuzz/mosix.map";
/// See [`MAP_NAME`].
pub const OVERHEADS_NAME: &str = "fuzz/overheads";
/// See [`MAP_NAME`].
pub const TUNABLES_NAME: &str = "fuzz/mosix.toml";

/// The most frames of one input a stream check reads (an input of empty frames has many).
const MAX_STREAM_FRAMES: usize = 64;

/// Counting the largest single allocation: the global allocator of every program that includes
/// this file is the system allocator, remembering per thread the largest block asked for since
/// the last [`measure`].
pub mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// The system allocator, noting the size of each request.
    pub struct Tracking;

    thread_local! {
        // A const-initialised Cell without a destructor: reading it never allocates, so the
        // allocator may touch it.
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        // `try_with` fails only while the thread is being torn down; nothing is measured then.
        let _ = PEAK.try_with(|p| {
            if size > p.get() {
                p.set(size);
            }
        });
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
    // blocks handed out and taken back are exactly System's, under GlobalAlloc's contract; the
    // bookkeeping beside it neither allocates nor touches the blocks.
    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: our caller guarantees GlobalAlloc::alloc's contract (non-zero size), which
            // is System's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, that is from System, with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: `ptr` came from System with `layout`; the caller guarantees the new size's
            // contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Tracking = Tracking;

    /// Runs `f` and returns its result with the largest single allocation it made (on this
    /// thread), in bytes.
    pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let _ = PEAK.try_with(|p| p.set(0));
        let r = f();
        (r, PEAK.try_with(Cell::get).unwrap_or(0))
    }
}

/// Asserts that no single allocation of a decoder exceeded the frame limit of its channel.
fn within<T>(what: &str, limit: usize, (r, peak): (T, usize)) -> T {
    assert!(
        peak <= limit,
        "{what}: one allocation of {peak} bytes while decoding, over the limit of {limit}"
    );
    r
}

/// Asserts that an error message is one non-empty line.
fn clean(what: &str, e: &impl Display) {
    let s = e.to_string();
    assert!(!s.trim().is_empty(), "{what}: an empty error message");
    assert!(!s.contains('\n'), "{what}: the error spans lines: {s:?}");
}

/// A decoded message re-encodes within `limit`, decodes to itself, and encodes stably.
fn round_trip<M>(what: &str, m: &M, limit: usize)
where
    M: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let frame = proto::encode(m);
    assert!(
        frame.len() - HEADER_LEN <= limit,
        "{what}: an accepted message re-encodes to {} bytes, over the limit of {limit}",
        frame.len() - HEADER_LEN
    );
    let back: M = match proto::decode_frame(&frame, limit) {
        Ok(b) => b,
        Err(e) => panic!("{what}: a re-encoded message does not decode: {e}\n{m:?}"),
    };
    assert_eq!(&back, m, "{what}: the round trip changed the message");
    assert_eq!(
        proto::encode(&back),
        frame,
        "{what}: the encoding is not stable"
    );
}

/// A reader that hands out its bytes in pieces of varying size, with an occasional
/// `Interrupted`, the way a socket may.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(5) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let piece = 1 + (self.calls * 7 + self.data.len()) % 13;
        let n = piece.min(buf.len()).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads frames from `data` as a connection does: one after the other, each checked with
/// `validate`, until the stream ends or a frame is refused. Returns the messages and the error
/// that ended the stream. `between` is called after each message, with the stream, to consume
/// what follows a message outside frames (page data after `Pages`).
fn read_stream<M>(
    what: &str,
    data: &[u8],
    limit: usize,
    validate: impl Fn(&M) -> Result<(), FrameError>,
    between: impl Fn(&M, &mut Trickle<'_>) -> Result<(), FrameError>,
) -> (Vec<M>, FrameError)
where
    M: DeserializeOwned,
{
    let mut r = Trickle {
        data,
        pos: 0,
        calls: 0,
    };
    let mut msgs = Vec::new();
    loop {
        if msgs.len() == MAX_STREAM_FRAMES {
            return (msgs, FrameError::Closed);
        }
        let before = r.pos;
        let got = within(
            what,
            limit,
            alloc::measure(|| proto::read_frame::<M, _>(&mut r, limit)),
        );
        let e = match got.and_then(|m| validate(&m).map(|()| m)) {
            Ok(m) => {
                assert!(
                    r.pos >= before + HEADER_LEN,
                    "{what}: a frame without a header"
                );
                match between(&m, &mut r) {
                    Ok(()) => {
                        msgs.push(m);
                        continue;
                    }
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        clean(what, &e);
        match e {
            FrameError::Closed => assert_eq!(
                (before, r.pos),
                (data.len(), data.len()),
                "{what}: 'closed' before the end of the stream"
            ),
            FrameError::Truncated => {
                assert_eq!(r.pos, data.len(), "{what}: 'truncated' before the end")
            }
            FrameError::Io(ref io) => {
                panic!("{what}: an I/O error from a reader that has none: {io}")
            }
            _ => {}
        }
        return (msgs, e);
    }
}

/// The in-memory decoder and the stream reader agree on an input that is exactly one frame.
fn agree<M: PartialEq + Debug>(
    what: &str,
    one: &Result<M, FrameError>,
    stream: &(Vec<M>, FrameError),
) {
    match one {
        Ok(m) => {
            assert_eq!(
                stream.0.len(),
                1,
                "{what}: decoded in memory, not as a stream"
            );
            assert_eq!(&stream.0[0], m, "{what}: the two decoders disagree");
            assert!(
                matches!(stream.1, FrameError::Closed),
                "{what}: one whole frame, yet the stream ended with '{}'",
                stream.1
            );
        }
        Err(_) => assert!(
            !(stream.0.len() == 1 && matches!(stream.1, FrameError::Closed)),
            "{what}: one good frame on the stream, refused in memory: {one:?}"
        ),
    }
}

fn id(n: u16) -> NodeId {
    match NodeId::new(n) {
        Some(n) => n,
        None => panic!("the checks' own node numbers are not 0"),
    }
}

// ---------------------------------------------------------------------------------------------
// Link frames.

/// `link_frame`: frames on an authenticated link connection ([`LinkMsg`] with
/// [`LinkMsg::validate`], limit [`MAX_LINK_FRAME`]), through `proto::decode_link` and through
/// `proto::read_frame` as the link reads a stream of them; accepted gossip is merged into a
/// [`Dissemination`] the way the service does.
pub fn link_frame(data: &[u8]) {
    let what = "link frame";
    let one = within(
        what,
        MAX_LINK_FRAME,
        alloc::measure(|| proto::decode_link(data)),
    );
    match &one {
        Ok(m) => {
            check_link(what, m);
            round_trip(what, m, MAX_LINK_FRAME);
        }
        Err(e) => clean(what, e),
    }
    let stream = read_stream(what, data, MAX_LINK_FRAME, LinkMsg::validate, |_, _| Ok(()));
    agree(what, &one, &stream);
    let mut diss = gossip_state();
    for (i, m) in stream.0.iter().enumerate() {
        check_link(what, m);
        if let LinkMsg::Gossip(g) = m {
            merge(&mut diss, g, 1_000_000 + i as i64 * 1000);
        }
    }
}

fn check_link(what: &str, m: &LinkMsg) {
    assert!(m.validate().is_ok());
    if let LinkMsg::Gossip(g) = m {
        assert!(
            g.entries.len() <= MAX_WINDOW,
            "{what}: a window of {} entries passed validate",
            g.entries.len()
        );
    }
}

/// Node 5 of the nodes 1..=8 and 20 (not one contiguous range, so both ways of finding an entry
/// are taken), with a window of 4.
fn gossip_state() -> Dissemination<NodeInfo> {
    let nodes: Vec<NodeId> = (1..=8).chain([20]).map(id).collect();
    let cfg = GossipConfig::new(nodes.len(), 1000, 4, None);
    match Dissemination::new(nodes, id(5), cfg, 0, 0) {
        Ok(d) => d,
        Err(e) => panic!("the test's own gossip state: {e}"),
    }
}

fn merge(diss: &mut Dissemination<NodeInfo>, g: &GossipMsg<NodeInfo>, now: gossip::Millis) {
    let taken = diss.receive(g, now);
    assert!(taken <= g.entries.len());
    let w = diss.window(now);
    assert!(w.entries.len() <= diss.config().window);
    for e in &w.entries {
        assert!(
            diss.nodes().contains(&e.node),
            "a window names an unknown node"
        );
    }
    for k in diss.known(now) {
        if let Some(age) = k.age_ms {
            assert!(k.info.is_some() || k.is_self);
            assert!(age <= u64::from(u32::MAX) + 1_000_000 + 64_000);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The handshake, before authentication.

/// The cluster secret of the handshake checks.
pub const SECRET: &[u8] = b"fuzzing-secret-0123456789";
/// The server's node and nonce in the handshake checks.
pub const SERVER: (u16, [u8; 32]) = (1, [7; 32]);
/// The client's node and nonce in the handshake checks.
pub const CLIENT: (u16, [u8; 32]) = (2, [9; 32]);

/// `handshake`: the messages of the link handshake ([`Handshake`], limit
/// [`MAX_HANDSHAKE_FRAME`]), the only frames a stranger can send. The input is read as a stream
/// of frames and played to both state machines: to a server (node 1) as Hello then Proof, to a
/// client (node 2, connecting to node 1) as Challenge then verdict. Either accepts only what
/// carries the right proof.
pub fn handshake(data: &[u8]) {
    let what = "handshake";
    let one = within(
        what,
        MAX_HANDSHAKE_FRAME,
        alloc::measure(|| proto::decode_frame::<Handshake>(data, MAX_HANDSHAKE_FRAME)),
    );
    match &one {
        Ok(m) => round_trip(what, m, MAX_HANDSHAKE_FRAME),
        Err(e) => clean(what, e),
    }
    let stream = read_stream(what, data, MAX_HANDSHAKE_FRAME, |_| Ok(()), |_, _| Ok(()));
    agree(what, &one, &stream);
    let msgs = stream.0;
    let Ok(secret) = Secret::new(SECRET) else {
        panic!("the test's own secret is refused");
    };
    let (s_node, s_nonce) = (id(SERVER.0), SERVER.1);
    let (c_node, c_nonce) = (id(CLIENT.0), CLIENT.1);
    // Both ends encrypt; a hello asking for anything else must be refused.
    let ours = Protection::Encrypted;
    let transcript =
        |nonce_c: [u8; proto::NONCE_LEN], nonce_s: [u8; proto::NONCE_LEN]| Transcript {
            client: c_node,
            server: s_node,
            nonce_c,
            nonce_s,
            protection: ours,
        };

    // The server's side.
    let mut server = ServerHandshake::new(s_node, s_nonce, ours);
    if let Some(m) = msgs.get(1) {
        // A proof before any hello is refused.
        assert!(server.on_proof(&secret, m.clone()).is_err());
    }
    if let Some(hello) = msgs.first() {
        let check = |n: NodeId| {
            if n == c_node {
                Ok(())
            } else {
                Err(format!("node {n} is not at this address"))
            }
        };
        match server.on_hello(&secret, hello.clone(), check) {
            Ok(Handshake::Challenge {
                node,
                nonce,
                proof,
                protection,
            }) => {
                let Handshake::Hello {
                    node: c,
                    nonce: nc,
                    protection: asked,
                } = hello
                else {
                    panic!("a challenge to {hello:?}");
                };
                assert_eq!((node, nonce, *c), (s_node, s_nonce, c_node));
                assert_eq!(
                    (protection, *asked),
                    (ours, ours),
                    "another protection let in"
                );
                let t = transcript(*nc, s_nonce);
                let want = t.proof(&secret, Side::Server);
                assert_eq!(
                    proof, want,
                    "the server's proof is not the one the client checks"
                );
                if let Some(p) = msgs.get(1) {
                    let right = t.proof(&secret, Side::Client);
                    match server.on_proof(&secret, p.clone()) {
                        Ok((who, Handshake::Welcome, _session)) => {
                            assert_eq!(who, c_node);
                            assert_eq!(
                                p,
                                &Handshake::Proof { proof: right },
                                "a wrong proof let in"
                            );
                        }
                        Ok(other) => panic!("the server answered a proof with {other:?}"),
                        Err((e, refusal)) => {
                            clean(what, &e);
                            assert_ne!(
                                p,
                                &Handshake::Proof { proof: right },
                                "the right proof refused"
                            );
                            check_refusal(refusal);
                        }
                    }
                }
            }
            Ok(other) => panic!("the server answered a hello with {other:?}"),
            Err((e, refusal)) => {
                clean(what, &e);
                check_refusal(refusal);
            }
        }
    }

    // The client's side.
    let mut client = ClientHandshake::new(c_node, s_node, c_nonce, ours);
    assert_eq!(
        client.hello(),
        Handshake::Hello {
            node: c_node,
            nonce: c_nonce,
            protection: ours,
        }
    );
    if let Some(challenge) = msgs.first() {
        match client.on_challenge(&secret, challenge.clone()) {
            Ok(Handshake::Proof { proof }) => {
                let Handshake::Challenge {
                    node,
                    nonce,
                    proof: sp,
                    protection,
                } = challenge
                else {
                    panic!("a proof for {challenge:?}");
                };
                assert_eq!(*node, s_node, "a challenge from the wrong node accepted");
                assert_eq!(
                    *protection, ours,
                    "a challenge of another protection accepted"
                );
                let t = transcript(c_nonce, *nonce);
                assert_eq!(
                    *sp,
                    t.proof(&secret, Side::Server),
                    "a wrong server proof accepted"
                );
                assert_eq!(proof, t.proof(&secret, Side::Client));
                if let Some(v) = msgs.get(1) {
                    match client.on_verdict(v.clone()) {
                        Ok(_session) => assert_eq!(v, &Handshake::Welcome),
                        Err(e) => clean(what, &e),
                    }
                }
            }
            Ok(other) => panic!("the client answered a challenge with {other:?}"),
            Err((e, refusal)) => {
                clean(what, &e);
                check_refusal(refusal);
            }
        }
    }
}

/// A refusal the state machines send back fits a handshake frame.
fn check_refusal(refusal: Option<Handshake>) {
    if let Some(r) = refusal {
        assert!(matches!(r, Handshake::Refuse { .. }));
        round_trip("handshake refusal", &r, MAX_HANDSHAKE_FRAME);
    }
}

// ---------------------------------------------------------------------------------------------
// Sealed records.

/// The most records of a genuine stream in `sealed`.
const MAX_SEALED_RECORDS: usize = 6;

/// One record of a genuine sealed stream, as the receiver expects it.
enum Record {
    Frame(ProcMsg),
    Run(Vec<u8>),
}

/// `sealed`: the record layer after the handshake ([`proto::seal`]). The input's first bytes
/// choose the protection and a genuine stream (call frames and page runs, sealed by the
/// client's end of a fixed connection); the rest are edits an attacker on the path makes to it:
/// flipped bits, a cut, two records swapped, a record replayed. The server's end then reads the
/// stream as the protocol would. Properties: every record whose bytes arrive as they were sent,
/// after only such records, opens to what was sealed; every other record is refused, and after
/// a refusal nothing opens any more, not even a genuine record; encrypted records do not carry
/// their plaintext.
pub fn sealed(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let protection = Protection::from_encrypt(choice & 1 == 1);
    let Ok(secret) = Secret::new(SECRET) else {
        panic!("the test's own secret is refused");
    };
    let t = Transcript {
        client: id(CLIENT.0),
        server: id(SERVER.0),
        nonce_c: CLIENT.1,
        nonce_s: SERVER.1,
        protection,
    };
    let mut client = t.session(&secret, Side::Client);
    let mut server = t.session(&secret, Side::Server);

    // The genuine stream: record i is a frame or a run (bit i of the plan), of a size the next
    // byte gives.
    let count = 1 + usize::from(choice >> 1) % MAX_SEALED_RECORDS;
    let (sizes, edits) = rest.split_at(rest.len().min(count + 1));
    let plan = sizes.first().copied().unwrap_or(0);
    let mut records = Vec::new();
    let mut wire: Vec<Vec<u8>> = Vec::new();
    for i in 0..count {
        let n = usize::from(sizes.get(i + 1).copied().unwrap_or(0)) * 7;
        let fill = u8::try_from(i)
            .unwrap_or(0)
            .wrapping_mul(31)
            .wrapping_add(1);
        if plan >> i & 1 == 0 {
            let m = ProcMsg::Call(proto::Call {
                nr: u32::try_from(i).unwrap_or(0),
                args: [i as u64; 6],
                bufs: vec![(1, vec![fill; n])],
                ahead: 0,
            });
            let mut out = Vec::new();
            let Ok(()) = client.sealer.encode(&m, &mut out) else {
                panic!("sealing a small frame failed");
            };
            if protection == Protection::Encrypted && n >= 16 {
                let plain = proto::encode(&m);
                assert!(
                    !out.windows(16).any(|w| w == &plain[plain.len() - 16..]),
                    "an encrypted frame carries its plaintext"
                );
            }
            records.push(Record::Frame(m));
            wire.push(out);
        } else {
            let run = vec![fill; n.max(1)];
            let mut scratch = Vec::new();
            let Ok((bytes, tag)) = client.sealer.seal_run(&run, &mut scratch) else {
                panic!("sealing a small run failed");
            };
            let mut out = bytes.to_vec();
            out.extend_from_slice(&tag);
            records.push(Record::Run(run));
            wire.push(out);
        }
    }
    let genuine: Vec<u8> = wire.concat();

    // The attacker's edits, four bytes each: what, where (u16), with what.
    let mut order: Vec<usize> = (0..count).collect();
    let mut flips: Vec<(usize, u8)> = Vec::new();
    let mut cut: Option<usize> = None;
    for e in edits.chunks_exact(4) {
        let at = usize::from(u16::from_le_bytes([e[1], e[2]]));
        match e[0] % 4 {
            0 => flips.push((at, e[3] | 1)),
            1 => cut = Some(cut.map_or(at, |c| c.min(at))),
            2 => {
                let (a, b) = (at % order.len(), usize::from(e[3]) % order.len());
                order.swap(a, b);
            }
            _ => {
                if order.len() < 2 * MAX_SEALED_RECORDS {
                    let a = at % order.len();
                    order.insert(a + 1, order[a]);
                }
            }
        }
    }
    let mut sent: Vec<u8> = order
        .iter()
        .flat_map(|&i| wire[i].iter().copied())
        .collect();
    for (at, x) in flips {
        if !sent.is_empty() {
            let at = at % sent.len();
            sent[at] ^= x;
        }
    }
    if let Some(c) = cut {
        sent.truncate(c % (sent.len() + 1));
    }

    // The receiver reads the records it expects, in order, from what arrives.
    let mut r = &sent[..];
    let mut offset = 0;
    let mut refused = false;
    // Whether a record reached the opener and failed there (rather than the stream ending or
    // a header being refused before it, which close the connection just the same).
    let mut unauthentic = false;
    let mut buf = Vec::new();
    for (i, rec) in records.iter().enumerate() {
        let end = offset + wire[i].len();
        let intact = !refused && sent.get(offset..end) == Some(&genuine[offset..end]);
        let opened = match rec {
            Record::Frame(m) => {
                match proto::seal::read_sealed::<ProcMsg, _>(
                    &mut r,
                    &mut server.opener,
                    MAX_PROC_FRAME,
                    &mut buf,
                ) {
                    Ok(got) => {
                        assert_eq!(&got, m, "record {i} opened to another message");
                        true
                    }
                    Err(e) => {
                        clean("sealed frame", &e);
                        unauthentic |= matches!(e, FrameError::Unauthentic(_));
                        false
                    }
                }
            }
            Record::Run(run) => {
                let len = run.len();
                if r.len() < len + proto::TAG_LEN {
                    r = &[];
                    false
                } else {
                    let mut body = r[..len].to_vec();
                    let mut tag = [0u8; proto::TAG_LEN];
                    tag.copy_from_slice(&r[len..len + proto::TAG_LEN]);
                    r = &r[len + proto::TAG_LEN..];
                    match server.opener.open_run(&mut body, &tag) {
                        Ok(()) => {
                            assert_eq!(&body, run, "run {i} opened to other bytes");
                            true
                        }
                        Err(e) => {
                            clean("sealed run", &e);
                            unauthentic = true;
                            false
                        }
                    }
                }
            }
        };
        assert_eq!(
            opened,
            intact,
            "record {i}: {} (order {order:?}, {} of {} bytes arrived)",
            if opened {
                "a changed or late record opened"
            } else {
                "a genuine record was refused"
            },
            sent.len(),
            genuine.len()
        );
        if !opened {
            refused = true;
        }
        offset = end;
    }
    // After a record failed to open, even a genuine record does not open.
    if unauthentic {
        let mut again = wire[0].clone();
        assert!(
            match &records[0] {
                Record::Frame(_) => server.opener.open_frame(&mut again).is_err(),
                Record::Run(run) => {
                    let (body, tag) = again.split_at_mut(run.len());
                    let mut t = [0u8; proto::TAG_LEN];
                    t.copy_from_slice(tag);
                    server.opener.open_run(body, &t).is_err()
                }
            },
            "a broken receiver opened a record"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Process connections.

/// `proc_msg`: the frames of a process connection ([`ProcMsg`] with [`ProcMsg::validate`],
/// limit [`MAX_PROC_FRAME`]), in memory and as a stream where the raw page data announced by
/// each `Pages` follows its frame; every limit checked again on what `validate` accepts.
pub fn proc_msg(data: &[u8]) {
    let what = "process message";
    let one = within(
        what,
        MAX_PROC_FRAME,
        alloc::measure(|| {
            proto::decode_frame::<ProcMsg>(data, MAX_PROC_FRAME)
                .and_then(|m| m.validate().map(|()| m))
        }),
    );
    match &one {
        Ok(m) => {
            check_proc(what, m);
            round_trip(what, m, MAX_PROC_FRAME);
        }
        Err(e) => clean(what, e),
    }
    // After a Pages frame the connection carries `len` raw bytes; read them as the receiver does.
    let skip_pages = |m: &ProcMsg, r: &mut Trickle<'_>| {
        if let ProcMsg::Pages { len, .. } = m {
            let mut raw = vec![0u8; *len as usize];
            r.read_exact(&mut raw).map_err(|_| FrameError::Truncated)?;
        }
        Ok(())
    };
    let stream = read_stream(what, data, MAX_PROC_FRAME, ProcMsg::validate, skip_pages);
    // A frame alone and a frame with its page data are not the same input.
    let pages = |m: Option<&ProcMsg>| matches!(m, Some(ProcMsg::Pages { len, .. }) if *len > 0);
    if !pages(one.as_ref().ok()) && !pages(stream.0.first()) {
        agree(what, &one, &stream);
    }
    for m in &stream.0 {
        check_proc(what, m);
    }
}

fn check_proc(what: &str, m: &ProcMsg) {
    assert!(m.validate().is_ok());
    match m {
        ProcMsg::Image(h) => check_image(what, h),
        ProcMsg::Pages { len, .. } => assert!(*len as usize <= image::MAX_RUN),
        ProcMsg::Call(c) => check_bufs(what, &c.bufs),
        ProcMsg::Reply(r) => check_bufs(what, &r.outs),
        ProcMsg::Moved { signals } => assert!(signals.len() <= MAX_MOVED_SIGNALS),
        ProcMsg::Refused { failure } | ProcMsg::MoveFailed { failure } => {
            clean(what, failure);
            assert!(!failure.kind().is_empty());
        }
        _ => {}
    }
}

fn check_bufs(what: &str, bufs: &[(u8, Vec<u8>)]) {
    assert!(
        bufs.len() <= MAX_CALL_BUFS,
        "{what}: {} buffers passed validate",
        bufs.len()
    );
    for (_, b) in bufs {
        assert!(
            b.len() <= MAX_IO + MAX_PATH,
            "{what}: a buffer of {} bytes passed validate",
            b.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// File connections (MFS).

/// `mfs_msg`: a frame of a file connection read both ways — as a request ([`MfsRequest`], as
/// the owner reads it) and as a reply ([`MfsReply`], as the asking node reads it), limit
/// [`MAX_MFS_FRAME`] — and as a stream of requests; what `validate` accepts is within every
/// bound (paths, groups, data, directory batches) and survives the round trip.
pub fn mfs_msg(data: &[u8]) {
    use mosix_core::proto::mfs::{
        MAX_DIR_BATCH, MAX_GROUPS, MAX_IO as MFS_IO, MAX_MFS_FRAME, MAX_NAME, MAX_PATH as MFS_PATH,
        MfsOp, MfsReply, MfsRequest,
    };
    let what = "file request";
    let req = within(
        what,
        MAX_MFS_FRAME,
        alloc::measure(|| {
            proto::decode_frame::<MfsRequest>(data, MAX_MFS_FRAME)
                .and_then(|m| m.validate().map(|()| m))
        }),
    );
    match &req {
        Ok(r) => {
            assert!(r.caller.groups.len() <= MAX_GROUPS);
            match &r.op {
                MfsOp::Write { data, .. } => assert!(data.len() <= MFS_IO),
                MfsOp::Read { size, .. } => assert!(*size as usize <= MFS_IO),
                MfsOp::Rename { from, to, .. } | MfsOp::Link { from, to } => {
                    assert!(from.len() < MFS_PATH && to.len() < MFS_PATH);
                    assert!(from.starts_with(b"/") && to.starts_with(b"/"));
                }
                MfsOp::Stat { path } | MfsOp::Unlink { path } | MfsOp::OpenDir { path } => {
                    assert!(path.len() < MFS_PATH && path.starts_with(b"/") && !path.contains(&0));
                }
                _ => {}
            }
            round_trip(what, r, MAX_MFS_FRAME);
        }
        Err(e) => clean(what, e),
    }
    let what = "file reply";
    let reply = within(
        what,
        MAX_MFS_FRAME,
        alloc::measure(|| {
            proto::decode_frame::<MfsReply>(data, MAX_MFS_FRAME)
                .and_then(|m| m.validate().map(|()| m))
        }),
    );
    match &reply {
        Ok(r) => {
            match r {
                MfsReply::Data(d) => assert!(d.len() <= MFS_IO),
                MfsReply::Target(t) => assert!(t.len() < MFS_PATH),
                MfsReply::Entries { entries, .. } => {
                    assert!(entries.len() <= MAX_DIR_BATCH);
                    for e in entries {
                        assert!(!e.name.is_empty() && e.name.len() <= MAX_NAME);
                        assert!(!e.name.contains(&b'/') && !e.name.contains(&0));
                    }
                }
                _ => {}
            }
            round_trip(what, r, MAX_MFS_FRAME);
        }
        Err(e) => clean(what, e),
    }
    let stream = read_stream(
        "file requests",
        data,
        MAX_MFS_FRAME,
        MfsRequest::validate,
        |_, _| Ok(()),
    );
    agree("file requests", &req, &stream);
}

// ---------------------------------------------------------------------------------------------
// Images.

/// `image`: a process image header ([`ImageHeader`] with [`ImageHeader::validate`]) decoded from
/// a bare payload, as it arrives inside `ProcMsg::Image`; what validate accepts is bounded and
/// ordered as the restorer assumes, and survives the round trip inside a `ProcMsg::Image` frame.
pub fn image(data: &[u8]) {
    let what = "image";
    let decoded = within(
        what,
        MAX_PROC_FRAME,
        alloc::measure(|| proto::decode_payload::<ImageHeader>(data)),
    );
    let h = match decoded {
        Ok(h) => h,
        Err(e) => return clean(what, &e),
    };
    if let Err(e) = h.validate() {
        return clean(what, &e);
    }
    check_image(what, &h);
    round_trip(what, &ProcMsg::Image(Box::new(h.clone())), MAX_PROC_FRAME);
    // What the remote does with the header's values before any kernel call.
    let mut regs = h.regs;
    let _ = regs.fix_interrupted_syscall();
    let _ = h
        .regs
        .for_syscall(regs.ip(), regs.ax(), regs.syscall_args());
    assert!(h.missing_cpu_flags(&h.cpu_flags).is_empty());
    assert_eq!(h.missing_cpu_flags(&[]).len(), h.cpu_flags.len());
}

fn check_image(what: &str, h: &ImageHeader) {
    assert_eq!(h.version, image::IMAGE_VERSION);
    let bounds = [
        ("vmas", h.vmas.len(), image::MAX_VMAS),
        ("sigactions", h.sigactions.len(), image::MAX_SIGACTIONS),
        ("xstate", h.xstate.len(), image::MAX_XSTATE),
        ("auxv", h.auxv.len(), image::MAX_AUXV),
        ("vdso", h.special.vdso_bytes.len(), image::MAX_VDSO),
        ("groups", h.creds.groups.len(), image::MAX_GROUPS),
        ("cpu flags", h.cpu_flags.len(), image::MAX_CPU_FLAGS),
        ("rlimits", h.rlimits.len(), image::MAX_RLIMITS),
        (
            "write errors",
            h.write_errors.len(),
            image::MAX_WRITE_ERRORS,
        ),
    ];
    for (name, len, limit) in bounds {
        assert!(
            len <= limit,
            "{what}: {len} {name} passed validate (limit {limit})"
        );
    }
    let mut last_end = 0;
    for v in &h.vmas {
        assert!(!v.is_empty() && v.start % 4096 == 0 && v.end % 4096 == 0);
        assert!(
            v.start >= last_end,
            "{what}: overlapping areas passed validate"
        );
        assert_eq!(v.len(), v.end - v.start);
        last_end = v.end;
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint files.

/// `checkpoint`: a checkpoint file as `mosrun -I` and a restore read it (the record, the image
/// header, the page runs, the digest): no single allocation beyond a process frame, every
/// record and header that passes is within its bounds, and errors are one line.
pub fn checkpoint(data: &[u8]) {
    use mosix_core::checkpoint::{self, Hashing, ImageReader};
    let what = "checkpoint";
    let read = || -> Result<_, checkpoint::CheckpointError> {
        let mut r = Hashing::new(data);
        let meta = checkpoint::read_meta(&mut r)?;
        let mut img = ImageReader::new(&mut r)?;
        let mut buf = Vec::new();
        while let Some((vma, _)) = img.next_run(&mut buf)? {
            assert!((vma as usize) < img.header.vmas.len());
            assert!(buf.len() <= image::MAX_RUN);
        }
        let h = img.header.clone();
        drop(img);
        checkpoint::check_trailer(r)?;
        Ok((meta, h))
    };
    let decoded = within(
        what,
        MAX_PROC_FRAME + proto::HEADER_LEN,
        alloc::measure(read),
    );
    let (meta, h) = match decoded {
        Ok(x) => x,
        Err(e) => return clean(what, &e),
    };
    assert!(meta.validate().is_ok());
    assert!(meta.fds.len() <= checkpoint::MAX_FDS);
    check_image(what, &h);
    let mut again = Vec::new();
    if let Err(e) = checkpoint::write_meta(&mut again, &meta) {
        panic!("{what}: a record read back does not write: {e}");
    }
    match checkpoint::read_meta(&mut &again[..]) {
        Ok(m) => assert_eq!(m, meta, "{what}: the record changed on a round trip"),
        Err(e) => panic!("{what}: a record written does not read back: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The control socket.

/// `control_request`: requests on the control socket ([`Request`]) read as the service reads
/// them, frame after frame with its limit [`MAX_REQUEST`], and what the service does with their
/// contents in mosix-core (a `SetDecay` is validated, the map of a `Reconfigure` parsed); a bad
/// request's error answer fits the socket. The same bytes are also read as the tools read the
/// service's answers ([`Response`], limit [`MAX_CONTROL_FRAME`]).
pub fn control_request(data: &[u8]) {
    let what = "control request";
    let one = within(
        what,
        MAX_REQUEST,
        alloc::measure(|| proto::decode_frame::<Request>(data, MAX_REQUEST)),
    );
    match &one {
        Ok(r) => round_trip(what, r, MAX_REQUEST),
        Err(e) => clean(what, e),
    }
    let stream = read_stream(what, data, MAX_REQUEST, |_| Ok(()), |_, _| Ok(()));
    agree(what, &one, &stream);
    let (reqs, end) = stream;
    if !matches!(end, FrameError::Closed) {
        // The service answers a bad request with its reason before it closes.
        let answer = Response::Error(format!("bad request: {end}"));
        round_trip(what, &answer, MAX_CONTROL_FRAME);
    }
    for r in &reqs {
        match r {
            Request::SetDecay(d) if d.validate().is_ok() => {
                assert!((1..=3600).contains(&d.interval_s));
                assert!(d.fast <= d.slow && d.slow <= 1000);
            }
            Request::Reconfigure {
                map_name, map_text, ..
            } => {
                check_map_text(map_name, map_text);
            }
            _ => {}
        }
    }

    let what = "control response";
    let answer = within(
        what,
        MAX_CONTROL_FRAME,
        alloc::measure(|| proto::decode_frame::<Response>(data, MAX_CONTROL_FRAME)),
    );
    match &answer {
        Ok(r) => round_trip(what, r, MAX_CONTROL_FRAME),
        Err(e) => clean(what, e),
    }
}

// ---------------------------------------------------------------------------------------------
// The map.

/// Resolves host names without a network: a fixed address derived from the name, or, for one
/// name in four, a failure.
pub fn fake_resolver(name: &str) -> Result<Ipv4Addr, String> {
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    if h % 4 == 0 {
        Err("unknown host".to_owned())
    } else {
        Ok(Ipv4Addr::from(h))
    }
}

/// `map`: the cluster map (`map::parse`, `map::parse_and_resolve` with [`fake_resolver`]) on
/// any UTF-8 text (the map reader refuses the rest): every error names the file and a line of
/// it; an accepted map is consistent (no overlap, every node and alias found by its address) and
/// what `to_text` writes reads back to the same map.
pub fn map(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_map_text(MAP_NAME, text);
    }
}

fn check_map_text(file: &str, text: &str) {
    let lines = text.lines().count();
    let check_errors = |e: &map::MapErrors| {
        assert!(!e.0.is_empty(), "{file}: an error without problems");
        for p in &e.0 {
            assert_eq!(p.file, file);
            match p.line {
                Some(l) => {
                    assert!(
                        (1..=lines).contains(&l),
                        "{file}: error on line {l} of {lines}"
                    );
                    assert_eq!(p.to_string(), format!("{file}:{l}: {}", p.kind));
                }
                None => {
                    assert_eq!(p.kind, MapErrorKind::Empty, "{file}: no line for {p}");
                    assert_eq!(e.0.len(), 1);
                }
            }
            assert!(!p.kind.to_string().contains('\n'), "{p}");
        }
        assert!(e.0.windows(2).all(|w| w[0].line <= w[1].line), "{e}");
    };
    let parsed = map::parse(file, text);
    match &parsed {
        Ok(entries) => {
            assert!(!entries.is_empty() && entries.len() <= map::MAX_ENTRIES);
            for l in entries {
                assert!((1..=lines).contains(&l.line()));
                if let map::MapLine::Range { first, count, .. } = l {
                    assert!(*count >= 1);
                    assert!(
                        u32::from(first.get()) + u32::from(*count) - 1 <= u32::from(NodeId::MAX)
                    );
                }
            }
        }
        Err(e) => check_errors(e),
    }
    let m = match map::parse_and_resolve(file, text, &fake_resolver) {
        Ok(m) => m,
        Err(e) => {
            check_errors(&e);
            if let Err(pe) = &parsed {
                assert_eq!(
                    &e, pe,
                    "parse_and_resolve reports other problems than parse"
                );
            }
            return;
        }
    };
    assert!(parsed.is_ok());
    check_map(file, &m);
    let written = m.to_text();
    let again = match map::parse_and_resolve("written", &written, &fake_resolver) {
        Ok(a) => a,
        Err(e) => panic!("{file}: what to_text wrote does not read back: {e}\n{written}"),
    };
    let key = |m: &map::ClusterMap| {
        (
            m.ranges()
                .iter()
                .map(|r| (r.first, r.count, r.addr))
                .collect::<Vec<_>>(),
            m.aliases()
                .iter()
                .map(|a| (a.node, a.addr))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        key(&again),
        key(&m),
        "{file}: to_text changed the map\n{written}"
    );
}

fn check_map(file: &str, m: &map::ClusterMap) {
    let nodes = m.nodes();
    assert_eq!(nodes.len(), m.node_count());
    assert!(
        nodes.windows(2).all(|w| w[0] < w[1]),
        "{file}: nodes overlap"
    );
    for r in m.ranges() {
        let last = r.last();
        let end = u32::from(r.addr).checked_add(u32::from(r.count) - 1);
        let Some(end) = end else {
            panic!("{file}: range of line {} runs past 255.255.255.255", r.line);
        };
        assert_eq!(m.addr_of(r.first), Some(r.addr));
        assert_eq!(m.addr_of(last), Some(Ipv4Addr::from(end)));
        assert_eq!(m.node_of(r.addr), Some(r.first));
        assert_eq!(m.node_of(Ipv4Addr::from(end)), Some(last));
        assert_eq!(m.identify(&m.addrs_of(r.first), None), Ok(r.first));
        assert_eq!(m.identify(&[], Some(last)), Ok(last));
    }
    for a in m.aliases() {
        assert!(m.contains(a.node), "{file}: alias of an unknown node");
        assert_eq!(
            m.node_of(a.addr),
            Some(a.node),
            "{file}: alias address of another node"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The overheads file.

/// `overheads`: the overheads file (`Overheads::parse`) on any UTF-8 text: an error names the
/// file and the line of the problem (0 only for a file without a header); what is accepted has
/// one row per peer and reads back the same from what `to_text` writes.
pub fn overheads(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    let first_content = text
        .lines()
        .position(|l| l.split('#').next().is_some_and(|c| !c.trim().is_empty()))
        .map(|i| i + 1);
    match Overheads::parse(OVERHEADS_NAME, text) {
        Err(e) => {
            assert_eq!(e.file, OVERHEADS_NAME);
            assert!(e.line <= lines, "error on line {} of {lines}", e.line);
            if e.line == 0 {
                assert_eq!(first_content, None, "line 0 for a file with content: {e}");
            } else {
                assert!(Some(e.line) >= first_content);
            }
            assert_eq!(e.to_string(), format!("{}:{}: {}", e.file, e.line, e.what));
            clean("overheads", &e);
        }
        Ok(o) => {
            assert_eq!(o.source, OVERHEADS_NAME);
            for (i, r) in o.rows.iter().enumerate() {
                assert!(
                    o.rows[..i].iter().all(|x| x.peer != r.peer),
                    "two rows for one peer"
                );
                if let Some(p) = r.peer {
                    assert_eq!(o.towards(p), *r);
                    let _ = o.migration_cost_us(p, u64::MAX);
                }
            }
            let written = o.to_text();
            let back = match Overheads::parse(OVERHEADS_NAME, &written) {
                Ok(b) => b,
                Err(e) => panic!("what to_text wrote does not read back: {e}\n{written}"),
            };
            let sorted = |o: &Overheads| {
                let mut v = o.rows.clone();
                v.sort_by_key(|r| r.peer.map_or(0, NodeId::get));
                v
            };
            assert_eq!(sorted(&back), sorted(&o));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mosix.toml.

/// `tunables`: `mosix.toml` (`Tunables::parse`) on any UTF-8 text: an error is one line that
/// names the file and the line of the problem; what is accepted is within the documented
/// ranges and reads back the same after being written as TOML.
pub fn tunables(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count().max(1);
    match Tunables::parse(TUNABLES_NAME, text) {
        Err(e) => {
            clean("tunables", &e);
            let s = e.to_string();
            let rest = s
                .strip_prefix(TUNABLES_NAME)
                .and_then(|r| r.strip_prefix(':'));
            let Some(rest) = rest else {
                panic!("the error does not name the file: {s}");
            };
            let line: Option<usize> = rest.split(':').next().and_then(|l| l.parse().ok());
            match line {
                Some(l) => assert!((1..=lines).contains(&l), "line {l} of {lines}: {s}"),
                None => panic!("the error does not name the line: {s}"),
            }
        }
        Ok(t) => {
            let g = &t.gossip;
            assert!((10..=60_000).contains(&g.interval_ms));
            assert!((1..=MAX_WINDOW).contains(&g.window));
            assert!(g.dead_after_ms.is_none_or(|d| d >= 2 * g.interval_ms));
            assert_ne!(t.link.port, 0);
            assert!((10..=60_000).contains(&t.link.connect_timeout_ms));
            assert!(t.link.resume_grace_s <= 3600);
            assert!(t.node.speed.is_none_or(|s| (1..=100_000_000).contains(&s)));
            assert!((10..=10_000).contains(&t.node.sample_ms));
            assert!(t.decay.validate().is_ok());
            let written = match toml::to_string(&t) {
                Ok(w) => w,
                Err(e) => panic!("accepted tunables cannot be written: {e}"),
            };
            match Tunables::parse(TUNABLES_NAME, &written) {
                Ok(back) => assert_eq!(back, t, "written:\n{written}"),
                Err(e) => panic!("written tunables do not read back: {e}\n{written}"),
            }
        }
    }
}
