//! Every certificate the gateway relies on, as seen on the wire (Perbup Maluku Tenggara
//! 37/2021 Ps 21(9): the Dinas monitors certificates): each client certificate an agency or
//! peer presented at a handshake, and each server certificate an upstream presented at connect
//! — subject, issuer, serial, SHA-256 fingerprint, expiry, first and last seen.
//!
//! A handshake notes its certificate in memory (a look-up by fingerprint; the certificate is
//! parsed only the first time). The list is kept in `<data_dir>/certificates.json`, written
//! whole by the runtime at most every few seconds and at shutdown, so a crash loses at most the
//! latest `last_seen` times, never a certificate seen before the last write.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The file under `data_dir`.
pub const FILE: &str = "certificates.json";

/// A certificate last seen longer ago than this is history: listed, but neither a metric nor a
/// warning (it was replaced, or its application retired).
pub const RECENT_SECONDS: i64 = 30 * 86_400;

/// Who presented the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An agency's or peer's application, at a handshake with the gateway.
    Client,
    /// A service's upstream, when the gateway connected to it.
    Upstream,
}

/// One certificate seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub role: Role,
    /// The agency or peer (`client`), or the service (`upstream`).
    pub party: String,
    /// `upstream`: the server name the gateway asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    pub subject: String,
    pub issuer: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds.
    pub last_seen: i64,
}

/// The certificates seen, and where they are kept.
pub struct Sightings {
    file: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    list: Vec<Sighting>,
    /// (role, party, sha256) → index into `list`.
    index: HashMap<(Role, String, String), usize>,
    /// Changed since the last write.
    dirty: bool,
}

// === impl Sightings ===

impl Sightings {
    /// The certificates kept under `data_dir`; none when the file does not exist. A file that
    /// cannot be read is an error, not an empty inventory: the history it holds would be lost.
    pub fn open(data_dir: &Path) -> std::io::Result<Sightings> {
        let file = data_dir.join(FILE);
        let list: Vec<Sighting> = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "{} is not a certificate inventory: {e}",
                    file.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let index = list
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.role, s.party.clone(), s.sha256.clone()), i))
            .collect();
        Ok(Sightings {
            file,
            inner: Mutex::new(Inner {
                list,
                index,
                dirty: false,
            }),
        })
    }

    /// Notes that `party` presented `der` (whose SHA-256 is `sha256`) at `now` (Unix seconds).
    pub fn saw(
        &self,
        role: Role,
        party: &str,
        sha256: &str,
        der: &[u8],
        server_name: Option<&str>,
        now: i64,
    ) {
        let mut inner = self.lock();
        let key = (role, party.to_owned(), sha256.to_owned());
        if let Some(&i) = inner.index.get(&key) {
            let seen = &mut inner.list[i];
            if seen.last_seen < now {
                seen.last_seen = now;
                inner.dirty = true;
            }
            return;
        }
        // The handshake's verifier accepted it, so it parses; if not, it is not an inventory's.
        let Ok((_, parsed)) = X509Certificate::from_der(der) else {
            return;
        };
        let sighting = Sighting {
            role,
            party: party.to_owned(),
            server_name: server_name.map(str::to_owned),
            subject: parsed.subject().to_string(),
            issuer: parsed.issuer().to_string(),
            serial: parsed.raw_serial_as_string().replace(':', ""),
            sha256: sha256.to_owned(),
            not_after: parsed.validity().not_after.timestamp(),
            first_seen: now,
            last_seen: now,
        };
        let at = inner.list.len();
        inner.list.push(sighting);
        inner.index.insert(key, at);
        inner.dirty = true;
    }

    /// Every certificate seen, by role, party and first sighting.
    pub fn list(&self) -> Vec<Sighting> {
        let mut list = self.lock().list.clone();
        list.sort_by(|a, b| {
            (a.role, &a.party, a.first_seen, &a.sha256).cmp(&(
                b.role,
                &b.party,
                b.first_seen,
                &b.sha256,
            ))
        });
        list
    }

    /// Writes the list if it changed since the last write.
    pub fn keep(&self) -> std::io::Result<()> {
        let bytes = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            serde_json::to_vec_pretty(&inner.list).map_err(std::io::Error::other)?
        };
        crate::durable::replace(&self.file, &bytes).inspect_err(|_| {
            self.lock().dirty = true;
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while noting a sighting leaves a list that is still a list.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The inventory kept under `data_dir`, read without a running gateway (`penghubung certs`).
pub fn read(data_dir: &Path) -> std::io::Result<Vec<Sighting>> {
    Ok(Sightings::open(data_dir)?.list())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_parsed_once_then_only_its_last_sighting_moves() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::pki::Authority::new("Test CA").unwrap();
        let der = ca.issue_client("dinkes", None).unwrap().cert.to_vec();
        let sha = crate::keys::sha256_hex(&der);
        let seen = Sightings::open(dir.path()).unwrap();
        seen.saw(Role::Client, "dinkes", &sha, &der, None, 100);
        seen.saw(Role::Client, "dinkes", &sha, &der, None, 250);
        seen.saw(Role::Client, "dinkes", &sha, b"not parsed again", None, 300);
        let list = seen.list();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].first_seen, list[0].last_seen), (100, 300));
        assert!(list[0].subject.contains("dinkes"), "{}", list[0].subject);
        assert!(!list[0].serial.is_empty());
        seen.keep().unwrap();
        assert_eq!(read(dir.path()).unwrap(), list);
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(Sightings::open(dir.path()).is_err());
    }
}
