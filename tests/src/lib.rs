//! The harness of the cluster tests: the suite's binaries, virtual clusters that clean up after
//! themselves, and waiting for conditions with a bound.
//!
//! Cluster tests need root (namespaces, cgroups). Without root they print why they skip — except
//! under `CI=true`, where a skip is a failure, so CI cannot pass by skipping the cluster.
//!
//! Jobs run as an unprivileged user. A node takes no process of root as a guest by default, so
//! every MOSIX job a test starts runs as `nobody` (uid and gid 65534, no supplementary groups),
//! as a real user's would: [`TestCluster::job`] (`mosrun ARGS`), [`TestCluster::user_command`]
//! (any program, e.g. the reference run of a program a job runs, or a shell that starts jobs),
//! and the helpers built on them ([`TestCluster::probe`], [`TestCluster::memory_holder`]). The
//! suite's programs jobs run are taken from [`user_tool`], which copies them where `nobody` can
//! run them if the build directory is out of its reach. [`TestCluster::command`] and
//! [`TestCluster::run`] run as root (the administration tools) and refuse to start `mosrun`:
//! a job of root is started only with [`TestCluster::root_job`], by the tests of its refusal.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use mosix_core::client::{Client, ClusterView};
use mosix_core::config::{ENV_ETC, ENV_RUNDIR, Paths};
use vcluster::{Cluster, Spec, UserTools};

/// Cluster tests run one at a time: they share two CPUs and their timings must hold.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the cluster lock (a failed test does not poison it for the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster the benchmarks run on: two nodes of `MOSIX_BENCH_CPUS` CPUs (default 1) and
/// 6 GiB each, up and seeing each other.
pub fn bench_cluster(name: &str) -> TestCluster {
    bench_cluster_of(name, 2)
}

/// [`bench_cluster`] with `nodes` nodes.
pub fn bench_cluster_of(name: &str, nodes: u16) -> TestCluster {
    bench_cluster_with(name, nodes, 1.0)
}

/// [`bench_cluster_of`] whose nodes have `cpus` CPUs each unless `MOSIX_BENCH_CPUS` says.
pub fn bench_cluster_with(name: &str, nodes: u16, cpus: f64) -> TestCluster {
    let c = TestCluster::up(name, nodes, |s| {
        s.cpus_per_node = Some(
            std::env::var("MOSIX_BENCH_CPUS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(cpus),
        );
        s.mem_per_node = Some(6 << 30);
    });
    for n in 1..=nodes {
        c.wait_view(n, Duration::from_secs(15), |v| v.nodes.iter().all(|x| x.up))
            .expect("the benchmark cluster comes up");
    }
    c
}

/// Whether a skip must fail (CI=true).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The state letter of process `pid` in `/proc/PID/stat` ('R', 'S', 'T' stopped, 't' stopped
/// and traced, …), or '?' when it cannot be read.
pub fn state_of(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .unwrap_or('?')
}

/// Returns false (after printing why) when the test cannot run here; panics instead under CI.
pub fn require_root(test: &str) -> bool {
    let problem = if !nix::unistd::geteuid().is_root() {
        Some("needs root (network namespaces, cgroups)")
    } else if vcluster::preflight().is_err() {
        Some("needs iproute2's ip command")
    } else {
        None
    };
    match problem {
        None => true,
        Some(p) if in_ci() => panic!("{test}: {p}, and under CI=true a skip is a failure"),
        Some(p) => {
            eprintln!("SKIP {test}: {p}");
            false
        }
    }
}

/// The directory with the suite's binaries, (re)built once per test run so that the tests never
/// run stale tools: `cargo test` builds a binary package's unit tests, not its executable.
pub fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        // target/<profile>/deps/cluster-HASH -> target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable in target/<profile>/deps")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--workspace", "--bins", "--quiet"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("running cargo build for the tools");
        assert!(st.success(), "building the tools failed");
        dir
    })
}

/// A benchmark's option: environment variable `name` parsed, or `default` if it is unset or
/// does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The middle value of a benchmark's repetitions (of an even count, the mean of the two middle
/// ones).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `len` bytes of xorshift64 output from `seed`: incompressible test data, the same every run.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x = seed;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

/// A tool's path (in the build directory: for root's use).
pub fn tool(name: &str) -> PathBuf {
    tools().join(name)
}

/// The uid and gid jobs run as (`nobody`).
pub const NOBODY: u32 = vcluster::USER_UID;

/// The suite's programs that jobs run.
const JOB_TOOLS: &[&str] = &[
    "mosrun",
    "mosix-probe",
    "mosix-diff-probe",
    "moskillall",
    "mps",
];

/// `mosrun` and the names of its classic wrappers (`mosrun --install-links`).
const MOSRUN_NAMES: &[&str] = &[
    "mosrun",
    "runon",
    "runhome",
    "nomig",
    "cpujob",
    "iojob",
    "nodecay",
    "slowdecay",
    "fastdecay",
];

static USER_TOOLS: OnceLock<UserTools> = OnceLock::new();

/// The suite's programs jobs run, where `nobody` can run them: the build directory if it can
/// reach it, otherwise copies made once per test run (see [`vcluster::UserTools`]), removed
/// when the run ends (or, if it was killed, by the next run).
pub fn user_tools() -> &'static UserTools {
    USER_TOOLS.get_or_init(|| {
        let t = UserTools::new(tools(), JOB_TOOLS)
            .unwrap_or_else(|e| panic!("making the tools usable by nobody: {e:#}"));
        if t.copied() {
            eprintln!(
                "nobody cannot reach {}: jobs run copies in {}",
                tools().display(),
                t.dir().display()
            );
            // SAFETY: atexit(3) only records the function; `remove_user_tools` is an
            // `extern "C"` function that cannot unwind (it ignores every error) and only touches
            // the static above, which lives until the process ends.
            if unsafe { libc::atexit(remove_user_tools) } != 0 {
                eprintln!("{} will be removed by the next run", t.dir().display());
            }
        }
        t
    })
}

/// Removes the copies of the tools at the end of the test run (a static is never dropped).
extern "C" fn remove_user_tools() {
    if let Some(t) = USER_TOOLS.get().filter(|t| t.copied()) {
        let _ = std::fs::remove_dir_all(t.dir());
    }
}

/// The path at which `nobody` runs the suite's program `name` (mosrun, mosix-probe,
/// mosix-diff-probe).
pub fn user_tool(name: &str) -> PathBuf {
    assert!(
        JOB_TOOLS.contains(&name),
        "{name} is not one of the programs jobs run ({JOB_TOOLS:?})"
    );
    user_tools().path(name)
}

/// A temporary directory that belongs to `nobody` (mode 0700): jobs may read and write in it,
/// and root (the test) may too.
pub fn user_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("mosix-job-")
        .tempdir()
        .expect("a temporary directory");
    std::os::unix::fs::chown(d.path(), Some(NOBODY), Some(NOBODY))
        .expect("giving the temporary directory to nobody");
    // Its parent (the machine's temporary directory) is searchable by everyone.
    assert!(
        d.path()
            .ancestors()
            .skip(1)
            .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)),
        "nobody cannot reach {}",
        d.path().display()
    );
    d
}

/// Panics if `prog args` would start `mosrun` as root: jobs run as nobody.
fn refuse_root_job(prog: &str, args: &[&str]) {
    let name = Path::new(prog)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(prog);
    let paths = [
        tool("mosrun").to_string_lossy().into_owned(),
        user_tool("mosrun").to_string_lossy().into_owned(),
    ];
    assert!(
        !MOSRUN_NAMES.contains(&name) && !args.iter().any(|a| paths.iter().any(|p| a.contains(p))),
        "{prog} {args:?} would start a job of root, which no node takes as a guest: use job() or \
         user_command() (root_job() only for the tests of that refusal)"
    );
}

/// Runs a tool with a node's environment but outside its namespaces.
pub fn run_tool(paths: &Paths, name: &str, args: &[&str]) -> Output {
    Command::new(tool(name))
        .args(args)
        .env(ENV_ETC, &paths.etc)
        .env(ENV_RUNDIR, &paths.rundir)
        .output()
        .expect("running a tool")
}

/// A virtual cluster that is removed when dropped, whatever happened.
pub struct TestCluster {
    /// The cluster.
    pub cluster: Cluster,
}

impl TestCluster {
    /// Builds a cluster named `name` with `nodes` nodes; `adjust` may change the spec first.
    pub fn up(name: &str, nodes: u16, adjust: impl FnOnce(&mut Spec)) -> TestCluster {
        // Whatever a crashed earlier run left behind goes first.
        let _ = vcluster::down(name);
        let mut spec = Spec::new(name, nodes, tools().to_owned());
        adjust(&mut spec);
        let cluster = vcluster::up(&spec).unwrap_or_else(|e| panic!("vcluster up {name}: {e:#}"));
        TestCluster { cluster }
    }

    /// Node I's files.
    pub fn paths(&self, node: u16) -> Paths {
        self.cluster.paths(node)
    }

    /// Node I's view, if its service answers.
    pub fn view(&self, node: u16) -> Option<ClusterView> {
        Client::connect(&self.paths(node)).ok()?.view().ok()
    }

    /// Runs a tool inside node I (its namespaces and cgroup), as root: for the administration
    /// tools (mosctl, migrate, mps, setpe...), never `mosrun`.
    pub fn run(&self, node: u16, name: &str, args: &[&str]) -> Output {
        refuse_root_job(name, args);
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.cluster
            .command(node, &tool(name).into_os_string(), &args)
            .expect("node command")
            .output()
            .expect("running a tool in a node")
    }

    /// A command that runs tool or program `prog` inside node I as root: for the administration
    /// tools and the test's own set-up. It refuses `mosrun` (jobs run as nobody: [`Self::job`],
    /// [`Self::user_command`]).
    pub fn command(&self, node: u16, prog: &str, args: &[&str]) -> Command {
        refuse_root_job(prog, args);
        let program: OsString = if prog.contains('/') || !tools().join(prog).exists() {
            prog.into()
        } else {
            tool(prog).into_os_string()
        };
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.cluster
            .command(node, &program, &args)
            .expect("node command")
    }

    /// A command that runs program `prog` inside node I as `nobody` (uid and gid 65534, no
    /// supplementary groups): the suite's programs (`mosrun`, `mosix-probe`...) from
    /// [`user_tool`], others as named.
    pub fn user_command(&self, node: u16, prog: &str, args: &[&str]) -> Command {
        let program: OsString = if !prog.contains('/') && JOB_TOOLS.contains(&prog) {
            user_tool(prog).into_os_string()
        } else {
            prog.into()
        };
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.cluster
            .user_command(node, &program, &args)
            .expect("node command")
    }

    /// A job: `mosrun ARGS` inside node I, as `nobody`.
    pub fn job(&self, node: u16, mosrun_args: &[&str]) -> Command {
        self.user_command(node, "mosrun", mosrun_args)
    }

    /// A job of root: `mosrun ARGS` inside node I, as root. No node takes it as a guest unless
    /// its `mosix.toml` says `guests.accept_root`: only for the tests of that.
    pub fn root_job(&self, node: u16, mosrun_args: &[&str]) -> Command {
        let args: Vec<OsString> = mosrun_args.iter().map(OsString::from).collect();
        self.cluster
            .command(node, &tool("mosrun").into_os_string(), &args)
            .expect("node command")
    }

    /// This node's MOSIX processes as `mps --json` shows them (with guests if `guests`).
    pub fn mps(&self, node: u16, guests: bool) -> Vec<serde_json::Value> {
        let args: &[&str] = if guests {
            &["a", "-G", "--json"]
        } else {
            &["a", "--json"]
        };
        let out = self.run(node, "mps", args);
        assert!(
            out.status.success(),
            "mps: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("mps --json")
    }

    /// Where node I's private directory `dir` is, seen from the machine.
    pub fn private_path(&self, node: u16, dir: &Path) -> PathBuf {
        self.cluster
            .state_dir
            .join(format!("node{node}/files"))
            .join(dir.strip_prefix("/").unwrap_or(dir))
    }

    /// Node I's metrics, as a scraper on the node gets them: `GET /metrics` from the default
    /// `[metrics] listen` (its loopback), the body of a 200 answer.
    pub fn metrics(&self, node: u16) -> String {
        use std::io::{Read, Write};
        in_netns(&self.cluster, node, || {
            let addr: std::net::SocketAddr = mosix_core::metrics::DEFAULT_LISTEN
                .parse()
                .expect("an address");
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect("connecting to the metrics endpoint");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("a timeout");
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .expect("sending the request");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("reading the answer");
            let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
            assert!(head.contains(" 200 "), "metrics endpoint answered: {head}");
            body.to_owned()
        })
    }

    /// Node I's service log.
    pub fn log(&self, node: u16) -> String {
        std::fs::read_to_string(self.paths(node).log()).unwrap_or_default()
    }

    /// Runs a tool inside node I: whether it succeeded, and all it printed (stdout, then
    /// stderr).
    pub fn said(&self, node: u16, name: &str, args: &[&str]) -> (bool, String) {
        let out = self.run(node, name, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `migrate PID TO --wait` on node 1 (`to`: a node number, `home` or `balance`): whether it
    /// worked, and what it said.
    pub fn try_migrate(&self, pid: u32, to: &str) -> (bool, String) {
        self.said(1, "migrate", &[&pid.to_string(), to, "--wait"])
    }

    /// Moves process `pid` of node 1 to `to` with `migrate --wait`, asserting that it worked;
    /// returns what migrate said.
    pub fn migrate(&self, pid: u32, to: &str) -> String {
        let (ok, text) = self.try_migrate(pid, to);
        assert!(ok, "migrate {pid} {to}: {text}");
        text
    }

    /// Starts the job `mosrun [mosrun_args] mosix-probe mem MIB` on node 1 (as nobody, stdin
    /// and stdout piped) and waits until its memory is filled; a line on its stdin ends it.
    pub fn memory_holder(&self, mib: u64, mosrun_args: &[&str]) -> std::process::Child {
        use std::io::BufRead;
        let probe = user_tool("mosix-probe");
        let size = mib.to_string();
        let mut args: Vec<&str> = mosrun_args.to_vec();
        args.extend([probe.to_str().expect("a UTF-8 path"), "mem", &size]);
        let mut child = self
            .job(1, &args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting mosix-probe mem");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading mosix-probe's ready line");
        assert_eq!(line.trim(), "ready", "mosix-probe mem {mib}");
        child
    }

    /// How many guests node I runs.
    pub fn guests_on(&self, node: u16) -> usize {
        self.mps(node, true)
            .iter()
            .filter(|r| !r["from"].is_null())
            .count()
    }

    /// The processes in node I's cgroup other than its service.
    pub fn node_procs(&self, node: u16) -> Vec<i32> {
        let svc = self.cluster.node(node).service_pid.unwrap_or(0) as i32;
        let mut out = Vec::new();
        for dir in &self.cluster.node(node).cgroups {
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|p| *p != svc);
        out
    }

    /// Waits (at most 15 s) until every node sees every node up.
    pub fn wait_all_up(&self) {
        for n in 1..=self.cluster.nodes {
            self.wait_all_up_on(n);
        }
    }

    /// Starts node I's service again and waits until node 1 sees every node up.
    pub fn restart(&self, node: u16) {
        if let Err(e) = self.cluster.start_node(node) {
            panic!("starting node {node}: {e:#}");
        }
        self.wait_all_up_on(1);
    }

    fn wait_all_up_on(&self, on: u16) {
        if let Err(e) = self.wait_view(on, Duration::from_secs(15), |v| {
            v.nodes.iter().all(|x| x.up)
        }) {
            panic!("not every node up: {e}");
        }
    }

    /// Starts `migrate PID TO --wait` on node 1, crashes the service of node `victim` (SIGKILL)
    /// `cut` later, waits for migrate to end, and asserts that within 5 s no process is left on
    /// `victim`: a move cut anywhere never leaves a copy behind. `round` names the attempt in
    /// the failure message.
    pub fn cut_move(&self, pid: u32, to: &str, victim: u16, cut: Duration, round: &str) {
        let mut mover = self
            .command(1, "migrate", &[&pid.to_string(), to, "--wait"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("migrate");
        std::thread::sleep(cut);
        self.cluster.stop_node(victim, true).expect("stop node");
        let _ = mover.wait();
        assert!(
            self.eventually(Duration::from_secs(5), || self
                .node_procs(victim)
                .is_empty()),
            "{round} (cut at {cut:?}): left on node {victim}: {:?}",
            self.node_procs(victim)
        );
    }

    /// Starts the job `mosrun [mosrun_args] mosix-probe [probe_args]` on node 1 (as nobody,
    /// stdin empty, stdout piped).
    pub fn probe(&self, mosrun_args: &[&str], probe_args: &[&str]) -> std::process::Child {
        self.probe_on(1, mosrun_args, probe_args)
    }

    /// [`probe`](Self::probe) on node I.
    pub fn probe_on(
        &self,
        node: u16,
        mosrun_args: &[&str],
        probe_args: &[&str],
    ) -> std::process::Child {
        let probe = user_tool("mosix-probe");
        let mut a: Vec<&str> = mosrun_args.to_vec();
        a.push(probe.to_str().expect("tool path"));
        a.extend_from_slice(probe_args);
        self.job(node, &a)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosrun")
    }

    /// Where node 1's process `pid` runs by its `mps` (0 = home), if it lists it.
    pub fn node_of(&self, pid: u32) -> Option<u64> {
        self.row(pid).and_then(|r| r["node"].as_u64())
    }

    /// Node 1's `mps` row of its process `pid`, if it lists it.
    pub fn row(&self, pid: u32) -> Option<serde_json::Value> {
        self.mps(1, false).into_iter().find(|r| r["pid"] == pid)
    }

    /// Waits at most `limit` for `cond`; whether it came true.
    pub fn eventually(&self, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        cond()
    }

    /// Waits at most `limit` for `cond` on node `on`'s view; returns how long it took, or what
    /// the view looked like at the end.
    pub fn wait_view(
        &self,
        on: u16,
        limit: Duration,
        cond: impl Fn(&ClusterView) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            if let Some(v) = self.view(on) {
                if cond(&v) {
                    return Ok(start.elapsed());
                }
                last = Some(v);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("after {limit:?}, node {on} sees: {last:#?}"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Err(e) = vcluster::down(&self.cluster.name) {
            eprintln!("removing test cluster {}: {e:#}", self.cluster.name);
        }
    }
}

/// Runs `f` on a thread that has entered node I's network namespace (setns of a network
/// namespace only affects the calling thread, so the test process stays where it is).
pub fn in_netns<T: Send + 'static>(
    cluster: &Cluster,
    node: u16,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let path = Path::new("/run/netns").join(format!("{}-n{node}", cluster.name));
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// The value of one series (`name{labels}` exactly as the text format writes it) in metrics
/// text; 0 when the series is absent (a counter never bumped).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Checks metrics text with `promtool check metrics` (Debian's `prometheus` package); returns
/// false, after saying why, when promtool is missing (a failure under CI).
pub fn promtool_accepts(text: &str, what: &str) -> bool {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !in_ci(),
                "promtool: {e}, and under CI=true a skip is a failure"
            );
            eprintln!("SKIP promtool check of {what}: {e} (apt install prometheus)");
            return false;
        }
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused {what}: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Removes leftovers and checks that nothing of cluster `name` remains.
pub fn assert_gone(name: &str) {
    let netns = vcluster::netns_of(name);
    assert!(netns.is_empty(), "network namespaces left: {netns:?}");
    assert!(
        !Path::new(vcluster::STATE_ROOT).join(name).exists(),
        "state directory left"
    );
    let cg_name = format!("mosix-vc.{name}");
    let mut left = Vec::new();
    for root in [
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup",
    ] {
        find_named(Path::new(root), &cg_name, 0, &mut left);
    }
    assert!(left.is_empty(), "cgroups left: {left:?}");
    let prefix = format!(
        "{}_",
        mosix_kmod::split::procs::dir_name(&Path::new(vcluster::STATE_ROOT).join(name))
    );
    let procs: Vec<String> = std::fs::read_dir(mosix_kmod::split::procs::MOUNT)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        procs.is_empty(),
        "MOSIX process directories left: {procs:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&format!("{}/{name}/", vcluster::STATE_ROOT)),
        "mounts left"
    );
}

fn find_named(dir: &Path, name: &str, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 4 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name() == name {
                    out.push(e.path());
                } else {
                    find_named(&e.path(), name, depth + 1, out);
                }
            }
        }
    }
}

/// Waits at most `limit` for `child` to end; kills it and fails, naming `what`, if it does not.
pub fn ends_within(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("waiting for a child") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the process was still there after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `mosix-probe dirty ARGS` (MiB, MB/s, seconds, …) at node 1 of `c` and waits until
/// it has written its memory once.
pub fn dirty(c: &TestCluster, args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let probe = user_tool("mosix-probe");
    let mut argv = vec![probe.to_str().expect("a UTF-8 path"), "dirty"];
    argv.extend_from_slice(args);
    let mut child = c
        .job(1, &argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosix-probe dirty starts");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the probe speaks");
    assert_eq!(line.trim(), "ready");
    (child, out)
}

/// Waits for the probe: whether it found every page right, and all it printed after `ready`
/// (standard error, then standard output).
pub fn finish(mut child: Child, mut out: BufReader<ChildStdout>) -> (bool, String) {
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("the probe's output");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("the probe's errors");
    (child.wait().expect("the probe ends").success(), err + &rest)
}
