//! The shipped `appinfo/info.xml`: complete, with anchored routes that cover exactly the
//! paths the panel needs, and a JSON form for manual installs that matches it.

use harpbridge::appapi::manifest::Manifest;

fn route_for<'a>(
    manifest: &'a Manifest,
    path: &str,
) -> Option<&'a harpbridge::appapi::manifest::Route> {
    // HaRP: Python re.match (anchored at the start, case-sensitive), first url match wins.
    manifest.external_app.routes.route.iter().find(|r| {
        regex_lite::Regex::new(&r.url)
            .map(|re| re.find(path).is_some_and(|m| m.start() == 0))
            .unwrap_or(false)
    })
}

#[test]
fn manifest_is_complete() {
    let xml = harpbridge::appapi::manifest::INFO_XML;
    let m = Manifest::shipped().expect("info.xml parses");
    assert_eq!(m.id, "harpbridge");
    assert_eq!(m.version, env!("CARGO_PKG_VERSION"));
    for needle in [
        "<licence>",
        "<summary>",
        "<description>",
        "<docker-install>",
        "<image>",
        r#"min-version="32""#,
        r#"max-version="35""#,
    ] {
        assert!(xml.contains(needle), "info.xml lacks {needle}");
    }
    for r in &m.external_app.routes.route {
        assert!(r.url.starts_with("^/"), "route {} is not anchored", r.url);
        assert!(r.url.ends_with('$'), "route {} is open-ended", r.url);
        assert!(["USER", "ADMIN", "PUBLIC"].contains(&r.access_level.as_str()));
        assert_ne!(r.access_level, "PUBLIC", "nothing of harpbridge is public");
    }
}

#[test]
fn routes_cover_what_the_panel_needs_and_nothing_more() {
    let m = Manifest::shipped().unwrap();
    let level = |p: &str| route_for(&m, p).map(|r| r.access_level.as_str());
    assert_eq!(level("/js/harpbridge-main.js"), Some("USER"));
    assert_eq!(level("/css/harpbridge-main.css"), Some("USER"));
    assert_eq!(level("/img/app.svg"), Some("USER"));
    assert_eq!(level("/ws"), Some("USER"));
    assert_eq!(level("/api/overview"), Some("USER"));
    assert_eq!(level("/api/admin/libraries"), Some("ADMIN"));
    assert_eq!(level("/api/admin/metrics"), Some("ADMIN"));
    assert_eq!(level("/metrics"), Some("ADMIN"));
    // Lifecycle and webhooks are AppAPI-signed and need no route; browsers must not reach them.
    for p in [
        "/init",
        "/enabled",
        "/heartbeat",
        "/webhooks/NodeWrittenEvent",
        "/js/../init",
        "/wsx",
    ] {
        assert_eq!(level(p), None, "{p} is reachable from a browser");
    }
}

#[test]
fn json_info_matches_the_xml() {
    let m = Manifest::shipped().unwrap();
    let json = m.json_info("manual_install", "s", 23001).unwrap();
    assert_eq!(json["id"], "harpbridge");
    assert_eq!(json["secret"], "s");
    assert_eq!(json["port"], 23001);
    let routes = json["routes"].as_array().unwrap();
    assert_eq!(routes.len(), m.external_app.routes.route.len());
    assert!(routes.iter().all(|r| r["headers_to_exclude"].is_array()));
}
