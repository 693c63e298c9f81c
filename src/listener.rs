//! Where the router listens, and how it stops.
//!
//! AppAPI and HaRP in direct mode call us on `APP_HOST:APP_PORT`. A docker-install HaRP
//! daemon without direct mode tunnels through the container's frpc to the unix socket
//! `/tmp/exapp.sock` (docs/appapi.md §12), so there we listen on both. A socket left by a
//! killed process is removed first; any other file at that path is left alone and
//! reported. SIGTERM (docker stop) and Ctrl-C stop every listener gracefully: in-flight
//! requests finish, new connections are refused.

use std::io;
use std::path::Path;

use axum::Router;
use tokio::net::{TcpListener, UnixListener};

use crate::config::Listen;

/// A bound listener, ready to serve.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Bound {
    /// What we are listening on, with the real port when 0 was asked for.
    pub fn describe(&self) -> String {
        match self {
            Bound::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("tcp://{addr}"),
                Err(_) => "tcp://?".into(),
            },
            Bound::Unix(_, path) => format!("unix://{}", path.display()),
        }
    }
}

/// Binds every configured address; the first that fails stops it, naming the address.
pub async fn bind_all(listen: &[Listen]) -> io::Result<Vec<Bound>> {
    let mut bound = Vec::with_capacity(listen.len());
    for l in listen {
        bound.push(
            bind(l)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("{l}: {e}")))?,
        );
    }
    Ok(bound)
}

/// Binds the configured address.
pub async fn bind(listen: &Listen) -> io::Result<Bound> {
    match listen {
        Listen::Tcp { host, port } => {
            Ok(Bound::Tcp(TcpListener::bind((host.as_str(), *port)).await?))
        }
        Listen::Unix(path) => {
            remove_stale_socket(path)?;
            Ok(Bound::Unix(UnixListener::bind(path)?, path.clone()))
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not removing it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Serves `router` on every listener until SIGTERM or Ctrl-C.
pub async fn serve_all(bound: Vec<Bound>, router: Router) -> io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let servers = bound.into_iter().map(|b| {
        let mut stopped = stopped.clone();
        let signal = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        serve_one(b, router.clone(), signal)
    });
    let all = futures_util::future::try_join_all(servers);
    tokio::pin!(all);
    tokio::select! {
        result = &mut all => return result.map(drop),
        _ = shutdown_signal() => {}
    }
    let _ = stop.send(true);
    all.await.map(drop)
}

async fn serve_one(
    bound: Bound,
    router: Router,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    match bound {
        Bound::Tcp(listener) => {
            // The peer's address reaches handlers (the refusal log summarises by it).
            let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, service)
                .with_graceful_shutdown(signal)
                .await
        }
        Bound::Unix(listener, path) => {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(signal)
                .await;
            let _ = std::fs::remove_file(&path);
            result
        }
    }
}

/// Resolves on the first SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
