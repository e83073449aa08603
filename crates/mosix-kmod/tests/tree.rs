//! A guest's tree of its own, on this machine: a child process in a tree (its node's files
//! idmapped to its owner, the trap everywhere else) under the tree's filter opens, creates,
//! renames and removes files of the data natively with exactly its owner's rights, and a path
//! into the trap, or a read or a write on one of its placeholders, comes back to the
//! supervisor as a notified call made again.
#![allow(clippy::unwrap_used)]

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mosix_core::image::NativeIo;
use mosix_kmod::kernel::again::{Again, make_again};
use mosix_kmod::kernel::seccomp::{self, Listener};
use mosix_kmod::kernel::tree::{self, TreeSpec};
use mosix_kmod::mfs::trap::{Sent, Trap};

const OWNER: u32 = 65534;
const GUEST: u32 = 2_000_999_999;

fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "needs root, and CI runs as root"
    );
    eprintln!("SKIP: needs root");
    false
}

/// What the guest reports, one byte per check (1: as expected).
const CHECKS: usize = 13;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

#[test]
fn a_guest_opens_its_data_natively_with_its_owners_rights_and_the_rest_comes_back() {
    if !root_or_skip() {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("mosix-tree-")
        .tempdir_in("/tmp")
        .unwrap();
    let b = base.path();
    std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = b.join("d");
    std::fs::create_dir(&d).unwrap();
    // Sticky, as /tmp: a file only its owner removes.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    for (name, uid) in [("mine", OWNER), ("roots", 0)] {
        let f = d.join(name);
        std::fs::write(&f, name).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&f, Some(uid.into()), Some(uid.into())).unwrap();
    }
    let trap = Trap::start(&b.join("trap"), &[Path::new("/mfs/3")]).unwrap();
    let data_at = [PathBuf::from("/mfs/3")];
    let t = tree::build(&TreeSpec {
        trap: trap.at(),
        data_at: &data_at,
        owner_uid: OWNER,
        guest_uid: GUEST,
    })
    .unwrap();
    assert!(t.native.iter().any(|p| p == Path::new("/")), "{t:?}");
    assert!(t.trapped.iter().any(|p| p == Path::new("/proc")), "{t:?}");
    // In the tree, the data is under /mfs/3.
    let in_tree = |p: &Path| Path::new("/mfs/3").join(p.strip_prefix("/").unwrap());
    let (mine, roots, made, kept, moved, dir) = (
        c(&in_tree(&d.join("mine"))),
        c(&in_tree(&d.join("roots"))),
        c(&in_tree(&d.join("made"))),
        c(&in_tree(&d.join("kept"))),
        c(&in_tree(&d.join("moved"))),
        c(&in_tree(&d)),
    );
    let outside = c(Path::new("/etc/hostname"));
    let (ns, root) = (tree::ns_path(&t), tree::root_path(&t));
    let filter = seccomp::program_bytes(&seccomp::program(
        Some(&NativeIo {
            from: 3,
            except: vec![],
            exact: true,
            umask: 0o22,
        }),
        true,
    ));
    let (to_parent_rd, to_parent_wr) = nix::unistd::pipe().unwrap();
    let (go_rd, go_wr) = nix::unistd::pipe().unwrap();
    let slash = c"/";
    let placeholder = c(&Path::new("/").join(mosix_kmod::mfs::trap::PLACEHOLDER));
    // SAFETY: the child makes system calls only, on values made before the fork.
    match unsafe { nix::unistd::fork() }.unwrap() {
        // SAFETY: raw system calls on buffers and strings of this process, then _exit.
        nix::unistd::ForkResult::Child => unsafe {
            let out = to_parent_wr.as_raw_fd();
            let nsfd = libc::open(ns.as_ptr(), libc::O_RDONLY);
            if nsfd < 0
                || libc::setns(nsfd, libc::CLONE_NEWNS) != 0
                || libc::chroot(root.as_ptr()) != 0
                || libc::chdir(slash.as_ptr()) != 0
            {
                libc::_exit(2);
            }
            libc::close(nsfd);
            // A placeholder of the trap, as the stub opens them (not yet a guest: a plain
            // answer).
            let ph = libc::open(placeholder.as_ptr(), libc::O_RDWR);
            if ph < 0 {
                libc::_exit(4);
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(OWNER, OWNER, OWNER) != 0
                || libc::setresuid(GUEST, GUEST, GUEST) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                libc::_exit(3);
            }
            let fprog = libc::sock_fprog {
                len: (filter.len() / 8) as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            let lfd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &raw const fprog,
            ) as i32;
            libc::write(out, (&raw const lfd).cast(), 4);
            let mut go = [0u8; 1];
            libc::read(go_rd.as_raw_fd(), go.as_mut_ptr().cast(), 1);
            let errno = || *libc::__errno_location();
            let mut r = [0u8; CHECKS];
            // 0: the owner's 0600 file opens and reads, natively.
            let fd = libc::open(mine.as_ptr(), libc::O_RDONLY);
            let mut buf = [0u8; 8];
            r[0] = u8::from(
                fd >= 0 && libc::read(fd, buf.as_mut_ptr().cast(), 8) == 4 && &buf[..4] == b"mine",
            );
            // 1: the file of root does not.
            r[1] =
                u8::from(libc::open(roots.as_ptr(), libc::O_RDONLY) < 0 && errno() == libc::EACCES);
            // 2: a path outside the data comes back: the supervisor answers ENOTSUP.
            r[2] = u8::from(
                libc::open(outside.as_ptr(), libc::O_RDONLY) < 0 && errno() == libc::ENOTSUP,
            );
            // 3: a file made natively, closed natively, then removed natively.
            let m = libc::open(
                made.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL,
                0o644,
            );
            r[3] = u8::from(m >= 0 && libc::close(m) == 0 && libc::unlink(made.as_ptr()) == 0);
            // 4: a file made and kept (its owner is checked outside).
            let k = libc::open(kept.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
            r[4] = u8::from(k >= 0 && libc::write(k, b"k".as_ptr().cast(), 1) == 1);
            // 5: access of the owner's file, natively.
            r[5] = u8::from(libc::access(mine.as_ptr(), libc::R_OK | libc::W_OK) == 0);
            // 6: the root of the tree is no file of the node: an open of it comes back.
            r[6] = u8::from(
                libc::open(slash.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) < 0
                    && errno() == libc::ENOTSUP,
            );
            // 7: root's file, in a sticky directory, is not the owner's to remove.
            r[7] = u8::from(libc::unlink(roots.as_ptr()) < 0 && errno() == libc::EPERM);
            // 8: the kept file renamed, natively.
            r[8] = u8::from(libc::rename(kept.as_ptr(), moved.as_ptr()) == 0);
            // 9: an unnamed file, natively.
            let t = libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600);
            r[9] = u8::from(t >= 0 && libc::write(t, b"t".as_ptr().cast(), 1) == 1);
            // 10, 11: a read and a write on the placeholder run natively, reach the trap and
            // come back to the supervisor, made again and notified: it answers ENOTSUP.
            r[10] = u8::from(
                libc::read(ph, buf.as_mut_ptr().cast(), 8) < 0 && errno() == libc::ENOTSUP,
            );
            r[11] =
                u8::from(libc::write(ph, b"w".as_ptr().cast(), 1) < 0 && errno() == libc::ENOTSUP);
            // 12: the guest cannot open a placeholder itself: the lookup of its name comes
            // back like any path into the trap.
            r[12] = u8::from(
                libc::open(placeholder.as_ptr(), libc::O_RDWR) < 0 && errno() == libc::ENOTSUP,
            );
            libc::write(out, r.as_ptr().cast(), CHECKS);
            libc::_exit(0)
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop((to_parent_wr, go_rd));
            let mut from_child = std::fs::File::from(to_parent_rd);
            let mut b4 = [0u8; 4];
            std::io::Read::read_exact(&mut from_child, &mut b4).unwrap();
            let pid = child.as_raw();
            let l = Listener::from_fd(seccomp::take_fd(pid, i32::from_le_bytes(b4)).unwrap());
            let waiting = trap.watch(pid).unwrap();
            nix::unistd::write(&go_wr, &[1]).unwrap();
            let (mut made_again, mut notified, mut io_again, mut io_sent) = (0, 0, 0, 0);
            let mut report = Vec::new();
            let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while std::time::Instant::now() < end {
                let mut fds = [
                    libc::pollfd {
                        fd: l.fd().as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: waiting.fd().as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: from_child.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                // SAFETY: poll on three descriptors of ours.
                unsafe { libc::poll(fds.as_mut_ptr(), 3, 200) };
                if fds[1].revents != 0 {
                    for s in waiting.take() {
                        // A read or a write of a placeholder comes with what answering it
                        // takes; here every request is made again.
                        if matches!(s.request, Sent::Read { .. } | Sent::Write { .. }) {
                            io_sent += 1;
                        }
                        let request = s.request;
                        let fail = move || request.fail();
                        let r = make_again(s.pid, mosix_core::syscalls::tree_native, fail);
                        assert_eq!(r.unwrap(), Again::Made);
                        made_again += 1;
                    }
                }
                if fds[0].revents & libc::POLLIN != 0 {
                    let n = l.recv().unwrap();
                    if i64::from(n.nr) == libc::SYS_exit_group {
                        l.allow(&n).unwrap();
                        break;
                    }
                    assert!(n.again, "{n:?}");
                    notified += 1;
                    if mosix_core::syscalls::is_native_io(i64::from(n.nr)) {
                        io_again += 1;
                    }
                    l.reply(n.id, -i64::from(libc::ENOTSUP)).unwrap();
                }
                if fds[2].revents != 0 {
                    let mut b = [0u8; CHECKS];
                    let k = std::io::Read::read(&mut from_child, &mut b).unwrap();
                    report.extend_from_slice(&b[..k]);
                    if k == 0 {
                        break;
                    }
                }
            }
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            std::io::Read::read_to_end(&mut from_child, &mut report).unwrap();
            trap.forget(pid);
            trap.stop();
            drop(go_wr);
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            assert_eq!(report, vec![1u8; CHECKS], "checks 0..{CHECKS}");
            assert_eq!((made_again, notified, io_again, io_sent), (5, 5, 2, 2));
            let kept = std::fs::metadata(d.join("moved")).unwrap();
            assert_eq!((kept.uid(), kept.gid()), (OWNER, OWNER));
            assert!(!d.join("made").exists() && !d.join("kept").exists());
            assert!(d.join("roots").exists());
        }
    }
}
