//! Bodies: the one response body type the pipeline returns, and the bounded read of a request
//! body that happens before any upstream contact.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

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
