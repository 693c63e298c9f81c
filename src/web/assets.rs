//! The panel's static files, embedded in the binary and served at the paths AppAPI's
//! proxy asks for: the script registered as `js/harpbridge-main` is fetched as
//! `/js/harpbridge-main.js`, the style `css/harpbridge-main` as
//! `/css/harpbridge-main.css`, the menu icon as `/img/app.svg`.
//!
//! `js/` and `css/` are built from `ui/` by Vite (`npm run build` in `ui/`) and committed,
//! so `cargo build` needs no Node; CI rebuilds them from a clean `npm ci` and fails if
//! they differ from the committed files.
//!
//! Answers carry `Cache-Control: no-cache` and a strong `ETag` (FNV-1a of the bytes), so
//! a browser revalidates after an update and gets `304 Not Modified` otherwise. Without
//! a `Cache-Control` AppAPI's PHP proxy would cache them for an hour.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file the panel needs.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/js/harpbridge-main.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../js/harpbridge-main.js"),
    },
    Asset {
        path: "/css/harpbridge-main.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../css/harpbridge-main.css"),
    },
    Asset {
        path: "/img/app.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../img/app.svg"),
    },
];

fn etag(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}-{}\"", bytes.len())
}

fn serve(asset: Asset, etag: &str, headers: &HeaderMap) -> Response {
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let etag_value = HeaderValue::from_str(etag).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (ETAG, etag_value),
    ];
    if matches {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(CONTENT_TYPE, HeaderValue::from_static(asset.content_type))],
        asset.bytes,
    )
        .into_response()
}

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for &asset in ASSETS {
        let tag = etag(asset.bytes);
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| {
                let tag = tag.clone();
                async move { serve(asset, &tag, &headers) }
            }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_panel_is_embedded() {
        let js = ASSETS[0].bytes;
        // Vite's output, not a placeholder: mounts into AppAPI's #content.
        assert!(js.len() > 10_000);
        assert!(std::str::from_utf8(js).unwrap().contains("#content"));
        assert!(ASSETS[1].bytes.len() > 1_000);
    }

    #[test]
    fn etags_follow_the_bytes() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
    }
}
