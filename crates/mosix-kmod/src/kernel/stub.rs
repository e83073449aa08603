//! The stub: the empty process a migrating process is rebuilt in on its destination node.
//!
//! It is the service's own program started with [`STUB_ARG`]; it waits, doing nothing, until the
//! restorer replaces everything in it. It dies with the thread that started it
//! (`PR_SET_PDEATHSIG`), so a guest never outlives the service supervising it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The argument that makes the service's program a stub.
pub const STUB_ARG: &str = "--mosix-stub";

/// The body of the stub: wait forever.
pub fn run() -> ! {
    loop {
        // SAFETY: pause(2) takes no arguments and only returns after a signal.
        unsafe {
            libc::pause();
        }
    }
}

/// Starts a stub (the current program with [`STUB_ARG`]).
pub fn spawn() -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg(STUB_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        // A process group of its own, in the service's session: a signal for the service's
        // group does not reach guests, and the group is not orphaned (its parent, the service,
        // is in the same session), so the kernel does not discard the job-control stops a
        // guest gets from home (SIGTSTP, SIGTTIN, SIGTTOU).
        .process_group(0);
    // SAFETY: runs in the child between fork and exec; prctl(2) is async-signal-safe and the
    // closure touches no memory shared with the parent's other threads.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
