//! A virtual cluster: several MOSIX nodes on one machine.
//!
//! Each node is
//!
//! * a **network namespace** `NAME-nI` with one interface, `eth0`, at `BASE+I` (10.77.0.I by
//!   default), plugged into a bridge that lives in a namespace of its own (`NAME-sw`), so the
//!   machine's own network is never touched;
//! * a **cgroup** `mosix-vc.NAME/nodeI` (below the cgroup of the process that built the cluster,
//!   in the cpu, cpuacct and memory hierarchies on cgroup v1, in the unified hierarchy on v2) with
//!   a CPU quota (by default the machine's CPUs divided among the nodes) and a memory limit, which
//!   the node service measures as its node;
//! * its own **files**: `MOSIX_ETC` and `MOSIX_RUNDIR` under `/run/mosix-vc/NAME/nodeI/`, and
//!   optionally a **mount namespace** in which some directories (`/tmp` by default) are the node's
//!   private ones, kept alive by a bind mount of the namespace file;
//! * its own **node service**, started with `setpe -w` inside all of the above.
//!
//! Everything is found again by name, so `down` removes a cluster even after the tool that built
//! it crashed half-way: namespaces `NAME-*`, cgroups `mosix-vc.NAME`, the state directory, and
//! every process left in the node cgroups or namespaces.
//!
//! All of this needs root (namespaces, cgroups, mounts) and iproute2's `ip`. It is a tool for
//! trying and testing the system (the `vcluster` command and the cluster tests use it), not part
//! of the kernel side.
//!
//! The parts, one job each: `up` (what to build, [`Spec`], and building it in order), `record`
//! (the cluster's record, [`Cluster`], and where each node's things are), `net` (network
//! namespaces and the bridge), `cgroups` (the nodes' cgroups), `mounts` (mount namespaces with
//! private directories), `files` (a node's `MOSIX_ETC` and `MOSIX_RUNDIR`), `node` (running
//! programs inside a node, starting and stopping its service), `user` (running jobs as an
//! unprivileged user, with the suite's programs where that user can run them), `grid` (cutting
//! the nodes into several MOSIX clusters that are partners) and `down` (removing everything).

mod cgroups;
mod down;
mod files;
pub mod grid;
mod mounts;
mod net;
mod node;
mod record;
mod up;
mod user;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

pub use down::down;
pub use net::netns_of;
pub use record::{Cluster, NodeInfo};
pub use up::{Spec, up};
pub use user::{
    COPIES, USER_GID, USER_HOME, USER_PATH, USER_UID, UserTools, as_user, others_can_run,
};

/// Where cluster state directories live.
pub const STATE_ROOT: &str = "/run/mosix-vc";
/// The largest number of nodes (one /24).
pub const MAX_NODES: u16 = 250;

/// Cluster `name`'s state directory.
pub(crate) fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// Where clusters keep what must be on a disk (not the memory file system of /run): the
/// nodes' freeze areas.
pub const DISK_ROOT: &str = "/var/lib/mosix-vc";

/// Cluster `name`'s directory on disk.
pub(crate) fn disk_dir(name: &str) -> PathBuf {
    Path::new(DISK_ROOT).join(name)
}

/// Checks a cluster's name: it becomes part of namespace and cgroup names.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        bail!(
            "cluster name '{name}' must be 1-12 characters: lower-case letters, digits, '_', starting with a letter"
        )
    }
}

/// Checks that we can build clusters here: root, and `ip` present.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "a virtual cluster needs root (network namespaces, cgroups, mounts): run it with sudo"
        );
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("iproute2's 'ip' command is missing: install the iproute2 package"),
    }
}

/// The names of the clusters that exist (by state directory or namespaces).
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(STATE_ROOT)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if let Ok(rd) = fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(c) = n.strip_suffix("-sw") {
                names.push(c.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The tools directory: where the running program is (all tools of the suite are built side by
/// side).
pub fn tools_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("mvc").is_ok());
        assert!(check_name("t_1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("Bad").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("waytoolongname").is_err());
        assert!(check_name("1abc").is_err());
    }
}
