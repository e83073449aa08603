//! `mosrun -I FILE`: what a checkpoint holds, and what could not be restored from it.

use std::io::BufReader;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use mosix_core::checkpoint::{self, FdKind, FileSeen, Hashing, ImageReader, Meta};
use serde_json::json;

/// Reads the whole file (its digest is checked) and prints it; exit 1 if it is unusable.
pub fn show(file: &Path, as_json: bool) -> Result<ExitCode> {
    let f = std::fs::File::open(file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let mut r = Hashing::new(BufReader::with_capacity(1 << 20, f));
    let meta = checkpoint::read_meta(&mut r).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let check = (|| -> Result<(usize, u64), checkpoint::CheckpointError> {
        let mut image = ImageReader::new(&mut r)?;
        let areas = image.header.vmas.len();
        let mut buf = Vec::new();
        let mut bytes = 0u64;
        while image.next_run(&mut buf)?.is_some() {
            bytes += buf.len() as u64;
        }
        Ok((areas, bytes))
    })();
    let whole = check.and_then(|x| checkpoint::check_trailer(r).map(|()| x));
    let here = kernel_here();
    let files: Vec<_> = meta.fds.iter().map(|f| (f, now_differs(&f.kind))).collect();
    if as_json {
        let fds: Vec<_> = files
            .iter()
            .map(|(f, changed)| {
                json!({
                    "fd": f.fd,
                    "cloexec": f.cloexec,
                    "kind": kind_word(&f.kind),
                    "path": f.kind.path(),
                    "what": f.kind.describe(),
                    "offset": match &f.kind { FdKind::File { pos, .. } => Some(*pos), _ => None },
                    "restorable": !matches!(f.kind, FdKind::Gone { .. }),
                    "changed": changed,
                })
            })
            .collect();
        let v = json!({
            "file": file.display().to_string(),
            "version": checkpoint::VERSION,
            "taken_ms": meta.taken_ms,
            "node": meta.node,
            "pid": meta.pid,
            "uid": meta.uid,
            "gid": meta.gid,
            "command": meta.command,
            "why": meta.why,
            "kernel": meta.kernel,
            "same_kernel": meta.kernel == here,
            "cwd": meta.cwd,
            "umask": meta.umask,
            "env": env_list(&meta),
            "image_bytes": meta.image_bytes,
            "areas": whole.as_ref().ok().map(|x| x.0),
            "fds": fds,
            "whole": whole.is_ok(),
            "error": whole.as_ref().err().map(ToString::to_string),
        });
        println!("{v}");
    } else {
        print(&meta, file, &here, &files, &whole);
    }
    Ok(if whole.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(
    meta: &Meta,
    file: &Path,
    here: &str,
    files: &[(&checkpoint::Fd, Option<String>)],
    whole: &Result<(usize, u64), checkpoint::CheckpointError>,
) {
    println!(
        "checkpoint {} (format {})",
        file.display(),
        checkpoint::VERSION
    );
    println!(
        "  process {} of uid {} (gid {}) on node {}, taken {} ({})",
        meta.pid,
        meta.uid,
        meta.gid,
        meta.node,
        when(meta.taken_ms),
        meta.why
    );
    println!("  command: {}", meta.command);
    println!("  cwd:     {} (umask {:03o})", meta.cwd, meta.umask);
    println!("  memory:  {} MiB", meta.image_bytes >> 20);
    let same = if meta.kernel == here {
        "this kernel".to_owned()
    } else {
        format!("NOT this kernel ({here}): it cannot be restored here")
    };
    println!("  kernel:  {} — {same}", meta.kernel);
    println!("  environment: {} variables", env_list(meta).len());
    println!("  descriptors:");
    for (f, changed) in files {
        let note = match (&f.kind, changed) {
            (FdKind::Gone { .. }, _) => " — closed on restore unless -O gives it a file".into(),
            (FdKind::Tty { .. }, _) => " — the restoring mosrun's own, if it has one".into(),
            (_, Some(c)) => format!(" — CHANGED: {c}"),
            _ => String::new(),
        };
        println!(
            "    {:>3}{} {}{note}",
            f.fd,
            if f.cloexec { " (cloexec)" } else { "" },
            f.kind.describe()
        );
    }
    match whole {
        Ok((areas, bytes)) => println!(
            "  whole: yes ({areas} memory areas, {} MiB of pages; digest matches)",
            bytes >> 20
        ),
        Err(e) => println!("  whole: NO — {e}"),
    }
}

/// How the file of a descriptor differs now from when the checkpoint was taken.
fn now_differs(kind: &FdKind) -> Option<String> {
    let FdKind::File { path, seen, .. } = kind else {
        return None;
    };
    match std::fs::metadata(path) {
        Err(e) => Some(format!("{path}: {e}")),
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            let now = FileSeen {
                size: m.size(),
                mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
                dev: m.dev(),
                ino: m.ino(),
            };
            seen.changed(&now)
        }
    }
}

fn kind_word(k: &FdKind) -> &'static str {
    match k {
        FdKind::File { .. } => "file",
        FdKind::Dir { .. } => "dir",
        FdKind::Device { .. } => "device",
        FdKind::Tty { .. } => "tty",
        FdKind::Gone { .. } => "gone",
    }
}

fn env_list(meta: &Meta) -> Vec<String> {
    meta.env
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// This machine's kernel as a checkpoint records it (release and build).
fn kernel_here() -> String {
    nix::sys::utsname::uname()
        .map(|u| {
            format!(
                "{} {}",
                u.release().to_string_lossy(),
                u.version().to_string_lossy()
            )
        })
        .unwrap_or_default()
}

/// A time in ms since the epoch, as seconds ago.
fn when(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{} s ago", now.saturating_sub(ms) / 1000)
}
