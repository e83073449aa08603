//! Step 3, sandbox: a guest cannot open, read or connect to anything of the node it runs on,
//! and runs there with no more privileges than its owner has at home: as a host user of its
//! own, with no group and no capability.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use mosix_tests::{TestCluster, in_netns, require_root, serial};

/// The directory each node has privately in this test.
const DATA: &str = "/run/mosix-vc-test-sandbox";
const PORT: u16 = 47_777;

/// Tries, once it runs on node 2, what a guest must not be able to do there.
const HOSTILE: &str = r#"
import ctypes, json, os, resource, socket, sys
print("ready", flush=True)
sys.stdin.readline()
r = {}
try:
    open(sys.argv[1] + "/secret.txt").read()
    r["file"] = "read it"
except OSError as e:
    r["file"] = type(e).__name__
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", int(sys.argv[2])))
    r["connect"] = "connected"
except OSError as e:
    r["connect"] = type(e).__name__
libc = ctypes.CDLL(None, use_errno=True)
# An x32 getpid: a number no forwarding table knows.
r["x32"] = ctypes.get_errno() if libc.syscall(0x40000000 | 39) == -1 else "ran"
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
r["uid"] = os.getuid()
print(json.dumps(r), flush=True)
sys.stdin.readline()
"#;

#[test]
fn a_hostile_guest_cannot_touch_the_node_it_runs_on() {
    if !require_root("a_hostile_guest_cannot_touch_the_node_it_runs_on") {
        return;
    }
    let _g = serial();
    std::fs::create_dir_all(DATA).unwrap();
    let c = TestCluster::up("tsbx", 2, |s| s.private_dirs = vec![PathBuf::from(DATA)]);
    c.wait_all_up();
    // Things of node 2's own: a file, and a service on its loopback.
    std::fs::write(
        c.private_path(2, Path::new(DATA)).join("secret.txt"),
        "node 2 only\n",
    )
    .unwrap();
    let listener = in_netns(&c.cluster, 2, || {
        TcpListener::bind(("127.0.0.1", PORT)).unwrap()
    });
    listener.set_nonblocking(true).unwrap();

    // The guest belongs to an unprivileged user at home (as every job: root's are not taken).
    let port = PORT.to_string();
    let mut child = c
        .job(1, &["/usr/bin/python3", "-c", HOSTILE, DATA, &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let pid = child.id();
    assert!(c.migrate(pid, "2").contains("node 2"));

    // On node 2 it runs as a host user of its own (the guests' id base plus its pid there: no
    // account of node 2 has it), with no group, no capability and no way to gain any; to itself
    // it is still its owner (below, getuid() says 65534).
    let rows = c.mps(1, false);
    let rpid = rows
        .iter()
        .find(|r| r["pid"] == pid)
        .and_then(|r| r["remote_pid"].as_u64())
        .expect("its pid on node 2");
    let status = std::fs::read_to_string(format!("/proc/{rpid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let host_id = mosix_core::config::GuestTunables::default().id_base + rpid as u32;
    let ids = [host_id; 4].map(|i| i.to_string()).join(" ");
    assert_eq!(field("Uid:"), ids, "{status}");
    assert_eq!(field("Gid:"), ids, "{status}");
    assert_eq!(field("Groups:"), "", "{status}");
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(cap), "0000000000000000", "{cap} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");

    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let r: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
        panic!(
            "{e}: the guest said {line:?}; its errors: {err}\nnode 2: {}",
            c.log(2)
        )
    });
    // Its paths are home's (node 1 has no such file), its sockets are home's (nothing listens
    // on node 1's loopback), and a call no table knows does not run.
    assert_eq!(r["file"], "FileNotFoundError", "{r}");
    assert_eq!(r["connect"], "ConnectionRefusedError", "{r}");
    assert_eq!(r["x32"], libc::ENOSYS, "{r}");
    assert_eq!(r["uid"], 65534, "{r}");
    assert!(
        listener.accept().is_err(),
        "the guest reached node 2's loopback"
    );
    // A limit it set itself at home binds it on node 2 too.
    let limits = std::fs::read_to_string(format!("/proc/{rpid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );

    child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    assert!(child.wait().unwrap().success());
}
