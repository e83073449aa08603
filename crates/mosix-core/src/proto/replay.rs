//! What a process connection keeps so that it survives a cut: the frames one end sent that the
//! other has not acknowledged, and when to acknowledge what it received.
//!
//! Messages are counted, not numbered on the wire: both ends count the counted messages
//! ([`super::ProcMsg::is_control`] ones are not) of one direction from the connection's start,
//! so the n-th message sent is the n-th received. An end tells the other how many it received
//! ([`super::ProcMsg::Ack`] now and then, and in the resume handshake); the sender forgets what
//! is acknowledged, and after a cut resends exactly what the other end did not receive. A
//! message is thus delivered once: a call home already ran is never run again, and its answer,
//! if lost, is resent from here.
//!
//! Pure: the link code (`mosix-kmod`'s `link::channel`) owns the sockets.

use std::collections::VecDeque;

/// The most bytes of unacknowledged frames one end keeps for resending. Beyond it the
/// connection no longer survives a cut (it goes on, and a cut ends it as before).
pub const MAX_REPLAY_BYTES: usize = 32 << 20;
/// A receiver acknowledges after this many counted messages…
pub const ACK_EVERY_MSGS: u32 = 64;
/// …or this many bytes, whichever comes first.
pub const ACK_EVERY_BYTES: usize = 512 << 10;

/// Why frames cannot be resent as the peer asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The peer says it received messages that were never sent.
    #[error("the peer says it received {claimed} messages; {sent} were sent")]
    Ahead {
        /// What it claims.
        claimed: u64,
        /// What was sent.
        sent: u64,
    },
    /// Messages the peer missed are no longer kept (sent before the connection could
    /// survive a cut, or beyond [`MAX_REPLAY_BYTES`]).
    #[error("messages {from}..={to} the peer missed are no longer kept")]
    Gone {
        /// The first missed.
        from: u64,
        /// The last missed.
        to: u64,
    },
}

/// The frames sent and not acknowledged, in order.
#[derive(Debug, Default)]
pub struct Replay {
    /// `(number, frame)`, the numbers consecutive, ending at the last sent.
    frames: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
}

impl Replay {
    /// An empty buffer.
    pub fn new() -> Replay {
        Replay::default()
    }

    /// Keeps frame number `seq` (the last sent; numbers come in order). `Err` when that would
    /// keep more than [`MAX_REPLAY_BYTES`] (the buffer is then of no more use).
    pub fn push(&mut self, seq: u64, frame: Vec<u8>) -> Result<(), usize> {
        if self.frames.back().is_some_and(|(last, _)| last + 1 != seq) {
            // Not consecutive: a frame was sent without being kept. Start again from here.
            self.frames.clear();
            self.bytes = 0;
        }
        let bytes = self.bytes + frame.len();
        if bytes > MAX_REPLAY_BYTES {
            return Err(bytes);
        }
        self.bytes = bytes;
        self.frames.push_back((seq, frame));
        Ok(())
    }

    /// The peer received every message up to `received`: forget them.
    pub fn ack(&mut self, received: u64) {
        while self.frames.front().is_some_and(|(n, _)| *n <= received) {
            if let Some((_, f)) = self.frames.pop_front() {
                self.bytes -= f.len();
            }
        }
    }

    /// The frames to resend to a peer that received `received` of the `sent` messages sent so
    /// far, oldest first.
    pub fn since(&self, received: u64, sent: u64) -> Result<Vec<&[u8]>, ReplayError> {
        if received > sent {
            return Err(ReplayError::Ahead {
                claimed: received,
                sent,
            });
        }
        if received == sent {
            return Ok(Vec::new());
        }
        let first = self.frames.front().map(|(n, _)| *n);
        let last = self.frames.back().map(|(n, _)| *n);
        match (first, last) {
            (Some(first), Some(last)) if first <= received + 1 && last == sent => Ok(self
                .frames
                .iter()
                .filter(|(n, _)| *n > received)
                .map(|(_, f)| &f[..])
                .collect()),
            _ => Err(ReplayError::Gone {
                from: received + 1,
                to: sent,
            }),
        }
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frames kept.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing waits for an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// When a receiver acknowledges.
#[derive(Debug, Default)]
pub struct AckWindow {
    msgs: u32,
    bytes: usize,
}

impl AckWindow {
    /// A counted message of `bytes` arrived: whether to acknowledge now.
    pub fn received(&mut self, bytes: usize) -> bool {
        self.msgs += 1;
        self.bytes += bytes;
        if self.msgs >= ACK_EVERY_MSGS || self.bytes >= ACK_EVERY_BYTES {
            self.reset();
            true
        } else {
            false
        }
    }

    /// An acknowledgement was sent (for another reason).
    pub fn reset(&mut self) {
        *self = AckWindow::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filled(from: u64, to: u64) -> Replay {
        let mut r = Replay::new();
        for n in from..=to {
            r.push(n, vec![n as u8; 3]).unwrap();
        }
        r
    }

    #[test]
    fn resends_exactly_what_the_peer_missed() {
        let r = filled(5, 9);
        let again = r.since(6, 9).unwrap();
        assert_eq!(again, vec![&[7u8; 3][..], &[8; 3], &[9; 3]]);
        assert!(r.since(9, 9).unwrap().is_empty());
        // Everything kept, from the first kept on.
        assert_eq!(r.since(4, 9).unwrap().len(), 5);
    }

    #[test]
    fn refuses_a_gap_and_a_peer_ahead() {
        let r = filled(5, 9);
        assert_eq!(r.since(3, 9), Err(ReplayError::Gone { from: 4, to: 9 }));
        assert_eq!(
            r.since(10, 9),
            Err(ReplayError::Ahead {
                claimed: 10,
                sent: 9
            })
        );
        // Sent after the last kept, not kept: gone.
        assert_eq!(r.since(8, 10), Err(ReplayError::Gone { from: 9, to: 10 }));
        // Nothing kept at all, something missed.
        assert!(Replay::new().since(0, 1).is_err());
        assert!(Replay::new().since(1, 1).unwrap().is_empty());
    }

    #[test]
    fn forgets_what_is_acknowledged() {
        let mut r = filled(1, 10);
        r.ack(4);
        assert_eq!(r.len(), 6);
        assert_eq!(r.bytes(), 18);
        assert!(r.since(3, 10).is_err());
        assert_eq!(r.since(4, 10).unwrap().len(), 6);
        r.ack(100);
        assert!(r.is_empty());
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn a_frame_not_kept_starts_the_buffer_again() {
        let mut r = filled(1, 3);
        r.push(5, vec![5]).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r.since(3, 5).is_err());
        assert_eq!(r.since(4, 5).unwrap(), vec![&[5u8][..]]);
    }

    #[test]
    fn is_bounded() {
        let mut r = Replay::new();
        r.push(1, vec![0; MAX_REPLAY_BYTES]).unwrap();
        assert!(r.push(2, vec![0]).is_err());
        r.ack(1);
        r.push(2, vec![0]).unwrap();
    }

    #[test]
    fn acknowledges_by_count_or_bytes() {
        let mut w = AckWindow::default();
        assert!((1..ACK_EVERY_MSGS).all(|_| !w.received(1)));
        assert!(w.received(1));
        assert!(!w.received(ACK_EVERY_BYTES - 1));
        assert!(w.received(1));
    }

    proptest! {
        /// Whatever the acknowledgements, a peer that received any count the buffer still
        /// covers gets exactly the frames after it, in order.
        #[test]
        fn resent_frames_are_the_missing_suffix(
            sent in 1u64..200,
            acked in 0u64..200,
            received in 0u64..200,
        ) {
            let mut r = filled(1, sent);
            let acked = acked.min(sent);
            r.ack(acked);
            match r.since(received, sent) {
                Ok(again) => {
                    prop_assert!(received >= acked && received <= sent);
                    let want: Vec<Vec<u8>> =
                        (received + 1..=sent).map(|n| vec![n as u8; 3]).collect();
                    prop_assert_eq!(again.iter().map(|f| f.to_vec()).collect::<Vec<_>>(), want);
                }
                Err(_) => prop_assert!(received < acked || received > sent),
            }
        }
    }
}
