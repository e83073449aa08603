//! The record of a built cluster (`cluster.toml` in its state directory), and where each node's
//! things are: its address, files, cgroups and mount namespace.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use mosix_core::config::Paths;
use serde::{Deserialize, Serialize};

use crate::{check_name, net, node, state_dir};

/// A built cluster, as recorded in its state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// How many nodes.
    pub nodes: u16,
    /// Node I is at `base + I`.
    pub base: Ipv4Addr,
    /// CPU quota per node.
    pub cpus_per_node: f64,
    /// Memory limit per node.
    pub mem_per_node: u64,
    /// The per-CPU speed every node was configured with.
    pub speed: u32,
    /// Private directories.
    pub private_dirs: Vec<PathBuf>,
    /// "v1" or "v2".
    pub cgroup_version: String,
    /// The cluster's cgroup directories (`mosix-vc.NAME`), one per hierarchy used.
    pub cgroup_bases: Vec<PathBuf>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Where the tools are.
    pub tools: PathBuf,
    /// The MOSIX clusters the nodes are cut into (empty: one cluster of all the nodes).
    #[serde(default)]
    pub grid: Vec<crate::grid::Part>,
}

/// The files and names of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node number.
    pub node: u16,
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// Its `MOSIX_ETC`.
    pub etc: PathBuf,
    /// Its `MOSIX_RUNDIR`.
    pub rundir: PathBuf,
    /// Its cgroup directories.
    pub cgroups: Vec<PathBuf>,
    /// Its mount namespace file, if it has private directories.
    pub mntns: Option<PathBuf>,
    /// The pid of its node service, if one answers.
    pub service_pid: Option<u32>,
}

impl Cluster {
    /// Reads a cluster's record.
    pub fn load(name: &str) -> Result<Cluster> {
        check_name(name)?;
        let path = state_dir(name).join("cluster.toml");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("there is no virtual cluster '{name}' (start one with: vcluster up)")
            }
            Err(e) => return Err(e).with_context(|| path.display().to_string()),
        };
        toml::from_str(&text).with_context(|| path.display().to_string())
    }

    /// Writes the record.
    pub(crate) fn save(&self) -> Result<()> {
        let path = self.state_dir.join("cluster.toml");
        let text = toml::to_string(self).context("serialising the cluster record")?;
        fs::write(&path, text).with_context(|| path.display().to_string())
    }

    /// Node I's address.
    pub fn addr(&self, node: u16) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + u32::from(node))
    }

    /// Node I's directory in the state directory.
    pub(crate) fn node_dir(&self, node: u16) -> PathBuf {
        self.state_dir.join(format!("node{node}"))
    }

    /// Node I's files.
    pub fn paths(&self, node: u16) -> Paths {
        Paths {
            etc: self.node_dir(node).join("etc"),
            rundir: self.node_dir(node).join("run"),
        }
    }

    /// Node I's cgroup directories, one per hierarchy used.
    pub(crate) fn node_cgroups(&self, node: u16) -> Vec<PathBuf> {
        self.cgroup_bases
            .iter()
            .map(|b| b.join(format!("node{node}")))
            .collect()
    }

    /// Node I's mount namespace file. Every node has a mount namespace of its own: its MFS
    /// mount (`/mfs`) is its own, and so are its private directories if it has any.
    pub(crate) fn mntns_file(&self, node: u16) -> Option<PathBuf> {
        Some(self.state_dir.join("ns").join(format!("node{node}.mnt")))
    }

    /// Everything about node I.
    pub fn node(&self, node: u16) -> NodeInfo {
        let paths = self.paths(node);
        NodeInfo {
            node,
            addr: self.addr(node),
            netns: net::netns_name(&self.name, node),
            service_pid: node::service_pid(&paths),
            etc: paths.etc,
            rundir: paths.rundir,
            cgroups: self.node_cgroups(node),
            mntns: self.mntns_file(node),
        }
    }

    /// The MOSIX cluster of the grid node I is in (`None` when the nodes are one cluster).
    pub fn part_of(&self, node: u16) -> Option<&crate::grid::Part> {
        self.grid.iter().find(|p| p.has(node))
    }

    /// Fails unless the cluster has node I.
    pub(crate) fn check_node(&self, node: u16) -> Result<()> {
        if node == 0 || node > self.nodes {
            bail!(
                "cluster '{}' has nodes 1..{}, not {node}",
                self.name,
                self.nodes
            );
        }
        Ok(())
    }
}
