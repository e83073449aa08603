//! A node's files: its `MOSIX_ETC` (the cluster's map, the shared secret, and a `mosix.toml`
//! with the cluster's calibrated speed) and its `MOSIX_RUNDIR`, in the cluster's state directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};

use crate::Cluster;

/// The cluster map every node gets: nodes 1..N from node 1's address on.
pub(crate) fn cluster_map(c: &Cluster) -> String {
    format!(
        "# virtual cluster '{}': {} nodes on one machine\n1 {} {}\n",
        c.name,
        c.nodes,
        c.addr(1),
        c.nodes
    )
}

/// A fresh shared secret for the cluster's links (hex).
pub(crate) fn random_secret() -> String {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).unwrap_or_else(|_| {
        // Only before the kernel's entropy pool is ready at boot; fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b.iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (t >> (i % 16 * 8)) as u8);
    });
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes node I's files: `map`, `secret`, and a `mosix.toml` of the extra `tunables`.
pub(crate) fn write(c: &Cluster, tunables: &str, n: u16, map: &str, secret: &str) -> Result<()> {
    let paths = c.paths(n);
    let mosix_dir = paths.etc.join("mosix");
    fs::create_dir_all(&mosix_dir).with_context(|| mosix_dir.display().to_string())?;
    fs::create_dir_all(&paths.rundir).with_context(|| paths.rundir.display().to_string())?;
    fs::write(paths.map(), map).with_context(|| paths.map().display().to_string())?;
    let sp = paths.secret();
    fs::write(&sp, format!("{secret}\n")).with_context(|| sp.display().to_string())?;
    fs::set_permissions(&sp, fs::Permissions::from_mode(0o600))
        .with_context(|| sp.display().to_string())?;
    let tun = node_tunables(tunables, c.speed, n, &c.name)?;
    fs::write(paths.config(), tun).with_context(|| paths.config().display().to_string())?;
    Ok(())
}

/// The `mosix.toml` of a node: the user's extra tunables, with the cluster's calibrated speed
/// and the node's own freeze area on disk unless the user gave them.
fn node_tunables(extra: &str, speed: u32, n: u16, name: &str) -> Result<String> {
    let mut t: toml::Table = toml::from_str(extra).context("the extra tunables")?;
    let freeze = t
        .entry("freeze")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(freeze) = freeze {
        let dir = crate::disk_dir(name)
            .join(format!("node{n}"))
            .join("freeze");
        freeze
            .entry("dir")
            .or_insert_with(|| toml::Value::String(dir.display().to_string()));
    }
    let node = t
        .entry("node")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(node) = node {
        node.entry("speed")
            .or_insert_with(|| toml::Value::Integer(i64::from(speed)));
    }
    let body = toml::to_string(&t).context("writing mosix.toml")?;
    mosix_core::config::Tunables::parse("the extra tunables", &body)?;
    Ok(format!(
        "# written by vcluster for node {n} of '{name}'\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_tunables_add_the_speed_unless_given() {
        let t = node_tunables(
            "[gossip]\ninterval_ms = 500\n[node]\nsample_ms = 50\n",
            12_000,
            1,
            "t",
        )
        .unwrap();
        let parsed = mosix_core::config::Tunables::parse("t", &t).unwrap();
        assert_eq!(parsed.node.speed, Some(12_000));
        assert_eq!(parsed.node.sample_ms, 50);
        assert_eq!(parsed.gossip.interval_ms, 500);
        let t = node_tunables("[node]\nspeed = 7\n", 12_000, 1, "t").unwrap();
        assert_eq!(
            mosix_core::config::Tunables::parse("t", &t)
                .unwrap()
                .node
                .speed,
            Some(7)
        );
        assert!(node_tunables("[nope]\n", 1, 1, "t").is_err());
    }
}
