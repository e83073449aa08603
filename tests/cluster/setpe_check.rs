//! `setpe -c` on the map fixtures: valid maps pass, every kind of bad map is refused with
//! file:line and a reason, and nothing is started.

use std::path::{Path, PathBuf};
use std::process::Command;

use mosix_tests::tool;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/mosix-core/tests/fixtures/maps")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn setpe_check_accepts_valid_maps_and_refuses_bad_ones_with_file_and_line() {
    let rundir = tempfile::tempdir().unwrap();
    let setpe = |file: &Path| {
        Command::new(tool("setpe"))
            .args(["-c", "-f"])
            .arg(file)
            .env("MOSIX_RUNDIR", rundir.path())
            .env("MOSIX_ETC", rundir.path())
            .output()
            .unwrap()
    };
    for f in fixtures("valid") {
        let out = setpe(&f);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok:"));
    }
    for f in fixtures("invalid") {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let (line, reason) = expect.split_once(": ").unwrap();
        let out = setpe(&f);
        assert_eq!(out.status.code(), Some(1), "{}", f.display());
        let err = String::from_utf8_lossy(&out.stderr);
        let want = if line == "-" {
            format!("{}: {reason}", f.display())
        } else {
            format!("{}:{line}: {reason}", f.display())
        };
        assert!(
            err.contains(&want),
            "{}: expected '{want}' in:\n{err}",
            f.display()
        );
    }
    // -c starts nothing.
    assert!(!rundir.path().join("mosix.sock").exists());
    assert_eq!(std::fs::read_dir(rundir.path()).unwrap().count(), 0);
}

#[test]
fn setpe_reads_a_map_from_standard_input() {
    use std::io::Write;
    let mut child = Command::new(tool("setpe"))
        .args(["-c", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1 10.9.0.1 3\n2 10.9.0.9 1\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("<stdin>:2: nodes 2..2 overlap nodes 1..3 of line 1")
    );
}

#[test]
fn tools_on_an_unconfigured_node_say_so_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    for (t, args) in [
        ("mon", vec!["--once"]),
        ("mosctl", vec!["status"]),
        ("setpe", vec!["-r"]),
    ] {
        let out = Command::new(tool(t))
            .args(&args)
            .env("MOSIX_RUNDIR", dir.path())
            .env("MOSIX_ETC", dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{t}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("this node is not configured"), "{t}: {err}");
    }
}
