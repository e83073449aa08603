//! Jobs of an unprivileged user. A node takes no process of root as a guest (unless its
//! `mosix.toml` says `guests.accept_root`), so the jobs the demo and the cluster tests start to
//! show processes migrate run as `nobody` (uid and gid 65534, no supplementary groups), as a
//! real user's jobs would.
//!
//! [`Cluster::command`] enters a node in a `pre_exec` closure, which runs after std's own
//! `Command::uid`, so the identity cannot be dropped there: the program is wrapped in
//! util-linux's `setpriv` instead ([`as_user`], [`Cluster::user_command`]).
//!
//! `nobody` must also be able to run the suite's programs a job runs (`mosrun`, the probes).
//! When the build directory is out of its reach (a checkout under a 0700 home), [`UserTools`]
//! copies them once into a directory of their own under `/run`, one per process that made
//! copies, and removes the directories of processes that are gone.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::Cluster;

/// The unprivileged user's uid (`nobody`).
pub const USER_UID: u32 = 65534;
/// The unprivileged user's gid (`nogroup`).
pub const USER_GID: u32 = 65534;
/// Where [`UserTools`] puts copies: `COPIES/PID`, one directory per process.
pub const COPIES: &str = "/run/mosix-user-tools";
/// The user's `PATH` (a user's default on Debian): root's may name directories the user cannot
/// reach (`/root/.pyenv/shims`, say), where the user would find a program it cannot run.
pub const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The user's home directory (`nobody`'s in `/etc/passwd`).
pub const USER_HOME: &str = "/nonexistent";

/// `program args` wrapped so that it runs as the unprivileged user: `setpriv --reuid=65534
/// --regid=65534 --clear-groups program args` (real, effective and saved ids all 65534).
pub fn as_user(program: &OsStr, args: &[OsString]) -> (OsString, Vec<OsString>) {
    let mut all: Vec<OsString> = vec![
        format!("--reuid={USER_UID}").into(),
        format!("--regid={USER_GID}").into(),
        "--clear-groups".into(),
        program.to_owned(),
    ];
    all.extend(args.iter().cloned());
    ("setpriv".into(), all)
}

impl Cluster {
    /// A command that runs `program args` inside node I as the unprivileged user (see
    /// [`as_user`]), with the user's `HOME` and `PATH` (the cluster's tools first);
    /// everything else as [`Cluster::command`].
    pub fn user_command(
        &self,
        node: u16,
        program: &OsString,
        args: &[OsString],
    ) -> Result<Command> {
        let (setpriv, all) = as_user(program, args);
        let mut cmd = self.command(node, &setpriv, &all)?;
        let path = format!("{}:{USER_PATH}", self.tools.display());
        cmd.env("PATH", path).env("HOME", USER_HOME);
        Ok(cmd)
    }
}

pub use mosix_core::cli::others_can_run;

/// Programs of the suite where the unprivileged user can run them: their own directory if it
/// can, otherwise copies in `COPIES/PID` (removed when this is dropped).
#[derive(Debug)]
pub struct UserTools {
    dir: PathBuf,
    copied: bool,
}

impl UserTools {
    /// Programs `names` of directory `tools`, where the unprivileged user can run them.
    pub fn new(tools: &Path, names: &[&str]) -> Result<UserTools> {
        if names.iter().all(|n| others_can_run(&tools.join(n))) {
            return Ok(UserTools {
                dir: tools.to_owned(),
                copied: false,
            });
        }
        let root = Path::new(COPIES);
        make_public_dir(root)?;
        remove_orphans(root);
        let dir = root.join(std::process::id().to_string());
        // A directory of this pid is an earlier process's that had the same pid.
        let _ = fs::remove_dir_all(&dir);
        make_public_dir(&dir)?;
        let made = UserTools { dir, copied: true };
        for n in names {
            let (from, to) = (tools.join(n), made.dir.join(n));
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755))
                .with_context(|| to.display().to_string())?;
            if !others_can_run(&to) {
                bail!(
                    "{} is not usable by other users, although it was made so",
                    to.display()
                );
            }
        }
        Ok(made)
    }

    /// The directory they are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Program `name`'s path.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether they are copies (the build directory is out of the user's reach).
    pub fn copied(&self) -> bool {
        self.copied
    }
}

impl Drop for UserTools {
    fn drop(&mut self) {
        if self.copied {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Creates `dir` (mode 0755) unless it is there, and checks that it is a real directory of
/// root's that only root may change: copies in it are then as safe as the originals.
fn make_public_dir(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let m = fs::symlink_metadata(dir).with_context(|| dir.display().to_string())?;
    if !m.is_dir() || m.uid() != 0 {
        bail!(
            "{} is not a directory of root's; remove it and try again",
            dir.display()
        );
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| dir.display().to_string())
}

/// Removes the copies of processes that are gone.
fn remove_orphans(root: &Path) {
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        let alive = e
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_wrapped_in_setpriv() {
        let (p, a) = as_user(OsStr::new("mosrun"), &["-2".into(), "sort".into()]);
        assert_eq!(p, "setpriv");
        assert_eq!(
            a,
            [
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "mosrun",
                "-2",
                "sort"
            ]
        );
    }
}
