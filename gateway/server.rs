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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::caller::{Caller, Resolved};
use crate::grpc::Services;
use crate::reject::CloseConnection;
use crate::runtime::Gateway;

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
    // Every connection holds a receiver: `true` asks it to finish gracefully, and the drain
    // is over when none is left.
    let (drain, draining) = watch::channel(false);
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
            draining: draining.clone(),
            handshake_timeout,
        };
        tokio::spawn(async move {
            connection.run(stream, remote).await;
            drop(permit);
        });
    }

    drop(accept);
    drop(draining);
    tracing::info!(
        connections = drain.receiver_count(),
        "shutting down: no longer accepting"
    );
    let _ = drain.send(true);
    match tokio::time::timeout(grace, drain.closed()).await {
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
    /// `true` once the listener drains (SIGTERM).
    draining: watch::Receiver<bool>,
    handshake_timeout: Duration,
}

/// Why a connection was asked to finish: it ends gracefully (HTTP/1.1: after the request in
/// flight, `Connection: close`; HTTP/2: GOAWAY, streams in flight finish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The listener drains.
    Drain,
    /// A refusal that no later request on this connection could escape (a certificate revoked,
    /// untrusted, unpinned or naming no agency; a request body cut off).
    Refused,
    /// `max_connection_age`, or for a certificate that names no agency, `header_read_timeout`.
    Age,
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
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let mut caller = Caller::resolve(&active.snapshot, remote, identity).with_chain(chain);
        if let Resolved::Agency(i) = caller.agency {
            if let Some(agency) = active.snapshot.agencies.get(i) {
                let fingerprint = &caller.identity.fingerprint;
                self.gateway.saw_client(&agency.code, fingerprint, cert);
            }
        }
        caller.generation = active.generation;
        let caller = Arc::new(caller);
        let settings = &active.snapshot.gateway;
        // A certificate that names no agency is refused on its first request and gets no
        // longer than a request head may take to send one.
        let age = match caller.agency {
            Resolved::Agency(_) => settings.max_connection_age,
            Resolved::Unknown => {
                tracing::info!(%remote, names = ?caller.identity.names, "certificate names no agency");
                settings
                    .header_read_timeout
                    .min(settings.max_connection_age)
            }
            Resolved::NotPinned(_) => {
                tracing::warn!(
                    %remote, names = ?caller.identity.names, fingerprint = %caller.identity.fingerprint,
                    "certificate is not among the agency's pinned certificates"
                );
                settings
                    .header_read_timeout
                    .min(settings.max_connection_age)
            }
            // Only a later configuration can say so; the handshake's verifier accepted it.
            Resolved::Revoked | Resolved::Untrusted => settings.header_read_timeout,
        };
        drop(active);
        let close = Arc::new(tokio::sync::Notify::new());

        let ended = match self.front {
            Front::Https => {
                let io = TokioIo::new(tls);
                let gateway = self.gateway.clone();
                let closer = close.clone();
                let service = service_fn(move |request| {
                    let (gateway, caller, closer) =
                        (gateway.clone(), caller.clone(), closer.clone());
                    let http2 = request.version() == http::Version::HTTP_2;
                    async move {
                        // The exchange's future is large; boxed, the task hyper spawns per
                        // stream holds a pointer instead of being copied whole at each move.
                        let response = Box::pin(gateway.handle(&caller, request)).await;
                        if let Some(close) = response.extensions().get::<CloseConnection>() {
                            if close.http2 || !http2 {
                                closer.notify_one();
                            }
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let conn = self.http.serve_connection(io, service).into_owned();
                until_closed(conn, self.draining, close, age).await
            }
            Front::Grpc(services) => {
                // Unary answers end in trailers: see `Coalescing`.
                let io = TokioIo::new(Coalescing(tls));
                let gateway = self.gateway.clone();
                let closer = close.clone();
                let service = service_fn(move |request| {
                    let (services, caller, closer) =
                        (services.clone(), caller.clone(), closer.clone());
                    // The gRPC services answer with statuses; whether the certificate still
                    // earns an answer is asked here, as the pipeline asks it.
                    let active = gateway.active();
                    if let Err(reject) = caller
                        .at(&active.snapshot, active.generation)
                        .consumer(&active.snapshot)
                    {
                        if reject.closes_connection() {
                            closer.notify_one();
                        }
                    }
                    async move { Ok::<_, Infallible>(services.call(caller, request).await) }
                });
                let conn = self.http.serve_connection(io, service).into_owned();
                until_closed(conn, self.draining, close, age).await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
    }
}

/// Serves `conn` until it ends, or until it is asked to finish — the listener drains, a
/// refusal closes it (`close`), or it reaches `age` — and then lets it finish gracefully.
///
/// The three reasons to finish are awaited by a task of their own, which tells the connection
/// through a oneshot: the connection's task is woken for every read and write, and polling a
/// oneshot costs an atomic load where polling a `Notify`, a `watch` and a timer each time took
/// two mutexes and the timer's state (measured: docs/performance.md, issue #15).
async fn until_closed<I, S, B>(
    conn: auto::Connection<'static, I, S, TokioExecutor>,
    mut draining: watch::Receiver<bool>,
    close: Arc<tokio::sync::Notify>,
    age: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: auto::HttpServerConnExec<S::Future, B>,
{
    // The listener's drain waits for every receiver to be dropped: this one stays with the
    // connection until it has ended.
    let _counted = draining.clone();
    let (asked, mut finish) = tokio::sync::oneshot::channel();
    // Aborted when the connection's future goes, however it goes: the watcher holds a timer
    // of up to `max_connection_age` and a drain receiver.
    let _watcher = AbortOnDrop(tokio::spawn(async move {
        let closing = tokio::select! {
            _ = draining.wait_for(|d| *d) => Closing::Drain,
            () = close.notified() => Closing::Refused,
            () = tokio::time::sleep(age) => Closing::Age,
        };
        let _ = asked.send(closing);
    }));
    tokio::pin!(conn);
    let closing = tokio::select! {
        biased;
        ended = conn.as_mut() => return ended,
        closing = &mut finish => closing.unwrap_or(Closing::Drain),
    };
    tracing::debug!(?closing, "closing the connection gracefully");
    conn.as_mut().graceful_shutdown();
    conn.await
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
