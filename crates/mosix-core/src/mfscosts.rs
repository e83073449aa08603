//! What file access costs from this node to each peer's files (`/etc/mfscosts`, written by
//! `mtune`; its format is mfscosts(5), rendered by [`man_page`]): per call and per KiB, through
//! MFS from here, and directly on the peer (DFSA) once a process runs there.
//!
//! The balancer reads from it how much of a process's time waiting for a peer's files a move
//! to that peer would save ([`MfsCosts::saving_permille`]): a process that waits on node N's
//! files moves there only if DFSA there is enough cheaper than MFS from here.

use serde::{Deserialize, Serialize};

use crate::node::NodeId;
use crate::overheads::{OverheadsError, load_with, parse_rows};

/// The columns of the header line, in order.
pub const COLUMNS: [&str; 5] = [
    "peer",
    "mfs_call_us",
    "mfs_kib_us",
    "dfsa_call_us",
    "dfsa_kib_us",
];

/// Costs of reaching one peer's files (or the default for every peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfsCost {
    /// The peer, or `None` for the default row.
    pub peer: Option<NodeId>,
    /// A small file call (a `stat`) through MFS from here, microseconds.
    pub mfs_call_us: u64,
    /// Each KiB read through MFS from here, microseconds.
    pub mfs_kib_us: u64,
    /// The same call on the peer by a process that runs there (a local call and the
    /// notification that lets it through), microseconds.
    pub dfsa_call_us: u64,
    /// Each KiB read there, microseconds.
    pub dfsa_kib_us: u64,
}

/// The built-in default row, until `mtune` measures the peers (the order of magnitude measured
/// on the development machine: an MFS call is a link round trip and two FUSE crossings).
pub const BUILTIN_DEFAULT: MfsCost = MfsCost {
    peer: None,
    mfs_call_us: 250,
    mfs_kib_us: 2,
    dfsa_call_us: 20,
    dfsa_kib_us: 1,
};

/// The file costs in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfsCosts {
    /// Where they come from: "built-in defaults" or the file.
    pub source: String,
    /// The rows; the default row has `peer: None`.
    pub rows: Vec<MfsCost>,
}

impl Default for MfsCosts {
    fn default() -> Self {
        MfsCosts::builtin()
    }
}

impl MfsCosts {
    /// The built-in defaults.
    pub fn builtin() -> MfsCosts {
        MfsCosts {
            source: "built-in defaults (no mfscosts file measured by mtune)".to_owned(),
            rows: vec![BUILTIN_DEFAULT],
        }
    }

    /// The costs towards `peer`: its own row, or the default row.
    pub fn towards(&self, peer: NodeId) -> MfsCost {
        self.rows
            .iter()
            .find(|r| r.peer == Some(peer))
            .or_else(|| self.rows.iter().find(|r| r.peer.is_none()))
            .copied()
            .unwrap_or(BUILTIN_DEFAULT)
    }

    /// The part of the time a process waits for `peer`'s files through MFS that running on
    /// `peer` would save, per-mille: `1 - dfsa_call_us / mfs_call_us` (0 when DFSA there is no
    /// cheaper).
    pub fn saving_permille(&self, peer: NodeId) -> u32 {
        let c = self.towards(peer);
        if c.mfs_call_us == 0 || c.dfsa_call_us >= c.mfs_call_us {
            return 0;
        }
        u32::try_from(1000 - c.dfsa_call_us * 1000 / c.mfs_call_us).unwrap_or(0)
    }

    /// Reads mfscosts(5) text; `name` names the file in errors and becomes the source.
    pub fn parse(name: &str, text: &str) -> Result<MfsCosts, OverheadsError> {
        let rows = parse_rows(name, text, &COLUMNS)?
            .into_iter()
            .map(|(peer, v)| MfsCost {
                peer,
                mfs_call_us: v[0],
                mfs_kib_us: v[1],
                dfsa_call_us: v[2],
                dfsa_kib_us: v[3],
            })
            .collect();
        Ok(MfsCosts {
            source: name.to_owned(),
            rows,
        })
    }

    /// The mfscosts(5) text: a comment with the source, the header, the default row first, then
    /// the peers in node order.
    pub fn to_text(&self) -> String {
        let mut rows = self.rows.clone();
        rows.sort_by_key(|r| r.peer.map_or(0, NodeId::get));
        let mut out = format!("# mfscosts: {}\n", self.source);
        out.push_str(&format!(
            "{:<8} {:>12} {:>12} {:>12} {:>12}\n",
            COLUMNS[0], COLUMNS[1], COLUMNS[2], COLUMNS[3], COLUMNS[4]
        ));
        for r in rows {
            let peer = r
                .peer
                .map_or_else(|| "default".to_owned(), |p| p.to_string());
            out.push_str(&format!(
                "{peer:<8} {:>12} {:>12} {:>12} {:>12}\n",
                r.mfs_call_us, r.mfs_kib_us, r.dfsa_call_us, r.dfsa_kib_us
            ));
        }
        out
    }

    /// Reads the file at `path`: a missing file gives the built-in defaults and no complaint; a
    /// file that cannot be read or parsed gives the built-in defaults and why, for the caller
    /// to log (a bad file never stops a node).
    pub fn load(path: &std::path::Path) -> (MfsCosts, Option<String>) {
        let (c, why) = load_with(path, MfsCosts::parse);
        (c.unwrap_or_else(MfsCosts::builtin), why)
    }
}

/// The mfscosts(5) manual page (checked in as `man/mfscosts.5` by the mtune tests).
#[cfg(feature = "docgen")]
pub fn man_page() -> String {
    use roff::{Roff, bold, italic, roman};
    let mut r = Roff::new();
    r.control(
        "TH",
        ["MFSCOSTS", "5", "", &format!("mosix-rs {}", crate::VERSION)],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "mfscosts - what reaching each node's files costs, for bringing processes to their data",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        roman("$MOSIX_ETC/mfscosts (default "),
        bold("/etc/mfscosts"),
        roman(")"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "The node service reads this file when it starts, when its configuration is replaced \
         (setpe -W) and when mtune(1) has written it. A process that spends a good part of its \
         time waiting for the files of node N through MFS (/mfs/N/...) moves to N if running \
         there saves enough of that time: the part saved is 1 - dfsa_call_us / mfs_call_us of \
         N's row. A row whose DFSA cost is not below its MFS cost keeps processes where they \
         are. mtune(1) measures the costs and writes the file, keeping the rows of peers it did \
         not measure; the file may also be written by hand. mosctl gettune prints the costs in \
         use, in this same format.",
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
    r.text([roman("Every other line is a row of five columns:")]);
    for (name, what) in [
        (
            "peer",
            "the node whose files the row is about (1-65535), or default for every node without a row of its own",
        ),
        (
            "mfs_call_us",
            "a small call on one of its files (stat) through MFS from this node, microseconds",
        ),
        (
            "mfs_kib_us",
            "each KiB read from one of its files through MFS from this node, microseconds: mtune(1) times reads of 64 B, 256 B, 1 KiB, 4 KiB and 16 KiB and gives the slope of the straight line through them, so a read of B bytes costs about mfs_call_us + mfs_kib_us * B / 1024",
        ),
        (
            "dfsa_call_us",
            "the same call made on that node by a migrated process (directly, DFSA), microseconds",
        ),
        ("dfsa_kib_us", "each KiB read there directly, microseconds"),
    ] {
        r.control("TP", []);
        r.text([italic(name)]);
        r.text([roman(what)]);
    }
    r.control("SH", ["ERRORS"]);
    r.text([roman(format!(
        "A file that cannot be read, or that has a wrong header, a row without five columns, a \
         peer that is not a node number nor default, a value that is not a whole number, or two \
         rows for one peer, is not used: the service logs the file, the line and the problem, \
         and uses its built-in defaults instead (the row \u{201c}default {} {} {} {}\u{201d}). \
         mtune refuses to keep rows of a wrong file, naming the file and the line. A wrong file \
         never stops a node.",
        BUILTIN_DEFAULT.mfs_call_us,
        BUILTIN_DEFAULT.mfs_kib_us,
        BUILTIN_DEFAULT.dfsa_call_us,
        BUILTIN_DEFAULT.dfsa_kib_us
    ))]);
    r.control("SH", ["EXAMPLE"]);
    r.control("nf", []);
    r.text([roman(
        MfsCosts {
            source: "measured by mtune on node 1".to_owned(),
            rows: vec![
                BUILTIN_DEFAULT,
                MfsCost {
                    peer: NodeId::new(3),
                    mfs_call_us: 180,
                    mfs_kib_us: 3,
                    dfsa_call_us: 9,
                    dfsa_kib_us: 1,
                },
            ],
        }
        .to_text(),
    )]);
    r.control("fi", []);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("mtune(1), mosctl(1), overheads(5)")]);
    r.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_text_reads_back_and_errors_name_the_line() {
        let c = MfsCosts {
            source: "test".into(),
            rows: vec![
                BUILTIN_DEFAULT,
                MfsCost {
                    peer: NodeId::new(3),
                    mfs_call_us: 200,
                    mfs_kib_us: 3,
                    dfsa_call_us: 10,
                    dfsa_kib_us: 1,
                },
            ],
        };
        let back = MfsCosts::parse("t", &c.to_text()).unwrap();
        assert_eq!(back.rows, c.rows);
        assert_eq!(back.saving_permille(NodeId::new(3).unwrap()), 950);
        let e = MfsCosts::parse(
            "/etc/mfscosts",
            "peer mfs_call_us mfs_kib_us dfsa_call_us dfsa_kib_us\n\n3 200 x 10 1\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "/etc/mfscosts:3: mfs_kib_us \"x\" is not a whole number");
        let e = MfsCosts::parse("f", "peer mig_fixed_us\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("f:1: the first line must name the columns"),
            "{e}"
        );
    }

    #[test]
    fn no_saving_where_dfsa_is_not_cheaper() {
        let c = MfsCosts {
            source: "t".into(),
            rows: vec![MfsCost {
                peer: None,
                mfs_call_us: 50,
                mfs_kib_us: 1,
                dfsa_call_us: 50,
                dfsa_kib_us: 1,
            }],
        };
        assert_eq!(c.saving_permille(NodeId::new(2).unwrap()), 0);
        assert!(MfsCosts::builtin().saving_permille(NodeId::new(2).unwrap()) > 900);
    }
}
