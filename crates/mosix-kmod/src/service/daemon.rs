//! Starting the node service in the background (`setpe -w` without `--foreground`).
//!
//! The service is a fresh execution of the same program in foreground mode, in a new session,
//! with its output appended to the node's log and the map handed over on its standard input.
//! Executing anew instead of forking keeps the service free of whatever state the starting
//! process had (threads, a tokio runtime) and makes it look the same in `ps` as a service
//! started by systemd. The starter waits until the service answers on its control socket, and if
//! the service dies first, reports the lines it logged.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mosix_core::client::ServiceInfo;
use mosix_core::config::{ENV_ETC, ENV_RUNDIR, Paths};

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The program (normally `setpe` itself).
    pub exe: PathBuf,
    /// Its arguments (which must select foreground mode).
    pub args: Vec<OsString>,
    /// What to write to its standard input (the map).
    pub stdin: Vec<u8>,
    /// The node's files.
    pub paths: Paths,
    /// How long to wait for the service to answer.
    pub timeout: Duration,
}

/// Why the service did not come up.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// It could not be started at all.
    #[error("cannot start {exe}: {source}")]
    Spawn {
        /// The program.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log could not be opened.
    #[error("{path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited before serving.
    #[error("the MOSIX service exited ({status}) before it served:\n{log}")]
    Exited {
        /// How it ended.
        status: String,
        /// What it logged.
        log: String,
    },
    /// It did not answer in time.
    #[error("the MOSIX service did not answer within {0:?} (see {1}); it was stopped")]
    Timeout(Duration, String),
}

/// Makes a path absolute without requiring it to exist.
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Starts the service in the background and waits until it answers.
pub fn start(spec: &Spec) -> Result<ServiceInfo, DaemonError> {
    let paths = Paths {
        etc: absolute(&spec.paths.etc),
        rundir: absolute(&spec.paths.rundir),
    };
    let log_path = paths.log();
    let log_err = |source| DaemonError::Log {
        path: log_path.clone(),
        source,
    };
    std::fs::create_dir_all(&paths.rundir).map_err(log_err)?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(log_err)?;
    let offset = log.seek(SeekFrom::End(0)).map_err(log_err)?;
    let err_log = log.try_clone().map_err(log_err)?;

    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args)
        .env(ENV_ETC, &paths.etc)
        .env(ENV_RUNDIR, &paths.rundir)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log.try_clone().map_err(log_err)?))
        .stderr(Stdio::from(err_log));
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // functions may be called; setsid(2) is one, and the closure touches no memory of the
    // parent's other threads.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| DaemonError::Spawn {
        exe: spec.exe.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A service that dies at once closes the pipe; the exit is reported below.
        let _ = stdin.write_all(&spec.stdin);
    }

    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = log.flush();
            return Err(DaemonError::Exited {
                status: status.to_string(),
                log: read_from(&log_path, offset),
            });
        }
        if let Some(info) = crate::service::running(&paths)
            && info.pid == child.id()
        {
            return Ok(info);
        }
        if started.elapsed() > spec.timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DaemonError::Timeout(
                spec.timeout,
                log_path.display().to_string(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_from(path: &std::path::Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.take(64 * 1024).read_to_string(&mut s);
    }
    let s = s.trim_end().to_owned();
    if s.is_empty() {
        "(it logged nothing)".to_owned()
    } else {
        s
    }
}
