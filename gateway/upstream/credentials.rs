//! Outbound credentials (`upstream_auth`), applied to every request forwarded to a service's
//! upstream: an API key header, or an OAuth2 client-credentials bearer token — fetched once,
//! cached until shortly before it expires (tokio's clock), refreshed by one request however
//! many callers need it, and dropped when the upstream answers 401 (the caller's request is
//! then retried once with a fresh token). Neither secrets nor tokens are ever logged.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::time::Instant;

use crate::config::{Secret, UpstreamAuth};

/// A token endpoint's answer larger than this is refused.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;
/// A token is renewed this long before it expires (or at 90% of its lifetime, if sooner).
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// The lifetime assumed when the token endpoint does not say (`expires_in` is optional).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The credentials of one service's upstream.
pub enum Credentials {
    ApiKey {
        header: HeaderName,
        value: HeaderValue,
    },
    OAuth2(TokenSource),
}

/// An OAuth2 client-credentials token, cached.
pub struct TokenSource {
    token_url: http::Uri,
    /// `Basic base64(form(client_id):form(client_secret))`, RFC 6749 §2.3.1.
    basic: HeaderValue,
    scope: Option<String>,
    cached: Mutex<Option<Token>>,
    /// Held while a token is fetched: one fetch, however many requests need it.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Token {
    bearer: HeaderValue,
    renew_at: Instant,
    /// Which fetch produced it, so that a 401 drops only the token it was answered with.
    generation: u64,
}

/// A token as sent, and which one it is.
pub struct Bearer {
    pub header: HeaderValue,
    pub generation: u64,
}

// === impl Credentials ===

impl Credentials {
    pub fn new(auth: &UpstreamAuth) -> Credentials {
        match auth {
            UpstreamAuth::ApiKey { header, value } => Credentials::ApiKey {
                header: header.clone(),
                value: sensitive(value.expose()),
            },
            UpstreamAuth::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scope,
            } => Credentials::OAuth2(TokenSource::new(
                token_url.clone(),
                client_id,
                client_secret,
                scope.clone(),
            )),
        }
    }
}

// === impl TokenSource ===

impl TokenSource {
    fn new(token_url: http::Uri, id: &str, secret: &Secret, scope: Option<String>) -> TokenSource {
        let pair = format!("{}:{}", form(id), form(secret.expose()));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        );
        TokenSource {
            token_url,
            basic: sensitive(&basic),
            scope,
            cached: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// A token that is not about to expire: the cached one, or a new one from the endpoint.
    pub async fn bearer(&self, client: &HttpClient, timeout: Duration) -> Result<Bearer, String> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _one = self.fetching.lock().await;
        // Whoever held the lock before may have fetched it already.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let (bearer, lifetime) = tokio::time::timeout(timeout, self.fetch(client))
            .await
            .map_err(|_| format!("the token endpoint did not answer within {timeout:?}"))??;
        let renew_in = lifetime.saturating_sub(RENEW_BEFORE.min(lifetime / 10));
        let mut cached = self.cached.lock().map_err(|e| e.to_string())?;
        let generation = cached.as_ref().map_or(1, |t| t.generation + 1);
        *cached = Some(Token {
            bearer: bearer.clone(),
            renew_at: Instant::now() + renew_in,
            generation,
        });
        tracing::info!(token_url = %self.token_url, lifetime = ?lifetime, "upstream token obtained");
        Ok(Bearer {
            header: bearer,
            generation,
        })
    }

    /// The upstream refused the token of `generation`: the next request fetches another.
    pub fn reject(&self, generation: u64) {
        if let Ok(mut cached) = self.cached.lock() {
            if cached.as_ref().is_some_and(|t| t.generation == generation) {
                if let Some(t) = cached.as_mut() {
                    t.renew_at = Instant::now();
                }
            }
        }
    }

    fn fresh(&self) -> Option<Bearer> {
        let cached = self.cached.lock().ok()?;
        let token = cached.as_ref()?;
        (Instant::now() < token.renew_at).then(|| Bearer {
            header: token.bearer.clone(),
            generation: token.generation,
        })
    }

    /// One token request (RFC 6749 §4.4.2).
    async fn fetch(&self, client: &HttpClient) -> Result<(HeaderValue, Duration), String> {
        let mut body = String::from("grant_type=client_credentials");
        if let Some(scope) = &self.scope {
            body.push_str("&scope=");
            body.push_str(&form(scope));
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.token_url.clone())
            .header(AUTHORIZATION, self.basic.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("the token endpoint could not be reached: {e}"))?;
        let status = response.status();
        let bytes = crate::body::collect_within(
            response.into_body(),
            None,
            MAX_TOKEN_RESPONSE as u64,
            None,
        )
        .await
        .map_err(|e| format!("the token endpoint's answer could not be read: {e}"))?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if status != StatusCode::OK {
            // The OAuth2 error code (RFC 6749 §5.2) is safe to log; the rest may not be.
            let error = doc["error"].as_str().unwrap_or("(none)");
            return Err(format!(
                "the token endpoint answered {status}, error `{error}`"
            ));
        }
        let token = doc["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or("the token endpoint's answer has no access_token")?;
        if let Some(kind) = doc["token_type"].as_str() {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(format!("token_type `{kind}` is not Bearer"));
            }
        }
        let lifetime = doc["expires_in"]
            .as_u64()
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the access_token is not a valid header value".to_owned())?;
        Ok((mark_sensitive(header), lifetime))
    }
}

fn sensitive(text: &str) -> HeaderValue {
    // Validated as a header value when the configuration was loaded.
    mark_sensitive(HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("")))
}

/// Sensitive values are left out of HPACK tables and `Debug` output.
fn mark_sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_are_form_encoded_before_basic() {
        assert_eq!(form("a b+c/ä"), "a+b%2Bc%2F%C3%A4");
        let source = TokenSource::new(
            "https://x/token".parse().unwrap(),
            "id:1",
            &secret("s p"),
            None,
        );
        let expected = base64::engine::general_purpose::STANDARD.encode("id%3A1:s+p");
        assert_eq!(source.basic.to_str().unwrap(), format!("Basic {expected}"));
        assert!(source.basic.is_sensitive());
        assert!(!format!("{:?}", source.basic).contains(&expected));
    }

    fn secret(text: &str) -> Secret {
        Secret::new(text.to_owned())
    }
}
