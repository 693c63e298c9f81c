//! Framing `/harp/sync/1` messages on a libp2p stream, for `request_response`.
//!
//! request-response opens one stream per request: the asker writes one request frame and
//! closes its writing side; the answerer writes one response frame. A frame is a big-endian
//! `u32` length and that many bytes ([`super::message`] says what they hold). The length is
//! checked against the direction's limit *before* anything is allocated, so a peer cannot
//! make us buffer more than [`MAX_REQUEST_BYTES`] / [`MAX_RESPONSE_BYTES`]. Decoding
//! errors become `io::ErrorKind::InvalidData`, which request-response reports as a failed
//! request (and the node logs), never a panic.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use super::message::{Request, Response, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

/// The `request_response::Codec` of `/harp/sync/1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit {max}"),
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    body: Vec<u8>,
    max: usize,
) -> io::Result<()> {
    if body.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds the limit {max}", body.len()),
        ));
    }
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.flush().await
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_REQUEST_BYTES).await?;
        Request::decode(&body).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, MAX_RESPONSE_BYTES).await?;
        // Decoding a full batch hashes up to a few thousand entries: a few milliseconds.
        Response::decode(&body).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, req.encode(), MAX_REQUEST_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, res.encode(), MAX_RESPONSE_BYTES).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused() {
        let p = StreamProtocol::new(super::super::message::PROTOCOL);
        let mut buf = Cursor::new(Vec::new());
        SyncCodec
            .write_request(&p, &mut buf, Request::Libraries)
            .await
            .unwrap();
        assert_eq!(buf.get_ref(), &[0, 0, 0, 1, 1]);
        buf.set_position(0);
        assert_eq!(
            SyncCodec.read_request(&p, &mut buf).await.unwrap(),
            Request::Libraries
        );
        let mut huge = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        let err = SyncCodec.read_response(&p, &mut huge).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut short = Cursor::new(vec![0, 0, 0, 9, 1]);
        assert!(SyncCodec.read_request(&p, &mut short).await.is_err());
    }
}
