//! The agent: calls made inside a real process, with its rights (needs root: the processes run
//! as `nobody`, and we trace them).
#![allow(clippy::unwrap_used)]

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mosix_kmod::kernel::agent::Agent;
use mosix_kmod::kernel::inject::{self, Held, Release, read_maps};
use mosix_kmod::kernel::ptrace::{self, Mem, Running, Sig, Stop};
use nix::sys::ptrace::Options;

const NOBODY: u32 = 65534;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the agent tests need root, and CI runs as root"
    );
    eprintln!("SKIP: the agent tests need root");
    false
}

/// A `sleep` of `nobody`, stopped, with an injection area and an agent whose stops this thread
/// sees.
struct Subject {
    child: std::process::Child,
    t: Held,
    agent: Arc<Agent>,
    traced: Option<Running>,
}

impl Subject {
    fn new() -> Subject {
        let child = Command::new("sleep")
            .arg("30")
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let t = ptrace::seize(pid, Options::empty()).unwrap();
        let t = t.interrupt(|_, _| {}).unwrap();
        let regs = t.regs().unwrap();
        let mem = Mem::open(pid).unwrap();
        let maps = read_maps(pid).unwrap();
        let mut t = Held::new(t, Release::Keep);
        inject::block_signals(t.get().unwrap()).unwrap();
        let area = inject::bootstrap(&mut t, &mem, &maps, &regs, &[]).unwrap();
        let agent = Arc::new(Agent::spawn(&mut t, &area, &regs, &mem).unwrap());
        let traced = Some(Agent::unblock(agent.trace().unwrap()).unwrap());
        Subject {
            child,
            t,
            agent,
            traced,
        }
    }

    /// Makes a call in the agent from another thread while this one serves the agent's stops
    /// as a tracer does: the signals it saw are returned with the result.
    fn call(&mut self, nr: i64, args: [u64; 6]) -> (i64, Vec<Sig>) {
        let agent = Arc::clone(&self.agent);
        let caller = std::thread::spawn(move || agent.call(nr as u64, args));
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !caller.is_finished() {
            assert!(Instant::now() < deadline, "the agent does not answer");
            let r = self.traced.take().unwrap();
            match r.try_wait() {
                Err(r) => {
                    self.traced = Some(r);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(Ok(s)) => {
                    if let Stop::Signal(sig) = s.stop {
                        seen.push(sig);
                        inject::dont_restart(&s).unwrap();
                    }
                    self.traced = Some(s.cont(None).unwrap());
                }
                Ok(Err(e)) => panic!("the agent died: {e}"),
            }
        }
        (caller.join().unwrap().expect("the agent is alive"), seen)
    }

    fn put_str(&self, s: &str) -> u64 {
        let (at, _) = self.agent.data();
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        assert!(self.agent.put(at, &b));
        at
    }

    fn end(mut self) {
        self.agent.ask_exit();
        let r = self.traced.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut r = r;
        loop {
            match r.try_wait() {
                Err(back) => {
                    assert!(Instant::now() < deadline, "the agent does not end");
                    r = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(Ok(s)) => r = s.cont(None).unwrap(),
                Ok(Err(_)) => break,
            }
        }
        drop(self.t);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn calls_made_by_the_agent_have_the_process_rights_and_descriptors() {
    if !root() {
        return;
    }
    let mut s = Subject::new();
    let pid = s.child.id() as i32;
    // Its identity, not ours.
    assert_eq!(s.call(libc::SYS_getuid, [0; 6]).0, i64::from(NOBODY));
    assert_eq!(s.call(libc::SYS_getpid, [0; 6]).0, i64::from(pid));
    // What nobody may not do, it may not do: read root's files, raise its priority, bind a
    // privileged port.
    let shadow = s.put_str("/etc/shadow");
    let (r, _) = s.call(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            shadow,
            libc::O_RDONLY as u64,
            0,
            0,
            0,
        ],
    );
    assert_eq!(r, -i64::from(libc::EACCES));
    let (r, _) = s.call(
        libc::SYS_setpriority,
        [libc::PRIO_PROCESS as u64, 0, (-5i64) as u64, 0, 0, 0],
    );
    assert_eq!(r, -i64::from(libc::EACCES));
    // What it opens is in its own descriptor table.
    let null = s.put_str("/dev/null");
    let (fd, _) = s.call(
        libc::SYS_openat,
        [libc::AT_FDCWD as u64, null, libc::O_WRONLY as u64, 0, 0, 0],
    );
    assert!(fd >= 0, "{fd}");
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    assert_eq!(link, std::path::Path::new("/dev/null"));
    // Its credentials are the deputy's.
    assert!(s.agent.creds_match());
    s.end();
}

#[test]
fn a_signal_raised_by_an_agent_call_is_seen_by_its_tracer() {
    if !root() {
        return;
    }
    let mut s = Subject::new();
    // A pipe whose reading end is closed: the write fails with EPIPE and raises SIGPIPE at the
    // thread that wrote, as it would natively.
    let (at, _) = s.agent.data();
    let (r, _) = s.call(libc::SYS_pipe2, [at, 0, 0, 0, 0, 0]);
    assert_eq!(r, 0);
    let fds = s.agent.get(at, 8).unwrap();
    let rd = i32::from_le_bytes(fds[0..4].try_into().unwrap());
    let wr = i32::from_le_bytes(fds[4..8].try_into().unwrap());
    assert_eq!(s.call(libc::SYS_close, [rd as u64, 0, 0, 0, 0, 0]).0, 0);
    let (r, seen) = s.call(libc::SYS_write, [wr as u64, at, 4, 0, 0, 0]);
    assert_eq!(r, -i64::from(libc::EPIPE));
    assert_eq!(seen, vec![Sig::new(libc::SIGPIPE).unwrap()]);
    // RLIMIT_FSIZE is the process's (it lowers its own; raising another's would need
    // CAP_SYS_RESOURCE): a write past it fails and raises SIGXFSZ.
    let lim: Vec<u8> = [10u64, 10u64]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert!(s.agent.put(at + 64, &lim));
    let (r, _) = s.call(
        libc::SYS_prlimit64,
        [0, libc::RLIMIT_FSIZE as u64, at + 64, 0, 0, 0],
    );
    assert_eq!(r, 0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let file = s.put_str(&dir.path().join("f").display().to_string());
    let (fd, _) = s.call(
        libc::SYS_openat,
        [
            libc::AT_FDCWD as u64,
            file,
            (libc::O_WRONLY | libc::O_CREAT) as u64,
            0o644,
            0,
            0,
        ],
    );
    assert!(fd >= 0, "{fd}");
    let (r, seen) = s.call(libc::SYS_write, [fd as u64, at, 64, 0, 0, 0]);
    assert_eq!(r, 10, "a write is cut at the limit");
    assert!(seen.is_empty());
    let (r, seen) = s.call(libc::SYS_write, [fd as u64, at, 64, 0, 0, 0]);
    assert_eq!(r, -i64::from(libc::EFBIG));
    assert_eq!(seen, vec![Sig::new(libc::SIGXFSZ).unwrap()]);
    s.end();
}
