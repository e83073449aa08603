//! Removing a cluster from whatever is left of it, with or without its record: every process in
//! its cgroups and network namespaces, then the cgroups, the namespaces, the mounts and the state
//! directory.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Cluster, cgroups, check_name, mounts, net, preflight, state_dir};

/// Removes everything of cluster `name`: processes, namespaces, cgroups, mounts, state. Works
/// from whatever is left, with or without the cluster record. Returns what it removed.
pub fn down(name: &str) -> Result<Vec<String>> {
    preflight()?;
    check_name(name)?;
    let mut done = Vec::new();
    let record = Cluster::load(name).ok();

    let bases = cgroups::find(name, record.as_ref());
    let netns = net::netns_of(name);

    // 1. Processes: everything in the node cgroups and in the namespaces, until none is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut killed = 0usize;
    loop {
        let mut pids: Vec<i32> = Vec::new();
        for b in &bases {
            cgroups::collect_procs(b, &mut pids);
        }
        for ns in &netns {
            pids.extend(net::pids(ns));
        }
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        pids.retain(|p| *p != me && *p > 1);
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        for p in &pids {
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                killed += 1;
            }
        }
        if Instant::now() > deadline {
            bail!("processes {pids:?} of cluster '{name}' do not die");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if killed > 0 {
        done.push(format!("killed {killed} processes"));
    }

    // 2. Cgroups, deepest first.
    for b in &bases {
        cgroups::remove(b)?;
        done.push(format!("removed cgroup {}", b.display()));
    }

    // 3. Namespaces.
    for ns in &netns {
        net::remove(ns)?;
        done.push(format!("removed network namespace {ns}"));
    }

    // 4. Mounts and state.
    let sd = state_dir(name);
    mounts::remove(&sd)?;
    if sd.exists() {
        fs::remove_dir_all(&sd).with_context(|| format!("removing {}", sd.display()))?;
        done.push(format!("removed {}", sd.display()));
    }
    let dd = crate::disk_dir(name);
    if dd.exists() {
        fs::remove_dir_all(&dd).with_context(|| format!("removing {}", dd.display()))?;
        done.push(format!("removed {}", dd.display()));
    }
    Ok(done)
}
