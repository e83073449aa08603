//! The kernel-side part of MOSIX on a stock kernel: everything that touches processes, cgroups,
//! namespaces and sockets.
//!
//! A stock kernel without loadable modules still has what MOSIX needs: ptrace and seccomp-BPF
//! with user notification to split a process into a remote and a deputy, `process_vm_readv`,
//! `pidfd_getfd` and userfaultfd to move it, namespaces and cgroups to build nodes. This crate
//! holds that machinery and the node service that drives it; the policies it applies live in
//! `mosix-core`.
//!
//! The rooms, from the top down (a room imports only from rooms below it):
//!
//! * [`service`] — the node service: start-up, the main loop, gossip and the cluster view,
//!   control requests, move policy, balancing, the control socket.
//! * [`split`] — a migrated process at run time: the deputy at home, the remote elsewhere, the
//!   forwarding of calls between them, the registry of MOSIX processes and guests.
//! * [`mfs`] — the MOSIX File System: the mount where `/mfs/N/path` is node N's `/path`, and
//!   the owning side that runs other nodes' file requests with their callers' ids. Beside
//!   `split`: it uses `kernel` and `link` only.
//! * [`freezer`] — freezing a process into an image and rebuilding one.
//! * [`kernel`] — ptrace, system-call injection, seccomp, userfaultfd, the stub: talking to the
//!   kernel about one process.
//! * [`link`] — authenticated connections between node services; [`node`] — what a node is
//!   (measurement, cgroups) and its consent to arrivals. Both sit below `split` and `service`
//!   and import neither.
//!
//! The virtual cluster, a tool for trying and testing the system on one machine, is not part
//! of the kernel side: it lives in `bin/vcluster` (a library and the binary).

pub mod freezer;
pub mod kernel;
pub mod link;
pub mod mfs;
pub mod node;
pub mod service;
pub mod split;
