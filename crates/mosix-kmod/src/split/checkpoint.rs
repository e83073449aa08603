//! Taking a checkpoint of a process at home (`migrate PID checkpoint|chkstop|chkexit`, `mosrun
//! -C FILE -A MINUTES`): the file format is [`mosix_core::checkpoint`].
//!
//! The process is stopped and frozen as for a move ([`freeze::freeze_stopped`]), its
//! descriptors, working directory, umask and environment are read from `/proc` while it is
//! stopped, its memory is written to the file run by run, and the freeze is undone: it goes on
//! where it was (or stops, or ends, as asked). A process that runs on another node comes home
//! first (the service does that), so the file is always written at home.
//!
//! The file is written with its owner's rights ([`crate::kernel::creds::as_user`]): created
//! under a temporary name next to it (mode 0600), synced, and renamed over the final name, so a
//! checkpoint is whole or absent. A set-uid process (real and effective ids differ) is not
//! checkpointed: its memory may hold what its owner may not read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mosix_core::checkpoint::{
    self, Fd, FdKind, FileSeen, Hashing, ImageWriter, MAX_ENV, MAX_FDS, Meta,
};
use nix::errno::Errno;
use tracing::{info, warn};

use crate::freezer::freeze;
use crate::kernel::creds::{User, as_user};
use crate::kernel::ptrace::{self, Sig};
use crate::split::deputy::HomeEnv;

/// What the process does once its checkpoint is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Goes on (`checkpoint`).
    Continue,
    /// Stops, to be resumed with `SIGCONT` (`chkstop`).
    Stop,
    /// Ends (`chkexit`): killed once the file is safe.
    Exit,
}

/// A checkpoint taken.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The file.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// How long the process was stopped.
    pub stopped_ms: u64,
}

/// Called with the checkpoint taken, or why not.
pub type CheckpointDone = Box<dyn FnOnce(Result<Taken, String>) + Send>;

/// Takes a checkpoint of process `pid` (at home, not frozen, not moving) into `file`, on a
/// new thread; `done` says how it went.
pub fn take(
    pid: i32,
    file: PathBuf,
    after: After,
    why: String,
    env: HomeEnv,
    done: CheckpointDone,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("mosix-ckpt-{pid}"))
        .spawn(move || {
            env.procs.update_home(pid, |h| h.moving = true);
            let r = take_now(pid, &file, after, &why, &env);
            env.procs.update_home(pid, |h| h.moving = false);
            match &r {
                Ok(t) => info!(
                    "process {pid} checkpointed to {} ({} MiB; stopped {} ms; {why})",
                    t.file.display(),
                    t.bytes >> 20,
                    t.stopped_ms
                ),
                Err(e) => warn!("process {pid}: no checkpoint to {}: {e}", file.display()),
            }
            done(r);
        });
    if let Err(e) = spawned {
        warn!("cannot start a checkpoint thread: {e}");
    }
}

fn take_now(
    pid: i32,
    file: &Path,
    after: After,
    why: &str,
    env: &HomeEnv,
) -> Result<Taken, String> {
    let creds = freeze::creds_of(pid);
    if creds.uid[0] != creds.uid[1] || creds.gid[0] != creds.gid[1] {
        return Err(format!(
            "process {pid} runs with other ids than its owner's (set-uid or set-gid): its memory is not written to a file"
        ));
    }
    let user = User {
        uid: creds.uid[0],
        gid: creds.gid[0],
        groups: creds.groups.clone(),
    };
    let running = ptrace::seize(pid, nix::sys::ptrace::Options::empty())
        .map_err(|e| format!("seizing it: {e}"))?;
    let started = Instant::now();
    let mut sigs = Vec::new();
    let t = running
        .interrupt(|s, _| sigs.push(s))
        .map_err(|e| format!("stopping it: {e}"))?;
    let mut meta = describe(pid, env.me.get(), why);
    let opts = env.freeze_options(&env.procs.home(pid));
    let frozen = freeze::freeze_stopped(t, sigs, &opts).map_err(|e| format!("freezing it: {e}"))?;
    meta.image_bytes = frozen.header.total_bytes;
    meta.uid = user.uid;
    meta.gid = user.gid;
    let written = write(file, &user, &meta, |w| {
        let mut iw = ImageWriter::new(w, &frozen.header)?;
        frozen
            .each_run(|vma, offset, data| iw.run(vma, offset, data))
            .map_err(std::io::Error::other)?;
        iw.end().map(|_| ())
    });
    let stopped_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    // The process goes on whatever happened to the file.
    let thawed = frozen.thaw().map_err(|e| e.to_string());
    let bytes = written?;
    thawed
        .map_err(|e| format!("the checkpoint is written, but the process could not go on: {e}"))?;
    match after {
        After::Continue => {}
        After::Stop => {
            let _ = Sig::STOP.send_to(pid);
        }
        After::Exit => {
            let _ = Sig::KILL.send_to(pid);
        }
    }
    Ok(Taken {
        file: file.to_owned(),
        bytes,
        stopped_ms,
    })
}

/// Writes a checkpoint file: the record, what `image` writes, the digest; as `user`, under a
/// temporary name renamed over `file` once synced. Its size.
fn write(
    file: &Path,
    user: &User,
    meta: &Meta,
    image: impl FnOnce(&mut Hashing<BufWriter<&File>>) -> std::io::Result<()>,
) -> Result<u64, String> {
    let name = file
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    let part = dir.join(format!(
        ".{}.part-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let say = |e: Errno| format!("{}: {}", file.display(), e.desc());
    let f = as_user(user, || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    })
    .map_err(say)?;
    let written = (|| -> std::io::Result<u64> {
        let mut w = Hashing::new(BufWriter::with_capacity(1 << 20, &f));
        checkpoint::write_meta(&mut w, meta)?;
        image(&mut w)?;
        let mut inner = checkpoint::write_trailer(w)?;
        inner.flush()?;
        drop(inner);
        f.sync_all()?;
        Ok(f.metadata()?.len())
    })();
    let bytes = match written {
        Ok(b) => b,
        Err(e) => {
            let _ = as_user(user, || std::fs::remove_file(&part).map_err(|_| Errno::EIO));
            return Err(format!("writing {}: {e}", file.display()));
        }
    };
    let renamed = as_user(user, || {
        std::fs::rename(&part, file)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    });
    if let Err(e) = renamed {
        let _ = as_user(user, || std::fs::remove_file(&part).map_err(|_| Errno::EIO));
        return Err(say(e));
    }
    // The rename itself is on disk once the directory is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes)
}

/// What a checkpoint records of process `pid` besides its memory, read from `/proc` (the
/// process is stopped).
fn describe(pid: i32, node: u16, why: &str) -> Meta {
    let p = procfs::process::Process::new(pid).ok();
    let command = p
        .as_ref()
        .and_then(|p| p.cmdline().ok())
        .map(|c| c.join(" "))
        .unwrap_or_default();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let umask = p
        .as_ref()
        .and_then(|p| p.status().ok())
        .and_then(|s| s.umask)
        .unwrap_or(0o022);
    let mut env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    env.truncate(MAX_ENV);
    let u = freeze::uname();
    Meta {
        taken_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        node,
        pid: pid.unsigned_abs(),
        uid: 0,
        gid: 0,
        command: cut(command),
        kernel: kernel_id(&u),
        cwd: cut(cwd),
        umask,
        env,
        fds: fds(pid),
        image_bytes: 0,
        why: why.to_owned(),
    }
}

/// The kernel a checkpoint is tied to: its release and build.
pub fn kernel_id(u: &[String; 6]) -> String {
    format!("{} {}", u[2], u[3])
}

fn cut(mut s: String) -> String {
    if s.len() > checkpoint::MAX_TEXT {
        let mut at = checkpoint::MAX_TEXT;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// The descriptor table of `pid`.
fn fds(pid: i32) -> Vec<Fd> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut nums: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    nums.sort_unstable();
    nums.truncate(MAX_FDS);
    nums.into_iter()
        .filter_map(|fd| describe_fd(pid, fd))
        .collect()
}

fn describe_fd(pid: i32, fd: i32) -> Option<Fd> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = cut(link.to_string_lossy().into_owned());
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or("0")
            .to_owned()
    };
    let flags = i32::from_str_radix(&field("flags:"), 8).unwrap_or(0);
    let pos: u64 = field("pos:").parse().unwrap_or(0);
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let flags = flags & !libc::O_CLOEXEC;
    let gone = |what: String| FdKind::Gone { what, flags };
    let kind = if !link.starts_with('/') || link.ends_with(" (deleted)") {
        gone(link)
    } else {
        // The file the descriptor holds (not whatever the path names now).
        match std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            Err(_) => gone(link),
            Ok(m) => {
                use std::os::unix::fs::{FileTypeExt, MetadataExt};
                let t = m.file_type();
                if t.is_file() {
                    FdKind::File {
                        path: link,
                        flags,
                        pos,
                        seen: FileSeen {
                            size: m.size(),
                            mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
                            dev: m.dev(),
                            ino: m.ino(),
                        },
                    }
                } else if t.is_dir() {
                    FdKind::Dir { path: link }
                } else if t.is_char_device() && is_tty(m.rdev()) {
                    FdKind::Tty { path: link }
                } else if t.is_char_device() || t.is_block_device() {
                    FdKind::Device { path: link, flags }
                } else {
                    gone(link)
                }
            }
        }
    };
    Some(Fd { fd, cloexec, kind })
}

/// Whether a character device is a terminal (its major: the console and ttys 4 and 5,
/// pseudo-terminals 136..143).
fn is_tty(rdev: u64) -> bool {
    let major = libc::major(rdev);
    matches!(major, 4 | 5 | 136..=143)
}

/// Rebuilds checkpoint `file` in process `pid` (a `mosrun -R` that set up the descriptors,
/// working directory and umask the checkpoint records, and waits on its connection to the
/// service, descriptor `sock_fd`, which is closed in the rebuilt process). The file is read
/// with the rights of `user`, the asking process's owner, who must be the checkpoint's. What
/// can be checked is checked before the process is touched; a failure after that (the
/// memory's digest, a kernel error) ends it, since a half-rebuilt process must not run. The
/// checkpointed command line, when done.
pub fn restore(pid: i32, file: &Path, sock_fd: i32, user: &User) -> Result<String, String> {
    use mosix_core::checkpoint::ImageReader;
    use std::io::BufReader;
    let name = file.display();
    let f = as_user(user, || {
        File::open(file).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    })
    .map_err(|e| format!("{name}: {}", e.desc()))?;
    let mut r = Hashing::new(BufReader::with_capacity(1 << 20, f));
    let meta = checkpoint::read_meta(&mut r).map_err(|e| format!("{name}: {e}"))?;
    if meta.uid != user.uid {
        return Err(format!(
            "{name} is a checkpoint of uid {}, not of the asking user (uid {})",
            meta.uid, user.uid
        ));
    }
    let here = kernel_id(&freeze::uname());
    if meta.kernel != here {
        return Err(format!(
            "{name} was taken on kernel {}; this node runs {here} (a process's code calls into its kernel's vDSO: it resumes only on the same kernel build)",
            meta.kernel
        ));
    }
    let mut img = ImageReader::new(&mut r).map_err(|e| format!("{name}: {e}"))?;
    let h = img.header.clone();
    let missing = h.missing_cpu_flags(&freeze::cpu_flags());
    if !missing.is_empty() {
        return Err(format!(
            "this node's CPU lacks features the process may use: {}",
            missing.join(" ")
        ));
    }
    let running = ptrace::seize(pid, nix::sys::ptrace::Options::empty())
        .map_err(|e| format!("seizing the process to rebuild: {e}"))?;
    let t = running
        .interrupt(|_, _| {})
        .map_err(|e| format!("stopping the process to rebuild: {e}"))?;
    // From here on a failure ends the process (the restorer kills it when dropped).
    let mut rs = crate::freezer::restore::prepare(t, &h, None)
        .map_err(|e| format!("rebuilding {name}: {e}"))?;
    let mut buf = Vec::new();
    loop {
        match img.next_run(&mut buf) {
            Ok(Some((vma, offset))) => rs
                .pages()
                .write(&h.vmas, vma, offset, &buf)
                .map_err(|e| format!("rebuilding {name}: {e}"))?,
            Ok(None) => break,
            Err(e) => return Err(format!("{name}: {e}")),
        }
    }
    drop(img);
    checkpoint::check_trailer(r).map_err(|e| format!("{name}: {e}"))?;
    rs.close_fd(sock_fd)
        .map_err(|e| format!("rebuilding {name}: {e}"))?;
    // The C library keeps the thread's id where the kernel clears it at exit: the new one.
    if h.tid_address != 0 {
        rs.poke(h.tid_address, &pid.to_le_bytes())
            .map_err(|e| format!("rebuilding {name}: {e}"))?;
    }
    let (t, _) = rs
        .finish(&h, None)
        .map_err(|e| format!("rebuilding {name}: {e}"))?;
    t.detach(None).map_err(|e| format!("letting it go: {e}"))?;
    Ok(meta.command)
}
