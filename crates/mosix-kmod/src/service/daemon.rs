//! Starting the node service in the background (`setpe -w` without `--foreground`).
//!
//! The service is a fresh execution of the same program in foreground mode, in a new session,
//! with its output appended to the node's log and the map handed over on its standard input.
//! Executing anew instead of forking keeps the service free of whatever state the starting
//! process had (threads, a tokio runtime) and makes it look the same in `ps` as a service
//! started by systemd. The starter waits until the service answers on its control socket, and if
//! the service dies first, reports the lines it logged.
//!
//! Such a service's standard output and error *are* `RUNDIR/mosix.log`, so nothing else would
//! ever cut the file short: [`keep_log_small`] renames it to `mosix.log.1` once it passes
//! `[log] max_kib` and points the service's output at a new one. A service whose output is not
//! that file (under systemd, where journald takes stderr; in a terminal; in a test that pipes
//! it) rotates nothing.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
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

/// How often [`keep_log_small`] looks at the size of the log.
pub const LOG_CHECK: Duration = Duration::from_millis(250);

/// If this process's standard error is the log file `paths.log()` (as [`start`] arranges),
/// starts a thread that rotates it whenever it passes `max_bytes`: the file is renamed to
/// `mosix.log.1` (replacing the one before) and standard output and error are pointed at a new
/// `mosix.log`. The file is looked at every [`LOG_CHECK`], so it stays under the cap plus what
/// the service logs in that time (its lines about peers are rate-limited). Returns whether it
/// rotates.
pub fn keep_log_small(paths: &Paths, max_bytes: u64) -> bool {
    use std::os::fd::AsFd;
    let path = paths.log();
    let ours = |fd: std::os::fd::BorrowedFd<'_>| {
        let (Ok(a), Ok(b)) = (nix::sys::stat::fstat(fd), nix::sys::stat::stat(&path)) else {
            return false;
        };
        a.st_dev == b.st_dev && a.st_ino == b.st_ino
    };
    if !ours(std::io::stderr().as_fd()) {
        return false;
    }
    let spawned = std::thread::Builder::new()
        .name("mosix-log".into())
        .spawn(move || {
            loop {
                std::thread::sleep(LOG_CHECK);
                let stderr = std::io::stderr();
                let Ok(st) = nix::sys::stat::fstat(stderr.as_fd()) else {
                    continue;
                };
                let stdout_too = {
                    let out = std::io::stdout();
                    nix::sys::stat::fstat(out.as_fd())
                        .is_ok_and(|o| o.st_dev == st.st_dev && o.st_ino == st.st_ino)
                };
                match rotate_if_full(&path, st.st_size as u64, max_bytes) {
                    Ok(Some(new)) => {
                        let _ = nix::unistd::dup2_stderr(&new);
                        if stdout_too {
                            let _ = nix::unistd::dup2_stdout(&new);
                        }
                        tracing::info!(
                            "log rotated at {} KiB; the previous lines are in {}.1",
                            st.st_size / 1024,
                            path.display()
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("rotating {}: {e}; not rotating any more", path.display());
                        return;
                    }
                }
            }
        });
    spawned.is_ok()
}

/// The name the log has after it was rotated: `mosix.log.1`.
pub fn rotated(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    log.with_file_name(name)
}

/// If the log at `path`, now `size` bytes, is over `max`: renames it to [`rotated`] and returns
/// a new, empty log to write to.
fn rotate_if_full(path: &Path, size: u64, max: u64) -> std::io::Result<Option<std::fs::File>> {
    if size <= max {
        return Ok(None);
    }
    std::fs::rename(path, rotated(path))?;
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_is_renamed_and_begun_anew() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mosix.log");
        std::fs::write(&log, "old old old\n").unwrap();
        assert!(rotate_if_full(&log, 12, 12).unwrap().is_none());
        let mut f = rotate_if_full(&log, 13, 12).unwrap().unwrap();
        writeln!(f, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "new\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mosix.log.1")).unwrap(),
            "old old old\n"
        );
        // The next rotation replaces mosix.log.1.
        rotate_if_full(&log, 100, 12).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mosix.log.1")).unwrap(),
            "new\n"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
    }

    #[test]
    fn output_that_is_not_the_log_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            etc: dir.path().into(),
            rundir: dir.path().into(),
        };
        std::fs::write(paths.log(), "x").unwrap();
        // The test's stderr is a pipe or a terminal, never this file.
        assert!(!keep_log_small(&paths, 16 * 1024));
    }
}
