//! The home side of a migrated process: sending it away, then standing in for it as its
//! *deputy* — the original process, still at home with its pid, parent, descriptors, cwd,
//! credentials and terminal, kept stopped under ptrace with its user memory released.
//!
//! Two threads per migrated process:
//!
//! * the **tracer** owns the ptrace relationship (ptrace requests must come from the thread that
//!   seized). While the process is away the deputy sleeps in `pause()` run from our area, with
//!   every signal unblocked and caught (a dummy handler, so that even signals whose default is
//!   to be ignored reach us): each signal sent to the home pid stops it, and the tracer forwards
//!   the signal to the remote and suppresses it here. The tracer also runs, by injection, the
//!   forwarded calls that must execute inside the deputy, and ends the deputy the way the
//!   process ended (the same exit status, or death by the same signal).
//! * the **executor** reads the connection: forwarded calls that work on descriptors run right
//!   here on duplicates of the deputy's descriptors ([`crate::split::forward::exec_service`]), the others go to
//!   the tracer; the end of the process and its coming home go to the tracer too.
//!
//! A forwarded call blocked at home (a read from a terminal) when a signal for the process
//! arrives is interrupted ([`interrupt_signal`] at the executor thread) and answered
//! `-ERESTARTSYS`, which the remote kernel turns into what the signal's handler asks for: a
//! restart, or `EINTR`.
//!
//! Rooms: this file sends a process away and makes its thread the deputy; [`tracer`] is the
//! deputy itself (its agent, calls run inside it, its end, coming home); [`signals`] its
//! signals and job control;
//! [`executor`] reads the connection and runs calls on the deputy's descriptors; [`relay`] is
//! a direct move from one remote to another.

mod dfsa;
mod executor;
mod relay;
mod signals;
mod state;
mod tracer;

use mosix_core::metrics;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;
use tracing::{debug, info, warn};

use crate::freezer::freeze::{self, FreezeOptions, Frozen};
use crate::kernel::agent::Agent;
use crate::kernel::ptrace::{self, Running, Sig, Stop, Stopped};
use crate::link::{self, SharedContext};
use crate::split::failure;
use crate::split::handle::MoveDone;
use crate::split::procs::Procs;
use crate::split::{live, ship};
use state::Deputy;

/// The answer to a forwarded call interrupted at home: "interrupted; restart it if the
/// signal's handler says so" (the kernel's `-ERESTARTSYS`).
const INTERRUPTED: i64 = -(crate::kernel::abi::ERESTARTSYS as i64);

/// How long after forwarding a signal a forwarded call blocked at home keeps being interrupted.
const KICK_FOR_SIGNAL: Duration = Duration::from_millis(100);

/// What the home side needs from its node.
#[derive(Debug, Clone)]
pub struct HomeEnv {
    /// This node.
    pub me: NodeId,
    /// The registry.
    pub procs: Arc<Procs>,
    /// The link context (for connecting to the destination).
    pub link: SharedContext,
    /// Where MFS is mounted (`[mfs] mount`) and the file systems declared the same on every
    /// node (`[mfs] dfsa_paths`): a process with a file of its destination open (or its
    /// working directory there) is let do its file I/O there natively.
    pub files: (std::path::PathBuf, Vec<std::path::PathBuf>),
}

impl HomeEnv {
    /// How a process of this node that is here is frozen (for a move, a freeze, a checkpoint).
    pub fn freeze_options(&self, home: &crate::split::procs::Home) -> FreezeOptions {
        FreezeOptions {
            home: self.me,
            nmigs: home.nmigs,
            locked: home.lock,
            under_filter: false,
            cached: None,
            creds: None,
        }
    }
}

/// Whether process `pid`, leaving for node `to`, may do its file I/O there natively, and on
/// which descriptor numbers: those it does not use now (see
/// [`mosix_core::image::ImageHeader::native_io`]). Asked for by a process declared I/O-bound
/// (`mosrun -i`), or one with a file of `to` open (`MOUNT/to/…` or a file system declared the
/// same everywhere) or its working directory there: a process going to its data. Any other
/// has its calls on files there notified as before, and never comes home for a descriptor it
/// opens at home later.
pub fn native_io(
    pid: i32,
    to: NodeId,
    home: &crate::split::procs::Home,
    (mount, shared): &(std::path::PathBuf, Vec<std::path::PathBuf>),
) -> Option<mosix_core::image::NativeIo> {
    use std::path::Path;
    let there = mount.join(to.get().to_string());
    let of_there = |p: &Path| p.starts_with(&there) || shared.iter().any(|s| p.starts_with(s));
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut fds = Vec::new();
    let mut wants = home.decay == mosix_core::client::DecayMode::IoBound
        || std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|p| of_there(&p));
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        fds.push(fd);
        if !wants {
            wants = std::fs::read_link(e.path()).is_ok_and(|p| of_there(&p));
        }
    }
    // The remote's filter listener takes number 0 in the stub: the range starts at 1 or above.
    let umask = procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .ok()
        .and_then(|s| s.umask)
        .unwrap_or(0o22);
    wants.then(|| mosix_core::image::NativeIo::of_table(&fds, 1, umask))
}

/// Moves `pid` to node `to` on a new thread; `done` is called with where it went, or why not.
/// An automatic move carries its `ceiling` (see [`mosix_core::balance::admits`]): the
/// destination may refuse it.
pub fn migrate(
    pid: i32,
    to: NodeId,
    ceiling: Option<u32>,
    live: Live,
    env: HomeEnv,
    done: MoveDone,
) {
    go(pid, Away::Node(to, ceiling, live), env, done);
}

pub use crate::split::live::Live;

/// Stops `pid` on a new thread and sends it where `away` says; `done` is called with where it
/// went, or why not.
fn go(pid: i32, away: Away, env: HomeEnv, done: MoveDone) {
    // `done` reaches the thread only once it runs, so that it can still be called here if the
    // thread cannot start.
    let (tx, rx) = mpsc::channel::<MoveDone>();
    let spawned = std::thread::Builder::new()
        .name(format!("mosix-deputy-{pid}"))
        .spawn(move || {
            let Ok(done) = rx.recv() else { return };
            let running = match ptrace::seize(pid, nix::sys::ptrace::Options::empty()) {
                Ok(r) => r,
                Err(e) => return done(Err(failure::traced(pid, "seizing it", &e))),
            };
            let mut sigs = Vec::new();
            let t = match running.interrupt(|s, _| sigs.push(s)) {
                Ok(t) => t,
                Err(e) => return done(Err(failure::traced(pid, "stopping it", &e))),
            };
            send_away(t, sigs, away, &env, done);
        });
    match spawned {
        Ok(_) => {
            let _ = tx.send(done);
        }
        Err(e) => done(Err(failure::kernel(format!(
            "cannot start a deputy thread: {e}"
        )))),
    }
}

/// `mosrun -NODE`: seizes `pid` now (the caller answers mosrun once `ready` is called) and moves
/// it to `to` right after its next execve, from the first instruction of the new program. If the
/// move fails, the program runs at home when `fallback_home`, else it is killed.
pub fn migrate_at_exec(
    pid: i32,
    to: NodeId,
    fallback_home: bool,
    env: HomeEnv,
    ready: Box<dyn FnOnce(Result<(), MoveFailure>) + Send>,
) {
    let (tx, rx) = mpsc::channel::<Box<dyn FnOnce(Result<(), MoveFailure>) + Send>>();
    let spawned = std::thread::Builder::new()
        .name(format!("mosix-deputy-{pid}"))
        .spawn(move || {
            let Ok(ready) = rx.recv() else { return };
            let running = match ptrace::seize(pid, nix::sys::ptrace::Options::PTRACE_O_TRACEEXEC) {
                Ok(r) => r,
                Err(e) => return ready(Err(failure::traced(pid, "seizing it", &e))),
            };
            ready(Ok(()));
            // Wait for the exec (mosrun may also fail and exit instead).
            let mut r = running;
            let exec_stop = loop {
                match r.wait() {
                    Ok(s) => match s.stop {
                        Stop::Event(ev) if ev == libc::PTRACE_EVENT_EXEC => break s,
                        Stop::Signal(sig) => match s.cont(Some(sig)) {
                            Ok(r2) => r = r2,
                            Err(_) => return,
                        },
                        _ => match s.cont(None) {
                            Ok(r2) => r = r2,
                            Err(_) => return,
                        },
                    },
                    Err(_) => return,
                }
            };
            // The exec stop is inside execve: the kernel writes execve's result into rax after
            // we resume, which would clobber an injected call. Step to the syscall-exit stop,
            // where the call is over.
            let t = match exec_stop.syscall().and_then(Running::wait) {
                Ok(t) if t.stop == Stop::Syscall => t,
                Ok(t) => {
                    warn!("process {pid}: unexpected stop {:?} after its exec", t.stop);
                    let _ = t.detach(None);
                    return;
                }
                Err(_) => return,
            };
            let comm = comm_of(pid);
            send_away(
                t,
                Vec::new(),
                Away::Node(to, None, Live::Never),
                &env,
                Box::new(move |res| {
                    if let Err(e) = res {
                        if fallback_home {
                            warn!("{comm} (pid {pid}) runs at home: {e}");
                        } else {
                            metrics::global().lost(metrics::Lost::Start);
                            warn!(
                                "{comm} (pid {pid}) killed: it could not start on node {to}: {e}"
                            );
                            let _ = Sig::KILL.send_to(pid);
                        }
                    }
                }),
            );
        });
    match spawned {
        Ok(_) => {
            let _ = tx.send(ready);
        }
        Err(e) => ready(Err(failure::kernel(format!(
            "cannot start a deputy thread: {e}"
        )))),
    }
}

/// The command name of process `pid` (empty if it is gone).
fn comm_of(pid: i32) -> String {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map(|s| s.comm)
        .unwrap_or_default()
}

/// Freezes `pid` at home (`migrate PID freeze`): its memory goes to a file of `area`, and this
/// thread becomes its deputy as for a process away (see [`crate::split::frozen`]); `done` is
/// called when it is frozen, or with why not.
pub fn freeze(
    pid: i32,
    area: crate::split::frozen::FreezeArea,
    why: String,
    env: HomeEnv,
    done: MoveDone,
) {
    go(pid, Away::Frozen(area, why), env, done);
}

/// Where a process goes.
enum Away {
    /// To a node (with the ceiling of an automatic move), live or not.
    Node(NodeId, Option<u32>, Live),
    /// Into a file of this node's freeze area, for a reason.
    Frozen(crate::split::frozen::FreezeArea, String),
}

/// Freezes the stopped process, ships it to where `away` says and, once it runs there (or is
/// frozen), becomes its deputy (this thread then serves it until it ends or comes home).
fn send_away(t: Stopped, sigs: Vec<Sig>, away: Away, env: &HomeEnv, done: MoveDone) {
    let (to, ceiling, live) = match &away {
        Away::Node(to, ceiling, live) => (*to, *ceiling, *live),
        Away::Frozen(..) => (env.me, None, Live::Never),
    };
    let begun = std::time::Instant::now();
    let done: MoveDone = if matches!(away, Away::Node(..)) {
        Box::new(move |r| {
            if let Err(f) = &r {
                metrics::global().move_failed(metrics::Move::Out, f.kind());
            }
            done(r)
        })
    } else {
        done
    };
    let pid = t.pid();
    let home = env.procs.home(pid);
    let cmd = crate::split::procs::command(pid, "");
    let live_wanted = live.wanted(pid);
    let progress = ship::Progress::new(to, live_wanted);
    env.procs.update_home(pid, |h| {
        h.moving = true;
        // Into the freeze area nothing is counted: only moves to a node show their bytes.
        h.sending = matches!(away, Away::Node(..)).then(|| progress.clone());
        if h.command.is_none() {
            h.command = Some(cmd);
        }
    });
    let stop_moving = |env: &HomeEnv| {
        env.procs.update_home(pid, |h| {
            h.moving = false;
            h.sending = None;
        })
    };
    let ctx = link::snapshot(&env.link);
    let opts = env.freeze_options(&home);
    // A live move sends the memory first, while the process runs, then freezes it again.
    let (t, sigs, precopy, stopped_at) = if live_wanted {
        let comm = comm_of(pid);
        let precopy = match live::Precopy::start(t, sigs, &opts, to, &ctx, Some(&progress), None) {
            Ok(p) => Some(p),
            // Asked for, or the link or the destination failed: the move fails.
            Err(e) if live == Live::Always || !matches!(e, MoveFailure::Kernel { .. }) => {
                stop_moving(env);
                warn!("{comm} (pid {pid}) stays here: a live move failed: {e}");
                return done(Err(e.noted(format_args!("process {pid} goes on here"))));
            }
            // Chosen by size, and this node could not do it (no write tracking here): it
            // moves the plain way.
            Err(e) => {
                info!("{comm} (pid {pid}): no live move ({e}); it moves stopped");
                None
            }
        };
        let mut pending = Vec::new();
        let stopped_at = std::time::Instant::now();
        let seized = ptrace::seize(pid, nix::sys::ptrace::Options::empty())
            .and_then(|r| r.interrupt(|s, _| pending.push(s)));
        match seized {
            Ok(t) => (t, pending, precopy, stopped_at),
            Err(e) => {
                stop_moving(env);
                return done(Err(failure::traced(
                    pid,
                    "stopping it after its memory was sent",
                    &e,
                )));
            }
        }
    } else {
        (t, sigs, None, std::time::Instant::now())
    };
    let mut frozen = match freeze::freeze_stopped(t, sigs, &opts) {
        Ok(f) => f,
        Err(e) => {
            stop_moving(env);
            return done(Err(failure::traced(pid, "freezing it", &e)));
        }
    };
    frozen.header.ceiling = ceiling;
    if let Away::Node(to, ..) = &away {
        frozen.header.native_io = native_io(pid, *to, &home, &env.files);
    }
    // The agent that will make the process's forwarded calls with its rights: started before
    // the move, so that a process that cannot have one stays here.
    let (agent, agent_run) = match start_agent(frozen) {
        (Some(f), Ok(a)) => {
            frozen = f;
            a
        }
        (f, Err(e)) => {
            if let Some(f) = f {
                let _ = f.thaw();
            }
            stop_moving(env);
            warn!("{} (pid {pid}) stays here: {e}", comm_of(pid));
            return done(Err(failure::traced(pid, "starting its agent", &e)));
        }
        (None, Ok(_)) => {
            stop_moving(env);
            return done(Err(MoveFailure::Gone {
                pid: pid.unsigned_abs(),
                detail: "it vanished while its agent was started".into(),
            }));
        }
    };
    let started = std::time::Instant::now();
    // Stopped, frozen and given its agent: the part of a live move's stop before its last
    // pages, logged should the stop be long.
    let before_ship = started - stopped_at;
    let live_rounds = precopy.as_ref().map(|p| (p.rounds, p.bytes));
    let shipped = match (&away, precopy) {
        (Away::Node(..), Some(p)) => p.finish(&frozen),
        (Away::Node(..), None) => ship::ship(&frozen, to, &ctx, None, Some(&progress)),
        (Away::Frozen(area, _), _) => crate::split::frozen::ship(&frozen, env.me, area),
    };
    let shipped = match shipped {
        Ok(s) => s,
        Err(e) => {
            if let Some(f) = drop_agent(frozen, &agent, agent_run) {
                let _ = f.thaw();
            }
            stop_moving(env);
            warn!("{} (pid {pid}) stays here: {e}", comm_of(pid));
            return done(Err(e.noted(format_args!("process {pid} goes on here"))));
        }
    };
    let (rpid, tx, rx, last_bytes) = (shipped.pid, shipped.tx, shipped.rx, shipped.bytes);
    if let Away::Frozen(_, why) = away {
        info!(
            "{} (pid {pid}) frozen: {} MiB in {:.0} ms",
            frozen.header.comm,
            frozen.header.total_bytes >> 20,
            started.elapsed().as_secs_f64() * 1000.0
        );
        let bytes = frozen.header.total_bytes;
        env.procs.update_home(pid, |h| {
            h.frozen = Some(why);
            h.frozen_at = Some(std::time::Instant::now());
            h.frozen_bytes = bytes;
            h.returned_at = None;
        });
    } else if let Some((rounds, bytes)) = live_rounds {
        let parts = format!(
            "{:.1} ms to stop, freeze it and start its agent, {:.1} ms to send the rest, {:.1} ms for node {to} to start it",
            before_ship.as_secs_f64() * 1e3,
            shipped.sending.as_secs_f64() * 1e3,
            shipped.starting.as_secs_f64() * 1e3
        );
        if stopped_at.elapsed() >= crate::freezer::SLOW_STEP {
            warn!(
                "{} (pid {pid}): a long stop in its live move: {parts}",
                frozen.header.comm
            );
        } else {
            debug!(
                "{} (pid {pid}): its live move's stop: {parts}",
                frozen.header.comm
            );
        }
        let m = metrics::global();
        m.moved(
            metrics::Move::Out,
            bytes + last_bytes,
            begun.elapsed().as_secs_f64(),
        );
        m.live_migrations.inc();
        info!(
            pid,
            peer = to.get(),
            "{} (pid {pid}) migrated to node {to} as pid {rpid}, live: {} MiB while it ran ({} rounds), {} KiB while stopped; stopped {:.1} ms",
            frozen.header.comm,
            bytes >> 20,
            rounds + 1,
            last_bytes >> 10,
            stopped_at.elapsed().as_secs_f64() * 1000.0
        );
    } else {
        metrics::global().moved(
            metrics::Move::Out,
            last_bytes,
            begun.elapsed().as_secs_f64(),
        );
        info!(
            pid,
            peer = to.get(),
            "{} (pid {pid}) migrated to node {to} as pid {rpid}: {} MiB in {:.0} ms",
            frozen.header.comm,
            frozen.header.total_bytes >> 20,
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    debug!(
        "pid {pid}: image sent in {:.1} ms, started {:.1} ms later",
        shipped.sending.as_secs_f64() * 1e3,
        shipped.starting.as_secs_f64() * 1e3
    );
    let header = frozen.header.clone();
    let deputy = match Deputy::become_(frozen, tx.clone(), env.me, to, (agent, agent_run)) {
        Ok(d) => d,
        Err(e) => {
            // It runs there but we cannot stand in for it: end it there, and here.
            let _ = tx.send(&ProcMsg::Kill);
            stop_moving(env);
            let _ = Sig::KILL.send_to(pid);
            return done(Err(failure::kernel(format!(
                "process {pid} lost: its deputy could not be made: {e}"
            ))));
        }
    };
    deputy.serve(rx, tx, env.clone(), header, (to, rpid, done));
}

/// Starts the agent in a frozen process (its signals blocked until the deputy serves it).
fn start_agent(f: Frozen) -> (Option<Frozen>, ptrace::Result<(Arc<Agent>, Running)>) {
    let (f, agent) = f.with_held(Agent::spawn);
    let started = agent.and_then(|a| {
        let running = a.trace()?;
        Ok((Arc::new(a), running))
    });
    (f, started)
}

/// Ends the agent of a frozen process that stays here and unmaps its region, before the process
/// is thawed.
fn drop_agent(f: Frozen, agent: &Agent, running: Running) -> Option<Frozen> {
    agent.end(running, |_, _| {});
    let (f, unmapped) = f.with_held(|t, area, regs, _| agent.unmap(t, area.site(), regs));
    if let Err(e) = unmapped {
        warn!("process {}: unmapping its agent's region: {e}", agent.pid());
    }
    f
}
