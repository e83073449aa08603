//! The listening side of the link: each connection is authenticated (challenge–response, the
//! claimed node number checked against the source address through the map) and what it brings
//! is handed up as an [`Inbound`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::proto::{
    FrameError, LinkMsg, MAX_HANDSHAKE_FRAME, MAX_LINK_FRAME, ServerHandshake,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::frame::{read_frame, write_frame};
use super::{
    HANDSHAKE_TIMEOUT, Inbound, LinkContext, LinkError, MAX_INBOUND, SharedContext, Throttle,
    nonce, snapshot,
};

/// Accepts link connections until the task is aborted, handing what they bring to `events`
/// (any event type an [`Inbound`] converts into: the service's own).
pub async fn accept_loop<E>(
    listener: TcpListener,
    ctx: SharedContext,
    events: mpsc::Sender<E>,
    throttle: Arc<Throttle>,
) where
    E: From<Inbound> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accepting a link connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if throttle.allow(peer.ip(), "too many connections") {
                warn!("dropping connection from {peer}: {MAX_INBOUND} connections already open");
            }
            continue;
        };
        let ctx = snapshot(&ctx);
        let events = events.clone();
        let throttle = Arc::clone(&throttle);
        tokio::spawn(async move {
            serve_inbound(stream, peer, ctx, events, throttle).await;
            drop(permit);
        });
    }
}

async fn serve_inbound<E: From<Inbound>>(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<LinkContext>,
    events: mpsc::Sender<E>,
    throttle: Arc<Throttle>,
) {
    let _ = stream.set_nodelay(true);
    let node =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, server_handshake(&mut stream, peer, &ctx))
            .await
        {
            Ok(Ok(node)) => node,
            Ok(Err(e)) => {
                let reason = e.to_string();
                if throttle.allow(peer.ip(), &reason) {
                    warn!("refused link connection from {peer}: {reason}");
                }
                return;
            }
            Err(_) => {
                if throttle.allow(peer.ip(), "handshake timed out") {
                    warn!("refused link connection from {peer}: handshake timed out");
                }
                return;
            }
        };
    debug!("link from node {node} ({peer}) authenticated");
    loop {
        match read_frame::<LinkMsg, _>(&mut stream, MAX_LINK_FRAME).await {
            Ok(msg) => {
                if let Err(e) = msg.validate() {
                    warn!("closing link from node {node} ({peer}): {e}");
                    return;
                }
                match msg {
                    LinkMsg::Gossip(g) => {
                        if events
                            .send(Inbound::Gossip { from: node, msg: g }.into())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    LinkMsg::OpenProcess | LinkMsg::Rejoin { .. } => {
                        // A process connection leaves the runtime for a thread.
                        match stream.into_std().and_then(|s| {
                            s.set_nonblocking(false)?;
                            Ok(s)
                        }) {
                            Ok(stream) => {
                                let ev = match msg {
                                    LinkMsg::Rejoin {
                                        pid,
                                        token,
                                        local_pid,
                                    } => Inbound::Rejoin {
                                        from: node,
                                        pid,
                                        token,
                                        local_pid,
                                        stream,
                                    },
                                    _ => Inbound::Process { from: node, stream },
                                };
                                let _ = events.send(ev.into()).await;
                            }
                            Err(e) => warn!("taking the process connection from node {node}: {e}"),
                        }
                        return;
                    }
                }
            }
            Err(FrameError::Closed) => {
                debug!("link from node {node} ({peer}) closed");
                return;
            }
            Err(e) => {
                warn!("closing link from node {node} ({peer}): {e}");
                return;
            }
        }
    }
}

/// Checks that a connecting peer may be the node it claims to be.
fn check_claim(node: NodeId, peer: SocketAddr, ctx: &LinkContext) -> Result<(), String> {
    if node == ctx.me {
        return Err(format!(
            "claims to be node {node}, which is this node (two nodes with one number?)"
        ));
    }
    if !ctx.map.contains(node) {
        return Err(format!("claims to be node {node}, which is not in our map"));
    }
    let IpAddr::V4(src) = peer.ip() else {
        return Err("connects over IPv6; the map has IPv4 addresses only".into());
    };
    if !ctx.map.addrs_of(node).contains(&src) {
        return Err(format!(
            "claims to be node {node}, but connects from {src}, which the map does not give that node"
        ));
    }
    Ok(())
}

async fn server_handshake(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &LinkContext,
) -> Result<NodeId, LinkError> {
    let mut hs = ServerHandshake::new(ctx.me, nonce());
    let hello = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    let challenge = match hs.on_hello(&ctx.secret, hello, |n| check_claim(n, peer, ctx)) {
        Ok(c) => c,
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = write_frame(stream, &r).await;
            }
            return Err(e.into());
        }
    };
    write_frame(stream, &challenge).await?;
    let proof = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    match hs.on_proof(&ctx.secret, proof) {
        Ok((node, welcome)) => {
            write_frame(stream, &welcome).await?;
            Ok(node)
        }
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = write_frame(stream, &r).await;
            }
            Err(e.into())
        }
    }
}
