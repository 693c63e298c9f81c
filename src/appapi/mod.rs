//! The Nextcloud AppAPI contract (docs/appapi.md): what AppAPI sends us and what we call.
//!
//! - [`auth`]: checks the AppAPI headers on every request that reaches us, and signs ours.
//! - [`client`]: the signed OCS client for calls from harpbridge to Nextcloud.
//! - [`event`]: a file event as a webhook delivers it, validated.
//! - [`refusals`]: refused requests logged once per source and interval, not once each.
//! - [`webhooks`]: registering webhook_listeners hooks; parsing their deliveries.
//! - [`ui`]: the top-menu page (entry, script, style, initial state) registered on enable.
//!
//! The routes AppAPI drives us with (`/heartbeat`, `/init`, `/enabled`) are HTTP handlers and
//! live with the others in [`crate::web`]; users' files over WebDAV are a storage backend,
//! [`crate::backend::nextcloud`].

pub mod auth;
pub mod client;
pub mod event;
pub mod refusals;
pub mod ui;
pub mod webhooks;
