//! The answers to the local tools: every [`Request`] of the control socket is handled here, in
//! one place. Who may ask what is [`super::policy::may_ask`]; requests that move processes
//! answer later, from the threads that move them ([`super::moves`]).

use mosix_core::client::{Request, Response, RunningConfig, ServiceInfo};
use mosix_core::overheads::Overheads;
use mosix_core::{Flag, Status};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::node::Node;
use super::policy;

impl Node {
    /// Answers `req` from the local user `uid` (through the process `pid`, for `Register`);
    /// returns true when the service should stop.
    pub async fn request(
        &mut self,
        req: Request,
        uid: u32,
        pid: i32,
        reply: oneshot::Sender<Response>,
    ) -> bool {
        if let Err(e) = policy::may_ask(&req, uid, self.euid) {
            let _ = reply.send(Response::Error(e));
            return false;
        }
        let answer = match req {
            Request::Ping => Response::Pong(ServiceInfo {
                node: self.loaded.me,
                pid: std::process::id(),
                version: mosix_core::VERSION.to_owned(),
            }),
            Request::View => Response::View(self.view()),
            Request::SetFlag { flag, on } => {
                self.set_flag(flag, on, uid);
                Response::Done
            }
            Request::SetSpeed { speed } => {
                if speed == 0 || speed > 100_000_000 {
                    Response::Error(format!("speed {speed} is out of range 1..100000000"))
                } else {
                    self.load.speed_override = Some(speed);
                    self.load.figures.speed = speed;
                    info!("speed set to {speed} by uid {uid}");
                    Response::Done
                }
            }
            Request::Enqueue {
                priority,
                mem_mb,
                command,
            } => {
                self.enqueue((uid, pid), priority, mem_mb, command, reply);
                return false;
            }
            Request::Queue { all: false } => Response::Queue(self.queue_view()),
            Request::Queue { all: true } => {
                self.queue_view_all(reply);
                return false;
            }
            Request::QueueChange {
                pid: target,
                change,
            } => self.queue_change(uid, target, change),
            Request::Isolate { on } => {
                let asked = self.isolate(on, uid);
                Response::Moved { asked, left: asked }
            }
            Request::OpenGrid { max_guests } => {
                self.open_grid(max_guests, uid);
                Response::Done
            }
            Request::SetPriority { partner, priority } => {
                match self.set_priority(&partner, priority) {
                    Ok(()) => {
                        info!("partner {partner} now has priority {priority} here (uid {uid})");
                        Response::Done
                    }
                    Err(e) => Response::Error(e),
                }
            }
            Request::GetDecay => Response::Decay(self.balancing.decay),
            Request::SetDecay(d) => match d.validate() {
                Ok(()) => {
                    self.balancing.decay = d;
                    info!(
                        "decay set to interval {} s, slow {}, fast {} by uid {uid}",
                        d.interval_s, d.slow, d.fast
                    );
                    Response::Done
                }
                Err(e) => Response::Error(e),
            },
            Request::GetTune => Response::Tune(self.balancing.overheads.clone()),
            Request::GetFileTune => Response::FileTune(self.balancing.mfscosts.clone()),
            Request::LoadTune => self.load_tune(uid),
            Request::GetConfig => {
                let cfg = self.gossip.diss.config();
                Response::Config(RunningConfig {
                    node: self.loaded.me,
                    map_text: self.loaded.map.to_text(),
                    map_name: self.loaded.map_name.clone(),
                    port: self.loaded.tunables.link.port,
                    interval_ms: cfg.interval_ms,
                    window: cfg.window,
                    dead_after_ms: cfg.dead_after_ms.unwrap_or(0),
                    measuring: self.load.scope.describe(),
                    mfs_mount: self.loaded.tunables.mfs.mount.display().to_string(),
                    partner_map_text: self
                        .loaded
                        .grid
                        .partners
                        .iter()
                        .map(|p| p.map.to_text())
                        .collect(),
                })
            }
            Request::Reconfigure {
                map_name,
                map_text,
                node,
            } => match self.reconfigure(&map_name, &map_text, node).await {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(e.to_string()),
            },
            Request::Shutdown => {
                info!("stopping at the request of uid {uid}");
                let _ = reply.send(Response::Done);
                return true;
            }
            Request::Procs { guests } => Response::Procs(self.procs.rows(guests)),
            Request::ProcsAll => {
                self.procs_all(reply);
                return false;
            }
            Request::SignalAll { uid: owner, sig } => {
                self.signal_all((uid, pid), owner, sig, reply);
                return false;
            }
            Request::Lock { pid: target, on } => self.lock(uid, target, on),
            Request::Moving { pid: target } => Response::Moving(
                i32::try_from(target)
                    .ok()
                    .map(|p| self.procs.home(p))
                    .filter(|h| h.moving)
                    .and_then(|h| h.sending.map(|s| s.report())),
            ),
            // These answer when their moves are done (or could not start).
            Request::Register {
                lock,
                decay,
                placement,
                fallback_home,
                checkpoint,
                best,
            } => {
                let start = super::moves::Start {
                    lock,
                    decay,
                    placement,
                    fallback_home,
                    checkpoint,
                    best,
                };
                return self.register((uid, pid), start, reply);
            }
            Request::Restore { file, fd } => {
                self.restore((uid, pid), file, fd, reply);
                return false;
            }
            Request::Checkpoint { pid: target, then } => {
                self.checkpoint(uid, target, then, "migrate checkpoint".into(), Some(reply));
                return false;
            }
            Request::Migrate {
                pid: target,
                to,
                wait,
                live,
            } => return self.migrate(uid, target, to, wait, live, reply),
            Request::CloseGrid => {
                let asked = self.close_grid(uid);
                info!("closegrid by uid {uid}: {asked} guests of other clusters asked to leave");
                Response::Moved { asked, left: asked }
            }
            Request::Expel | Request::Bring => {
                let expel = matches!(req, Request::Expel);
                let flag = if expel { Flag::Block } else { Flag::Lstay };
                self.set_flag(flag, true, uid);
                return self.move_all(expel, reply);
            }
        };
        let _ = reply.send(answer);
        false
    }

    /// Sets or clears one of this node's flags; the cluster hears of it at the next tick, this
    /// node's own view changes at once.
    pub(super) fn set_flag(&mut self, flag: Flag, on: bool, uid: u32) {
        if flag == Flag::NoMfs {
            match &self.mfs {
                Some(m) => m.server.set_refusing(on),
                None if !on => {
                    warn!(
                        "mfs asked by uid {uid}, but MFS did not start here (the log at start says why): it stays off"
                    );
                    return;
                }
                None => {}
            }
        }
        self.flags.set(flag.bit(), on);
        self.blocked.store(
            self.flags.contains(Status::BLOCK),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.closed.store(
            self.flags.contains(Status::CLOSED),
            std::sync::atomic::Ordering::Relaxed,
        );
        info!(
            "{}{} set by uid {uid}",
            if on { "" } else { "no" },
            match flag {
                Flag::NoMfs => "mfs (MFS off)",
                f => f.set_word(),
            }
        );
        let now = self.now();
        let info = self.own_info();
        self.gossip.diss.set_local(info, now);
    }

    /// `LoadTune`: reads the overheads and mfscosts files again; a wrong file keeps the costs
    /// in use.
    fn load_tune(&mut self, uid: u32) -> Response {
        let (c, why) = mosix_core::mfscosts::MfsCosts::load(&self.paths.mfscosts());
        match why {
            Some(why) => {
                warn!("file costs not reloaded, the ones in use are kept: {why}");
                return Response::Error(format!(
                    "the mfscosts file was not loaded, the costs in use are kept: {why}"
                ));
            }
            None => {
                info!(
                    "file costs reloaded by uid {uid} from {} ({} rows)",
                    c.source,
                    c.rows.len()
                );
                self.balancing.mfscosts = c;
            }
        }
        let (o, why) = Overheads::load(&self.paths.overheads());
        match why {
            Some(why) => {
                warn!("overheads not reloaded, the ones in use are kept: {why}");
                Response::Error(format!(
                    "the overheads file was not loaded, the costs in use are kept: {why}"
                ))
            }
            None => {
                info!(
                    "migration costs reloaded by uid {uid} from {} ({} rows)",
                    o.source,
                    o.rows.len()
                );
                self.balancing.overheads = o;
                Response::Tune(self.balancing.overheads.clone())
            }
        }
    }
}
