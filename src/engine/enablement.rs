//! Whether AppAPI has enabled us. Nextcloud counts a call from a disabled or unregistered
//! ExApp as a failed login against our address, so nothing in the engine calls Nextcloud
//! until AppAPI has enabled the app; the state is remembered across restarts (a marker file
//! in the data directory), since AppAPI does not call `/enabled` again when the container
//! merely restarts.

use super::Engine;

/// The engine's view of AppAPI's enable and disable calls.
#[derive(Debug)]
pub(crate) struct Enablement {
    /// Whether AppAPI has enabled the app (remembered across restarts).
    pub(super) enabled: tokio::sync::watch::Sender<bool>,
    /// How many times AppAPI enabled the app since start: an enable is the admin's "try
    /// Nextcloud again", which ends the pauses after a 401.
    pub(super) enables: tokio::sync::watch::Sender<u64>,
}

impl Enablement {
    pub(super) fn new(enabled: bool) -> Self {
        Enablement {
            enabled: tokio::sync::watch::Sender::new(enabled),
            enables: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Engine {
    /// Whether AppAPI enabled this app before (remembered across restarts, since AppAPI
    /// does not call `/enabled` again when the container merely restarts).
    pub fn was_enabled(&self) -> bool {
        *self.inner.enablement.enabled.borrow()
    }

    /// Waits until AppAPI has enabled the app: the engine's tasks call Nextcloud only then.
    pub(crate) async fn until_enabled(&self) {
        let mut enabled = self.inner.enablement.enabled.subscribe();
        if !*enabled.borrow_and_update() {
            tracing::info!("waiting for AppAPI to enable the app before calling Nextcloud");
        }
        let _ = enabled.wait_for(|e| *e).await;
    }

    /// Remembers AppAPI's last enable or disable.
    pub fn remember_enabled(&self, enabled: bool) {
        self.inner.enablement.enabled.send_replace(enabled);
        let marker = self.inner.options.data_dir.join(super::ENABLED_MARKER);
        let result = if enabled {
            std::fs::write(&marker, b"1")
        } else {
            std::fs::remove_file(&marker).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record the enabled state");
        }
    }
}
