//! The command line of mosrun, and the classic spellings it accepts.

use std::ffi::OsString;

use clap::Parser;

/// Run a program under the MOSIX discipline.
///
/// The program — and every process it starts — becomes a MOSIX process: the cluster may move it
/// to other nodes while it runs, and it keeps its pid, its files, its terminal, its parent and its
/// exit status at home. mosrun replaces itself with the program, so the program's standard
/// input and output, environment, working directory, signals and exit status are exactly as if
/// it had been run directly.
///
/// Placement: -h starts it at home, -NODE (e.g. -3) on that node, -jLIST on a node chosen at
/// random from a list such as -j2-4,7,9-12 (no space), -b on the best node now; it starts at
/// home and moves there at once, from its first instruction. Placement fails if the node is
/// down or blocked, unless -F (-b never fails: at home if no node is better).
///
/// Installed under other names, mosrun is a shorthand: runon NODE (= -NODE), runhome (= -h),
/// nomig (= -L), cpujob (= -c), iojob (= -i), nodecay (= -n), slowdecay (= -s), fastdecay (= -f).
/// `mosrun --install-links DIR` makes those links.
#[derive(Debug, Parser)]
#[command(
    name = "mosrun",
    version,
    disable_help_flag = true,
    after_long_help = "Examples:\n  mosrun ./simulate input.dat        may migrate whenever the cluster decides\n  mosrun -q10 -m 2000 ./big          wait for a free CPU and 2000 MiB, priority 10\n  mosrun -S4 jobs.txt                run the commands of jobs.txt, four at a time\n  mosrun -2 gzip -9 big.tar           start it on node 2\n  mosrun -j2-4 -F sort huge.txt       on node 2, 3 or 4; at home if none can take it\n  mosrun -b ./render scene           start on the least loaded node\n  mosrun -L ./interactive             never migrated automatically\n\nExit status: the program's own; 1 when mosrun itself fails (no MOSIX service, placement refused), 126 when the program cannot be run, 127 when it is not found."
)]
pub struct Cli {
    /// Start the program at home.
    #[arg(short = 'h', group = "place")]
    pub home: bool,

    /// Start the program on this node (classic: -NODE).
    #[arg(long = "node", value_name = "NODE", group = "place")]
    pub node: Option<u16>,

    /// Start the program on a random node of this list (classic: -jLIST), e.g. 2-4,7.
    #[arg(short = 'j', long = "jobs", value_name = "LIST", group = "place")]
    pub jobs: Option<String>,

    /// Start the program on the node where it would run best now, as the balancer sees the
    /// cluster (at home if that is here, or if that node cannot take it after all). It may
    /// move on later, unless -L.
    #[arg(short = 'b', group = "place")]
    pub best: bool,

    /// If the chosen node cannot take the program, run it anyway (at home).
    #[arg(short = 'F')]
    pub force: bool,

    /// Allow automatic migration (the default unless a placement is given).
    #[arg(short = 'l', group = "locking")]
    pub unlock: bool,

    /// No automatic migration (the default when a placement is given).
    #[arg(short = 'L', group = "locking")]
    pub lock: bool,

    /// The program is CPU-bound: the balancer places it by its CPU alone, never toward the
    /// files it uses.
    #[arg(short = 'c', group = "kind")]
    pub cpu: bool,

    /// The program is I/O-bound: never moved for load; where it runs, its reads and writes of
    /// that node's files (and of home files it opens there) run without a trap, as do those of
    /// any process that leaves home with a file of its destination open (docs/mfs.md).
    #[arg(short = 'i', group = "kind")]
    pub io: bool,

    /// Its statistics do not decay.
    #[arg(short = 'n', group = "decay")]
    pub no_decay: bool,

    /// Its statistics decay slowly (the default).
    #[arg(short = 's', group = "decay")]
    pub slow: bool,

    /// Its statistics decay fast.
    #[arg(short = 'f', group = "decay")]
    pub fast: bool,

    /// Queue the program until the cluster has room for it — a free CPU, and the memory given
    /// with -m — in priority order (lower first; default 50) then submission order,
    /// cluster-wide (classic: -q or -qPRI). The process exists meanwhile (its pid, its parent
    /// waiting); `mosq` shows and changes the queue. When its turn comes it starts on the node
    /// the queue saw a CPU free on (not locked there; at home if that node cannot take it),
    /// unless a placement (-h, -NODE, -jLIST) says where.
    #[arg(
        long = "queue",
        value_name = "PRI",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "50"
    )]
    pub queue: Option<u16>,

    /// With -q: the memory the program needs, in MiB; it starts when a node has that much free.
    #[arg(short = 'm', value_name = "MB", requires = "queue")]
    pub mem: Option<u64>,

    /// Run the commands of a file (one shell command a line; '#' comments), at most N at a
    /// time, as MOSIX processes; report each that fails, with its line; exit 1 if any failed.
    #[arg(short = 'S', value_name = "N", conflicts_with_all = ["queue", "place"])]
    pub batch: Option<usize>,

    /// Where the program's checkpoints go: the Nth is FILE.N (`migrate PID checkpoint`, -A).
    /// Without it, checkpoints go to ckpt.PID.N in the process's working directory. The
    /// program itself asks for one by sending the line `checkpoint` to
    /// $MOSIX_RUNDIR/checkpoint.sock (the answer: `ok FILE`; resumed, that read fails).
    #[arg(short = 'C', value_name = "FILE")]
    pub checkpoint_file: Option<std::path::PathBuf>,

    /// Take a checkpoint every MINUTES minutes while the program runs (or, with an `s`,
    /// seconds: -A 90s; at least 10 s).
    #[arg(short = 'A', value_name = "MINUTES")]
    pub checkpoint_every: Option<String>,

    /// Keep only the newest MAX checkpoint files (older ones are removed).
    #[arg(short = 'N', value_name = "MAX")]
    pub checkpoint_max: Option<u32>,

    /// Show what a checkpoint file holds and what could not be restored from it, and exit
    /// (with --json: as JSON).
    #[arg(short = 'I', value_name = "FILE", conflicts_with_all = ["place", "queue", "batch"])]
    pub inspect: Option<std::path::PathBuf>,

    /// Resume a checkpoint in this process (see `migrate PID checkpoint`): its descriptors
    /// reopened at their paths, flags and offsets, its working directory and umask, then its
    /// memory, registers and signal state; it keeps this process's pid and parent. Terminals,
    /// and standard descriptors that were pipes or sockets, are mosrun's own; other pipes and
    /// sockets are closed unless -O gives them a file. A file it reads that changed since the
    /// checkpoint is refused unless --changed-ok (one it writes is written again from its
    /// offset). Only the checkpoint's user (or root, who becomes that user)
    /// resumes it, on a node of the same kernel build.
    #[arg(short = 'R', value_name = "FILE", conflicts_with_all = ["place", "queue", "batch", "inspect"])]
    pub restore: Option<std::path::PathBuf>,

    /// With -R: open these files at these descriptors instead (e.g. -O 1=out.txt,3=log),
    /// with the access mode the descriptor had.
    #[arg(short = 'O', value_name = "FD=FILE,...", requires = "restore")]
    pub reopen: Option<String>,

    /// With -R: resume even if files it had open changed since the checkpoint.
    #[arg(long, requires = "restore")]
    pub changed_ok: bool,

    /// With -I: print JSON.
    #[arg(long, requires = "inspect")]
    pub json: bool,

    /// Make the classic wrapper names (runon, runhome, nomig, cpujob, iojob, nodecay, slowdecay,
    /// fastdecay) as links to mosrun in this directory, and exit.
    #[arg(long, value_name = "DIR", exclusive = true)]
    pub install_links: Option<std::path::PathBuf>,

    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,

    /// The program and its arguments.
    #[arg(trailing_var_arg = true, value_name = "PROGRAM [ARGS]")]
    pub command: Vec<OsString>,
}

/// The wrapper names and the option each stands for.
pub const WRAPPERS: &[(&str, &str)] = &[
    ("runon", ""),
    ("runhome", "-h"),
    ("nomig", "-L"),
    ("cpujob", "-c"),
    ("iojob", "-i"),
    ("nodecay", "-n"),
    ("slowdecay", "-s"),
    ("fastdecay", "-f"),
];

/// The options whose value may be attached (the parser would take `-A5` for the program).
const ATTACHED: &[&str] = &["-C", "-A", "-N", "-R", "-I", "-O", "-m"];

/// Turns the classic command line (and the wrapper names) into what the parser reads:
/// `-3` becomes `--node 3`, `-j2-4` stays `-j2-4`; `runon 3 prog` is `mosrun -3 prog`. Option
/// rewriting stops at the program name.
pub fn classic_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut it = args.into_iter();
    let argv0 = it.next().unwrap_or_else(|| "mosrun".into());
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rest: Vec<OsString> = it.collect();
    let mut out: Vec<OsString> = vec!["mosrun".into()];
    if let Some((_, flag)) = WRAPPERS.iter().find(|(w, _)| *w == name) {
        if name == "runon" {
            // `runon NODE prog`; an option first (`runon --help`) is mosrun's own.
            if rest
                .first()
                .is_some_and(|a| !a.to_string_lossy().starts_with('-'))
            {
                out.push("--node".into());
                out.push(rest.remove(0));
            }
        } else {
            out.push((*flag).into());
        }
    }
    let mut options = true;
    for a in rest {
        if options {
            let s = a.to_string_lossy().into_owned();
            if s == "--" || !s.starts_with('-') {
                options = false;
            } else if s.len() > 1 && s[1..].chars().all(|c| c.is_ascii_digit()) {
                out.push("--node".into());
                out.push(s[1..].into());
                continue;
            } else if let Some(n) = s
                .strip_prefix("-S")
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            {
                out.push("-S".into());
                out.push(n.into());
                continue;
            } else if s == "-q" {
                out.push("--queue".into());
                continue;
            } else if let Some(p) = s
                .strip_prefix("-q")
                .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            {
                out.push(format!("--queue={p}").into());
                continue;
            } else if let Some(list) = s.strip_prefix("-j").filter(|l| !l.is_empty()) {
                out.push("--jobs".into());
                out.push(list.into());
                continue;
            } else if let Some((opt, value)) = ATTACHED
                .iter()
                .find_map(|o| Some((*o, s.strip_prefix(o).filter(|v| !v.is_empty())?)))
            {
                // The classic spellings with the value attached: -Cfile, -A5, -N3, -Rfile.
                out.push(opt.into());
                out.push(value.into());
                continue;
            }
        }
        out.push(a);
    }
    out
}

/// Parses -A: minutes, or seconds with an `s` (at least 10 s); in seconds.
pub fn parse_every(s: &str) -> Result<u32, String> {
    let (n, unit) = match s.strip_suffix('s') {
        Some(n) => (n, 1),
        None => (s.strip_suffix('m').unwrap_or(s), 60),
    };
    let n: u32 = n
        .parse()
        .map_err(|_| "not a number of minutes (or of seconds, with s)".to_owned())?;
    let secs = n.saturating_mul(unit);
    if secs < 10 {
        return Err("checkpoints at least 10 s apart".into());
    }
    Ok(secs)
}

/// Parses a -j list such as `2-4,7,9-12` into node numbers.
pub fn parse_list(s: &str) -> Result<Vec<u16>, String> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u16 = a
            .parse()
            .map_err(|_| format!("'{part}' is not a node or a range"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| format!("'{part}' is not a node or a range"))?;
        if a == 0 || b < a {
            return Err(format!("'{part}' is not a range of node numbers"));
        }
        v.extend(a..=b);
    }
    if v.is_empty() {
        return Err("the node list is empty".into());
    }
    Ok(v)
}
