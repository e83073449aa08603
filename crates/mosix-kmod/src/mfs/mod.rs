//! The MOSIX File System: on every node a mount (`[mfs] mount`, default `/mfs`) where
//! `/mfs/N/path` is node N's `/path`, with one cache (the owner's) and every access checked at
//! the owner with the caller's ids.
//!
//! Rooms: [`client`] is the mount (a FUSE file system served by threads of the node service),
//! [`server`] the owning side (this node's files, for the other nodes' mounts and for its own).
//! Between nodes a request travels on a file connection ([`mosix_core::proto::mfs`]), sealed
//! like every link connection. See `docs/mfs.md`.

pub mod client;
pub mod server;
pub mod trap;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mosix_core::NodeId;
use mosix_core::config::MfsTunables;
use nix::mount::MntFlags;
use tracing::{info, warn};

pub use client::{Locate, MfsClient, Whereabouts};
pub use server::Server;

/// A running MFS: the owning side, and the mount while it is mounted.
pub struct Mfs {
    /// The owning side (also for file connections from other nodes).
    pub server: Arc<Server>,
    /// The mount's counters.
    pub stats: Arc<client::ClientStats>,
    mount: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl std::fmt::Debug for Mfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mfs")
            .field("mount", &self.mount)
            .field("mounted", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

/// Why MFS could not start.
#[derive(Debug, thiserror::Error)]
pub enum MfsError {
    /// The mount point could not be made.
    #[error("cannot make the mount point {0}: {1}")]
    MountPoint(PathBuf, std::io::Error),
    /// The kernel refused the mount.
    #[error("cannot mount MFS at {0}: {1}")]
    Mount(PathBuf, std::io::Error),
}

/// Whether a FUSE file system is mounted at `p` (one a service before us left behind).
pub(crate) fn fuse_mounted_at(p: &Path) -> bool {
    procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .is_ok_and(|m| {
            m.into_iter()
                .any(|x| x.mount_point == p && x.fs_type.starts_with("fuse"))
        })
}

impl Mfs {
    /// Mounts MFS for node `me` and readies the owning side.
    pub fn start(
        me: NodeId,
        t: &MfsTunables,
        link: crate::link::SharedContext,
        locate: Locate,
    ) -> Result<Mfs, MfsError> {
        let server = Arc::new(Server::new(t.trust_root));
        let mount = t.mount.clone();
        if fuse_mounted_at(&mount) {
            // A service that ended without unmounting (killed) leaves a mount whose every
            // access fails with ENOTCONN.
            if let Err(e) = nix::mount::umount2(&mount, MntFlags::MNT_DETACH) {
                warn!(
                    "MFS: cannot remove the old mount at {}: {e}",
                    mount.display()
                );
            }
        }
        std::fs::create_dir_all(&mount).map_err(|e| MfsError::MountPoint(mount.clone(), e))?;
        let client = MfsClient::new(me, mount.clone(), link, Arc::clone(&server), locate);
        let stats = Arc::clone(&client.stats);
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("mfs".into()),
            fuser::MountOption::Subtype("mosix".into()),
            // Set-id programs and devices of other nodes give nothing here.
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoDev,
            fuser::MountOption::RW,
        ];
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(t.threads);
        config.clone_fd = true;
        let session = fuser::Session::new(client, &mount, &config)
            .and_then(fuser::Session::spawn)
            .map_err(|e| MfsError::Mount(mount.clone(), e))?;
        info!("MFS mounted at {}", mount.display());
        Ok(Mfs {
            server,
            stats,
            mount,
            session: Some(session),
        })
    }

    /// Where it is mounted.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Unmounts (also done when it is dropped). The mount is detached at once even if files
    /// below it are still open or a process has its directory there (those then fail with
    /// `ENOTCONN` when the service is gone): a plain unmount would refuse, and the service
    /// would stop with its mount left behind.
    pub fn stop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = nix::mount::umount2(&self.mount, MntFlags::MNT_DETACH) {
                warn!("MFS: unmounting {}: {e}", self.mount.display());
            }
            // The session's threads end when the kernel closes the connection; they are not
            // waited for (one may be in a request to a node that does not answer).
            drop(s);
        }
    }
}

impl Drop for Mfs {
    fn drop(&mut self) {
        self.stop();
    }
}
