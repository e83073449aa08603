//! Which processes are MOSIX processes, where they are, and the guests this node runs.
//!
//! A process started by `mosrun` — and every descendant of it — is a MOSIX process. The kernel
//! keeps that set for us: `mosrun` puts itself into a cgroup of a hierarchy with no controllers
//! (a named cgroup-v1 hierarchy, `name=mosix`, mounted at [`MOUNT`]), and children inherit their
//! parent's cgroup at fork. A hierarchy without controllers changes nothing about scheduling or
//! memory; it only names a set of processes, at no cost per fork. Each node service has its own
//! directory in it (several virtual nodes share one machine).
//!
//! The registry also records, per home process, where it runs, how often it moved, its lock and
//! decay settings and the last statistics its remote sent; and per guest, its home.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mosix_core::NodeId;
use mosix_core::client::{DecayMode, ProcRow};
use mosix_core::image::{CantMove, cantmove};
use mosix_core::moves::MoveFailure;

/// Where the `name=mosix` hierarchy is mounted.
pub const MOUNT: &str = "/run/mosix-procs";

/// What the service knows about one of its own processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Home {
    /// Where it runs now (`None` = here).
    pub at: Option<NodeId>,
    /// Moves so far.
    pub nmigs: u32,
    /// No automatic migration.
    pub lock: bool,
    /// Decay of its statistics.
    pub decay: DecayMode,
    /// A move is under way.
    pub moving: bool,
    /// How far the move under way has come, for a move from here (what it has sent).
    pub sending: Option<crate::split::ship::Progress>,
    /// Its pid on the remote node.
    pub remote_pid: Option<u32>,
    /// CPU time on the remote, ms (user + system).
    pub remote_cpu_ms: u64,
    /// When the remote's figures (sent about once a second) arrived.
    pub remote_stats_at: Option<std::time::Instant>,
    /// CPU time on the remotes it left, ms.
    pub away_cpu_ms: u64,
    /// State letter on the remote.
    pub remote_state: Option<u8>,
    /// Resident memory on the remote.
    pub remote_rss: u64,
    /// Its command line, kept from before it left (the deputy's memory is released, and with it
    /// what /proc/PID/cmdline shows).
    pub command: Option<String>,
    /// Frozen at home (its memory in the freeze area), and why.
    pub frozen: Option<String>,
    /// When it was frozen, and its memory (bytes).
    pub frozen_at: Option<std::time::Instant>,
    /// Its memory when it was frozen, bytes.
    pub frozen_bytes: u64,
    /// When the node it ran on sent it home (`mosctl expel` there), for automatic freezing.
    pub returned_at: Option<std::time::Instant>,
    /// Where its checkpoints go (`mosrun -C`, `-A`, `-N`), and how many were taken.
    pub ckpt: Option<CkptPlan>,
}

/// A process's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CkptPlan {
    /// Where they go and how often.
    pub spec: mosix_core::client::CheckpointSpec,
    /// How many were taken (the next is `FILE.taken+1`).
    pub taken: u32,
    /// When the last was taken (or the process registered): the next periodic one is due
    /// `every_s` after.
    pub since: std::time::Instant,
}

/// Why a process frozen by its home itself is frozen (see `mosix_core::freezing`).
pub const FROZEN_OVERLOADED: &str = "home overloaded";

/// A process of another node running here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// Its home node.
    pub from: NodeId,
    /// Its pid at home.
    pub home_pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its moves.
    pub nmigs: u32,
    /// Locked at home: not moved automatically.
    pub lock: bool,
}

#[derive(Debug, Default)]
struct Inner {
    home: HashMap<i32, Home>,
    guests: HashMap<i32, Guest>,
    deputies: HashMap<i32, crate::split::handle::ComeHomeHandle>,
    /// The connections to the homes of guests, for `expel`.
    guest_links: HashMap<i32, crate::link::channel::Sender>,
    /// The ceilings of the automatic moves guests were asked to make (pid, destination).
    ceilings: HashMap<i32, (NodeId, u32)>,
    /// Moves from this node that ended since the balancer last looked.
    ended: Vec<EndedMove>,
}

/// A move of a process from this node that ended, for the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedMove {
    /// Its pid on this node.
    pub pid: i32,
    /// It runs at its destination (`Ok`), or why not (it is still here, or gone).
    pub outcome: Result<(), MoveFailure>,
    /// When.
    pub at: std::time::Instant,
}

/// At most this many ended moves are kept for a balancer that does not look.
const MAX_ENDED: usize = 1024;

/// The registry.
#[derive(Debug)]
pub struct Procs {
    dir: Option<PathBuf>,
    inner: Mutex<Inner>,
}

fn mounted() -> bool {
    procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .is_ok_and(|m| {
            m.into_iter().any(|x| {
                x.mount_point == Path::new(MOUNT)
                    && x.fs_type == "cgroup"
                    && x.super_options.contains_key("name")
            })
        })
}

/// Mounts the hierarchy if needed and makes this node's directory in it. The directory's name
/// comes from the node's run directory, so every node of a virtual cluster has its own.
pub fn setup(rundir: &Path) -> std::io::Result<PathBuf> {
    if !mounted() {
        std::fs::create_dir_all(MOUNT)?;
        nix::mount::mount(
            Some("cgroup"),
            MOUNT,
            Some("cgroup"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("none,name=mosix"),
        )
        .map_err(std::io::Error::from)?;
    }
    let dir = Path::new(MOUNT).join(dir_name(rundir));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes the node's directory when no process is left in it (on a clean stop; a directory
/// that still holds processes stays, and the next start of the service finds them again).
pub fn release(rundir: &Path) {
    let _ = std::fs::remove_dir(Path::new(MOUNT).join(dir_name(rundir)));
}

/// The name of a node's directory in the hierarchy.
pub fn dir_name(rundir: &Path) -> String {
    let s: String = rundir
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "root".into() } else { s }
}

impl Procs {
    /// A registry using `dir` (None: this service cannot track processes).
    pub fn new(dir: Option<PathBuf>) -> Procs {
        Procs {
            dir,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether processes can be registered here.
    pub fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// Makes `pid` (and its future descendants) a MOSIX process.
    pub fn register(&self, pid: i32, lock: bool, decay: DecayMode) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Err(std::io::Error::other(
                "this node's service cannot track MOSIX processes (it must run as root)",
            ));
        };
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        let mut g = self.lock();
        let e = g.home.entry(pid).or_default();
        e.lock = lock;
        e.decay = decay;
        Ok(())
    }

    /// The processes whose periodic checkpoint is due.
    pub fn checkpoints_due(&self) -> Vec<i32> {
        self.lock()
            .home
            .iter()
            .filter(|(_, h)| !h.moving && h.frozen.is_none())
            .filter(|(_, h)| {
                h.ckpt.as_ref().is_some_and(|c| {
                    c.spec.every_s > 0 && c.since.elapsed().as_secs() >= u64::from(c.spec.every_s)
                })
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Whether `pid` is one of this node's MOSIX processes.
    pub fn is_mosix(&self, pid: i32) -> bool {
        self.members().contains(&pid)
    }

    /// The pids of this node's MOSIX processes (deputies of migrated ones included).
    pub fn members(&self) -> Vec<i32> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// What we know of a home process (defaults for one never moved).
    pub fn home(&self, pid: i32) -> Home {
        self.lock().home.get(&pid).cloned().unwrap_or_default()
    }

    /// Where a home process runs, if it is known here (`Some(None)`: here); `None` once it
    /// has ended (its record is forgotten before its deputy is reaped).
    pub fn home_at(&self, pid: i32) -> Option<Option<NodeId>> {
        self.lock().home.get(&pid).map(|h| h.at)
    }

    /// Changes what we know of a home process.
    pub fn update_home(&self, pid: i32, f: impl FnOnce(&mut Home)) {
        let mut g = self.lock();
        f(g.home.entry(pid).or_default());
    }

    /// Forgets a home process (it ended).
    pub fn forget_home(&self, pid: i32) {
        self.lock().home.remove(&pid);
    }

    /// Records the deputy of a migrated process (its tracer polls the flag).
    pub fn register_deputy(&self, pid: i32, h: crate::split::handle::ComeHomeHandle) {
        self.lock().deputies.insert(pid, h);
    }

    /// Forgets a deputy.
    pub fn unregister_deputy(&self, pid: i32) {
        self.lock().deputies.remove(&pid);
    }

    /// Asks a migrated process to come home; false if it is not away.
    pub fn ask_come_home(&self, pid: i32, live: bool) -> bool {
        match self.lock().deputies.get(&pid) {
            Some(h) => {
                h.ask(live);
                true
            }
            None => false,
        }
    }

    /// Asks a migrated process to move on to another node directly; gives the ask back if the
    /// process is not away.
    pub fn ask_move(
        &self,
        pid: i32,
        ask: crate::split::handle::MoveAsk,
    ) -> Result<(), crate::split::handle::MoveAsk> {
        match self.lock().deputies.get(&pid) {
            Some(h) => {
                h.ask_move(ask);
                Ok(())
            }
            None => Err(ask),
        }
    }

    /// Hands the connection of a direct move's destination to the deputy of `pid`; gives it
    /// back if there is none.
    pub fn offer_rejoin(
        &self,
        pid: i32,
        o: crate::split::handle::RejoinOffer,
    ) -> Result<(), crate::split::handle::RejoinOffer> {
        match self.lock().deputies.get(&pid) {
            Some(h) => {
                h.offer(o);
                Ok(())
            }
            None => Err(o),
        }
    }

    /// Records a guest.
    pub fn add_guest(&self, local_pid: i32, g: Guest) {
        self.lock().guests.insert(local_pid, g);
    }

    /// A guest, by its pid here.
    pub fn guest(&self, local_pid: i32) -> Option<Guest> {
        self.lock().guests.get(&local_pid).cloned()
    }

    /// Forgets a guest.
    pub fn remove_guest(&self, local_pid: i32) {
        let mut g = self.lock();
        g.guests.remove(&local_pid);
        g.guest_links.remove(&local_pid);
        g.ceilings.remove(&local_pid);
    }

    /// Records the connection to a guest's home.
    pub fn set_guest_link(&self, local_pid: i32, tx: crate::link::channel::Sender) {
        self.lock().guest_links.insert(local_pid, tx);
    }

    /// Tells the home of guest `local_pid` that the balancer wants it on `to`; false if there is
    /// no such guest or its connection is gone. The move's `ceiling` waits here for the guest's
    /// supervisor, which makes the move when home asks ([`Procs::take_ceiling`]).
    pub fn ask_guest_leave(&self, local_pid: i32, to: NodeId, ceiling: Option<u32>) -> bool {
        let tx = {
            let mut g = self.lock();
            match ceiling {
                Some(c) => g.ceilings.insert(local_pid, (to, c)),
                None => g.ceilings.remove(&local_pid),
            };
            g.guest_links.get(&local_pid).cloned()
        };
        tx.is_some_and(|tx| tx.send(&mosix_core::proto::ProcMsg::Leave { to }).is_ok())
    }

    /// The ceiling of the automatic move guest `local_pid` was asked to make to `to`, if that
    /// is the move it makes now.
    pub fn take_ceiling(&self, local_pid: i32, to: NodeId) -> Option<u32> {
        let mut g = self.lock();
        let (dest, c) = g.ceilings.remove(&local_pid)?;
        (dest == to).then_some(c)
    }

    /// Notes that the move of `pid` (on this node) ended: it arrived, or why not.
    pub fn move_ended(&self, pid: i32, outcome: Result<(), MoveFailure>) {
        let mut g = self.lock();
        if g.ended.len() >= MAX_ENDED {
            g.ended.remove(0);
        }
        g.ended.push(EndedMove {
            pid,
            outcome,
            at: std::time::Instant::now(),
        });
    }

    /// The moves that ended since the last call.
    pub fn take_ended_moves(&self) -> Vec<EndedMove> {
        std::mem::take(&mut self.lock().ended)
    }

    /// Asks the home of every guest to take it back; how many were asked.
    pub fn expel_guests(&self) -> u32 {
        let links: Vec<crate::link::channel::Sender> =
            self.lock().guest_links.values().cloned().collect();
        let mut n = 0;
        for tx in links {
            if tx
                .send(&mosix_core::proto::ProcMsg::Expelled {
                    why: mosix_core::proto::Expulsion::Expel,
                })
                .is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// Sends one guest home (displaced, or leaving a node closed to the grid); false when it
    /// is not a guest here or its connection is gone.
    pub fn expel_guest(&self, local_pid: i32, why: mosix_core::proto::Expulsion) -> bool {
        let tx = self.lock().guest_links.get(&local_pid).cloned();
        tx.is_some_and(|tx| {
            tx.send(&mosix_core::proto::ProcMsg::Expelled { why })
                .is_ok()
        })
    }

    /// Asks every process of this node that runs elsewhere to come home; how many were asked.
    /// Frozen processes stay frozen (`migrate PID continue` is theirs).
    pub fn bring_all(&self) -> u32 {
        let g = self.lock();
        let mut n = 0;
        for (pid, h) in &g.deputies {
            if g.home.get(pid).is_some_and(|x| x.frozen.is_some()) {
                continue;
            }
            h.ask(false);
            n += 1;
        }
        n
    }

    /// How many processes of this node run elsewhere (or are on their way); frozen ones do not
    /// count.
    pub fn away(&self) -> u32 {
        self.lock()
            .home
            .values()
            .filter(|h| (h.at.is_some() && h.frozen.is_none()) || h.moving)
            .count() as u32
    }

    /// How many of this node's processes are away (or moving) and frozen, and how many guests
    /// run here: one lock, for the metrics.
    pub fn counts(&self) -> (u32, u32, u32) {
        let g = self.lock();
        let (mut away, mut frozen) = (0, 0);
        for h in g.home.values() {
            if h.frozen.is_some() {
                frozen += 1;
            } else if h.at.is_some() || h.moving {
                away += 1;
            }
        }
        (away, frozen, g.guests.len() as u32)
    }

    /// This node's processes frozen for `why`, with when.
    pub fn frozen_for(&self, why: &str) -> Vec<(i32, std::time::Instant, u64)> {
        self.lock()
            .home
            .iter()
            .filter(|(_, h)| h.frozen.as_deref() == Some(why))
            .filter_map(|(pid, h)| Some((*pid, h.frozen_at?, h.frozen_bytes)))
            .collect()
    }

    /// The guests.
    pub fn guests(&self) -> Vec<(i32, Guest)> {
        let mut v: Vec<(i32, Guest)> = self
            .lock()
            .guests
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// The rows `mps` shows: this node's processes, and the guests if asked.
    pub fn rows(&self, guests: bool) -> Vec<ProcRow> {
        let mut rows = Vec::new();
        // Forget processes that ended.
        let members = self.members();
        {
            let mut g = self.lock();
            g.home.retain(|pid, _| members.contains(pid));
        }
        for pid in members {
            let h = self.home(pid);
            let stat = procfs::process::Process::new(pid)
                .and_then(|p| p.stat())
                .ok();
            let Some(stat) = stat else { continue };
            let ticks = procfs::ticks_per_second().max(1);
            let local_ms = (stat.utime + stat.stime) * 1000 / ticks;
            let (state, cpu_ms, cpu_age_ms) = match h.at {
                Some(_) if h.frozen.is_some() => ('F', local_ms + h.away_cpu_ms, 0),
                Some(_) => (
                    h.remote_state.map_or('?', char::from),
                    local_ms + h.away_cpu_ms + h.remote_cpu_ms,
                    h.remote_stats_at.map_or(0, |t| {
                        u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
                    }),
                ),
                None => (stat.state, local_ms + h.away_cpu_ms, 0),
            };
            rows.push(ProcRow {
                pid: pid as u32,
                node: if h.frozen.is_some() {
                    0
                } else {
                    h.at.map_or(0, NodeId::get)
                },
                from: None,
                tty: stat.tty_nr,
                state,
                cpu_ms,
                cpu_age_ms,
                command: match (&h.command, h.at) {
                    (Some(c), Some(_)) => c.clone(),
                    _ => command(pid, &stat.comm),
                },
                nmigs: h.nmigs,
                lock: h.lock,
                cantmove: if h.at.is_some() {
                    None
                } else {
                    why_not(pid).map(|c| c.word().to_owned())
                },
                remote_pid: h.remote_pid.filter(|_| h.frozen.is_none()),
                frozen: h.frozen.clone(),
                uid: procfs::process::Process::new(pid)
                    .and_then(|p| p.uid())
                    .ok(),
            });
        }
        if guests {
            for (local, g) in self.guests() {
                let stat = procfs::process::Process::new(local)
                    .and_then(|p| p.stat())
                    .ok();
                let ticks = procfs::ticks_per_second().max(1);
                rows.push(ProcRow {
                    pid: g.home_pid,
                    node: 0,
                    from: Some(g.from.get()),
                    tty: 0,
                    state: stat.as_ref().map_or('?', |s| s.state),
                    cpu_ms: stat
                        .as_ref()
                        .map_or(0, |s| (s.utime + s.stime) * 1000 / ticks),
                    cpu_age_ms: 0,
                    command: g.comm.clone(),
                    nmigs: g.nmigs,
                    lock: g.lock,
                    cantmove: None,
                    remote_pid: Some(local as u32),
                    frozen: None,
                    uid: None,
                });
            }
        }
        rows
    }
}

/// The command line of a process, or `[comm]` when it has none to show. Read by hand rather
/// than with procfs's `Process::cmdline`, which fails on an argument that is not UTF-8: `ps`
/// shows such a command line (lossily), and so do we.
pub fn command(pid: i32, comm: &str) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let s: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    if s.is_empty() {
        format!("[{comm}]")
    } else {
        s.join(" ")
    }
}

/// Why `pid` cannot move right now, if it cannot.
pub fn why_not(pid: i32) -> Option<CantMove> {
    let p = procfs::process::Process::new(pid).ok()?;
    let status = p.status().ok()?;
    if status.state.starts_with('Z') || status.state.starts_with('X') {
        return Some(CantMove::Exiting);
    }
    if status.tracerpid != 0 {
        return Some(CantMove::Traced);
    }
    // Moved, it would run again while its parent thinks it stopped.
    if status.state.starts_with('T') {
        return Some(CantMove::Stopped);
    }
    let maps = crate::kernel::inject::read_maps(pid).ok()?;
    cantmove(status.threads as u32, status.vmlck.unwrap_or(0), &maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_directories_are_named_after_the_run_directory() {
        assert_eq!(dir_name(Path::new("/run/mosix")), "run_mosix");
        assert_eq!(
            dir_name(Path::new("/run/mosix-vc/demo/node1/run")),
            "run_mosix-vc_demo_node1_run"
        );
        assert_eq!(dir_name(Path::new("/")), "root");
    }

    #[test]
    fn this_process_can_move_or_says_why_not() {
        // The test harness has threads.
        assert_eq!(why_not(std::process::id() as i32), Some(CantMove::Threads));
    }
}
