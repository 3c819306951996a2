//! Bodies: the one response body type the pipeline returns, and the bounded reads of request
//! and response bodies (before any upstream contact; for validation, audit and the cache).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;

use crate::budget::{Held, OverBudget, Part};

/// Every response body: a streamed upstream body or a small body of the gateway's own.
pub type Body = BoxBody<Bytes, BodyError>;

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream broke off or broke the protocol.
    #[error("the upstream's body broke off")]
    Broken(#[from] hyper::Error),
    /// The exchange's deadline (`request_timeout`) passed first.
    #[error("the exchange's deadline of {0:?} passed before the body ended")]
    Deadline(Duration),
}

/// `body`, keeping what the exchange holds (`held`) until the body is sent or dropped.
pub fn holding(body: Body, held: Held) -> Body {
    if held.bytes() == 0 {
        return body;
    }
    // The closure owns the account; it goes when the body goes.
    body.map_frame(move |frame| {
        let _held = &held;
        frame
    })
    .boxed()
}

/// An upstream's response body, held to the exchange's deadline (`timer`, which ends then;
/// `after` is the `request_timeout` it came from): past it, the next read fails with
/// [`BodyError::Deadline`] — a 504 while nothing was sent, a reset stream afterwards.
pub fn with_deadline(
    body: hyper::body::Incoming,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    after: Duration,
) -> Body {
    Deadline {
        inner: body,
        sleep: timer,
        after,
        expired: false,
    }
    .boxed()
}

struct Deadline {
    inner: hyper::body::Incoming,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    after: Duration,
    expired: bool,
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        use std::future::Future;
        use std::task::Poll;
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Broken)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                Poll::Ready(Some(Err(BodyError::Deadline(self.after))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A complete body of the gateway's own (problem documents, sample services).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum Unread<E> {
    /// It declared, or grew to, more than the limit; reading stopped there.
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body itself failed (the peer broke off, a protocol error).
    #[error("the body could not be read")]
    Broken(#[source] E),
    /// Holding it would pass the memory budget (`[gateway] max_buffered`).
    #[error("the body cannot be held: {0}")]
    OverBudget(#[source] OverBudget),
}

/// Reads a body whole, at most `limit` bytes, holding what it reads in `hold` (an exchange's
/// account of the memory budget, and which of its bodies this is). A declared size
/// (`Content-Length`, or the body's own size hint) over the limit or over the budget is refused
/// without reading a byte; a body that grows past either is refused as soon as it does.
/// Trailers are dropped.
pub async fn collect_within<B>(
    body: B,
    declared: Option<u64>,
    limit: u64,
    mut hold: Option<(&mut Held, Part)>,
) -> Result<Bytes, Unread<B::Error>>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let hint = body.size_hint();
    if declared.is_some_and(|n| n > limit) || hint.lower() > limit {
        return Err(Unread::TooLarge { limit });
    }
    if let Some((held, part)) = hold.as_mut() {
        let known = declared.unwrap_or(0).max(hint.lower());
        held.want(*part, known).map_err(Unread::OverBudget)?;
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest = bytes::BytesMut::new();
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Unread::Broken)?.into_data() else {
            continue;
        };
        length += data.len() as u64;
        if length > limit {
            return Err(Unread::TooLarge { limit });
        }
        if let Some((held, part)) = hold.as_mut() {
            held.want(*part, length).map_err(Unread::OverBudget)?;
        }
        // One frame (the common case) is kept as it came, without a copy.
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(first) = first.take() {
                    rest.reserve(usize::try_from(hint.exact().unwrap_or(0)).unwrap_or(0));
                    rest.extend_from_slice(&first);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// A response body read as far as a cache may keep it.
pub enum Read {
    /// The whole body, at most the limit.
    Whole(Bytes),
    /// Larger than the limit, or with trailers: the same body, from its first byte, to stream.
    Stream(Body, &'static str),
}

/// Reads `body` whole if it ends within `limit` bytes without trailers, holding it in `held`;
/// otherwise gives back a body that replays what was read and streams the rest, so nothing is
/// lost — also when the memory budget cannot hold it (`over-budget`).
pub async fn read_up_to(mut body: Body, limit: u64, held: &mut Held) -> Result<Read, BodyError> {
    let hint = hyper::body::Body::size_hint(&body).lower();
    if hint > limit {
        return Ok(Read::Stream(body, "too-large"));
    }
    if held.want(Part::Response, hint).is_err() {
        return Ok(Read::Stream(body, "over-budget"));
    }
    let mut read = Vec::new();
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let reason = match frame.data_ref() {
            Some(data) => {
                length += data.len() as u64;
                if length > limit {
                    Some("too-large")
                } else if held.want(Part::Response, length).is_err() {
                    Some("over-budget")
                } else {
                    None
                }
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
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.read.pop_front() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// A body whose data frames are at most `max` bytes: a longer frame is handed on in pieces
/// (zero-copy splits of the same buffer); trailers pass unchanged.
///
/// The gRPC front answers with one message and then trailers. h2 copies a DATA payload under
/// its chain threshold (1 KiB on our TLS stream, see `server::Coalescing`) into its write
/// buffer, where the trailers can follow it into the same flush; a longer payload is chained
/// and must be flushed first, which costs every call a second TLS write.
pub struct Pieces<B> {
    inner: B,
    rest: Bytes,
    max: usize,
}

impl<B> Pieces<B> {
    pub fn new(inner: B, max: usize) -> Pieces<B> {
        Pieces {
            inner,
            rest: Bytes::new(),
            max: max.max(1),
        }
    }
}

impl<B> hyper::body::Body for Pieces<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            let n = this.rest.len().min(this.max);
            return std::task::Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))));
        }
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx));
        std::task::Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_data() {
                Ok(mut data) => {
                    if data.len() > this.max {
                        this.rest = data.split_off(this.max);
                    }
                    Frame::data(data)
                }
                Err(trailers) => trailers,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}
