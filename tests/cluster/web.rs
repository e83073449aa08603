//! `mon --web`: the page renders in headless Chromium, and what it shows is what `mon --once
//! --json` and `mps -A` say: every node with its address, state, CPUs and speed, and a process
//! of node 1 running on node 2.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mosix_tests::{TestCluster, in_ci, in_netns, require_root, serial, user_tool};

const ADDR: &str = "127.0.0.1:8249";

/// Kills the child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The text of the element with `data-field="FIELD"` in the row `<tr id="ID">` of a DOM dump.
fn field(dom: &str, id: &str, f: &str) -> Option<String> {
    let row = &dom[dom.find(&format!("<tr id=\"{id}\""))?..];
    let row = &row[..row.find("</tr>")?];
    let at = row.find(&format!("data-field=\"{f}\">"))? + format!("data-field=\"{f}\">").len();
    Some(row[at..at + row[at..].find('<')?].to_owned())
}

#[test]
fn the_web_monitor_shows_what_mon_json_says_in_headless_chromium() {
    if !require_root("web::the_web_monitor_shows_what_mon_json_says") {
        return;
    }
    if which("chromium").is_none() {
        assert!(
            !in_ci(),
            "chromium is not installed, and under CI=true a skip is a failure"
        );
        eprintln!("SKIP web: needs chromium (apt install chromium)");
        return;
    }
    let _g = serial();
    let c = TestCluster::up("web", 3, |_| {});
    c.wait_all_up();
    // A process of node 1 that runs on node 2.
    let probe = user_tool("mosix-probe");
    let mut job = c
        .job(1, &["-2", probe.to_str().unwrap(), "mem", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(job.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let job = Reaped(job);
    let pid = job.0.id();
    assert!(c.eventually(Duration::from_secs(10), || c.node_of(pid) == Some(2)));

    // mon --web as nobody: no privilege needed to look.
    let _mon = Reaped(
        c.user_command(1, "mon", &["--web", ADDR])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !in_netns(&c.cluster, 1, || std::net::TcpStream::connect(ADDR).is_ok()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mon --web never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("mon.png");
    let chromium = |extra: &[&str]| {
        let profile = dir.path().join("profile");
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=4000".into(),
            "--window-size=1280,900".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(format!("http://{ADDR}/"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.command(1, "chromium", &args).output().unwrap()
    };
    let out = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never drew the state: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The nodes, as mon --once --json says.
    let json = c.run(1, "mon", &["--once", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    for n in nodes.as_array().unwrap() {
        let id = format!("node-{}", n["node"]);
        assert_eq!(
            field(&dom, &id, "addr").as_deref(),
            n["addr"].as_str(),
            "{id}"
        );
        assert_eq!(
            field(&dom, &id, "cpus"),
            Some(n["cpus"].to_string()),
            "{id}"
        );
        assert_eq!(
            field(&dom, &id, "speed"),
            Some(n["speed"].to_string()),
            "{id}"
        );
        assert_eq!(field(&dom, &id, "state").as_deref(), Some("up"), "{id}");
    }
    // The process, where it runs.
    assert_eq!(
        field(&dom, &format!("proc-1-{pid}"), "node").as_deref(),
        Some("2"),
        "{dom}"
    );

    // The screenshot: a PNG of the window's size, with something drawn in it.
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 900));
    assert!(
        png.len() > 20_000,
        "a nearly empty picture: {} bytes",
        png.len()
    );
    drop(job);
}

fn which(prog: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|f| f.is_file())
    })
}
