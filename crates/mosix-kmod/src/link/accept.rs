//! The listening side of the link: each connection is admitted (its source must be an address
//! of the map, and a slot free for it), authenticated (challenge–response, the claimed node
//! number checked against the source address through the map), and what it brings is handed
//! up as an [`Inbound`].
//!
//! Admission happens before anything is read. A connection from an address that is not in the
//! map is closed at once (with a reset, so it leaves no state behind). A member's connection
//! takes one of [`MAX_PREAUTH`] slots, at most [`MAX_PREAUTH_PER_SOURCE`] per address, and must
//! finish its handshake and say what it is for within [`HANDSHAKE_TIMEOUT`]; then the slot is
//! free again. An authenticated gossip connection takes one of [`MAX_INBOUND`] places and is
//! closed after [`INBOUND_IDLE`] of silence.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::proto::seal::Session;
use mosix_core::proto::{
    FrameError, Handshake, LinkMsg, MAX_HANDSHAKE_FRAME, MAX_LINK_FRAME, ServerHandshake,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::frame::{read_frame, read_sealed, write_frame};
use super::{
    Conn, HANDSHAKE_TIMEOUT, INBOUND_IDLE, Inbound, LinkContext, LinkError, MAX_INBOUND,
    MAX_PREAUTH, MAX_PREAUTH_PER_SOURCE, SharedContext, Throttle, Trouble, held_back, nonce,
    peer_text, snapshot,
};

/// The connections in their handshake: how many in all and from each address.
#[derive(Debug, Default)]
struct Gate {
    inner: Mutex<GateCount>,
}

#[derive(Debug, Default)]
struct GateCount {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// This address has [`MAX_PREAUTH_PER_SOURCE`] connections in their handshake.
    Source,
    /// [`MAX_PREAUTH`] connections are in their handshake.
    Total,
}

/// A slot in the [`Gate`], given back when dropped.
#[derive(Debug)]
struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    fn count(&self) -> std::sync::MutexGuard<'_, GateCount> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let mut c = self.count();
        if c.total >= MAX_PREAUTH {
            return Err(Full::Total);
        }
        let n = c.per_source.entry(ip).or_insert(0);
        if *n >= MAX_PREAUTH_PER_SOURCE {
            return Err(Full::Source);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            gate: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.gate.count();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.ip);
            }
        }
    }
}

/// Closes a connection at once with a reset: no FIN handshake and no TIME_WAIT state left here.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Whether `ip` is an address the map gives some other node (aliases included).
fn is_member(ip: IpAddr, ctx: &LinkContext) -> bool {
    match ip {
        IpAddr::V4(a) => ctx.node_of(a).is_some_and(|n| n != ctx.me),
        IpAddr::V6(_) => false,
    }
}

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
    let gate = Arc::new(Gate::default());
    let places = Arc::new(Semaphore::new(MAX_INBOUND));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accepting a link connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = snapshot(&ctx);
        if !is_member(peer.ip(), &ctx) {
            reset(stream);
            if let Some(n) = throttle.allow(Trouble::NotMember, peer.ip()) {
                warn!(
                    "closed a link connection from {}: not an address of the map{}",
                    peer.ip(),
                    held_back(n)
                );
            }
            continue;
        }
        let slot = match gate.enter(peer.ip()) {
            Ok(s) => s,
            Err(full) => {
                reset(stream);
                let (trouble, why) = match full {
                    Full::Source => (
                        Trouble::SourceBusy,
                        format!("{MAX_PREAUTH_PER_SOURCE} handshakes from it under way"),
                    ),
                    Full::Total => (Trouble::Busy, format!("{MAX_PREAUTH} handshakes under way")),
                };
                if let Some(n) = throttle.allow(trouble, peer.ip()) {
                    warn!(
                        "dropped a link connection from {}: {why}{}",
                        peer.ip(),
                        held_back(n)
                    );
                }
                continue;
            }
        };
        let events = events.clone();
        let throttle = Arc::clone(&throttle);
        let places = Arc::clone(&places);
        tokio::spawn(serve_inbound(
            stream, peer, ctx, events, throttle, slot, places,
        ));
    }
}

async fn serve_inbound<E: From<Inbound>>(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<LinkContext>,
    events: mpsc::Sender<E>,
    throttle: Arc<Throttle>,
    slot: Slot,
    places: Arc<Semaphore>,
) {
    let _ = stream.set_nodelay(true);
    // The handshake and the first frame, which says what the connection is for.
    let opening = async {
        let (node, mut session) = server_handshake(&mut stream, peer, &ctx).await?;
        let mut buf = Vec::new();
        let first: LinkMsg =
            read_sealed(&mut stream, &mut session.opener, MAX_LINK_FRAME, &mut buf).await?;
        first.validate()?;
        Ok::<_, LinkError>((node, session, first, buf))
    };
    let (node, session, first, mut buf) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, opening)
        .await
    {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            if let Some(n) = throttle.allow(Trouble::of_link(&e), peer.ip()) {
                // The error may quote the peer (a refusal's reason): one bounded line.
                let e = peer_text(&e.to_string());
                warn!("refused link connection from {peer}: {e}{}", held_back(n));
            }
            return;
        }
        Err(_) => {
            if let Some(n) = throttle.allow(Trouble::HandshakeTimeout, peer.ip()) {
                warn!(
                    "refused link connection from {peer}: no handshake within {HANDSHAKE_TIMEOUT:?}{}",
                    held_back(n)
                );
            }
            return;
        }
    };
    drop(slot);
    debug!("link from node {node} ({peer}) authenticated");
    let mut opener = match first {
        LinkMsg::Gossip(g) => {
            if events
                .send(Inbound::Gossip { from: node, msg: g }.into())
                .await
                .is_err()
            {
                return;
            }
            session.opener
        }
        LinkMsg::OpenProcess
        | LinkMsg::Rejoin { .. }
        | LinkMsg::OpenFiles { .. }
        | LinkMsg::ListQueue
        | LinkMsg::Ask(_)
        | LinkMsg::Resume { .. } => {
            hand_over(stream, session, node, first, &events).await;
            return;
        }
    };
    let Ok(_place) = places.try_acquire_owned() else {
        if let Some(n) = throttle.allow(Trouble::Busy, peer.ip()) {
            warn!(
                "closing link from node {node} ({peer}): {MAX_INBOUND} gossip connections open{}",
                held_back(n)
            );
        }
        return;
    };
    loop {
        let read = read_sealed::<LinkMsg, _>(&mut stream, &mut opener, MAX_LINK_FRAME, &mut buf);
        let msg = match tokio::time::timeout(INBOUND_IDLE, read).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(FrameError::Closed)) => {
                debug!("link from node {node} ({peer}) closed");
                return;
            }
            Ok(Err(e)) => {
                if let Some(n) = throttle.allow(Trouble::of_frame(&e), peer.ip()) {
                    warn!(
                        "closing link from node {node} ({peer}): {e}{}",
                        held_back(n)
                    );
                }
                return;
            }
            Err(_) => {
                if let Some(n) = throttle.allow(Trouble::Idle, peer.ip()) {
                    debug!(
                        "closing link from node {node} ({peer}): silent for {INBOUND_IDLE:?}{}",
                        held_back(n)
                    );
                }
                return;
            }
        };
        if let Err(e) = msg.validate() {
            if let Some(n) = throttle.allow(Trouble::Malformed, peer.ip()) {
                warn!(
                    "closing link from node {node} ({peer}): {e}{}",
                    held_back(n)
                );
            }
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
            LinkMsg::OpenProcess
            | LinkMsg::Rejoin { .. }
            | LinkMsg::OpenFiles { .. }
            | LinkMsg::ListQueue
            | LinkMsg::Ask(_)
            | LinkMsg::Resume { .. } => {
                if let Some(n) = throttle.allow(Trouble::Claim, peer.ip()) {
                    warn!(
                        "closing link from node {node} ({peer}): a gossip connection asked to carry a process, files or a queue{}",
                        held_back(n)
                    );
                }
                return;
            }
        }
    }
}

/// A process connection leaves the runtime for a thread.
async fn hand_over<E: From<Inbound>>(
    stream: TcpStream,
    session: Session,
    node: NodeId,
    first: LinkMsg,
    events: &mpsc::Sender<E>,
) {
    let stream = match stream.into_std().and_then(|s| {
        s.set_nonblocking(false)?;
        Ok(s)
    }) {
        Ok(s) => Conn::new(s, session),
        Err(e) => {
            warn!("taking the process connection from node {node}: {e}");
            return;
        }
    };
    if let LinkMsg::Resume {
        pid,
        token,
        received,
    } = first
    {
        // A cut process connection comes back: the link resumes it by itself (it may wait
        // for the connection's reader to let go of the old socket: a thread of its own).
        let spawned = std::thread::Builder::new()
            .name("mosix-resume".into())
            .spawn(move || super::channel::offer_resume(node, pid, token, received, stream));
        if let Err(e) = spawned {
            warn!("cannot start a thread to resume a connection of node {node}: {e}");
        }
        return;
    }
    let ev = match first {
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
        LinkMsg::OpenFiles { session } => Inbound::Files {
            from: node,
            session,
            stream,
        },
        LinkMsg::ListQueue => Inbound::ListQueue { from: node, stream },
        LinkMsg::Ask(ask) => Inbound::Ask {
            from: node,
            ask,
            stream,
        },
        _ => Inbound::Process { from: node, stream },
    };
    let _ = events.send(ev.into()).await;
}

/// Checks that a connecting peer may be the node it claims to be.
fn check_claim(node: NodeId, peer: SocketAddr, ctx: &LinkContext) -> Result<(), String> {
    if node == ctx.me {
        return Err(format!(
            "claims to be node {node}, which is this node (two nodes with one number?)"
        ));
    }
    if ctx.secret_for(node).is_none() {
        return Err(format!(
            "claims to be node {node}, which is not in our map nor in a partner's"
        ));
    }
    let IpAddr::V4(src) = peer.ip() else {
        return Err("connects over IPv6; the map has IPv4 addresses only".into());
    };
    if !ctx.addrs_of(node).contains(&src) {
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
) -> Result<(NodeId, Session), LinkError> {
    let mut hs = ServerHandshake::new(ctx.me, nonce()?, ctx.protection);
    let hello = read_frame(stream, MAX_HANDSHAKE_FRAME).await?;
    // The claimed node says which secret keys the connection: the cluster's own, or the
    // partnership's for a partner's node (an unknown node is refused by the claim check).
    let secret = match &hello {
        Handshake::Hello { node, .. } => ctx.secret_for(*node).unwrap_or(&ctx.secret),
        _ => &ctx.secret,
    };
    let challenge = match hs.on_hello(secret, hello, |n| check_claim(n, peer, ctx)) {
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
    match hs.on_proof(secret, proof) {
        Ok((node, welcome, session)) => {
            write_frame(stream, &welcome).await?;
            Ok((node, session))
        }
        Err((e, refusal)) => {
            if let Some(r) = refusal {
                let _ = write_frame(stream, &r).await;
            }
            Err(e.into())
        }
    }
}
