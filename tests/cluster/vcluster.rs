//! The virtual cluster itself: nodes are measured as their cgroups, files can be private, and
//! `down` leaves nothing behind — also after a crash half-way.

use std::time::Duration;

use mosix_tests::{TestCluster, assert_gone, require_root, serial};

#[test]
fn private_directories_are_private_and_down_leaves_nothing() {
    if !require_root("private_directories_are_private") {
        return;
    }
    let _g = serial();
    // A private directory that would hide the tools inside the nodes is refused up front.
    let mut spec = vcluster::Spec::new("thide", 1, mosix_tests::tools().to_owned());
    spec.private_dirs = vec![mosix_tests::tools().parent().unwrap().to_owned()];
    let e = vcluster::up(&spec).expect_err("refused");
    assert!(e.to_string().contains("would be hidden"), "{e}");
    assert_gone("thide");
    // A directory of our own (the checkout, and so the tools, may well be under /tmp).
    let private = std::path::PathBuf::from("/run/mosix-vc-test-private");
    std::fs::create_dir_all(&private).unwrap();
    let file = private.join("who");
    let mut left_running;
    {
        let p = private.clone();
        let c = TestCluster::up("tpriv", 2, move |s| s.private_dirs = vec![p]);
        let w = c
            .cluster
            .command(
                1,
                &"sh".into(),
                &[
                    "-c".into(),
                    format!("echo one > {0} && cat {0}", file.display()).into(),
                ],
            )
            .unwrap()
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&w.stdout).trim(), "one");
        let r = c
            .cluster
            .command(
                2,
                &"sh".into(),
                &[
                    "-c".into(),
                    format!("cat {} 2>&1 || echo absent", file.display()).into(),
                ],
            )
            .unwrap()
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("absent"),
            "node 2 sees node 1's file"
        );
        assert!(!file.exists(), "the machine sees it");
        // `exec` finds the suite's tools by name, as root and as the user, whatever the
        // caller's PATH.
        for nobody in [false, true] {
            let mut args = vec!["exec", "--name", "tpriv", "2"];
            if nobody {
                args.push("--nobody");
            }
            args.extend(["--", "mosctl", "whois"]);
            let out = std::process::Command::new(mosix_tests::tool("vcluster"))
                .args(&args)
                .env("PATH", "/usr/bin:/bin")
                .output()
                .unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("node #2"),
                "vcluster {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A process left running in a node is removed with the cluster.
        left_running = c
            .cluster
            .command(2, &"sleep".into(), &["300".into()])
            .unwrap()
            .spawn()
            .unwrap();
    }
    assert_gone("tpriv");
    std::fs::remove_dir(&private).unwrap();
    let status = left_running.wait().unwrap();
    assert!(
        !status.success(),
        "the process in the node was killed: {status:?}"
    );
}

#[test]
fn down_cleans_up_after_a_half_built_cluster() {
    if !require_root("down_cleans_up_after_a_half_built_cluster") {
        return;
    }
    let _g = serial();
    let _ = vcluster::down("thalf");
    // Build namespaces and a cgroup by hand, as a crashed `up` would have left them, without
    // any record of the cluster.
    for ns in ["thalf-sw", "thalf-n1"] {
        assert!(
            std::process::Command::new("ip")
                .args(["netns", "add", ns])
                .status()
                .unwrap()
                .success()
        );
    }
    let cg = std::path::Path::new("/sys/fs/cgroup/cpu/mosix-vc.thalf/node1");
    if std::path::Path::new("/sys/fs/cgroup/cpu").is_dir() {
        std::fs::create_dir_all(cg).unwrap();
    }
    let out = std::process::Command::new(mosix_tests::tool("vcluster"))
        .args(["down", "--name", "thalf"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_gone("thalf");
}

#[test]
fn a_node_measures_its_cgroup_not_the_machine() {
    if !require_root("a_node_measures_its_cgroup") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tcg", 2, |s| {
        s.cpus_per_node = Some(0.25);
        s.mem_per_node = Some(256 << 20);
    });
    c.wait_view(2, Duration::from_secs(10), |v| {
        v.nodes.iter().all(|x| x.up && x.figures.is_some())
    })
    .unwrap();
    let v = c.view(2).unwrap();
    for n in &v.nodes {
        let f = n.figures.unwrap();
        assert_eq!(f.cpus, 1);
        assert_eq!(f.mem_total, 256 << 20);
        assert!(
            f.speed.abs_diff(c.cluster.speed / 4) <= 1,
            "a quarter CPU: {}",
            f.speed
        );
    }
    // Memory used inside node 1 shows as used on node 1 only.
    let mut hog = c
        .cluster
        .command(
            1,
            &"sh".into(),
            &[
                "-c".into(),
                "head -c 100000000 /dev/zero > /dev/shm/mosix-vc-hog; sleep 30".into(),
            ],
        )
        .unwrap()
        .spawn()
        .unwrap();
    let got = c.wait_view(2, Duration::from_secs(10), |v| {
        let a = v.nodes[0].figures.unwrap();
        let b = v.nodes[1].figures.unwrap();
        a.mem_free + (80 << 20) < b.mem_free
    });
    let _ = hog.kill();
    let _ = hog.wait();
    let _ = std::fs::remove_file("/dev/shm/mosix-vc-hog");
    got.unwrap();
}
