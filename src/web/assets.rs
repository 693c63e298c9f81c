//! The panel's static files, served at the paths AppAPI's proxy asks for
//! (`/<script path>.js`, `/<style path>.css`, the menu icon).
//!
//! For now a placeholder page: the real panel replaces it.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

const PLACEHOLDER_JS: &str = r#"(function () {
  var root = document.getElementById('content');
  if (!root) return;
  var p = document.createElement('p');
  p.style.padding = '2em';
  p.textContent = 'harpbridge is running. The panel is on its way.';
  root.appendChild(p);
})();
"#;
const PLACEHOLDER_CSS: &str = "#content p { color: var(--color-main-text); }\n";
const ICON_SVG: &str = include_str!("../../img/app.svg");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/js/harpbridge-main.js",
            get(|| async { asset("text/javascript; charset=utf-8", PLACEHOLDER_JS) }),
        )
        .route(
            "/css/harpbridge-main.css",
            get(|| async { asset("text/css; charset=utf-8", PLACEHOLDER_CSS) }),
        )
        .route(
            "/img/app.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}
