//! tune: measure this node's speed and what moving a process to each peer costs, and write
//! overheads(5) for the balancer.

mod probe;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use mosix_core::cli::RunningNodes;
use mosix_core::client::{Client, Migrated, Target};
use mosix_core::config::Paths;
use mosix_core::node::NodeId;
use mosix_core::overheads::{Overhead, Overheads};
use serde::Serialize;

use probe::Probe;

/// Measure this node's speed and the cost of moving a process to each peer; write the costs to
/// /etc/overheads for the balancer.
///
/// The speed is this machine's CPU by the yardstick (10000 = the standard CPU). For each peer —
/// the NODEs named, or every node that is up — tune starts a small test process and a large one
/// (--small and --large MiB of memory), moves each to the peer and back --repeat times, and
/// fits the median times to a fixed part and a part per 4 KiB page; on the peer it also times a
/// system call forwarded home. It writes one row per peer to $MOSIX_ETC/overheads (or -o FILE),
/// keeping the rows of peers it did not measure, with a `default` row (the median of all peer
/// rows) for nodes without one, and tells the node service to use the file at once. `mosctl
/// gettune` shows the costs in use; overheads(5) describes the file. Run it when the cluster is
/// quiet: the test processes compete with whatever else runs.
#[derive(Debug, Parser)]
#[command(
    name = "tune",
    version,
    after_long_help = "Examples:\n  tune                 measure every node that is up, write /etc/overheads\n  tune 2 3 -r 5        measure nodes 2 and 3, five moves per size\n  tune -o - 2          print the file instead of writing it\n  tune -n --json       measure and print, write nothing\n\nJSON (--json): an object with node, speed (measured), service_speed (what the service uses), peers (peer, small_ms, large_ms, mig_fixed_us, mig_page_ns, call_rtt_us), failed (peer, error) and written (the file, or null).\n\nExit status: 0 when every peer was measured, 1 when one could not be (the others are still written) or nothing could, 2 on a usage error."
)]
struct Cli {
    /// The peers to measure (number, address or host name); every other node that is up by
    /// default.
    #[arg(value_name = "NODE")]
    nodes: Vec<String>,
    /// Write the file here instead of $MOSIX_ETC/overheads (`-` prints it); the service is told
    /// only when its own file is written.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Measure and print only; write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Memory of the small test process, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    small: u64,
    /// Memory of the large test process, MiB (more than --small).
    #[arg(long, value_name = "MIB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..=16384))]
    large: u64,
    /// Moves per size and peer; the median counts.
    #[arg(short = 'r', long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    repeat: u32,
    /// Forwarded calls timed on each peer.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    calls: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    if let Some(bytes) = std::env::var_os(probe::PAYLOAD_ENV) {
        return probe::payload(&bytes.to_string_lossy());
    }
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("tune", e.as_ref()),
    }
}

/// What was measured towards one peer.
#[derive(Debug, Clone, Serialize)]
struct Measured {
    peer: NodeId,
    small_ms: f64,
    large_ms: f64,
    mig_fixed_us: u64,
    mig_page_ns: u64,
    call_rtt_us: u64,
}

/// The times of the moves to one peer, of the small and of the large test process (ms), and
/// the mean forwarded call there (ns).
struct Samples {
    peer: NodeId,
    ms: [Vec<f64>; 2],
    call_ns: u64,
}

#[derive(Debug, Serialize)]
struct Failed {
    peer: NodeId,
    error: String,
}

#[derive(Debug, Serialize)]
struct Report {
    node: NodeId,
    speed: u32,
    service_speed: Option<u32>,
    peers: Vec<Measured>,
    failed: Vec<Failed>,
    written: Option<String>,
}

const PAGE: u64 = 4096;

fn run(cli: &Cli) -> Result<ExitCode> {
    if cli.large <= cli.small {
        return mosix_core::usage!(
            "--large ({} MiB) must be more than --small ({} MiB): the per-page cost is their difference",
            cli.large,
            cli.small
        );
    }
    if cli.json && cli.output.as_deref() == Some(Path::new("-")) {
        return mosix_core::usage!("--json and -o - both print to standard output: choose one");
    }
    let paths = Paths::from_env();
    let mut client = Client::connect(&paths)?;
    let nodes = RunningNodes::new(&client.config()?)?;
    let me = nodes.me;
    let view = client.view()?;
    let peers = mosix_core::cli::peers_to_measure("tune", &cli.nodes, &nodes, &view)
        .map_err(|e| anyhow!(e))?;

    let speed = mosix_core::cli::with_progress(
        "tune",
        || Some("measuring this node's speed (yardstick)".into()),
        mosix_kmod::node::measure::calibrate_speed,
    );
    let service_speed = view.get(me).and_then(|v| v.figures).map(|f| f.speed);

    let mut failed: Vec<Failed> = Vec::new();
    let mut up: Vec<NodeId> = Vec::new();
    for p in peers {
        match view.get(p) {
            Some(v) if v.up => up.push(p),
            _ => failed.push(Failed {
                peer: p,
                error: format!("node {p} is down: not measured"),
            }),
        }
    }
    if up.is_empty() && failed.is_empty() {
        bail!(
            "no other node is up, so no link to measure (this node's speed by the yardstick: {speed})"
        );
    }

    let small = cli.small << 20;
    let large = cli.large << 20;
    // Moving and coming back may take a while on a slow link or a loaded node.
    client.set_timeout(Some(Duration::from_secs(300)));
    let mut samples: Vec<Samples> = up
        .iter()
        .map(|&peer| Samples {
            peer,
            ms: [Vec::new(), Vec::new()],
            call_ns: 0,
        })
        .collect();
    // No test process at all when no peer is up.
    let sizes = if samples.is_empty() {
        vec![]
    } else {
        vec![small, large]
    };
    let bar = mosix_core::cli::progress_bar(
        (sizes.len() * samples.len()) as u64 * u64::from(cli.repeat),
        "tune: moves",
    );
    for (size_i, bytes) in sizes.into_iter().enumerate() {
        let mut probe = Probe::start(bytes)?;
        for entry in samples.iter_mut() {
            let peer = entry.peer;
            if failed.iter().any(|f| f.peer == peer) {
                continue;
            }
            let r = (|| -> Result<()> {
                for i in 0..cli.repeat {
                    bar.set_message(format!("{} MiB to node {peer} and back", bytes >> 20));
                    bar.inc(1);
                    let t = Instant::now();
                    move_to(&mut client, probe.pid(), Target::Node(peer))?;
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    if size_i == 0 && i == 0 {
                        entry.call_ns = probe.calls(cli.calls)?;
                    }
                    move_to(&mut client, probe.pid(), Target::Home)
                        .context("bringing the test process home")?;
                    entry.ms[size_i].push(ms);
                }
                Ok(())
            })();
            if let Err(e) = r {
                failed.push(Failed {
                    peer,
                    error: format!("not measured on node {peer}: {e:#}"),
                });
                if probe_lost(&mut client, probe.pid()) {
                    // It did not come home: start a fresh one for the next peer.
                    drop(probe);
                    probe = Probe::start(bytes)?;
                }
            }
        }
    }

    bar.finish_and_clear();
    let measured: Vec<Measured> = samples
        .into_iter()
        .filter(|x| !failed.iter().any(|f| f.peer == x.peer))
        .map(|x| {
            let (small_ms, large_ms) = (median(&x.ms[0]), median(&x.ms[1]));
            let (fixed, page) = fit(small, small_ms, large, large_ms);
            Measured {
                peer: x.peer,
                small_ms,
                large_ms,
                mig_fixed_us: fixed,
                mig_page_ns: page,
                call_rtt_us: x.call_ns.div_ceil(1000).max(1),
            }
        })
        .collect();
    failed.sort_by_key(|f| f.peer);

    let mut written = None;
    if !measured.is_empty() && !cli.dry_run {
        let target = cli.output.clone().unwrap_or_else(|| paths.overheads());
        let old = if target == Path::new("-") {
            None
        } else {
            previous(&target)
        };
        let file = merge(
            old,
            &measured,
            format!("measured by tune on node {me} (speed {speed})"),
        );
        if target == Path::new("-") {
            print!("{}", file.to_text());
        } else {
            mosix_core::cli::write_atomically(&target, &file.to_text())?;
            written = Some(target.display().to_string());
            if target == paths.overheads() {
                client.load_tune()?;
            }
        }
    }

    let report = Report {
        node: me,
        speed,
        service_speed,
        peers: measured,
        failed,
        written,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if cli.output.as_deref() != Some(Path::new("-")) {
        print_report(&report, cli);
    }
    for f in &report.failed {
        eprintln!("tune: {}", f.error);
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(mosix_core::cli::EXIT_FAILURE)
    })
}

/// Moves the test process and waits until it is there.
fn move_to(client: &mut Client, pid: u32, to: Target) -> Result<()> {
    match client.migrate(pid, to, true)? {
        Migrated { done: true, .. } => Ok(()),
        Migrated { done: false, node } => bail!("the move to node {node} did not finish"),
    }
}

/// Whether the test process is not at home (after a failure): it must be replaced.
fn probe_lost(client: &mut Client, pid: u32) -> bool {
    client.procs(false).map_or(true, |rows| {
        !rows.iter().any(|r| r.pid == pid && r.node == 0)
    })
}

/// The median of some times (0 for none).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The fixed part (µs) and the part per page (ns) of a move, from the times of moving a
/// process of `small` and of `large` bytes: the line through the two points. What the small
/// process carries besides its test memory (its program, its stack) is part of any process, so
/// it counts as fixed. Noise that makes the large move no slower gives a per-page cost of 1 ns,
/// never zero or negative.
fn fit(small: u64, small_ms: f64, large: u64, large_ms: f64) -> (u64, u64) {
    let pages = |b: u64| (b / PAGE) as f64;
    let per_page_ns = ((large_ms - small_ms) * 1e6 / (pages(large) - pages(small))).max(1.0);
    let fixed_us = (small_ms * 1000.0 - pages(small) * per_page_ns / 1000.0).max(1.0);
    (fixed_us.round() as u64, per_page_ns.round() as u64)
}

/// The rows of the file already there, if it is a valid overheads file.
fn previous(path: &Path) -> Option<Overheads> {
    let (o, why) = Overheads::load(path);
    match why {
        Some(why) => {
            eprintln!("tune: the old file is replaced whole: {why}");
            None
        }
        None if o.source == Overheads::builtin().source => None,
        None => Some(o),
    }
}

/// The new file: the rows of `old` for peers not measured now, the measured ones, and a
/// `default` row with the median of every peer row, column by column.
fn merge(old: Option<Overheads>, measured: &[Measured], source: String) -> Overheads {
    let mut rows: Vec<Overhead> = old
        .map(|o| o.rows)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.peer.is_some() && !measured.iter().any(|m| Some(m.peer) == r.peer))
        .collect();
    rows.extend(measured.iter().map(|m| Overhead {
        peer: Some(m.peer),
        mig_fixed_us: m.mig_fixed_us,
        mig_page_ns: m.mig_page_ns,
        call_rtt_us: m.call_rtt_us,
    }));
    let col = |f: fn(&Overhead) -> u64| {
        let v: Vec<f64> = rows.iter().map(|r| f(r) as f64).collect();
        median(&v).round() as u64
    };
    let default = Overhead {
        peer: None,
        mig_fixed_us: col(|r| r.mig_fixed_us),
        mig_page_ns: col(|r| r.mig_page_ns),
        call_rtt_us: col(|r| r.call_rtt_us),
    };
    rows.insert(0, default);
    Overheads { source, rows }
}

fn print_report(r: &Report, cli: &Cli) {
    match r.service_speed {
        Some(s) if s != r.speed => println!(
            "node {}: speed {} by the yardstick (the service uses {s} per CPU: its CPU quota or mosctl setspeed)",
            r.node, r.speed
        ),
        _ => println!("node {}: speed {} by the yardstick", r.node, r.speed),
    }
    if !r.peers.is_empty() {
        println!(
            "{:>6} {:>10} {:>10} {:>13} {:>12} {:>12}",
            "peer",
            format!("{}MiB ms", cli.small),
            format!("{}MiB ms", cli.large),
            "mig_fixed_us",
            "mig_page_ns",
            "call_rtt_us"
        );
    }
    for m in &r.peers {
        println!(
            "{:>6} {:>10.1} {:>10.1} {:>13} {:>12} {:>12}",
            m.peer, m.small_ms, m.large_ms, m.mig_fixed_us, m.mig_page_ns, m.call_rtt_us
        );
    }
    match &r.written {
        Some(w) if cli.output.is_none() => {
            println!("wrote {w}; the service on node {} now uses it", r.node)
        }
        Some(w) => println!("wrote {w}"),
        None if cli.dry_run => println!("nothing written (--dry-run)"),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }

    #[test]
    fn arguments() {
        let c = Cli::try_parse_from(["tune", "2", "node3", "-o", "-", "-r", "5"]).unwrap();
        assert_eq!(c.nodes, ["2", "node3"]);
        assert_eq!(c.output.as_deref(), Some(Path::new("-")));
        assert_eq!((c.repeat, c.small, c.large), (5, 1, 32));
        assert!(Cli::try_parse_from(["tune", "-r", "0"]).is_err());
        assert!(Cli::try_parse_from(["tune", "--small", "0"]).is_err());
    }

    #[test]
    fn the_fit_goes_through_both_points() {
        // 1 MiB in 12 ms, 33 MiB in 44 ms: 32 MiB (8192 pages) cost 32 ms, 3906 ns a page;
        // the fixed part is 12 ms less 256 pages of that.
        let (fixed, page) = fit(1 << 20, 12.0, 33 << 20, 44.0);
        assert_eq!(page, 3906);
        assert_eq!(fixed, 11_000);
        // A large move measured no slower than the small one: the per-page cost stays positive.
        let (fixed, page) = fit(1 << 20, 12.0, 33 << 20, 11.0);
        assert_eq!(page, 1);
        assert_eq!(fixed, 12_000);
    }

    #[test]
    fn merging_keeps_other_peers_and_recomputes_the_default() {
        let n = |x| NodeId::new(x).unwrap();
        let old = Overheads {
            source: "old".into(),
            rows: vec![
                Overhead {
                    peer: None,
                    mig_fixed_us: 1,
                    mig_page_ns: 1,
                    call_rtt_us: 1,
                },
                Overhead {
                    peer: Some(n(2)),
                    mig_fixed_us: 100,
                    mig_page_ns: 100,
                    call_rtt_us: 100,
                },
                Overhead {
                    peer: Some(n(3)),
                    mig_fixed_us: 300,
                    mig_page_ns: 300,
                    call_rtt_us: 300,
                },
            ],
        };
        let m = |peer, v| Measured {
            peer: n(peer),
            small_ms: 0.0,
            large_ms: 0.0,
            mig_fixed_us: v,
            mig_page_ns: v,
            call_rtt_us: v,
        };
        let new = merge(Some(old), &[m(3, 900), m(4, 500)], "new".into());
        let text = new.to_text();
        let back = Overheads::parse("x", &text).unwrap();
        assert_eq!(back.rows.len(), 4, "{text}");
        assert_eq!(back.towards(n(2)).mig_fixed_us, 100);
        assert_eq!(back.towards(n(3)).mig_fixed_us, 900);
        assert_eq!(back.towards(n(4)).mig_fixed_us, 500);
        // The median of 100, 900, 500.
        assert_eq!(back.towards(n(7)).mig_fixed_us, 500);
        assert!(text.starts_with("# overheads: new"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
