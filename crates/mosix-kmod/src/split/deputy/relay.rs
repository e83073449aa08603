//! A direct move from one remote to another, relayed by the deputy: home sends `MoveTo`, the
//! remote ships the process to the destination, the destination rejoins home, and home switches
//! the deputy over to the destination's connection once the remote reports `Moved`. Home is the
//! arbiter of which copy is the process: the one whose connection it listens to.

use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::ImageHeader;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;
use tracing::{debug, info, warn};

use super::HomeEnv;
use super::state::{Deputy, Job, REJOIN_GRACE, Relay, TracerEnd};
use crate::kernel::ptrace::Sig;
use crate::link::channel;
use crate::split::failure;
use crate::split::handle::{MoveAsk, RejoinOffer};

impl Deputy {
    /// Asks the remote to move on to another node directly: the deputy is re-pointed, the
    /// memory does not pass through home.
    ///
    /// Home is the arbiter of which copy is the process: the one whose connection home
    /// listens to. Home sends `MoveTo{node, token}`; the remote freezes the process and ships
    /// it to `node` with the token; `node` rebuilds it and, before it lets it run, connects to
    /// home (`Rejoin`) — home takes that connection aside ([`Deputy::on_offer`]); then `node`
    /// tells the remote it started, and the remote drops its copy and reports `Moved` on the
    /// old connection, whereupon home switches over ([`Deputy::commit_relay`]). Until then
    /// home reads nothing from the new copy, so it cannot touch anything; if the remote
    /// reports `MoveFailed` (it thawed its copy), home closes the new connection and the copy
    /// there dies. Signals are held at home meanwhile and go to the copy that wins.
    pub(super) fn start_relay(&mut self, ask: MoveAsk, env: &HomeEnv) {
        let pid = self.pid;
        let why_not = if self.homing {
            Some(format!("process {pid} is on its way home"))
        } else if self.relay.is_some() {
            Some(format!("process {pid} is already moving"))
        } else if self.job != Job::Running {
            Some(format!(
                "process {pid} is stopped (job control): it can move once it runs again"
            ))
        } else {
            None
        };
        if let Some(why) = why_not {
            return (ask.done)(Err(failure::refused(env.me, why)));
        }
        let token = match getrandom::u64() {
            Ok(t) => t,
            Err(e) => {
                return (ask.done)(Err(failure::kernel(format!(
                    "no random token for the move: {e}"
                ))));
            }
        };
        let at = env.procs.home(pid).at.unwrap_or(env.me);
        if let Err(e) = self.out.tx.send(&ProcMsg::MoveTo {
            node: ask.node,
            token,
            live: ask.live,
        }) {
            return (ask.done)(Err(failure::link_lost(at, e)));
        }
        debug!("process {pid}: asked to move on to node {}", ask.node);
        env.procs.update_home(pid, |h| h.moving = true);
        self.out.held = Some(Vec::new());
        // A forwarded call blocked here would hold the move up: interrupt it (the remote
        // then moves with the call to be made again at the destination).
        self.kick_until = Some(Instant::now() + Duration::from_secs(3600));
        self.relay = Some(Relay {
            node: ask.node,
            pid,
            token,
            done: Some(ask.done),
            pending: None,
            source_lost: None,
        });
    }

    /// The destination of a direct move connected: if it is the one home asked for, its
    /// connection is kept aside until the source reports the move done.
    pub(super) fn on_offer(&mut self, o: RejoinOffer) {
        let pid = self.pid;
        let from = o.from;
        let Some(r) = self
            .relay
            .as_mut()
            .filter(|r| r.node == from && r.pending.is_none())
        else {
            return o.refuse(
                self.me,
                format!("no move of process {pid} to node {from} is under way"),
            );
        };
        if r.token != o.token {
            return o.refuse(
                self.me,
                format!("wrong token for the move of process {pid}"),
            );
        }
        let local_pid = o.local_pid;
        match channel::split(o.stream) {
            Ok((tx, rx)) => {
                if tx.send(&ProcMsg::Rejoined).is_ok() {
                    debug!("process {pid}: node {} rejoined as pid {local_pid}", r.node);
                    r.pending = Some((tx, rx, local_pid));
                }
            }
            Err(e) => warn!("process {pid}: taking node {}'s connection: {e}", r.node),
        }
    }

    /// Between two things the tracer does: a move whose source was lost is committed as soon
    /// as the destination has rejoined, or given up after [`REJOIN_GRACE`].
    pub(super) fn relay_tick(&mut self, env: &HomeEnv, header: &ImageHeader) -> Option<TracerEnd> {
        let r = self.relay.as_ref()?;
        let lost_at = r.source_lost?;
        if r.pending.is_some() {
            return self.commit_relay(Vec::new(), env, header);
        }
        if lost_at.elapsed() < REJOIN_GRACE {
            return None;
        }
        let node = r.node;
        mosix_core::metrics::global().lost(mosix_core::metrics::Lost::DirectMove);
        warn!(
            "process {} ({}) lost: its node went away during its move to node {node}, which never rejoined; it is killed at home",
            self.pid, header.comm
        );
        self.relay = None;
        self.kill_deputy();
        Some(TracerEnd::Gone)
    }

    /// The source reports the process runs at the destination (or was lost while the
    /// destination had rejoined): home switches to the destination's connection.
    pub(super) fn commit_relay(
        &mut self,
        signals: Vec<i32>,
        env: &HomeEnv,
        header: &ImageHeader,
    ) -> Option<TracerEnd> {
        let pid = self.pid;
        let Some(mut relay) = self.relay.take() else {
            warn!("process {pid}: its node says it moved, but no move was asked; it is killed");
            self.kill_deputy();
            return Some(TracerEnd::Gone);
        };
        let node = relay.node;
        let Some((tx, rx, rpid)) = relay.pending.take() else {
            mosix_core::metrics::global().lost(mosix_core::metrics::Lost::DirectMove);
            warn!(
                "process {pid} ({}) lost: it left for node {node}, which never rejoined; it is killed at home",
                header.comm
            );
            relay.finish(Err(failure::link_lost(
                node,
                format!("process {pid} was lost on its way there"),
            )));
            let _ = self.out.tx.send(&ProcMsg::Kill);
            self.kill_deputy();
            return Some(TracerEnd::Gone);
        };
        let from = env.procs.home(pid).at.map_or(0, NodeId::get);
        self.out.tx.shutdown();
        self.out.tx = tx.clone();
        // The new remote counts the SIGCONTs it delivers from zero.
        self.out.conts = 0;
        self.out.release(signals.into_iter().filter_map(Sig::new));
        self.kick_until = None;
        if let Err(e) = self.start_executor(rx, tx, node, env) {
            warn!("process {pid} lost: cannot start its executor: {e}");
            relay.finish(Err(failure::kernel(format!(
                "process {pid} lost: cannot start its executor: {e}"
            ))));
            let _ = self.out.tx.send(&ProcMsg::Kill);
            self.kill_deputy();
            return Some(TracerEnd::Gone);
        }
        self.at = node;
        env.procs.update_home(pid, |h| {
            h.at = Some(node);
            h.remote_pid = Some(rpid);
            h.nmigs += 1;
            h.moving = false;
            h.away_cpu_ms += h.remote_cpu_ms;
            h.remote_cpu_ms = 0;
            h.remote_state = None;
        });
        info!(
            "{} (pid {pid}) moved from node {from} to node {node} directly, as pid {rpid}",
            header.comm
        );
        relay.finish(Ok(node));
        None
    }

    /// The direct move failed; the process goes on where it was.
    pub(super) fn relay_failed(&mut self, reason: MoveFailure, env: &HomeEnv) {
        let pid = self.pid;
        let Some(mut relay) = self.relay.take() else {
            return;
        };
        if let Some((tx, _, _)) = relay.pending.take() {
            let _ = tx.send(&ProcMsg::Kill);
            tx.shutdown();
        }
        self.out.release([]);
        if !self.homing {
            self.kick_until = None;
        }
        env.procs.update_home(pid, |h| h.moving = false);
        let at = env.procs.home(pid).at.map_or(0, NodeId::get);
        warn!(
            "process {pid} stays on node {at}: the move to node {} failed: {reason}",
            relay.node
        );
        relay.finish(Err(
            reason.noted(format_args!("process {pid} goes on at node {at}"))
        ));
    }
}
