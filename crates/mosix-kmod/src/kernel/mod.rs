//! Talking to the kernel about one process: ptrace with the protocol in the types, system-call
//! injection, the seccomp filter and its listener, userfaultfd, and the stub a guest is rebuilt
//! in, and the agent that makes calls inside a deputy for its process. Nothing here knows about
//! nodes, links or the cluster.

pub mod abi;
pub mod again;
pub mod agent;
pub mod creds;
pub mod dirty;
pub mod inject;
pub mod ptrace;
pub mod seccomp;
pub mod stub;
pub mod tree;
pub mod uffd;
