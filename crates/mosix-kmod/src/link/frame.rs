//! Frames on async streams (the link's tasks and the control socket): the header is checked
//! against the limit before the payload is allocated.

use mosix_core::proto::{self, FrameError, HEADER_LEN};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame from an async stream, checking the header before allocating.
pub async fn read_frame<M, R>(r: &mut R, limit: usize) -> Result<M, FrameError>
where
    M: DeserializeOwned,
    R: AsyncRead + Unpin,
{
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
    let len = proto::decode_header(&h, limit)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    proto::decode_payload(&payload)
}

/// Writes one frame to an async stream.
pub async fn write_frame<M: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &M,
) -> Result<(), FrameError> {
    w.write_all(&proto::encode(msg)).await?;
    Ok(())
}
