//! Who is on the other end of a connection: resolved once, right after the TLS handshake, and
//! shared by every request on that connection — and resolved again, once per configuration
//! generation, when a reload changes what the certificate means: the agency it names may have
//! moved or gone, its pins changed, a CRL may now revoke it or its issuer be no longer trusted.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::config::Snapshot;
use crate::reject::Reject;
use crate::tls::PeerIdentity;

#[derive(Debug, Clone)]
pub struct Caller {
    pub remote: SocketAddr,
    pub identity: PeerIdentity,
    pub agency: Resolved,
    /// The configuration generation `agency` was resolved in (see `Gateway::reload`).
    pub generation: u64,
    /// The chain the client presented at the handshake (end entity first), checked again
    /// against a later configuration's trust anchors and CRLs. Empty: not checked again (a
    /// caller made up in a test, or by the CLI).
    pub chain: Arc<[CertificateDer<'static>]>,
    /// This caller as the newest generation it was asked about sees it; shared by every
    /// request of the connection, so each reload costs a connection one check, not one per
    /// request.
    again: Arc<ArcSwapOption<Caller>>,
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
    /// A CRL of the configuration in force revokes the certificate (the connection was opened
    /// before it was loaded).
    Revoked,
    /// The configuration in force no longer trusts the certificate: its issuer is not in
    /// `tls.client_ca` any more, or it has expired since the handshake.
    Untrusted,
}

/// A caller as a given generation sees it: the one resolved at the handshake, or the one
/// resolved again after a reload.
pub enum Current<'a> {
    Same(&'a Caller),
    Again(Arc<Caller>),
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
            chain: Arc::from(Vec::new()),
            again: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// The same caller, with the chain it presented (to be checked again after reloads).
    pub fn with_chain(mut self, chain: &[CertificateDer<'_>]) -> Caller {
        self.chain = chain.iter().map(|c| c.clone().into_owned()).collect();
        self
    }

    /// The agency this caller is (an index into `snapshot.agencies`, the snapshot it was
    /// resolved against), or the refusal its certificate earns.
    pub fn consumer(&self, snapshot: &Snapshot) -> Result<usize, Reject> {
        match self.agency {
            Resolved::Agency(i) => Ok(i),
            Resolved::NotPinned(i) => Err(Reject::CertificateNotPinned {
                agency: snapshot.agencies[i].code.clone(),
            }),
            Resolved::Unknown => Err(Reject::UnknownAgency),
            Resolved::Revoked => Err(Reject::CertificateRevoked),
            Resolved::Untrusted => Err(Reject::CertificateUntrusted),
        }
    }

    /// This caller as the configuration of `generation` sees it: itself, or resolved again
    /// after a reload (agency indexes, identities, pins, trust anchors and CRLs may have
    /// changed). Resolving again happens once per connection and generation.
    pub fn at(&self, snapshot: &Snapshot, generation: u64) -> Current<'_> {
        if self.generation == generation {
            return Current::Same(self);
        }
        if let Some(known) = self.again.load_full() {
            if known.generation == generation {
                return Current::Again(known);
            }
        }
        let mut again = Caller::resolve(snapshot, self.remote, self.identity.clone());
        again.generation = generation;
        again.chain = self.chain.clone();
        again.again = self.again.clone();
        if let Some((leaf, intermediates)) = self.chain.split_first() {
            let verified =
                snapshot
                    .client_verifier
                    .verify_client_cert(leaf, intermediates, UnixTime::now());
            match verified {
                Ok(_) => {}
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => {
                    again.agency = Resolved::Revoked
                }
                Err(_) => again.agency = Resolved::Untrusted,
            }
        }
        let again = Arc::new(again);
        // A later generation may have been stored meanwhile; the newest wins.
        self.again.rcu(|known| match known {
            Some(k) if k.generation > generation => Some(k.clone()),
            _ => Some(again.clone()),
        });
        Current::Again(again)
    }
}

// === impl Current ===

impl std::ops::Deref for Current<'_> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        match self {
            Current::Same(caller) => caller,
            Current::Again(caller) => caller,
        }
    }
}
