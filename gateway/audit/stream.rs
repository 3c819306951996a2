//! Recording a streamed answer (gRPC): the response body passes through as it comes, the
//! commitment to its messages and their length are taken on the way, and the exchange is appended when it ends — before
//! the final trailers are released. If the record cannot be made durable, the caller gets
//! `grpc-status: 14` (UNAVAILABLE, `spl-problem: audit-unavailable`) instead of the upstream's
//! trailers, so a call never completes successfully unrecorded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Frame;

use super::commit::{Committer, Nonce};
use super::{AuditLog, Expected, Record};
use crate::body::{Body, BodyError};
use crate::outcome::{Outcome, Problem};

/// The `grpc-status` in `headers` (trailers, or the headers of a Trailers-Only answer).
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Where a streamed answer's record goes.
pub struct Recording {
    pub audit: AuditLog,
    /// The room held for the record at admission.
    pub expected: Option<Expected>,
    /// When the exchange began.
    pub started: Instant,
}

/// `body`, recorded as `record` once it ends, with a commitment under `nonce`.
pub fn recorded(
    body: Body,
    mut record: Record,
    recording: Recording,
    head: &http::response::Parts,
    nonce: &Nonce,
) -> Body {
    let Recording {
        audit,
        expected,
        started,
    } = recording;
    record.status = Some(head.status.as_u16());
    record.grpc_status = grpc_status(&head.headers);
    Recorded {
        inner: body,
        committer: Some(Committer::new(nonce, true)),
        record: Some(record),
        audit,
        expected,
        started,
        appending: None,
        trailers: None,
        ended: false,
    }
    .boxed()
}

struct Recorded {
    inner: Body,
    /// Taken when the record is finished.
    committer: Option<Committer>,
    record: Option<Record>,
    audit: AuditLog,
    expected: Option<Expected>,
    started: Instant,
    /// The append under way, once the body has ended.
    appending: Option<tokio::task::JoinHandle<bool>>,
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl Recorded {
    fn finish(&mut self, outcome: Option<Outcome>) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        if let Some(status) = self.trailers.as_ref().and_then(grpc_status) {
            record.grpc_status = Some(status);
        }
        if let Some(outcome) = outcome {
            record.outcome = outcome.as_str().to_owned();
        }
        record.response = self.committer.take().map(Committer::finish);
        record.latency_us =
            Some(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let audit = self.audit.clone();
        let expected = self.expected.take();
        let id = record.exchange_id.clone().unwrap_or_default();
        // A body dropped while the runtime shuts down has nowhere to append from; the log
        // then lacks the call, which the crash-recovery rules already allow for.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(exchange_id = %id, "streamed exchange dropped at shutdown, unrecorded");
            return;
        };
        self.appending = Some(runtime.spawn(async move {
            match audit.append_expected(record, expected).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(exchange_id = %id, error = %e, "streamed exchange not recorded; failing the call");
                    false
                }
            }
        }));
    }
}

impl hyper::body::Body for Recorded {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if let Some(appending) = self.appending.as_mut() {
                let recorded = match Pin::new(appending).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(done) => done.unwrap_or(false),
                };
                self.appending = None;
                let trailers = if recorded {
                    self.trailers.take()
                } else {
                    Some(unrecorded())
                };
                return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let data = data.clone();
                        if let Some(committer) = self.committer.as_mut() {
                            committer.update(&data);
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers = Some(trailers);
                    }
                    self.ended = true;
                    self.finish(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    self.finish(Some(match e {
                        BodyError::Deadline(_) => Outcome::Refused(Problem::UpstreamTimeout),
                        BodyError::Broken(_) => Outcome::Refused(Problem::UpstreamProtocolError),
                    }));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    self.finish(None);
                }
            }
        }
    }
}

impl Drop for Recorded {
    /// A caller that goes away mid-stream still leaves a record.
    fn drop(&mut self) {
        if self.record.is_some() {
            self.finish(Some(Outcome::CallerCancelled));
        }
    }
}

/// The trailers of a call whose record could not be made durable.
fn unrecorded() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("14"));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("the exchange could not be recorded in the audit log"),
    );
    trailers.insert("spl-problem", HeaderValue::from_static("audit-unavailable"));
    trailers
}
