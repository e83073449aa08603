//! The guests' own cgroup: every process of another node running here lives in it, under the
//! memory limit the administrator gives all guests together (`[guests] memory_max` in
//! `mosix.toml`), and the service empties it when it starts and when it stops, so that no guest
//! outlives its service by any means — a guest also dies with its supervisor thread
//! (`PR_SET_PDEATHSIG`, armed after its credentials change and out of its reach), but a death
//! signal is a promise of the kernel's, and the cgroup is the proof.
//!
//! It is a child, `mosix-guests`, of the node's cgroup (or of the service's own, when the node
//! is the machine): in the memory hierarchy on cgroup v1 (guests stay in the node's cpu
//! cgroup), and in the unified hierarchy on v2, where the memory controller is enabled for it
//! when the node's cgroup allows (a cgroup that holds processes itself cannot hand controllers
//! to children: then guests are contained but not limited, and the service says so).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupError, Cgroups, Version, write_file};

/// The name of the guests' cgroup below the node's.
pub const NAME: &str = "mosix-guests";

/// The guests' cgroup of this node.
#[derive(Debug, Clone)]
pub struct GuestCgroup {
    version: Version,
    dir: PathBuf,
    /// Whether the memory limit applies.
    pub limited: bool,
}

impl GuestCgroup {
    /// Makes (or finds) the guests' cgroup below `node_dir` (the node cgroup's directory in the
    /// memory hierarchy, or `None`: this service's own cgroup), empties it of whatever an
    /// earlier service left, and sets `memory_max` on it.
    pub fn setup(
        cgroups: &Cgroups,
        node_dir: Option<&Path>,
        memory_max: Option<u64>,
    ) -> Result<GuestCgroup, CgroupError> {
        let (version, hierarchy, controller) = match cgroups.v1("memory") {
            Some(h) => (Version::V1, h, Some("memory")),
            None => match cgroups.v2() {
                Some(h) => (Version::V2, h, None),
                None => {
                    return Err(CgroupError::Missing {
                        path: "a memory cgroup hierarchy".into(),
                    });
                }
            },
        };
        let parent_dir = match node_dir {
            Some(d) => d.to_owned(),
            None => {
                let own = cgroups.own_path(controller).unwrap_or("/");
                Cgroups::dir(hierarchy, own).ok_or_else(|| CgroupError::Missing {
                    path: own.to_owned(),
                })?
            }
        };
        let dir = parent_dir.join(NAME);
        if let Err(source) = std::fs::create_dir(&dir)
            && source.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(CgroupError::File { path: dir, source });
        }
        let mut g = GuestCgroup {
            version,
            dir,
            limited: false,
        };
        g.kill_all();
        if let Some(max) = memory_max {
            g.limited = match version {
                Version::V1 => {
                    // cgroup v1 keeps limits in whole pages.
                    let page = procfs::page_size();
                    let max = max / page * page;
                    write_file(&g.dir.join("memory.limit_in_bytes"), &max.to_string()).is_ok()
                }
                Version::V2 => {
                    let _ = write_file(&parent_dir.join("cgroup.subtree_control"), "+memory");
                    write_file(&g.dir.join("memory.max"), &max.to_string()).is_ok()
                }
            };
        }
        Ok(g)
    }

    /// Where it is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Puts process `pid` (a guest's stub, before anything of the guest is built) into it.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The processes in it.
    pub fn procs(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process in it and waits (a little) until none is left; returns how many
    /// there were.
    pub fn kill_all(&self) -> usize {
        let first = self.procs();
        if first.is_empty() {
            return 0;
        }
        if self.version == Version::V2 {
            let _ = write_file(&self.dir.join("cgroup.kill"), "1");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.procs();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                // SAFETY: kill(2) takes two integers; a pid that ended meanwhile only fails.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        first.len()
    }

    /// Removes it (on a clean stop, once it is empty).
    pub fn remove(&self) {
        self.kill_all();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
