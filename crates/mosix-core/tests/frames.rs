//! The link decoder on a corpus of malformed frames (`tests/fixtures/frames/*.hex`: hex text,
//! the first line `# expect: REASON`). Each must be refused with its reason, through the
//! in-memory decoder, the plain stream reader, and the sealed stream reader of an authenticated
//! connection (the fixture sealed as it is, header included, in both protections), and none
//! may allocate what the header claims.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use mosix_core::NodeId;
use mosix_core::config::Secret;
use mosix_core::proto::seal::{self, Protection, Transcript};
use mosix_core::proto::{self, LinkMsg, MAX_LINK_FRAME, Side};

struct Case {
    name: String,
    expect: String,
    bytes: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames");
    let mut v = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut expect = None;
        let mut hex = String::new();
        for l in text.lines() {
            if let Some(x) = l.strip_prefix("# expect: ") {
                expect = Some(x.to_owned());
            } else {
                hex.push_str(l.trim());
            }
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        v.push(Case {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            expect: expect.unwrap_or_else(|| panic!("{}: no '# expect:' line", p.display())),
            bytes,
        });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(v.len() >= 10);
    v
}

#[test]
fn every_malformed_frame_is_refused_with_its_reason() {
    for Case {
        name,
        expect,
        bytes,
        ..
    } in corpus()
    {
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

#[test]
fn every_malformed_frame_is_refused_after_the_handshake_too() {
    let secret = Secret::new(b"0123456789abcdef0123").unwrap();
    for protection in [Protection::Authenticated, Protection::Encrypted] {
        for case in corpus() {
            let t = Transcript {
                client: NodeId::new(1).unwrap(),
                server: NodeId::new(2).unwrap(),
                nonce_c: [1; 32],
                nonce_s: [2; 32],
                protection,
            };
            let mut client = t.session(&secret, Side::Client);
            let mut server = t.session(&secret, Side::Server);
            // The fixture as an authenticated peer would send it: sealed, header as it is.
            let mut wire = Vec::new();
            if client.sealer.seal_plain(&case.bytes, &mut wire).is_err() {
                wire = case.bytes.clone(); // shorter than a header: nothing to seal
            }
            let got = seal::read_sealed::<LinkMsg, _>(
                &mut &wire[..],
                &mut server.opener,
                MAX_LINK_FRAME,
                &mut Vec::new(),
            )
            .and_then(|m| m.validate().map(|()| m));
            let name = format!("{} ({protection:?})", case.name);
            let expect = &case.expect;
            if expect == "ok" {
                assert!(got.is_ok(), "{name}: {got:?}");
                continue;
            }
            let e = got.expect_err(&name).to_string();
            assert!(
                e.contains(expect.as_str()),
                "{name}: sealed reader said '{e}', expected '{expect}'"
            );
        }
    }
}
