//! A guest's tree of its own: a mount namespace in which its path calls on this node's data run
//! in this node's kernel, with its owner's rights, and every other path is a trap.
//!
//! The tree is a copy of the node's mount namespace (private, so nothing propagates back) in
//! which a small tmpfs holds the guest's root: a bind of the trap (a FUSE file system of the
//! node service, `mfs::trap`, whose only directories lead to the data) with, on its directories
//! (`/mfs/N`, `/mfs/here`…), the node's own tree: every mount of the node, cloned and **idmapped**
//! — seen through a user namespace that swaps the owner's uid and the guest's host uid and
//! leaves every other id as it is. Through those mounts the guest's host uid is the owner on
//! the owner's files and a stranger everywhere else, exactly the rights MFS gives the owner
//! here; a file it makes is the owner's on disk. A mount that cannot be idmapped (procfs,
//! sysfs, devices, FUSE — this node's `/mfs` among them —, a network file system) gets the trap
//! mounted on it instead, so a path into it goes to the supervisor as before. Every mount of
//! the tree is `nosuid` and `nodev`.
//!
//! The guest's stub joins the namespace and takes the tmpfs's root directory as its root
//! (`chroot`) while it is still root, before it is locked down (`freezer::restore`). Its stub
//! holds the namespace alive; when the guest ends, the namespace and its mounts go with it.
//!
//! What the tree does not change: the guest's own uid is its host id, so no local user can
//! signal or trace it; its `stat`s are the supervisor's (through these mounts the owner's files
//! show the guest's uid); and it can reach nothing of the node but its data: no `/proc`, no
//! devices, no other mount, nothing above its root.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use tracing::debug;

/// File systems never mounted natively in a tree: what they hold is the node's, not data (or,
/// for FUSE, another node's through this node's MFS), and none could be idmapped anyway.
const NOT_DATA: [&str; 22] = [
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devtmpfs",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "pstore",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "binfmt_misc",
    "autofs",
    "efivarfs",
    "rpc_pipefs",
    "nsfs",
    "selinuxfs",
    "ramfs",
];

/// Where the tmpfs that holds a tree's root may stand in the copy of the node's namespace: the
/// first of these that is a directory and does not hold the trap (covered in the copy only).
const STAGES: [&str; 4] = ["/run", "/tmp", "/mnt", "/var/tmp"];

/// What a tree is built of.
#[derive(Debug, Clone, Copy)]
pub struct TreeSpec<'a> {
    /// The trap, mounted in the node's namespace (each tree binds it).
    pub trap: &'a Path,
    /// Where in the tree the node's own tree shows (`/mfs/3`, `/mfs/here`…): directories of
    /// the trap's skeleton.
    pub data_at: &'a [PathBuf],
    /// The owner's uid on this node's files (root squashed as MFS squashes it).
    pub owner_uid: u32,
    /// The guest's host uid.
    pub guest_uid: u32,
}

/// A built tree: its namespace and, in it, the directory the guest takes as its root.
#[derive(Debug)]
pub struct Tree {
    /// The mount namespace (`/proc/thread-self/ns/mnt` of the thread that built it).
    pub ns: OwnedFd,
    /// The guest's root, as a path in that namespace.
    pub root: PathBuf,
    /// The node's mounts seen natively in the tree, and those trapped, by their path here.
    pub native: Vec<PathBuf>,
    /// The node's mounts covered by the trap.
    pub trapped: Vec<PathBuf>,
}

/// Builds a tree (on a thread of its own: the namespace is that thread's, and the thread ends).
pub fn build(spec: &TreeSpec<'_>) -> std::io::Result<Tree> {
    if spec.owner_uid == spec.guest_uid {
        return Err(std::io::Error::other(
            "a tree needs the guest's host uid to differ from its owner's",
        ));
    }
    let userns = swap_userns(spec.owner_uid, spec.guest_uid)?;
    let trap = spec.trap.to_path_buf();
    let data_at = spec.data_at.to_vec();
    std::thread::scope(|s| {
        s.spawn(|| build_here(&trap, &data_at, userns.as_fd()))
            .join()
            .map_err(|_| std::io::Error::other("the thread building a tree panicked"))?
    })
}

fn build_here(trap: &Path, data_at: &[PathBuf], userns: BorrowedFd<'_>) -> std::io::Result<Tree> {
    use nix::sched::{CloneFlags, unshare};
    let Some(first) = data_at.first() else {
        return Err(std::io::Error::other("a tree needs a place for the data"));
    };
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let infos: procfs::process::MountInfos =
        procfs::FromRead::from_file("/proc/thread-self/mountinfo")
            .map_err(std::io::Error::other)?;
    let mounts = visible(infos.0);
    // The node's mounts, cloned before anything of the tree covers them.
    let mut clones: Vec<(PathBuf, Option<OwnedFd>)> = Vec::with_capacity(mounts.len());
    for m in &mounts {
        let native = if NOT_DATA.contains(&m.fs_type.as_str()) || m.fs_type.starts_with("fuse") {
            None
        } else {
            match idmapped_clone(&m.mount_point, userns) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    debug!(
                        "tree: {} ({}) cannot be idmapped ({e}): trapped",
                        m.mount_point.display(),
                        m.fs_type
                    );
                    None
                }
            }
        };
        // A mount on a file (a namespace's, a bind of one file) that is not data cannot have
        // the trap on it: its directory gets it instead, and the rest there comes back too.
        let at = if native.is_none() && !m.mount_point.is_dir() {
            m.mount_point
                .parent()
                .unwrap_or(Path::new("/"))
                .to_path_buf()
        } else {
            m.mount_point.clone()
        };
        clones.push((at, native));
    }
    // Not over the trap, which is bound from its path below.
    let Some(stage) = STAGES
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir() && !trap.starts_with(p))
    else {
        return Err(std::io::Error::other("no directory to stage a tree on"));
    };
    mount(
        Some("mosix-tree"),
        stage,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    let root = stage.join("root");
    std::fs::create_dir(&root)?;
    bind(trap, &root).map_err(|e| at_path("binding the trap", trap, e))?;
    let base = inside(&root, first);
    let (mut native, mut trapped) = (Vec::new(), Vec::new());
    for (at, fd) in clones {
        // Below a trapped mount the trap answers: nothing of the node is mounted there. (The
        // root is never trapped for a file under it: its data would be nothing.)
        if trapped.iter().any(|t: &PathBuf| at.starts_with(t))
            || fd.is_none() && at == Path::new("/") && !native.is_empty()
        {
            continue;
        }
        let target = inside(&base, &at);
        match fd {
            Some(fd) => {
                rustix::mount::move_mount(
                    &fd,
                    "",
                    rustix::fs::CWD,
                    &target,
                    rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
                )
                .map_err(|e| at_path("mounting the node's", &at, e.into()))?;
                native.push(at);
            }
            None => {
                // The root itself cannot be native: the data is then nothing but the trap.
                bind(trap, &target).map_err(|e| at_path("trapping the node's", &at, e))?;
                trapped.push(at);
            }
        }
    }
    for alias in &data_at[1..] {
        let tree = rustix::mount::open_tree(
            rustix::fs::CWD,
            &base,
            rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
                | rustix::mount::OpenTreeFlags::AT_RECURSIVE,
        )?;
        rustix::mount::move_mount(
            &tree,
            "",
            rustix::fs::CWD,
            inside(&root, alias),
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )?;
    }
    let ns = std::fs::File::open("/proc/thread-self/ns/mnt")?;
    Ok(Tree {
        ns: ns.into(),
        root,
        native,
        trapped,
    })
}

/// An error of one step of the build, with the path it was about.
fn at_path(what: &str, p: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

/// `p` (absolute) under `base`.
fn inside(base: &Path, p: &Path) -> PathBuf {
    base.join(p.strip_prefix("/").unwrap_or(p))
}

/// A plain bind of `from` (not recursive) at `to`, `nosuid` and `nodev`.
fn bind(from: &Path, to: &Path) -> std::io::Result<()> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    mount(
        None::<&str>,
        to,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )?;
    Ok(())
}

/// The mounts a path walk can reach, parents first: of several mounts on one point only the
/// last (the one on top), and nothing below a mount that is not reached.
fn visible(all: Vec<procfs::process::MountInfo>) -> Vec<procfs::process::MountInfo> {
    use std::collections::{HashMap, HashSet};
    let mut top: HashMap<PathBuf, i32> = HashMap::new();
    for m in &all {
        top.insert(m.mount_point.clone(), m.mnt_id);
    }
    let mut kept: HashSet<i32> = HashSet::new();
    let mut out = Vec::new();
    let mut sorted: Vec<_> = all.into_iter().collect();
    sorted.sort_by_key(|m| m.mount_point.components().count());
    for m in sorted {
        let on_top = top.get(&m.mount_point) == Some(&m.mnt_id);
        let root = m.mount_point == Path::new("/");
        if on_top && (root || kept.contains(&m.pid)) {
            kept.insert(m.mnt_id);
            out.push(m);
        }
    }
    out
}

/// A clone of the mount at `at` (not recursive), idmapped through `userns`, `nosuid` and
/// `nodev`: detached until moved into place.
fn idmapped_clone(at: &Path, userns: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    use rustix::mount::{OpenTreeFlags, open_tree};
    let fd = open_tree(
        rustix::fs::CWD,
        at,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_SYMLINK_NOFOLLOW
            | OpenTreeFlags::AT_NO_AUTOMOUNT,
    )?;
    let attr = linux_raw_sys::general::mount_attr {
        attr_set: u64::from(
            linux_raw_sys::general::MOUNT_ATTR_IDMAP
                | linux_raw_sys::general::MOUNT_ATTR_NOSUID
                | linux_raw_sys::general::MOUNT_ATTR_NODEV,
        ),
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr(2) reads `attr` (its size given) and the empty path; `fd` is a
    // mount we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &raw const attr,
            std::mem::size_of_val(&attr),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// The id maps of a user namespace that swaps `a` and `b` and maps every other id to itself:
/// `inside outside count` lines, as `uid_map` takes them.
pub fn swap_map(a: u32, b: u32) -> String {
    let (lo, hi) = (a.min(b), a.max(b));
    let mut m = String::new();
    let mut line = |inside: u32, outside: u32, count: u32| {
        if count > 0 {
            m.push_str(&format!("{inside} {outside} {count}\n"));
        }
    };
    line(0, 0, lo);
    line(lo, hi, 1);
    line(lo + 1, lo + 1, hi - lo - 1);
    line(hi, lo, 1);
    // Ids run to 4294967294 (-1 is no id).
    line(hi + 1, hi + 1, u32::MAX - hi - 1);
    m
}

/// A user namespace whose uid map swaps `owner` and `guest` (gids map to themselves), as a
/// descriptor: made by a child process that unshares it and waits while we write its maps.
fn swap_userns(owner: u32, guest: u32) -> std::io::Result<OwnedFd> {
    use nix::unistd::ForkResult;
    let (go_rd, go_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_rd, ready_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the child makes system calls only (unshare, write, read, _exit) on values made
    // before the fork.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop((go_wr, ready_rd));
            // SAFETY: plain system calls; the child ends with _exit.
            unsafe {
                let ok = libc::unshare(libc::CLONE_NEWUSER) == 0;
                let b = [u8::from(ok)];
                libc::write(ready_wr.as_raw_fd(), b.as_ptr().cast(), 1);
                let mut x = [0u8; 1];
                libc::read(go_rd.as_raw_fd(), x.as_mut_ptr().cast(), 1);
                libc::_exit(0)
            }
        }
        ForkResult::Parent { child } => {
            drop((go_rd, ready_wr));
            let made = (|| {
                let mut b = [0u8; 1];
                nix::unistd::read(&ready_rd, &mut b)?;
                if b[0] != 1 {
                    return Err(std::io::Error::other("unshare(CLONE_NEWUSER) failed"));
                }
                std::fs::write(format!("/proc/{child}/uid_map"), swap_map(owner, guest))?;
                std::fs::write(format!("/proc/{child}/gid_map"), "0 0 4294967295\n")?;
                let ns = std::fs::File::open(format!("/proc/{child}/ns/user"))?;
                Ok(OwnedFd::from(ns))
            })();
            drop(go_wr);
            let _ = nix::sys::wait::waitpid(child, None);
            made
        }
    }
}

/// The path by which a stub opens the tree's namespace: this process's descriptor of it.
pub fn ns_path(tree: &Tree) -> CString {
    let p = format!("/proc/{}/fd/{}", std::process::id(), tree.ns.as_raw_fd());
    CString::new(p.as_bytes()).unwrap_or_default()
}

/// The guest's root as a C string (for the stub's `chroot`).
pub fn root_path(tree: &Tree) -> CString {
    CString::new(tree.root.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swap_map_covers_every_id_once_and_swaps_two() {
        for (a, b) in [
            (1000, 2_000_004_242),
            (65534, 2_000_000_001),
            (0, 5),
            (7, 8),
        ] {
            let m = swap_map(a, b);
            let mut inside = Vec::new();
            let mut outside = Vec::new();
            for l in m.lines() {
                let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
                inside.push((v[0], v[0] + v[2]));
                outside.push((v[1], v[1] + v[2]));
                if v[2] == 1 && v[0] == u64::from(a.min(b)) {
                    assert_eq!(v[1], u64::from(a.max(b)));
                }
            }
            for r in [&mut inside, &mut outside] {
                r.sort_unstable();
                assert_eq!(r[0].0, 0, "{m}");
                for w in r.windows(2) {
                    assert_eq!(w[0].1, w[1].0, "{m}");
                }
                assert_eq!(r.last().unwrap().1, u64::from(u32::MAX), "{m}");
            }
            assert!(m.lines().count() <= 5);
        }
    }
}
