//! The link decoder on a corpus of malformed frames (`tests/fixtures/frames/*.hex`: hex text,
//! the first line `# expect: REASON`). Each must be refused with its reason, through both the
//! in-memory decoder and the stream reader, and neither may allocate what the header claims.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use mosix_core::proto::{self, LinkMsg, MAX_LINK_FRAME};

fn corpus() -> Vec<(String, String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames");
    let mut v = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines = text.lines();
        let expect = lines
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap()
            .to_owned();
        let hex: String = lines.collect::<Vec<_>>().concat();
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        v.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            expect,
            bytes,
        ));
    }
    v.sort();
    assert!(v.len() >= 10);
    v
}

#[test]
fn every_malformed_frame_is_refused_with_its_reason() {
    for (name, expect, bytes) in corpus() {
        let in_memory = proto::decode_link(&bytes);
        let mut stream = &bytes[..];
        let streamed = proto::read_frame::<LinkMsg, _>(&mut stream, MAX_LINK_FRAME)
            .and_then(|m| m.validate().map(|()| m));
        if expect == "ok" {
            assert!(in_memory.is_ok(), "{name}: {in_memory:?}");
            assert!(streamed.is_ok(), "{name}: {streamed:?}");
            continue;
        }
        let e = streamed.expect_err(&name).to_string();
        assert!(
            e.contains(&expect),
            "{name}: stream reader said '{e}', expected '{expect}'"
        );
        let e = in_memory.expect_err(&name).to_string();
        // The in-memory decoder sees a short buffer where the stream sees a closed connection.
        let expect_mem = if expect.contains("closed") {
            "closed"
        } else {
            &expect
        };
        assert!(
            e.contains(expect_mem),
            "{name}: decoder said '{e}', expected '{expect_mem}'"
        );
    }
}
