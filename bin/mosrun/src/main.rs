//! mosrun: register the process with the node service as a MOSIX process, then become the
//! program (execve), so that the program keeps mosrun's pid, parent, descriptors and all.

mod cli;
mod inspect;
mod restore;

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::Parser;
use mosix_core::NodeId;
use mosix_core::cli::Usage;
use mosix_core::client::{Client, DecayMode, Registration};
use mosix_core::config::Paths;

use cli::Cli;

fn main() -> ExitCode {
    let args = cli::classic_args(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("mosrun", e.as_ref()),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(dir) = &cli.install_links {
        return install_links(dir);
    }
    if let Some(file) = &cli.inspect {
        return inspect::show(file, cli.json);
    }
    if let Some(file) = &cli.restore {
        if !cli.command.is_empty() {
            return mosix_core::usage!("-R resumes a checkpoint: no program is given with it");
        }
        let reopen = match &cli.reopen {
            Some(l) => restore::parse_reopen(l).map_err(|e| Usage(format!("-O {l}: {e}")))?,
            None => Vec::new(),
        };
        return restore::run(file, &reopen, cli.changed_ok);
    }
    let Some((prog, args)) = cli.command.split_first() else {
        return mosix_core::usage!("no program given (usage: mosrun [options] program [args...])");
    };
    let mut placement = match (&cli.node, &cli.jobs) {
        (Some(n), _) => {
            Some(NodeId::new(*n).ok_or_else(|| Usage("node 0 means home; use -h".into()))?)
        }
        (None, Some(list)) => {
            let nodes = cli::parse_list(list).map_err(|e| Usage(format!("-j{list}: {e}")))?;
            let i = (getrandom::u64().unwrap_or(0) % nodes.len() as u64) as usize;
            NodeId::new(nodes[i])
        }
        (None, None) => None,
    };
    // -b is the balancer's own choice, made early: not locked, it may move on later.
    let placed = placement.is_some() || cli.home;
    let lock = if cli.unlock {
        false
    } else {
        cli.lock || placed
    };
    let decay = if cli.cpu {
        DecayMode::CpuBound
    } else if cli.io {
        DecayMode::IoBound
    } else if cli.no_decay {
        DecayMode::None
    } else if cli.fast {
        DecayMode::Fast
    } else {
        DecayMode::Slow
    };
    let mut fallback_home = cli.force;
    let checkpoint = checkpoint_spec(&cli)?;
    let mut client = Client::connect(&Paths::from_env())?;
    if let Some(priority) = cli.queue {
        let line: Vec<String> = cli
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut line = line.join(" ");
        if line.len() > 200 {
            let mut cut = 200;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let (_, node) = client
            .enqueue(priority, cli.mem.unwrap_or(0), &line)
            .map_err(|e| anyhow!("queued {}: {e}", prog.to_string_lossy()))?;
        // Where the queue saw a free CPU, unless the user placed it: not locked there, and at
        // home if that node cannot take it after all.
        if !placed && node.is_some() {
            placement = node;
            fallback_home = true;
        }
    }
    client.register(Registration {
        lock,
        decay,
        placement,
        fallback_home,
        checkpoint,
        best: cli.best,
    })?;
    drop(client);
    if let Some(n) = cli.batch {
        return batch(n, prog);
    }
    exec(prog, args)
}

/// Where the program's checkpoints go (-C, -A, -N), if any was given: the file made absolute
/// (the service writes it, from another working directory).
fn checkpoint_spec(cli: &Cli) -> Result<Option<mosix_core::client::CheckpointSpec>> {
    if cli.checkpoint_file.is_none() && cli.checkpoint_every.is_none() {
        if cli.checkpoint_max.is_some() {
            return mosix_core::usage!("-N: give -C FILE or -A MINUTES too");
        }
        return Ok(None);
    }
    let every_s = match &cli.checkpoint_every {
        None => 0,
        Some(a) => cli::parse_every(a).map_err(|e| Usage(format!("-A {a}: {e}")))?,
    };
    let file = match &cli.checkpoint_file {
        Some(f) => std::path::absolute(f).map_err(|e| anyhow!("-C {}: {e}", f.display()))?,
        None => std::env::current_dir()?.join(format!("ckpt.{}", std::process::id())),
    };
    if file.file_name().is_none() {
        return mosix_core::usage!("-C {}: not a file name", file.display());
    }
    let file = file
        .to_str()
        .ok_or_else(|| anyhow!("-C {}: not UTF-8", file.display()))?
        .to_owned();
    Ok(Some(mosix_core::client::CheckpointSpec {
        file,
        every_s,
        max: cli.checkpoint_max.unwrap_or(0),
    }))
}

/// Becomes the program; returns only if it cannot (127: not found, 126: not executable).
fn exec(prog: &std::ffi::OsStr, args: &[std::ffi::OsString]) -> Result<ExitCode> {
    let err = std::process::Command::new(prog).args(args).exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    eprintln!("mosrun: {}: {err}", prog.to_string_lossy());
    Ok(ExitCode::from(code))
}

/// `-S N FILE`: this process is a MOSIX process now; it runs the file's commands (one a
/// line, `sh -c`), at most `n` at a time, as its children (MOSIX processes too), and says which
/// failed.
fn batch(n: usize, file: &std::ffi::OsStr) -> Result<ExitCode> {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};
    if n == 0 {
        bail!("-S0: at least one command at a time");
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| anyhow!("{}: {e}", file.to_string_lossy()))?;
    let lines: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let name = file.to_string_lossy().into_owned();
    let mut running: Vec<(usize, String, Child)> = Vec::new();
    let mut failed = 0usize;
    let mut next = lines.into_iter();
    let mut pending = true;
    loop {
        while pending && running.len() < n {
            match next.next() {
                Some((no, cmd)) => match Command::new("/bin/sh").arg("-c").arg(&cmd).spawn() {
                    Ok(c) => running.push((no, cmd, c)),
                    Err(e) => {
                        eprintln!("mosrun: {name}:{no}: {cmd}: cannot start: {e}");
                        failed += 1;
                    }
                },
                None => pending = false,
            }
        }
        if running.is_empty() {
            break;
        }
        // Reap those that ended (a child that ends is seen within 50 ms).
        let mut ended = false;
        let mut i = 0;
        while i < running.len() {
            match running[i].2.try_wait() {
                Ok(Some(st)) => {
                    let (no, cmd, _) = running.remove(i);
                    ended = true;
                    if !st.success() {
                        let why = match (st.code(), st.signal()) {
                            (Some(c), _) => format!("exit status {c}"),
                            (None, Some(s)) => format!("killed by signal {s}"),
                            _ => st.to_string(),
                        };
                        eprintln!("mosrun: {name}:{no}: {cmd}: {why}");
                        failed += 1;
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (no, cmd, _) = running.remove(i);
                    eprintln!("mosrun: {name}:{no}: {cmd}: cannot wait for it: {e}");
                    failed += 1;
                }
            }
        }
        if !ended {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    if failed > 0 {
        eprintln!("mosrun: {name}: {failed} command(s) failed");
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Links each wrapper name in `dir` to this program: by its bare name when `dir` is the
/// directory it is in (so a tree staged under a DESTDIR or packaged still works once moved),
/// else by its absolute path.
fn install_links(dir: &std::path::Path) -> Result<ExitCode> {
    let me = std::env::current_exe()?;
    let beside = match (
        me.parent().map(std::fs::canonicalize),
        std::fs::canonicalize(dir),
    ) {
        (Some(Ok(a)), Ok(b)) => a == b,
        _ => false,
    };
    let target = match me.file_name() {
        Some(name) if beside => std::path::PathBuf::from(name),
        _ => me.clone(),
    };
    for (name, _) in cli::WRAPPERS {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| anyhow!("{}: {e}", link.display()))?;
        println!("{} -> {}", link.display(), target.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::ffi::OsString;

    fn parse(a: &[&str]) -> Cli {
        Cli::try_parse_from(cli::classic_args(a.iter().map(OsString::from).collect())).unwrap()
    }

    #[test]
    fn classic_placement_and_the_program_s_own_options() {
        let c = parse(&["mosrun", "-3", "-L", "gzip", "-9", "-c", "x"]);
        assert_eq!(c.node, Some(3));
        assert!(c.lock);
        assert_eq!(c.command, vec!["gzip", "-9", "-c", "x"]);
        let c = parse(&["mosrun", "-j2-4,7", "-F", "sort"]);
        assert_eq!(c.jobs.as_deref(), Some("2-4,7"));
        assert!(c.force);
        let c = parse(&["/usr/bin/runon", "2", "prog", "-1"]);
        assert_eq!(c.node, Some(2));
        assert_eq!(c.command, vec!["prog", "-1"]);
        assert!(
            Cli::try_parse_from(cli::classic_args(vec!["runon".into(), "--help".into()]))
                .is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayHelp)
        );
        let c = parse(&["cpujob", "prog"]);
        assert!(c.cpu);
        let c = parse(&["mosrun", "--", "-weird-name"]);
        assert_eq!(c.command, vec!["-weird-name"]);
        assert!(
            Cli::try_parse_from(cli::classic_args(vec![
                "mosrun".into(),
                "-h".into(),
                "-2".into(),
                "x".into()
            ]))
            .is_err()
        );
    }

    /// `make install` and the Debian package install the wrappers from `etc/wrappers`: links
    /// named as [`cli::WRAPPERS`], each to `mosrun` beside it.
    #[test]
    fn the_installed_wrapper_links_are_the_wrappers() {
        let dir = mosix_core::cli::docgen::workspace_root(env!("CARGO_MANIFEST_DIR"))
            .join("etc/wrappers");
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(
                    std::fs::read_link(e.path()).unwrap(),
                    std::path::Path::new("mosrun"),
                    "{}",
                    e.path().display()
                );
                e.file_name().into_string().unwrap()
            })
            .collect();
        found.sort();
        let mut want: Vec<String> = cli::WRAPPERS.iter().map(|(w, _)| (*w).to_owned()).collect();
        want.sort();
        assert_eq!(found, want, "etc/wrappers must hold one link per wrapper");
    }

    #[test]
    fn unknown_options_are_usage_errors_not_programs() {
        let e = Cli::try_parse_from(cli::classic_args(
            ["mosrun", "-Z", "prog"].map(OsString::from).to_vec(),
        ))
        .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let c = parse(&["mosrun", "-b", "prog", "-Z"]);
        assert!(c.best && !c.lock);
        assert_eq!(c.command, vec!["prog", "-Z"]);
        assert!(
            Cli::try_parse_from(cli::classic_args(
                ["mosrun", "-b", "-3", "prog"].map(OsString::from).to_vec()
            ))
            .is_err(),
            "-b is a placement: not with another"
        );
    }

    #[test]
    fn node_lists() {
        assert_eq!(cli::parse_list("2-4,7").unwrap(), vec![2, 3, 4, 7]);
        assert!(cli::parse_list("4-2").is_err());
        assert!(cli::parse_list("x").is_err());
        assert!(cli::parse_list("0").is_err());
    }

    #[test]
    fn checkpoint_options() {
        let c = Cli::parse_from(cli::classic_args(
            ["mosrun", "-C/tmp/ck", "-A5", "-N3", "prog"]
                .map(Into::into)
                .to_vec(),
        ));
        assert_eq!(
            c.checkpoint_file.as_deref(),
            Some(std::path::Path::new("/tmp/ck"))
        );
        assert_eq!(
            cli::parse_every(c.checkpoint_every.as_deref().unwrap()),
            Ok(300)
        );
        assert_eq!(c.checkpoint_max, Some(3));
        assert_eq!(cli::parse_every("90s"), Ok(90));
        assert!(cli::parse_every("5s").is_err());
        assert!(cli::parse_every("x").is_err());
        let r = Cli::parse_from(cli::classic_args(
            ["mosrun", "-R/tmp/ck.2", "-O", "1=o,3=l"]
                .map(Into::into)
                .to_vec(),
        ));
        assert_eq!(
            r.restore.as_deref(),
            Some(std::path::Path::new("/tmp/ck.2"))
        );
        assert_eq!(r.reopen.as_deref(), Some("1=o,3=l"));
        assert!(Cli::try_parse_from(["mosrun", "-O", "1=o", "prog"]).is_err());
    }

    #[test]
    fn queue_and_batch_options() {
        let c = parse(&["mosrun", "-q", "prog", "-q3"]);
        assert_eq!(c.queue, Some(50));
        assert_eq!(c.command, vec!["prog", "-q3"]);
        let c = parse(&["mosrun", "-q7", "-m", "100", "prog"]);
        assert_eq!((c.queue, c.mem), (Some(7), Some(100)));
        let c = parse(&["mosrun", "-S4", "jobs.txt"]);
        assert_eq!(c.batch, Some(4));
        assert_eq!(c.command, vec!["jobs.txt"]);
        assert!(
            Cli::try_parse_from(cli::classic_args(
                ["mosrun", "-m", "5", "prog"]
                    .iter()
                    .map(OsString::from)
                    .collect()
            ))
            .is_err(),
            "-m needs -q"
        );
    }

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }
}
