//! Turning what went wrong during a move into a [`MoveFailure`] of the right kind: a process
//! that died under us is *gone* (not a kernel error), a connection that could not be made or
//! broke is a *lost link* to that node, a refusal keeps its reason, and anything else the kernel
//! said is a *kernel error* naming the operation.

use std::fmt::Display;

use mosix_core::NodeId;
use mosix_core::moves::MoveFailure;

use crate::freezer::pages::PagesError;
use crate::kernel::ptrace;

/// What a ptrace-level error during `what` means for a move of process `pid`.
pub fn traced(pid: i32, what: &str, e: &ptrace::Error) -> MoveFailure {
    match e {
        ptrace::Error::Died(_) | ptrace::Error::Exited { .. } | ptrace::Error::Killed { .. } => {
            MoveFailure::Gone {
                pid: pid.unsigned_abs(),
                detail: e.to_string(),
            }
        }
        _ => MoveFailure::Kernel {
            detail: format!("{what}: {e}"),
        },
    }
}

/// The link to `node` could not be opened, or broke.
pub fn link_lost(node: NodeId, detail: impl Display) -> MoveFailure {
    MoveFailure::LinkLost {
        node,
        detail: detail.to_string(),
    }
}

/// `by` refused the move.
pub fn refused(by: NodeId, reason: impl Into<String>) -> MoveFailure {
    MoveFailure::Refused {
        by,
        reason: reason.into(),
    }
}

/// Why the pages of an image sent by node `from` did not all arrive at node `me`.
pub fn pages(me: NodeId, from: NodeId, e: PagesError) -> MoveFailure {
    match e {
        PagesError::Link(e) => link_lost(from, format!("receiving the image: {e}")),
        PagesError::Malformed(what) => refused(me, format!("the image is malformed: {what}")),
        PagesError::Write(_) | PagesError::Writer(_) => kernel(format!("node {me}: {e}")),
    }
}

/// A kernel error outside ptrace (a thread that could not start, a descriptor).
pub fn kernel(detail: impl Display) -> MoveFailure {
    MoveFailure::Kernel {
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_that_died_under_us_is_gone_not_a_kernel_error() {
        let gone = traced(7, "freezing", &ptrace::Error::Died(7));
        assert_eq!(gone.kind(), "gone");
        let exited = traced(7, "freezing", &ptrace::Error::Exited { pid: 7, status: 0 });
        assert_eq!(exited.kind(), "gone");
        let k = traced(
            7,
            "seizing",
            &ptrace::Error::Os {
                what: "PTRACE_SEIZE",
                pid: 7,
                errno: nix::errno::Errno::EPERM,
            },
        );
        assert_eq!(k.kind(), "kernel");
        assert!(k.to_string().contains("seizing"), "{k}");
    }
}
