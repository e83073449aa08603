//! The MOSIX cluster brain and its formats, free of any process surgery.
//!
//! This crate holds everything about MOSIX that is a format or an algorithm: the cluster map
//! ([`map`]), the tunables and the secret ([`config`]), the link protocol and its frame codec
//! ([`proto`]), the randomized information dissemination ([`gossip`]) with its closed-form ages
//! ([`ages`]) and its simulator ([`sim`]), load units and smoothing ([`load`], [`node`]), the
//! split of system calls between a migrated process and its home ([`syscalls`]), the image of a
//! process in flight ([`image`]) and how a move fails ([`moves`]), the
//! CPU yardstick ([`yardstick`]), the cost table ([`overheads`]), and the local API the tools
//! use to talk to the node service ([`client`], [`cli`]).
//!
//! It never uses `unsafe`, never ptraces, forks or touches namespaces (that is `mosix-kmod`),
//! and its algorithms never read a clock or a socket: time, randomness and received messages
//! are arguments, decisions and messages are results. The node service, the unit tests and the
//! simulator therefore run the very same code.
#![forbid(unsafe_code)]

pub mod ages;
pub mod balance;
mod bounded;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod config;
pub mod freezing;
pub mod gossip;
pub mod grid;
pub mod image;
pub mod load;
pub mod map;
pub mod metrics;
pub mod mfscosts;
pub mod moves;
pub mod node;
pub mod overheads;
pub mod procs;
pub mod proto;
pub mod queue;
pub mod sim;
pub mod syscalls;
pub mod yardstick;

pub use node::{Flag, NodeId, Status};

/// The suite's version, as every tool reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
