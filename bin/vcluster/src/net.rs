//! Network namespaces and the bridge. Node I's namespace `NAME-nI` has one interface, `eth0`, at
//! `BASE+I`: one end of a veth pair whose other end (`pI`) is plugged into the bridge `br0`, which
//! lives in a namespace of its own (`NAME-sw`), so the machine's own network is never touched.

use std::fs;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::Cluster;

fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if out.status.success() {
        Ok(())
    } else {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// Node I's network namespace.
pub(crate) fn netns_name(cluster: &str, node: u16) -> String {
    format!("{cluster}-n{node}")
}

/// The namespace of the cluster's bridge.
pub(crate) fn switch_name(cluster: &str) -> String {
    format!("{cluster}-sw")
}

/// Creates the switch: a bridge in a namespace of its own.
pub(crate) fn make_switch(c: &Cluster) -> Result<()> {
    let sw = switch_name(&c.name);
    run_ip(&["netns", "add", &sw])?;
    run_ip(&["-n", &sw, "link", "set", "lo", "up"])?;
    run_ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
    run_ip(&["-n", &sw, "link", "set", "br0", "up"])?;
    Ok(())
}

/// Creates node I's namespace and plugs it into the switch at its address.
pub(crate) fn plug_node(c: &Cluster, n: u16) -> Result<()> {
    let ns = netns_name(&c.name, n);
    let sw = switch_name(&c.name);
    run_ip(&["netns", "add", &ns])?;
    let port = format!("p{n}");
    run_ip(&[
        "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    run_ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
    run_ip(&["-n", &sw, "link", "set", &port, "up"])?;
    let addr = format!("{}/24", c.addr(n));
    run_ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
    run_ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    run_ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes network namespace `ns`.
pub(crate) fn remove(ns: &str) -> Result<()> {
    run_ip(&["netns", "del", ns])
}

/// The processes in network namespace `ns`.
pub(crate) fn pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The network namespaces of cluster `name` (`NAME-*`), sorted.
pub fn netns_of(name: &str) -> Vec<String> {
    let prefix = format!("{name}-");
    let mut v: Vec<String> = fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
