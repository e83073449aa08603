//! Three node services on loopback addresses (127.0.0.1-3) of one network namespace: the link,
//! the gossip and the tools, without root.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use mosix_core::client::Client;
use mosix_core::config::Paths;
use mosix_tests::run_tool;

struct Node {
    paths: Paths,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = run_tool(&self.paths, "setpe", &["-off"]);
    }
}

fn node(root: &std::path::Path, n: u16, nodes: u16, port: u16, secret: &str) -> Node {
    let paths = Paths {
        etc: root.join(format!("n{n}/etc")),
        rundir: root.join(format!("n{n}/run")),
    };
    std::fs::create_dir_all(paths.etc.join("mosix")).unwrap();
    std::fs::write(paths.map(), format!("1 127.0.0.1 {nodes}\n")).unwrap();
    std::fs::write(paths.secret(), secret).unwrap();
    std::fs::set_permissions(paths.secret(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        paths.config(),
        format!("[link]\nport = {port}\n[gossip]\ninterval_ms = 300\ndead_after_ms = 3000\n[node]\nspeed = 10000\n"),
    )
    .unwrap();
    let out = run_tool(&paths, "setpe", &["-w", "-p", &n.to_string()]);
    assert!(
        out.status.success(),
        "setpe -w node {n}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Node { paths }
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn loopback_nodes_gossip_flags_and_refuse_a_second_start() {
    let _g = mosix_tests::serial();
    let dir = tempfile::tempdir().unwrap();
    // A port of our own so that a cluster test running alongside cannot collide.
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let secret = "loopback-test-secret-0123456789";
    let nodes: Vec<Node> = (1..=3)
        .map(|n| node(dir.path(), n, 3, port, secret))
        .collect();
    let all_up = |p: &Paths| {
        Client::connect(p)
            .and_then(|mut c| c.view())
            .is_ok_and(|v| v.nodes.iter().all(|n| n.up && n.figures.is_some()))
    };
    for n in &nodes {
        assert!(
            wait(Duration::from_secs(10), || all_up(&n.paths)),
            "not all up"
        );
    }
    // A flag set on node 1 is seen by node 3.
    let out = run_tool(&nodes[0].paths, "mosctl", &["block"]);
    assert!(out.status.success());
    let blocked = || {
        let out = run_tool(&nodes[2].paths, "mosctl", &["status", "1", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["block"] == true && v["up"] == true
    };
    assert!(
        wait(Duration::from_secs(5), blocked),
        "node 3 never saw node 1 blocked"
    );
    // Starting twice is refused with a clear word.
    let out = run_tool(&nodes[1].paths, "setpe", &["-w", "-p", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already configured"));
    // setpe -r prints the running map; -W replaces it in place.
    let out = run_tool(&nodes[1].paths, "setpe", &["-r"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.0.1"));
    // Stopping node 2 makes it go down for the others (dead_after 3 s).
    drop(nodes.into_iter().nth(1));
}

#[test]
fn a_node_is_declared_down_and_rejoins() {
    let _g = mosix_tests::serial();
    let dir = tempfile::tempdir().unwrap();
    let port = 20_001 + (std::process::id() % 20_000) as u16;
    let secret = "loopback-test-secret-0123456789";
    let a = node(dir.path(), 1, 2, port, secret);
    let b = node(dir.path(), 2, 2, port, secret);
    let up_on_a = |want: bool| {
        Client::connect(&a.paths)
            .and_then(|mut c| c.view())
            .is_ok_and(|v| v.nodes[1].up == want)
    };
    assert!(wait(Duration::from_secs(10), || up_on_a(true)));
    drop(b);
    let t = Instant::now();
    assert!(
        wait(Duration::from_secs(10), || up_on_a(false)),
        "node 2 never went down"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(2000),
        "down too early: {:?}",
        t.elapsed()
    );
    let _b = node(dir.path(), 2, 2, port, secret);
    assert!(
        wait(Duration::from_secs(10), || up_on_a(true)),
        "node 2 never came back"
    );
}
