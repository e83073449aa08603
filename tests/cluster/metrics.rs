//! The metrics a node serves (`[metrics] listen`, default its loopback) move with what the
//! cluster does, in a format promtool accepts; `mon --once --prometheus` writes the cluster's
//! view in the same names.

use std::time::Duration;

use mosix_tests::{TestCluster, metric, promtool_accepts, require_root, serial};

#[test]
fn counters_move_with_migrations_and_calls_and_promtool_accepts_them() {
    if !require_root("metrics::counters_move_with_migrations_and_calls") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("metrics", 3, |_| {});
    c.wait_all_up();
    // The gauges are set once a second, after a sample.
    assert!(c.eventually(Duration::from_secs(5), || {
        metric(&c.metrics(1), "mosix_peer_up{peer=\"2\"}") == 1.0
    }));
    let before = (c.metrics(1), c.metrics(2));
    let moved_out = "mosix_migrations_total{direction=\"out\",role=\"own\"}";
    let came_home = "mosix_migrations_total{direction=\"in\",role=\"own\"}";
    let guest_in = "mosix_migrations_total{direction=\"in\",role=\"guest\"}";
    let calls = "mosix_forwarded_calls_total{class=\"service\"}";

    // A job started on node 2 makes 300 forwarded reads, then is brought home and ends.
    let out = c
        .job(1, &["-2", "mosix-probe", "calls", "300"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = (c.metrics(1), c.metrics(2));
    assert_eq!(
        metric(&after.0, moved_out) - metric(&before.0, moved_out),
        1.0,
        "{}",
        after.0
    );
    assert_eq!(
        metric(&after.1, guest_in) - metric(&before.1, guest_in),
        1.0
    );
    assert!(
        metric(&after.0, calls) - metric(&before.0, calls) >= 300.0,
        "{}",
        after.0
    );
    assert!(
        metric(&after.0, "mosix_migration_bytes_total{direction=\"out\"}") > 0.0,
        "{}",
        after.0
    );
    assert!(
        metric(&after.1, "mosix_call_round_trip_seconds_count")
            - metric(&before.1, "mosix_call_round_trip_seconds_count")
            >= 300.0
    );

    // A job that comes home counts on both sides.
    let mut held = c.memory_holder(8, &["-3"]);
    assert!(c.eventually(Duration::from_secs(10), || c.guests_on(3) == 1));
    let pid = held.id();
    c.migrate(pid, "home");
    let _ = held.kill();
    let _ = held.wait();
    let home = c.metrics(1);
    assert!(metric(&home, came_home) >= 1.0, "{home}");
    assert!(
        metric(
            &c.metrics(3),
            "mosix_migrations_total{direction=\"out\",role=\"guest\"}"
        ) >= 1.0
    );
    // The gauges: node 1's own figures and how it sees the others.
    assert!(
        metric(&home, "mosix_node_cpus{node=\"1\"}") >= 1.0,
        "{home}"
    );
    assert!(
        metric(&home, "mosix_node_speed{node=\"1\"}") > 0.0,
        "{home}"
    );
    assert!(c.eventually(Duration::from_secs(10), || {
        metric(&c.metrics(1), "mosix_peer_up{peer=\"3\"}") == 1.0
    }));
    assert!(home.contains("mosix_node_info{cluster=\""), "{home}");
    promtool_accepts(&home, "node 1's metrics");

    // The textfile collector's file.
    let out = c.run(1, "mon", &["--once", "--prometheus"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for n in 1..=3 {
        assert_eq!(
            metric(&text, &format!("mosix_node_up{{node=\"{n}\"}}")),
            1.0,
            "{text}"
        );
    }
    promtool_accepts(&text, "mon --once --prometheus");
}

/// The Grafana dashboard in `etc/` asks only for series the node services and `mon
/// --prometheus` write.
#[test]
fn the_grafana_dashboard_asks_for_metrics_that_exist() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../etc/grafana/mosix-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    use mosix_core::metrics::{CallClass, Lost, Metrics, Move};
    // Families with labels show once they have a series: give each one.
    let m = Metrics::new();
    let one = mosix_core::NodeId::new(1).unwrap();
    let figures = mosix_core::load::Figures {
        load: 100,
        speed: 10000,
        cpus: 1,
        mem_total: 1,
        mem_free: 1,
        mem_rawfree: 1,
        util: 1,
        foreign: 0,
        foreign_guests: 0,
        own: 0,
    };
    m.set_node(one, "c", &figures);
    m.set_peer(one, true, Some(1));
    for way in [Move::Out, Move::Home, Move::GuestIn, Move::GuestOut] {
        m.moved(way, 1, 1.0);
        m.move_failed(way, "gone");
    }
    m.refused("load");
    m.lost(Lost::Link);
    for c in [
        CallClass::Service,
        CallClass::Deputy,
        CallClass::WriteBehind,
    ] {
        m.call_answered(c, 0.001);
    }
    m.link_trouble("claim", true);
    m.processes.with_label_values(&["home"]).set(1);
    m.queue.with_label_values(&["waiting"]).set(1);
    let served = m.text();
    let mut families: Vec<String> = served
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    families.extend([
        "mosix_node_up".to_owned(),
        "mosix_node_age_seconds".to_owned(),
    ]);
    let mut asked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("mosix_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    families.iter().any(|f| f == family || f == &name),
                    "{}: {expr} asks for {name}, which nothing serves",
                    panel["title"]
                );
                asked += 1;
            }
        }
    }
    assert!(asked >= 10);
}
