//! Step 3's transparency bar: real programs of the distribution start on node 1 under mosrun,
//! go to node 2 at their start, then to node 3 and back home while they run, and print exactly
//! what they print when they never move, with the same exit status. Their inputs and outputs
//! are node 1's files and pipes only.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mosix_tests::{TestCluster, pseudo_random, require_root, serial};

/// The directory each node has privately in these tests.
const DATA: &str = "/run/mosix-vc-test-tour";

/// One program run: what it is, and where its standard input comes from.
struct Case {
    prog: &'static str,
    args: Vec<String>,
    /// Fed through a pipe by the test (a pipeline fed from stdin).
    stdin: Option<PathBuf>,
    /// Standard output into this home file instead of a pipe (written behind).
    to_file: Option<PathBuf>,
}

fn run(c: &TestCluster, case: &Case, mosrun: bool) -> (Child, Option<std::thread::JoinHandle<()>>) {
    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    // As nobody, both: the job must be one a node takes as a guest, and the reference runs as
    // the same user.
    let mut cmd = if mosrun {
        let mut a = vec!["-2", case.prog];
        a.extend_from_slice(&args);
        c.job(1, &a)
    } else {
        c.user_command(1, case.prog, &args)
    };
    cmd.stdin(if case.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    match &case.to_file {
        Some(p) => cmd.stdout(std::fs::File::create(p).unwrap()),
        None => cmd.stdout(Stdio::piped()),
    };
    let mut child = cmd.spawn().unwrap();
    let feeder = case.stdin.as_ref().map(|p| {
        let data = std::fs::read(p).unwrap();
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            // The program may end early (a test failure): a broken pipe is not ours to report.
            let _ = w.write_all(&data);
        })
    });
    (child, feeder)
}

fn output(
    case: &Case,
    mut child: Child,
    feeder: Option<std::thread::JoinHandle<()>>,
) -> (Vec<u8>, Option<i32>) {
    let mut out = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut out).unwrap();
    }
    let st = child.wait().unwrap();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    if let Some(p) = &case.to_file {
        out = std::fs::read(p).unwrap();
    }
    (out, st.code())
}

/// Where mps on node 1 says process `pid` is (0: home), waiting a little for a move to show.
fn node_of(c: &TestCluster, pid: u32) -> Option<u64> {
    c.mps(1, false)
        .iter()
        .find(|r| r["pid"] == pid)
        .and_then(|r| r["node"].as_u64())
}

#[test]
fn real_programs_go_home_2_3_home_mid_run_with_identical_output() {
    if !require_root("real_programs_tour") {
        return;
    }
    let _g = serial();
    std::fs::create_dir_all(DATA).unwrap();
    let c = TestCluster::up("ttour", 3, |s| s.private_dirs = vec![PathBuf::from(DATA)]);
    c.wait_all_up();
    let data = c.private_path(1, Path::new(DATA));
    let d = |f: &str| format!("{DATA}/{f}");

    // Inputs, on node 1 only.
    let big = pseudo_random(128 << 20, 0x0bad_5eed);
    std::fs::write(data.join("big.bin"), &big).unwrap();
    let text: String = (0..1_200_000u64)
        .map(|i| {
            format!(
                "row {} value {} name n{}\n",
                (i * 7919) % 1_200_000,
                i % 977,
                i % 31
            )
        })
        .collect();
    std::fs::write(data.join("text.txt"), &text).unwrap();
    let bz = c
        .command(1, "bzip2", &["-c", &d("text.txt")])
        .output()
        .unwrap()
        .stdout;
    std::fs::write(data.join("text.bz2"), bz).unwrap();
    for i in 0..120 {
        let sub = data.join(format!("tree/d{}", i % 12));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}")),
            &big[(i * 700_000) % (100 << 20)..][..700_000 + i * 1000],
        )
        .unwrap();
    }
    // Many small files for find, which asks about each.
    for i in 0..8000 {
        let sub = data.join(format!("many/d{}/e{}", i % 40, i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("s{i}")), &text.as_bytes()[..i % 300]).unwrap();
    }
    std::fs::write(
        data.join("script.py"),
        "import hashlib, sys, zlib\nacc = 0\nfor i in range(6000000):\n    acc = (acc + i * i) % 1000003\nwith open(sys.argv[1], 'rb') as f:\n    while True:\n        b = f.read(65536)\n        if not b:\n            break\n        acc = zlib.crc32(b, acc)\n        for i in range(0, len(b), 4096):\n            acc ^= b[i]\nprint(acc, hashlib.md5(open(sys.argv[1], 'rb').read()).hexdigest())\nsys.exit(3)\n",
    )
    .unwrap();
    assert!(
        !c.private_path(2, Path::new(DATA)).join("big.bin").exists()
            && !c.private_path(3, Path::new(DATA)).join("big.bin").exists(),
        "nodes 2 and 3 have their own files"
    );

    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let cases = vec![
        Case {
            prog: "md5sum",
            args: s(&[&d("big.bin"), &d("big.bin"), &d("big.bin")]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "cksum",
            args: [d("big.bin"), d("text.txt")]
                .into_iter()
                .chain(std::iter::repeat_n(d("big.bin"), 10))
                .collect(),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "gzip",
            args: s(&["-c", &d("text.txt")]),
            stdin: None,
            to_file: Some(data.join("out.gz")),
        },
        Case {
            prog: "bzip2",
            args: s(&["-dc", &d("text.bz2")]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "xz",
            args: s(&["-T1", "-0", "-c"]),
            stdin: Some(data.join("text.txt")),
            to_file: None,
        },
        Case {
            prog: "sort",
            args: s(&["--parallel=1", "-k4", &d("text.txt")]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "tar",
            args: s(&[
                "-cf",
                "-",
                "-C",
                &d("tree"),
                ".",
                "-C",
                &d("tree"),
                ".",
                "-C",
                &d("tree"),
                ".",
                "-C",
                &d("tree"),
                ".",
            ]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "find",
            args: s(&[
                &d("many"),
                &d("many"),
                &d("many"),
                &d("many"),
                "-type",
                "f",
                "-size",
                "-200c",
                "-printf",
                "%s %p\\n",
            ]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "awk",
            args: s(&[
                "{ s += $4; n[$6]++ } END { for (k in n) t += n[k]; print s, t }",
                &d("text.txt"),
                &d("text.txt"),
                &d("text.txt"),
            ]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "/usr/bin/python3",
            args: s(&[&d("script.py"), &d("big.bin")]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "perl",
            args: s(&[
                "-ne",
                "$s += length; END { print \"$s $.\\n\"; exit 4 }",
                &d("text.txt"),
                &d("text.txt"),
                &d("text.txt"),
            ]),
            stdin: None,
            to_file: None,
        },
        Case {
            prog: "sed",
            args: s(&["-e", "s/value/VALUE/; s/n1/N-ONE/g"]),
            stdin: Some(data.join("text.txt")),
            to_file: None,
        },
    ];
    // For chasing a failure: MOSIX_TOUR_ONLY=python3 MOSIX_TOUR_REPEAT=20.
    let only = std::env::var("MOSIX_TOUR_ONLY").unwrap_or_default();
    let repeat: usize = std::env::var("MOSIX_TOUR_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let chosen: Vec<&Case> = cases
        .iter()
        .filter(|c| c.prog.contains(only.as_str()))
        .flat_map(|c| std::iter::repeat_n(c, repeat))
        .collect();
    let mut report = Vec::new();
    for case in chosen {
        eprintln!("{} {:?}", case.prog, case.args);
        let t = Instant::now();
        let (child, feeder) = run(&c, case, false);
        let reference = output(case, child, feeder);
        let at_home = t.elapsed();
        assert!(
            !reference.0.is_empty(),
            "{}: the reference printed nothing",
            case.prog
        );

        let t = Instant::now();
        let (child, feeder) = run(&c, case, true);
        let pid = child.id();
        let mut path = Vec::new();
        // It starts on node 2 (mosrun -2); then node 3, then home, while it runs.
        let on2 = c.eventually(Duration::from_secs(5), || node_of(&c, pid) == Some(2));
        path.push(if on2 { "2" } else { "?" });
        let mut child = Some(child);
        let mut feeder = feeder;
        for (to, expect) in [("3", "is on node 3"), ("home", "home")] {
            std::thread::sleep(Duration::from_millis(50));
            let (ok, said) = c.try_migrate(pid, to);
            if !ok || !said.contains(expect) {
                // Say how the program ended: too early (a test input too small) or badly.
                let (o, st) = output(case, child.take().unwrap(), feeder.take());
                panic!(
                    "{}: migrate {to}: {said}; it had ended with {st:?}, {} bytes of output \
                     ({} expected), after {:.2} s\nnode 1:\n{}\nnode 2:\n{}\nnode 3:\n{}",
                    case.prog,
                    o.len(),
                    reference.0.len(),
                    t.elapsed().as_secs_f64(),
                    c.log(1),
                    c.log(2),
                    c.log(3)
                );
            }
            let direct = format!("(pid {pid}) moved from node 2 to node 3 directly");
            path.push(if to == "3" && c.log(1).contains(&direct) {
                "3 (direct)"
            } else {
                to
            });
        }
        let moved = output(case, child.take().unwrap(), feeder.take());
        assert!(on2, "{}: never seen on node 2", case.prog);
        assert!(
            moved.0 == reference.0,
            "{}: output differs after home → 2 → 3 → home ({} vs {} bytes), exit {:?}\n\
             node 1:\n{}\nnode 2:\n{}\nnode 3:\n{}",
            case.prog,
            moved.0.len(),
            reference.0.len(),
            moved.1,
            c.log(1),
            c.log(2),
            c.log(3)
        );
        assert_eq!(moved.1, reference.1, "{}: exit status", case.prog);
        report.push(format!(
            "{:<16} {:>10} bytes  exit {:?}  home {:>6.2} s  moved {:>6.2} s  path home→{}",
            case.prog,
            moved.0.len(),
            moved.1,
            at_home.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            path.join("→")
        ));
    }
    for r in &report {
        eprintln!("{r}");
    }
    // Nothing is left anywhere.
    for n in 2..=3 {
        assert_eq!(c.guests_on(n), 0, "node {n} still has guests");
    }
}
