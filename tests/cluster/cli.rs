//! The command-line conventions every tool keeps, checked on the built tools without a
//! service: usage errors exit 2 and say what is wrong, an unknown option is never taken for a
//! program, `mosctl isup` tells "no service here" (3) from "down" (1), and the example map
//! shipped in `etc/` passes `setpe -c`.

use std::path::Path;
use std::process::{Command, Output};

use mosix_tests::tool;

/// Runs a tool with run and configuration directories of its own (no service answers there).
fn run(dir: &Path, t: &str, args: &[&str]) -> Output {
    Command::new(tool(t))
        .args(args)
        .env("MOSIX_RUNDIR", dir)
        .env("MOSIX_ETC", dir)
        .output()
        .unwrap()
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    for (t, args, says) in [
        ("mps", &["zz"][..], "unknown selector 'z'"),
        ("mosrun", &[][..], "no program given"),
        // An unknown option is an error, not the program to run.
        ("mosrun", &["-Z", "true"][..], "-Z"),
        ("mosrun", &["-N", "3", "true"][..], "-N"),
        ("mosrun", &["-A", "x", "true"][..], "-A x"),
        ("mosrun", &["-j4-2", "true"][..], "-j4-2"),
        ("mosrun", &["-0", "true"][..], "node 0 means home"),
        (
            "tune",
            &["--large", "32", "--small", "64"][..],
            "must be more than",
        ),
        ("mtune", &["--json", "-o", "-"][..], "choose one"),
        (
            "mosctl",
            &["setdecay", "5", "1"][..],
            "give both SLOW and FAST",
        ),
        ("mosctl", &["nosuchverb"][..], "nosuchverb"),
        ("migrate", &[][..], ""),
    ] {
        let out = run(dir.path(), t, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{t} {args:?}: {err}");
        assert!(err.contains(says), "{t} {args:?}: {err}");
    }
}

#[test]
fn isup_tells_no_service_from_a_node_that_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), "mosctl", &["isup", "1"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no MOSIX service answers"), "{err}");
}

#[test]
fn the_example_map_passes_setpe_check() {
    let dir = tempfile::tempdir().unwrap();
    let map = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/mosix.map");
    let out = run(dir.path(), "setpe", &["-c", "-f", map.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mosrun -b` starts a program on the node where it runs best now: with nodes 1 and 2 busy,
/// on node 3, from its first instruction (not after a balancing round), and not locked there.
#[test]
fn mosrun_b_starts_on_the_least_loaded_node() {
    if !mosix_tests::require_root("mosrun_b") {
        return;
    }
    let _g = mosix_tests::serial();
    let c = mosix_tests::TestCluster::up("tbest", 3, |s| s.cpus_per_node = Some(0.4));
    c.wait_all_up();
    let mut busy = vec![
        c.probe(&["-L"], &["spin", "60"]),
        c.probe_on(2, &["-L"], &["spin", "60"]),
    ];
    // Node 1 measures its own busy job, and hears of node 2's: most of one process each (the
    // smoothed load rises over seconds; at half of one, an idle node is no clear gain for -b).
    let busy_at = |n: u16| {
        let id = mosix_core::NodeId::new(n).unwrap();
        move |v: &mosix_core::client::ClusterView| {
            v.get(id).and_then(|n| n.figures).is_some_and(|f| {
                // Processes the load stands for (100 = one standard CPU busy).
                let one = 100.0 * 10_000.0 / f64::from(f.cpus.max(1) * f.speed.max(1));
                f64::from(f.load) / one >= 0.8
            })
        }
    };
    for n in [1, 2] {
        c.wait_view(1, std::time::Duration::from_secs(15), busy_at(n))
            .expect("node 1 sees nodes 1 and 2 busy");
    }
    // ... and has node 3's figures (up is not enough: a node is up before its first load).
    let three = mosix_core::NodeId::new(3).unwrap();
    c.wait_view(1, std::time::Duration::from_secs(15), |v| {
        v.get(three).and_then(|n| n.figures).is_some()
    })
    .expect("node 1 has node 3's figures");
    let best = c.probe(&["-b"], &["spin", "60"]);
    let pid = best.id();
    let there = c.eventually(std::time::Duration::from_secs(5), || {
        c.node_of(pid) == Some(3)
    });
    let log = c.log(1);
    let row = c.row(pid);
    busy.push(best);
    for j in &mut busy {
        let _ = j.kill();
        let _ = j.wait();
    }
    assert!(there, "not started on node 3: {row:?}\n{log}");
    assert!(row.is_some_and(|r| r["lock"] == false), "-b does not lock");
    assert!(
        log.contains(&format!("process {pid} starts on node 3, the best now")),
        "{log}"
    );
}

#[test]
fn setpe_new_secret_makes_a_private_secret_once() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), "setpe", &["--new-secret"]);
    assert!(out.status.success(), "{out:?}");
    let secret = dir.path().join("mosix/secret");
    let md = std::fs::metadata(&secret).unwrap();
    assert_eq!(md.mode() & 0o777, 0o600);
    let first = std::fs::read(&secret).unwrap();
    let again = run(dir.path(), "setpe", &["--new-secret"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("kept"));
    assert_eq!(std::fs::read(&secret).unwrap(), first);
}

/// Every page a man page refers to, `name(N)`, is one of the suite's (`man/name.N`) or a
/// system page named here on purpose.
#[test]
fn no_man_page_refers_to_a_page_that_does_not_exist() {
    const SYSTEM: &[&str] = &[
        "ps(1)",
        "top(1)",
        "kill(1)",
        "systemd.service(5)",
        "proc(5)",
    ];
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("../man");
    let mut pages = std::collections::BTreeSet::new();
    let mut texts = Vec::new();
    for e in std::fs::read_dir(&man).unwrap() {
        let e = e.unwrap();
        let file = e.file_name().into_string().unwrap();
        let (name, section) = file.rsplit_once('.').unwrap();
        pages.insert(format!("{name}({section})"));
        texts.push((file, std::fs::read_to_string(e.path()).unwrap()));
    }
    let mut missing = Vec::new();
    for (file, text) in &texts {
        // Plain text: roff's font changes and escaped hyphens gone, `.BR name (N)` joined.
        let plain = text
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fR", "")
            .replace("\\fP", "")
            .replace("\\-", "-")
            .replace(".BR ", "")
            .replace(".IR ", "")
            .replace(" (", "(");
        let b = plain.as_bytes();
        for (i, _) in plain.match_indices('(') {
            let Some(close) = plain[i..].find(')') else {
                continue;
            };
            let section = &plain[i + 1..i + close];
            if !matches!(section, "1" | "5" | "7" | "8") {
                continue;
            }
            let start = plain[..i]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
                .map_or(0, |s| s + 1);
            if start == i || !b[start].is_ascii_alphabetic() {
                continue;
            }
            let page = format!("{}({section})", &plain[start..i]);
            if !pages.contains(&page) && !SYSTEM.contains(&page.as_str()) {
                missing.push(format!("{file}: {page}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "pages referred to but missing: {missing:#?}"
    );
}
