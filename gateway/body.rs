//! Bodies: the one response body type the pipeline returns, and the bounded read of a request
//! body that happens before any upstream contact.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Frame;

use crate::reject::Reject;

/// Every response body: a streamed upstream body or a small body of the gateway's own.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A complete body of the gateway's own (problem documents, sample services).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Reads a request body of at most `limit` bytes. A declared `Content-Length` over the limit is
/// refused without reading a byte; a body that grows past it while streaming is refused as soon
/// as it does. Either way the upstream is never contacted.
pub async fn read_limited<B>(body: B, declared: Option<u64>, limit: u64) -> Result<Bytes, Reject>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if declared.is_some_and(|n| n > limit) {
        return Err(Reject::BodyTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(Reject::BodyTooLarge { limit }),
        Err(e) => Err(Reject::BodyRead(e)),
    }
}

/// A response body read as far as a cache may keep it.
pub enum Read {
    /// The whole body, at most the limit.
    Whole(Bytes),
    /// Larger than the limit, or with trailers: the same body, from its first byte, to stream.
    Stream(Body, &'static str),
}

/// Reads `body` whole if it ends within `limit` bytes without trailers; otherwise gives back
/// a body that replays what was read and streams the rest, so nothing is lost.
pub async fn read_up_to(mut body: Body, limit: u64) -> Result<Read, hyper::Error> {
    if hyper::body::Body::size_hint(&body).lower() > limit {
        return Ok(Read::Stream(body, "too-large"));
    }
    let mut read = Vec::new();
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let reason = match frame.data_ref() {
            Some(data) => {
                length += data.len() as u64;
                (length > limit).then_some("too-large")
            }
            None => Some("trailers"),
        };
        read.push(frame);
        if let Some(reason) = reason {
            let replay = Replay {
                read: read.into(),
                rest: body,
            };
            return Ok(Read::Stream(replay.boxed(), reason));
        }
    }
    let mut whole = bytes::BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
    for frame in read {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Ok(Read::Whole(whole.freeze()))
}

/// Frames already read, then the rest of the body.
struct Replay {
    read: std::collections::VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.read.pop_front() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}
