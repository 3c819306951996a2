//! The listeners: accept, TLS handshake with a required client certificate, resolve the caller
//! once, then serve HTTP/1.1 or HTTP/2 (by ALPN) on the connection — through the pipeline on the
//! HTTPS listener, through the gRPC services ([`crate::grpc`]) on `grpc_listen`. Shutdown stops
//! accepting, lets in-flight requests finish up to the grace period, and returns.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::caller::{Caller, Resolved};
use crate::grpc::Services;
use crate::pipeline::Gateway;

/// Serves `listener` until `shutdown` resolves, then drains: in-flight requests get up to the
/// configured `shutdown_grace` to finish. Returns when drained or when the grace runs out.
/// The upstreams' active health checks and the OTLP metrics export run as long as this does;
/// after the drain, the last spans and metrics are sent (at most 3 s).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let checks = AbortOnDrop(tokio::spawn(gateway.clone().check_upstreams()));
    let metrics = AbortOnDrop(tokio::spawn(gateway.clone().export_metrics()));
    let served = serve_front(listener, gateway.clone(), Front::Https, shutdown).await;
    drop((checks, metrics));
    gateway.flush_telemetry(TELEMETRY_FLUSH).await;
    served
}

/// How long the last spans and metrics may take to reach the collector at shutdown.
const TELEMETRY_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the gRPC contract on `listener`, with the same TLS, identity and drain as [`serve`].
pub async fn serve_grpc(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let services = Services::new(gateway.clone()).await;
    serve_front(listener, gateway, Front::Grpc(services), shutdown).await
}

/// What a listener speaks once a connection is up.
#[derive(Clone)]
enum Front {
    Https,
    Grpc(Services),
}

async fn serve_front(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    front: Front,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let snapshot = gateway.snapshot();
    let handshake_timeout = snapshot.gateway.handshake_timeout;
    let grace = snapshot.gateway.shutdown_grace;
    let graceful = GracefulShutdown::new();
    let mut http = auto::Builder::new(TokioExecutor::new());
    // A client that trickles its request headers (slowloris) is cut off.
    http.http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(snapshot.gateway.header_read_timeout)
        // A head larger than this is answered 431 (hyper reads it into this buffer).
        .max_buf_size(snapshot.gateway.max_header_size as usize);
    http.http2()
        .max_header_list_size(snapshot.gateway.max_header_size);
    let http = Arc::new(http);
    tokio::pin!(shutdown);

    // At most `max_connections` open: past it, new connections wait in the kernel's backlog.
    let accept = Accept::new(listener, snapshot.gateway.max_connections as usize);
    loop {
        let (stream, remote, permit) = tokio::select! {
            next = accept.next() => next,
            () = &mut shutdown => break,
        };
        // The TLS configuration in force when the connection arrives: a reload that rotates
        // the certificate applies to new connections.
        let connection = Connection {
            acceptor: TlsAcceptor::from(gateway.snapshot().server_tls.clone()),
            gateway: gateway.clone(),
            front: front.clone(),
            http: http.clone(),
            watcher: graceful.watcher(),
            handshake_timeout,
        };
        tokio::spawn(async move {
            connection.run(stream, remote).await;
            drop(permit);
        });
    }

    drop(accept);
    tracing::info!(
        in_flight = graceful.count(),
        "shutting down: no longer accepting"
    );
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(grace = ?grace, "grace period over; closing remaining connections")
        }
    }
    Ok(())
}

/// The accept loop of a listener (the main, gRPC and admin listeners share it): at most `cap`
/// connections open — past it, new ones wait in the kernel's backlog — and a failed accept
/// (out of descriptors, a transient network error) backs off instead of spinning, because the
/// connection that could not be taken is still pending and would fail again at once.
pub(crate) struct Accept {
    listener: TcpListener,
    connections: Arc<Semaphore>,
}

/// How long a listener waits after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Accept {
    pub(crate) fn new(listener: TcpListener, cap: usize) -> Accept {
        Accept {
            listener,
            connections: Arc::new(Semaphore::new(cap)),
        }
    }

    /// The next connection, with the permit that holds its place until it is dropped.
    pub(crate) async fn next(&self) -> (TcpStream, std::net::SocketAddr, OwnedSemaphorePermit) {
        loop {
            // The semaphore is never closed.
            let Ok(permit) = self.connections.clone().acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((stream, remote)) => return (stream, remote, permit),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    drop(permit);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

struct Connection {
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    front: Front,
    http: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    handshake_timeout: Duration,
}

// === impl Connection ===

impl Connection {
    async fn run(self, stream: TcpStream, remote: std::net::SocketAddr) {
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        // The verifier requires a client certificate, so a finished handshake always has one.
        let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return;
        };
        let active = self.gateway.active();
        let identity = active.snapshot.identity.extract(cert);
        let mut caller = Caller::resolve(&active.snapshot, remote, identity);
        caller.generation = active.generation;
        let caller = Arc::new(caller);
        match caller.agency {
            Resolved::Agency(_) => {}
            Resolved::Unknown => {
                tracing::info!(%remote, names = ?caller.identity.names, "certificate names no agency")
            }
            Resolved::NotPinned(_) => tracing::warn!(
                %remote, names = ?caller.identity.names, fingerprint = %caller.identity.fingerprint,
                "certificate is not among the agency's pinned certificates"
            ),
        }

        let ended = match self.front {
            Front::Https => {
                let io = TokioIo::new(tls);
                let gateway = self.gateway.clone();
                let service = service_fn(move |request| {
                    let gateway = gateway.clone();
                    let caller = caller.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(&caller, request).await) }
                });
                let conn = self.http.serve_connection(io, service);
                self.watcher.watch(conn.into_owned()).await
            }
            Front::Grpc(services) => {
                // Unary answers end in trailers: see `Coalescing`.
                let io = TokioIo::new(Coalescing(tls));
                let service = service_fn(move |request| {
                    let services = services.clone();
                    let caller = caller.clone();
                    async move { Ok::<_, Infallible>(services.call(caller, request).await) }
                });
                let conn = self.http.serve_connection(io, service);
                self.watcher.watch(conn.into_owned()).await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
    }
}

/// A server TLS stream whose writes are only encrypted into rustls' send buffer; the bytes go
/// to the socket when the stream is flushed (or the buffer is full).
///
/// tokio-rustls writes to the socket on every `poll_write`, and says it writes vectored, which
/// makes h2 chain (not copy) every DATA payload of 256 bytes or more — and a chained frame
/// must be flushed before h2 can encode the next one. A gRPC answer is HEADERS, DATA and then
/// trailing HEADERS, so it cost two flushes, two TLS writes and two `writev` where an HTTPS
/// answer costs one. Reporting "not vectored" raises h2's threshold to 1 KiB (smaller payloads
/// are copied into its buffer, trailers follow in the same flush); buffering in rustls keeps a
/// chained payload, and hyper's HTTP/1.1 writes, to one socket write per flush.
/// See docs/performance.md, "the gRPC front".
struct Coalescing(tokio_rustls::server::TlsStream<TcpStream>);

impl AsyncRead for Coalescing {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalescing {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let tls = &mut self.get_mut().0;
        loop {
            let taken = tls.get_mut().1.writer().write(buf)?;
            if taken > 0 || buf.is_empty() {
                return Poll::Ready(Ok(taken));
            }
            // rustls' send buffer is full: send what it holds before taking more.
            ready!(Pin::new(&mut *tls).poll_flush(cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
