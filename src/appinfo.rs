//! The ExApp manifest, `appinfo/info.xml`, compiled into the binary.
//!
//! AppAPI reads the XML for docker deployments; a manual-install registration needs the
//! JSON form (`occ app_api:app:register --json-info`), which is the only place the port
//! and the secret can be given. [`Manifest::json_info`] derives that JSON from the same
//! XML, so the routes are written once.

use serde::Deserialize;
use serde_json::{json, Value};

/// The manifest as shipped.
pub const INFO_XML: &str = include_str!("../appinfo/info.xml");

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub version: String,
    #[serde(rename = "external-app")]
    pub external_app: ExternalApp,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExternalApp {
    pub routes: Routes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Routes {
    #[serde(rename = "route", default)]
    pub route: Vec<Route>,
}

/// One `<route>`: a regex over the path, verbs, and who may call it.
#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub url: String,
    pub verb: String,
    pub access_level: String,
    #[serde(default)]
    pub headers_to_exclude: Option<String>,
    #[serde(default)]
    pub bruteforce_protection: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("info.xml: {0}")]
    Xml(#[from] quick_xml::DeError),
    #[error("info.xml route {url}: access_level {level:?} is not PUBLIC, USER, ADMIN, 0, 1 or 2")]
    AccessLevel { url: String, level: String },
    #[error("info.xml route {url}: {field} is not a JSON array: {source}")]
    RouteField {
        url: String,
        field: &'static str,
        source: serde_json::Error,
    },
}

/// A route's access level as the number AppAPI stores and HaRP's agent accepts.
///
/// AppAPI maps the names to numbers only when it reads info.xml; from `--json-info` it
/// stores what it is given, and HaRP's agent then refuses a name (`400 … Input should be
/// 0, 1 or 2`), after which every request through HaRP is 404.
fn access_level_number(url: &str, level: &str) -> Result<u8, ManifestError> {
    match level.trim().to_ascii_uppercase().as_str() {
        "PUBLIC" | "0" => Ok(0),
        "USER" | "1" => Ok(1),
        "ADMIN" | "2" => Ok(2),
        _ => Err(ManifestError::AccessLevel {
            url: url.to_owned(),
            level: level.to_owned(),
        }),
    }
}

impl Manifest {
    pub fn parse(xml: &str) -> Result<Self, ManifestError> {
        Ok(quick_xml::de::from_str(xml)?)
    }

    /// The shipped manifest.
    pub fn shipped() -> Result<Self, ManifestError> {
        Self::parse(INFO_XML)
    }

    /// The `--json-info` for a manual-install registration.
    pub fn json_info(&self, daemon: &str, secret: &str, port: u16) -> Result<Value, ManifestError> {
        let array = |url: &str,
                     field: &'static str,
                     text: &Option<String>|
         -> Result<Value, ManifestError> {
            match text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                None => Ok(json!([])),
                Some(t) => serde_json::from_str(t).map_err(|source| ManifestError::RouteField {
                    url: url.to_owned(),
                    field,
                    source,
                }),
            }
        };
        let routes = self
            .external_app
            .routes
            .route
            .iter()
            .map(|r| {
                Ok(json!({
                    "url": r.url,
                    "verb": r.verb,
                    "access_level": access_level_number(&r.url, &r.access_level)?,
                    "headers_to_exclude": array(&r.url, "headers_to_exclude", &r.headers_to_exclude)?,
                    "bruteforce_protection": array(&r.url, "bruteforce_protection", &r.bruteforce_protection)?,
                }))
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        Ok(json!({
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "daemon_config_name": daemon,
            "secret": secret,
            "port": port,
            "routes": routes,
        }))
    }
}
