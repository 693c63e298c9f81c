//! Where the router listens, and how it stops.
//!
//! Without HaRP, AppAPI calls us on `APP_HOST:APP_PORT`. With HaRP, the container's frpc
//! forwards the tunnel to the unix socket `/tmp/exapp.sock` (appapi.md §12). A socket
//! left by a killed process is removed first; any other file at that path is left alone
//! and reported. SIGTERM (docker stop) and Ctrl-C stop the server gracefully: in-flight
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

/// Serves `router` until SIGTERM or Ctrl-C.
pub async fn serve(bound: Bound, router: Router) -> io::Result<()> {
    match bound {
        Bound::Tcp(listener) => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
        Bound::Unix(listener, path) => {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal())
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
