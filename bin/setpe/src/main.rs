//! setpe: configure, check, show and stop a MOSIX node.
//!
//! `-w` starts the node service in the background (a fresh `setpe --foreground` reading the map
//! from its standard input) and waits until it answers; `-W` hands a running service a new map;
//! `-c` checks a map; `-r` prints the running one; `-off` stops the service.

mod cli;
#[cfg(test)]
mod mapdoc;
#[cfg(test)]
mod partnersdoc;
#[cfg(test)]
mod tomldoc;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use mosix_core::client::{Client, ClientError, Moved};
use mosix_core::config::Paths;
use mosix_core::map;
use mosix_kmod::service::{self, daemon};

use cli::Cli;

fn main() -> ExitCode {
    // The service starts the stubs that guests are rebuilt in from its own program.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == mosix_kmod::kernel::stub::STUB_ARG)
    {
        mosix_kmod::kernel::stub::run();
    }
    let cli = Cli::parse_from(cli::classic_args(std::env::args_os()));
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => mosix_core::cli::report("setpe", e.as_ref()),
    }
}

fn run(cli: &Cli) -> Result<()> {
    let paths = Paths::from_env();
    if cli.off {
        return off(&paths);
    }
    if cli.new_secret {
        let path = paths.secret();
        mosix_core::config::Secret::create(&path).map_err(|e| anyhow!("{e}"))?;
        println!(
            "{}: a new cluster secret (mode 0600); copy it to every node, e.g. scp -p {0} NODE:{0}",
            path.display()
        );
        return Ok(());
    }
    if cli.read {
        return read(cli, &paths);
    }
    let (name, text) = map_source(cli, &paths)?;
    let checked =
        map::parse_and_resolve(&name, &text, &map::system_resolver).map_err(|e| anyhow!("{e}"))?;
    if cli.check {
        check(cli, &name, &checked)?;
        return check_partners(cli, &paths, &checked);
    }
    drop(checked);
    if cli.replace
        && let Some(running) = service::running(&paths)
    {
        Client::connect(&paths)?.reconfigure(&name, &text, cli.node)?;
        let now = Client::connect(&paths)?.ping()?;
        println!(
            "configuration replaced: this is MOSIX node #{} (service pid {}, map {name})",
            now.node, running.pid
        );
        return Ok(());
    }
    if let Some(running) = service::running(&paths) {
        bail!(
            "this node is already configured (node {}, service pid {}); use setpe -W to replace the configuration",
            running.node,
            running.pid
        );
    }
    let opts = service::StartOptions {
        paths: paths.clone(),
        map_name: cli.map_name.clone().unwrap_or_else(|| name.clone()),
        map_text: text,
        forced: cli.node,
    };
    if cli.foreground {
        // Which node this is, for the journal's MOSIX_NODE (a wrong start says why below).
        init_logging(service::check_start(&opts).ok());
        service::run(opts, |ready| {
            // Under systemd (Type=notify) the unit is started once the node answers; elsewhere
            // NOTIFY_SOCKET is unset and this does nothing.
            let status = format!(
                "MOSIX node #{} at {}:{}",
                ready.node, ready.addr, ready.port
            );
            if let Err(e) = sd_notify::notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ]) {
                tracing::warn!("telling systemd the node is ready: {e}");
            }
        })?;
        return Ok(());
    }
    // Report a wrong secret, mosix.toml or identity here, before going to the background.
    service::check_start(&opts)?;
    let text = opts.map_text;
    let mut args: Vec<std::ffi::OsString> = vec![
        "--foreground".into(),
        "-w".into(),
        "-f".into(),
        "-".into(),
        "--map-name".into(),
        name.clone().into(),
    ];
    if let Some(n) = cli.node {
        args.push("-p".into());
        args.push(n.to_string().into());
    }
    let spec = daemon::Spec {
        exe: std::env::current_exe().context("locating setpe itself")?,
        args,
        stdin: text.into_bytes(),
        paths: paths.clone(),
        timeout: Duration::from_secs(30),
    };
    let info = daemon::start(&spec)?;
    println!(
        "MOSIX node #{} started (service pid {}, log {})",
        info.node,
        info.pid,
        paths.log().display()
    );
    Ok(())
}

fn map_source(cli: &Cli, paths: &Paths) -> Result<(String, String)> {
    let path = cli.file.clone().unwrap_or_else(|| paths.map());
    let name = path.display().to_string();
    let text = map::read_map_text(&name).map_err(|e| anyhow!("{e}"))?;
    let shown = if name == "-" {
        "<stdin>".to_owned()
    } else {
        name
    };
    Ok((shown, text))
}

fn check(cli: &Cli, name: &str, m: &map::ClusterMap) -> Result<()> {
    let nodes = m.node_count();
    let entries = m.ranges().len() + m.aliases().len();
    match m.identify(&service::local_ipv4(), cli.node) {
        Ok(me) => println!(
            "{name}: ok: {nodes} node{} in {entries} entr{}; this machine is node #{me}",
            if nodes == 1 { "" } else { "s" },
            if entries == 1 { "y" } else { "ies" }
        ),
        Err(e) if cli.node.is_some() => bail!("{name}: {e}"),
        Err(e) => {
            println!(
                "{name}: ok: {nodes} node{} in {entries} entr{}",
                if nodes == 1 { "" } else { "s" },
                if entries == 1 { "y" } else { "ies" }
            );
            eprintln!("setpe: note: {e}");
        }
    }
    Ok(())
}

/// `-c`: the partners file (partners(5)), if there is one or one was named: every partner's
/// map and secret, and no node number or address in two clusters.
fn check_partners(cli: &Cli, paths: &Paths, own: &map::ClusterMap) -> Result<()> {
    let path = cli.partners.clone().unwrap_or_else(|| paths.partners());
    if cli.partners.is_none() && !path.exists() {
        return Ok(());
    }
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    let grid = mosix_core::grid::load(
        &path,
        own,
        nix::unistd::geteuid().as_raw(),
        &map::system_resolver,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let names: Vec<String> = grid
        .partners
        .iter()
        .map(|p| {
            let nodes = p.map.nodes();
            format!(
                "{} ({} node{}, priority {})",
                p.name,
                nodes.len(),
                if nodes.len() == 1 { "" } else { "s" },
                p.priority
            )
        })
        .collect();
    println!(
        "{}: ok: {} partner{}{}{}",
        path.display(),
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        if names.is_empty() { "" } else { ": " },
        names.join(", ")
    );
    Ok(())
}

fn read(cli: &Cli, paths: &Paths) -> Result<()> {
    let cfg = Client::connect(paths)?.config()?;
    let text = format!(
        "# running configuration of MOSIX node #{} (map {}, port {})\n{}",
        cfg.node, cfg.map_name, cfg.port, cfg.map_text
    );
    match cli.file.as_deref() {
        None => {
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Some(p) if p.as_os_str() == "-" => {
            std::io::stdout().write_all(text.as_bytes())?;
        }
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
    }
    Ok(())
}

fn off(paths: &Paths) -> Result<()> {
    let Some(info) = service::running(paths) else {
        eprintln!("setpe: MOSIX is not running on this node; nothing to stop");
        return Ok(());
    };
    // Nothing is lost with the node: its own processes come home, its guests go home.
    for (expel, what) in [
        (false, "bringing this node's processes home"),
        (true, "sending guests home"),
    ] {
        let mut c = Client::connect(paths)?;
        c.set_timeout(Some(Duration::from_secs(90)));
        let watched = paths.clone();
        let status = move || {
            let rows = Client::connect(&watched).ok()?.procs(expel).ok()?;
            let n = rows
                .iter()
                .filter(|r| if expel { r.from.is_some() } else { r.node != 0 })
                .count();
            Some(format!("{n} left"))
        };
        let moved =
            mosix_core::cli::with_progress(
                what,
                status,
                || if expel { c.expel() } else { c.bring() },
            );
        match moved {
            Ok(Moved { asked, left: 0 }) if asked > 0 => {
                eprintln!("setpe: {what}: {asked} moved");
            }
            Ok(Moved { left, .. }) if left > 0 => {
                eprintln!("setpe: {what}: {left} did not move and end with the node");
            }
            Ok(_) => {}
            Err(e) => eprintln!("setpe: {what}: {e}"),
        }
    }
    match Client::connect(paths)?.shutdown() {
        Ok(()) => {}
        // The service may close the socket before its answer arrives.
        Err(ClientError::Frame(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let proc_dir = format!("/proc/{}", info.pid);
    while Instant::now() < deadline {
        let gone = service::running(paths).is_none() && !std::path::Path::new(&proc_dir).exists();
        if gone || service::running(paths).is_none() && zombie(info.pid) {
            println!("MOSIX node #{} stopped", info.node);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the service (pid {}) did not stop within 15 s", info.pid)
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The service's log: to the journal when systemd started it with its output there
/// (`JOURNAL_STREAM` names our standard error), as `SYSLOG_IDENTIFIER=mosix` with the node as
/// `MOSIX_NODE` and each event's fields as `MOSIX_PID`, `MOSIX_PEER`, `MOSIX_REASON`, …
/// (`journalctl -t mosix MOSIX_PID=1234`); otherwise lines on standard error (a service
/// started with `setpe -w` has it in `RUNDIR/mosix.log`, rotated at `[log] max_kib`).
/// `MOSIX_LOG` filters either.
fn init_logging(node: Option<mosix_core::NodeId>) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("MOSIX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal()
        && let Ok(journal) = tracing_journald::layer()
    {
        let journal = journal
            .with_syslog_identifier("mosix".into())
            .with_field_prefix(Some("MOSIX".into()))
            .with_custom_fields(node.map(|n| ("MOSIX_NODE", n.get().to_string())));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journal)
            .try_init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Whether standard error is the journal's stream (`JOURNAL_STREAM` is `DEVICE:INODE` of it).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn classic_off_is_accepted() {
        let cli = Cli::try_parse_from(cli::classic_args(["setpe".into(), "-off".into()])).unwrap();
        assert!(cli.off);
        assert!(Cli::try_parse_from(["setpe", "-w", "-c"]).is_err());
        assert!(Cli::try_parse_from(["setpe"]).is_err());
    }

    #[test]
    fn mosix_map_5_is_current() {
        let root = mosix_core::cli::docgen::workspace_root(env!("CARGO_MANIFEST_DIR"));
        mosix_core::cli::docgen::check(
            &root,
            std::path::Path::new("man/mosix.map.5"),
            mapdoc::page().as_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn partners_5_is_current() {
        let root = mosix_core::cli::docgen::workspace_root(env!("CARGO_MANIFEST_DIR"));
        mosix_core::cli::docgen::check(
            &root,
            std::path::Path::new("man/partners.5"),
            partnersdoc::page().as_bytes(),
        )
        .unwrap();
    }

    /// mosix.toml(5) is rendered from the example file, and the example names every key the
    /// service reads (set to its default, or commented out when it has none).
    #[test]
    fn mosix_toml_5_is_current_and_names_every_key() {
        let root = mosix_core::cli::docgen::workspace_root(env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read_to_string(root.join("etc/mosix/mosix.toml")).unwrap();
        mosix_core::cli::docgen::check(
            &root,
            std::path::Path::new("man/mosix.toml.5"),
            tomldoc::page(&example).as_bytes(),
        )
        .unwrap();
        let defaults = toml::Value::try_from(mosix_core::config::Tunables::default()).unwrap();
        for (section, keys) in defaults.as_table().unwrap() {
            let at = example
                .find(&format!("[{section}]\n"))
                .unwrap_or_else(|| panic!("etc/mosix/mosix.toml has no [{section}]"));
            let body = &example[at..];
            let body = &body[..body[1..].find("\n[").map_or(body.len(), |e| e + 1)];
            for key in keys.as_table().unwrap().keys() {
                assert!(
                    body.contains(&format!("\n{key} = "))
                        || body.contains(&format!("\n# {key} = ")),
                    "etc/mosix/mosix.toml does not document [{section}] {key}"
                );
            }
        }
    }

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }
}
