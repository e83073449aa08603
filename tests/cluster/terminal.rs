//! A migrated program in the foreground of an interactive shell, on a pseudo-terminal: it
//! reads the terminal, sees it as a terminal, gets window-size changes, and Ctrl-Z / `fg` /
//! Ctrl-C work as if it ran at home.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mosix_tests::{TestCluster, require_root, serial, state_of, user_dir, user_tool};

/// The interactive program: echoes lines in upper case, reports window sizes.
const PROGRAM: &str = r#"
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
def winch(s, f):
    c = os.get_terminal_size(0)
    print(f"WINCH {c.columns}x{c.lines}", flush=True)
signal.signal(signal.SIGWINCH, winch)
print("READY", os.getpid(), os.isatty(0), os.isatty(1), flush=True)
for line in sys.stdin:
    print("GOT", line.strip().upper(), flush=True)
"#;

/// The master side of a pseudo-terminal, read by a thread into a buffer.
struct Pty {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    /// How much of `seen` earlier expectations consumed.
    pos: usize,
}

impl Pty {
    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Waits until `what` appears after what earlier calls consumed; consumes up to it.
    fn expect(&mut self, what: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            {
                let seen = self.seen.lock().unwrap();
                let text = String::from_utf8_lossy(&seen[self.pos..]).into_owned();
                if let Some(i) = text.find(what) {
                    // Byte offsets of the lossy text match the buffer's for ASCII output.
                    self.pos += i + what.len();
                    return text[..i + what.len()].to_owned();
                }
                if start.elapsed() > limit {
                    panic!(
                        "waited {limit:?} for {what:?} on the terminal; it showed:\n{}",
                        String::from_utf8_lossy(&seen)
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn set_size(&self, cols: u16, rows: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize struct, a valid local.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }
}

#[test]
fn a_migrated_program_in_an_interactive_shell_behaves_as_if_local() {
    if !require_root("terminal_job_control") {
        return;
    }
    let _g = serial();
    let c = TestCluster::up("tterm", 2, |_| {});
    c.wait_all_up();
    let dir = user_dir();
    let prog = dir.path().join("interactive.py");
    std::fs::write(&prog, PROGRAM).unwrap();

    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    // The user's shell: the jobs it starts are nobody's.
    let mut cmd = c.user_command(1, "/bin/bash", &["--norc", "--noprofile", "-i"]);
    cmd.env("PS1", "PROMPT> ")
        .env("TERM", "dumb")
        .env(
            "PATH",
            format!(
                "{}:/usr/bin:/bin",
                user_tool("mosrun").parent().unwrap().display()
            ),
        )
        .stdin(Stdio::from(slave.as_fd().try_clone_to_owned().unwrap()))
        .stdout(Stdio::from(slave.as_fd().try_clone_to_owned().unwrap()))
        .stderr(Stdio::from(slave.as_fd().try_clone_to_owned().unwrap()));
    // SAFETY: runs between fork and exec, after the node's own set-up; setsid(2) and ioctl(2)
    // on descriptor 0 are async-signal-safe and touch no shared memory.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut shell = cmd.spawn().unwrap();
    drop(slave);
    let master = std::fs::File::from(pty.master);
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let mut r = master.try_clone().unwrap();
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let mut t = Pty {
        master,
        seen,
        pos: 0,
    };
    let wait = Duration::from_secs(20);
    t.expect("PROMPT> ", wait);
    t.send(&format!("mosrun /usr/bin/python3 {}\n", prog.display()));
    let ready = t.expect(" True True", wait);
    let pid: u32 = ready
        .rsplit("READY ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {ready:?}"));
    // It waits for the terminal at home; move it.
    let said = c.migrate(pid, "2");
    assert!(said.contains("is on node 2"), "{said}");

    // Input from the terminal; isatty already answered True above.
    t.send("hello\n");
    t.expect("GOT HELLO", wait);
    // A window-size change arrives, and the size it reads is the terminal's at home.
    t.set_size(111, 33);
    t.expect("WINCH 111x33", wait);

    // Ctrl-Z: the shell sees the job stop.
    t.send("\x1a");
    t.expect("Stopped", wait);
    // Stopped at home ('t' rather than 'T': the deputy is traced while it stands in).
    let st = state_of(pid);
    assert!(
        st == 'T' || st == 't',
        "the process at home shows stopped: {st}"
    );
    let row = c
        .mps(1, false)
        .into_iter()
        .find(|r| r["pid"] == pid)
        .expect("mps lists it");
    assert_eq!(row["node"], 2, "still on node 2 while stopped: {row}");
    t.expect("PROMPT> ", wait);
    // fg: it goes on where it was.
    t.send("fg\n");
    // The shell names the job it continues; input typed before it gave the terminal back
    // would be the shell's (it may flush it), as with any program.
    t.expect("interactive.py", wait);
    std::thread::sleep(Duration::from_millis(300));
    t.send("again\n");
    t.expect("GOT AGAIN", wait);
    let row = c
        .mps(1, false)
        .into_iter()
        .find(|r| r["pid"] == pid)
        .expect("mps lists it");
    assert_eq!(row["node"], 2, "still on node 2 after fg: {row}");

    // In the background it may not read the terminal: it stops (SIGTTIN), as locally, and
    // does not take the shell's input.
    t.send("\x1a");
    t.expect("Stopped", wait);
    t.expect("PROMPT> ", wait);
    t.send("bg\n");
    t.expect("PROMPT> ", wait);
    let deadline = Instant::now() + wait;
    loop {
        t.send("jobs\n");
        let said = t.expect("PROMPT> ", wait);
        if said.contains("Stopped") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never stopped for tty input: {}\n{}\n{}",
            String::from_utf8_lossy(&t.seen.lock().unwrap()),
            c.log(1),
            c.log(2)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    t.send("fg\n");
    t.expect("interactive.py", wait);
    std::thread::sleep(Duration::from_millis(300));
    t.send("third\n");
    t.expect("GOT THIRD", wait);

    // Ctrl-C: it dies of SIGINT, as the shell reports.
    t.send("\x03");
    t.expect("PROMPT> ", wait);
    t.send("echo status=$?\n");
    t.expect("status=130", wait);
    t.send("exit\n");
    let deadline = Instant::now() + wait;
    loop {
        if shell.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = shell.kill();
            let _ = shell.wait();
            panic!("the shell did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.guests_on(2), 0, "no guest left on node 2");
}
