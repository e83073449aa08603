//! The map parser on the files of `tests/fixtures/maps`: every valid map parses, every invalid
//! one fails with the file name, the line and the reason its first line announces
//! (`# expect: LINE: reason`, LINE `-` for a problem of the whole file).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use mosix_core::map;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/maps")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "map"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

/// The expectation of an invalid fixture: (line, reason).
fn expectation(text: &str) -> (Option<usize>, String) {
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("# expect: ")
        .expect("first line '# expect: LINE: reason'");
    let (line, reason) = rest.split_once(": ").expect("LINE: reason");
    (line.parse().ok(), reason.to_owned())
}

#[test]
fn valid_maps_parse() {
    for p in fixtures("valid") {
        let name = p.display().to_string();
        let text = map::read_map_text(&name).unwrap();
        let m = map::parse_and_resolve(&name, &text, &map::system_resolver)
            .unwrap_or_else(|e| panic!("{name} should be valid:\n{e}"));
        assert!(m.node_count() >= 1);
        // What the writer prints reads back as the same map.
        let again =
            map::parse_and_resolve("rewritten", &m.to_text(), &map::system_resolver).unwrap();
        assert_eq!(m.nodes(), again.nodes(), "{name}");
    }
}

#[test]
fn invalid_maps_name_the_line_and_the_problem() {
    for p in fixtures("invalid") {
        let name = p.display().to_string();
        let text = map::read_map_text(&name).unwrap();
        let (line, reason) = expectation(&text);
        let errs = match map::parse_and_resolve(&name, &text, &map::system_resolver) {
            Ok(_) => panic!("{name} should be refused"),
            Err(e) => e,
        };
        let shown = errs.to_string();
        let want = match line {
            Some(l) => format!("{name}:{l}: {reason}"),
            None => format!("{name}: {reason}"),
        };
        assert!(
            shown.contains(&want),
            "{name}: expected\n  {want}\ngot\n  {shown}"
        );
    }
}

#[test]
fn the_classic_example_means_what_the_manual_says() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/maps/valid/classic.map");
    let text = std::fs::read_to_string(&p).unwrap();
    let m = map::parse_and_resolve("classic", &text, &map::system_resolver).unwrap();
    let n = |x| mosix_core::NodeId::new(x).unwrap();
    assert_eq!(m.node_count(), 9);
    assert_eq!(m.addr_of(n(8)).unwrap().to_string(), "10.0.0.8");
    assert_eq!(m.node_of("192.168.1.1".parse().unwrap()), Some(n(5)));
    assert_eq!(m.node_of("10.0.1.20".parse().unwrap()), Some(n(20)));
}
