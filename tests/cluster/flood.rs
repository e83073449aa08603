//! A flood of a node's link port from an address that is not in the map (an intruder plugged
//! into the cluster's bridge in a network namespace of its own), together with a crowd of idle
//! connections from a member's address: the flooded node stays up in the others' view, takes
//! a migrating process during the flood, logs the flood in a line or two, and keeps its log
//! under the cap (and rotates it when it passes the cap).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_tests::{TestCluster, in_netns, require_root, serial};

/// The flood's bounds: it stops at whichever comes first.
const FLOOD_FOR: Duration = Duration::from_secs(8);
const FLOOD_MAX: u64 = 200_000;
/// Threads opening connections.
const FLOODERS: usize = 3;
/// Idle connections opened from node 3's address (more than the per-source cap of 16).
const CROWD: usize = 64;
/// The log cap given to the nodes, in KiB.
const LOG_KIB: u64 = 64;

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace plugged into the cluster's bridge at an address that is not in the
/// map; removed when dropped, whatever happened (and by `vcluster down` too: it is named like
/// the cluster's own).
struct Intruder {
    ns: String,
    addr: Ipv4Addr,
}

impl Intruder {
    fn plug(c: &TestCluster) -> Intruder {
        let name = &c.cluster.name;
        let ns = format!("{name}-intruder");
        let sw = format!("{name}-sw");
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        // Node I is at base + I; the map has nodes 1..N, so .200 is nobody's.
        let base = u32::from(c.cluster.addr(1)) - 1;
        let addr = Ipv4Addr::from(base + 200);
        let intruder = Intruder { ns, addr };
        ip(&["netns", "add", &intruder.ns]);
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "pintr",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &intruder.ns,
        ]);
        ip(&["-n", &sw, "link", "set", "pintr", "master", "br0"]);
        ip(&["-n", &sw, "link", "set", "pintr", "up"]);
        ip(&[
            "-n",
            &intruder.ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &intruder.ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &intruder.ns, "link", "set", "lo", "up"]);
        intruder
    }

    /// Runs `f` on a new thread inside the intruder's namespace.
    fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for Intruder {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

fn log_size(c: &TestCluster, node: u16) -> u64 {
    std::fs::metadata(c.paths(node).log()).map_or(0, |m| m.len())
}

/// Node `on` sees node 2 up, with news of it younger than 3 s.
fn sees_node2(c: &TestCluster, on: u16) -> bool {
    c.view(on).is_some_and(|v| {
        v.get(NodeId::new(2).unwrap())
            .is_some_and(|n| n.up && n.age_ms.is_some_and(|a| a < 3000))
    })
}

#[test]
fn a_flood_from_outside_the_map_does_not_stop_a_node() {
    if !require_root("a_flood_from_outside_the_map_does_not_stop_a_node") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("lkflood", 3, |s| {
        s.tunables = format!("[log]\nmax_kib = {LOG_KIB}\n");
    });
    c.wait_all_up();
    let intruder = Intruder::plug(&c);
    let target = SocketAddr::new(c.cluster.addr(2).into(), mosix_core::config::DEFAULT_PORT);
    let log_before = log_size(&c, 2);

    // The flood: connections opened as fast as the flooders can, each sending garbage.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let (stop, attempts, connected) = (
                Arc::clone(&stop),
                Arc::clone(&attempts),
                Arc::clone(&connected),
            );
            intruder.spawn(move || {
                let t = Instant::now();
                while !stop.load(Ordering::Relaxed)
                    && t.elapsed() < FLOOD_FOR
                    && attempts.fetch_add(1, Ordering::Relaxed) < FLOOD_MAX
                {
                    if let Ok(mut s) =
                        TcpStream::connect_timeout(&target, Duration::from_millis(500))
                    {
                        connected.fetch_add(1, Ordering::Relaxed);
                        let _ = s.write_all(b"MX\x02\x00\x10\x00\x00\x00hello");
                    }
                }
            })
        })
        .collect();

    // A crowd of idle connections from a member's address (node 3's): at most 16 of them may
    // wait in their handshake; the others are closed at once.
    let crowd = in_netns(&c.cluster, 3, move || {
        let conns: Vec<TcpStream> = (0..CROWD)
            .filter_map(|_| TcpStream::connect_timeout(&target, Duration::from_secs(1)).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut open = 0;
        for mut s in conns {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut b = [0u8; 16];
            match s.read(&mut b) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    open += 1;
                }
                _ => {}
            }
        }
        open
    });
    println!("idle connections from node 3's address still open after 300 ms: {crowd}/{CROWD}");
    assert!(
        crowd <= 16,
        "{crowd} idle connections from one address held a handshake slot"
    );

    // During the flood: node 2 stays up in the others' view and takes a migrating process.
    std::thread::sleep(Duration::from_secs(1));
    let flooding = |what: &str| {
        assert!(
            started.elapsed() < FLOOD_FOR && !flooders.iter().all(|f| f.is_finished()),
            "the flood ended before {what}; make it longer"
        );
    };
    flooding("the checks");
    for on in [1, 3] {
        assert!(
            c.eventually(Duration::from_secs(4), || sees_node2(&c, on)),
            "node {on} lost sight of node 2 during the flood: {:#?}",
            c.view(on)
        );
    }
    let mut holder = c.memory_holder(64, &[]);
    let pid = holder.id();
    let moved = Instant::now();
    c.migrate(pid, "2");
    let move_ms = moved.elapsed().as_millis();
    flooding("the migration ended");
    assert_eq!(c.node_of(pid), Some(2));
    println!("64 MiB process migrated to node 2 during the flood in {move_ms} ms");

    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let attempts = attempts.load(Ordering::Relaxed).min(FLOOD_MAX);
    let connected = connected.load(Ordering::Relaxed);
    println!(
        "flood from {}: {attempts} connections attempted, {connected} accepted by TCP, in {secs:.1} s ({:.0}/s)",
        intruder.addr,
        attempts as f64 / secs
    );
    assert!(
        connected > 1000,
        "the flood hardly reached node 2 ({connected} connections)"
    );

    // Still well after it: heard by the others, and the process still runs there.
    for on in [1, 3] {
        assert!(
            c.eventually(Duration::from_secs(5), || sees_node2(&c, on)),
            "node {on} lost sight of node 2 after the flood"
        );
    }
    holder.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(holder.wait().unwrap().success());

    let log = c.log(2);
    let log_after = log_size(&c, 2);
    println!(
        "node 2's log: {log_before} bytes before the flood, {log_after} after (cap {} bytes)",
        LOG_KIB * 1024
    );
    let flood_lines = log.matches("not an address of the map").count();
    assert!(
        (1..=2).contains(&flood_lines),
        "the flood is logged in a line or two, not {flood_lines}:\n{log}"
    );
    assert!(
        log_after <= LOG_KIB * 1024,
        "node 2's log passed its cap: {log_after} bytes"
    );

    // Past the cap, the service rotates its own log and goes on writing to a new one.
    let log_path = c.paths(2).log();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap()
        .write_all(&vec![b'#'; (LOG_KIB as usize + 8) * 1024])
        .unwrap();
    let rotated = log_path.with_file_name("mosix.log.1");
    assert!(
        c.eventually(Duration::from_secs(3), || rotated.exists()
            && c.log(2).contains("log rotated")),
        "node 2 did not rotate a log of {} bytes",
        log_size(&c, 2)
    );
    assert!(log_size(&c, 2) < LOG_KIB * 1024);
    drop(intruder);
    assert!(
        !std::path::Path::new(&format!("/run/netns/{}-intruder", c.cluster.name)).exists(),
        "the intruder's namespace is gone"
    );
}
