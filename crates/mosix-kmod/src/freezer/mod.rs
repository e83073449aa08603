//! Freezing a process into an image ([`freeze`]) and rebuilding a process from one
//! ([`restore`]): the migration engine's two halves, built on [`crate::kernel`]. The image
//! travels on a process connection ([`crate::link::channel`]).

pub mod freeze;
pub mod pages;
pub mod restore;
