//! The control socket: where the local tools talk to the service.
//!
//! Every request is handed to the main loop with the caller's uid (from the socket's peer
//! credentials), and the answer is written back. The socket is world-accessible; the main loop
//! refuses changes from anyone but root and the service's own user.

use mosix_core::client::{Request, Response};
use mosix_core::proto::FrameError;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::Event;
use crate::link::{read_frame, write_frame};

/// The largest request (a map for `setpe -W` is at most 1 MiB).
pub const MAX_REQUEST: usize = 2 << 20;

/// Serves the control socket until the task is aborted.
pub async fn serve(listener: UnixListener, events: mpsc::Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, events.clone()));
            }
            Err(e) => {
                warn!("control socket: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: UnixStream, events: mpsc::Sender<Event>) {
    let (uid, pid) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.pid().unwrap_or(0)),
        Err(e) => {
            warn!("control socket: cannot read the caller's credentials: {e}");
            return;
        }
    };
    loop {
        let req = match read_frame::<Request, _>(&mut stream, MAX_REQUEST).await {
            Ok(r) => r,
            Err(FrameError::Closed) => return,
            Err(e) => {
                debug!("control socket: bad request from uid {uid}: {e}");
                let _ =
                    write_frame(&mut stream, &Response::Error(format!("bad request: {e}"))).await;
                return;
            }
        };
        let (tx, rx) = oneshot::channel();
        if events
            .send(Event::Control {
                req,
                uid,
                pid,
                reply: tx,
            })
            .await
            .is_err()
        {
            return;
        }
        let resp = rx
            .await
            .unwrap_or_else(|_| Response::Error("the service is shutting down".into()));
        if write_frame(&mut stream, &resp).await.is_err() {
            return;
        }
    }
}
