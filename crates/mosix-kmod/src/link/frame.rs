//! Frames on async streams (the link's tasks and the control socket): the header is checked
//! against the limit before the payload is allocated. Plain frames for the handshake and the
//! control socket; sealed ones ([`mosix_core::proto::seal`]) on an authenticated connection.

use mosix_core::proto::seal::{self, Opener, Sealer};
use mosix_core::proto::{self, FrameError, HEADER_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads a header; [`FrameError::Closed`] if the stream ends before its first byte.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<[u8; HEADER_LEN], FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut h[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated
            });
        }
        got += n;
    }
    Ok(h)
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    r.read_exact(buf).await.map(drop).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })
}

/// Reads one plain frame from an async stream, checking the header before allocating.
pub async fn read_frame<M, R>(r: &mut R, limit: usize) -> Result<M, FrameError>
where
    M: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let h = read_header(r).await?;
    let len = proto::decode_header(&h, limit)?;
    let mut payload = vec![0u8; len];
    read_exact(r, &mut payload).await?;
    proto::decode_payload(&payload)
}

/// Writes one plain frame to an async stream.
pub async fn write_frame<M: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &M,
) -> Result<(), FrameError> {
    w.write_all(&proto::encode(msg)).await?;
    Ok(())
}

/// Reads one sealed frame into `buf` (whose capacity is reused), checking the header against
/// `limit` before allocating, and opens and decodes it.
pub async fn read_sealed<M, R>(
    r: &mut R,
    opener: &mut Opener,
    limit: usize,
    buf: &mut Vec<u8>,
) -> Result<M, FrameError>
where
    M: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let h = read_header(r).await?;
    let frame = seal::frame_room(&h, limit, buf)?;
    read_exact(r, &mut frame[HEADER_LEN..]).await?;
    proto::decode_payload(opener.open_frame(frame)?)
}

/// Seals `msg` into `buf` (whose capacity is reused) and writes it.
pub async fn write_sealed<M: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    sealer: &mut Sealer,
    msg: &M,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError> {
    sealer.encode(msg, buf)?;
    w.write_all(buf).await?;
    Ok(())
}
