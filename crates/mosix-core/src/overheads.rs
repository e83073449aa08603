//! Migration and remote-call costs the balancer weighs against the benefit of a move
//! (`/etc/overheads`, written by `tune`; its format is overheads(5), rendered by
//! [`man_page`]).
//!
//! The classic cost model: moving a process costs a fixed part (setting up the remote) plus a
//! part per page of memory; a forwarded system call costs one round trip on the link. Until `tune`
//! has measured a link, the built-in defaults below are used; they are the order of magnitude
//! measured on the development machines (ptrace injection ≈ 50 µs, loopback round trip ≈ 45 µs,
//! bulk copy ≈ 1 GB/s per page stream).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// The columns of the header line, in order.
pub const COLUMNS: [&str; 4] = ["peer", "mig_fixed_us", "mig_page_ns", "call_rtt_us"];

/// The largest overheads file read (a row per node of the largest map is far less).
pub const MAX_BYTES: u64 = 4 << 20;

/// What is wrong with an overheads file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {what}")]
pub struct OverheadsError {
    /// The file's name.
    pub file: String,
    /// The line (1-based; 0 for the file as a whole).
    pub line: usize,
    /// The problem.
    pub what: String,
}

/// Costs towards one peer (or the default for every peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overhead {
    /// The peer, or `None` for the default row.
    pub peer: Option<NodeId>,
    /// Fixed cost of a migration, microseconds.
    pub mig_fixed_us: u64,
    /// Cost per 4 KiB page moved, nanoseconds.
    pub mig_page_ns: u64,
    /// Round trip of a forwarded system call, microseconds.
    pub call_rtt_us: u64,
}

/// The overheads in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overheads {
    /// Where they come from: "built-in defaults" or the file.
    pub source: String,
    /// The rows; the default row has `peer: None`.
    pub rows: Vec<Overhead>,
}

/// The default row used until `tune` measures the links.
pub const BUILTIN_DEFAULT: Overhead = Overhead {
    peer: None,
    mig_fixed_us: 5_000,
    mig_page_ns: 4_000,
    call_rtt_us: 100,
};

impl Overheads {
    /// The built-in defaults.
    pub fn builtin() -> Overheads {
        Overheads {
            source: "built-in defaults (no overheads file measured by tune)".to_owned(),
            rows: vec![BUILTIN_DEFAULT],
        }
    }

    /// The costs towards `peer`: its own row, or the default row.
    pub fn towards(&self, peer: NodeId) -> Overhead {
        self.rows
            .iter()
            .find(|r| r.peer == Some(peer))
            .or_else(|| self.rows.iter().find(|r| r.peer.is_none()))
            .copied()
            .unwrap_or(BUILTIN_DEFAULT)
    }

    /// Reads overheads(5) text; `name` names the file in errors and becomes the source.
    pub fn parse(name: &str, text: &str) -> Result<Overheads, OverheadsError> {
        let rows = parse_rows(name, text, &COLUMNS)?
            .into_iter()
            .map(|(peer, v)| Overhead {
                peer,
                mig_fixed_us: v[0],
                mig_page_ns: v[1],
                call_rtt_us: v[2],
            })
            .collect();
        Ok(Overheads {
            source: name.to_owned(),
            rows,
        })
    }

    /// The overheads(5) text of these rows: a comment with the source, the header, the default
    /// row first, then the peers in node order.
    pub fn to_text(&self) -> String {
        let mut rows = self.rows.clone();
        rows.sort_by_key(|r| r.peer.map_or(0, NodeId::get));
        let mut out = format!("# overheads: {}\n", self.source);
        out.push_str(&format!(
            "{:<8} {:>14} {:>14} {:>14}\n",
            COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3]
        ));
        for r in rows {
            let peer = r
                .peer
                .map_or_else(|| "default".to_owned(), |p| p.to_string());
            out.push_str(&format!(
                "{peer:<8} {:>14} {:>14} {:>14}\n",
                r.mig_fixed_us, r.mig_page_ns, r.call_rtt_us
            ));
        }
        out
    }

    /// Reads the file at `path`. A missing file gives the built-in defaults and no complaint;
    /// a file that cannot be read or parsed gives the built-in defaults and why, for the
    /// caller to log (a bad file never stops a node).
    pub fn load(path: &Path) -> (Overheads, Option<String>) {
        let (o, why) = load_with(path, Overheads::parse);
        (o.unwrap_or_else(Overheads::builtin), why)
    }

    /// Estimated cost of moving `pages` pages to `peer`, microseconds.
    pub fn migration_cost_us(&self, peer: NodeId, pages: u64) -> u64 {
        let o = self.towards(peer);
        o.mig_fixed_us
            .saturating_add(pages.saturating_mul(o.mig_page_ns) / 1000)
    }
}

/// A row of a cost table: its peer (`None`: the default row) and its numbers.
pub type CostRow = (Option<NodeId>, Vec<u64>);

/// Reads a cost table (overheads(5), mfscosts(5)): comments from `#`, blank lines skipped, a
/// header line naming `columns`, then rows of a peer (a node number or `default`) and whole
/// numbers, at most one row per peer. Returns each row's peer and numbers, or the first
/// problem with its line.
pub fn parse_rows(
    name: &str,
    text: &str,
    columns: &[&str],
) -> Result<Vec<CostRow>, OverheadsError> {
    let err = |line: usize, what: String| OverheadsError {
        file: name.to_owned(),
        line,
        what,
    };
    let mut header = false;
    let mut rows: Vec<CostRow> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let words: Vec<&str> = raw
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if words.is_empty() {
            continue;
        }
        if !header {
            if words != columns {
                return Err(err(
                    line,
                    format!(
                        "the first line must name the columns: {} (found: {})",
                        columns.join(" "),
                        words.join(" ")
                    ),
                ));
            }
            header = true;
            continue;
        }
        if words.len() != columns.len() {
            return Err(err(
                line,
                format!(
                    "{} columns, expected {} ({})",
                    words.len(),
                    columns.len(),
                    columns.join(" ")
                ),
            ));
        }
        let peer = if words[0] == "default" {
            None
        } else {
            let n = words[0]
                .parse::<u16>()
                .ok()
                .and_then(NodeId::new)
                .ok_or_else(|| {
                    err(
                        line,
                        format!(
                            "peer {:?} is neither a node number (1-65535) nor `default`",
                            words[0]
                        ),
                    )
                })?;
            Some(n)
        };
        let mut values = Vec::with_capacity(columns.len() - 1);
        for k in 1..columns.len() {
            values.push(words[k].parse::<u64>().map_err(|_| {
                err(
                    line,
                    format!("{} {:?} is not a whole number", columns[k], words[k]),
                )
            })?);
        }
        if rows.iter().any(|r| r.0 == peer) {
            return Err(err(line, format!("a second row for {}", words[0])));
        }
        rows.push((peer, values));
    }
    if !header {
        return Err(err(0, "empty: no header line, no rows".to_owned()));
    }
    Ok(rows)
}

/// Reads a cost file of at most [`MAX_BYTES`] with `parse`: a missing file gives `None` and no
/// complaint; one that cannot be read or parsed gives `None` and why.
pub fn load_with<T>(
    path: &Path,
    parse: impl FnOnce(&str, &str) -> Result<T, OverheadsError>,
) -> (Option<T>, Option<String>) {
    use std::io::Read;
    let name = path.display().to_string();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, None),
        Err(e) => return (None, Some(format!("{name}: {e}"))),
    };
    let mut text = String::new();
    if let Err(e) = file.take(MAX_BYTES + 1).read_to_string(&mut text) {
        return (None, Some(format!("{name}: {e}")));
    }
    if text.len() as u64 > MAX_BYTES {
        return (None, Some(format!("{name}: larger than {MAX_BYTES} bytes")));
    }
    match parse(&name, &text) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// The overheads(5) manual page (checked in as `man/overheads.5` by the mosctl tests).
#[cfg(feature = "docgen")]
pub fn man_page() -> String {
    use roff::{Roff, bold, italic, roman};
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "OVERHEADS",
            "5",
            "",
            &format!("mosix-rs {}", crate::VERSION),
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "overheads - what moving a process to each node costs, for the balancer",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        roman("$MOSIX_ETC/overheads (default "),
        bold("/etc/overheads"),
        roman(")"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "The node service reads this file when it starts and when its configuration is \
         replaced (setpe -W), and the balancer weighs the costs in it against the benefit of \
         every automatic move: a process moves only if its age times the difference in load \
         exceeds the cost of moving it, and rotation waits many times that cost. A move to node \
         N of a process with P resident pages is estimated at mig_fixed_us + P \u{d7} \
         mig_page_ns / 1000 microseconds. tune(1) measures the costs and writes the file, \
         keeping the rows of peers it did not measure, and has the service load it at once; \
         the file may also be written by hand. mosctl gettune prints the costs in use, in this \
         same format.",
    )]);
    r.control("SH", ["FORMAT"]);
    r.text([roman(
        "Line-oriented text. A \u{2018}#\u{2019} starts a comment that runs to the end of the \
         line; blank lines are ignored. The first line that is not blank names the columns, \
         separated by blanks:",
    )]);
    r.control("IP", []);
    r.text([bold(COLUMNS.join(" "))]);
    r.control("PP", []);
    r.text([roman("Every other line is a row of four columns:")]);
    for (name, what) in [
        (
            "peer",
            "the node the row is about (1-65535), or default for every node without a row of its own",
        ),
        (
            "mig_fixed_us",
            "the fixed part of a migration, microseconds: freezing, connecting, restoring",
        ),
        (
            "mig_page_ns",
            "the cost of each 4 KiB page moved, nanoseconds",
        ),
        (
            "call_rtt_us",
            "the round trip of a system call forwarded home from that node, microseconds",
        ),
    ] {
        r.control("TP", []);
        r.text([italic(name)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["ERRORS"]);
    r.text([roman(format!(
        "A file that cannot be read, or that has a wrong header, a row without four columns, a \
         peer that is not a node number nor default, a value that is not a whole number, or two \
         rows for one peer, is not used: the service logs the file, the line and the problem, \
         and uses its built-in defaults instead (the row \u{201c}default {} {} {}\u{201d}). A \
         node without the file uses them too. A wrong file never stops a node.",
        BUILTIN_DEFAULT.mig_fixed_us, BUILTIN_DEFAULT.mig_page_ns, BUILTIN_DEFAULT.call_rtt_us
    ))]);
    r.control("SH", ["EXAMPLE"]);
    r.control("nf", []);
    r.text([roman(
        Overheads {
            source: "measured by tune on node 1".to_owned(),
            rows: vec![
                BUILTIN_DEFAULT,
                Overhead {
                    peer: NodeId::new(2),
                    mig_fixed_us: 3_100,
                    mig_page_ns: 1_900,
                    call_rtt_us: 70,
                },
            ],
        }
        .to_text(),
    )]);
    r.control("fi", []);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("tune(1), mosctl(1), mosix.map(5)")]);
    r.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_file_with_comments_and_peers_is_read() {
        let text = "# measured by tune on node 1\n\
                    peer mig_fixed_us mig_page_ns call_rtt_us\n\
                    \n\
                    default 5000 4000 100   # for the others\n\
                    3\t1200\t900\t60\n";
        let o = Overheads::parse("/etc/overheads", text).unwrap();
        assert_eq!(o.source, "/etc/overheads");
        assert_eq!(o.rows.len(), 2);
        let n3 = NodeId::new(3).unwrap();
        assert_eq!(o.towards(n3).mig_page_ns, 900);
        assert_eq!(o.towards(NodeId::new(2).unwrap()), BUILTIN_DEFAULT);
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let bad = |text: &str| Overheads::parse("f", text).unwrap_err().to_string();
        let h = "peer mig_fixed_us mig_page_ns call_rtt_us\n";
        assert!(bad("").contains("f:0: empty"), "{}", bad(""));
        assert!(bad("default 1 2 3\n").starts_with("f:1: the first line must name"));
        assert!(bad(&format!("{h}default 1 2\n")).starts_with("f:2: 3 columns, expected 4"));
        assert!(bad(&format!("{h}0 1 2 3\n")).contains("f:2: peer \"0\" is neither"));
        assert!(bad(&format!("{h}node2 1 2 3\n")).contains("neither a node number"));
        assert!(bad(&format!("{h}2 1 -2 3\n")).contains("f:2: mig_page_ns \"-2\" is not a whole"));
        assert!(bad(&format!("{h}2 1 2 3\n# x\n2 4 5 6\n")).starts_with("f:4: a second row for 2"));
    }

    #[test]
    fn a_missing_file_is_the_defaults_and_a_bad_one_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("overheads");
        assert_eq!(Overheads::load(&path), (Overheads::builtin(), None));
        std::fs::write(&path, "nonsense\n").unwrap();
        let (o, why) = Overheads::load(&path);
        assert_eq!(o, Overheads::builtin());
        assert!(why.unwrap().contains(":1: the first line must name"));
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(
            peers in proptest::collection::btree_map(1u16..=65535, (any::<u32>(), any::<u32>(), any::<u32>()), 0..20),
            default in proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>())),
        ) {
            let row = |peer, (a, b, c): (u32, u32, u32)| Overhead {
                peer,
                mig_fixed_us: u64::from(a),
                mig_page_ns: u64::from(b),
                call_rtt_us: u64::from(c),
            };
            let mut rows: Vec<Overhead> = default.map(|d| row(None, d)).into_iter().collect();
            rows.extend(peers.into_iter().map(|(p, v)| row(NodeId::new(p), v)));
            let o = Overheads { source: "x".into(), rows };
            let back = Overheads::parse("x", &o.to_text()).unwrap();
            prop_assert_eq!(back, o);
        }
    }

    #[test]
    fn peer_rows_override_the_default() {
        let n = |x| NodeId::new(x).unwrap();
        let mut o = Overheads::builtin();
        o.rows.push(Overhead {
            peer: Some(n(3)),
            mig_fixed_us: 1,
            mig_page_ns: 1000,
            call_rtt_us: 1,
        });
        assert_eq!(o.migration_cost_us(n(3), 10), 11);
        assert_eq!(
            o.migration_cost_us(n(2), 1000),
            BUILTIN_DEFAULT.mig_fixed_us + 4000
        );
    }
}
