//! `penghubung serve` and `penghubung demo`: the listeners, the gateway behind them, reloads on
//! SIGHUP and (with --watch) on a changed file, and a graceful stop on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use penghubung::runtime::Gateway;
use penghubung::{config, demo, server};
use std::io::Write as _;
use tokio::net::{TcpListener, TcpSocket};

use super::load;

/// `serve`.
pub async fn serve_command(config: &Path, watch: bool) -> anyhow::Result<ExitCode> {
    let Some(snapshot) = load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    let listen = snapshot.gateway.listen;
    let listener = reserve(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let grpc = match snapshot.gateway.grpc_listen {
        Some(addr) => {
            Some(reserve(addr).with_context(|| format!("cannot listen on {addr} (gRPC)"))?)
        }
        None => None,
    };
    serve(snapshot, listener, grpc, watch, None).await?;
    Ok(ExitCode::SUCCESS)
}

/// `demo`.
pub async fn demo_command(dir: &Path, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    // Bound first, so that `--listen 127.0.0.1:0` works and the printed commands name
    // the real port.
    let listener = reserve(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let chosen_freely = listen.port() == 0;
    let listen = listener.local_addr()?;
    // gRPC on the next port (any free port when the main one was chosen freely: the
    // next one may well be taken).
    let grpc_port = if chosen_freely || listen.port() == u16::MAX {
        0
    } else {
        listen.port() + 1
    };
    let grpc = reserve(SocketAddr::new(listen.ip(), grpc_port))
        .with_context(|| format!("cannot listen on {}:{grpc_port} (gRPC)", listen.ip()))?;
    let grpc_listen = grpc.local_addr()?;
    let (prepared, services) = demo::prepare(dir, listen, grpc_listen).await?;
    let Some(snapshot) = load(&prepared.config) else {
        return Ok(ExitCode::FAILURE);
    };
    tokio::spawn(services);
    let banner = format!(
        "Penghubung demo: gateway on https://{listen}, sample services on loopback.\n\
             Configuration: {}   (Ctrl-C stops)\n\n{}\n",
        prepared.config.display(),
        demo::curl_commands(&prepared)
    );
    serve(snapshot, listener, Some(grpc), false, Some(banner)).await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `addr` without listening yet: a port that is taken fails the start at once, and no
/// connection is taken before the gateway is ready (its audit log open, its start recorded).
fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Connections the kernel queues before they are accepted.
const BACKLOG: u32 = 1024;

async fn serve(
    snapshot: config::Snapshot,
    listener: TcpSocket,
    grpc: Option<TcpSocket>,
    watch: bool,
    banner: Option<String>,
) -> anyhow::Result<()> {
    let listen = listener.local_addr()?;
    let admin_listen = snapshot.gateway.admin_listen;
    let admin = reserve(admin_listen)
        .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
    let admin_listen = admin.local_addr()?;
    let grpc_listen = grpc.as_ref().and_then(|l| l.local_addr().ok());
    let gateway = Arc::new(Gateway::new(Arc::new(snapshot)).context("cannot open the audit log")?);
    let listener = listener.listen(BACKLOG)?;
    let admin: TcpListener = admin.listen(BACKLOG)?;
    let grpc = grpc.map(|socket| socket.listen(BACKLOG)).transpose()?;
    if let Some(banner) = banner {
        // Printed once the commands in it work. A closed stdout (the demo piped into `head`)
        // must not stop the gateway.
        let mut stdout = std::io::stdout();
        let _ = stdout
            .write_all(banner.as_bytes())
            .and_then(|()| stdout.flush());
    }
    let snapshot = gateway.snapshot();
    tracing::info!(%listen, admin = %admin_listen, grpc = ?grpc_listen, gateway = %snapshot.gateway.id, services = snapshot.services.len(), "serving");
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Reload on SIGHUP, and with --watch when the file changes.
    tokio::spawn(reload_on_sighup(gateway.clone()));
    if watch {
        tokio::spawn(reload_on_change(gateway.clone()));
    }
    let admin_task = tokio::spawn(penghubung::admin::serve_admin(
        admin,
        gateway.clone(),
        wait(stopped.clone()),
    ));
    let grpc_task = grpc.map(|grpc| {
        tokio::spawn(server::serve_grpc(
            grpc,
            gateway.clone(),
            wait(stopped.clone()),
        ))
    });
    // The certificates seen are written every few seconds, and once more at the end.
    tokio::spawn(gateway.clone().keep_certificates());
    let inventory = gateway.clone();
    server::serve(listener, gateway, wait(stopped)).await?;
    if let Some(task) = grpc_task {
        // The gRPC listener drains within the same grace.
        let _ = task.await;
    }
    inventory.keep_certificates_now();
    admin_task.abort();
    Ok(())
}

async fn reload_on_sighup(gateway: Arc<Gateway>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading");
            let _ = gateway.reload("SIGHUP").await;
        }
    }
}

/// Polls the configuration file's modification time; a change reloads.
async fn reload_on_change(gateway: Arc<Gateway>) {
    let path = gateway.snapshot().source.clone();
    let stamp = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = stamp(&path);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != seen {
            seen = now;
            tracing::info!(file = %path.display(), "configuration file changed: reloading");
            let _ = gateway.reload("watch").await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
