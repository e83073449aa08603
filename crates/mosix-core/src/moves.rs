//! How a move ends when it fails: the kinds of failure that `migrate`, the balancer and the
//! logs tell apart, carried on the control socket ([`crate::client::Response::MoveFailed`]) and
//! between nodes ([`crate::proto::ProcMsg::MoveFailed`]).

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// Why a move failed, in the kinds that `migrate`, the balancer and the logs tell apart.
///
/// What to do next differs by kind: a refusal names a reason a person can act on (the node is
/// blocked, the process is locked or has threads); a process that is gone needs nothing; a lost
/// link says which node is unreachable; a kernel error is a fault of this node's service that
/// belongs in its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MoveFailure {
    /// A node — this one, or the destination — would not move or take the process.
    #[error("refused: {}", Shown(reason))]
    Refused {
        /// Who refused (this node, when the move was refused before it started).
        by: NodeId,
        /// Why, in words a user can act on.
        reason: String,
    },
    /// The process does not exist (any more): it ended before or during the move.
    #[error("process {pid} is gone: {}", Shown(detail))]
    Gone {
        /// Its pid at home.
        pid: u32,
        /// What was seen.
        detail: String,
    },
    /// The connection to a node could not be opened, or broke during the move.
    #[error("link to node {node} lost: {}", Shown(detail))]
    LinkLost {
        /// The node.
        node: NodeId,
        /// What happened.
        detail: String,
    },
    /// The kernel refused an operation on the process (tracing, injection, restoring).
    #[error("kernel error: {}", Shown(detail))]
    Kernel {
        /// The operation and the error.
        detail: String,
    },
}

/// Text that came from another node, shown with its control characters escaped (`\n`,
/// `\u{1b}`), so that a failure stays one line of a log or a terminal whatever the peer wrote.
struct Shown<'a>(&'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl MoveFailure {
    /// The same failure with `note` added to what it says (where the process is now, say).
    pub fn noted(mut self, note: impl std::fmt::Display) -> MoveFailure {
        let text = match &mut self {
            MoveFailure::Refused { reason, .. } => reason,
            MoveFailure::Gone { detail, .. }
            | MoveFailure::LinkLost { detail, .. }
            | MoveFailure::Kernel { detail } => detail,
        };
        text.push_str(&format!("; {note}"));
        self
    }

    /// A one-word name of the kind, for logs and `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            MoveFailure::Refused { .. } => "refused",
            MoveFailure::Gone { .. } => "gone",
            MoveFailure::LinkLost { .. } => "link-lost",
            MoveFailure::Kernel { .. } => "kernel",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_peer_wrote_stays_on_one_line() {
        // Found by the `proc_msg` fuzz target: a reason with line breaks (or terminal escapes)
        // in a peer's Refused or MoveFailed came out verbatim in logs and in `migrate`'s message.
        let r = MoveFailure::Refused {
            by: NodeId::new(3).unwrap(),
            reason: "co\n\nWARN forged line\u{1b}[2J".into(),
        };
        assert_eq!(r.to_string(), "refused: co\\n\\nWARN forged line\\u{1b}[2J");
        let k = MoveFailure::Kernel {
            detail: "tab\there, ünïcödé kept".into(),
        };
        assert_eq!(k.to_string(), "kernel error: tab\\there, ünïcödé kept");
    }

    #[test]
    fn each_kind_says_what_it_is_and_keeps_its_note() {
        let n = NodeId::new(3).unwrap();
        let r = MoveFailure::Refused {
            by: n,
            reason: "node 3 is blocked".into(),
        }
        .noted("process 9 goes on here");
        assert_eq!(
            r.to_string(),
            "refused: node 3 is blocked; process 9 goes on here"
        );
        assert_eq!(r.kind(), "refused");
        let l = MoveFailure::LinkLost {
            node: n,
            detail: "reset".into(),
        };
        assert_eq!(l.to_string(), "link to node 3 lost: reset");
        assert_eq!(
            MoveFailure::Gone {
                pid: 9,
                detail: "it exited".into()
            }
            .to_string(),
            "process 9 is gone: it exited"
        );
        assert_eq!(
            MoveFailure::Kernel {
                detail: "ptrace: EPERM".into()
            }
            .kind(),
            "kernel"
        );
    }
}
