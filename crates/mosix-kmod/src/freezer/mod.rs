//! Freezing a process into an image ([`freeze`]) and rebuilding a process from one
//! ([`restore`]): the migration engine's two halves, built on [`crate::kernel`]. The image
//! travels on a process connection ([`crate::link::channel`]).

pub mod freeze;
pub mod pages;
pub mod restore;

/// A step of a move's page transfer (reading, sending, receiving or writing a run), or the
/// whole stop of a live move, that takes this long is logged with its parts: the process is
/// stopped meanwhile.
pub(crate) const SLOW_STEP: std::time::Duration = std::time::Duration::from_secs(1);
