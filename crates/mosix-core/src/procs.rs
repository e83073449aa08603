//! One MOSIX process as the tools show it (`mps`, `mtop`, `mps -A`): what the control socket
//! answers and what one node tells another of its processes ([`crate::proto::Answer`]).

use serde::{Deserialize, Serialize};

/// One process as `mps` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRow {
    /// Its pid at home.
    pub pid: u32,
    /// Where it runs: 0 = here, N = node N.
    pub node: u16,
    /// For a guest: its home node.
    pub from: Option<u16>,
    /// Controlling terminal (the kernel's tty_nr; 0 = none).
    pub tty: i32,
    /// State letter.
    pub state: char,
    /// CPU time used, wherever, in ms (for a guest: here).
    pub cpu_ms: u64,
    /// How old `cpu_ms` is, ms: a process on another node reports its CPU time home about once
    /// a second; 0 for a process measured as the answer was made.
    pub cpu_age_ms: u64,
    /// Command line.
    pub command: String,
    /// Moves so far.
    pub nmigs: u32,
    /// No automatic migration.
    pub lock: bool,
    /// Why it cannot move, if it cannot.
    pub cantmove: Option<String>,
    /// Its pid on the node it runs on (remote), or at this node (guest).
    pub remote_pid: Option<u32>,
    /// Frozen at home (`migrate PID freeze`), and why; its state shows `F`.
    #[serde(default)]
    pub frozen: Option<String>,
    /// Its owner's uid at home (`None` for a guest, which runs here as an id of its own):
    /// what `mps -A` shows for a process of another node.
    #[serde(default)]
    pub uid: Option<u32>,
}

/// How far a move of one of this node's processes has come ([`crate::client::Request::Moving`]):
/// what `migrate --wait` shows on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveProgress {
    /// The node it goes to.
    pub to: u16,
    /// Sent while it runs (`migrate --live`): `sent` may pass `total`, rounds sending again
    /// what it wrote meanwhile.
    pub live: bool,
    /// Bytes of its memory sent so far.
    pub sent: u64,
    /// Bytes of its memory in the image (0 until the image is made).
    pub total: u64,
}
