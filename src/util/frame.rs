//! Length-prefixed JSON frames, the one framing the runtime speaks with its helper
//! processes (the sandbox launcher, isolate workers): a 4-byte little-endian length, then
//! that many bytes of JSON. A reader refuses a frame longer than the bound it is given
//! before reading its body, so a peer cannot make it allocate more.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame a reader accepts unless it says otherwise.
pub const MAX_FRAME: usize = 16 << 20;

/// The whole frame of `message`: header and body.
pub fn encode(message: &impl Serialize) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, message).map_err(io::Error::other)?;
    let len = u32::try_from(frame.len() - 4).map_err(io::Error::other)?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

/// The body length a header announces, refused past `max`.
pub fn body_len(header: [u8; 4], max: usize) -> io::Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes; the limit is {max}"),
        ));
    }
    Ok(len)
}

/// The message in a frame's body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one frame; `None` at the end of the stream before a frame starts (a stream that
/// ends inside a frame is an error).
pub async fn read<T: DeserializeOwned>(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<Option<T>> {
    match read_body(reader, max).await? {
        Some(body) => decode(&body).map(Some),
        None => Ok(None),
    }
}

/// Reads one frame's body, undecoded (see [`read`]).
pub async fn read_body(
    reader: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let mut body = vec![0u8; body_len(header, max)?];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Writes one encoded frame (see [`encode`]).
pub async fn write(writer: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write(&mut a, &encode(&serde_json::json!({"x": 1})).unwrap())
            .await
            .unwrap();
        // Oversized: refused from its header.
        a.write_all(&(1u32 << 30).to_le_bytes()).await.unwrap();
        let got: serde_json::Value = read(&mut b, 64).await.unwrap().unwrap();
        assert_eq!(got, serde_json::json!({"x": 1}));
        let err = read::<serde_json::Value>(&mut b, 64).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&3u32.to_le_bytes()).await.unwrap();
        a.write_all(b"{{{").await.unwrap();
        a.write_all(&[1, 0]).await.unwrap();
        drop(a);
        let err = read::<serde_json::Value>(&mut b, 64).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = read::<serde_json::Value>(&mut b, 64).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
