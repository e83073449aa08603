//! mtune: measure what reaching each node's files costs — through MFS from this node, and
//! directly on the node (DFSA) — and write mfscosts(5) for the balancer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use mosix_core::cli::RunningNodes;
use mosix_core::client::Client;
use mosix_core::config::Paths;
use mosix_core::mfscosts::{MfsCost, MfsCosts};
use mosix_core::node::NodeId;
use serde::Serialize;

/// Measure what reaching each node's files costs, through MFS from this node and directly on
/// the node (DFSA); write the costs to /etc/mfscosts for the balancer.
///
/// For each peer — the NODEs named, or every node that is up — mtune makes a test directory in
/// the peer's /tmp through MFS (/mfs/N/tmp), times small calls (stat) and reads of each block
/// size from 64 B to 16 KiB there (the cost per KiB is the slope of the line through them), and
/// does the same in this node's /tmp; the cost of the same work
/// done on the peer by a migrated process (DFSA) is the local cost plus a seccomp notification
/// round trip, measured here. It writes one row per peer to $MOSIX_ETC/mfscosts (or -o FILE),
/// keeping the rows of peers it did not measure, with a `default` row (the median of the peer
/// rows), and tells the node service to use the file at once. `mosctl gettune --files` shows
/// the costs in use; mfscosts(5) describes the file. The peers' MFS must be on (mosctl mfs).
#[derive(Debug, Parser)]
#[command(
    name = "mtune",
    version,
    after_long_help = "Examples:\n  mtune                measure every node that is up, write /etc/mfscosts\n  mtune 3 -c 2000      measure node 3 with 2000 calls per timing\n  mtune -o - 2         print the file instead of writing it\n  mtune -n --json      measure and print, write nothing\n\nJSON (--json): an object with node, notify_us, local (call_us, kib_us, reads: block, us), peers (peer, mfs_call_us, mfs_kib_us, dfsa_call_us, dfsa_kib_us), reads (peer, reads: block, us; through MFS), failed (peer, error) and written (the file, or null).\n\nExit status: 0 when every peer was measured, 1 when one could not be (the others are still written) or nothing could, 2 on a usage error."
)]
struct Cli {
    /// The peers to measure (number, address or host name); every other node that is up by
    /// default.
    #[arg(value_name = "NODE")]
    nodes: Vec<String>,
    /// Write the file here instead of $MOSIX_ETC/mfscosts (`-` prints it); the service is told
    /// only when its own file is written.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Measure and print only; write nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Calls per timing (the median of three timings counts).
    #[arg(short = 'c', long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    calls: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("mtune", e.as_ref()),
    }
}

/// What one place's files cost.
#[derive(Debug, Clone, Serialize)]
struct Place {
    call_us: f64,
    kib_us: f64,
    /// A read of each block size (64 B .. 16 KiB), microseconds.
    reads: Vec<BlockRead>,
}

/// The time of one read of `block` bytes.
#[derive(Debug, Clone, Copy, Serialize)]
struct BlockRead {
    block: u32,
    us: f64,
}

/// A peer's reads by block size, through MFS.
#[derive(Debug, Serialize)]
struct PeerReads {
    peer: NodeId,
    reads: Vec<BlockRead>,
}

#[derive(Debug, Serialize)]
struct Failed {
    peer: NodeId,
    error: String,
}

#[derive(Debug, Serialize)]
struct Report {
    node: NodeId,
    notify_us: f64,
    local: Place,
    peers: Vec<MfsCost>,
    /// Each measured peer's reads by block size, through MFS.
    reads: Vec<PeerReads>,
    failed: Vec<Failed>,
    written: Option<String>,
}

/// The size of the file read in each timing.
const FILE_KIB: u64 = 1024;
/// The block sizes read (PostMark's range).
const BLOCKS: [u32; 5] = [64, 256, 1024, 4096, 16384];

/// The slope, in microseconds per KiB, of the least-squares line through the reads' times.
fn slope(reads: &[BlockRead]) -> f64 {
    let n = reads.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let x = |r: &BlockRead| f64::from(r.block) / 1024.0;
    let mx = reads.iter().map(x).sum::<f64>() / n;
    let my = reads.iter().map(|r| r.us).sum::<f64>() / n;
    let sxy: f64 = reads.iter().map(|r| (x(r) - mx) * (r.us - my)).sum();
    let sxx: f64 = reads.iter().map(|r| (x(r) - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `calls` stats of the test file in `dir` (made and removed here), and `calls` reads
/// of it of each block size of [`BLOCKS`] (positioned, one after another, wrapping around). The
/// cost per KiB is the slope of the straight line through the reads' times (least squares); a
/// call is a stat.
fn measure(dir: &Path, calls: u32) -> Result<Place> {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let done = (|| {
        let file = dir.join("data");
        let size = FILE_KIB * 1024;
        std::fs::write(&file, vec![0x5au8; size as usize])
            .with_context(|| format!("writing {}", file.display()))?;
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let mut buf = vec![0u8; *BLOCKS.iter().max().unwrap_or(&4096) as usize];
        let mut call = Vec::new();
        let mut reads: Vec<Vec<f64>> = vec![Vec::new(); BLOCKS.len()];
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..calls {
                std::fs::symlink_metadata(&file)
                    .with_context(|| format!("stat of {}", file.display()))?;
            }
            call.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
            for (k, &b) in BLOCKS.iter().enumerate() {
                let b = u64::from(b);
                let t = Instant::now();
                for i in 0..u64::from(calls) {
                    let at = (i * b) % size;
                    let n = f
                        .read_at(&mut buf[..b as usize], at)
                        .with_context(|| format!("reading {}", file.display()))?;
                    if n as u64 != b {
                        bail!("{}: read {n} bytes of {b} at {at}", file.display());
                    }
                }
                reads[k].push(t.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
            }
        }
        let reads: Vec<BlockRead> = BLOCKS
            .iter()
            .zip(reads)
            .map(|(&block, v)| BlockRead {
                block,
                us: median(v),
            })
            .collect();
        Ok(Place {
            call_us: median(call),
            kib_us: slope(&reads).max(0.0),
            reads,
        })
    })();
    let _ = std::fs::remove_dir_all(dir);
    done
}

fn run(cli: &Cli) -> Result<ExitCode> {
    if cli.json && cli.output.as_deref() == Some(Path::new("-")) {
        return mosix_core::usage!("--json and -o - both print to standard output: choose one");
    }
    let paths = Paths::from_env();
    let mut client = Client::connect(&paths)?;
    let config = client.config()?;
    let nodes = RunningNodes::new(&config)?;
    let me = nodes.me;
    let view = client.view()?;
    let peers = mosix_core::cli::peers_to_measure("mtune", &cli.nodes, &nodes, &view)
        .map_err(|e| anyhow!(e))?;
    let mount = PathBuf::from(&config.mfs_mount);
    let tag = format!("mtune.{}", std::process::id());

    progress("timing a seccomp notification round trip");
    let notify_us =
        mosix_kmod::kernel::seccomp::notify_round_trip_ns(u64::from(cli.calls) * 4, true)
            .context("timing a seccomp notification")? as f64
            / 1000.0;
    progress("timing this node's own files (/tmp)");
    let local = measure(&std::env::temp_dir().join(&tag), cli.calls)?;

    let mut measured = Vec::new();
    let mut reads = Vec::new();
    let mut failed = Vec::new();
    for p in peers {
        if view
            .get(p)
            .is_some_and(|v| v.status.contains(mosix_core::Status::NOMFS))
        {
            failed.push(Failed {
                peer: p,
                error: format!("node {p} does not serve its files (nomfs)"),
            });
            continue;
        }
        progress(&format!(
            "timing node {p}'s files through MFS ({}/{p}/tmp)",
            mount.display()
        ));
        match measure(&mount.join(p.to_string()).join("tmp").join(&tag), cli.calls) {
            Ok(m) => {
                let row = MfsCost {
                    peer: Some(p),
                    mfs_call_us: m.call_us.ceil() as u64,
                    mfs_kib_us: m.kib_us.ceil() as u64,
                    dfsa_call_us: (local.call_us + notify_us).ceil() as u64,
                    dfsa_kib_us: local.kib_us.ceil() as u64,
                };
                progress(&format!(
                    "node {p}: MFS {:.1} µs per call, {:.2} µs per KiB (reads of {}); DFSA {} µs per call",
                    m.call_us,
                    m.kib_us,
                    m.reads
                        .iter()
                        .map(|r| format!("{} B: {:.1} µs", r.block, r.us))
                        .collect::<Vec<_>>()
                        .join(", "),
                    row.dfsa_call_us
                ));
                measured.push(row);
                reads.push(PeerReads {
                    peer: p,
                    reads: m.reads,
                });
            }
            Err(e) => failed.push(Failed {
                peer: p,
                error: format!("node {p}: {e:#}"),
            }),
        }
    }

    let mut written = None;
    if !measured.is_empty() && !cli.dry_run {
        let target = cli.output.clone().unwrap_or_else(|| paths.mfscosts());
        let old = if target == Path::new("-") {
            None
        } else {
            previous(&target)?
        };
        let file = merge(old, &measured, format!("measured by mtune on node {me}"));
        if target == Path::new("-") {
            print!("{}", file.to_text());
        } else {
            mosix_core::cli::write_atomically(&target, &file.to_text())?;
            written = Some(target.display().to_string());
            if target == paths.mfscosts() {
                client.load_tune()?;
            }
        }
    }
    let report = Report {
        node: me,
        notify_us,
        local,
        peers: measured,
        reads,
        failed,
        written,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if cli.output.as_deref() != Some(Path::new("-")) {
        print_report(&report);
    }
    for f in &report.failed {
        eprintln!("mtune: {}", f.error);
    }
    Ok(if report.failed.is_empty() && !report.peers.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(mosix_core::cli::EXIT_FAILURE)
    })
}

/// The rows of the file there now: none if there is no file; an error naming the file and
/// the line if it is wrong (its rows are not kept blindly, nor thrown away silently).
/// A line of progress on standard error, when it is a terminal (a pipe or a log gets only
/// the results and the errors).
fn progress(what: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!("mtune: {what}");
    }
}

fn previous(path: &Path) -> Result<Option<MfsCosts>> {
    match std::fs::read_to_string(path) {
        Ok(text) => MfsCosts::parse(&path.display().to_string(), &text)
            .map(Some)
            .map_err(|e| anyhow!("{e} (fix or remove the file, or write elsewhere with -o)")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("{}: {e}", path.display())),
    }
}

/// The new file: the rows measured now, the old rows of peers not measured, and a default row
/// that is the median of every peer row.
fn merge(old: Option<MfsCosts>, measured: &[MfsCost], source: String) -> MfsCosts {
    let mut rows: Vec<MfsCost> = old
        .map(|o| o.rows)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.peer.is_some() && !measured.iter().any(|m| m.peer == r.peer))
        .collect();
    rows.extend_from_slice(measured);
    let med = |f: fn(&MfsCost) -> u64| {
        let mut v: Vec<u64> = rows.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let default = MfsCost {
        peer: None,
        mfs_call_us: med(|r| r.mfs_call_us),
        mfs_kib_us: med(|r| r.mfs_kib_us),
        dfsa_call_us: med(|r| r.dfsa_call_us),
        dfsa_kib_us: med(|r| r.dfsa_kib_us),
    };
    rows.insert(0, default);
    MfsCosts { source, rows }
}

fn print_report(r: &Report) {
    println!(
        "node {}: local files {:.1} µs per call, {:.2} µs per KiB; seccomp notification {:.1} µs",
        r.node, r.local.call_us, r.local.kib_us, r.notify_us
    );
    println!(
        "{:<6} {:>12} {:>12} {:>13} {:>12}",
        "peer", "mfs_call_us", "mfs_kib_us", "dfsa_call_us", "dfsa_kib_us"
    );
    for p in &r.peers {
        println!(
            "{:<6} {:>12} {:>12} {:>13} {:>12}",
            p.peer.map_or(0, NodeId::get),
            p.mfs_call_us,
            p.mfs_kib_us,
            p.dfsa_call_us,
            p.dfsa_kib_us
        );
    }
    match &r.written {
        Some(f) => println!("written to {f}"),
        None => println!("nothing written"),
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
    fn mfscosts_5_is_current() {
        let root = mosix_core::cli::docgen::workspace_root(env!("CARGO_MANIFEST_DIR"));
        mosix_core::cli::docgen::check(
            &root,
            std::path::Path::new("man/mfscosts.5"),
            mosix_core::mfscosts::man_page().as_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn a_new_file_keeps_the_old_peers_and_takes_the_median_as_default() {
        let row = |p: u16, c: u64| MfsCost {
            peer: NodeId::new(p),
            mfs_call_us: c,
            mfs_kib_us: 2,
            dfsa_call_us: 10,
            dfsa_kib_us: 1,
        };
        let old = MfsCosts {
            source: "old".into(),
            rows: vec![row(2, 100), row(3, 999)],
        };
        let m = merge(Some(old), &[row(3, 300), row(4, 400)], "new".into());
        assert_eq!(m.rows[0].peer, None);
        assert_eq!(m.rows[0].mfs_call_us, 300);
        assert!(m.rows.contains(&row(2, 100)));
        assert!(m.rows.contains(&row(3, 300)));
        assert!(!m.rows.contains(&row(3, 999)));
    }

    #[test]
    fn arguments() {
        let c = Cli::try_parse_from(["mtune", "3", "-c", "100", "-n"]).unwrap();
        assert_eq!(c.nodes, vec!["3"]);
        assert!(c.dry_run);
        assert!(Cli::try_parse_from(["mtune", "-c", "1"]).is_err());
    }
}
