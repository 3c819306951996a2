//! The gateway's own documents for PD developers, under `/.well-known/spl/` on the main
//! listener: the catalog of what the caller may see, and each visible service's OpenAPI
//! document. Both answer to the caller's identity: an agency sees the services its clearance
//! reaches and those it holds agreements for, and nothing tells it that others exist.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response};
use serde_json::{json, Value};

use crate::body::{full, Body};
use crate::config::{Classification, Date, Snapshot};
use crate::reject::Reject;
use crate::route::NormalPath;

/// The first two segments of every gateway document.
pub const WELL_KNOWN: [&str; 2] = [".well-known", "spl"];

/// Whether a normalised path is one of the gateway's documents.
pub fn is_catalog_path(path: &NormalPath) -> bool {
    path.segments().len() >= 2 && path.segments()[..2] == WELL_KNOWN
}

/// Serves `GET /.well-known/spl/catalog` and `GET /.well-known/spl/openapi/{service}.json`.
pub fn serve(
    snapshot: &Snapshot,
    consumer: usize,
    today: Date,
    method: &Method,
    path: &NormalPath,
) -> Result<Response<Body>, Reject> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(Reject::MethodNotAllowed {
            service: "gateway documents".to_owned(),
            method: method.clone(),
            allow: vec![Method::GET, Method::HEAD],
        });
    }
    match &path.segments()[2..] {
        [doc] if doc == "catalog" => {
            let body =
                serde_json::to_vec_pretty(&catalog(snapshot, consumer, today)).unwrap_or_default();
            Ok(json_response(Bytes::from(body)))
        }
        [dir, file] if dir == "openapi" => {
            let id = file.strip_suffix(".json").ok_or(Reject::NoService)?;
            let index = snapshot
                .services
                .iter()
                .position(|s| s.id == id)
                .filter(|&i| visible(snapshot, consumer, i))
                .ok_or(Reject::NoService)?;
            Ok(json_response(snapshot.openapi[index].clone()))
        }
        _ => Err(Reject::NoService),
    }
}

/// The catalog as the caller sees it.
pub fn catalog(snapshot: &Snapshot, consumer: usize, today: Date) -> Value {
    let agency = &snapshot.agencies[consumer];
    let services: Vec<Value> = snapshot
        .services
        .iter()
        .enumerate()
        .filter(|&(i, _)| visible(snapshot, consumer, i))
        .map(|(i, service)| {
            let own = snapshot.agreements_for(consumer, i);
            let operations: Vec<Value> = service
                .operations
                .iter()
                .enumerate()
                .map(|(j, op)| {
                    let agreements: Vec<Value> = own
                        .iter()
                        .map(|&a| &snapshot.agreements[a])
                        .filter(|a| a.operations.as_ref().is_none_or(|ops| ops.contains(&j)))
                        .map(|a| {
                            json!({
                                "id": a.id,
                                "purpose": a.purpose,
                                "valid_from": a.valid_from.to_string(),
                                "valid_until": a.valid_until.to_string(),
                                "in_force": a.valid_from <= today && today <= a.valid_until,
                                "basis": a.basis.as_str(),
                                "owner_signed": a.owner_signature.is_some(),
                            })
                        })
                        .collect();
                    let params: serde_json::Map<String, Value> = op
                        .params
                        .iter()
                        .map(|p| (p.name.clone(), json!(p.schema.name)))
                        .collect();
                    json!({
                        "id": op.id,
                        "method": op.method.as_str(),
                        "path": format!("{}{}", service.prefix, op.path),
                        "request_schema": op.request_schema.as_ref().map(|s| &s.name),
                        "response_schema": op.response_schema.as_ref().map(|s| &s.name),
                        "params": params,
                        "agreements": agreements,
                        "cache_ttl_seconds": op.cache_ttl.map(|t| t.as_secs()),
                    })
                })
                .collect();
            json!({
                "id": service.id,
                "owner": snapshot.agencies[service.owner].code,
                "classification": service.classification.as_str(),
                "handling": handling(service.classification),
                "prefix": service.prefix,
                "openapi": format!("/.well-known/spl/openapi/{}.json", service.id),
                "operations": operations,
            })
        })
        .collect();
    json!({
        "gateway": snapshot.gateway.id,
        "agency": agency.code,
        "clearance": agency.clearance.as_str(),
        "clearance_basis": agency.clearance_basis,
        "services": services,
    })
}

/// What a consumer owes the data it receives from a service of a classification (Perbup Maluku
/// Tengah 50/2020 Ps 14(5): a user of another owner's data keeps it confidential). Every
/// response of the service carries the classification as `SPL-Classification`.
fn handling(classification: Classification) -> Value {
    let (id, en) = match classification {
        Classification::Terbuka => (
            "Data terbuka: boleh digunakan dan dibagikan ulang dengan menyebut wali datanya.",
            "Open data: may be used and shared on, naming its data owner.",
        ),
        Classification::Terbatas => (
            "Data terbatas: hanya untuk tujuan perjanjian bagi pakai data; jaga kerahasiaannya dan jangan dibagikan kepada pihak lain tanpa izin wali data.",
            "Restricted data: for the agreement's purpose only; keep it confidential and share it with no one else without the data owner's permission.",
        ),
        Classification::Rahasia => (
            "Data rahasia: hanya untuk tujuan perjanjian, oleh petugas yang berwenang; jaga kerahasiaannya, jangan disimpan lebih lama dari yang diperlukan, jangan dibagikan.",
            "Secret data: for the agreement's purpose only, by authorised staff; keep it confidential, keep it no longer than needed, share it with no one.",
        ),
        Classification::SangatRahasia => (
            "Data sangat rahasia: hanya untuk tujuan perjanjian, oleh petugas yang ditunjuk; jangan disimpan, disalin atau dibagikan; laporkan setiap kebocoran kepada wali data.",
            "Top secret data: for the agreement's purpose only, by designated staff; do not store, copy or share it; report any leak to the data owner.",
        ),
    };
    json!({
        "classification": classification.as_str(),
        "header": "SPL-Classification",
        "duty": { "id": id, "en": en },
    })
}

/// A service is visible to an agency whose clearance reaches its classification, or that holds
/// an agreement for it.
fn visible(snapshot: &Snapshot, consumer: usize, service: usize) -> bool {
    snapshot.agencies[consumer].clearance >= snapshot.services[service].classification
        || !snapshot.agreements_for(consumer, service).is_empty()
}

fn json_response(body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
