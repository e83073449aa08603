//! Building a cluster: what to build ([`Spec`]), checking it, recording the plan, building the
//! switch, the cgroups, the mounts and the nodes in order, and starting the node services. If
//! anything fails half-way, `down` removes what was built.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{
    Cluster, MAX_NODES, STATE_ROOT, cgroups, check_name, down, files, mounts, net, preflight,
    state_dir,
};

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The cluster's name (namespaces are `NAME-nI`).
    pub name: String,
    /// How many nodes.
    pub nodes: u16,
    /// Node I gets `base + I`.
    pub base: Ipv4Addr,
    /// CPUs per node (the quota); default: the machine's CPUs divided among the nodes.
    pub cpus_per_node: Option<f64>,
    /// Memory per node in bytes; default: the machine's memory divided among the nodes + 1.
    pub mem_per_node: Option<u64>,
    /// Directories private to each node (a mount namespace per node); empty: none.
    pub private_dirs: Vec<PathBuf>,
    /// Extra `mosix.toml` text for every node (e.g. a shorter gossip interval).
    pub tunables: String,
    /// Where the suite's tools are (setpe is started from here).
    pub tools: PathBuf,
    /// Start the node services (otherwise only the nodes are built).
    pub start_services: bool,
    /// Cut the nodes into several MOSIX clusters, partners of each other (their sizes must
    /// add up to `nodes`); empty: one cluster.
    pub grid: Vec<crate::grid::Part>,
}

impl Spec {
    /// The defaults for `nodes` nodes named `name`.
    pub fn new(name: &str, nodes: u16, tools: PathBuf) -> Spec {
        Spec {
            name: name.to_owned(),
            nodes,
            base: Ipv4Addr::new(10, 77, 0, 0),
            cpus_per_node: None,
            mem_per_node: None,
            private_dirs: Vec::new(),
            tunables: String::new(),
            tools,
            start_services: true,
            grid: Vec::new(),
        }
    }
}

fn machine_cpus() -> u32 {
    use procfs::CurrentSI;
    procfs::KernelStats::current()
        .map(|k| u32::try_from(k.cpu_time.len()).unwrap_or(1))
        .unwrap_or(1)
        .max(1)
}

fn machine_mem() -> u64 {
    use procfs::Current;
    procfs::Meminfo::current().map_or(1 << 30, |m| m.mem_total)
}

/// Builds a cluster and (unless told otherwise) starts its node services.
pub fn up(spec: &Spec) -> Result<Cluster> {
    preflight()?;
    check_name(&spec.name)?;
    if spec.nodes == 0 || spec.nodes > MAX_NODES {
        bail!(
            "a virtual cluster has 1..{MAX_NODES} nodes, not {}",
            spec.nodes
        );
    }
    let sd = state_dir(&spec.name);
    if sd.join("cluster.toml").exists()
        || Path::new("/run/netns")
            .join(net::switch_name(&spec.name))
            .exists()
    {
        bail!(
            "virtual cluster '{}' already exists; remove it first with: vcluster down --name {}",
            spec.name,
            spec.name
        );
    }
    if !spec.tools.join("setpe").exists() && spec.start_services {
        bail!(
            "setpe is not in {}; build the suite first (cargo build --release --workspace)",
            spec.tools.display()
        );
    }
    let cpus = spec
        .cpus_per_node
        .unwrap_or_else(|| f64::from(machine_cpus()) / f64::from(spec.nodes));
    if !(0.01..=1024.0).contains(&cpus) {
        bail!("{cpus} CPUs per node is out of range 0.01..1024");
    }
    let mem = spec
        .mem_per_node
        .unwrap_or_else(|| machine_mem() / (u64::from(spec.nodes) + 1));
    if mem < (32 << 20) {
        bail!("a node needs at least 32 MiB of memory");
    }
    // The kernel keeps limits in whole pages; record what it will report.
    let mem = mem & !4095;
    let last = u32::from(spec.base) + u32::from(spec.nodes);
    if spec.base.octets()[3] != 0 || last & 0xff == 0xff {
        bail!(
            "the base address {} must end in .0 (node I gets .I)",
            spec.base
        );
    }
    for d in &spec.private_dirs {
        if !d.is_absolute() || !d.is_dir() {
            bail!(
                "private directory {} must be an existing absolute path",
                d.display()
            );
        }
        // Inside a node, a private directory hides what the machine has there.
        for (what, p) in [
            ("the tools", spec.tools.as_path()),
            ("the cluster state", Path::new(STATE_ROOT)),
        ] {
            if p.starts_with(d) {
                bail!(
                    "{what} ({}) would be hidden inside the nodes by the private directory {}; choose other private directories or put the tools elsewhere",
                    p.display(),
                    d.display()
                );
            }
        }
    }
    if !spec.grid.is_empty() {
        let total: u32 = spec.grid.iter().map(|p| u32::from(p.count)).sum();
        if total != u32::from(spec.nodes) {
            bail!(
                "the grid's clusters have {total} nodes in all, the virtual cluster {}",
                spec.nodes
            );
        }
        if spec.tunables.contains("[grid]") {
            bail!("a grid names its clusters itself: leave [grid] out of the extra tunables");
        }
    }
    mosix_core::config::Tunables::parse("--tunables", &spec.tunables)
        .context("the extra tunables are not valid mosix.toml")?;
    fs::create_dir_all(&sd).with_context(|| sd.display().to_string())?;

    let (version, bases) = cgroups::plan(&spec.name)?;
    let cluster = Cluster {
        name: spec.name.clone(),
        nodes: spec.nodes,
        base: spec.base,
        cpus_per_node: cpus,
        mem_per_node: mem,
        speed: mosix_kmod::node::measure::calibrate_speed(),
        private_dirs: spec.private_dirs.clone(),
        cgroup_version: version.to_owned(),
        cgroup_bases: bases,
        state_dir: sd.clone(),
        tools: spec.tools.clone(),
        grid: spec.grid.clone(),
    };
    // Record the plan first: if anything below fails, `down` finds everything from here.
    cluster.save()?;
    let built = build(&cluster, spec);
    if let Err(e) = built {
        let _ = down(&spec.name);
        return Err(e);
    }
    if spec.start_services {
        for n in 1..=spec.nodes {
            if let Err(e) = cluster.start_node(n) {
                let _ = down(&spec.name);
                return Err(e);
            }
        }
    }
    Ok(cluster)
}

/// Builds what `c` records: the switch, the cgroups, the mounts, then each node.
fn build(c: &Cluster, spec: &Spec) -> Result<()> {
    net::make_switch(c)?;
    cgroups::make_cluster(c)?;
    mounts::prepare(c)?;
    let secret = files::random_secret();
    let map = files::cluster_map(c);
    let secrets = crate::grid::Secrets::new(&c.grid);
    for n in 1..=c.nodes {
        net::plug_node(c, n)?;
        cgroups::make_node(c, n)?;
        match c.part_of(n) {
            None => files::write(c, &spec.tunables, n, &map, &secret)?,
            Some(part) => {
                let tunables = format!("{}\n[grid]\nname = \"{}\"\n", spec.tunables, part.name);
                let map = crate::grid::part_map(c, part);
                files::write(c, &tunables, n, &map, secrets.own(&part.name))?;
                crate::grid::write_partners(c, part, &secrets, n)?;
            }
        }
        mounts::make_node(c, n)?;
    }
    Ok(())
}
