//! Mount namespaces: every node has one (its MFS mount is its own); in node I's namespace each private
//! directory is a bind mount of `nodeI/files/DIR` in the state directory; the namespace is kept
//! alive by binding its namespace file onto `ns/nodeI.mnt`, in a directory that is a private
//! mount of its own.

use std::ffi::{CStr, CString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::Cluster;

/// Makes the machine's mounts shared if they are not, and the directory for the namespace
/// files a private mount (namespace files can only be bound onto a mount that is not shared).
///
/// A node's namespace is a slave of the machine's: mounts made on the machine later (a file
/// system a test or an administrator mounts while the cluster runs) reach the nodes only from
/// mounts that are shared. systemd makes every mount shared at boot; a machine or container
/// without it may have a private root, which `up` then makes shared (recursively), as systemd
/// would have: nothing else changes for the machine's own processes.
pub(crate) fn prepare(c: &Cluster) -> Result<()> {
    if !root_shared() {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SHARED,
            None::<&str>,
        )
        .context("making the machine's mounts shared (mount --make-rshared /)")?;
    }
    {
        let ns = c.state_dir.join("ns");
        fs::create_dir_all(&ns).with_context(|| ns.display().to_string())?;
        nix::mount::mount(Some(&ns), &ns, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("bind-mounting {}", ns.display()))?;
        nix::mount::mount(
            None::<&str>,
            &ns,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .with_context(|| format!("making {} private", ns.display()))?;
    }
    Ok(())
}

/// Creates node I's mount namespace with its private directories, if the nodes have any.
pub(crate) fn make_node(c: &Cluster, n: u16) -> Result<()> {
    if let Some(file) = c.mntns_file(n) {
        let files = c.node_dir(n).join("files");
        let mut binds = Vec::new();
        for d in &c.private_dirs {
            let src = files.join(d.strip_prefix("/").unwrap_or(d));
            fs::create_dir_all(&src).with_context(|| src.display().to_string())?;
            fs::set_permissions(&src, fs::Permissions::from_mode(0o1777))
                .with_context(|| src.display().to_string())?;
            binds.push((src, d.clone()));
        }
        make_mount_ns(&file, &binds)?;
    }
    Ok(())
}

/// Creates a mount namespace in which each `(src, dst)` is bind-mounted, and keeps it alive by
/// bind-mounting its namespace file onto `file`.
///
/// A helper process (`cat`, waiting on a pipe) builds the namespace between fork and exec: once
/// it has executed, the namespace is complete, we bind its `/proc/PID/ns/mnt` onto `file`, and
/// closing the pipe ends the helper. Doing the work in a child keeps this process (which may have
/// many threads, like a test harness) where it is.
///
/// The new namespace is a slave of ours (mounts made here later still appear there — `prepare`
/// made ours shared — but its own mounts stay inside). The namespace file must be bound onto a mount that is not shared, or
/// the kernel refuses (the bind could propagate into the namespace itself); `prepare` made the
/// directory a private mount for that reason.
fn make_mount_ns(file: &Path, binds: &[(PathBuf, PathBuf)]) -> Result<()> {
    fs::write(file, b"").with_context(|| file.display().to_string())?;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| anyhow!("{} contains a NUL byte", p.display()))
    };
    let binds_c: Vec<(CString, CString)> = binds
        .iter()
        .map(|(s, d)| Ok((cstr(s)?, cstr(d)?)))
        .collect::<Result<_>>()?;
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec. It makes only system calls
    // (unshare(2), mount(2)) on C strings built before the fork; nix hands a `CStr` to the
    // kernel as it is, without allocating, so the closure allocates nothing and touches no state
    // that another thread of the parent could have held locked at the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            nix::mount::mount(
                None::<&CStr>,
                c"/",
                None::<&CStr>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&CStr>,
            )
            .map_err(std::io::Error::from)?;
            for (src, dst) in &binds_c {
                nix::mount::mount(
                    Some(src.as_c_str()),
                    dst.as_c_str(),
                    None::<&CStr>,
                    MsFlags::MS_BIND,
                    None::<&CStr>,
                )
                .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "setting up private directories {:?} in a new mount namespace",
            binds.iter().map(|b| &b.1).collect::<Vec<_>>()
        )
    })?;
    let src = format!("/proc/{}/ns/mnt", child.id());
    let bound = nix::mount::mount(
        Some(src.as_str()),
        file,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("keeping the mount namespace at {}", file.display()));
    drop(child.stdin.take());
    let _ = child.wait();
    bound
}

/// Unmounts the namespace files in state directory `sd` and the directory holding them.
pub(crate) fn remove(sd: &Path) -> Result<()> {
    let ns_dir = sd.join("ns");
    if let Ok(rd) = fs::read_dir(&ns_dir) {
        for e in rd.flatten() {
            let _ = nix::mount::umount2(&e.path(), MntFlags::MNT_DETACH);
        }
    }
    if mounted(&ns_dir) {
        nix::mount::umount2(&ns_dir, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", ns_dir.display()))?;
    }
    Ok(())
}

/// Whether this namespace's root mount is shared.
fn root_shared() -> bool {
    procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .is_ok_and(|m| {
            m.into_iter().any(|x| {
                x.mount_point == Path::new("/")
                    && x.opt_fields
                        .iter()
                        .any(|f| matches!(f, procfs::process::MountOptFields::Shared(_)))
            })
        })
}

fn mounted(p: &Path) -> bool {
    procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .is_ok_and(|m| m.into_iter().any(|x| x.mount_point == p))
}
