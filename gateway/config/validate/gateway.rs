//! `[gateway]`, `[admin]` and `[telemetry]`: the listeners, the limits every exchange and
//! connection is held to, and where metrics and spans go.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{opt, parse_addr, parse_otlp_endpoint, positive_duration};
use super::*;

/// What `[gateway]` gives the rest of validation, valid or not: the settings, and the values
/// services inherit (defaults where the file's value was refused, so that each error is
/// reported once, at its own key).
pub(super) struct Gateway {
    pub settings: Option<GatewaySettings>,
    pub max_request_body: u64,
    pub request_timeout: Duration,
    pub max_buffered: u64,
    pub schemas_dir: PathBuf,
}

/// The limits of `[gateway]`, each `None` when refused.
struct Limits {
    max_request_body: Option<u64>,
    handshake_timeout: Option<Duration>,
    header_read_timeout: Option<Duration>,
    max_header_size: Option<u32>,
    max_connections: Option<u32>,
    shutdown_grace: Option<Duration>,
    request_timeout: Option<Duration>,
    max_buffered: Option<u64>,
    max_connection_age: Option<Duration>,
}

pub(super) fn gateway(
    errors: &mut Errors,
    file: &FileConfig,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Gateway {
    let g = &file.gateway;
    if g.id.trim().is_empty() {
        errors.push(
            "gateway.id",
            "must name this gateway, e.g. \"spl.parigimoutongkab\"",
        );
    }
    let listen = errors.check("gateway.listen", parse_addr(&g.listen));
    let grpc_listen = match &g.grpc_listen {
        Some(a) => errors.check("gateway.grpc_listen", parse_addr(a)).map(Some),
        None => Some(None),
    };
    let admin_identities = file.admin.as_ref().map(|a| &a.identities);
    let admin_listen = admin(errors, g, admin_identities);
    let timezone = match &g.timezone {
        None => Some(TimeZone::JAKARTA),
        Some(tz) => errors.check(
            "gateway.timezone",
            TimeZone::parse(tz).ok_or_else(|| {
                format!("`{tz}` is not an Indonesian time zone; use Asia/Jakarta, Asia/Pontianak, Asia/Makassar, Asia/Jayapura or UTC")
            }),
        ),
    };
    let limits = limits(errors, g);
    let schemas_dir = resolve(g.schemas_dir.as_deref().unwrap_or("schemas"));
    let data_dir = resolve(g.data_dir.as_deref().unwrap_or("data"));

    let settings = (|| {
        Some(GatewaySettings {
            id: g.id.clone(),
            listen: listen?,
            grpc_listen: grpc_listen?,
            admin_listen: admin_listen?,
            admin_identities: admin_identities.cloned().unwrap_or_default(),
            data_dir,
            schemas_dir: schemas_dir.clone(),
            timezone: timezone?,
            max_request_body: limits.max_request_body?,
            handshake_timeout: limits.handshake_timeout?,
            header_read_timeout: limits.header_read_timeout?,
            max_header_size: limits.max_header_size?,
            max_connections: limits.max_connections?,
            shutdown_grace: limits.shutdown_grace?,
            request_timeout: limits.request_timeout?,
            max_buffered: limits.max_buffered?,
            max_connection_age: limits.max_connection_age?,
        })
    })();
    Gateway {
        settings,
        max_request_body: limits.max_request_body.unwrap_or(DEFAULT_MAX_REQUEST_BODY),
        request_timeout: limits.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        max_buffered: limits.max_buffered.unwrap_or(DEFAULT_MAX_BUFFERED),
        schemas_dir,
    }
}

/// `[admin] identities`, and the admin listener they allow off loopback.
fn admin(
    errors: &mut Errors,
    g: &super::super::file::GatewaySection,
    admin_identities: Option<&Vec<String>>,
) -> Option<SocketAddr> {
    if let Some(ids) = admin_identities {
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if id.trim().is_empty() {
                errors.push(format!("admin.identities[{i}]"), "must not be empty");
            } else if !seen.insert(id.as_str()) {
                errors.push(
                    format!("admin.identities[{i}]"),
                    format!("`{id}` is listed twice"),
                );
            }
        }
        if ids.is_empty() {
            errors.push(
                "admin.identities",
                "names no administrator; list the identity.field values of admin certificates, or leave [admin] out",
            );
        }
    }
    errors.check(
        "gateway.admin_listen",
        parse_addr(g.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN)).and_then(|a| {
            if a.ip().is_loopback() || admin_identities.is_some_and(|ids| !ids.is_empty()) {
                Ok(a)
            } else {
                Err(format!("`{a}` is not a loopback address; off loopback the admin API requires admin client certificates: set [admin] identities"))
            }
        }),
    )
}

fn limits(errors: &mut Errors, g: &super::super::file::GatewaySection) -> Limits {
    let max_request_body = opt(
        errors,
        "gateway.max_request_body",
        &g.max_request_body,
        parse_size,
    )
    .map(|v| v.unwrap_or(DEFAULT_MAX_REQUEST_BODY));
    let handshake_timeout = opt(
        errors,
        "gateway.handshake_timeout",
        &g.handshake_timeout,
        parse_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT));
    let header_read_timeout = opt(
        errors,
        "gateway.header_read_timeout",
        &g.header_read_timeout,
        parse_duration,
    )
    .map(|v| v.unwrap_or(Duration::from_secs(10)));
    let max_header_size = opt(
        errors,
        "gateway.max_header_size",
        &g.max_header_size,
        |text| {
            let size = parse_size(text)?;
            // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
            if !(MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&size) {
                return Err(format!("`{text}` is out of range; use 8KiB to 1MiB"));
            }
            Ok(size as u32)
        },
    )
    .map(|v| v.unwrap_or(DEFAULT_MAX_HEADER_SIZE));
    let max_connections = match g.max_connections {
        Some(0) => {
            errors.push("gateway.max_connections", "must be at least 1");
            None
        }
        other => Some(other.unwrap_or(10_000)),
    };
    let shutdown_grace = opt(
        errors,
        "gateway.shutdown_grace",
        &g.shutdown_grace,
        parse_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_SHUTDOWN_GRACE));
    let request_timeout = opt(
        errors,
        "gateway.request_timeout",
        &g.request_timeout,
        positive_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_REQUEST_TIMEOUT));
    let max_buffered = opt(errors, "gateway.max_buffered", &g.max_buffered, |text| {
        let size = parse_size(text)?;
        if size < MIN_MAX_BUFFERED {
            return Err(format!(
                "`{text}` is too small; at least 1MiB (a body being validated must fit)"
            ));
        }
        Ok(size)
    })
    .map(|v| v.unwrap_or(DEFAULT_MAX_BUFFERED));
    let max_connection_age = opt(
        errors,
        "gateway.max_connection_age",
        &g.max_connection_age,
        positive_duration,
    )
    .map(|v| v.unwrap_or(DEFAULT_MAX_CONNECTION_AGE));
    Limits {
        max_request_body,
        handshake_timeout,
        header_read_timeout,
        max_header_size,
        max_connections,
        shutdown_grace,
        request_timeout,
        max_buffered,
        max_connection_age,
    }
}

/// `[telemetry]`: `Some(None)` when nothing is exported.
pub(super) fn otlp(errors: &mut Errors, file: &FileConfig) -> Option<Option<OtlpSettings>> {
    let g = &file.gateway;
    let telemetry = file.telemetry.as_ref();
    let metrics_interval = telemetry
        .and_then(|t| t.metrics_interval.as_deref())
        .map_or(Some(Duration::from_secs(60)), |text| {
            errors.check(
                "telemetry.metrics_interval",
                parse_duration(text).and_then(|d| {
                    if d < Duration::from_secs(1) {
                        Err(format!("`{text}`: at least 1s"))
                    } else {
                        Ok(d)
                    }
                }),
            )
        });
    match telemetry.and_then(|t| t.otlp_endpoint.as_ref()) {
        None => {
            if let Some(t) = telemetry {
                let set = [
                    ("service_name", t.service_name.is_some()),
                    ("metrics_interval", t.metrics_interval.is_some()),
                ];
                for (key, _) in set.into_iter().filter(|(_, set)| *set) {
                    errors.push(
                        format!("telemetry.{key}"),
                        "needs telemetry.otlp_endpoint (nothing is exported without one)",
                    );
                }
            }
            Some(None)
        }
        Some(text) => errors
            .check("telemetry.otlp_endpoint", parse_otlp_endpoint(text))
            .zip(metrics_interval)
            .map(|(endpoint, metrics_interval)| {
                Some(OtlpSettings {
                    endpoint,
                    service_name: telemetry
                        .and_then(|t| t.service_name.clone())
                        .unwrap_or_else(|| g.id.clone()),
                    metrics_interval,
                })
            }),
    }
}
