//! Bad input on a node's link port: garbage, a wrong version, an oversized frame, malformed
//! frames before and after authentication; and, from a client that holds the secret and
//! completes a real handshake, frames that are forged, bit-flipped, replayed, swapped or
//! recorded from another connection. Each closes its own connection with a logged reason; the
//! node keeps working and still takes a migrating process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::gossip::GossipMsg;
use mosix_core::proto::seal::{Protection, Session, Transcript};
use mosix_core::proto::{
    self, ClientHandshake, Handshake, LinkMsg, MAX_HANDSHAKE_FRAME, PROTOCOL_VERSION, ProcMsg, Side,
};
use mosix_tests::{TestCluster, in_netns, require_root, serial};

fn id(n: u16) -> NodeId {
    NodeId::new(n).unwrap()
}

fn node2(c: &TestCluster) -> SocketAddr {
    SocketAddr::new(c.cluster.addr(2).into(), mosix_core::config::DEFAULT_PORT)
}

/// Reads until the node closes the connection; whether it did (end of stream or a reset)
/// rather than let it hang. Anything it sends first (a Refuse) is fine.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Connects from node 1's namespace to node 2, sends `bytes`, and returns whether the node closed
/// the connection (as it must).
fn send_raw(c: &TestCluster, bytes: Vec<u8>) -> bool {
    let to = node2(c);
    in_netns(&c.cluster, 1, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        let _ = s.write_all(&bytes);
        closed_by_peer(&mut s)
    })
}

/// A nonce that differs on every call.
fn fresh_nonce() -> [u8; 32] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut n = [0u8; 32];
    n[..8].copy_from_slice(&t.to_le_bytes());
    n[8..16].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    n
}

/// Completes a real handshake as node 1 (from its address, with the cluster secret and the
/// cluster's protection) with node 2.
fn handshake(s: &mut TcpStream, secret: &Secret) -> Session {
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut hs = ClientHandshake::new(id(1), id(2), fresh_nonce(), Protection::Encrypted);
    proto::write_frame(s, &hs.hello()).unwrap();
    let challenge = proto::read_frame::<Handshake, _>(s, MAX_HANDSHAKE_FRAME).unwrap();
    let proof = hs
        .on_challenge(secret, challenge)
        .unwrap_or_else(|(e, _)| panic!("challenge: {e}"));
    proto::write_frame(s, &proof).unwrap();
    hs.on_verdict(proto::read_frame(s, MAX_HANDSHAKE_FRAME).unwrap())
        .unwrap()
}

/// Authenticates as node 1 and hands the connection and its session to `then` in node 1's
/// namespace.
fn authenticated<T: Send + 'static>(
    c: &TestCluster,
    then: impl FnOnce(&mut TcpStream, &mut Session) -> T + Send + 'static,
) -> T {
    let secret = Secret::load(&c.paths(1).secret(), 0).unwrap();
    let to = node2(c);
    in_netns(&c.cluster, 1, move || {
        // Node 1's namespace has one address: the source the map gives node 1.
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        let mut session = handshake(&mut s, &secret);
        then(&mut s, &mut session)
    })
}

/// A sealed frame of `m` from `session`.
fn sealed(session: &mut Session, m: &LinkMsg) -> Vec<u8> {
    let mut out = Vec::new();
    session.sealer.encode(m, &mut out).unwrap();
    out
}

/// A sealed process frame of `m` from `session`.
fn sealed_proc(session: &mut Session, m: &ProcMsg) -> Vec<u8> {
    let mut out = Vec::new();
    session.sealer.encode(m, &mut out).unwrap();
    out
}

fn empty_gossip() -> LinkMsg {
    LinkMsg::Gossip(GossipMsg { entries: vec![] })
}

/// A plain header announcing `len` bytes.
fn header(version: u8, len: u32) -> Vec<u8> {
    let mut h = vec![b'M', b'X', version, 0];
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// Node 2 answers, hears the others and is heard by them.
fn node2_is_well(c: &TestCluster) {
    c.wait_view(2, Duration::from_secs(5), |v| {
        v.nodes
            .iter()
            .all(|x| x.up && x.age_ms.is_some_and(|a| a < 3000))
    })
    .unwrap();
    for n in [1, 3] {
        c.wait_view(n, Duration::from_secs(5), |v| {
            v.get(id(2)).unwrap().age_ms.is_some_and(|a| a < 3000)
        })
        .unwrap();
    }
}

#[test]
fn malformed_and_oversized_frames_are_refused_and_the_node_keeps_working() {
    if !require_root("malformed_and_oversized_frames_are_refused") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("lkfrm", 3, |_| {});
    c.wait_view(2, Duration::from_secs(10), |v| v.nodes.iter().all(|x| x.up))
        .unwrap();

    let oversized = header(PROTOCOL_VERSION, u32::MAX);
    // A version this build does not speak (the next one).
    let future = PROTOCOL_VERSION + 1;
    let future_said = format!("protocol version {future} is not supported");
    let mut bad_version = header(future, 4);
    bad_version.extend_from_slice(b"abcd");
    let mut old_version = header(1, 4);
    old_version.extend_from_slice(b"abcd");
    let mut bad_payload = header(PROTOCOL_VERSION, 3);
    bad_payload.extend_from_slice(&[0xff, 0xff, 0xff]);
    let pre_auth = [
        (b"GET / HTTP/1.0\r\n\r\n".to_vec(), "bad magic"),
        (oversized.clone(), "exceeds the limit"),
        (bad_version, future_said.as_str()),
        (old_version, "protocol version 1 is not supported"),
        (bad_payload.clone(), "malformed payload"),
    ];
    for (bytes, reason) in pre_auth {
        assert!(
            send_raw(&c, bytes),
            "node 2 did not close a bad connection ({reason})"
        );
    }
    // After the handshake: a header over the limit (refused before any tag is read), and a
    // frame that is authentic but whose payload does not decode.
    assert!(
        authenticated(&c, move |s, _| {
            let _ = s.write_all(&oversized);
            closed_by_peer(s)
        }),
        "oversized frame after auth"
    );
    assert!(
        authenticated(&c, move |s, session| {
            let mut f = Vec::new();
            session.sealer.seal_plain(&bad_payload, &mut f).unwrap();
            let _ = s.write_all(&f);
            closed_by_peer(s)
        }),
        "malformed frame after auth"
    );

    std::thread::sleep(Duration::from_millis(500));
    let log = c.log(2);
    for reason in [
        "bad magic",
        "exceeds the limit",
        future_said.as_str(),
        "malformed payload",
    ] {
        assert!(log.contains(reason), "node 2 logs '{reason}':\n{log}");
    }
    // Lines are rate-limited by kind and source: the second bad version from node 1's address
    // (and the second oversized and malformed frames, after the handshake) are held back.
    assert!(
        !log.contains("protocol version 1 is not supported"),
        "node 2 logs one bad version a minute from one address:\n{log}"
    );
    assert_eq!(log.matches("exceeds the limit").count(), 1, "{log}");
    let t = std::time::Instant::now();
    node2_is_well(&c);
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn forged_replayed_and_tampered_frames_close_their_connection_only() {
    if !require_root("forged_replayed_and_tampered_frames_close_their_connection_only") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("lkauth", 3, |_| {});
    c.wait_all_up();

    // Forged: sealed under keys the attacker made up (another secret).
    assert!(
        authenticated(&c, |s, _| {
            let wrong = Secret::new(b"not the cluster secret at all").unwrap();
            let mut forger = Transcript {
                client: id(1),
                server: id(2),
                nonce_c: fresh_nonce(),
                nonce_s: fresh_nonce(),
                protection: Protection::Encrypted,
            }
            .session(&wrong, Side::Client);
            let _ = s.write_all(&sealed(&mut forger, &LinkMsg::OpenProcess));
            closed_by_peer(s)
        }),
        "forged frame"
    );
    // Bit-flipped: a genuine frame with one bit of its payload changed.
    assert!(
        authenticated(&c, |s, session| {
            let mut f = sealed(session, &empty_gossip());
            f[proto::HEADER_LEN] ^= 0x04;
            let _ = s.write_all(&f);
            closed_by_peer(s)
        }),
        "bit-flipped frame"
    );
    // Replayed: a genuine frame, accepted, then sent again.
    assert!(
        authenticated(&c, |s, session| {
            let f = sealed(session, &empty_gossip());
            s.write_all(&f).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let _ = s.write_all(&f);
            closed_by_peer(s)
        }),
        "replayed frame"
    );
    // Swapped: two genuine frames in the wrong order.
    assert!(
        authenticated(&c, |s, session| {
            let f0 = sealed(session, &empty_gossip());
            let f1 = sealed(session, &empty_gossip());
            let _ = s.write_all(&f1);
            let _ = s.write_all(&f0);
            closed_by_peer(s)
        }),
        "swapped frames"
    );
    // Recorded on one connection (an OpenProcess) and injected into another.
    let recorded = authenticated(&c, |_, session| sealed(session, &LinkMsg::OpenProcess));
    assert!(
        authenticated(&c, move |s, _| {
            let _ = s.write_all(&recorded);
            closed_by_peer(s)
        }),
        "a frame of another connection"
    );
    // On a process connection: a genuine OpenProcess, then a tampered image frame. The guest
    // thread that took the connection ends it.
    assert!(
        authenticated(&c, |s, session| {
            s.write_all(&sealed(session, &LinkMsg::OpenProcess))
                .unwrap();
            let mut f = sealed_proc(session, &ProcMsg::End);
            let last = f.len() - 1;
            f[last] ^= 0x80; // the tag
            let _ = s.write_all(&f);
            closed_by_peer(s)
        }),
        "tampered frame on a process connection"
    );

    std::thread::sleep(Duration::from_millis(500));
    let log = c.log(2);
    assert!(
        log.contains("closing link from node 1") || log.contains("refused link connection"),
        "node 2 logs the closed connections:\n{log}"
    );
    assert!(
        log.contains("failed authentication"),
        "node 2 logs why:\n{log}"
    );
    assert!(
        log.contains("receiving a process from node 1: record 1 failed authentication"),
        "the guest thread logs why:\n{log}"
    );

    node2_is_well(&c);
    // And it still takes a process, over a connection of its own.
    let mut holder = c.memory_holder(16, &[]);
    let pid = holder.id();
    c.migrate(pid, "2");
    assert_eq!(c.node_of(pid), Some(2));
    holder.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.wait().unwrap().success());
}

#[test]
fn a_node_with_the_other_protection_is_refused_naming_the_setting() {
    if !require_root("a_node_with_the_other_protection_is_refused_naming_the_setting") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("lkmode", 2, |_| {});
    c.wait_all_up();
    // Node 2 comes back with the link authenticated only; node 1 still encrypts.
    c.cluster.stop_node(2, false).unwrap();
    let config = c.paths(2).config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[link]\nencrypt = false\n")).unwrap();
    c.cluster.start_node(2).unwrap();
    let named = |n: u16| {
        let log = c.log(n);
        log.contains("[link] encrypt = true") && log.contains("[link] encrypt = false")
    };
    assert!(
        c.eventually(Duration::from_secs(10), || named(1) && named(2)),
        "both nodes log the differing setting:\nnode 1:\n{}\nnode 2:\n{}",
        c.log(1),
        c.log(2)
    );
    // They do not hear each other: node 1 never gets news of node 2 younger than its restart.
    std::thread::sleep(Duration::from_secs(3));
    let v = c.view(1).unwrap();
    assert!(
        v.get(id(2)).unwrap().age_ms.is_none_or(|a| a > 2500),
        "node 1 still hears node 2: {v:#?}"
    );
}
