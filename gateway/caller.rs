//! Who is on the other end of a connection: resolved once, right after the TLS handshake, and
//! shared by every request on that connection.

use std::net::SocketAddr;

use crate::config::Snapshot;
use crate::tls::PeerIdentity;

#[derive(Debug, Clone)]
pub struct Caller {
    pub remote: SocketAddr,
    pub identity: PeerIdentity,
    /// Index into `Snapshot::agencies`; `None` when the certificate names no agency, which
    /// every request on the connection is refused for.
    pub agency: Option<usize>,
}

// === impl Caller ===

impl Caller {
    pub fn resolve(snapshot: &Snapshot, remote: SocketAddr, identity: PeerIdentity) -> Caller {
        let agency = snapshot.agency_for(&identity.names);
        Caller {
            remote,
            identity,
            agency,
        }
    }
}
