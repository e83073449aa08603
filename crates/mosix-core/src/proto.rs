//! The link protocol between node services, and the frame codec the control socket shares.
//!
//! # Frames
//!
//! Every message travels in a frame with an 8-byte header:
//!
//! ```text
//! 0..2   magic "MX"
//! 2      protocol version (PROTOCOL_VERSION)
//! 3      reserved, 0
//! 4..8   payload length, little-endian u32, at most the limit of the channel
//! 8..    payload: the message, serialised with postcard (serde, varint-compact)
//! ```
//!
//! The reader checks the header — magic, version, reserved byte, and the length against a named
//! limit — *before* it allocates the payload buffer, so a peer cannot make us allocate more than
//! the limit. The payload must decode to exactly one message with no bytes left over; counts
//! inside a message (window entries, …) are checked again after decoding.
//!
//! # Authentication
//!
//! A link connection starts with a challenge–response handshake proving that both ends hold the
//! cluster secret (HMAC-SHA256 over both node numbers, both random nonces and the link's
//! [`Protection`], with a different label for each direction, so neither side's proof can be
//! replayed as the other's):
//!
//! ```text
//! client → server   Hello     { node, nonce_c, protection }
//! server → client   Challenge { node, nonce_s, proof_s, protection }
//!                             proof_s = HMAC(secret, "mosix-link-v2 server" | mode | c | s | nonce_c | nonce_s)
//! client → server   Proof     { proof_c = HMAC(secret, "mosix-link-v2 client" | mode | c | s | nonce_c | nonce_s) }
//! server → client   Welcome
//! ```
//!
//! Both ends must have the same protection (`[link] encrypt`); a mismatch is refused with a
//! message naming the setting. The handshake frames travel in clear. Every frame after it, and
//! every raw page run, is a sealed record of [`seal`]: authenticated with a key of the
//! connection and direction derived from the handshake, counted so that a replayed, reordered,
//! dropped or injected record fails, and encrypted when `[link] encrypt = true`.
//!
//! This file is long (some 870 lines before its tests) on purpose: most of it is the table of
//! what travels — `LinkMsg`, `ProcMsg` and their parts, each with its bound and its check —
//! which reads best as one list beside the codec that carries it.

pub mod mfs;
pub mod replay;
pub mod seal;

use std::io::{Read, Write};

use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::Secret;
use crate::gossip::{GossipMsg, MAX_WINDOW};
use crate::load::NodeInfo;
use crate::node::NodeId;
pub use seal::{Protection, Session, TAG_LEN, Transcript};

/// The frame magic.
pub const MAGIC: [u8; 2] = *b"MX";
/// The protocol version this build speaks. Raise it when a message changes (3: the DFSA
/// messages of path calls run at the remote's node; 5: [`LinkMsg::ListQueue`]; 6: process
/// connections that survive a cut, [`LinkMsg::Resume`] and [`ProcMsg::Ack`]; 7: [`LinkMsg::Ask`];
/// 8: [`crate::load::Figures::own`], `live` in [`ProcMsg::ComeHome`] and [`ProcMsg::MoveTo`]; 9:
/// [`crate::image::ImageHeader::native_io`]; 10: `held` in [`ProcMsg::Twin`], the held files of
/// MFS); the frame fixtures (`tests/fixtures/frames/*.hex`) carry it in their third byte.
pub const PROTOCOL_VERSION: u8 = 10;
/// The size of a frame header.
pub const HEADER_LEN: usize = 8;

/// The largest handshake frame.
pub const MAX_HANDSHAKE_FRAME: usize = 512;
/// The largest frame on an authenticated link connection.
pub const MAX_LINK_FRAME: usize = 1 << 20;
/// The largest frame on the local control socket (a full view of a large cluster fits).
pub const MAX_CONTROL_FRAME: usize = 16 << 20;

/// The length of a handshake nonce and of a proof.
pub const NONCE_LEN: usize = 32;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The stream ended cleanly between frames.
    #[error("connection closed")]
    Closed,
    /// The first two bytes are not "MX".
    #[error("bad magic {0:02x?}: not a MOSIX peer")]
    BadMagic([u8; 2]),
    /// A protocol version we do not speak.
    #[error("protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    BadVersion(u8),
    /// The reserved byte is not zero.
    #[error("reserved header byte is {0}, not 0")]
    Reserved(u8),
    /// The announced length is over the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit of the channel.
        limit: usize,
    },
    /// The payload does not decode.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The payload decodes but leaves bytes over.
    #[error("{0} bytes left over after the message")]
    Trailing(usize),
    /// The message decodes but breaks a rule (too many entries, …).
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A sealed record does not open: forged, replayed, reordered, dropped, corrupted, or
    /// sealed under another key. Carries the record's number on the connection.
    #[error(
        "record {0} failed authentication (forged, replayed, reordered or corrupted on the way)"
    )]
    Unauthentic(u64),
    /// The record counter of a connection ran out (2^64 records).
    #[error("record counter exhausted")]
    Exhausted,
    /// Sealing a record failed (a length beyond the AEAD's limits).
    #[error("cannot seal the record")]
    Sealing,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serialises a message into a complete frame.
pub fn encode<M: Serialize>(msg: &M) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    // postcard writes into any Extend; serialising our own types cannot fail.
    let mut out = postcard::to_extend(msg, std::mem::take(&mut out)).unwrap_or_default();
    let len = u32::try_from(out.len() - HEADER_LEN).unwrap_or(u32::MAX);
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = PROTOCOL_VERSION;
    out[3] = 0;
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out
}

/// Checks a frame header and returns the payload length it announces.
pub fn decode_header(h: &[u8; HEADER_LEN], limit: usize) -> Result<usize, FrameError> {
    if h[0..2] != MAGIC {
        return Err(FrameError::BadMagic([h[0], h[1]]));
    }
    if h[2] != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion(h[2]));
    }
    if h[3] != 0 {
        return Err(FrameError::Reserved(h[3]));
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > limit {
        return Err(FrameError::TooLong { len, limit });
    }
    Ok(len)
}

/// Decodes a payload into exactly one message.
pub fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<M, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<M>(payload)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// Decodes one complete frame held in memory.
pub fn decode_frame<M: DeserializeOwned>(frame: &[u8], limit: usize) -> Result<M, FrameError> {
    let Some((h, payload)) = frame.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Truncated);
    };
    let len = decode_header(h, limit)?;
    if payload.len() < len {
        return Err(FrameError::Truncated);
    }
    if payload.len() > len {
        return Err(FrameError::Trailing(payload.len() - len));
    }
    decode_payload(payload)
}

/// Reads one frame from a blocking stream.
pub fn read_frame<M: DeserializeOwned, R: Read>(r: &mut R, limit: usize) -> Result<M, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    read_full(r, &mut h, true)?;
    let len = decode_header(&h, limit)?;
    let mut payload = vec![0u8; len];
    read_full(r, &mut payload, false)?;
    decode_payload(&payload)
}

pub(crate) fn read_full<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    at_boundary: bool,
) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_boundary => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// Writes one frame to a blocking stream.
pub fn write_frame<M: Serialize, W: Write>(w: &mut W, msg: &M) -> Result<(), FrameError> {
    w.write_all(&encode(msg))?;
    w.flush()?;
    Ok(())
}

/// The handshake of a link connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    /// The connecting side introduces itself.
    Hello {
        /// The client's node number.
        node: NodeId,
        /// The client's random nonce.
        nonce: [u8; NONCE_LEN],
        /// The protection the client's `[link] encrypt` asks for.
        protection: Protection,
    },
    /// The accepting side proves it holds the secret and challenges the client.
    Challenge {
        /// The server's node number.
        node: NodeId,
        /// The server's random nonce.
        nonce: [u8; NONCE_LEN],
        /// The server's proof.
        proof: [u8; NONCE_LEN],
        /// The server's protection (the same as the client's, or it would have refused).
        protection: Protection,
    },
    /// The client's proof.
    Proof {
        /// The client's proof.
        proof: [u8; NONCE_LEN],
    },
    /// The server accepted the client.
    Welcome,
    /// One side refuses the other and says why before closing.
    Refuse {
        /// The reason, for the other side's log.
        reason: String,
    },
}

/// Which side of the handshake a proof is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepting side.
    Server,
    /// The connecting side.
    Client,
}

impl Transcript {
    /// The proof of `side` for this handshake.
    pub fn proof(&self, secret: &Secret, side: Side) -> [u8; NONCE_LEN] {
        self.mac(secret, side).finalize().into_bytes().into()
    }

    /// Checks a proof of `side` in constant time.
    pub fn verify(&self, secret: &Secret, side: Side, claimed: &[u8; NONCE_LEN]) -> bool {
        self.mac(secret, side).verify_slice(claimed).is_ok()
    }

    fn mac(&self, secret: &Secret, side: Side) -> Hmac<Sha256> {
        // HMAC hashes keys longer than a block and pads shorter ones: every length is accepted.
        #[allow(clippy::expect_used)]
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes keys of any length");
        let label: &[u8] = match side {
            Side::Server => b"mosix-link-v2 server",
            Side::Client => b"mosix-link-v2 client",
        };
        mac.update(label);
        mac.update(&[self.protection as u8]);
        mac.update(&self.client.get().to_le_bytes());
        mac.update(&self.server.get().to_le_bytes());
        mac.update(&self.nonce_c);
        mac.update(&self.nonce_s);
        mac
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The other side does not hold our secret.
    #[error("wrong cluster secret")]
    WrongSecret,
    /// The two ends protect the link differently (`[link] encrypt` differs).
    #[error(
        "node {peer} has {}, this node {}: set the same on every node",
        theirs.setting(),
        ours.setting()
    )]
    Protection {
        /// The other node.
        peer: NodeId,
        /// Its protection.
        theirs: Protection,
        /// Ours.
        ours: Protection,
    },
    /// The other side refused us, and said why.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// A message out of order, or a claim we do not accept.
    #[error("{0}")]
    Protocol(String),
}

/// The most characters of a peer's refusal reason repeated in an error.
const PEER_TEXT_CHARS: usize = 200;

/// A peer's text (a refusal reason) as it may go into this node's log: on one line, control
/// characters (line breaks, terminal escapes) escaped, at most [`PEER_TEXT_CHARS`] characters.
/// Before the handshake ends the peer may be anyone.
fn peer_text(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == PEER_TEXT_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Refuses a peer whose protection differs from ours (`me` is this node): the error, and the
/// refusal that tells the peer which setting to change.
fn same_protection(
    me: NodeId,
    ours: Protection,
    peer: NodeId,
    theirs: Protection,
) -> Result<(), (HandshakeError, Option<Handshake>)> {
    if theirs == ours {
        return Ok(());
    }
    Err((
        HandshakeError::Protection { peer, theirs, ours },
        Some(Handshake::Refuse {
            reason: format!(
                "node {me} has {}, the connecting node {}: set the same on every node",
                ours.setting(),
                theirs.setting()
            ),
        }),
    ))
}

/// The connecting side of the handshake, as a state machine: [`ClientHandshake::hello`] gives
/// the first message, [`ClientHandshake::on_challenge`] the proof to send back (or the refusal
/// to send before closing), [`ClientHandshake::on_verdict`] the outcome and, on success, the
/// connection's [`Session`]. The async link and the blocking migration connections drive the
/// same code.
#[derive(Debug)]
pub struct ClientHandshake {
    me: NodeId,
    to: NodeId,
    nonce_c: [u8; NONCE_LEN],
    protection: Protection,
    session: Option<Session>,
}

impl ClientHandshake {
    /// Node `me` connects to node `to`, with a fresh random nonce and its link protection.
    pub fn new(me: NodeId, to: NodeId, nonce_c: [u8; NONCE_LEN], protection: Protection) -> Self {
        ClientHandshake {
            me,
            to,
            nonce_c,
            protection,
            session: None,
        }
    }

    /// The first message.
    pub fn hello(&self) -> Handshake {
        Handshake::Hello {
            node: self.me,
            nonce: self.nonce_c,
            protection: self.protection,
        }
    }

    /// Checks the server's challenge. `Ok` carries the proof to send; `Err` carries the error and
    /// the refusal to send (if any) before closing.
    pub fn on_challenge(
        &mut self,
        secret: &Secret,
        msg: Handshake,
    ) -> Result<Handshake, (HandshakeError, Option<Handshake>)> {
        match msg {
            Handshake::Challenge {
                node,
                nonce,
                proof: p,
                protection,
            } => {
                if node != self.to {
                    let reason = format!(
                        "answered as node {node} at the address of node {}: the maps differ",
                        self.to
                    );
                    return Err((
                        HandshakeError::Protocol(reason.clone()),
                        Some(Handshake::Refuse { reason }),
                    ));
                }
                same_protection(self.me, self.protection, node, protection)?;
                let t = Transcript {
                    client: self.me,
                    server: self.to,
                    nonce_c: self.nonce_c,
                    nonce_s: nonce,
                    protection,
                };
                if !t.verify(secret, Side::Server, &p) {
                    return Err((
                        HandshakeError::WrongSecret,
                        Some(Handshake::Refuse {
                            reason: "wrong cluster secret".into(),
                        }),
                    ));
                }
                self.session = Some(t.session(secret, Side::Client));
                Ok(Handshake::Proof {
                    proof: t.proof(secret, Side::Client),
                })
            }
            Handshake::Refuse { reason } => {
                Err((HandshakeError::Refused(peer_text(&reason)), None))
            }
            _ => Err((
                HandshakeError::Protocol("expected a Challenge after Hello".into()),
                None,
            )),
        }
    }

    /// The server's last word; on a Welcome, the connection's session.
    pub fn on_verdict(self, msg: Handshake) -> Result<Session, HandshakeError> {
        match (msg, self.session) {
            (Handshake::Welcome, Some(session)) => Ok(session),
            (Handshake::Welcome, None) => Err(HandshakeError::Protocol(
                "Welcome before the Challenge was answered".into(),
            )),
            (Handshake::Refuse { reason }, _) => Err(HandshakeError::Refused(peer_text(&reason))),
            _ => Err(HandshakeError::Protocol("expected Welcome".into())),
        }
    }
}

/// The accepting side of the handshake, as a state machine.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    me: NodeId,
    nonce_s: [u8; NONCE_LEN],
    protection: Protection,
    client: Option<(NodeId, [u8; NONCE_LEN])>,
}

impl ServerHandshake {
    /// Node `me` accepts a connection, with a fresh random nonce and its link protection.
    pub fn new(me: NodeId, nonce_s: [u8; NONCE_LEN], protection: Protection) -> Self {
        ServerHandshake {
            me,
            nonce_s,
            protection,
            client: None,
        }
    }

    /// Takes the client's Hello; `check` decides whether the claimed node may connect (from its
    /// address). `Ok` carries the challenge to send; `Err` the error and the refusal to send.
    pub fn on_hello(
        &mut self,
        secret: &Secret,
        msg: Handshake,
        check: impl FnOnce(NodeId) -> Result<(), String>,
    ) -> Result<Handshake, (HandshakeError, Option<Handshake>)> {
        let Handshake::Hello {
            node,
            nonce,
            protection,
        } = msg
        else {
            return Err((
                HandshakeError::Protocol("the first message is not a Hello".into()),
                None,
            ));
        };
        if let Err(reason) = check(node) {
            return Err((
                HandshakeError::Protocol(reason.clone()),
                Some(Handshake::Refuse { reason }),
            ));
        }
        same_protection(self.me, self.protection, node, protection)?;
        self.client = Some((node, nonce));
        let t = self.transcript(node, nonce);
        Ok(Handshake::Challenge {
            node: self.me,
            nonce: self.nonce_s,
            proof: t.proof(secret, Side::Server),
            protection: self.protection,
        })
    }

    fn transcript(&self, client: NodeId, nonce_c: [u8; NONCE_LEN]) -> Transcript {
        Transcript {
            client,
            server: self.me,
            nonce_c,
            nonce_s: self.nonce_s,
            protection: self.protection,
        }
    }

    /// Takes the client's proof. `Ok` carries the client's node, the Welcome to send and the
    /// connection's session.
    pub fn on_proof(
        &self,
        secret: &Secret,
        msg: Handshake,
    ) -> Result<(NodeId, Handshake, Session), (HandshakeError, Option<Handshake>)> {
        let Some((node, nonce_c)) = self.client else {
            return Err((HandshakeError::Protocol("Proof before Hello".into()), None));
        };
        match msg {
            Handshake::Proof { proof: p } => {
                let t = self.transcript(node, nonce_c);
                if t.verify(secret, Side::Client, &p) {
                    Ok((node, Handshake::Welcome, t.session(secret, Side::Server)))
                } else {
                    Err((
                        HandshakeError::Protocol(format!(
                            "node {node} does not hold the cluster secret (wrong proof)"
                        )),
                        Some(Handshake::Refuse {
                            reason: "wrong cluster secret".into(),
                        }),
                    ))
                }
            }
            Handshake::Refuse { reason } => Err((
                HandshakeError::Protocol(format!(
                    "node {node} gave up the handshake: {}",
                    peer_text(&reason)
                )),
                None,
            )),
            _ => Err((
                HandshakeError::Protocol("expected a Proof after the Challenge".into()),
                None,
            )),
        }
    }
}

/// Why a node sends a guest home ([`ProcMsg::Expelled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expulsion {
    /// `mosctl expel`, or the node is stopping.
    Expel,
    /// A process of a better priority wants the node (partners(5)).
    Displaced,
    /// The node was closed to the grid (`mosctl closegrid`).
    ClosedGrid,
}

impl std::fmt::Display for Expulsion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expulsion::Expel => "mosctl expel",
            Expulsion::Displaced => "a process of a better priority wants the node",
            Expulsion::ClosedGrid => "the node was closed to the grid",
        })
    }
}

/// A message on an authenticated link connection: the first one decides what the connection is
/// for. A gossip connection carries [`LinkMsg::Gossip`] frames from then on; after
/// [`LinkMsg::OpenProcess`] the connection carries one migrating process: [`ProcMsg`] frames (and
/// raw page runs after [`ProcMsg::Pages`]), with the larger [`MAX_PROC_FRAME`] limit. Every
/// frame after the handshake is sealed ([`seal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkMsg {
    /// A window of load information.
    Gossip(GossipMsg<NodeInfo>),
    /// The connection will carry a migrating process.
    OpenProcess,
    /// The connection will carry a process that moved from one remote node straight to this
    /// node's sender: the sender rejoins the process's home, which asked for the move and
    /// gave the token. [`ProcMsg`] frames follow, as after [`LinkMsg::OpenProcess`].
    Rejoin {
        /// The process's pid at home (the receiver).
        pid: u32,
        /// The token home sent with [`ProcMsg::MoveTo`].
        token: u64,
        /// Its pid on the sender.
        local_pid: u32,
    },
    /// The connection will carry file requests of the MOSIX File System ([`mfs`]): requests
    /// from the connecting node, answers from this one, one at a time.
    OpenFiles {
        /// The asking node service's session (random at its start): the files one session
        /// opened are closed when its last connection ends, or when a new session of the same
        /// node appears.
        session: u64,
    },
    /// The sender asks for this node's queue (`mosq`, cluster-wide): one sealed
    /// [`QueueListing`] frame answers, then the connection ends. Answered to nodes of this
    /// node's own cluster only.
    ListQueue,
    /// The sender asks something of this node's own processes (`mps -A`, `moskillall`): one
    /// sealed [`Answer`] frame answers, then the connection ends. Answered to nodes of this
    /// node's own cluster only.
    Ask(Ask),
    /// The connection replaces a process connection that was cut: the remote of process `pid`
    /// (its home pid) reconnects to its home, naming the cut connection by its resume token
    /// (both ends derive it from that connection's keys, [`Session::token`]). Home answers
    /// [`ProcMsg::Resumed`] (then each end resends what the other has not received) or
    /// [`ProcMsg::NotResumed`]; [`ProcMsg`] frames follow.
    Resume {
        /// The process's pid at home (for the logs; the token decides).
        pid: u32,
        /// The cut connection's resume token.
        token: [u8; 16],
        /// How many counted messages the remote received on it.
        received: u64,
    },
}

/// The largest [`QueueListing`] or [`Answer`] frame.
pub const MAX_LISTING_FRAME: usize = 8 << 20;

/// The most processes an [`Answer::Procs`] lists (a node's share of a cluster-wide `mps`).
pub const MAX_LISTED_PROCS: usize = 16_384;

/// What one node asks another of the processes whose home the other is ([`LinkMsg::Ask`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    /// Its MOSIX processes, wherever they run (`mps -A`).
    Procs,
    /// Send signal `sig` to each of its MOSIX processes owned by user `uid` (`moskillall`).
    /// The asking node has checked that its caller is root or `uid`.
    Signal {
        /// The owner.
        uid: u32,
        /// The signal (1..=64).
        sig: i32,
    },
}

/// The answer to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Its processes, their commands cut to [`MAX_QUEUE_COMMAND`] bytes.
    Procs(
        #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_LISTED_PROCS>")]
        Vec<crate::procs::ProcRow>,
    ),
    /// How many processes the signal was sent to.
    Signalled(u32),
    /// Not answered, and why.
    Refused(String),
}

impl Answer {
    /// Checks the counts and lengths a decoded answer may carry.
    pub fn validate(&self) -> Result<(), FrameError> {
        let long = |s: &str| s.len() > MAX_QUEUE_COMMAND;
        match self {
            Answer::Procs(rows) if rows.len() > MAX_LISTED_PROCS => Err(FrameError::Invalid(
                format!("{} processes exceed {MAX_LISTED_PROCS}", rows.len()),
            )),
            Answer::Procs(rows) => match rows.iter().find(|r| {
                long(&r.command)
                    || r.cantmove.as_deref().is_some_and(long)
                    || r.frozen.as_deref().is_some_and(long)
            }) {
                Some(r) => Err(FrameError::Invalid(format!(
                    "process {} is described in more than {MAX_QUEUE_COMMAND} bytes",
                    r.pid
                ))),
                None => Ok(()),
            },
            Answer::Refused(why) if long(why) => Err(FrameError::Invalid(
                "a refusal longer than its limit".into(),
            )),
            _ => Ok(()),
        }
    }
}
/// The longest command line a queued job shows (bytes).
pub const MAX_QUEUE_COMMAND: usize = 1024;

/// A node's queue, the answer to [`LinkMsg::ListQueue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueListing {
    /// Its jobs, first first.
    #[serde(deserialize_with = "crate::bounded::seq::<_, _, { crate::queue::MAX_QUEUED }>")]
    pub jobs: Vec<crate::queue::QueueRow>,
}

impl QueueListing {
    /// Checks the counts and lengths a decoded listing may carry.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.jobs.len() > crate::queue::MAX_QUEUED {
            return Err(FrameError::Invalid(format!(
                "a queue of {} jobs exceeds {}",
                self.jobs.len(),
                crate::queue::MAX_QUEUED
            )));
        }
        if let Some(j) = self
            .jobs
            .iter()
            .find(|j| j.command.len() > MAX_QUEUE_COMMAND || j.waits_for.len() > MAX_QUEUE_COMMAND)
        {
            return Err(FrameError::Invalid(format!(
                "queued job {} is described in more than {MAX_QUEUE_COMMAND} bytes",
                j.pid
            )));
        }
        Ok(())
    }
}

impl LinkMsg {
    /// Checks the counts a decoded message may carry.
    pub fn validate(&self) -> Result<(), FrameError> {
        match self {
            LinkMsg::Gossip(g) => {
                if g.entries.len() > MAX_WINDOW {
                    return Err(FrameError::Invalid(format!(
                        "gossip window of {} entries exceeds {MAX_WINDOW}",
                        g.entries.len()
                    )));
                }
                Ok(())
            }
            LinkMsg::Ask(Ask::Signal { sig, .. }) if !(1..=64).contains(sig) => {
                Err(FrameError::Invalid(format!("signal {sig} is not a signal")))
            }
            LinkMsg::OpenProcess
            | LinkMsg::Rejoin { .. }
            | LinkMsg::OpenFiles { .. }
            | LinkMsg::ListQueue
            | LinkMsg::Ask(_)
            | LinkMsg::Resume { .. } => Ok(()),
        }
    }
}

/// Decodes and validates a link frame.
pub fn decode_link(frame: &[u8]) -> Result<LinkMsg, FrameError> {
    let m: LinkMsg = decode_frame(frame, MAX_LINK_FRAME)?;
    m.validate()?;
    Ok(m)
}

/// The largest frame on a process connection (an image header of a process with very many
/// memory areas; a forwarded call with its largest buffer).
pub const MAX_PROC_FRAME: usize = 16 << 20;
/// The most undelivered signals a [`ProcMsg::Moved`] carries (a frozen process holds one of
/// each standard signal and a bounded queue of real-time ones).
pub const MAX_MOVED_SIGNALS: usize = 4096;
/// The most buffers one forwarded call or reply carries.
pub const MAX_CALL_BUFS: usize = 16;

/// A forwarded system call, remote to home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The call number.
    pub nr: u32,
    /// The six arguments as the process passed them (pointers are the remote's).
    pub args: [u64; 6],
    /// The input buffers: (argument index, contents). Paths travel without their NUL.
    #[serde(with = "byte_bufs")]
    pub bufs: Vec<(u8, Vec<u8>)>,
    /// On a `read`: how many bytes more than asked home may read ahead, and on a `write`
    /// (non-zero): a question whether the descriptor may be written behind; see [`Reply::io`].
    /// [`WRITTEN_BEHIND`] on a `write` of bytes written behind (the program was told they are
    /// written). 0 on every other call.
    pub ahead: u32,
}

/// Call buffers as byte strings: serde's default for `Vec<u8>` is a sequence of `u8`s, one
/// serializer call per byte (some 300 MB/s); as bytes they are one copy.
mod byte_bufs {
    use serde::de::Deserializer;
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(v: &[(u8, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(i, b)| (*i, serde_bytes::Bytes::new(b))))
    }

    /// Keeps at most one buffer over [`super::MAX_CALL_BUFS`] (validation refuses it): an empty
    /// buffer is 2 bytes on the wire and 32 in memory.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u8, Vec<u8>)>, D::Error> {
        let v: Vec<(u8, serde_bytes::ByteBuf)> =
            crate::bounded::seq::<_, _, { super::MAX_CALL_BUFS }>(d)?;
        Ok(v.into_iter().map(|(i, b)| (i, b.into_vec())).collect())
    }
}

/// The result of a forwarded call, home to remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The return value, or a negative errno.
    pub ret: i64,
    /// Output buffers to write back: (argument index, contents). After a read with
    /// [`Call::ahead`], the buffer holds the bytes read ahead after the `ret` asked for.
    #[serde(with = "byte_bufs")]
    pub outs: Vec<(u8, Vec<u8>)>,
    /// The answer to [`Call::ahead`]: [`IO_ANSWERED`], [`IO_STREAM`], [`IO_EOF`].
    pub io: u8,
    /// With [`IO_STREAM`] after a write: how many more bytes may be written behind on the
    /// descriptor — the room under the process's `RLIMIT_FSIZE` from its offset, and the space
    /// its file system has for the process, less a margin. A write that does not fit goes home
    /// at once, so the kernel's answer (a short write, `EFBIG` and `SIGXFSZ`, `ENOSPC`) comes
    /// at the call where it would come natively.
    pub room: u64,
    /// With [`IO_ANSWERED`]: which file the descriptor is (its device and inode, folded into
    /// one number; 0 unknown), so that the remote can tell two descriptors of one file from two
    /// files: a write through one drops what was read ahead through the other.
    pub file: u64,
}

/// [`Call::ahead`] of a `write` that carries bytes written behind: the program was told they
/// are written, so home writes them all (finishing a short write) or says what stopped it;
/// a write the program waits for gets the kernel's answer as it is.
pub const WRITTEN_BEHIND: u32 = u32::MAX;

/// [`Reply::io`]: home answers a read-ahead or write-behind question.
pub const IO_ANSWERED: u8 = 1;
/// [`Reply::io`]: the descriptor is a regular file whose open file description no other
/// descriptor of the process shares: it may be read ahead and written behind.
pub const IO_STREAM: u8 = 2;
/// [`Reply::io`]: the read-ahead stopped at the end of the file.
pub const IO_EOF: u8 = 4;

/// A message on a process connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProcMsg {
    /// The image of a process coming (to a remote, or home); page runs follow.
    Image(Box<crate::image::ImageHeader>),
    /// `len` raw bytes of memory area `vma` at `offset` follow this frame.
    Pages {
        /// Index of the area in the image.
        vma: u32,
        /// Offset in the area.
        offset: u64,
        /// Bytes that follow.
        len: u32,
    },
    /// All pages sent (of the image, or of one round of a live move).
    End,
    /// The first message of a live move: the process's image as it was when its memory
    /// started to be sent, while it goes on running at the source. The destination prepares
    /// the areas and takes rounds of page runs ([`ProcMsg::Round`]) into them; the final
    /// [`ProcMsg::Image`] follows, with what changed since (areas kept by
    /// [`crate::image::kept_areas`] keep their pages).
    Precopy(Box<crate::image::ImageHeader>),
    /// A round of a live move: `bytes` of page runs follow, then [`ProcMsg::End`].
    Round {
        /// Bytes of the runs.
        bytes: u64,
    },
    /// The process runs at the destination, as `pid` there.
    Started {
        /// Its pid at the destination.
        pid: u32,
    },
    /// The receiving side did not take the process (a destination, home taking it back, or home
    /// turning down a rejoin); it stays where it was. What kind of failure, and why.
    Refused {
        /// The kind and the reason.
        failure: crate::moves::MoveFailure,
    },
    /// Remote to home: a forwarded system call.
    Call(Call),
    /// Home to remote: its result.
    Reply(Reply),
    /// Home to remote: deliver a signal (sent to the home pid).
    Signal {
        /// The signal.
        sig: i32,
    },
    /// Home to remote: a stop signal (`SIGTSTP`, `SIGTTIN`, `SIGTTOU`) for a process whose
    /// process group at home is orphaned: the kernel discards such a signal when its action is
    /// the default (and an ignored one is ignored anyway), so the remote delivers it only if the
    /// process catches it — the remote's group is not orphaned, and would stop.
    OrphanedStop {
        /// The signal.
        sig: i32,
    },
    /// Home to remote: come home; `live`: sending its memory while it runs whatever its size
    /// (`migrate PID home --live`).
    ComeHome {
        /// Asked live.
        live: bool,
    },
    /// Home to remote: the deputy is gone; end the process.
    Kill,
    /// Remote to home: the process exits with `status`.
    Exit {
        /// The exit status.
        status: i32,
    },
    /// Remote to home: the process was killed by a signal.
    Died {
        /// The signal.
        sig: i32,
        /// Whether it dumped core.
        core: bool,
    },
    /// Remote to home, every second: what `mps` shows for it.
    Stats {
        /// User CPU time, ms.
        utime_ms: u64,
        /// System CPU time, ms.
        stime_ms: u64,
        /// The state letter (`R`, `S`, ...).
        state: u8,
        /// Resident memory, bytes.
        rss: u64,
    },
    /// Remote to home: the node no longer keeps the process; home takes it back (and may
    /// freeze it if it has no room).
    Expelled {
        /// Why.
        why: Expulsion,
    },
    /// Remote to home: the balancer of the node the process runs on wants it to run on `to`
    /// instead (home itself, or another node: a direct move). Home decides: a locked process
    /// stays.
    Leave {
        /// Where it should go.
        to: NodeId,
    },
    /// Home to remote: move on to `node` directly (`migrate PID NODE` of a process that is
    /// away). The destination rejoins home with `token`; home holds the process's signals
    /// until the move ends with [`ProcMsg::Moved`] or [`ProcMsg::MoveFailed`].
    MoveTo {
        /// The destination.
        node: NodeId,
        /// What the destination shows home ([`LinkMsg::Rejoin`]).
        token: u64,
        /// Sending its memory while it runs whatever its size (`migrate PID NODE --live`).
        live: bool,
    },
    /// Remote to home: the process runs at the destination of [`ProcMsg::MoveTo`]; this
    /// connection ends. The signals are those it could no longer take here.
    Moved {
        /// Undelivered signals (at most [`MAX_MOVED_SIGNALS`]).
        #[serde(deserialize_with = "crate::bounded::seq::<_, _, MAX_MOVED_SIGNALS>")]
        signals: Vec<i32>,
    },
    /// Remote to home: the move asked by [`ProcMsg::MoveTo`] failed; the process goes on here.
    MoveFailed {
        /// What kind of failure, and why.
        failure: crate::moves::MoveFailure,
    },
    /// Home to the destination of a direct move: home takes this connection as the process's
    /// (it becomes the one home listens to once the source reports [`ProcMsg::Moved`]).
    Rejoined,
    /// Remote to home: a write behind on `fd` failed with `errno`, and the program can no
    /// longer hear it (it exits, goes home, or the descriptor is closed or replaced without a
    /// call that could report it): home logs it with the file's path, so it is never lost
    /// silently.
    WriteFailed {
        /// The descriptor.
        fd: i32,
        /// The error.
        errno: i32,
    },
    /// Remote to home: the process stopped (job control) by `sig`, after it had been sent
    /// `conts` `SIGCONT`s from home; home stops the deputy the same way, so the parent's
    /// `wait` sees it (a stop report older than home's latest `SIGCONT` is stale).
    Stopped {
        /// The stop signal.
        sig: i32,
        /// How many `SIGCONT`s from home the remote had delivered.
        conts: u32,
    },
    /// Remote to home: what is descriptor `fd` of the process? (For direct file access: a
    /// file of the remote's node that the process opened before it came.) Home answers
    /// [`ProcMsg::Described`].
    Describe {
        /// The descriptor.
        fd: i32,
        /// Just made by an `open` the remote forwarded: no other descriptor can share its
        /// open file description yet, and home does not look for one.
        fresh: bool,
    },
    /// Home to remote: the answer to [`ProcMsg::Describe`].
    Described {
        /// The descriptor.
        fd: i32,
        /// Its path at home if it is a regular file (at most `MAX_PATH` bytes), else `None`.
        #[serde(with = "opt_bytes")]
        path: Option<Vec<u8>>,
        /// Its `open` flags.
        flags: i32,
        /// Its offset.
        pos: u64,
        /// Whether another descriptor (of this process or any other at home) shares its open
        /// file description, and with it the offset.
        shared: bool,
        /// The file's type and mode (`st_mode`; 0 if home could not tell).
        mode: u32,
    },
    /// Remote to home: which descriptor numbers does the process hold at home, and what is its
    /// umask? (For path calls that direct file access runs on the remote's node: an `open`
    /// there must return the number home would give.) Home answers [`ProcMsg::TableIs`].
    Table,
    /// Home to remote: the answer to [`ProcMsg::Table`].
    TableIs {
        /// The numbers in use, ascending; `None` when there are more than [`MAX_TABLE_FDS`].
        fds: Option<Vec<i32>>,
        /// The umask.
        umask: u32,
    },
    /// Remote to home: the process opened `path` (its path at home) at the remote's node, at
    /// number `fd`, with `flags` (DFSA). Home holds a placeholder at that number, and opens the
    /// file itself only when it needs it ([`ProcMsg::Twin`]). No answer.
    OpenedHere {
        /// The number.
        fd: i32,
        /// The path as the program named it (at most `MAX_PATH` bytes).
        #[serde(with = "serde_bytes")]
        path: Vec<u8>,
        /// The `open` flags.
        flags: i32,
    },
    /// Remote to home: the process closed DFSA descriptor `fd` at the remote's node; home
    /// closes its number too. No answer.
    ClosedHere {
        /// The number.
        fd: i32,
    },
    /// Remote to home: open the file behind DFSA descriptor `fd` at home now (if it is only a
    /// placeholder there) and set its offset to `pos`. Home answers [`ProcMsg::TwinIs`].
    Twin {
        /// The number.
        fd: i32,
        /// The offset.
        pos: u64,
        /// `None`: home opens the file by the path it knows, which still names it. `Some`:
        /// the name no longer does (the process removed or renamed it, or it never had one),
        /// and home opens the remote's own open file through MFS instead, by this token
        /// (`MOUNT/.held/NODE/TOKEN`, `MfsOp::OpenHeld`).
        held: Option<u64>,
    },
    /// Home to remote: the answer to [`ProcMsg::Twin`]: 0, or the errno that stopped it.
    TwinIs {
        /// The number.
        fd: i32,
        /// 0 or an errno.
        errno: i32,
    },
    /// Either way, a control message of the connection itself (not counted, never resent,
    /// never handed to the process's code): the sender has received `received` counted
    /// messages, so the peer may forget those it keeps for resending ([`replay`]).
    Ack {
        /// Counted messages received so far on this connection.
        received: u64,
    },
    /// Either way, control: answer with [`ProcMsg::Ack`] now (the sender's last messages must
    /// be known to have arrived before it lets the connection go).
    AckPlease,
    /// Home to remote, control, the first frame of a connection opened by
    /// [`LinkMsg::Resume`]: the cut connection goes on here; home had received `received`
    /// counted messages, and resends those the remote had not.
    Resumed {
        /// Counted messages home received on the cut connection.
        received: u64,
    },
    /// Home to remote, control: the cut connection cannot go on (unknown token, the process
    /// is gone, or what the remote missed is no longer kept); the process ends.
    NotResumed {
        /// Why (at most [`MAX_WHY`] bytes).
        why: String,
    },
}

/// The longest reason a [`ProcMsg::NotResumed`] carries.
pub const MAX_WHY: usize = 1024;

impl ProcMsg {
    /// Whether this is a control message of the connection (not counted, never resent).
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            ProcMsg::Ack { .. }
                | ProcMsg::AckPlease
                | ProcMsg::Resumed { .. }
                | ProcMsg::NotResumed { .. }
        )
    }

    /// Whether the receiver acknowledges this message at once: the last message of a
    /// connection (the process ended, or moved on), after which its sender lets the
    /// connection go only once it is known to have arrived.
    pub fn wants_ack(&self) -> bool {
        matches!(
            self,
            ProcMsg::Exit { .. } | ProcMsg::Died { .. } | ProcMsg::Moved { .. }
        )
    }
}

/// The most descriptor numbers [`ProcMsg::TableIs`] lists (the kernel's default `nr_open`).
pub const MAX_TABLE_FDS: usize = 1 << 20;

/// An optional path as bytes.
mod opt_bytes {
    use serde::de::Deserializer;
    use serde::ser::Serializer;
    use serde::{Deserialize, Serialize};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(serde_bytes::Bytes::new).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let v: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        Ok(v.map(serde_bytes::ByteBuf::into_vec))
    }
}

impl ProcMsg {
    /// Checks the counts and sizes a decoded message may carry.
    pub fn validate(&self) -> Result<(), FrameError> {
        let bad = |m: String| Err(FrameError::Invalid(m));
        match self {
            ProcMsg::Image(h) | ProcMsg::Precopy(h) => {
                h.validate().map_err(|e| FrameError::Invalid(e.to_string()))
            }
            ProcMsg::Pages { len, .. } if *len as usize > crate::image::MAX_RUN => bad(format!(
                "page run of {len} bytes exceeds {}",
                crate::image::MAX_RUN
            )),
            ProcMsg::Call(c) => check_bufs(c.bufs.len(), c.bufs.iter().map(|b| b.1.len())),
            ProcMsg::Reply(r) => check_bufs(r.outs.len(), r.outs.iter().map(|b| b.1.len())),
            ProcMsg::Described { path: Some(p), .. } if p.len() > crate::syscalls::MAX_PATH => {
                bad(format!("a described path of {} bytes", p.len()))
            }
            ProcMsg::TableIs { fds: Some(f), .. } if f.len() > MAX_TABLE_FDS => {
                bad(format!("a table of {} descriptors", f.len()))
            }
            ProcMsg::OpenedHere { path, .. } if path.len() > crate::syscalls::MAX_PATH => {
                bad(format!("an opened path of {} bytes", path.len()))
            }
            ProcMsg::Moved { signals } if signals.len() > MAX_MOVED_SIGNALS => bad(format!(
                "{} undelivered signals exceed {MAX_MOVED_SIGNALS}",
                signals.len()
            )),
            ProcMsg::NotResumed { why } if why.len() > MAX_WHY => {
                bad(format!("a reason of {} bytes exceeds {MAX_WHY}", why.len()))
            }
            _ => Ok(()),
        }
    }
}

fn check_bufs(count: usize, lens: impl Iterator<Item = usize>) -> Result<(), FrameError> {
    if count > MAX_CALL_BUFS {
        return Err(FrameError::Invalid(format!(
            "{count} buffers in one call exceed {MAX_CALL_BUFS}"
        )));
    }
    let limit = crate::syscalls::MAX_IO + crate::syscalls::MAX_PATH;
    for l in lens {
        if l > limit {
            return Err(FrameError::Invalid(format!(
                "a call buffer of {l} bytes exceeds {limit}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::WireEntry;
    use crate::load::Figures;
    use crate::node::Status;
    use proptest::prelude::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes()).unwrap()
    }
    fn id(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn transcript(c: u16, s: u16, nc: [u8; 32], ns: [u8; 32], p: Protection) -> Transcript {
        Transcript {
            client: id(c),
            server: id(s),
            nonce_c: nc,
            nonce_s: ns,
            protection: p,
        }
    }

    #[test]
    fn a_queue_listing_is_bounded_in_jobs_and_in_text() {
        let row = |command: String| crate::queue::QueueRow {
            pid: 7,
            uid: 1000,
            priority: 50,
            submitted_ms: 1,
            mem_mb: 0,
            command,
            waits_for: String::new(),
        };
        let ok = QueueListing {
            jobs: vec![row("sim --steps 9".into()); 3],
        };
        let back: QueueListing = decode_frame(&encode(&ok), MAX_LISTING_FRAME).unwrap();
        assert_eq!(back, ok);
        back.validate().unwrap();
        let long = QueueListing {
            jobs: vec![row("x".repeat(MAX_QUEUE_COMMAND + 1))],
        };
        let e = long.validate().unwrap_err().to_string();
        assert!(e.contains("queued job 7"), "{e}");
        // More jobs than a queue holds: the reader keeps one over the limit, validate refuses.
        let many = QueueListing {
            jobs: vec![row(String::new()); crate::queue::MAX_QUEUED + 5],
        };
        let back: QueueListing = decode_frame(&encode(&many), MAX_LISTING_FRAME).unwrap();
        assert_eq!(back.jobs.len(), crate::queue::MAX_QUEUED + 1);
        assert!(back.validate().is_err());
    }

    #[test]
    fn proofs_bind_the_secret_the_side_the_nonces_and_the_protection() {
        let k = secret("0123456789abcdef0123");
        let other = secret("0123456789abcdef0124");
        let (nc, ns) = ([1u8; 32], [2u8; 32]);
        let enc = Protection::Encrypted;
        let t = transcript(1, 2, nc, ns, enc);
        let p = t.proof(&k, Side::Server);
        assert!(t.verify(&k, Side::Server, &p));
        assert!(!t.verify(&other, Side::Server, &p));
        assert!(!t.verify(&k, Side::Client, &p));
        assert!(!transcript(2, 1, nc, ns, enc).verify(&k, Side::Server, &p));
        assert!(!transcript(1, 2, ns, nc, enc).verify(&k, Side::Server, &p));
        let auth = Protection::Authenticated;
        assert!(!transcript(1, 2, nc, ns, auth).verify(&k, Side::Server, &p));
    }

    /// Runs a whole handshake between node 1 (client, `pc`) and node 2 (server, `ps`).
    fn handshake(
        pc: Protection,
        ps: Protection,
    ) -> Result<(Session, Session), (HandshakeError, Option<Handshake>)> {
        let k = secret("0123456789abcdef0123");
        let mut c = ClientHandshake::new(id(1), id(2), [1; 32], pc);
        let mut s = ServerHandshake::new(id(2), [2; 32], ps);
        let challenge = s.on_hello(&k, c.hello(), |_| Ok(()))?;
        let proof = c.on_challenge(&k, challenge)?;
        let (node, welcome, server) = s.on_proof(&k, proof)?;
        assert_eq!(node, id(1));
        let client = c.on_verdict(welcome).map_err(|e| (e, None))?;
        Ok((client, server))
    }

    #[test]
    fn a_handshake_gives_both_ends_matching_sessions() {
        for p in [Protection::Authenticated, Protection::Encrypted] {
            let (mut c, mut s) = handshake(p, p).unwrap();
            let m = LinkMsg::OpenProcess;
            let mut buf = Vec::new();
            seal::write_sealed(&mut buf, &mut c.sealer, &m, &mut Vec::new()).unwrap();
            let got: LinkMsg = seal::read_sealed(
                &mut &buf[..],
                &mut s.opener,
                MAX_LINK_FRAME,
                &mut Vec::new(),
            )
            .unwrap();
            assert_eq!(got, m);
        }
    }

    #[test]
    fn a_protection_mismatch_is_refused_naming_the_setting() {
        let (e, refusal) = handshake(Protection::Authenticated, Protection::Encrypted).unwrap_err();
        assert!(matches!(e, HandshakeError::Protection { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("[link] encrypt = false"), "{e}");
        assert!(e.contains("[link] encrypt = true"), "{e}");
        let Some(Handshake::Refuse { reason }) = refusal else {
            panic!("no refusal to send");
        };
        assert!(
            reason.contains("node 2 has [link] encrypt = true"),
            "{reason}"
        );
    }

    #[test]
    fn header_checks_come_before_allocation() {
        let mut f = encode(&LinkMsg::Gossip(GossipMsg { entries: vec![] }));
        f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        // read_frame must fail on the header without trying to allocate 4 GiB.
        let e = read_frame::<LinkMsg, _>(&mut &f[..], MAX_LINK_FRAME).unwrap_err();
        assert!(matches!(e, FrameError::TooLong { .. }), "{e}");
    }

    #[test]
    fn a_stream_of_frames_reads_back_in_order() {
        let a = LinkMsg::Gossip(GossipMsg { entries: vec![] });
        let mut buf = Vec::new();
        write_frame(&mut buf, &a).unwrap();
        write_frame(&mut buf, &a).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<LinkMsg, _>(&mut r, MAX_LINK_FRAME).unwrap(), a);
        assert_eq!(read_frame::<LinkMsg, _>(&mut r, MAX_LINK_FRAME).unwrap(), a);
        assert!(matches!(
            read_frame::<LinkMsg, _>(&mut r, MAX_LINK_FRAME),
            Err(FrameError::Closed)
        ));
    }

    fn arb_info() -> impl Strategy<Value = NodeInfo> {
        (
            0u32..128,
            proptest::option::of((
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                0u32..=100,
            )),
        )
            .prop_map(|(flags, f)| NodeInfo {
                flags: Status::from_bits_truncate(flags),
                figures: f.map(
                    |(load, speed, cpus, mem_total, mem_free, mem_rawfree, util)| Figures {
                        load,
                        speed,
                        cpus,
                        mem_total,
                        mem_free,
                        mem_rawfree,
                        util,
                        foreign: load / 2,
                        foreign_guests: cpus / 2,
                        own: load / 3,
                    },
                ),
                queue: (flags & 1 == 1).then_some(crate::queue::Head {
                    priority: (flags >> 8) as u16,
                    submitted_ms: u64::from(flags),
                    queued: flags >> 4,
                }),
                isolation: (flags & 2 == 2).then_some((u64::from(flags), flags & 4 == 4)),
            })
    }

    fn arb_link() -> impl Strategy<Value = LinkMsg> {
        proptest::collection::vec((1u16.., any::<u32>(), arb_info()), 0..40).prop_map(|es| {
            LinkMsg::Gossip(GossipMsg {
                entries: es
                    .into_iter()
                    .map(|(n, age_ms, info)| WireEntry {
                        node: id(n),
                        age_ms,
                        info,
                    })
                    .collect(),
            })
        })
    }

    fn arb_handshake() -> impl Strategy<Value = Handshake> {
        prop_oneof![
            (1u16.., any::<[u8; 32]>(), any::<bool>()).prop_map(|(n, nonce, e)| {
                Handshake::Hello {
                    node: id(n),
                    nonce,
                    protection: Protection::from_encrypt(e),
                }
            }),
            (1u16.., any::<[u8; 32]>(), any::<[u8; 32]>(), any::<bool>()).prop_map(
                |(n, nonce, proof, e)| Handshake::Challenge {
                    node: id(n),
                    nonce,
                    proof,
                    protection: Protection::from_encrypt(e),
                }
            ),
            any::<[u8; 32]>().prop_map(|proof| Handshake::Proof { proof }),
            Just(Handshake::Welcome),
            ".{0,100}".prop_map(|reason| Handshake::Refuse { reason }),
        ]
    }

    proptest! {
        #[test]
        fn link_messages_round_trip(m in arb_link()) {
            let f = encode(&m);
            prop_assert!(f.len() <= MAX_LINK_FRAME);
            prop_assert_eq!(decode_link(&f).unwrap(), m);
        }

        #[test]
        fn handshakes_round_trip(m in arb_handshake()) {
            let f = encode(&m);
            prop_assert!(f.len() <= MAX_HANDSHAKE_FRAME);
            prop_assert_eq!(decode_frame::<Handshake>(&f, MAX_HANDSHAKE_FRAME).unwrap(), m);
        }

        #[test]
        fn any_prefix_of_a_frame_is_refused(m in arb_link(), cut in 0usize..1000) {
            let f = encode(&m);
            let cut = cut % f.len();
            prop_assert!(decode_link(&f[..cut]).is_err());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_link(&bytes);
            let _ = decode_frame::<Handshake>(&bytes, MAX_HANDSHAKE_FRAME);
        }

        #[test]
        fn corrupted_frames_never_panic(m in arb_link(), pos in any::<usize>(), val in any::<u8>()) {
            let mut f = encode(&m);
            let pos = pos % f.len();
            f[pos] = val;
            let _ = decode_link(&f);
        }
    }
}
