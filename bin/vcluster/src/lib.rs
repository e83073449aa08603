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
//! All of this needs root (namespaces, cgroups, mounts) and iproute2's `ip`.

use std::ffi::OsString;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mosix_core::config::{ENV_ETC, ENV_RUNDIR, Paths};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use mosix_core::client::Client;
use mosix_kmod::cgroup::Cgroups;

/// Where cluster state directories live.
pub const STATE_ROOT: &str = "/run/mosix-vc";
/// The largest number of nodes (one /24).
pub const MAX_NODES: u16 = 250;

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
        }
    }
}

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

fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

fn check_name(name: &str) -> Result<()> {
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

fn netns_name(cluster: &str, node: u16) -> String {
    format!("{cluster}-n{node}")
}

fn switch_name(cluster: &str) -> String {
    format!("{cluster}-sw")
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

    fn save(&self) -> Result<()> {
        let path = self.state_dir.join("cluster.toml");
        let text = toml::to_string(self).context("serialising the cluster record")?;
        fs::write(&path, text).with_context(|| path.display().to_string())
    }

    /// Node I's address.
    pub fn addr(&self, node: u16) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + u32::from(node))
    }

    fn node_dir(&self, node: u16) -> PathBuf {
        self.state_dir.join(format!("node{node}"))
    }

    /// Node I's files.
    pub fn paths(&self, node: u16) -> Paths {
        Paths {
            etc: self.node_dir(node).join("etc"),
            rundir: self.node_dir(node).join("run"),
        }
    }

    fn node_cgroups(&self, node: u16) -> Vec<PathBuf> {
        self.cgroup_bases
            .iter()
            .map(|b| b.join(format!("node{node}")))
            .collect()
    }

    fn mntns_file(&self, node: u16) -> Option<PathBuf> {
        (!self.private_dirs.is_empty())
            .then(|| self.state_dir.join("ns").join(format!("node{node}.mnt")))
    }

    /// Everything about node I.
    pub fn node(&self, node: u16) -> NodeInfo {
        let paths = self.paths(node);
        NodeInfo {
            node,
            addr: self.addr(node),
            netns: netns_name(&self.name, node),
            service_pid: service_pid(&paths),
            etc: paths.etc,
            rundir: paths.rundir,
            cgroups: self.node_cgroups(node),
            mntns: self.mntns_file(node),
        }
    }

    fn check_node(&self, node: u16) -> Result<()> {
        if node == 0 || node > self.nodes {
            bail!(
                "cluster '{}' has nodes 1..{}, not {node}",
                self.name,
                self.nodes
            );
        }
        Ok(())
    }

    /// A command that runs `program args` inside node I: its network namespace, its cgroups,
    /// its mount namespace if any, with its `MOSIX_ETC` and `MOSIX_RUNDIR`.
    pub fn command(&self, node: u16, program: &OsString, args: &[OsString]) -> Result<Command> {
        self.check_node(node)?;
        let netns_path = Path::new("/run/netns").join(netns_name(&self.name, node));
        let netns: OwnedFd = fs::File::open(&netns_path)
            .with_context(|| {
                format!(
                    "node {node} has no network namespace ({})",
                    netns_path.display()
                )
            })?
            .into();
        let mntns: Option<OwnedFd> = match self.mntns_file(node) {
            Some(p) => Some(
                fs::File::open(&p)
                    .with_context(|| format!("node {node}'s mount namespace ({})", p.display()))?
                    .into(),
            ),
            None => None,
        };
        let procs: Vec<OwnedFd> = self
            .node_cgroups(node)
            .iter()
            .map(|d| {
                let p = d.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(OwnedFd::from)
                    .with_context(|| format!("node {node}'s cgroup ({})", p.display()))
            })
            .collect::<Result<_, _>>()?;
        // setns(CLONE_NEWNS) resets the working directory to the new namespace's root (a kernel
        // rule, see setns(2)); go back to where we were so that relative paths keep working.
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| std::ffi::CString::new(d.into_os_string().into_encoded_bytes()).ok());
        let paths = self.paths(node);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env(ENV_ETC, &paths.etc)
            .env(ENV_RUNDIR, &paths.rundir);
        // SAFETY: the closure runs in the child between fork and exec. It only makes system
        // calls (setns(2), write(2), chdir(2)) on file descriptors and a path prepared before the
        // fork, which are async-signal-safe; it allocates nothing and touches no state shared
        // with other threads.
        // The descriptors are moved into the closure and stay open until exec (they are
        // close-on-exec, so the program does not inherit them).
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&netns, CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                for fd in &procs {
                    // "0" moves the writing process.
                    nix::unistd::write(fd, b"0").map_err(std::io::Error::from)?;
                }
                if let Some(m) = &mntns {
                    nix::sched::setns(m, CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
                    if let Some(d) = &cwd {
                        // A directory hidden by the node's private mounts is simply not there.
                        let _ = nix::unistd::chdir(d.as_c_str());
                    }
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Replaces this process with `program args` run inside node I.
    pub fn exec(&self, node: u16, program: &OsString, args: &[OsString]) -> anyhow::Error {
        match self.command(node, program, args) {
            Ok(mut c) => anyhow::Error::new(c.exec())
                .context(format!("cannot run {}", program.to_string_lossy())),
            Err(e) => e,
        }
    }

    fn tool(&self, name: &str) -> OsString {
        self.tools.join(name).into_os_string()
    }

    /// Starts node I's service (`setpe -w` inside the node).
    pub fn start_node(&self, node: u16) -> Result<u32> {
        self.check_node(node)?;
        let paths = self.paths(node);
        if let Some(pid) = service_pid(&paths) {
            return Ok(pid);
        }
        let map = paths.map().into_os_string();
        let out = self
            .command(node, &self.tool("setpe"), &["-w".into(), "-f".into(), map])?
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting node {node}'s service"))?;
        if !out.status.success() {
            bail!(
                "node {node}'s service did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        service_pid(&paths)
            .with_context(|| format!("node {node}'s service started but does not answer"))
    }

    /// Stops node I's service: politely (`setpe -off`), or with SIGKILL as a crash would.
    pub fn stop_node(&self, node: u16, kill: bool) -> Result<Option<u32>> {
        self.check_node(node)?;
        let paths = self.paths(node);
        let Some(pid) = service_pid(&paths) else {
            return Ok(None);
        };
        if kill {
            let raw = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
            nix::sys::signal::kill(raw, nix::sys::signal::Signal::SIGKILL)
                .with_context(|| format!("killing node {node}'s service (pid {pid})"))?;
        } else {
            let out = Command::new(self.tool("setpe"))
                .arg("-off")
                .env(ENV_ETC, &paths.etc)
                .env(ENV_RUNDIR, &paths.rundir)
                .output()
                .with_context(|| format!("stopping node {node}'s service"))?;
            if !out.status.success() {
                bail!(
                    "setpe -off on node {node}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !Path::new(&format!("/proc/{pid}")).exists() || proc_is_zombie(pid) {
                return Ok(Some(pid));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("node {node}'s service (pid {pid}) did not stop")
    }
}

/// The pid of the node service at `paths`, if one answers a ping.
fn service_pid(paths: &Paths) -> Option<u32> {
    Some(Client::connect(paths).ok()?.ping().ok()?.pid)
}

fn proc_is_zombie(pid: u32) -> bool {
    procfs::process::Process::new(i32::try_from(pid).unwrap_or(0))
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state == 'Z')
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
            .join(switch_name(&spec.name))
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
    mosix_core::config::Tunables::parse("--tunables", &spec.tunables)
        .context("the extra tunables are not valid mosix.toml")?;
    fs::create_dir_all(&sd).with_context(|| sd.display().to_string())?;

    let cg = Cgroups::discover().context("reading cgroups")?;
    let (version, bases) = cgroup_bases(&cg, &spec.name)?;
    let cluster = Cluster {
        name: spec.name.clone(),
        nodes: spec.nodes,
        base: spec.base,
        cpus_per_node: cpus,
        mem_per_node: mem,
        speed: mosix_kmod::measure::calibrate_speed(),
        private_dirs: spec.private_dirs.clone(),
        cgroup_version: version.to_owned(),
        cgroup_bases: bases,
        state_dir: sd.clone(),
        tools: spec.tools.clone(),
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

fn cgroup_bases(cg: &Cgroups, name: &str) -> Result<(&'static str, Vec<PathBuf>)> {
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

fn build(c: &Cluster, spec: &Spec) -> Result<()> {
    // The switch: a bridge in a namespace of its own.
    let sw = switch_name(&c.name);
    run_ip(&["netns", "add", &sw])?;
    run_ip(&["-n", &sw, "link", "set", "lo", "up"])?;
    run_ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
    run_ip(&["-n", &sw, "link", "set", "br0", "up"])?;

    // Cgroups.
    for b in &c.cgroup_bases {
        fs::create_dir_all(b).with_context(|| b.display().to_string())?;
        if c.cgroup_version == "v2" {
            mosix_kmod::cgroup::write_file(&b.join("cgroup.subtree_control"), "+cpu +memory")
                .context("enabling cpu and memory controllers")?;
        }
    }

    // Private mounts need a private directory for the namespace files.
    if !c.private_dirs.is_empty() {
        let ns = c.state_dir.join("ns");
        fs::create_dir_all(&ns).with_context(|| ns.display().to_string())?;
        nix::mount::mount(Some(&ns), &ns, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind-mounting {}", ns.display()))?;
        nix::mount::mount(
            None::<&str>,
            &ns,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .with_context(|| format!("making {} private", ns.display()))?;
    }

    let secret = random_secret();
    let map = format!(
        "# virtual cluster '{}': {} nodes on one machine\n1 {} {}\n",
        c.name,
        c.nodes,
        c.addr(1),
        c.nodes
    );
    for n in 1..=c.nodes {
        build_node(c, spec, n, &map, &secret)?;
    }
    Ok(())
}

fn random_secret() -> String {
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

fn build_node(c: &Cluster, spec: &Spec, n: u16, map: &str, secret: &str) -> Result<()> {
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

    for d in c.node_cgroups(n) {
        fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
        let w = |file: &str, v: String| mosix_kmod::cgroup::write_file(&d.join(file), &v);
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

    let paths = c.paths(n);
    let mosix_dir = paths.etc.join("mosix");
    fs::create_dir_all(&mosix_dir).with_context(|| mosix_dir.display().to_string())?;
    fs::create_dir_all(&paths.rundir).with_context(|| paths.rundir.display().to_string())?;
    fs::write(paths.map(), map).with_context(|| paths.map().display().to_string())?;
    let sp = paths.secret();
    fs::write(&sp, format!("{secret}\n")).with_context(|| sp.display().to_string())?;
    fs::set_permissions(&sp, fs::Permissions::from_mode(0o600))
        .with_context(|| sp.display().to_string())?;
    let tun = node_tunables(&spec.tunables, c.speed, n, &c.name)?;
    fs::write(paths.config(), tun).with_context(|| paths.config().display().to_string())?;

    if let Some(file) = c.mntns_file(n) {
        let files = c.node_dir(n).join("files");
        let mut binds = Vec::new();
        for d in &c.private_dirs {
            let src = files.join(d.strip_prefix("/").unwrap_or(d));
            fs::create_dir_all(&src).with_context(|| src.display().to_string())?;
            fs::set_permissions(&src, fs::Permissions::from_mode(0o1777))
                .with_context(|| src.display().to_string())?;
            binds.push((src, d.clone()));
        }
        make_mount_ns(&file, &binds)?;
    }
    Ok(())
}

/// The `mosix.toml` of a node: the user's extra tunables, with the cluster's calibrated speed
/// unless the user gave one.
fn node_tunables(extra: &str, speed: u32, n: u16, name: &str) -> Result<String> {
    let mut t: toml::Table = toml::from_str(extra).context("the extra tunables")?;
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

/// Creates a mount namespace in which each `(src, dst)` is bind-mounted, and keeps it alive by
/// bind-mounting its namespace file onto `file`.
///
/// A helper process (`cat`, waiting on a pipe) builds the namespace between fork and exec: once
/// it has executed, the namespace is complete, we bind its `/proc/PID/ns/mnt` onto `file`, and
/// closing the pipe ends the helper. Doing the work in a child keeps this process (which may have
/// many threads, like a test harness) where it is.
///
/// The new namespace is a slave of ours (mounts made here later still appear there, but its own
/// mounts stay inside). The namespace file must be bound onto a mount that is not shared, or
/// the kernel refuses (the bind could propagate into the namespace itself); `build` made the
/// directory a private mount for that reason.
fn make_mount_ns(file: &Path, binds: &[(PathBuf, PathBuf)]) -> Result<()> {
    use std::ffi::{CStr, CString};
    fs::write(file, b"").with_context(|| file.display().to_string())?;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| anyhow!("{} contains a NUL byte", p.display()))
    };
    let binds_c: Vec<(CString, CString)> = binds
        .iter()
        .map(|(s, d)| Ok((cstr(s)?, cstr(d)?)))
        .collect::<Result<_>>()?;
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec. It makes only system calls
    // (unshare(2), mount(2)) on C strings built before the fork; nix hands a `CStr` to the
    // kernel as it is, without allocating, so the closure allocates nothing and touches no state
    // that another thread of the parent could have held locked at the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            nix::mount::mount(
                None::<&CStr>,
                c"/",
                None::<&CStr>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&CStr>,
            )
            .map_err(std::io::Error::from)?;
            for (src, dst) in &binds_c {
                nix::mount::mount(
                    Some(src.as_c_str()),
                    dst.as_c_str(),
                    None::<&CStr>,
                    MsFlags::MS_BIND,
                    None::<&CStr>,
                )
                .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "setting up private directories {:?} in a new mount namespace",
            binds.iter().map(|b| &b.1).collect::<Vec<_>>()
        )
    })?;
    let src = format!("/proc/{}/ns/mnt", child.id());
    let bound = nix::mount::mount(
        Some(src.as_str()),
        file,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("keeping the mount namespace at {}", file.display()));
    drop(child.stdin.take());
    let _ = child.wait();
    bound
}

/// Removes everything of cluster `name`: processes, namespaces, cgroups, mounts, state. Works
/// from whatever is left, with or without the cluster record. Returns what it removed.
pub fn down(name: &str) -> Result<Vec<String>> {
    preflight()?;
    check_name(name)?;
    let mut done = Vec::new();
    let record = Cluster::load(name).ok();

    // Cgroups: recorded ones, and any mosix-vc.NAME below our own or the root cgroup.
    let mut bases: Vec<PathBuf> = record
        .as_ref()
        .map(|c| c.cgroup_bases.clone())
        .unwrap_or_default();
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
    let procs_prefix = format!("{}_node", mosix_kmod::procs::dir_name(&state_dir(name)));
    if let Ok(rd) = fs::read_dir(mosix_kmod::procs::MOUNT) {
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

    let netns = netns_of(name);

    // 1. Processes: everything in the node cgroups and in the namespaces, until none is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut killed = 0usize;
    loop {
        let mut pids: Vec<i32> = Vec::new();
        for b in &bases {
            collect_procs(b, &mut pids);
        }
        for ns in &netns {
            pids.extend(netns_pids(ns));
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
        let mut dirs = Vec::new();
        collect_dirs(b, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e)
                        if e.raw_os_error() == Some(nix::libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing cgroup {}", d.display()));
                    }
                }
            }
        }
        done.push(format!("removed cgroup {}", b.display()));
    }

    // 3. Namespaces.
    for ns in &netns {
        run_ip(&["netns", "del", ns])?;
        done.push(format!("removed network namespace {ns}"));
    }

    // 4. Mounts and state.
    let sd = state_dir(name);
    let ns_dir = sd.join("ns");
    if let Ok(rd) = fs::read_dir(&ns_dir) {
        for e in rd.flatten() {
            let _ = nix::mount::umount2(&e.path(), MntFlags::MNT_DETACH);
        }
    }
    if mounted(&ns_dir) {
        nix::mount::umount2(&ns_dir, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", ns_dir.display()))?;
    }
    if sd.exists() {
        fs::remove_dir_all(&sd).with_context(|| format!("removing {}", sd.display()))?;
        done.push(format!("removed {}", sd.display()));
    }
    Ok(done)
}

fn mounted(p: &Path) -> bool {
    procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .is_ok_and(|m| m.into_iter().any(|x| x.mount_point == p))
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

fn collect_procs(d: &Path, out: &mut Vec<i32>) {
    let mut dirs = Vec::new();
    collect_dirs(d, &mut dirs);
    for d in dirs {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
}

fn netns_pids(ns: &str) -> Vec<i32> {
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
