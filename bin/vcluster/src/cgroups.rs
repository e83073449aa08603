//! The nodes' cgroups: `mosix-vc.NAME/nodeI`, with a CPU quota and a memory limit, in the cpu,
//! cpuacct and memory hierarchies of cgroup v1 below the cgroup of the process that built the
//! cluster, or below the root of the unified hierarchy on v2; and finding them again, with the
//! processes in them, to remove them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mosix_kmod::node::cgroup::{Cgroups, write_file};

use crate::Cluster;

/// Where the cluster's cgroups go: the cgroup version ("v1" or "v2") and the cluster's
/// directories (`mosix-vc.NAME`), one per hierarchy used.
pub(crate) fn plan(name: &str) -> Result<(&'static str, Vec<PathBuf>)> {
    let cg = Cgroups::discover().context("reading cgroups")?;
    bases(&cg, name)
}

/// The cgroup version and the cluster's directories, in the hierarchies of `cg`.
fn bases(cg: &Cgroups, name: &str) -> Result<(&'static str, Vec<PathBuf>)> {
    let dir_name = format!("mosix-vc.{name}");
    if let (Some(cpu), Some(mem)) = (cg.v1("cpu"), cg.v1("memory")) {
        let mut bases = Vec::new();
        for (h, ctrl) in [(cpu, "cpu"), (mem, "memory")]
            .into_iter()
            .chain(cg.v1("cpuacct").map(|h| (h, "cpuacct")))
        {
            let own = cg.own_path(Some(ctrl)).unwrap_or("/");
            let dir = Cgroups::dir(h, own)
                .with_context(|| format!("cannot place cgroups below {own} ({ctrl})"))?;
            let b = dir.join(&dir_name);
            if !bases.contains(&b) {
                bases.push(b);
            }
        }
        return Ok(("v1", bases));
    }
    if let Some(h) = cg.v2_with("cpu").filter(|_| cg.v2_with("memory").is_some()) {
        // The unified hierarchy forbids processes in a cgroup whose children have controllers,
        // so the cluster's cgroup hangs off the root, where that rule does not apply.
        return Ok(("v2", vec![h.mount_point.join(dir_name)]));
    }
    bail!("no cgroup hierarchy with the cpu and memory controllers is mounted")
}

/// Creates the cluster's cgroup directories (on v2 with the cpu and memory controllers enabled
/// for the nodes).
pub(crate) fn make_cluster(c: &Cluster) -> Result<()> {
    for b in &c.cgroup_bases {
        fs::create_dir_all(b).with_context(|| b.display().to_string())?;
        if c.cgroup_version == "v2" {
            write_file(&b.join("cgroup.subtree_control"), "+cpu +memory")
                .context("enabling cpu and memory controllers")?;
        }
    }
    Ok(())
}

/// Creates node I's cgroups with its CPU quota and memory limit.
pub(crate) fn make_node(c: &Cluster, n: u16) -> Result<()> {
    for d in c.node_cgroups(n) {
        fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
        let w = |file: &str, v: String| write_file(&d.join(file), &v);
        let period: u64 = 100_000;
        let quota = (c.cpus_per_node * period as f64).round() as u64;
        if c.cgroup_version == "v2" {
            w("cpu.max", format!("{quota} {period}")).with_context(|| format!("node {n}"))?;
            w("memory.max", c.mem_per_node.to_string()).with_context(|| format!("node {n}"))?;
        } else if d.join("cpu.cfs_quota_us").exists() {
            w("cpu.cfs_period_us", period.to_string()).with_context(|| format!("node {n}"))?;
            w("cpu.cfs_quota_us", quota.to_string()).with_context(|| format!("node {n}"))?;
        } else if d.join("memory.limit_in_bytes").exists() {
            w("memory.limit_in_bytes", c.mem_per_node.to_string())
                .with_context(|| format!("node {n}"))?;
        }
    }
    Ok(())
}

/// The cgroup directories of cluster `name` that exist: the recorded ones (if there is a
/// record), any `mosix-vc.NAME` below our own or the root cgroup, and the nodes' directories
/// in the hierarchy that names MOSIX processes.
pub(crate) fn find(name: &str, record: Option<&Cluster>) -> Vec<PathBuf> {
    // Recorded ones, and any mosix-vc.NAME below our own or the root cgroup.
    let mut bases: Vec<PathBuf> = record.map(|c| c.cgroup_bases.clone()).unwrap_or_default();
    if let Ok(cg) = Cgroups::discover() {
        let dir_name = format!("mosix-vc.{name}");
        for ctrl in ["cpu", "cpuacct", "memory"] {
            if let Some(h) = cg.v1(ctrl) {
                if let Some(d) = cg.own_path(Some(ctrl)).and_then(|p| Cgroups::dir(h, p)) {
                    bases.push(d.join(&dir_name));
                }
                bases.push(h.mount_point.join(&dir_name));
            }
        }
        if let Some(h) = cg.v2_with("cpu") {
            bases.push(h.mount_point.join(&dir_name));
        }
    }
    // The nodes' directories in the hierarchy that names MOSIX processes.
    let procs_prefix = format!(
        "{}_node",
        mosix_kmod::split::procs::dir_name(&crate::state_dir(name))
    );
    if let Ok(rd) = fs::read_dir(mosix_kmod::split::procs::MOUNT) {
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let is_node = f
                .strip_prefix(&procs_prefix)
                .and_then(|r| r.strip_suffix("_run"))
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if is_node {
                bases.push(e.path());
            }
        }
    }
    bases.sort();
    bases.dedup();
    bases.retain(|b| b.is_dir());
    bases
}

/// Removes cgroup directory `b` and everything below it, deepest first (waiting a little while
/// the kernel still counts a process that just died).
pub(crate) fn remove(b: &Path) -> Result<()> {
    let mut dirs = Vec::new();
    collect_dirs(b, &mut dirs);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("removing cgroup {}", d.display()));
                }
            }
        }
    }
    Ok(())
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_owned());
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Adds the processes in cgroup `d` and below it to `out`.
pub(crate) fn collect_procs(d: &Path, out: &mut Vec<i32>) {
    let mut dirs = Vec::new();
    collect_dirs(d, &mut dirs);
    for d in dirs {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
}
