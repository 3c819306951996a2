//! The gRPC front (`[gateway] grpc_listen`): the contract in `proto/penghubung/v1/`, served over
//! the same mTLS listener code as HTTPS ([`crate::server`]), with the caller resolved once per
//! connection. `Exchange.Call` becomes the HTTP request its operation describes and runs
//! through [`Gateway::handle`] — the one pipeline; a refusal comes back as the gRPC status
//! [`Reject::grpc_code`](crate::reject::Reject::grpc_code) gives it. `Catalog` and `Audit`
//! answer from the same snapshot and audit log handles. Standard health checking
//! (`grpc.health.v1`) and server reflection (v1 and v1alpha) let stock clients work without the
//! proto files.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response};
use http_body_util::Full;
use tonic::codegen::Service;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::audit::{Lookup, LookupError};
use crate::caller::Caller;
use crate::config::Snapshot;
use crate::quota::{Decision, PerCaller};
use crate::reject::{Refusal, Reject};
use crate::upstream::SPL_AGREEMENT;
use crate::{
    pipeline::{ExchangeCall, MAX_AUDITED_RESPONSE},
    runtime::Gateway,
};

/// The generated code of the contract.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("penghubung.v1");

    /// The contract's file descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/penghubung_descriptor.bin"));
}

use proto::audit_server::{Audit, AuditServer};
use proto::catalog_server::{Catalog, CatalogServer};
use proto::exchange_server::{Exchange, ExchangeServer};

/// The largest DATA payload h2 copies into its write buffer on our TLS stream (its chain
/// threshold is 1 KiB when the stream does not write vectored).
const H2_COPIED_DATA: usize = 1023;

/// One gRPC service, boxed: the health and reflection servers have unnameable types.
type Boxed = tower::util::BoxCloneSyncService<
    Request<tonic::body::Body>,
    Response<tonic::body::Body>,
    Infallible,
>;

/// Every gRPC service the listener answers, by path prefix.
#[derive(Clone)]
pub struct Services {
    routes: Arc<[(&'static str, Boxed)]>,
}

/// The implementation of the contract's services, over the gateway's handles.
#[derive(Clone)]
pub struct Front {
    gateway: Arc<Gateway>,
    /// `[audit] rpc_rate` per agency, made anew when the configured rate changes.
    rpc_limit: Arc<std::sync::Mutex<Option<Arc<PerCaller>>>>,
}

// === impl Services ===

impl Services {
    pub async fn new(gateway: Arc<Gateway>) -> Services {
        let front = Front {
            gateway,
            rpc_limit: Arc::default(),
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_serving::<ExchangeServer<Front>>().await;
        reporter.set_serving::<CatalogServer<Front>>().await;
        reporter.set_serving::<AuditServer<Front>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // The descriptor sets are compiled in and valid; a failure here is a build bug.
        #[allow(clippy::expect_used)]
        let v1 = reflection()
            .build_v1()
            .expect("the compiled-in descriptors are valid");
        #[allow(clippy::expect_used)]
        let v1alpha = reflection()
            .build_v1alpha()
            .expect("the compiled-in descriptors are valid");
        Services {
            routes: Arc::new([
                (
                    "/penghubung.v1.Exchange/",
                    Boxed::new(ExchangeServer::new(front.clone())),
                ),
                (
                    "/penghubung.v1.Catalog/",
                    Boxed::new(CatalogServer::new(front.clone())),
                ),
                ("/penghubung.v1.Audit/", Boxed::new(AuditServer::new(front))),
                ("/grpc.health.v1.Health/", Boxed::new(health)),
                ("/grpc.reflection.v1.ServerReflection/", Boxed::new(v1)),
                (
                    "/grpc.reflection.v1alpha.ServerReflection/",
                    Boxed::new(v1alpha),
                ),
            ]),
        }
    }

    /// Answers one HTTP/2 request of a gRPC call from `caller`.
    pub async fn call<B>(
        &self,
        caller: Arc<Caller>,
        mut request: Request<B>,
    ) -> Response<tonic::body::Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        request.extensions_mut().insert(caller);
        let request = request.map(tonic::body::Body::new);
        let path = request.uri().path();
        let Some((_, service)) = self
            .routes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
        else {
            return Status::unimplemented(format!("no gRPC method {path}")).into_http();
        };
        match service.clone().call(request).await {
            // Under h2's copy threshold, so the trailers share the answer's flush.
            Ok(response) => response
                .map(|body| tonic::body::Body::new(crate::body::Pieces::new(body, H2_COPIED_DATA))),
            Err(never) => match never {},
        }
    }
}

// === impl Front ===

impl Front {
    fn caller<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>, Status> {
        request
            .extensions()
            .get::<Arc<Caller>>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))
    }

    /// The configuration in force and the agency the caller is in it, or the refusal an HTTPS
    /// request would get. Resolved again on every call, as the HTTP path does: a connection
    /// outlives reloads, and an agency index of an older generation may name another agency
    /// (or none) in this one.
    fn agency(&self, caller: &Caller) -> Result<(Arc<Snapshot>, usize), Status> {
        let active = self.gateway.active();
        let snapshot = active.snapshot.clone();
        let consumer = caller
            .at(&snapshot, active.generation)
            .consumer(&snapshot)
            .map_err(|reject| refused(&reject))?;
        Ok((snapshot, consumer))
    }
}

#[tonic::async_trait]
impl Exchange for Front {
    async fn call(
        &self,
        request: tonic::Request<proto::CallRequest>,
    ) -> Result<tonic::Response<proto::CallResponse>, Status> {
        let caller = Front::caller(&request)?;
        let call = request.into_inner();
        let gateway = &self.gateway;
        let response = match http_request(gateway, &call) {
            Ok(http) => gateway.handle(&caller, http).await,
            Err(refusal) => {
                let (method, reject) = *refusal;
                gateway.refuse(&caller, &method, reject).await
            }
        };
        let exchange_id = response
            .headers()
            .get(crate::upstream::SPL_EXCHANGE_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Some(refusal) = response.extensions().get::<Refusal>() {
            let mut status = Status::new(refusal.code, refusal.detail.clone());
            let metadata = status.metadata_mut();
            metadata.insert(
                "spl-problem",
                MetadataValue::from_static(refusal.problem.as_str()),
            );
            if let Ok(id) = exchange_id.parse() {
                metadata.insert("spl-exchange-id", id);
            }
            if let Some(nonce) = response
                .headers()
                .get(crate::audit::SPL_COMMITMENT_NONCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                metadata.insert(crate::audit::SPL_COMMITMENT_NONCE, nonce);
            }
            return Err(status);
        }
        let (parts, body) = response.into_parts();
        let body = crate::body::collect_within(body, None, MAX_AUDITED_RESPONSE as u64, None)
            .await
            .map_err(|e| {
                Status::new(Code::Internal, format!("the answer could not be read: {e}"))
            })?;
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| proto::Header {
                name: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect();
        Ok(tonic::Response::new(proto::CallResponse {
            status: u32::from(parts.status.as_u16()),
            headers,
            body: body.to_vec(),
            exchange_id,
        }))
    }
}

/// A call that never becomes an HTTP request: the method to record, and the refusal.
type Unroutable = (Method, Reject);

/// The HTTPS request `call` describes, or the refusal (with the method to record) when it
/// names nothing configured or leaves a path parameter out.
fn http_request(
    gateway: &Gateway,
    call: &proto::CallRequest,
) -> Result<Request<Full<Bytes>>, Box<Unroutable>> {
    let snapshot = gateway.snapshot();
    let Some(service) = snapshot.services.iter().find(|s| s.id == call.service) else {
        return Err(Box::new((Method::POST, Reject::NoService)));
    };
    let Some(operation) = service.operations.iter().find(|o| o.id == call.operation) else {
        return Err(Box::new((
            Method::POST,
            Reject::NoOperation {
                service: service.id.clone(),
            },
        )));
    };
    let path = operation
        .template
        .render(|name| call.path_params.get(name).map(String::as_str))
        .map_err(|missing| {
            Box::new((
                operation.method.clone(),
                Reject::InvalidParameter {
                    name: missing,
                    location: "path",
                    violations: vec![crate::schema::Violation {
                        pointer: String::new(),
                        keyword: "required".to_owned(),
                        message: "the path parameter has no value in path_params".to_owned(),
                    }],
                },
            ))
        })?;
    let mut target = format!("{}{}", service.prefix.trim_end_matches('/'), path);
    if !call.query.is_empty() {
        target.push('?');
        target.push_str(&call.query);
    }
    let mut builder = Request::builder()
        .method(operation.method.clone())
        .uri(&target);
    if !call.body.is_empty() {
        builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if !call.agreement.is_empty() {
        builder = builder.header(SPL_AGREEMENT, &call.agreement);
    }
    builder
        .extension(ExchangeCall)
        .body(Full::new(Bytes::from(call.body.clone())))
        .map_err(|e| Box::new((operation.method.clone(), Reject::BadHeader(e))))
}

fn refused(reject: &Reject) -> Status {
    let mut status = Status::new(reject.grpc_code(), reject.to_string());
    status
        .metadata_mut()
        .insert("spl-problem", MetadataValue::from_static(reject.slug()));
    status
}

#[tonic::async_trait]
impl Catalog for Front {
    async fn list_services(
        &self,
        request: tonic::Request<proto::ListServicesRequest>,
    ) -> Result<tonic::Response<proto::ListServicesResponse>, Status> {
        let caller = Front::caller(&request)?;
        let (snapshot, consumer) = self.agency(&caller)?;
        let doc = crate::catalog::catalog(&snapshot, consumer, self.gateway.today());
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        Ok(tonic::Response::new(proto::ListServicesResponse {
            gateway: text(&doc["gateway"]),
            consumer: text(&doc["agency"]),
            clearance: text(&doc["clearance"]),
            services: doc["services"]
                .as_array()
                .into_iter()
                .flatten()
                .map(service_info)
                .collect(),
        }))
    }

    async fn get_service(
        &self,
        request: tonic::Request<proto::GetServiceRequest>,
    ) -> Result<tonic::Response<proto::ServiceInfo>, Status> {
        let caller = Front::caller(&request)?;
        let (snapshot, consumer) = self.agency(&caller)?;
        let id = request.into_inner().service;
        let doc = crate::catalog::catalog(&snapshot, consumer, self.gateway.today());
        let found = doc["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == id.as_str());
        let (Some(found), Some(index)) = (found, snapshot.services.iter().position(|s| s.id == id))
        else {
            return Err(refused(&Reject::NoService));
        };
        let mut info = service_info(found);
        info.openapi = snapshot.openapi[index].to_vec();
        Ok(tonic::Response::new(info))
    }
}

/// A service of the catalog document (`catalog::catalog`), as the contract's message.
fn service_info(s: &serde_json::Value) -> proto::ServiceInfo {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    proto::ServiceInfo {
        id: text(&s["id"]),
        owner: text(&s["owner"]),
        classification: text(&s["classification"]),
        prefix: text(&s["prefix"]),
        operations: s["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|op| proto::OperationInfo {
                id: text(&op["id"]),
                method: text(&op["method"]),
                path: text(&op["path"]),
                request_schema: text(&op["request_schema"]),
                response_schema: text(&op["response_schema"]),
                params: op["params"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect(),
                agreements: op["agreements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| proto::AgreementInfo {
                        id: text(&a["id"]),
                        purpose: text(&a["purpose"]),
                        valid_from: text(&a["valid_from"]),
                        valid_until: text(&a["valid_until"]),
                        in_force: a["in_force"].as_bool().unwrap_or(false),
                    })
                    .collect(),
                cache_ttl_seconds: op["cache_ttl_seconds"].as_u64().unwrap_or(0),
            })
            .collect(),
        openapi: Vec::new(),
    }
}

#[tonic::async_trait]
impl Audit for Front {
    async fn get_receipt(
        &self,
        request: tonic::Request<proto::GetReceiptRequest>,
    ) -> Result<tonic::Response<proto::Receipt>, Status> {
        let caller = Front::caller(&request)?;
        let (snapshot, agency) = self.agency(&caller)?;
        let code = snapshot.agencies[agency].code.clone();
        let lookup = self.audit_lookup(&snapshot, &code)?;
        let id = request.into_inner().exchange_id;
        let not_found = || Status::not_found(format!("no exchange {id} of yours is recorded"));
        let receipt = {
            let id = id.clone();
            blocking(move || lookup.receipt(&id)).await?
        };
        let receipt = match receipt {
            Ok(r) => r,
            Err(LookupError::NotFound(_)) => return Err(not_found()),
            Err(e @ LookupError::NotCovered(_)) => {
                return Err(Status::failed_precondition(e.to_string()))
            }
            Err(e) => return Err(index_failed(&e)),
        };
        // Only the consumer or the service's owner may have it: anyone else learns nothing,
        // not even that the exchange exists.
        let record: crate::audit::Record =
            serde_json::from_str(&receipt.record).map_err(|e| Status::internal(e.to_string()))?;
        if record.consumer.as_deref() != Some(&code) && record.owner.as_deref() != Some(&code) {
            return Err(not_found());
        }
        let json =
            serde_json::to_string_pretty(&receipt).map_err(|e| Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(proto::Receipt {
            json,
            record: receipt.record,
            leaf_index: receipt.leaf_index,
            tree_size: receipt.tree_size,
            inclusion_proof: receipt.inclusion_proof,
            tree_head: receipt.tree_head,
        }))
    }

    async fn get_tree_head(
        &self,
        request: tonic::Request<proto::GetTreeHeadRequest>,
    ) -> Result<tonic::Response<proto::TreeHead>, Status> {
        let caller = Front::caller(&request)?;
        let (snapshot, agency) = self.agency(&caller)?;
        let lookup = self.audit_lookup(&snapshot, &snapshot.agencies[agency].code)?;
        let Some(line) = lookup.latest_head() else {
            return Err(Status::failed_precondition(LookupError::NoHead.to_string()));
        };
        let record: crate::audit::Record =
            serde_json::from_str(&line).map_err(|e| Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(proto::TreeHead {
            tree_size: record.tree_size.unwrap_or(0),
            root: record.root.unwrap_or_default(),
            time: record.time,
            signature: record.signature.unwrap_or_default(),
            line,
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: tonic::Request<proto::GetConsistencyProofRequest>,
    ) -> Result<tonic::Response<proto::ConsistencyProof>, Status> {
        let caller = Front::caller(&request)?;
        let (snapshot, agency) = self.agency(&caller)?;
        let lookup = self.audit_lookup(&snapshot, &snapshot.agencies[agency].code)?;
        let ask = request.into_inner();
        let proof = match blocking(move || lookup.consistency(ask.old_size, ask.new_size)).await? {
            Ok(proof) => proof,
            Err(e @ (LookupError::Backwards | LookupError::NoSuchHead(_))) => {
                return Err(Status::invalid_argument(e.to_string()))
            }
            Err(e) => return Err(index_failed(&e)),
        };
        Ok(tonic::Response::new(proto::ConsistencyProof {
            old_size: proof.old_size,
            old_root: proof.old_root,
            new_size: proof.new_size,
            new_root: proof.new_root,
            proof: proof.proof,
        }))
    }
}

/// Runs an index look-up (a few small reads) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))
}

/// An index that could not answer: logged in full, the caller told no more than that.
fn index_failed(e: &LookupError) -> Status {
    tracing::error!(error = %e, "an audit look-up failed");
    Status::unavailable("the audit index cannot answer now; try again later")
}

impl Front {
    /// The audit log's look-ups, once `agency` is within its `[audit] rpc_rate`.
    fn audit_lookup(&self, snapshot: &Snapshot, agency: &str) -> Result<Lookup, Status> {
        let (Some(audit), Some(settings)) = (self.gateway.audit(), snapshot.audit.as_ref()) else {
            return Err(Status::failed_precondition(
                "this gateway keeps no audit log",
            ));
        };
        let limiter = {
            let Ok(mut current) = self.rpc_limit.lock() else {
                return Err(Status::internal("the audit quota is unavailable"));
            };
            match current.as_ref() {
                Some(limiter) if limiter.rate() == settings.rpc_rate => limiter.clone(),
                _ => current
                    .insert(Arc::new(PerCaller::new(settings.rpc_rate)))
                    .clone(),
            }
        };
        if let Decision::Limited { retry_after } = limiter.check(agency) {
            let mut status = Status::resource_exhausted(format!(
                "agency `{agency}` has used its audit quota ({} per {} s); retry in {} s",
                settings.rpc_rate.count,
                settings.rpc_rate.per.as_secs(),
                crate::reject::retry_seconds(retry_after)
            ));
            status.metadata_mut().insert(
                "retry-after",
                MetadataValue::from(crate::reject::retry_seconds(retry_after)),
            );
            return Err(status);
        }
        Ok(audit.lookup())
    }
}
