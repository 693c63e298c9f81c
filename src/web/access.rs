//! Who may do what in the panel.
//!
//! AppAPI (PHP proxy) and HaRP both vouch for the acting Nextcloud user in
//! `AUTHORIZATION-APP-API`; [`crate::appapi::auth::require_appapi`] has checked the
//! secret before any handler runs. On top of that:
//!
//! - every panel route needs a user (an empty user, i.e. the system or an anonymous
//!   visitor, gets 403);
//! - reading is open to every user, filtered to what they may see ([`Viewer`]);
//! - changing settings (libraries) and pairing need a Nextcloud admin. That is decided by
//!   asking Nextcloud for the user's groups (`GET /ocs/v2.php/cloud/users/{uid}/groups`,
//!   signed as that user), never by a request header: HaRP's routes and the PHP proxy's
//!   access levels are a first gate, this is ours. Answers are cached for [`ADMIN_TTL`]
//!   per user so that a page load or a reconnect storm does not become a storm of calls
//!   to Nextcloud.
//!
//! When Nextcloud cannot answer, the user counts as not an admin (fail closed); a
//! mutation then answers 502 with the reason, reads go on.
//!
//! When Nextcloud refuses harpbridge's own credentials (401) or throttles it (429), the
//! check stops asking for [`REFUSED_BACKOFF`]: about five wrong-secret calls lock the
//! ExApp's address out of Nextcloud for 30 minutes, and panels reconnecting must not be
//! what does it. Until then every check fails at once with the same error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::appapi::client::{ClientError, NextcloudClient};

use super::events::Viewer;

/// How long a group lookup is trusted.
pub const ADMIN_TTL: Duration = Duration::from_secs(60);
/// How long the check leaves Nextcloud alone after a 401 or 429.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(300);

/// Cached admin checks against Nextcloud.
pub struct Access {
    nextcloud: NextcloudClient,
    cache: Mutex<HashMap<String, (bool, Instant)>>,
    /// Set after a 401 or 429: until when, and what Nextcloud said.
    refused: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access").finish_non_exhaustive()
    }
}

impl Access {
    pub fn new(nextcloud: NextcloudClient) -> Self {
        Access {
            nextcloud,
            cache: Mutex::new(HashMap::new()),
            refused: Mutex::new(None),
        }
    }

    /// Whether `uid` is a Nextcloud admin, from the cache or from Nextcloud.
    pub async fn is_admin(&self, uid: &str) -> Result<bool, ClientError> {
        if let Some(&(admin, at)) = self.lock().get(uid) {
            if at.elapsed() < ADMIN_TTL {
                return Ok(admin);
            }
        }
        if let Some(message) = self.refused_now() {
            return Err(ClientError::Unauthorized { message });
        }
        let admin = match self.nextcloud.user_is_admin(uid).await {
            Ok(admin) => admin,
            Err(e) => {
                if matches!(
                    e,
                    ClientError::Unauthorized { .. } | ClientError::Throttled { .. }
                ) {
                    tracing::error!(error = %e, backoff_s = REFUSED_BACKOFF.as_secs(), "Nextcloud refused harpbridge's group lookup; not asking again for a while");
                    *crate::locks::lock(&self.refused) = Some((
                        Instant::now() + REFUSED_BACKOFF,
                        format!("not asking Nextcloud again yet after: {e}"),
                    ));
                }
                return Err(e);
            }
        };
        let mut cache = self.lock();
        // Keep the cache small: forget expired answers when it grows.
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < ADMIN_TTL);
        }
        cache.insert(uid.to_owned(), (admin, Instant::now()));
        Ok(admin)
    }

    /// The viewer for `uid`; a failed lookup yields a non-admin viewer (logged).
    pub async fn viewer(&self, uid: &str) -> Viewer {
        let is_admin = match self.is_admin(uid).await {
            Ok(admin) => admin,
            Err(e) => {
                tracing::warn!(user = uid, error = %e, "cannot ask Nextcloud for the user's groups; treating as not an admin");
                false
            }
        };
        Viewer {
            uid: uid.to_owned(),
            is_admin,
        }
    }

    /// The reason while the back-off after a refusal lasts.
    fn refused_now(&self) -> Option<String> {
        let refused = crate::locks::lock(&self.refused);
        match &*refused {
            Some((until, message)) if Instant::now() < *until => Some(message.clone()),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        crate::locks::lock(&self.cache)
    }
}
