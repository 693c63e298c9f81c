//! The Nextcloud AppAPI contract (docs/appapi.md): what AppAPI sends us and what we call.
//!
//! - [`auth`]: checks the AppAPI headers on every request that reaches us, and signs ours.
//! - [`client`]: the signed OCS client for calls from harpbridge to Nextcloud.
//! - [`lifecycle`]: `/heartbeat`, `/init` and `/enabled`, the routes AppAPI drives us with.
//! - [`manifest`]: `appinfo/info.xml`, and the JSON form manual installs need.
//! - [`webdav`], [`multistatus`]: users' files over WebDAV, and its 207 answers.
//! - [`webhooks`]: registering webhook_listeners hooks; parsing their deliveries.
//! - [`ui`]: the top-menu page (entry, script, style, initial state) registered on enable.

pub mod auth;
pub mod client;
pub mod lifecycle;
pub mod manifest;
pub mod multistatus;
pub mod ui;
pub mod webdav;
pub mod webhooks;
