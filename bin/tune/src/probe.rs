//! The test process tune moves around: a copy of tune itself, started with
//! [`PAYLOAD_ENV`] set to the bytes of memory it should hold.
//!
//! It registers itself as a locked MOSIX process (so the balancer never moves it while it is
//! being timed), fills its memory, opens `/dev/null`, says `ready` and then obeys one-line
//! commands on stdin: `calls N` times N `lseek`s on `/dev/null` — a call that is forwarded home
//! whenever the process runs on another node, and cheap at home — and prints the mean in
//! nanoseconds; `quit` (or the end of stdin) ends it. Its stdin and stdout are pipes to tune, and
//! stay so wherever it runs: they are part of the system context left at home.
//!
//! Started by root, it runs as `nobody` (uid and gid 65534, no groups), as a user's job does:
//! nodes take no processes of root as guests unless told to, and what is measured is the cost
//! of moving a user's process. When `nobody` cannot reach tune's own program (a build directory
//! under a 0700 home), a copy of it in a directory of its own under `/run` is run instead, and
//! removed with the test process.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use mosix_core::client::{Client, DecayMode, Registration};
use mosix_core::config::Paths;

/// The environment variable that makes tune the test process.
pub const PAYLOAD_ENV: &str = "MOSIX_TUNE_PAYLOAD";

/// Runs as the test process (tune started with [`PAYLOAD_ENV`]).
pub fn payload(bytes: &str) -> ExitCode {
    match serve(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => mosix_core::cli::report("tune (test process)", e.as_ref()),
    }
}

fn serve(bytes: &str) -> Result<()> {
    let bytes: usize = bytes
        .parse()
        .map_err(|_| anyhow!("{PAYLOAD_ENV}={bytes:?} is not a size in bytes"))?;
    let mut client = Client::connect(&Paths::from_env())?;
    client.register(Registration {
        lock: true,
        decay: DecayMode::Slow,
        placement: None,
        fallback_home: false,
        checkpoint: None,
        best: false,
    })?;
    drop(client);
    // Every page written, so every page is resident and travels with the process.
    let memory = vec![0x5au8; bytes];
    let mut null = File::open("/dev/null").context("/dev/null")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("calls"), Some(n)) => {
                let n: u32 = n.parse().map_err(|_| anyhow!("bad count {n:?}"))?;
                let t = Instant::now();
                for _ in 0..n {
                    null.seek(SeekFrom::Start(0))?;
                }
                let ns = t.elapsed().as_nanos() / u128::from(n.max(1));
                writeln!(out, "{ns}")?;
                out.flush()?;
            }
            (Some("quit"), None) => break,
            _ => bail!("unknown command {line:?}"),
        }
    }
    std::hint::black_box(&memory);
    Ok(())
}

/// The test process, seen from tune. Dropping it ends it.
pub struct Probe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// A copy of tune's program made for it, removed with it.
    copy: Option<std::path::PathBuf>,
}

/// The unprivileged identity the test process takes when tune runs as root (`nobody`).
const NOBODY: u32 = 65534;

/// The program to start the test process from, as `nobody` can run it: tune's own, or a copy
/// in a fresh directory under `/run` (returned as the second element, to be removed).
fn program_for_nobody(
    exe: std::path::PathBuf,
) -> Result<(std::path::PathBuf, Option<std::path::PathBuf>)> {
    use std::os::unix::fs::PermissionsExt;
    if mosix_core::cli::others_can_run(&exe) {
        return Ok((exe, None));
    }
    let dir = std::path::Path::new("/run").join(format!("mosix-tune.{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.join("tune");
    std::fs::copy(&exe, &copy).with_context(|| format!("copying tune to {}", copy.display()))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok((copy, Some(dir)))
}

impl Probe {
    /// Starts a test process holding `bytes` of memory and waits until it is ready.
    pub fn start(bytes: u64) -> Result<Probe> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("finding tune's own program")?;
        let root = nix::unistd::geteuid().is_root();
        let (program, copy) = if root {
            program_for_nobody(exe)?
        } else {
            (exe, None)
        };
        let mut cmd = Command::new(&program);
        cmd.env(PAYLOAD_ENV, bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .current_dir("/");
        if root {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(d) = &copy {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(e).context("starting the test process");
            }
        };
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the test process has no pipes");
        };
        let mut p = Probe {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            copy,
        };
        let line = p.line()?;
        if line != "ready" {
            bail!("the test process said {line:?} instead of ready");
        }
        Ok(p)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The mean time of `n` forwarded calls where it runs now, nanoseconds.
    pub fn calls(&mut self, n: u32) -> Result<u64> {
        writeln!(self.stdin, "calls {n}")?;
        self.stdin.flush()?;
        let line = self.line()?;
        line.parse()
            .map_err(|_| anyhow!("the test process answered {line:?}"))
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the test process ended (see its message above)");
        }
        Ok(line.trim().to_owned())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Ask it to end; if it does not within a few seconds (it may be stuck on a node that
        // died), kill it: killing the process at home ends it wherever it runs.
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut ended = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                ended = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(d) = self.copy.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
