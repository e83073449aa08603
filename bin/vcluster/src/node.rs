//! Running programs inside a node (its network namespace, cgroups and mount namespace, with its
//! `MOSIX_ETC` and `MOSIX_RUNDIR`), and starting and stopping its node service.

use std::ffi::OsString;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mosix_core::client::Client;
use mosix_core::config::{ENV_ETC, ENV_RUNDIR, Paths};
use nix::sched::CloneFlags;

use crate::{Cluster, net};

impl Cluster {
    /// A command that runs `program args` inside node I: its network namespace, its cgroups,
    /// its mount namespace if any, with its `MOSIX_ETC` and `MOSIX_RUNDIR`.
    pub fn command(&self, node: u16, program: &OsString, args: &[OsString]) -> Result<Command> {
        self.check_node(node)?;
        let netns_path = Path::new("/run/netns").join(net::netns_name(&self.name, node));
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

    /// Replaces this process with `program args` run inside node I, with the suite's
    /// directory first on its `PATH` (`vcluster exec 1 -- mon` runs this suite's `mon`).
    pub fn exec(&self, node: u16, program: &OsString, args: &[OsString]) -> anyhow::Error {
        match self.command(node, program, args) {
            Ok(mut c) => anyhow::Error::new(c.env("PATH", self.path_with_tools()).exec())
                .context(format!("cannot run {}", program.to_string_lossy())),
            Err(e) => e,
        }
    }

    /// This process's `PATH` (the user's default without one) with the suite's directory
    /// first.
    pub fn path_with_tools(&self) -> OsString {
        let mut p = self.tools.clone().into_os_string();
        p.push(":");
        p.push(std::env::var_os("PATH").unwrap_or_else(|| crate::USER_PATH.into()));
        p
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
pub(crate) fn service_pid(paths: &Paths) -> Option<u32> {
    Some(Client::connect(paths).ok()?.ping().ok()?.pid)
}

fn proc_is_zombie(pid: u32) -> bool {
    procfs::process::Process::new(i32::try_from(pid).unwrap_or(0))
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state == 'Z')
}
