//! The kernel-side part of MOSIX on a stock kernel: everything that touches processes, cgroups,
//! namespaces and sockets.
//!
//! A stock kernel without loadable modules still has what MOSIX needs: ptrace and seccomp-BPF
//! with user notification to split a process into a remote and a deputy, `process_vm_readv`,
//! `pidfd_getfd` and userfaultfd to move it, namespaces and cgroups to build nodes. This crate
//! holds that machinery and the node service that drives it; the policies it applies live in
//! `mosix-core`.
//!
//! * [`service`] — the node service: dissemination over the authenticated link, the cluster
//!   view, the control socket.
//! * [`measure`] and [`cgroup`] — what a node is and how loaded it is.
//! * [`daemon`] — starting the service in the background and waiting until it serves.

pub mod cgroup;
pub mod channel;
pub mod daemon;
pub mod deputy;
pub mod dump;
pub mod forward;
pub mod inject;
pub mod iocache;
pub mod measure;
pub mod procs;
pub mod ptrace;
pub mod remote;
pub mod restore;
pub mod seccomp;
pub mod service;
pub mod stub;
pub mod uffd;
