//! Checkpoints at this node: `migrate PID checkpoint|chkstop|chkexit`, and the periodic ones
//! of `mosrun -A` (checked every sample). A process away comes home for it (the checkpoint is
//! written at home, with its owner's rights; the balancer may send it out again); the writing
//! is [`crate::split::checkpoint`].

use std::path::PathBuf;
use std::sync::Arc;

use mosix_core::checkpoint::numbered;
use mosix_core::client::{CheckpointTaken, CheckpointThen, Response};
use tokio::sync::oneshot;
use tracing::warn;

use super::moves::wait_home;
use super::node::Node;
use super::policy;
use crate::kernel::creds::{User, as_user};
use crate::split::checkpoint::{self, After};
use crate::split::procs::Procs;

impl Node {
    /// Takes a checkpoint of process `pid` for `uid`; `reply` (if any) gets the file, or why
    /// not.
    pub(super) fn checkpoint(
        &mut self,
        uid: u32,
        pid: u32,
        then: CheckpointThen,
        why: String,
        reply: Option<oneshot::Sender<Response>>,
    ) {
        let answer = move |r: Result<CheckpointTaken, String>| match (reply, r) {
            (Some(reply), Ok(t)) => {
                let _ = reply.send(Response::Checkpointed(t));
            }
            (Some(reply), Err(e)) => {
                let _ = reply.send(Response::Error(e));
            }
            (None, Ok(_)) => {}
            (None, Err(e)) => warn!("no checkpoint of process {pid}: {e}"),
        };
        let facts = self.facts(pid);
        let away = match policy::may_checkpoint(uid, &facts) {
            Ok(a) => a,
            Err(e) => return answer(Err(e)),
        };
        let pid = pid as i32;
        let (file, retire) = next_file(&self.procs, pid);
        let after = match then {
            CheckpointThen::Continue => After::Continue,
            CheckpointThen::Stop => After::Stop,
            CheckpointThen::Exit => After::Exit,
        };
        if away && !self.procs.ask_come_home(pid, false) {
            return answer(Err(format!("process {pid} is between nodes; try again")));
        }
        let (procs, env) = (Arc::clone(&self.procs), self.home_env());
        let spawned = std::thread::Builder::new()
            .name(format!("mosix-ckpt-{pid}"))
            .spawn(move || {
                if away && !wait_home(&procs, pid) {
                    return answer(Err(format!(
                        "process {pid} did not come home to be checkpointed"
                    )));
                }
                let p2 = Arc::clone(&procs);
                checkpoint::take(
                    pid,
                    file,
                    after,
                    why,
                    env,
                    Box::new(move |r| {
                        let r = r.map(|t| {
                            p2.update_home(pid, |h| {
                                if let Some(c) = &mut h.ckpt {
                                    c.taken += 1;
                                    c.since = std::time::Instant::now();
                                }
                            });
                            if let Some(old) = retire {
                                remove_as_owner(pid, &old);
                            }
                            CheckpointTaken {
                                file: t.file.display().to_string(),
                                bytes: t.bytes,
                                stopped_ms: t.stopped_ms,
                            }
                        });
                        answer(r);
                    }),
                );
            });
        if let Err(e) = spawned {
            warn!("cannot start a checkpoint thread: {e}");
        }
    }

    /// `mosrun -R FILE`: rebuilds the checkpoint in the asking process `pid` of `uid`, which
    /// then is a MOSIX process of this node. Answered only with why not.
    pub(super) fn restore(
        &mut self,
        (uid, pid): (u32, i32),
        file: String,
        fd: i32,
        reply: oneshot::Sender<Response>,
    ) {
        let creds = crate::freezer::freeze::creds_of(pid);
        if pid <= 0 || creds.uid[0] != uid || creds.uid[1] != uid {
            let _ = reply.send(Response::Error(format!(
                "process {pid} is not the asking user's (uid {uid}), or runs with other ids"
            )));
            return;
        }
        let user = User {
            uid,
            gid: creds.gid[0],
            groups: creds.groups,
        };
        let procs = Arc::clone(&self.procs);
        let spawned = std::thread::Builder::new()
            .name(format!("mosix-restore-{pid}"))
            .spawn(move || {
                let path = PathBuf::from(&file);
                match checkpoint::restore(pid, &path, fd, &user) {
                    Ok(command) => {
                        if let Err(e) =
                            procs.register(pid, false, mosix_core::client::DecayMode::default())
                        {
                            warn!(
                                "process {pid} resumed from {file} but is not a MOSIX process: {e}"
                            );
                        }
                        tracing::info!("process {pid} of uid {uid} resumed from {file}: {command}");
                    }
                    Err(e) => {
                        warn!("process {pid} of uid {uid}: no restore of {file}: {e}");
                        let _ = reply.send(Response::Error(e));
                    }
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start a restore thread: {e}");
        }
    }

    /// A process of this node asks for its own checkpoint (`RUNDIR/checkpoint.sock`). Only
    /// at home: a process that runs on another node reaches that socket through a call
    /// forwarded home, which would have to be cut short to bring it home.
    pub(super) fn checkpoint_me(&mut self, uid: u32, pid: i32, reply: oneshot::Sender<Response>) {
        let facts = self.facts(pid.unsigned_abs());
        if let Some(n) = facts.at {
            let _ = reply.send(Response::Error(format!(
                "process {pid} runs on node {n}: a process asks for its own checkpoint at home (migrate {pid} checkpoint works anywhere)"
            )));
            return;
        }
        let why = "asked by the process".to_owned();
        self.checkpoint(
            uid,
            pid.unsigned_abs(),
            CheckpointThen::Continue,
            why,
            Some(reply),
        );
    }

    /// Takes the periodic checkpoints that are due (`mosrun -A`).
    pub(super) fn checkpoint_round(&mut self) {
        for pid in self.procs.checkpoints_due() {
            let every = self.procs.home(pid).ckpt.map_or(0, |c| c.spec.every_s);
            // The next one is due a period from now, whether this one is taken or not.
            self.procs.update_home(pid, |h| {
                if let Some(c) = &mut h.ckpt {
                    c.since = std::time::Instant::now();
                }
            });
            let why = format!("periodic (every {every} s)");
            self.checkpoint(0, pid.unsigned_abs(), CheckpointThen::Continue, why, None);
        }
    }
}

/// The file of process `pid`'s next checkpoint, and the one to remove once it is written
/// (`-N`): `FILE.N` with the file of `mosrun -C`, else `ckpt.PID.N` in its working directory.
fn next_file(procs: &Procs, pid: i32) -> (PathBuf, Option<PathBuf>) {
    let h = procs.home(pid);
    let (base, taken, max) = match &h.ckpt {
        Some(c) => (c.spec.file.clone(), c.taken, c.spec.max),
        None => {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            (cwd.join(format!("ckpt.{pid}")).display().to_string(), 0, 0)
        }
    };
    let n = taken + 1;
    let retire = (max > 0 && n > max).then(|| PathBuf::from(numbered(&base, n - max)));
    (PathBuf::from(numbered(&base, n)), retire)
}

/// Removes an old checkpoint with the rights of the process's owner.
fn remove_as_owner(pid: i32, file: &std::path::Path) {
    let creds = crate::freezer::freeze::creds_of(pid);
    let user = User {
        uid: creds.uid[0],
        gid: creds.gid[0],
        groups: creds.groups,
    };
    if let Err(e) = as_user(&user, || {
        std::fs::remove_file(file)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }) {
        warn!(
            "removing the old checkpoint {}: {}",
            file.display(),
            e.desc()
        );
    }
}
