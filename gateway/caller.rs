//! Who is on the other end of a connection: resolved once, right after the TLS handshake, and
//! shared by every request on that connection.

use std::net::SocketAddr;

use crate::config::Snapshot;
use crate::tls::PeerIdentity;

#[derive(Debug, Clone)]
pub struct Caller {
    pub remote: SocketAddr,
    pub identity: PeerIdentity,
    pub agency: Resolved,
    /// The configuration generation `agency` was resolved in (see `Gateway::reload`).
    pub generation: u64,
}

/// What the certificate's identity resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// An agency (index into `Snapshot::agencies`).
    Agency(usize),
    /// The certificate names an agency that pins its certificates, and this is not one of them.
    NotPinned(usize),
    /// The certificate names no agency (or two).
    Unknown,
}

// === impl Caller ===

impl Caller {
    pub fn resolve(snapshot: &Snapshot, remote: SocketAddr, identity: PeerIdentity) -> Caller {
        let agency = match snapshot.agency_for(&identity.names) {
            None => Resolved::Unknown,
            Some(i) => {
                let pins = &snapshot.agencies[i].pins;
                if pins.is_empty() || pins.contains(&identity.fingerprint) {
                    Resolved::Agency(i)
                } else {
                    Resolved::NotPinned(i)
                }
            }
        };
        Caller {
            remote,
            identity,
            agency,
            generation: 0,
        }
    }

    /// This caller as the configuration of `generation` sees it: itself, or resolved again
    /// after a reload (agency indexes, identities and pins may have changed).
    pub fn at(&self, snapshot: &Snapshot, generation: u64) -> std::borrow::Cow<'_, Caller> {
        if self.generation == generation {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut again = Caller::resolve(snapshot, self.remote, self.identity.clone());
        again.generation = generation;
        std::borrow::Cow::Owned(again)
    }
}
