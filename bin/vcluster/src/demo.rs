//! `vcluster demo`: a guided tour of a virtual cluster.
//!
//! It builds a 4-node cluster, waits until every node sees every other, loads one node with CPU
//! burners and watches another node learn of it; starts jobs at node 1 that run on the other
//! nodes, moves them while they run (to another node, and home), and shows that a program
//! running away still reads its input at home; crashes a node's service and watches the others
//! mark it down and then up again when it restarts; builds a second cluster cut into a grid of
//! two partner clusters, where a's jobs use b's idle nodes and leave when b's own jobs start;
//! and removes everything. Every wait is
//! bounded, every job ends by itself, and an interrupt (Ctrl-C) still removes the cluster.
//!
//! The jobs run as `nobody`, as a user's jobs would: a node takes no process of root as a guest
//! (see [`vcluster::as_user`]).

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mosix_core::NodeId;
use mosix_core::client::{Client, ClusterView};
use vcluster::{Cluster, Spec, UserTools};

use crate::cli::Demo;

const NAME: &str = "demo";
/// The grid act's cluster.
const GRID_NAME: &str = "demogrid";

/// What to try after the tour: a command run inside node 1, and what it shows.
const NEXT: [(&str, &str); 4] = [
    (
        "mtop",
        "top for MOSIX processes: where each runs, its share of a CPU",
    ),
    ("mon", "every node's load, speed and memory as bar charts"),
    (
        "tune",
        "measure the speed and the cost of a move to each peer",
    ),
    (
        "--nobody -- mosrun -j2-4 PROGRAM",
        "run a program on one of nodes 2 to 4 (as nobody: nodes take no jobs of root)",
    ),
];

struct Tour {
    cluster: Cluster,
    /// mosrun, where the jobs' user can run it.
    user_tools: UserTools,
    burners: Vec<Child>,
    keep: bool,
    stop: Arc<AtomicBool>,
    t0: Instant,
}

impl Drop for Tour {
    fn drop(&mut self) {
        stop_all(&mut self.burners);
        let name = self.cluster.name.clone();
        if self.keep && !self.stop.load(Ordering::Relaxed) {
            println!(
                "\nThe cluster is still running: try `vcluster exec 1 --name {name} -- mon`; remove it with `vcluster down --name {name}`."
            );
        } else {
            match vcluster::down(&name) {
                Ok(_) => println!(
                    "\n== Removed the cluster '{name}': no namespace, cgroup, mount or process is left."
                ),
                Err(e) => eprintln!("vcluster: removing the demo cluster {name}: {e:#}"),
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

    fn tool(&self, name: &str) -> OsString {
        self.cluster.tools.join(name).into_os_string()
    }

    /// Runs one of our tools on a node; its output (stdout then stderr).
    fn run_tool(&self, node: u16, name: &str, args: &[&str]) -> Result<String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let out = self
            .cluster
            .command(node, &self.tool(name), &args)?
            .stdin(Stdio::null())
            .output()?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    fn print_indented(&self, title: &str, text: &str) {
        println!("    --- {title} ---");
        for l in text.lines() {
            println!("    {l}");
        }
    }

    /// Waits (at most `limit`) until `mps --json` on node 1 shows `pid` on `node` (0 = home).
    fn wait_at(&self, pid: u32, node: u64, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&self.run_tool(1, "mps", &["--json"])?).unwrap_or_default();
            if rows.iter().any(|r| r["pid"] == pid && r["node"] == node) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("process {pid} did not show on node {node} within {limit:?}")
    }

    /// Starts `mosrun [mosrun_args] sh -c script name` at node 1 as `nobody`, its output piped.
    fn start_job(&self, mosrun_args: &[&str], script: &str, name: &str) -> Result<Child> {
        self.start_job_on(1, mosrun_args, script, name)
    }

    /// [`start_job`](Self::start_job) at node `node`.
    fn start_job_on(
        &self,
        node: u16,
        mosrun_args: &[&str],
        script: &str,
        name: &str,
    ) -> Result<Child> {
        let args: Vec<OsString> = mosrun_args
            .iter()
            .chain(&["sh", "-c", script, name])
            .map(OsString::from)
            .collect();
        Ok(self
            .cluster
            .user_command(
                node,
                &self.user_tools.path("mosrun").into_os_string(),
                &args,
            )?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?)
    }

    /// The migration act.
    fn migration(&mut self) -> Result<()> {
        self.say(
            "Migration: three jobs start at node 1 and run on nodes 2, 3 and 4 (mosrun -NODE)...",
        );
        self.note(
            "they run as nobody, as a user's jobs do: no node takes processes of root as guests",
        );
        // A shell counting (no fork, no I/O until the end): CPU-bound, and ends by itself.
        let job =
            "i=0; while [ $i -lt 4000000 ]; do i=$((i+1)); done; echo \"job $0 counted to $i\"";
        let mut jobs = Vec::new();
        for (name, node) in [("A", "-2"), ("B", "-3"), ("C", "-4")] {
            jobs.push((name, self.start_job(&[node], job, name)?));
        }
        for ((_, child), node) in jobs.iter().zip([2u64, 3, 4]) {
            self.wait_at(child.id(), node, Duration::from_secs(10))?;
        }
        self.note(
            "each keeps its pid, parent and output at node 1; mps there shows where they run:",
        );
        self.print_indented("mps, run on node 1", &self.run_tool(1, "mps", &[])?);
        self.print_indented(
            "mps -G, run on node 3 (its guests)",
            &self.run_tool(3, "mps", &["-G"])?,
        );
        self.show(1)?;

        let a = jobs[0].1.id().to_string();
        let b = jobs[1].1.id().to_string();
        self.say(&format!(
            "Moving job A (pid {a}) from node 2 straight to node 4 while it runs: migrate {a} 4"
        ));
        let t = Instant::now();
        let out = self.run_tool(1, "migrate", &[&a, "4", "--wait"])?;
        self.note(&format!(
            "{} ({:.0} ms)",
            out.trim(),
            t.elapsed().as_secs_f64() * 1000.0
        ));
        self.say(&format!("Bringing job B (pid {b}) home: migrate {b} home"));
        let t = Instant::now();
        let out = self.run_tool(1, "migrate", &[&b, "home", "--wait"])?;
        self.note(&format!(
            "{} ({:.0} ms)",
            out.trim(),
            t.elapsed().as_secs_f64() * 1000.0
        ));
        self.print_indented("mps, run on node 1", &self.run_tool(1, "mps", &[])?);

        self.say("Waiting for the jobs to finish; their output arrives at node 1:");
        let deadline = Instant::now() + Duration::from_secs(120);
        for (name, mut child) in jobs {
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                o.read_to_string(&mut out)?;
            }
            let status = loop {
                if let Some(st) = child.try_wait()? {
                    break st;
                }
                if Instant::now() > deadline || self.stop.load(Ordering::Relaxed) {
                    let _ = child.kill();
                    bail!("job {name} did not finish");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            self.note(&format!("{} ({status})", out.trim()));
        }

        self.say("A program on node 2 reading a pipe at node 1: the same checksum as at home");
        let data = "yes 'MOSIX moves processes' | head -c 33554432";
        let mosrun = self.user_tools.path("mosrun");
        let mosrun = mosrun.to_string_lossy();
        for (what, pipeline) in [
            ("at home  ", format!("{data} | sha256sum")),
            ("on node 2", format!("{data} | {mosrun} -2 sha256sum")),
        ] {
            let args: Vec<OsString> = ["-c", &pipeline].iter().map(OsString::from).collect();
            let out = self
                .cluster
                .user_command(1, &"sh".into(), &args)?
                .stdin(Stdio::null())
                .output()?;
            self.note(&format!(
                "{what}: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        Ok(())
    }

    /// The automatic balancing act: jobs started at node 1 with no node named spread by
    /// themselves.
    fn balancing(&mut self) -> Result<()> {
        self.say(
            "Automatic balancing: eight jobs start at node 1 (plain mosrun, no node named)...",
        );
        let job =
            "i=0; while [ $i -lt 6000000 ]; do i=$((i+1)); done; echo \"job $0 counted to $i\"";
        let start = Instant::now();
        let mut jobs = Vec::new();
        for k in 1..=8 {
            jobs.push(self.start_job(&[], job, &format!("J{k}"))?);
        }
        // Where they run, once a second, until two per node or 20 s.
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(20) {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&self.run_tool(1, "mps", &["--json"])?).unwrap_or_default();
            let mut per = [0usize; 5];
            for r in &rows {
                if let Some(n) = r["node"].as_u64().filter(|n| *n <= 4) {
                    per[n as usize] += 1;
                }
            }
            let line = format!(
                "home {}, node 2: {}, node 3: {}, node 4: {}",
                per[0], per[2], per[3], per[4]
            );
            if line != last {
                self.note(&format!("{:4.1} s  {line}", start.elapsed().as_secs_f64()));
                last = line;
            }
            if per[0] == 2 && per[2..].iter().all(|c| *c == 2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.note("why: each node decides for the processes running on it (from their logs):");
        let mut lines = Vec::new();
        for k in 1..=4 {
            let log = std::fs::read_to_string(self.cluster.paths(k).rundir.join("mosix.log"))
                .unwrap_or_default();
            lines.extend(
                log.lines()
                    .filter(|l| l.contains("balancing ("))
                    .filter_map(|l| {
                        l.split_once(" INFO ")
                            .map(|(t, m)| (t.to_owned(), k, m.to_owned()))
                    }),
            );
        }
        lines.sort();
        for (_, k, m) in lines.iter().take(12) {
            self.note(&format!("  node {k}: {m}"));
        }
        self.say("Waiting for them to finish:");
        for mut child in jobs {
            let st = child.wait()?;
            if !st.success() {
                bail!("a job failed: {st}");
            }
        }
        self.note(&format!(
            "all eight done after {:.1} s, each with its output at node 1",
            start.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// How many guests node I runs whose home is one of `homes`.
    fn guests_from(&self, node: u16, homes: std::ops::RangeInclusive<u64>) -> usize {
        let rows: Vec<serde_json::Value> = self
            .run_tool(node, "mps", &["a", "-G", "--json"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        rows.iter()
            .filter(|r| r["from"].as_u64().is_some_and(|f| homes.contains(&f)))
            .count()
    }

    /// The grid act, on a cluster of its own: clusters a (nodes 1-2) and b (nodes 3-4).
    fn grid(&mut self) -> Result<()> {
        self.say("A grid: clusters a (nodes 1-2) and b (nodes 3-4), owned by different people, partners:");
        self.wait_for(1, Duration::from_secs(20), |v| v.nodes.iter().all(|x| x.up))?;
        self.show(1)?;
        self.say("Four jobs of cluster a start at node 1; b's nodes are idle and take some...");
        let job =
            "i=0; while [ $i -lt 5000000 ]; do i=$((i+1)); done; echo \"job $0 counted to $i\"";
        let mut jobs = Vec::new();
        for k in 1..=4 {
            jobs.push(self.start_job(&[], job, &format!("A{k}"))?);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20)
            && self.guests_from(3, 1..=2) + self.guests_from(4, 1..=2) < 2
        {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.note(&format!(
            "{:.1} s: guests of cluster a on node 3: {}, on node 4: {}",
            start.elapsed().as_secs_f64(),
            self.guests_from(3, 1..=2),
            self.guests_from(4, 1..=2)
        ));
        self.say("b's owner starts two jobs of its own at node 3: its nodes are its own first...");
        for k in 1..=2 {
            jobs.push(self.start_job_on(3, &[], job, &format!("B{k}"))?);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20)
            && self.guests_from(3, 1..=2) + self.guests_from(4, 1..=2) > 0
        {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.note(&format!(
            "{:.1} s: guests of cluster a left on b's nodes: {}",
            start.elapsed().as_secs_f64(),
            self.guests_from(3, 1..=2) + self.guests_from(4, 1..=2)
        ));
        for k in 3..=4 {
            let log = std::fs::read_to_string(self.cluster.paths(k).rundir.join("mosix.log"))
                .unwrap_or_default();
            for l in log.lines().filter(|l| l.contains("grid: guest")).take(2) {
                if let Some((_, m)) = l.split_once(" INFO ") {
                    self.note(&format!("  node {k}: {m}"));
                }
            }
        }
        self.say("Waiting for all six to finish (a's come back to b when b's jobs are done):");
        for mut child in jobs {
            let st = child.wait()?;
            if !st.success() {
                bail!("a job failed: {st}");
            }
        }
        self.note(&format!(
            "all done after {:.1} s, nobody's job lost",
            self.t0.elapsed().as_secs_f64()
        ));
        Ok(())
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
    let user_tools = UserTools::new(&spec.tools, &["mosrun"])?;
    let cluster = vcluster::up(&spec)?;
    let tour = Tour {
        cluster,
        user_tools,
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
            .user_command(
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

    tour.migration()?;
    tour.balancing()?;

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
    let mut spec = Spec::new(GRID_NAME, 4, vcluster::tools_dir());
    spec.grid = vcluster::grid::parts("2,2", &[], &[])?;
    if vcluster::list().iter().any(|n| n == GRID_NAME) {
        vcluster::down(GRID_NAME)?;
    }
    let mut grid = Tour {
        user_tools: UserTools::new(&spec.tools, &["mosrun"])?,
        cluster: vcluster::up(&spec)?,
        burners: Vec::new(),
        keep: false,
        stop: Arc::clone(&stop),
        t0,
    };
    grid.grid()?;
    drop(grid);
    // The commands below name the cluster when it stays; otherwise one is built first.
    let on = if d.keep {
        println!("\nTo try next, on this cluster:");
        format!("--name {NAME} ")
    } else {
        println!("\nTo try next, on a cluster of your own (vcluster up -n 4 builds one):");
        String::new()
    };
    for (cmd, what) in NEXT {
        // A command that gives exec options of its own says where they end.
        let cmd = if cmd.starts_with("--") {
            cmd.to_owned()
        } else {
            format!("-- {cmd}")
        };
        println!("  vcluster exec 1 {on}{cmd:<35} {what}");
    }
    Ok(ExitCode::SUCCESS)
}
