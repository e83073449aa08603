//! The record layer of an authenticated link connection: every frame after the handshake, and
//! every raw page run, is sealed with AES-256-GCM under a key of its direction.
//!
//! # Keys
//!
//! Both ends of a handshake know the cluster secret, both node numbers, both nonces and the
//! [`Protection`] they agreed on. From these, HKDF-SHA256 (RFC 5869) derives one 256-bit key per
//! direction:
//!
//! ```text
//! PRK       = HKDF-Extract(salt = "mosix-link-v2 salt" | nonce_c | nonce_s, IKM = secret)
//! key(c→s)  = HKDF-Expand(PRK, "mosix-link-v2 client to server" | mode | c | s, 32)
//! key(s→c)  = HKDF-Expand(PRK, "mosix-link-v2 server to client" | mode | c | s, 32)
//! ```
//!
//! where `mode` is `aes-256-gcm` ([`Protection::Encrypted`]) or `aes-256-gmac`
//! ([`Protection::Authenticated`]) and `c`, `s` are the client's and the server's node numbers
//! (u16, little-endian). The nonces are fresh for each connection, so each connection has keys
//! of its own: a frame recorded from one connection opens on no other.
//!
//! # Records
//!
//! Each side counts the records it sends (and the other side the records it receives) from 0.
//! The count is the AEAD nonce — `[kind, 0, 0, 0, count as u64 little-endian]`, with kind 0 for
//! a frame and 1 for a page run — and is never sent: a record that is replayed, reordered,
//! dropped, injected, or sent in the other direction is opened with the wrong nonce or key and
//! fails. After one failure, a receiver opens nothing more (the connection must be closed).
//!
//! A sealed frame is the plain frame of [`crate::proto`] with the 16-byte tag appended; the
//! header's length counts the payload only:
//!
//! ```text
//! 0..8        header: "MX", version, 0, payload length (u32 LE)
//! 8..8+len    payload: postcard, encrypted (Encrypted) or in clear (Authenticated)
//! 8+len..+16  tag
//! ```
//!
//! With [`Protection::Encrypted`] the header is the associated data and the payload the
//! plaintext; with [`Protection::Authenticated`] header and payload together are the associated
//! data and the plaintext is empty (AES-256-GMAC), so the payload travels in clear but cannot be
//! changed.
//!
//! A page run (the raw bytes announced by a [`crate::proto::ProcMsg::Pages`] frame, at most
//! [`crate::image::MAX_RUN`]) is one record of its own: its bytes (encrypted, or in clear and
//! authenticated as associated data) followed by a 16-byte tag; no header, since the frame before
//! it gave its length. One AEAD call per run, whatever its size.

use std::io::{Read, Write};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hkdf::Hkdf;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{FrameError, HEADER_LEN, MAGIC, NONCE_LEN, PROTOCOL_VERSION, Side};
use crate::config::Secret;
use crate::node::NodeId;

/// The length of the tag that ends every sealed record.
pub const TAG_LEN: usize = 16;
/// The length of a direction's key.
pub const KEY_LEN: usize = 32;

/// What the link does to frames after the handshake (`[link] encrypt` in `mosix.toml`). Both
/// ends must agree; it is bound into the handshake's proofs and the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protection {
    /// Every record is authenticated (AES-256-GMAC) and travels in clear (`encrypt = false`).
    Authenticated,
    /// Every record is authenticated and encrypted (AES-256-GCM) (`encrypt = true`).
    Encrypted,
}

impl Protection {
    /// The protection `[link] encrypt = encrypt` asks for.
    pub fn from_encrypt(encrypt: bool) -> Protection {
        if encrypt {
            Protection::Encrypted
        } else {
            Protection::Authenticated
        }
    }

    /// The `mosix.toml` setting that selects it, for messages.
    pub fn setting(self) -> &'static str {
        match self {
            Protection::Authenticated => "[link] encrypt = false",
            Protection::Encrypted => "[link] encrypt = true",
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Protection::Authenticated => b"aes-256-gmac",
            Protection::Encrypted => b"aes-256-gcm",
        }
    }
}

/// What a record is: it selects the first byte of the nonce, so a record of one kind never
/// opens as the other.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Frame = 0,
    Run = 1,
}

fn nonce(kind: Kind, seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = kind as u8;
    n[4..].copy_from_slice(&seq.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The two directions' keys of one connection, seen from one end.
#[derive(Debug)]
pub struct Session {
    /// Seals what this end sends.
    pub sealer: Sealer,
    /// Opens what this end receives.
    pub opener: Opener,
    /// The same at both ends, secret to them: names this connection when a process
    /// connection cut in the middle is resumed on a new one (`LinkMsg::Resume`).
    pub token: [u8; 16],
}

/// What both ends of a handshake know: the keys are derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript {
    /// The connecting node.
    pub client: NodeId,
    /// The accepting node.
    pub server: NodeId,
    /// The client's nonce.
    pub nonce_c: [u8; NONCE_LEN],
    /// The server's nonce.
    pub nonce_s: [u8; NONCE_LEN],
    /// The agreed protection.
    pub protection: Protection,
}

impl Transcript {
    /// The session of end `side` of the connection.
    pub fn session(&self, secret: &Secret, side: Side) -> Session {
        let c2s = self.key(secret, b"mosix-link-v2 client to server");
        let s2c = self.key(secret, b"mosix-link-v2 server to client");
        let (send, recv) = match side {
            Side::Client => (c2s, s2c),
            Side::Server => (s2c, c2s),
        };
        Session {
            sealer: Sealer {
                key: send,
                protection: self.protection,
                seq: 0,
            },
            opener: Opener {
                key: recv,
                protection: self.protection,
                seq: 0,
                broken: false,
            },
            token: self.token(secret),
        }
    }

    /// The connection's resume token: HKDF of the secret and both nonces, with a label of its
    /// own (so it says nothing of the keys).
    fn token(&self, secret: &Secret) -> [u8; 16] {
        let mut salt = [0u8; 18 + 2 * NONCE_LEN];
        salt[..18].copy_from_slice(b"mosix-link-v2 salt");
        salt[18..18 + NONCE_LEN].copy_from_slice(&self.nonce_c);
        salt[18 + NONCE_LEN..].copy_from_slice(&self.nonce_s);
        let hk = Hkdf::<Sha256>::new(Some(&salt), secret.bytes());
        let mut t = [0u8; 16];
        // 16 bytes are far below HKDF-SHA256's limit.
        #[allow(clippy::expect_used)]
        hk.expand_multi_info(
            &[
                b"mosix-link-v2 resume token ",
                &self.client.get().to_le_bytes(),
                &self.server.get().to_le_bytes(),
            ],
            &mut t,
        )
        .expect("16 bytes of HKDF-SHA256 output");
        t
    }

    fn key(&self, secret: &Secret, direction: &[u8]) -> LessSafeKey {
        let mut salt = [0u8; 18 + 2 * NONCE_LEN];
        salt[..18].copy_from_slice(b"mosix-link-v2 salt");
        salt[18..18 + NONCE_LEN].copy_from_slice(&self.nonce_c);
        salt[18 + NONCE_LEN..].copy_from_slice(&self.nonce_s);
        let hk = Hkdf::<Sha256>::new(Some(&salt), secret.bytes());
        let mut okm = [0u8; KEY_LEN];
        // 32 bytes are far below HKDF-SHA256's limit of 255 × 32, and AES-256 takes any 32
        // bytes as a key: neither call can fail.
        #[allow(clippy::expect_used)]
        {
            hk.expand_multi_info(
                &[
                    direction,
                    b" ",
                    self.protection.label(),
                    &self.client.get().to_le_bytes(),
                    &self.server.get().to_le_bytes(),
                ],
                &mut okm,
            )
            .expect("32 bytes of HKDF-SHA256 output");
            let key = UnboundKey::new(&AES_256_GCM, &okm).expect("a 32-byte AES-256 key");
            okm.fill(0);
            LessSafeKey::new(key)
        }
    }
}

/// Seals the records one end sends, counting them.
pub struct Sealer {
    key: LessSafeKey,
    protection: Protection,
    seq: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("protection", &self.protection)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Opens the records one end receives, counting them; after one failure it opens nothing more.
pub struct Opener {
    key: LessSafeKey,
    protection: Protection,
    seq: u64,
    broken: bool,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("protection", &self.protection)
            .field("seq", &self.seq)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The protection of the records.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    fn next(&mut self) -> Result<u64, FrameError> {
        let seq = self.seq;
        // 2^64 records are never sent; a wrapped counter would reuse nonces, so it is refused.
        self.seq = seq.checked_add(1).ok_or(FrameError::Exhausted)?;
        Ok(seq)
    }

    /// Serialises `msg` into `out` as a sealed frame (`out` is cleared first; its capacity is
    /// reused).
    pub fn encode<M: Serialize>(&mut self, msg: &M, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.clear();
        out.extend_from_slice(&[0u8; HEADER_LEN]);
        *out = postcard::to_extend(msg, std::mem::take(out))
            .map_err(|e| FrameError::Malformed(e.to_string()))?;
        let len = u32::try_from(out.len() - HEADER_LEN).map_err(|_| FrameError::TooLong {
            len: out.len() - HEADER_LEN,
            limit: u32::MAX as usize,
        })?;
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = PROTOCOL_VERSION;
        out[3] = 0;
        out[4..8].copy_from_slice(&len.to_le_bytes());
        self.seal_in_place(out)
    }

    /// Seals a plain frame (as [`crate::proto::encode`] made it; its header is kept as it is)
    /// into `out`.
    pub fn seal_plain(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if frame.len() < HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        out.clear();
        out.reserve(frame.len() + TAG_LEN);
        out.extend_from_slice(frame);
        self.seal_in_place(out)
    }

    /// `buf` holds a header and a payload: seals the payload and appends the tag.
    fn seal_in_place(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        let seq = self.next()?;
        let n = nonce(Kind::Frame, seq);
        let tag = match self.protection {
            Protection::Encrypted => {
                let (h, payload) = buf.split_at_mut(HEADER_LEN);
                self.key
                    .seal_in_place_separate_tag(n, Aad::from(&h[..]), payload)
            }
            Protection::Authenticated => {
                self.key
                    .seal_in_place_separate_tag(n, Aad::from(&buf[..]), &mut [])
            }
        }
        .map_err(|_| FrameError::Sealing)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Seals a page run in place: encrypts `data` where it is ([`Protection::Encrypted`]) or
    /// leaves it as it is ([`Protection::Authenticated`]), and returns the tag. What to send is
    /// then `data`, then the tag. One AEAD pass over the run, and no second buffer: the page
    /// stream's working set stays what it reads.
    pub fn seal_run_in_place(&mut self, data: &mut [u8]) -> Result<[u8; TAG_LEN], FrameError> {
        let seq = self.next()?;
        let n = nonce(Kind::Run, seq);
        let t = match self.protection {
            Protection::Encrypted => self.key.seal_in_place_separate_tag(n, Aad::empty(), data),
            Protection::Authenticated => {
                self.key
                    .seal_in_place_separate_tag(n, Aad::from(&*data), &mut [])
            }
        }
        .map_err(|_| FrameError::Sealing)?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(t.as_ref());
        Ok(tag)
    }

    /// Seals a page run, leaving `data` as it is. Returns what to send: the bytes of the run
    /// (`data` itself when they travel in clear, or their ciphertext in `scratch`, whose
    /// capacity is reused), then the tag. The same record as [`Sealer::seal_run_in_place`].
    pub fn seal_run<'a>(
        &mut self,
        data: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<(&'a [u8], [u8; TAG_LEN]), FrameError> {
        let seq = self.next()?;
        let n = nonce(Kind::Run, seq);
        let mut tag = [0u8; TAG_LEN];
        match self.protection {
            Protection::Encrypted => {
                if scratch.len() < data.len() {
                    scratch.resize(data.len(), 0);
                }
                let out = &mut scratch[..data.len()];
                self.key
                    .seal_out_of_place_scatter(n, Aad::empty(), data, out, &[], &mut tag)
                    .map_err(|_| FrameError::Sealing)?;
                Ok((out, tag))
            }
            Protection::Authenticated => {
                let t = self
                    .key
                    .seal_in_place_separate_tag(n, Aad::from(data), &mut [])
                    .map_err(|_| FrameError::Sealing)?;
                tag.copy_from_slice(t.as_ref());
                Ok((data, tag))
            }
        }
    }
}

impl Opener {
    /// The protection of the records.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    fn next(&mut self) -> Result<u64, FrameError> {
        if self.broken {
            return Err(FrameError::Unauthentic(self.seq));
        }
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(FrameError::Exhausted)?;
        Ok(seq)
    }

    fn fail(&mut self, seq: u64) -> FrameError {
        self.broken = true;
        FrameError::Unauthentic(seq)
    }

    /// Opens a sealed frame held whole in `frame` (header, payload, tag; the header already
    /// checked with [`crate::proto::decode_header`]) and returns its payload.
    pub fn open_frame<'a>(&mut self, frame: &'a mut [u8]) -> Result<&'a [u8], FrameError> {
        let seq = self.next()?;
        if frame.len() < HEADER_LEN + TAG_LEN {
            return Err(self.fail(seq));
        }
        let n = nonce(Kind::Frame, seq);
        let body = frame.len() - TAG_LEN;
        let ok = match self.protection {
            Protection::Encrypted => {
                let (h, rest) = frame.split_at_mut(HEADER_LEN);
                let (payload, tag) = rest.split_at_mut(body - HEADER_LEN);
                self.key
                    .open_in_place_separate_tag(n, Aad::from(&h[..]), tag, payload)
                    .is_ok()
            }
            Protection::Authenticated => {
                let (aad, tag) = frame.split_at(body);
                self.key
                    .open_in_place_separate_tag(n, Aad::from(aad), tag, &mut [])
                    .is_ok()
            }
        };
        if !ok {
            return Err(self.fail(seq));
        }
        Ok(&frame[HEADER_LEN..body])
    }

    /// Opens a page run in place: `data` holds the bytes received, `tag` the tag after them.
    pub fn open_run(&mut self, data: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), FrameError> {
        let seq = self.next()?;
        let n = nonce(Kind::Run, seq);
        let ok = match self.protection {
            Protection::Encrypted => self
                .key
                .open_in_place_separate_tag(n, Aad::empty(), tag, data)
                .is_ok(),
            Protection::Authenticated => self
                .key
                .open_in_place_separate_tag(n, Aad::from(&*data), tag, &mut [])
                .is_ok(),
        };
        if ok { Ok(()) } else { Err(self.fail(seq)) }
    }
}

/// Reads one sealed frame from a blocking stream into `buf` (whose capacity is reused), checks
/// the header against `limit` before allocating, opens and decodes it.
pub fn read_sealed<M: DeserializeOwned, R: Read>(
    r: &mut R,
    opener: &mut Opener,
    limit: usize,
    buf: &mut Vec<u8>,
) -> Result<M, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    super::read_full(r, &mut h, true)?;
    let frame = frame_room(&h, limit, buf)?;
    super::read_full(r, &mut frame[HEADER_LEN..], false)?;
    super::decode_payload(opener.open_frame(frame)?)
}

/// The room for the sealed frame whose header is `h`: the header checked against `limit`
/// before anything is allocated, then `buf` (capacity reused) grown to the whole record and
/// the header copied in. The rest of the record is to be read into the slice after
/// `HEADER_LEN`. Shared by the blocking and the async readers.
pub fn frame_room<'a>(
    h: &[u8; HEADER_LEN],
    limit: usize,
    buf: &'a mut Vec<u8>,
) -> Result<&'a mut [u8], FrameError> {
    let len = super::decode_header(h, limit)?;
    let total = HEADER_LEN + len + TAG_LEN;
    if buf.len() < total {
        buf.resize(total, 0);
    }
    let frame = &mut buf[..total];
    frame[..HEADER_LEN].copy_from_slice(h);
    Ok(frame)
}

/// Seals `msg` into `buf` (whose capacity is reused) and writes it whole, without flushing.
pub fn write_sealed<M: Serialize, W: Write>(
    w: &mut W,
    sealer: &mut Sealer,
    msg: &M,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError> {
    sealer.encode(msg, buf)?;
    w.write_all(buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::GossipMsg;
    use crate::proto::{LinkMsg, MAX_LINK_FRAME, ProcMsg, decode_header};
    use proptest::prelude::*;

    fn id(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn transcript(p: Protection) -> Transcript {
        Transcript {
            client: id(1),
            server: id(2),
            nonce_c: [1; NONCE_LEN],
            nonce_s: [2; NONCE_LEN],
            protection: p,
        }
    }

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123").unwrap()
    }

    /// A client's and a server's session of one connection.
    fn pair(p: Protection) -> (Session, Session) {
        let t = transcript(p);
        (
            t.session(&secret(), Side::Client),
            t.session(&secret(), Side::Server),
        )
    }

    fn call(n: usize) -> ProcMsg {
        ProcMsg::Call(crate::proto::Call {
            nr: 0,
            args: [1, 2, 3, 4, 5, 6],
            bufs: vec![(1, vec![0xab; n])],
            ahead: 0,
        })
    }

    fn seal(s: &mut Sealer, m: &ProcMsg) -> Vec<u8> {
        let mut out = Vec::new();
        s.encode(m, &mut out).unwrap();
        out
    }

    fn open(o: &mut Opener, frame: &[u8]) -> Result<ProcMsg, FrameError> {
        read_sealed(
            &mut &frame[..],
            o,
            crate::proto::MAX_PROC_FRAME,
            &mut Vec::new(),
        )
    }

    const BOTH: [Protection; 2] = [Protection::Authenticated, Protection::Encrypted];

    #[test]
    fn frames_round_trip_in_order_both_ways() {
        for p in BOTH {
            let (mut c, mut s) = pair(p);
            for i in 0..5 {
                let m = call(i * 100);
                let f = seal(&mut c.sealer, &m);
                assert_eq!(f.len(), crate::proto::encode(&m).len() + TAG_LEN);
                assert_eq!(open(&mut s.opener, &f).unwrap(), m);
                let f = seal(&mut s.sealer, &m);
                assert_eq!(open(&mut c.opener, &f).unwrap(), m);
            }
        }
    }

    #[test]
    fn encryption_hides_the_payload_and_authentication_only_does_not() {
        let m = call(64);
        let plain = crate::proto::encode(&m);
        let (mut c, _) = pair(Protection::Encrypted);
        let f = seal(&mut c.sealer, &m);
        assert_eq!(f[..HEADER_LEN], plain[..HEADER_LEN]);
        assert_ne!(f[HEADER_LEN..plain.len()], plain[HEADER_LEN..]);
        let (mut c, _) = pair(Protection::Authenticated);
        let f = seal(&mut c.sealer, &m);
        assert_eq!(f[..plain.len()], plain[..]);
    }

    #[test]
    fn a_plain_frame_sealed_as_is_opens() {
        for p in BOTH {
            let (mut c, mut s) = pair(p);
            let m = LinkMsg::Gossip(GossipMsg { entries: vec![] });
            let mut out = Vec::new();
            c.sealer
                .seal_plain(&crate::proto::encode(&m), &mut out)
                .unwrap();
            let got: LinkMsg = read_sealed(
                &mut &out[..],
                &mut s.opener,
                MAX_LINK_FRAME,
                &mut Vec::new(),
            )
            .unwrap();
            assert_eq!(got, m);
        }
    }

    #[test]
    fn a_replayed_frame_fails_and_so_does_everything_after_it() {
        for p in BOTH {
            let (mut c, mut s) = pair(p);
            let f0 = seal(&mut c.sealer, &call(1));
            let f1 = seal(&mut c.sealer, &call(2));
            open(&mut s.opener, &f0).unwrap();
            assert!(matches!(
                open(&mut s.opener, &f0),
                Err(FrameError::Unauthentic(1))
            ));
            // The receiver is broken now: even the genuine next frame is refused.
            assert!(open(&mut s.opener, &f1).is_err());
        }
    }

    #[test]
    fn two_frames_swapped_fail() {
        for p in BOTH {
            let (mut c, mut s) = pair(p);
            let f0 = seal(&mut c.sealer, &call(1));
            let f1 = seal(&mut c.sealer, &call(1));
            assert!(matches!(
                open(&mut s.opener, &f1),
                Err(FrameError::Unauthentic(0))
            ));
            let (mut c, mut s) = pair(p);
            let _ = seal(&mut c.sealer, &call(1));
            let f1 = seal(&mut c.sealer, &call(1));
            drop(f0);
            // A dropped frame: the next one does not open either.
            assert!(open(&mut s.opener, &f1).is_err());
        }
    }

    #[test]
    fn a_frame_from_the_other_direction_fails() {
        for p in BOTH {
            let (mut c, _) = pair(p);
            let f = seal(&mut c.sealer, &call(8));
            // The client's own opener holds the server-to-client key.
            assert!(open(&mut c.opener, &f).is_err());
        }
    }

    #[test]
    fn a_truncated_tag_fails() {
        for p in BOTH {
            let (mut c, mut s) = pair(p);
            let f = seal(&mut c.sealer, &call(8));
            let cut = &f[..f.len() - 1];
            assert!(matches!(
                open(&mut s.opener, cut),
                Err(FrameError::Truncated)
            ));
            // The same bytes in memory, tag one byte short.
            let mut v = cut.to_vec();
            assert!(s.opener.open_frame(&mut v).is_err());
        }
    }

    #[test]
    fn a_valid_tag_under_another_key_fails() {
        let (mut s_client, _) = pair(Protection::Encrypted);
        let f = seal(&mut s_client.sealer, &call(8));
        let others = [
            Transcript {
                nonce_s: [3; NONCE_LEN],
                ..transcript(Protection::Encrypted)
            }
            .session(&secret(), Side::Server),
            Transcript {
                client: id(3),
                ..transcript(Protection::Encrypted)
            }
            .session(&secret(), Side::Server),
            transcript(Protection::Authenticated).session(&secret(), Side::Server),
            transcript(Protection::Encrypted)
                .session(&Secret::new(b"0123456789abcdef0124").unwrap(), Side::Server),
        ];
        for mut o in others {
            assert!(open(&mut o.opener, &f).is_err());
        }
    }

    #[test]
    fn both_ends_share_a_resume_token_no_other_connection_has() {
        let (c, s) = pair(Protection::Encrypted);
        assert_eq!(c.token, s.token);
        let other = Transcript {
            nonce_c: [9; NONCE_LEN],
            ..transcript(Protection::Encrypted)
        }
        .session(&secret(), Side::Server);
        assert_ne!(c.token, other.token);
        let other_secret = transcript(Protection::Encrypted)
            .session(&Secret::new(b"0123456789abcdef0124").unwrap(), Side::Client);
        assert_ne!(c.token, other_secret.token);
    }

    #[test]
    fn page_runs_round_trip_and_refuse_tampering() {
        for p in BOTH {
            let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
            let (mut c, mut s) = pair(p);
            let mut scratch = Vec::new();
            let (wire, tag) = c.sealer.seal_run(&data, &mut scratch).unwrap();
            assert_eq!(wire == &data[..], p == Protection::Authenticated);
            let mut got = wire.to_vec();
            s.opener.open_run(&mut got, &tag).unwrap();
            assert_eq!(got, data);

            // A run opened as a frame, or a frame as a run, fails (the nonce's kind differs).
            let (wire, tag) = c.sealer.seal_run(&data[..100], &mut scratch).unwrap();
            let mut as_frame = vec![0u8; HEADER_LEN];
            as_frame.extend_from_slice(wire);
            as_frame.extend_from_slice(&tag);
            assert!(s.opener.open_frame(&mut as_frame).is_err());

            let (mut c, mut s) = pair(p);
            let (wire, tag) = c.sealer.seal_run(&data, &mut scratch).unwrap();
            let mut bad = wire.to_vec();
            bad[12345] ^= 0x10;
            assert!(s.opener.open_run(&mut bad, &tag).is_err());
        }
    }

    #[test]
    fn a_run_sealed_in_place_is_the_same_record() {
        for p in BOTH {
            let data: Vec<u8> = (0..9000u32).map(|i| (i * 13) as u8).collect();
            let (mut c1, _) = pair(p);
            let (mut c2, mut s) = pair(p);
            let mut scratch = Vec::new();
            let (wire, tag) = c1.sealer.seal_run(&data, &mut scratch).unwrap();
            let mut inplace = data.clone();
            let tag2 = c2.sealer.seal_run_in_place(&mut inplace).unwrap();
            assert_eq!((wire, tag), (&inplace[..], tag2));
            assert_eq!(inplace == data, p == Protection::Authenticated);
            s.opener.open_run(&mut inplace, &tag2).unwrap();
            assert_eq!(inplace, data);
            // The count goes on: the next run uses the next nonce.
            let mut again = data.clone();
            let tag3 = c2.sealer.seal_run_in_place(&mut again).unwrap();
            assert_ne!(tag3, tag2);
            s.opener.open_run(&mut again, &tag3).unwrap();
        }
    }

    #[test]
    fn the_header_is_authenticated() {
        for p in BOTH {
            let (mut c, mut s) = pair(p);
            let mut f = seal(&mut c.sealer, &call(8));
            f[3] = 1; // the reserved byte, which decode_header would refuse anyway
            assert!(decode_header(f[..8].try_into().unwrap(), 1 << 20).is_err());
            f[3] = 0;
            let mut g = f.clone();
            // A changed length that still fits: the header check passes, the tag does not.
            let len = u32::from_le_bytes(g[4..8].try_into().unwrap()) - 1;
            g[4..8].copy_from_slice(&len.to_le_bytes());
            assert!(open(&mut s.opener, &g).is_err());
        }
    }

    proptest! {
        #[test]
        fn sealed_frames_round_trip(n in 0usize..3000, reps in 1usize..4, enc in any::<bool>()) {
            let (mut c, mut s) = pair(Protection::from_encrypt(enc));
            for _ in 0..reps {
                let m = call(n);
                let f = seal(&mut c.sealer, &m);
                prop_assert_eq!(open(&mut s.opener, &f).unwrap(), m);
            }
        }

        #[test]
        fn a_flipped_bit_anywhere_fails(n in 0usize..300, pos in any::<usize>(), bit in 0u8..8, enc in any::<bool>()) {
            let (mut c, mut s) = pair(Protection::from_encrypt(enc));
            let mut f = seal(&mut c.sealer, &call(n));
            let pos = pos % f.len();
            f[pos] ^= 1 << bit;
            prop_assert!(open(&mut s.opener, &f).is_err());
        }

        #[test]
        fn a_flipped_bit_in_a_run_or_its_tag_fails(len in 1usize..5000, pos in any::<usize>(), bit in 0u8..8, enc in any::<bool>()) {
            let (mut c, mut s) = pair(Protection::from_encrypt(enc));
            let data = vec![0x5a; len];
            let mut scratch = Vec::new();
            let (wire, tag) = c.sealer.seal_run(&data, &mut scratch).unwrap();
            let mut rec = wire.to_vec();
            rec.extend_from_slice(&tag);
            let pos = pos % rec.len();
            rec[pos] ^= 1 << bit;
            let (body, t) = rec.split_at_mut(len);
            let t: [u8; TAG_LEN] = t.try_into().unwrap();
            prop_assert!(s.opener.open_run(body, &t).is_err());
        }

        #[test]
        fn random_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..600), enc in any::<bool>()) {
            let (_, mut s) = pair(Protection::from_encrypt(enc));
            prop_assert!(open(&mut s.opener, &bytes).is_err());
        }
    }
}
