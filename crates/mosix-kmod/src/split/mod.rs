//! A migrated process at run time: the home side that stands in for it (the [`deputy`]), the
//! side that runs it elsewhere (the [`remote`]), the forwarding of its system calls between them
//! ([`forward`], [`iocache`]) and the registry of which processes are MOSIX processes and where
//! they are ([`procs`]).

pub mod checkpoint;
pub mod deputy;
pub mod failure;
pub mod forward;
pub mod frozen;
pub mod handle;
pub mod iocache;
pub mod keeper;
pub mod live;
pub mod procs;
pub mod remote;
pub mod ship;
