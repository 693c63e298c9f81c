//! Our webhooks: the file events Nextcloud delivers to us, registered on enable, filtered
//! to the libraries' folders (and re-registered when the libraries change), removed on
//! disable. When they cannot be registered, the periodic catch-ups ([`super::catchup`]) are
//! all that sees changes; the state says so for the admin.

use std::sync::atomic::AtomicBool;

use super::stats::{lock, WebhookState};
use super::Engine;
use crate::appapi::webhooks::{self as appapi_webhooks, Registration};

/// The engine's side of webhook registration.
#[derive(Debug, Default)]
pub(crate) struct Webhooks {
    /// One registration at a time.
    lock: tokio::sync::Mutex<()>,
    /// The last registration got a 401.
    refused: AtomicBool,
}

impl Engine {
    /// Registers our webhooks (on enable), then catches up with what happened while they
    /// were not delivered.
    pub async fn register_webhooks(&self) {
        self.update_webhooks().await;
        self.inner.queue.wake();
        // An enable is the admin's "try Nextcloud again" after a refused secret.
        self.inner.enablement.enables.send_modify(|n| *n += 1);
        self.wake_writeback();
        self.request_catch_up("enabled");
    }

    /// Webhooks filtered to the libraries' folders ([`appapi_webhooks::event_filter`]).
    pub(super) fn webhook_filter(&self) -> serde_json::Value {
        let libraries = self.inner.libraries.list();
        let watched: Vec<appapi_webhooks::Watched<'_>> = libraries
            .iter()
            .map(|l| appapi_webhooks::Watched {
                uid: &l.uid,
                folder: &l.folder,
            })
            .collect();
        appapi_webhooks::event_filter(&watched)
    }

    /// Whether the last registration of our webhooks got a 401.
    pub(crate) fn webhooks_refused_us(&self) -> bool {
        self.inner
            .webhooks
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether our webhooks are known to be in place.
    pub fn webhooks_registered(&self) -> bool {
        self.inner.nextcloud.is_none()
            || matches!(
                *lock(&self.inner.status.webhooks),
                WebhookState::Registered { .. }
            )
    }

    /// Registers our webhooks idempotently, filtered to the libraries as they are now;
    /// remembers and logs how it went.
    pub async fn update_webhooks(&self) {
        let Some(nextcloud) = &self.inner.nextcloud else {
            return;
        };
        let _one = self.inner.webhooks.lock.lock().await;
        let filter = self.webhook_filter();
        let registered =
            appapi_webhooks::register(nextcloud, &self.inner.options.app_id, &filter).await;
        let refused_us =
            matches!(&registered, Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED));
        let state = match registered {
            Ok(Registration::Registered { kinds, refused }) => {
                for (kind, why) in &refused {
                    tracing::warn!(event = kind.name(), reason = %why, "Nextcloud refused a webhook");
                }
                tracing::info!(events = kinds.len(), "webhooks registered");
                WebhookState::Registered {
                    events: kinds.iter().map(|k| k.name().to_owned()).collect(),
                    refused: refused
                        .iter()
                        .map(|(k, why)| format!("{}: {why}", k.name()))
                        .collect(),
                }
            }
            Ok(Registration::Unavailable(reason)) => WebhookState::Unavailable { reason },
            Err(e) => WebhookState::Error {
                error: e.to_string(),
            },
        };
        self.inner
            .webhooks
            .refused
            .store(refused_us, std::sync::atomic::Ordering::Relaxed);
        let mut current = lock(&self.inner.status.webhooks);
        // Tried again every catch-up round while they are not in place: said once.
        if *current != state {
            match &state {
                WebhookState::Unavailable { reason } => {
                    tracing::warn!(%reason, interval_s = self.inner.options.scan_interval.as_secs(), "no webhooks: only the periodic catch-ups see changes");
                }
                WebhookState::Error { error } => {
                    tracing::error!(%error, "could not register webhooks");
                }
                _ => {}
            }
        }
        *current = state;
    }

    /// The libraries changed: their webhooks' filter with them (in the background; a
    /// catch-up follows if that fails). Only once AppAPI has enabled us.
    pub(super) fn libraries_changed(&self) {
        if !self.was_enabled() {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            engine.update_webhooks().await;
            if !engine.webhooks_registered() {
                engine.request_catch_up("webhooks could not be updated");
            }
        });
    }

    /// Removes our webhooks (on disable).
    pub async fn unregister_webhooks(&self) {
        let Some(nextcloud) = &self.inner.nextcloud else {
            return;
        };
        if let Err(e) = appapi_webhooks::unregister(nextcloud, &self.inner.options.app_id).await {
            tracing::warn!(error = %e, "could not remove webhooks");
        }
        *lock(&self.inner.status.webhooks) = WebhookState::Unknown;
    }
}
