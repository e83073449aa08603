//! `vcluster demo`: a guided tour of a virtual cluster.
//!
//! It builds a 4-node cluster, waits until every node sees every other, loads one node with CPU
//! burners and watches another node learn of it, crashes a node's service and watches the others
//! mark it down and then up again when it restarts, and removes everything. Every wait is
//! bounded, the burners stop by themselves, and an interrupt (Ctrl-C) still removes the cluster.

use std::os::unix::process::CommandExt;
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mosix_core::NodeId;
use mosix_core::client::{Client, ClusterView};
use mosix_kmod::vcluster::{self, Cluster, Spec};

use crate::cli::Demo;

const NAME: &str = "demo";

struct Tour {
    cluster: Cluster,
    burners: Vec<Child>,
    keep: bool,
    stop: Arc<AtomicBool>,
    t0: Instant,
}

impl Drop for Tour {
    fn drop(&mut self) {
        stop_all(&mut self.burners);
        if self.keep && !self.stop.load(Ordering::Relaxed) {
            println!(
                "\nThe cluster is still running: try `vcluster exec 1 -- mon`; remove it with `vcluster down --name {NAME}`."
            );
        } else {
            match vcluster::down(NAME) {
                Ok(_) => println!(
                    "\n== Removed the cluster: no namespace, cgroup, mount or process is left."
                ),
                Err(e) => eprintln!("vcluster: removing the demo cluster: {e}"),
            }
        }
    }
}

impl Tour {
    fn say(&self, s: &str) {
        println!("\n[{:5.1}s] == {s}", self.t0.elapsed().as_secs_f64());
    }

    fn note(&self, s: &str) {
        println!("[{:5.1}s]    {s}", self.t0.elapsed().as_secs_f64());
    }

    fn view(&self, node: u16) -> Option<ClusterView> {
        Client::connect(&self.cluster.paths(node)).ok()?.view().ok()
    }

    /// Waits (at most `limit`) until `cond` holds for node `on`'s view.
    fn wait_for(
        &self,
        on: u16,
        limit: Duration,
        cond: impl Fn(&ClusterView) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            if self.view(on).is_some_and(|v| cond(&v)) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("gave up after {limit:?}")
    }

    fn show(&self, node: u16) -> Result<()> {
        let out = self
            .cluster
            .command(
                node,
                &self.cluster.tools.join("mon").into_os_string(),
                &["--once".into()],
            )?
            .output()?;
        println!("    --- mon --once, run on node {node} ---");
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            println!("    {l}");
        }
        Ok(())
    }
}

/// Kills each burner's whole process group (timeout and the shell it runs) and reaps it.
fn stop_all(burners: &mut Vec<Child>) {
    for b in burners.iter_mut() {
        if let Ok(pid) = i32::try_from(b.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = b.wait();
    }
    burners.clear();
}

fn id(n: u16) -> NodeId {
    NodeId::new(n).unwrap_or(NodeId::new(1).unwrap_or_else(|| unreachable!()))
}

/// Runs the demo.
pub fn run(d: &Demo) -> Result<ExitCode> {
    vcluster::preflight()?;
    if d.nodes < 4 {
        bail!("the demo needs at least 4 nodes");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    if vcluster::list().iter().any(|n| n == NAME) {
        println!("A previous demo cluster is still there; removing it first.");
        vcluster::down(NAME)?;
    }
    let t0 = Instant::now();
    println!(
        "MOSIX virtual cluster demo: {} nodes on this one machine.",
        d.nodes
    );
    println!(
        "Each node is a network namespace with its own address, cgroup (CPU quota, memory limit)"
    );
    println!("and node service; the services gossip their load to random peers, with no master.");
    let spec = Spec::new(NAME, d.nodes, vcluster::tools_dir());
    let cluster = vcluster::up(&spec)?;
    let tour = Tour {
        cluster,
        burners: Vec::new(),
        keep: d.keep,
        stop: Arc::clone(&stop),
        t0,
    };
    let n = tour.cluster.nodes;
    tour.say(&format!(
        "Built {n} nodes ({:.2} CPUs, {} MiB each) and started their services:",
        tour.cluster.cpus_per_node,
        tour.cluster.mem_per_node >> 20
    ));
    for i in 1..=n {
        let info = tour.cluster.node(i);
        tour.note(&format!(
            "node {i}: {} in {}, service pid {}",
            info.addr,
            info.netns,
            info.service_pid
                .map_or_else(|| "?".into(), |p| p.to_string())
        ));
    }

    tour.say("Waiting until every node sees every node up...");
    for i in 1..=n {
        let took = tour.wait_for(i, Duration::from_secs(20), |v| v.nodes.iter().all(|x| x.up))?;
        tour.note(&format!(
            "node {i} sees all {n} nodes up ({:.1} s)",
            took.as_secs_f64()
        ));
    }
    tour.show(1)?;

    let mut tour = tour;
    tour.say("Starting 2 CPU burners on node 2 (each stops by itself after 60 s)...");
    for _ in 0..2 {
        let child = tour
            .cluster
            .command(
                2,
                &"timeout".into(),
                &[
                    "60".into(),
                    "sh".into(),
                    "-c".into(),
                    "while :; do :; done".into(),
                ],
            )?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its own process group, so that stopping it stops the shell under timeout too.
            .process_group(0)
            .spawn()?;
        tour.burners.push(child);
    }
    let before = tour
        .view(n)
        .and_then(|v| v.get(id(2)).and_then(|x| x.figures).map(|f| f.load))
        .unwrap_or(0);
    tour.note(&format!("node {n} sees node 2's load at {before}"));
    let took = tour.wait_for(n, Duration::from_secs(20), |v| {
        v.get(id(2))
            .and_then(|x| x.figures)
            .is_some_and(|f| f.load >= before + 150)
    })?;
    let after = tour
        .view(n)
        .and_then(|v| v.get(id(2)).and_then(|x| x.figures).map(|f| f.load))
        .unwrap_or(0);
    tour.note(&format!(
        "{:.1} s later node {n} sees node 2's load at {after} (two busy processes on a {:.2}-CPU node)",
        took.as_secs_f64(),
        tour.cluster.cpus_per_node
    ));
    tour.show(n)?;
    stop_all(&mut tour.burners);

    tour.say("Crashing node 3's service (SIGKILL)...");
    tour.cluster.stop_node(3, true)?;
    let took = tour.wait_for(1, Duration::from_secs(30), |v| {
        v.get(id(3)).is_some_and(|x| !x.up)
    })?;
    tour.note(&format!(
        "node 1 marks node 3 down after {:.1} s (no news of it for {} s)",
        took.as_secs_f64(),
        tour.view(1).map_or(0, |v| v.dead_after_ms / 1000)
    ));
    tour.show(1)?;

    tour.say("Restarting node 3's service...");
    tour.cluster.start_node(3)?;
    let took = tour.wait_for(1, Duration::from_secs(30), |v| {
        v.get(id(3)).is_some_and(|x| x.up)
    })?;
    tour.note(&format!(
        "node 1 sees node 3 up again after {:.1} s",
        took.as_secs_f64()
    ));
    tour.show(1)?;
    println!(
        "\nNext steps of the project add process migration: mosrun, migrate, mps and the balancer."
    );
    Ok(ExitCode::SUCCESS)
}
