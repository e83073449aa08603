//! The service's decisions about moves, as pure functions: who may ask for what, whether a node
//! can take a process, what `migrate PID TARGET` and `mosrun -NODE` should do, and what a
//! refusal says. The facts they weigh (the process's owner, what the registry knows of it, the
//! gossip view) are gathered by the caller ([`super::moves`]); nothing here reads `/proc`,
//! starts a thread or touches a socket, so every rule is unit-tested.

use mosix_core::client::{Request, Target};
use mosix_core::image::CantMove;
use mosix_core::moves::MoveFailure;
use mosix_core::{NodeId, Status};

/// What the gossip view says of a node, for [`can_take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not in the map.
    Unknown,
    /// In the map: whether it is up, and its last known flags.
    Known {
        /// Up in the view.
        up: bool,
        /// Its last known flags.
        flags: Status,
    },
}

/// Whether node `n` can take a process now, as this node `me` sees it; why not otherwise.
pub fn can_take(n: NodeId, me: NodeId, seen: Seen) -> Result<(), String> {
    if n == me {
        return Ok(());
    }
    match seen {
        Seen::Unknown => Err(format!("node {n} is not in the map")),
        Seen::Known { up: false, .. } => Err(format!("node {n} is down")),
        Seen::Known { flags, .. } if flags.contains(Status::BLOCK) => {
            Err(format!("node {n} is blocked: it takes no guests"))
        }
        Seen::Known { .. } => Ok(()),
    }
}

/// Whether the caller `uid` may make request `req` of a service running as `euid`: queries
/// are open to everyone; changes need root or the service's own user. (`Register` and
/// `Migrate` are checked per process: a process registers itself, and a user moves the
/// processes they could kill.)
pub fn may_ask(req: &Request, uid: u32, euid: u32) -> Result<(), String> {
    let open = matches!(
        req,
        Request::Ping
            | Request::View
            | Request::GetDecay
            | Request::GetTune
            | Request::GetFileTune
            | Request::GetConfig
            | Request::Procs { .. }
            | Request::ProcsAll
            | Request::SignalAll { .. }
            | Request::Lock { .. }
            | Request::Moving { .. }
            | Request::Register { .. }
            | Request::Migrate { .. }
            | Request::Enqueue { .. }
            | Request::Checkpoint { .. }
            | Request::Restore { .. }
            | Request::Queue { .. }
            | Request::QueueChange { .. }
    );
    if open || uid == 0 || uid == euid {
        Ok(())
    } else {
        Err("permission denied: changing the node's configuration needs root".into())
    }
}

/// What the registry and `/proc` say of a process `migrate` names, gathered by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFacts {
    /// Its pid.
    pub pid: u32,
    /// Its real and effective uid; `None` if there is no such process here.
    pub owner: Option<(u32, u32)>,
    /// It is a MOSIX process.
    pub mosix: bool,
    /// Where it runs (`None`: here).
    pub at: Option<NodeId>,
    /// A move of it is under way.
    pub moving: bool,
    /// Locked against automatic moves (`mosrun -L`).
    pub locked: bool,
    /// Why it cannot move, when it is here (`None`: it can, or it is away).
    pub cantmove: Option<CantMove>,
    /// It is frozen at home.
    pub frozen: bool,
}

/// What `migrate` makes of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovePlan {
    /// It already is where it should go (0 = here): nothing to do.
    Stay {
        /// Where it is (0 = home).
        node: u16,
    },
    /// It is here: freeze it and send it to `to`.
    SendAway {
        /// The destination.
        to: NodeId,
    },
    /// It is away: bring it home.
    BringHome,
    /// It is away: move it on to `to` directly.
    MoveOn {
        /// The destination.
        to: NodeId,
    },
    /// It is here: freeze it.
    Freeze,
    /// It is away: bring it home, then freeze it.
    HomeThenFreeze,
}

/// Whether the local user `uid` may act on a process whose real and effective uids are
/// `owner`: root, or its owner (the rule of `kill`, as `migrate` documents).
pub fn owns(uid: u32, (ruid, euid): (u32, u32)) -> bool {
    uid == 0 || uid == ruid || uid == euid
}

/// Whether `Register` from the local user `uid` may make process `pid` (the one that sent it,
/// by its socket's credentials) a MOSIX process. The pid was taken when the socket connected:
/// should that process have ended and its number gone to another user's process, the request
/// must not touch that one.
pub fn may_register(uid: u32, pid: i32, owner: Option<(u32, u32)>) -> Result<(), String> {
    match owner {
        None => Err(format!("no process {pid} on this node")),
        Some(o) if owns(uid, o) => Ok(()),
        Some((ruid, _)) => Err(format!(
            "permission denied: process {pid} belongs to uid {ruid}, not to the caller (uid {uid})"
        )),
    }
}

/// Whether the local user `uid` may have a checkpoint of the process taken now: `Ok(true)` if
/// it must come home first (a checkpoint is written at home).
pub fn may_checkpoint(uid: u32, p: &ProcFacts) -> Result<bool, String> {
    let pid = p.pid;
    let Some((ruid, euid)) = p.owner else {
        return Err(format!("no process {pid} on this node"));
    };
    if !owns(uid, (ruid, euid)) {
        return Err(format!(
            "permission denied: process {pid} belongs to uid {ruid}"
        ));
    }
    if !p.mosix {
        return Err(format!(
            "process {pid} is not a MOSIX process (start it with mosrun)"
        ));
    }
    if p.moving {
        return Err(format!(
            "process {pid} is moving (or a checkpoint of it is being taken); try again"
        ));
    }
    if p.frozen {
        return Err(format!(
            "process {pid} is frozen: continue it first (migrate {pid} continue)"
        ));
    }
    if let Some(why) = p.cantmove {
        return Err(format!(
            "process {pid} cannot be checkpointed: {}",
            why.explain()
        ));
    }
    Ok(p.at.is_some())
}

/// Decides what `migrate PID TARGET` asked by `uid` does at node `me` with `flags`. `best` is
/// the balancer's choice for the process (asked only for [`Target::Balance`]); `can_take`
/// says whether a destination can take it.
pub fn plan_move(
    me: NodeId,
    flags: Status,
    uid: u32,
    target: Target,
    p: &ProcFacts,
    best: impl FnOnce() -> Option<NodeId>,
    can_take: impl Fn(NodeId) -> Result<(), String>,
) -> Result<MovePlan, MoveFailure> {
    let pid = p.pid;
    let refuse = |reason: String| MoveFailure::Refused { by: me, reason };
    let Some((ruid, euid)) = p.owner else {
        return Err(MoveFailure::Gone {
            pid,
            detail: format!("no process {pid} on this node"),
        });
    };
    if !owns(uid, (ruid, euid)) {
        return Err(refuse(format!(
            "permission denied: process {pid} belongs to uid {ruid}"
        )));
    }
    if !p.mosix {
        return Err(refuse(format!(
            "process {pid} is not a MOSIX process (start it with mosrun)"
        )));
    }
    if p.moving {
        return Err(refuse(format!("process {pid} is already moving")));
    }
    if target == Target::Balance {
        // Balancing is automatic migration on demand: what keeps the balancer away keeps it
        // away (a move to a named node is the user's own decision, and is allowed).
        if p.locked {
            return Err(refuse(format!(
                "process {pid} is locked (mosrun -L): balance leaves it where it is"
            )));
        }
        if let Some((_, word)) = [(Status::STAY, "stay"), (Status::LSTAY, "lstay")]
            .into_iter()
            .find(|(bit, _)| flags.contains(*bit))
        {
            return Err(refuse(format!(
                "this node is set to {word} (mosctl no{word} lifts it): balance moves nothing"
            )));
        }
    }
    match (target, p.frozen, p.at) {
        (Target::Freeze, true, _) => {
            return Err(refuse(format!("process {pid} is frozen already")));
        }
        (Target::Freeze, false, Some(_)) => return Ok(MovePlan::HomeThenFreeze),
        (Target::Freeze, false, None) => {
            return match p.cantmove {
                Some(why) => Err(refuse(format!(
                    "process {pid} cannot be frozen: {}",
                    why.explain()
                ))),
                None => Ok(MovePlan::Freeze),
            };
        }
        (Target::Continue, false, _) => {
            return Err(refuse(format!("process {pid} is not frozen")));
        }
        (Target::Continue, true, _) => return Ok(MovePlan::BringHome),
        (Target::Node(_) | Target::Balance, true, _) => {
            return Err(refuse(format!(
                "process {pid} is frozen: continue it first (migrate {pid} continue)"
            )));
        }
        _ => {}
    }
    let here = p.at.unwrap_or(me);
    let to = match target {
        Target::Home | Target::Freeze | Target::Continue => me,
        Target::Node(n) => n,
        Target::Balance => best().unwrap_or(here),
    };
    if to == here {
        return Ok(MovePlan::Stay {
            node: p.at.map_or(0, NodeId::get),
        });
    }
    can_take(to).map_err(refuse)?;
    match (p.at, to == me) {
        (Some(_), true) => Ok(MovePlan::BringHome),
        (Some(_), false) => Ok(MovePlan::MoveOn { to }),
        (None, _) => match p.cantmove {
            Some(why) => Err(refuse(format!(
                "process {pid} cannot move: {}",
                why.explain()
            ))),
            None => Ok(MovePlan::SendAway { to }),
        },
    }
}

/// Where a process that `mosrun` registers starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPlan {
    /// Here, at home.
    Home,
    /// On this node, right after its `execve`.
    At(NodeId),
}

/// Decides where a process `mosrun` registers at node `me` starts: its `placement` if that node
/// can take it; at home if it cannot and `fallback_home` (`mosrun -F`), with the reason to log;
/// otherwise the refusal.
pub fn plan_start(
    me: NodeId,
    placement: Option<NodeId>,
    fallback_home: bool,
    can_take: impl Fn(NodeId) -> Result<(), String>,
) -> Result<(StartPlan, Option<String>), MoveFailure> {
    let Some(node) = placement.filter(|n| *n != me) else {
        return Ok((StartPlan::Home, None));
    };
    match can_take(node) {
        Ok(()) => Ok((StartPlan::At(node), None)),
        Err(e) if fallback_home => Ok((StartPlan::Home, Some(e))),
        Err(reason) => Err(MoveFailure::Refused { by: me, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u16) -> NodeId {
        NodeId::new(x).unwrap()
    }

    fn proc_here() -> ProcFacts {
        ProcFacts {
            pid: 42,
            owner: Some((1000, 1000)),
            mosix: true,
            at: None,
            moving: false,
            locked: false,
            cantmove: None,
            frozen: false,
        }
    }

    fn up(_: NodeId) -> Result<(), String> {
        Ok(())
    }

    fn plan(target: Target, p: &ProcFacts, uid: u32) -> Result<MovePlan, MoveFailure> {
        plan_move(n(1), Status::empty(), uid, target, p, || Some(n(3)), up)
    }

    fn reason(r: Result<MovePlan, MoveFailure>) -> String {
        match r {
            Err(MoveFailure::Refused { reason, .. }) => reason,
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn freezing_takes_a_process_here_or_away_and_continuing_only_a_frozen_one() {
        let p = proc_here();
        assert_eq!(plan(Target::Freeze, &p, 1000), Ok(MovePlan::Freeze));
        let away = ProcFacts {
            at: Some(n(2)),
            ..proc_here()
        };
        assert_eq!(
            plan(Target::Freeze, &away, 1000),
            Ok(MovePlan::HomeThenFreeze)
        );
        assert!(reason(plan(Target::Continue, &p, 1000)).contains("not frozen"));
        let frozen = ProcFacts {
            at: Some(n(1)),
            frozen: true,
            ..proc_here()
        };
        assert_eq!(
            plan(Target::Continue, &frozen, 1000),
            Ok(MovePlan::BringHome)
        );
        assert!(reason(plan(Target::Freeze, &frozen, 1000)).contains("frozen already"));
        assert!(reason(plan(Target::Node(n(2)), &frozen, 1000)).contains("continue it first"));
        assert!(reason(plan(Target::Freeze, &p, 1001)).contains("belongs to uid 1000"));
    }

    #[test]
    fn a_node_takes_processes_only_when_up_and_not_blocked() {
        let up = Seen::Known {
            up: true,
            flags: Status::empty(),
        };
        assert_eq!(can_take(n(2), n(1), up), Ok(()));
        assert_eq!(can_take(n(1), n(1), Seen::Unknown), Ok(()), "home always");
        assert_eq!(
            can_take(n(9), n(1), Seen::Unknown),
            Err("node 9 is not in the map".into())
        );
        let down = Seen::Known {
            up: false,
            flags: Status::empty(),
        };
        assert_eq!(can_take(n(2), n(1), down), Err("node 2 is down".into()));
        let blocked = Seen::Known {
            up: true,
            flags: Status::BLOCK,
        };
        assert!(
            can_take(n(2), n(1), blocked)
                .unwrap_err()
                .contains("blocked")
        );
    }

    #[test]
    fn queries_are_open_and_changes_need_root_or_the_service_user() {
        assert!(may_ask(&Request::View, 1000, 0).is_ok());
        assert!(may_ask(&Request::Procs { guests: true }, 1000, 0).is_ok());
        assert!(may_ask(&Request::Shutdown, 1000, 0).is_err());
        assert!(may_ask(&Request::CloseGrid, 1000, 0).is_err());
        assert!(
            may_ask(
                &Request::SetPriority {
                    partner: "b".into(),
                    priority: 1
                },
                1000,
                0
            )
            .is_err()
        );
        assert!(may_ask(&Request::Expel, 0, 0).is_ok());
        assert!(may_ask(&Request::LoadTune, 1000, 1000).is_ok());
        assert!(
            may_ask(&Request::SetSpeed { speed: 5 }, 1000, 0)
                .unwrap_err()
                .contains("needs root")
        );
    }

    #[test]
    fn migrate_refuses_with_reasons_a_user_can_act_on() {
        let p = proc_here();
        // Register: only for a process of the caller (its pid may have been reused).
        assert!(may_register(1000, 7, Some((1000, 1000))).is_ok());
        assert!(may_register(0, 7, Some((1000, 1000))).is_ok());
        assert!(
            may_register(1001, 7, Some((0, 0)))
                .unwrap_err()
                .contains("belongs to uid 0")
        );
        assert!(may_register(1001, 7, None).is_err());
        // Someone else's process: only root or its owner.
        assert!(reason(plan(Target::Node(n(2)), &p, 1001)).contains("belongs to uid 1000"));
        assert!(plan(Target::Node(n(2)), &p, 0).is_ok());
        let gone = ProcFacts {
            owner: None,
            ..p.clone()
        };
        assert_eq!(plan(Target::Home, &gone, 0).unwrap_err().kind(), "gone");
        let plain = ProcFacts {
            mosix: false,
            ..p.clone()
        };
        assert!(reason(plan(Target::Node(n(2)), &plain, 1000)).contains("start it with mosrun"));
        let moving = ProcFacts {
            moving: true,
            ..p.clone()
        };
        assert!(reason(plan(Target::Node(n(2)), &moving, 1000)).contains("already moving"));
        let threads = ProcFacts {
            cantmove: Some(CantMove::Threads),
            ..p.clone()
        };
        assert!(reason(plan(Target::Node(n(2)), &threads, 1000)).contains("cannot move"));
        // A destination that cannot take it names itself.
        let r = plan_move(
            n(1),
            Status::empty(),
            0,
            Target::Node(n(2)),
            &p,
            || None,
            |x| Err(format!("node {x} is down")),
        );
        assert_eq!(reason(r), "node 2 is down");
    }

    #[test]
    fn balance_leaves_locked_processes_and_stay_nodes_alone() {
        let locked = ProcFacts {
            locked: true,
            ..proc_here()
        };
        assert!(reason(plan(Target::Balance, &locked, 0)).contains("locked"));
        // A named node is the user's own decision: allowed for a locked process.
        assert_eq!(
            plan(Target::Node(n(2)), &locked, 0),
            Ok(MovePlan::SendAway { to: n(2) })
        );
        let r = plan_move(
            n(1),
            Status::LSTAY,
            0,
            Target::Balance,
            &proc_here(),
            || Some(n(3)),
            up,
        );
        assert!(reason(r).contains("mosctl nolstay"));
    }

    #[test]
    fn migrate_picks_the_kind_of_move_from_where_the_process_is() {
        let p = proc_here();
        assert_eq!(
            plan(Target::Node(n(2)), &p, 0),
            Ok(MovePlan::SendAway { to: n(2) })
        );
        assert_eq!(plan(Target::Home, &p, 0), Ok(MovePlan::Stay { node: 0 }));
        assert_eq!(
            plan(Target::Balance, &p, 0),
            Ok(MovePlan::SendAway { to: n(3) })
        );
        let away = ProcFacts {
            at: Some(n(2)),
            // The rule for a process here does not apply to one away (its deputy has no
            // memory to judge).
            cantmove: Some(CantMove::Threads),
            ..p.clone()
        };
        assert_eq!(plan(Target::Home, &away, 0), Ok(MovePlan::BringHome));
        assert_eq!(plan(Target::Node(n(1)), &away, 0), Ok(MovePlan::BringHome));
        assert_eq!(
            plan(Target::Node(n(3)), &away, 0),
            Ok(MovePlan::MoveOn { to: n(3) })
        );
        assert_eq!(
            plan(Target::Node(n(2)), &away, 0),
            Ok(MovePlan::Stay { node: 2 })
        );
        // Balance with no better place leaves it where it is.
        let r = plan_move(
            n(1),
            Status::empty(),
            0,
            Target::Balance,
            &away,
            || None,
            up,
        );
        assert_eq!(r, Ok(MovePlan::Stay { node: 2 }));
    }

    #[test]
    fn a_placement_that_cannot_be_honoured_falls_back_home_only_when_asked() {
        let down = |x: NodeId| Err(format!("node {x} is down"));
        assert_eq!(
            plan_start(n(1), None, false, down),
            Ok((StartPlan::Home, None))
        );
        assert_eq!(
            plan_start(n(1), Some(n(1)), false, down),
            Ok((StartPlan::Home, None))
        );
        assert_eq!(
            plan_start(n(1), Some(n(2)), false, up),
            Ok((StartPlan::At(n(2)), None))
        );
        assert_eq!(
            plan_start(n(1), Some(n(2)), true, down),
            Ok((StartPlan::Home, Some("node 2 is down".into())))
        );
        assert_eq!(
            plan_start(n(1), Some(n(2)), false, down)
                .unwrap_err()
                .to_string(),
            "refused: node 2 is down"
        );
    }
}
