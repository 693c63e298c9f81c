//! The harpbridge page in Nextcloud's top menu (docs/appapi.md §6).
//!
//! On enable we register one top-menu entry with its script, style and initial state;
//! AppAPI's calls are insert-or-update keyed by name, so registering twice leaves one
//! entry. On disable we delete the entry, which makes AppAPI drop its scripts, styles
//! and initial states too.

use reqwest::Method;
use serde_json::{json, Value};

use super::client::{Caller, ClientError, NextcloudClient};
use crate::config::Config;

/// The top-menu entry's name, also the page's URL segment.
pub const MENU_NAME: &str = "harpbridge";
/// The panel's script and style, served by us at `/<path>.js` and `/<path>.css`.
pub const SCRIPT_PATH: &str = "js/harpbridge-main";
pub const STYLE_PATH: &str = "css/harpbridge-main";
pub const ICON_PATH: &str = "img/app.svg";
/// The key the panel reads with `loadState('app_api', INITIAL_STATE_KEY)`.
pub const INITIAL_STATE_KEY: &str = "harpbridge-config";

const UI: &str = "/ocs/v2.php/apps/app_api/api/v1/ui";

/// What the panel needs to find its way back to us.
pub fn initial_state(config: &Config) -> Value {
    json!({
        "appId": config.app_id,
        "version": config.app_version,
        "wsPath": format!("/exapps/{}/ws", config.app_id),
        "apiBase": format!("/apps/app_api/proxy/{}/api", config.app_id),
    })
}

/// Registers the page: entry, script, style and initial state.
pub async fn register(client: &NextcloudClient, config: &Config) -> Result<(), ClientError> {
    let calls = [
        (
            "top-menu",
            json!({"name": MENU_NAME, "displayName": config.app_display_name, "icon": ICON_PATH, "adminRequired": 0}),
        ),
        (
            "script",
            json!({"type": "top_menu", "name": MENU_NAME, "path": SCRIPT_PATH, "afterAppId": ""}),
        ),
        (
            "style",
            json!({"type": "top_menu", "name": MENU_NAME, "path": STYLE_PATH}),
        ),
        (
            "initial-state",
            json!({"type": "top_menu", "name": MENU_NAME, "key": INITIAL_STATE_KEY, "value": initial_state(config)}),
        ),
    ];
    for (what, body) in calls {
        let _: Value = client
            .ocs(
                Method::POST,
                &format!("{UI}/{what}"),
                Caller::App,
                &[],
                Some(&body),
            )
            .await?;
    }
    Ok(())
}

/// Removes the page; an entry that is already gone counts as removed.
pub async fn unregister(client: &NextcloudClient) -> Result<(), ClientError> {
    let result: Result<Value, _> = client
        .ocs(
            Method::DELETE,
            &format!("{UI}/top-menu"),
            Caller::App,
            &[("name", MENU_NAME)],
            None,
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(ClientError::Ocs {
            statuscode: 404, ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}
