//! Conclude: the end of every exchange, forwarded or refused — its outcome, the refusal's log
//! line, the metrics and SLA figures, the audit record (before the response is released), the
//! span, and `SPL-Exchange-Id` and `SPL-Commitment-Nonce` on the response.

use http::header::HeaderValue;
use http::{Method, Response};

use crate::audit::{self, AuditLog, Nonce, Record, SPL_COMMITMENT_NONCE};
use crate::body::{collect_within, full, Body};
use crate::budget::{Held, Part};
use crate::config::Snapshot;
use crate::otlp;
use crate::outcome::{Outcome, Violated};
use crate::reject::{Refusal, Reject, Severity};
use crate::runtime::Gateway;
use crate::telemetry::{Direction, Parties};
use crate::upstream::SPL_EXCHANGE_ID;

use super::{Facts, Seen};

/// With an audit log, a response is read whole for its digest before it is released; one larger
/// than this is refused (502) rather than held in memory without bound.
pub const MAX_AUDITED_RESPONSE: usize = 64 << 20;

impl Gateway {
    /// The end of every exchange: the outcome, the refusal logged, metrics, the audit record
    /// (before the response is released), and `SPL-Exchange-Id`.
    pub(super) async fn conclude(
        &self,
        seen: Seen<'_>,
        mut facts: Facts,
        result: Result<Response<Body>, Reject>,
        held: &mut Held,
    ) -> Response<Body> {
        let outcome = match &result {
            Ok(_) if facts.cache.is_some_and(|c| c.served()) => Outcome::ServedFromCache,
            Ok(_) if facts.unconforming => Outcome::ForwardedSchemaViolation,
            Ok(_) => Outcome::Forwarded,
            Err(reject) => Outcome::Refused(reject.problem()),
        };
        let span = tracing::Span::current();
        if !span.is_disabled() {
            let s = &seen.active.snapshot;
            if let Some(i) = facts.consumer {
                span.record("consumer", s.agencies[i].code.as_str());
            }
            if let Some(i) = facts.service {
                span.record("service", s.services[i].id.as_str());
                if let Some(j) = facts.operation {
                    span.record("operation", s.services[i].operations[j].id.as_str());
                }
            }
            if let Some(i) = facts.agreement {
                span.record("agreement", s.agreements[i].id.as_str());
            }
            span.record("outcome", outcome.as_str());
        }
        let mut response = match result {
            Ok(response) => response,
            Err(reject) => {
                log_refusal(&reject, &seen, &facts);
                refusal(&reject, &seen)
            }
        };
        self.count(
            &seen.active.snapshot,
            seen.active.generation,
            &facts,
            outcome,
            response.status().as_u16(),
            seen.started.elapsed(),
        );
        if let Some(i) = facts.service {
            let grpc_status = audit::stream::grpc_status(response.headers());
            let kind = outcome.kind(Some(response.status().as_u16()), grpc_status);
            let id = &seen.active.snapshot.services[i].id;
            self.sla
                .record_in(&seen.active.sla, i, id, kind, seen.started.elapsed());
        }
        let id = HeaderValue::from_str(&seen.exchange.id);
        let started = seen.started;
        let (active, exchange, method) = (seen.active, seen.exchange, seen.method);
        let (consumer, service, operation) = (facts.consumer, facts.service, facts.operation);
        // With an audit log every exchange has a nonce (drawn in `handle` or `refuse`).
        let nonce = facts.nonce.take();
        if let (Some(audit), Some(nonce)) = (&self.audit, &nonce) {
            response = self
                .record(audit, seen, outcome, facts, nonce, response, held)
                .await;
        }
        if let Ok(id) = id {
            response.headers_mut().insert(SPL_EXCHANGE_ID, id);
        }
        if let Some(nonce) = nonce {
            response
                .headers_mut()
                .insert(SPL_COMMITMENT_NONCE, nonce.header_value());
        }
        if let Some(exporter) = &active.otlp {
            let s = &active.snapshot;
            let service_entry = service.map(|i| &s.services[i]);
            exporter.record(otlp::Ended {
                exchange,
                elapsed: started.elapsed(),
                method: recorded_method(method),
                consumer: consumer.map(|i| s.agencies[i].code.as_str()),
                service: service_entry.map(|e| e.id.as_str()),
                operation: service_entry
                    .zip(operation)
                    .map(|(e, j)| e.operations[j].id.as_str()),
                outcome,
                status: response.status().as_u16(),
            });
        }
        // The access log, for those who ask for it (RUST_LOG=penghubung=debug); the audit log
        // is the record.
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "exchange concluded"
        );
        response
    }

    /// Counts the exchange, and a schema violation if that is what happened to it.
    fn count(
        &self,
        s: &Snapshot,
        generation: u64,
        facts: &Facts,
        outcome: Outcome,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let parties = Parties {
            service: facts.service,
            operation: facts.operation,
            consumer: facts.consumer,
            agreement: facts.agreement,
        };
        self.telemetry
            .exchange(s, generation, parties, outcome, status, elapsed);
        let service = facts.service.map_or("", |i| s.services[i].id.as_str());
        let operation = match (facts.service, facts.operation) {
            (Some(i), Some(j)) => s.services[i].operations[j].id.as_str(),
            _ => "",
        };
        let violation = match outcome {
            Outcome::Refused(problem) => problem.violation().map(|v| (v, true)),
            Outcome::ForwardedSchemaViolation => Some((Violated::Response, false)),
            _ => None,
        };
        if let Some((violated, enforced)) = violation {
            let direction = match violated {
                Violated::Parameter => Direction::Parameter,
                Violated::Request => Direction::Request,
                Violated::Response => Direction::Response,
            };
            self.telemetry
                .schema_violation(service, operation, direction, enforced);
        }
    }

    /// Records the exchange and releases the response only once the record is durable; the
    /// response body is read whole first, for its commitment under `nonce`. If the record cannot
    /// be made durable
    /// the caller gets 503 instead of the response.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        audit: &AuditLog,
        mut seen: Seen<'_>,
        outcome: Outcome,
        facts: Facts,
        nonce: &Nonce,
        response: Response<Body>,
        held: &mut Held,
    ) -> Response<Body> {
        let expected = seen.expected.take();
        // A gRPC answer streams (server-streaming calls may be long); it is recorded when it
        // ends, from the commitment taken on the way.
        if seen.grpc && response.extensions().get::<Refusal>().is_none() {
            let record = self.skeleton(&seen, outcome, facts);
            let (parts, body) = response.into_parts();
            let recording = audit::stream::Recording {
                audit: audit.clone(),
                expected: expected.map(audit::Expected::streaming),
                started: seen.started,
            };
            let body = audit::stream::recorded(body, record, recording, &parts, nonce);
            return Response::from_parts(parts, body);
        }
        // What an `Exchange.Call` caller gets: OK, or its refusal's code.
        let call_status = seen.call.then(|| {
            response
                .extensions()
                .get::<Refusal>()
                .map_or(0, |refusal| refusal.code as u32)
        });
        let (parts, body) = response.into_parts();
        let hold = Some((&mut *held, Part::Response));
        let collected = collect_within(body, None, MAX_AUDITED_RESPONSE as u64, hold).await;
        let (parts, bytes, outcome, call_status) = match collected {
            Ok(bytes) => (parts, bytes, outcome, call_status),
            Err(unread) => {
                let service = facts
                    .service
                    .map(|i| seen.active.snapshot.services[i].id.clone())
                    .unwrap_or_default();
                let reject = Reject::unread_response(&service, unread, |limit| {
                    Reject::UpstreamResponseTooLarge {
                        service: service.clone(),
                        limit,
                    }
                });
                tracing::warn!(exchange_id = %seen.exchange.id, problem = reject.slug(), error = %reject.log_message(), "the upstream response could not be read whole");
                let (parts, body) = refusal(&reject, &seen).into_parts();
                let bytes = collect_within(body, None, MAX_AUDITED_RESPONSE as u64, None)
                    .await
                    .unwrap_or_default();
                // Refused while its answer was read: the caller gets the refusal's code.
                let call_status = seen.call.then(|| reject.grpc_code() as u32);
                (
                    parts,
                    bytes,
                    Outcome::Refused(reject.problem()),
                    call_status,
                )
            }
        };
        let mut record = self.skeleton(&seen, outcome, facts);
        record.status = Some(parts.status.as_u16());
        record.grpc_status = audit::stream::grpc_status(&parts.headers).or(call_status);
        record.response = Some(audit::commit(nonce, false, &bytes));
        record.latency_us =
            Some(u64::try_from(seen.started.elapsed().as_micros()).unwrap_or(u64::MAX));
        match audit.append_expected(record, expected).await {
            Ok(_) => Response::from_parts(parts, full(bytes)),
            Err(e) => {
                tracing::error!(exchange_id = %seen.exchange.id, error = %e, "exchange not recorded; refusing it");
                refusal(&Reject::AuditUnavailable, &seen)
            }
        }
    }

    /// The exchange's record, but for what only the response's end tells (status, response
    /// commitment, latency).
    fn skeleton(&self, seen: &Seen<'_>, outcome: Outcome, facts: Facts) -> Record {
        let s = &*seen.active.snapshot;
        let service = facts.service.map(|i| &s.services[i]);
        let operation = service
            .zip(facts.operation)
            .map(|(svc, j)| &svc.operations[j]);
        let agreement = facts.agreement.map(|i| &s.agreements[i]);
        Record {
            time: audit::timestamp(self.clock.now_millis()),
            gateway: s.gateway.id.clone(),
            kind: "exchange".to_owned(),
            outcome: outcome.as_str().to_owned(),
            exchange_id: Some(seen.exchange.id.clone()),
            consumer: facts.consumer.map(|i| s.agencies[i].code.clone()),
            cert_sha256: Some(seen.caller.identity.fingerprint.clone()),
            service: service.map(|svc| svc.id.clone()),
            owner: service.map(|svc| s.agencies[svc.owner].code.clone()),
            operation: operation.map(|op| op.id.clone()),
            agreement: agreement.map(|a| a.id.clone()),
            purpose: agreement.map(|a| a.purpose.clone()),
            basis: agreement.map(|a| a.basis.as_str().to_owned()),
            method: Some(recorded_method(seen.method).to_owned()),
            path_template: operation.map(|op| op.path.clone()),
            redaction_key: facts
                .target
                .as_ref()
                .and(s.audit.as_ref())
                .and_then(|a| a.redactor.as_ref())
                .map(|r| r.key_id().to_owned()),
            target: facts.target,
            request: facts.request,
            cache: facts.cache.map(|c| c.as_str().to_owned()),
            detail: facts.origin.map(|id| format!("stored by exchange {id}")),
            trace_id: Some(seen.exchange.trace.trace_id.clone()),
            ..Record::default()
        }
    }
}

/// The refusal as the caller's protocol expects it.
fn refusal(reject: &Reject, seen: &Seen<'_>) -> Response<Body> {
    if seen.grpc {
        reject.to_grpc_response(&seen.exchange.id)
    } else {
        reject.to_response(&seen.exchange.id)
    }
}

/// A method as records and logs name it: one of RFC 9110's and PATCH, or `other` (an
/// extension method is any token the caller chose).
fn recorded_method(method: &Method) -> &str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    if KNOWN.contains(method) {
        method.as_str()
    } else {
        "other"
    }
}

/// The log line of a refusal: the exchange id, who and what it concerned (by configured
/// names), the problem slug and the target as the audit record writes it (values hashed) —
/// never the raw path, query, headers or body, which may carry a citizen's data.
fn log_refusal(reject: &Reject, seen: &Seen<'_>, facts: &Facts) {
    let s = &seen.active.snapshot;
    let consumer = facts.consumer.map_or("", |i| s.agencies[i].code.as_str());
    let service = facts.service.map(|i| &s.services[i]);
    let operation = service
        .zip(facts.operation)
        .map_or("", |(svc, j)| svc.operations[j].id.as_str());
    let service = service.map_or("", |svc| svc.id.as_str());
    let target = facts.target.as_deref().unwrap_or("");
    let message = reject.log_message();
    match reject.severity() {
        Severity::Caller => tracing::info!(
            exchange_id = %seen.exchange.id, remote = %seen.caller.remote, consumer, service,
            operation, target, problem = reject.slug(), "refused: {message}"
        ),
        Severity::Upstream => {
            // Transport errors (connect, TLS, HTTP framing): they name no data.
            let cause = std::error::Error::source(reject).map(|s| s.to_string());
            tracing::warn!(
                exchange_id = %seen.exchange.id, remote = %seen.caller.remote, consumer,
                service, operation, target, problem = reject.slug(),
                cause = cause.as_deref().unwrap_or(""), "refused: {message}"
            )
        }
    }
}
