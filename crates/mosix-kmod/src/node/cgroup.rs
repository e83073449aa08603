//! Control groups as the size of a node.
//!
//! A node service started inside a cgroup with a CPU quota or a memory limit measures that
//! cgroup as its node: CPUs from the quota, load from the runnable tasks of the cgroup (and its
//! children), memory from the limit and the usage. This is what makes several virtual nodes on
//! one machine behave like small separate machines, and what makes a service in a container
//! with limits measure the container.
//!
//! Both cgroup versions are supported:
//!
//! * **v1** (the build machines): each controller is its own hierarchy, mounted at
//!   `/sys/fs/cgroup/<controller>`; a process has one path per controller
//!   (`/proc/self/cgroup` lines `N:cpu:/path`). Quota: `cpu.cfs_quota_us` / `cpu.cfs_period_us`
//!   (−1 = none); memory: `memory.limit_in_bytes`, `memory.usage_in_bytes`, `memory.stat`;
//!   CPU time: `cpuacct.usage` (the cpuacct controller may be a separate hierarchy); threads:
//!   `tasks`.
//! * **v2**: one hierarchy (`0::/path`); `cpu.max` ("max 100000" or "50000 100000"),
//!   `memory.max`, `memory.current`, `memory.stat`, `cpu.stat` (`usage_usec`), `cgroup.threads`.
//!
//! Limits are inherited: the effective quota or limit of a cgroup is the tightest along its path
//! up to the root of the mount, so ancestors are read too. The files are a handful of integers;
//! they are read directly rather than through a cgroup-management crate.

use std::fs;
use std::path::{Path, PathBuf};

/// Which cgroup interface a hierarchy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// v1: the controllers bound to it; v2: empty.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup path that is the root of this mount (usually `/`).
    pub mount_root: String,
}

/// The cgroup hierarchies of this process, and its place in each.
#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    hierarchies: Vec<Hierarchy>,
    /// (v1 controllers or empty for v2, path) from /proc/self/cgroup.
    membership: Vec<(Vec<String>, String)>,
}

/// A problem reading cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// /proc could not be read.
    #[error("reading {what}: {source}")]
    Proc {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: procfs::ProcError,
    },
    /// A configured cgroup does not exist.
    #[error(
        "cgroup {path} does not exist in any mounted cgroup hierarchy with the cpu or memory controller"
    )]
    Missing {
        /// The path.
        path: String,
    },
    /// A cgroup file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Cgroups {
    /// Reads the mounted hierarchies and this process's membership.
    pub fn discover() -> Result<Cgroups, CgroupError> {
        let me = procfs::process::Process::myself().map_err(|source| CgroupError::Proc {
            what: "/proc/self",
            source,
        })?;
        let mounts = me.mountinfo().map_err(|source| CgroupError::Proc {
            what: "/proc/self/mountinfo",
            source,
        })?;
        let mut hierarchies = Vec::new();
        for m in mounts {
            let version = match m.fs_type.as_str() {
                "cgroup" => Version::V1,
                "cgroup2" => Version::V2,
                _ => continue,
            };
            let controllers = if version == Version::V1 {
                m.super_options
                    .keys()
                    .filter(|k| {
                        matches!(
                            k.as_str(),
                            "cpu" | "cpuacct" | "memory" | "cpuset" | "pids" | "freezer"
                        )
                    })
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            hierarchies.push(Hierarchy {
                version,
                controllers,
                mount_point: m.mount_point.clone(),
                mount_root: m.root.clone(),
            });
        }
        let membership = me
            .cgroups()
            .map_err(|source| CgroupError::Proc {
                what: "/proc/self/cgroup",
                source,
            })?
            .0
            .into_iter()
            .map(|c| (c.controllers, c.pathname))
            .collect();
        Ok(Cgroups {
            hierarchies,
            membership,
        })
    }

    /// Builds the view from explicit parts (tests).
    pub fn from_parts(hierarchies: Vec<Hierarchy>, membership: Vec<(Vec<String>, String)>) -> Self {
        Cgroups {
            hierarchies,
            membership,
        }
    }

    /// The v1 hierarchy carrying `controller`, if mounted.
    pub fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| h.version == Version::V1 && h.controllers.iter().any(|c| c == controller))
    }

    /// The v2 hierarchy, if mounted and if it has `controller` enabled at its root.
    pub fn v2_with(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| {
            h.version == Version::V2
                && read_string(&h.mount_point.join("cgroup.controllers"))
                    .is_some_and(|s| s.split_whitespace().any(|c| c == controller))
        })
    }

    /// The unified (v2) hierarchy, if mounted.
    pub fn v2(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.version == Version::V2)
    }

    /// This process's cgroup path in the hierarchy of `controller` (v1), or in v2.
    pub fn own_path(&self, controller: Option<&str>) -> Option<&str> {
        self.membership
            .iter()
            .find(|(ctrls, _)| match controller {
                Some(c) => ctrls.iter().any(|x| x == c),
                None => ctrls.is_empty(),
            })
            .map(|(_, p)| p.as_str())
    }

    /// The directory of cgroup `path` in hierarchy `h`, if `path` lies under the mount's root.
    pub fn dir(h: &Hierarchy, path: &str) -> Option<PathBuf> {
        let rel = strip_root(path, &h.mount_root)?;
        Some(if rel.is_empty() {
            h.mount_point.clone()
        } else {
            h.mount_point.join(rel)
        })
    }

    /// The node cgroup this service should measure: the configured path, or this process's own
    /// cgroup if it (or an ancestor) has a CPU quota or a memory limit. `None` means "measure the
    /// machine".
    pub fn node_cgroup(&self, configured: Option<&str>) -> Result<Option<NodeCgroup>, CgroupError> {
        if let Some(path) = configured {
            let ncg = self.resolve(path, path, path);
            if ncg.cpu_dir.as_ref().is_none_or(|d| !d.is_dir())
                && ncg.mem_dir.as_ref().is_none_or(|d| !d.is_dir())
            {
                return Err(CgroupError::Missing {
                    path: path.to_owned(),
                });
            }
            return Ok(Some(ncg));
        }
        // v1 first (controllers in v1 hierarchies are not available in v2), then v2.
        let (cpu, mem) = if self.v1("cpu").is_some() || self.v1("memory").is_some() {
            (
                self.own_path(Some("cpu")).unwrap_or("/"),
                self.own_path(Some("memory")).unwrap_or("/"),
            )
        } else {
            let p = self.own_path(None).unwrap_or("/");
            (p, p)
        };
        let acct = self.own_path(Some("cpuacct")).unwrap_or(cpu);
        let ncg = self.resolve(cpu, acct, mem);
        if ncg.cpu_quota().is_some() || ncg.mem_limit().is_some() {
            Ok(Some(ncg))
        } else {
            Ok(None)
        }
    }

    fn resolve(&self, cpu_path: &str, acct_path: &str, mem_path: &str) -> NodeCgroup {
        if let (Some(c), Some(m)) = (self.v1("cpu"), self.v1("memory")) {
            let acct = self.v1("cpuacct");
            return NodeCgroup {
                version: Version::V1,
                path: cpu_path.to_owned(),
                cpu_dir: Cgroups::dir(c, cpu_path),
                cpu_root: Some(c.mount_point.clone()),
                acct_dir: acct.and_then(|h| Cgroups::dir(h, acct_path)),
                mem_dir: Cgroups::dir(m, mem_path),
                mem_root: Some(m.mount_point.clone()),
            };
        }
        let v2 = self.hierarchies.iter().find(|h| h.version == Version::V2);
        let dir = v2.and_then(|h| Cgroups::dir(h, cpu_path));
        NodeCgroup {
            version: Version::V2,
            path: cpu_path.to_owned(),
            cpu_dir: dir.clone(),
            cpu_root: v2.map(|h| h.mount_point.clone()),
            acct_dir: dir.clone(),
            mem_dir: dir,
            mem_root: v2.map(|h| h.mount_point.clone()),
        }
    }
}

fn strip_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(rest.trim_start_matches('/'))
}

/// The cgroup that is a node: where to read its quota, limit, usage and tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCgroup {
    /// v1 or v2.
    pub version: Version,
    /// The cgroup path (of the cpu controller in v1).
    pub path: String,
    cpu_dir: Option<PathBuf>,
    cpu_root: Option<PathBuf>,
    acct_dir: Option<PathBuf>,
    mem_dir: Option<PathBuf>,
    mem_root: Option<PathBuf>,
}

impl NodeCgroup {
    /// A node cgroup from explicit directories (tests, and the virtual cluster which creates them).
    pub fn from_dirs(
        version: Version,
        path: &str,
        cpu_dir: Option<PathBuf>,
        acct_dir: Option<PathBuf>,
        mem_dir: Option<PathBuf>,
    ) -> NodeCgroup {
        NodeCgroup {
            version,
            path: path.to_owned(),
            cpu_root: cpu_dir.clone(),
            cpu_dir,
            acct_dir,
            mem_root: mem_dir.clone(),
            mem_dir,
        }
    }

    /// The effective CPU quota in CPUs (1.5 = one and a half CPUs), the tightest along the path.
    pub fn cpu_quota(&self) -> Option<f64> {
        let dir = self.cpu_dir.as_ref()?;
        let mut best: Option<f64> = None;
        for d in ancestors(dir, self.cpu_root.as_deref()) {
            let q = match self.version {
                Version::V1 => {
                    let quota = read_i64(&d.join("cpu.cfs_quota_us"));
                    let period = read_i64(&d.join("cpu.cfs_period_us"));
                    match (quota, period) {
                        (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
                        _ => None,
                    }
                }
                Version::V2 => read_string(&d.join("cpu.max")).and_then(|s| parse_cpu_max(&s)),
            };
            if let Some(q) = q {
                best = Some(best.map_or(q, |b: f64| b.min(q)));
            }
        }
        best
    }

    /// The effective memory limit in bytes, the tightest along the path.
    pub fn mem_limit(&self) -> Option<u64> {
        let dir = self.mem_dir.as_ref()?;
        let mut best: Option<u64> = None;
        for d in ancestors(dir, self.mem_root.as_deref()) {
            let l = match self.version {
                Version::V1 => read_u64(&d.join("memory.limit_in_bytes")),
                Version::V2 => {
                    read_string(&d.join("memory.max")).and_then(|s| s.trim().parse::<u64>().ok())
                }
            };
            // v1 reports "no limit" as a huge page-rounded number.
            if let Some(l) = l.filter(|&l| l < (1u64 << 60)) {
                best = Some(best.map_or(l, |b| b.min(l)));
            }
        }
        best
    }

    /// Memory charged to the cgroup, and how much of it is inactive file cache (reclaimable).
    pub fn mem_usage(&self) -> Option<(u64, u64)> {
        let dir = self.mem_dir.as_ref()?;
        let (usage, key) = match self.version {
            Version::V1 => (
                read_u64(&dir.join("memory.usage_in_bytes"))?,
                "total_inactive_file",
            ),
            Version::V2 => (read_u64(&dir.join("memory.current"))?, "inactive_file"),
        };
        let inactive = read_string(&dir.join("memory.stat"))
            .and_then(|s| stat_value(&s, key))
            .unwrap_or(0);
        Some((usage, inactive.min(usage)))
    }

    /// CPU time used by the cgroup so far, nanoseconds.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        let dir = self.acct_dir.as_ref()?;
        match self.version {
            Version::V1 => read_u64(&dir.join("cpuacct.usage")),
            Version::V2 => read_string(&dir.join("cpu.stat"))
                .and_then(|s| stat_value(&s, "usage_usec"))
                .map(|us| us.saturating_mul(1000)),
        }
    }

    /// The thread ids of the cgroup and all its descendants.
    pub fn threads(&self) -> Vec<i32> {
        let mut out = Vec::new();
        if let Some(dir) = self.cpu_dir.as_ref().or(self.mem_dir.as_ref()) {
            let file = match self.version {
                Version::V1 => "tasks",
                Version::V2 => "cgroup.threads",
            };
            collect_threads(dir, file, &mut out, 0);
        }
        out
    }

    /// Its directory in the memory hierarchy (the unified one on v2).
    pub fn mem_dir(&self) -> Option<&Path> {
        self.mem_dir.as_deref()
    }

    /// The directory holding the cgroup's tasks (for `cgroup.procs`).
    pub fn task_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = [&self.cpu_dir, &self.acct_dir, &self.mem_dir]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        v.dedup();
        v
    }
}

fn collect_threads(dir: &Path, file: &str, out: &mut Vec<i32>, depth: usize) {
    if let Some(s) = read_string(&dir.join(file)) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if depth > 16 {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_threads(&e.path(), file, out, depth + 1);
            }
        }
    }
}

/// `dir` and its parents up to and including `root`.
fn ancestors<'a>(dir: &'a Path, root: Option<&'a Path>) -> impl Iterator<Item = &'a Path> + 'a {
    let mut done = false;
    dir.ancestors().take_while(move |d| {
        if done {
            return false;
        }
        if root.is_none_or(|r| *d == r) {
            done = true;
        }
        root.is_none_or(|r| d.starts_with(r))
    })
}

fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next().and_then(|p| p.parse().ok()).unwrap_or(100_000.0);
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let q: f64 = quota.parse().ok()?;
    Some(q / period)
}

fn stat_value(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

fn read_string(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok()
}

fn read_u64(p: &Path) -> Option<u64> {
    read_string(p)?.trim().parse().ok()
}

fn read_i64(p: &Path) -> Option<i64> {
    read_string(p)?.trim().parse().ok()
}

/// Writes a value into a cgroup control file.
pub fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::File {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (p, content) in files {
            let path = d.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        d
    }

    fn v1(root: &Path) -> Cgroups {
        let h = |c: &str| Hierarchy {
            version: Version::V1,
            controllers: vec![c.to_owned()],
            mount_point: root.join(c),
            mount_root: "/".into(),
        };
        Cgroups::from_parts(
            vec![h("cpu"), h("cpuacct"), h("memory")],
            vec![
                (vec!["cpu".into()], "/vc/node1".into()),
                (vec!["cpuacct".into()], "/vc/node1".into()),
                (vec!["memory".into()], "/sub/vc/node1".into()),
            ],
        )
    }

    #[test]
    fn v1_quota_limit_usage_and_threads() {
        let d = tree(&[
            ("cpu/cpu.cfs_quota_us", "-1\n"),
            ("cpu/cpu.cfs_period_us", "100000\n"),
            ("cpu/vc/cpu.cfs_quota_us", "150000\n"),
            ("cpu/vc/cpu.cfs_period_us", "100000\n"),
            ("cpu/vc/node1/cpu.cfs_quota_us", "50000\n"),
            ("cpu/vc/node1/cpu.cfs_period_us", "100000\n"),
            ("cpu/vc/node1/tasks", "10\n11\n"),
            ("cpu/vc/node1/guests/tasks", "12\n"),
            ("cpuacct/vc/node1/cpuacct.usage", "123456789\n"),
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory/sub/vc/node1/memory.limit_in_bytes", "536870912\n"),
            ("memory/sub/vc/node1/memory.usage_in_bytes", "100000000\n"),
            (
                "memory/sub/vc/node1/memory.stat",
                "cache 5\ntotal_inactive_file 1000000\n",
            ),
        ]);
        let ncg = v1(d.path()).node_cgroup(None).unwrap().unwrap();
        assert_eq!(ncg.version, Version::V1);
        assert_eq!(ncg.cpu_quota(), Some(0.5));
        assert_eq!(ncg.mem_limit(), Some(536_870_912));
        assert_eq!(ncg.mem_usage(), Some((100_000_000, 1_000_000)));
        assert_eq!(ncg.cpu_usage_ns(), Some(123_456_789));
        let mut t = ncg.threads();
        t.sort();
        assert_eq!(t, vec![10, 11, 12]);
    }

    #[test]
    fn an_ancestor_limit_counts() {
        let d = tree(&[
            ("cpu/vc/cpu.cfs_quota_us", "150000\n"),
            ("cpu/vc/cpu.cfs_period_us", "100000\n"),
            ("cpu/vc/node1/cpu.cfs_quota_us", "-1\n"),
            ("cpu/vc/node1/cpu.cfs_period_us", "100000\n"),
            (
                "memory/sub/vc/node1/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        let ncg = v1(d.path()).node_cgroup(None).unwrap().unwrap();
        assert_eq!(ncg.cpu_quota(), Some(1.5));
        assert_eq!(ncg.mem_limit(), None);
    }

    #[test]
    fn no_limit_anywhere_means_the_machine() {
        let d = tree(&[
            ("cpu/vc/node1/cpu.cfs_quota_us", "-1\n"),
            ("cpu/vc/node1/cpu.cfs_period_us", "100000\n"),
            (
                "memory/sub/vc/node1/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert!(v1(d.path()).node_cgroup(None).unwrap().is_none());
    }

    #[test]
    fn v2_files() {
        let d = tree(&[
            ("cgroup.controllers", "cpu memory\n"),
            ("mosix/node2/cpu.max", "25000 100000\n"),
            ("mosix/node2/memory.max", "268435456\n"),
            ("mosix/node2/memory.current", "1000\n"),
            ("mosix/node2/memory.stat", "anon 1\ninactive_file 100\n"),
            ("mosix/node2/cpu.stat", "usage_usec 42\n"),
            ("mosix/node2/cgroup.threads", "7\n"),
            ("mosix/cpu.max", "max 100000\n"),
        ]);
        let cg = Cgroups::from_parts(
            vec![Hierarchy {
                version: Version::V2,
                controllers: vec![],
                mount_point: d.path().to_owned(),
                mount_root: "/".into(),
            }],
            vec![(vec![], "/mosix/node2".into())],
        );
        assert!(cg.v2_with("memory").is_some());
        let ncg = cg.node_cgroup(None).unwrap().unwrap();
        assert_eq!(ncg.version, Version::V2);
        assert_eq!(ncg.cpu_quota(), Some(0.25));
        assert_eq!(ncg.mem_limit(), Some(268_435_456));
        assert_eq!(ncg.mem_usage(), Some((1000, 100)));
        assert_eq!(ncg.cpu_usage_ns(), Some(42_000));
        assert_eq!(ncg.threads(), vec![7]);
    }

    #[test]
    fn a_configured_cgroup_must_exist() {
        let d = tree(&[("cpu/x/tasks", "")]);
        let cg = v1(d.path());
        assert!(cg.node_cgroup(Some("/nope")).is_err());
        assert!(cg.node_cgroup(Some("/x")).unwrap().is_some());
    }

    #[test]
    fn paths_outside_the_mount_root_are_not_ours() {
        assert_eq!(strip_root("/a/b", "/a"), Some("b"));
        assert_eq!(strip_root("/a", "/"), Some("a"));
        assert_eq!(strip_root("/ab", "/a"), None);
    }

    #[test]
    fn discovery_on_this_machine_does_not_fail() {
        let cg = Cgroups::discover().unwrap();
        let _ = cg.node_cgroup(None).unwrap();
    }
}
