//! Bad input on a node's link port: garbage, a wrong version, an oversized frame, malformed
//! frames before and after authentication. Each closes its own connection with a logged reason;
//! the node keeps working.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::proto::{self, Handshake, MAX_HANDSHAKE_FRAME, Side};
use mosix_tests::{TestCluster, in_netns, require_root, serial};

fn id(n: u16) -> NodeId {
    NodeId::new(n).unwrap()
}

/// Connects from node 1's namespace to node 2, sends `bytes`, and returns whether the node closed
/// the connection (as it must).
fn send_raw(c: &TestCluster, bytes: Vec<u8>) -> bool {
    let to = SocketAddr::new(c.cluster.addr(2).into(), mosix_core::config::DEFAULT_PORT);
    in_netns(&c.cluster, 1, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let _ = s.write_all(&bytes);
        let mut buf = [0u8; 4096];
        // Read until the node closes; anything it sends first (a Refuse) is fine.
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    })
}

/// Authenticates as node 1 (with the cluster secret) and then sends `bytes`.
fn send_after_auth(c: &TestCluster, bytes: Vec<u8>) -> bool {
    let secret = Secret::load(&c.paths(1).secret(), 0).unwrap();
    let to = SocketAddr::new(c.cluster.addr(2).into(), mosix_core::config::DEFAULT_PORT);
    in_netns(&c.cluster, 1, move || {
        // Node 1's namespace has one address, 10.77.0.1: the source the map gives node 1.
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let nonce_c = [7u8; 32];
        proto::write_frame(
            &mut s,
            &Handshake::Hello {
                node: id(1),
                nonce: nonce_c,
            },
        )
        .unwrap();
        let Handshake::Challenge { node, nonce, proof } =
            proto::read_frame::<Handshake, _>(&mut s, MAX_HANDSHAKE_FRAME).unwrap()
        else {
            panic!("no challenge");
        };
        assert_eq!(node, id(2));
        assert!(proto::verify(
            &secret,
            Side::Server,
            id(1),
            id(2),
            &nonce_c,
            &nonce,
            &proof
        ));
        let mine = proto::proof(&secret, Side::Client, id(1), id(2), &nonce_c, &nonce);
        proto::write_frame(&mut s, &Handshake::Proof { proof: mine }).unwrap();
        assert_eq!(
            proto::read_frame::<Handshake, _>(&mut s, MAX_HANDSHAKE_FRAME).unwrap(),
            Handshake::Welcome
        );
        let _ = s.write_all(&bytes);
        let mut buf = [0u8; 64];
        // The node closes the connection without a word: end of stream or a reset.
        !matches!(s.read(&mut buf), Ok(n) if n > 0)
    })
}

#[test]
fn malformed_and_oversized_frames_are_refused_and_the_node_keeps_working() {
    if !require_root("malformed_and_oversized_frames_are_refused") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tfrm", 3, |_| {});
    c.wait_view(2, Duration::from_secs(10), |v| v.nodes.iter().all(|x| x.up))
        .unwrap();

    let mut oversized = b"MX\x01\x00".to_vec();
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_version = b"MX\x09\x00".to_vec();
    bad_version.extend_from_slice(&4u32.to_le_bytes());
    bad_version.extend_from_slice(b"abcd");
    let mut bad_payload = b"MX\x01\x00".to_vec();
    bad_payload.extend_from_slice(&3u32.to_le_bytes());
    bad_payload.extend_from_slice(&[0xff, 0xff, 0xff]);
    let pre_auth = [
        (b"GET / HTTP/1.0\r\n\r\n".to_vec(), "bad magic"),
        (oversized.clone(), "exceeds the limit"),
        (bad_version, "protocol version 9 is not supported"),
        (bad_payload.clone(), "malformed payload"),
    ];
    for (bytes, reason) in pre_auth {
        assert!(
            send_raw(&c, bytes),
            "node 2 did not close a bad connection ({reason})"
        );
    }
    assert!(send_after_auth(&c, oversized), "oversized frame after auth");
    assert!(
        send_after_auth(&c, bad_payload),
        "malformed frame after auth"
    );

    std::thread::sleep(Duration::from_millis(500));
    let log = c.log(2);
    for reason in [
        "bad magic",
        "exceeds the limit",
        "protocol version 9 is not supported",
        "malformed payload",
        "closing link from node 1",
    ] {
        assert!(log.contains(reason), "node 2 logs '{reason}':\n{log}");
    }
    // Node 2 still works: it answers, it still hears the others, and they still hear it.
    let t = std::time::Instant::now();
    c.wait_view(2, Duration::from_secs(5), |v| {
        v.nodes
            .iter()
            .all(|x| x.up && x.age_ms.is_some_and(|a| a < 3000))
    })
    .unwrap();
    c.wait_view(3, Duration::from_secs(5), |v| {
        v.get(id(2)).unwrap().age_ms.is_some_and(|a| a < 3000)
    })
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
}
