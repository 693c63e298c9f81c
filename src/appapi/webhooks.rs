//! Nextcloud's `webhook_listeners` (docs/appapi.md §8): registering our file-event webhooks,
//! and turning deliveries into [`FileEvent`]s.
//!
//! Registration is idempotent: list every row (the list holds other apps' rows too),
//! keep ours that are right, update ours that differ, create the missing, delete extras.
//! Webhooks are registered user-less with a relative URI, so AppAPI delivers them to us
//! signed, with the triggering user in `AUTHORIZATION-APP-API`. They ask for a
//! `Content-Type: application/json` header, but deliveries are parsed as JSON whatever
//! the header says, since Nextcloud sends none by default.
//!
//! Every webhook carries an `eventFilter` ([`event_filter`]) that matches only events on
//! the libraries' paths, so a change anywhere else costs Nextcloud no background job and
//! no call. webhook_listeners evaluates it with its `PHPMongoQuery` against the serialized
//! event (`{"event": {...}, "user": ..., "time": ...}`): a string value of the form
//! `/regex/flags` is a PCRE match (there is no `$regex` operator: an unknown operator
//! throws inside the event listener, i.e. inside the user's request), and `$or` needs a
//! non-empty list.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::client::{Caller, ClientError, NextcloudClient};
use crate::appapi::event::{Area, EventKind, FileEvent, Node};

const WEBHOOKS: &str = "/ocs/v2.php/apps/webhook_listeners/api/v1/webhooks";

/// The largest delivery body we accept; real ones are about 300 bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Our webhook URI for an event kind.
pub fn uri(kind: EventKind) -> String {
    format!("/webhooks/{}", kind.name())
}

/// A row of `GET /webhooks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: u64,
    app_id: Option<String>,
    http_method: String,
    uri: String,
    event: String,
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default)]
    event_filter: Option<Value>,
}

/// The outcome of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Webhooks are in place for these event kinds; the others were refused (with why).
    Registered {
        kinds: Vec<EventKind>,
        refused: Vec<(EventKind, String)>,
    },
    /// `webhook_listeners` is missing or disabled: fall back to scanning.
    Unavailable(String),
}

/// A library's folder as webhook_listeners names its nodes: `/<uid>/files[/<folder>]`.
pub struct Watched<'a> {
    pub uid: &'a str,
    pub folder: &'a str,
}

/// `s` as a PCRE literal: ASCII punctuation escaped (a backslash before a non-alphanumeric
/// character is always that character), everything else as it is.
fn pcre_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `eventFilter` that matches the events on these folders (or below them) and no
/// other: a node's path, a move's or copy's source or target. Without folders, a filter
/// that matches nothing (an empty filter would match everything).
pub fn event_filter(watched: &[Watched<'_>]) -> Value {
    if watched.is_empty() {
        return json!({"event.class": "harpbridge: no library"});
    }
    let mut roots: Vec<String> = watched
        .iter()
        .map(|w| {
            let root = if w.folder.is_empty() {
                format!("/{}/files", w.uid)
            } else {
                format!("/{}/files/{}", w.uid, w.folder)
            };
            pcre_literal(&root)
        })
        .collect();
    roots.sort();
    roots.dedup();
    let regex = format!("/^(?:{})(?:\\/|$)/", roots.join("|"));
    json!({"$or": [
        {"event.node.path": regex},
        {"event.source.path": regex},
        {"event.target.path": regex},
    ]})
}

/// A stored filter as comparable JSON: PHP lists an empty one as `[]`.
fn stored_filter(filter: Option<&Value>) -> Value {
    match filter {
        None | Some(Value::Null) => json!({}),
        Some(Value::Array(a)) if a.is_empty() => json!({}),
        Some(v) => v.clone(),
    }
}

fn body(kind: EventKind, filter: &Value) -> Value {
    json!({
        "httpMethod": "POST",
        "uri": uri(kind),
        "event": kind.class(),
        "eventFilter": filter,
        "userIdFilter": "",
        "headers": {"Content-Type": "application/json"},
        "authMethod": "none",
    })
}

fn is_right(row: &Row, kind: EventKind, filter: &Value) -> bool {
    row.http_method == "POST"
        && stored_filter(row.event_filter.as_ref()) == *filter
        && row.event.trim_start_matches('\\') == kind.class()
        && row
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .and_then(Value::as_str)
            == Some("application/json")
}

fn unavailable(e: &ClientError) -> bool {
    e.status() == Some(StatusCode::NOT_FOUND)
}

/// Registers our webhooks for every event kind with `filter` ([`event_filter`]),
/// idempotently: a row that differs (another filter) is updated.
pub async fn register(
    client: &NextcloudClient,
    app_id: &str,
    filter: &Value,
) -> Result<Registration, ClientError> {
    let rows: Vec<Row> = match client.ocs(Method::GET, WEBHOOKS, Caller::App, &[], None).await {
        Ok(rows) => rows,
        Err(e) if unavailable(&e) => {
            return Ok(Registration::Unavailable(
                "the webhook_listeners app is not enabled in Nextcloud (occ app:enable webhook_listeners)".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    let ours: Vec<&Row> = rows
        .iter()
        .filter(|r| r.app_id.as_deref() == Some(app_id))
        .collect();
    let mut kinds = Vec::new();
    let mut refused = Vec::new();
    let mut keep = Vec::new();
    for kind in EventKind::ALL {
        let mut mine = ours.iter().filter(|r| r.uri == uri(kind));
        let result: Result<(), ClientError> = match mine.next() {
            Some(row) if is_right(row, kind, filter) => {
                keep.push(row.id);
                Ok(())
            }
            Some(row) => {
                keep.push(row.id);
                client
                    .ocs::<Value>(
                        Method::POST,
                        &format!("{WEBHOOKS}/{}", row.id),
                        Caller::App,
                        &[],
                        Some(&body(kind, filter)),
                    )
                    .await
                    .map(drop)
            }
            None => client
                .ocs::<Value>(
                    Method::POST,
                    WEBHOOKS,
                    Caller::App,
                    &[],
                    Some(&body(kind, filter)),
                )
                .await
                .map(drop),
        };
        match result {
            Ok(()) => kinds.push(kind),
            // The server does not know this event class (the trash-bin restore event
            // needs files_trashbin): go on without it.
            Err(ClientError::Ocs {
                status, message, ..
            }) if status == StatusCode::BAD_REQUEST => refused.push((kind, message)),
            Err(e) => return Err(e),
        }
    }
    for stale in ours.iter().filter(|r| !keep.contains(&r.id)) {
        client
            .ocs::<Value>(
                Method::DELETE,
                &format!("{WEBHOOKS}/{}", stale.id),
                Caller::App,
                &[],
                None,
            )
            .await?;
    }
    Ok(Registration::Registered { kinds, refused })
}

/// Removes all our webhooks (on disable). Missing webhook_listeners is not an error.
pub async fn unregister(client: &NextcloudClient, app_id: &str) -> Result<(), ClientError> {
    let path = format!(
        "{WEBHOOKS}/byappid/{}",
        super::client::urlencode_segment(app_id)
    );
    match client
        .ocs::<Value>(Method::DELETE, &path, Caller::App, &[], None)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if unavailable(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Shape(String),
    #[error("unknown event class {0:?}")]
    UnknownClass(String),
    #[error("path {0:?} is not inside a user's files (/<uid>/files/…)")]
    BadPath(String),
}

fn shape(what: &str) -> DeliveryError {
    DeliveryError::Shape(what.to_owned())
}

fn parse_node(value: Option<&Value>, name: &str, allow_trash: bool) -> Result<Node, DeliveryError> {
    let value = value
        .and_then(Value::as_object)
        .ok_or_else(|| shape(&format!("event.{name} must be an object")))?;
    let path = value
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| shape(&format!("event.{name}.path must be a string")))?;
    let id = match value.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| shape(&format!("event.{name}.id must be a non-negative integer")))?,
        ),
    };
    let (uid, area, rel) = split_path(path, allow_trash)?;
    Ok(Node {
        id,
        uid,
        area,
        path: rel,
    })
}

/// `/<uid>/files/<rel>` → (uid, Files, rel); the trash bin only where allowed.
fn split_path(path: &str, allow_trash: bool) -> Result<(String, Area, String), DeliveryError> {
    let bad = || DeliveryError::BadPath(path.chars().take(300).collect());
    if path.contains('\0') || path.len() > 8192 {
        return Err(bad());
    }
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let (uid, rest) = rest.split_once('/').ok_or_else(bad)?;
    if uid.is_empty() {
        return Err(bad());
    }
    let (area, rel) = if rest == "files" {
        (Area::Files, "")
    } else if let Some(rel) = rest.strip_prefix("files/") {
        (Area::Files, rel)
    } else if let Some(rel) = rest
        .strip_prefix("files_trashbin/files/")
        .filter(|_| allow_trash)
    {
        (Area::Trash, rel)
    } else {
        return Err(bad());
    };
    let rel = rel.trim_end_matches('/');
    if rel.split('/').any(|s| s == ".." || s == ".") || rel.contains("//") {
        return Err(bad());
    }
    Ok((uid.to_owned(), area, rel.to_owned()))
}

/// Parses and validates one delivery body (JSON, whatever the Content-Type said).
pub fn parse_delivery(body: &[u8]) -> Result<FileEvent, DeliveryError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| DeliveryError::NotJson(e.to_string()))?;
    let event = value
        .get("event")
        .and_then(Value::as_object)
        .ok_or_else(|| shape("event must be an object"))?;
    let class = event
        .get("class")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("event.class must be a string"))?;
    let kind = EventKind::from_class(class)
        .ok_or_else(|| DeliveryError::UnknownClass(class.chars().take(200).collect()))?;
    let user = match value.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::Object(u)) => Some(
            u.get("uid")
                .and_then(Value::as_str)
                .ok_or_else(|| shape("user.uid must be a string"))?
                .to_owned(),
        ),
        Some(_) => return Err(shape("user must be an object or null")),
    };
    let time = match value.get("time") {
        None | Some(Value::Null) => 0,
        Some(t) => t.as_i64().ok_or_else(|| shape("time must be an integer"))?,
    };
    let (node, source) = if kind.has_two_nodes() {
        let source = parse_node(event.get("source"), "source", kind == EventKind::Restored)?;
        (
            parse_node(event.get("target"), "target", false)?,
            Some(source),
        )
    } else {
        (parse_node(event.get("node"), "node", false)?, None)
    };
    Ok(FileEvent {
        kind,
        user,
        time,
        node,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_the_libraries_roots() {
        assert_eq!(
            event_filter(&[]),
            json!({"event.class": "harpbridge: no library"})
        );
        let f = event_filter(&[
            Watched {
                uid: "alice",
                folder: "Team",
            },
            Watched {
                uid: "bob.b",
                folder: "",
            },
            Watched {
                uid: "carol",
                folder: "a+b (x)/[y]",
            },
        ]);
        let regex = r"/^(?:\/alice\/files\/Team|\/bob\.b\/files|\/carol\/files\/a\+b \(x\)\/\[y\])(?:\/|$)/";
        assert_eq!(
            f,
            json!({"$or": [
                {"event.node.path": regex},
                {"event.source.path": regex},
                {"event.target.path": regex},
            ]})
        );
        assert_eq!(stored_filter(Some(&json!([]))), json!({}));
        assert_eq!(stored_filter(None), json!({}));
    }

    #[test]
    fn fixture_rename_body() {
        let body = br#"{"event":{"source":{"path":"\/admin\/files\/fxev\/a-copy.txt"},"target":{"id":92,"path":"\/admin\/files\/fxev\/renamed.txt"},"class":"OCP\\Files\\Events\\Node\\NodeRenamedEvent"},"user":{"uid":"admin","displayName":"admin"},"time":1795627362,"authentication":[]}"#;
        let e = parse_delivery(body).unwrap();
        assert_eq!(e.kind, EventKind::Renamed);
        assert_eq!(e.user.as_deref(), Some("admin"));
        assert_eq!(e.node.id, Some(92));
        assert_eq!(e.node.path, "fxev/renamed.txt");
        let s = e.source.unwrap();
        assert_eq!(
            (s.id, s.path.as_str(), s.uid.as_str()),
            (None, "fxev/a-copy.txt", "admin")
        );
    }

    #[test]
    fn restore_source_may_be_in_the_trash_only_for_restores() {
        let restore = br#"{"event":{"source":{"path":"/admin/files_trashbin/files/x.txt.d1795627"},"target":{"id":9,"path":"/admin/files/x.txt"},"class":"OCA\\Files_Trashbin\\Events\\NodeRestoredEvent"},"user":null,"time":1}"#;
        let e = parse_delivery(restore).unwrap();
        assert_eq!(e.source.unwrap().area, Area::Trash);
        assert_eq!(e.user, None);
        let written = br#"{"event":{"node":{"id":9,"path":"/admin/files_trashbin/files/x"},"class":"OCP\\Files\\Events\\Node\\NodeWrittenEvent"},"user":null,"time":1}"#;
        assert!(matches!(
            parse_delivery(written),
            Err(DeliveryError::BadPath(_))
        ));
    }

    #[test]
    fn bad_bodies() {
        let cases: [&[u8]; 8] = [
            b"not json",
            br#"{"event":"x"}"#,
            br#"{"event":{"class":"OCP\\Files\\Events\\Node\\NodeReadEvent","node":{"id":1,"path":"/a/files/x"}}}"#,
            br#"{"event":{"class":"OCP\\Files\\Events\\Node\\NodeWrittenEvent","node":{"id":"1","path":"/a/files/x"}}}"#,
            br#"{"event":{"class":"OCP\\Files\\Events\\Node\\NodeWrittenEvent","node":{"id":1,"path":"/a/cache/x"}}}"#,
            br#"{"event":{"class":"OCP\\Files\\Events\\Node\\NodeWrittenEvent","node":{"id":1,"path":"/a/files/../b/files/x"}}}"#,
            br#"{"event":{"class":"OCP\\Files\\Events\\Node\\NodeRenamedEvent","node":{"id":1,"path":"/a/files/x"}}}"#,
            br#"{"event":{"class":"OCP\\Files\\Events\\Node\\NodeWrittenEvent","node":{"id":1,"path":"/a/files/x"}},"time":"now"}"#,
        ];
        for body in cases {
            assert!(
                parse_delivery(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
