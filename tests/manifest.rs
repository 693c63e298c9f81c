//! The shipped `appinfo/info.xml`: complete, with anchored routes that cover exactly the
//! paths the panel needs in both engines that match them (HaRP and AppAPI's PHP proxy),
//! and a JSON form for manual installs that matches it.

use harpbridge::appinfo::{Manifest, Route};

/// HaRP's agent: the first route whose url matches from the start of the path (Python's
/// `re.match`, case-sensitive, path WITH its leading slash), whatever the verb.
fn route_for<'a>(manifest: &'a Manifest, path: &str) -> Option<&'a Route> {
    manifest.external_app.routes.route.iter().find(|r| {
        regex_lite::Regex::new(&r.url)
            .map(|re| re.find(path).is_some_and(|m| m.start() == 0))
            .unwrap_or(false)
    })
}

/// `url` as AppAPI's PHP proxy uses it: `preg_match('/' . url . '/i', path)`. An
/// unescaped `/` ends the pattern there (nextcloud.log: "Unknown modifier"): `None`.
fn php_pattern(url: &str) -> Option<regex_lite::Regex> {
    let mut escaped = false;
    for c in url.chars() {
        match c {
            '\\' => escaped = !escaped,
            '/' if !escaped => return None,
            _ => escaped = false,
        }
    }
    regex_lite::Regex::new(&format!("(?i){url}")).ok()
}

/// AppAPI's ExAppProxyController: the first route whose url (against the path WITHOUT its
/// leading slash) and verb match.
fn php_route_for<'a>(manifest: &'a Manifest, path: &str, verb: &str) -> Option<&'a Route> {
    manifest.external_app.routes.route.iter().find(|r| {
        php_pattern(&r.url).is_some_and(|p| p.is_match(path.trim_start_matches('/')))
            && r.verb.to_ascii_uppercase().contains(verb)
    })
}

#[test]
fn manifest_is_complete() {
    let xml = harpbridge::appinfo::INFO_XML;
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
        assert!(
            r.url.starts_with("^\\/?"),
            "route {} is not anchored for both engines",
            r.url
        );
        assert!(
            php_pattern(&r.url).is_some(),
            "{} breaks AppAPI's preg_match (escape every '/')",
            r.url
        );
        assert!(r.url.ends_with('$'), "route {} is open-ended", r.url);
        assert!(["USER", "ADMIN", "PUBLIC"].contains(&r.access_level.as_str()));
        assert_ne!(r.access_level, "PUBLIC", "nothing of harpbridge is public");
    }
}

#[test]
fn routes_cover_what_the_panel_needs_and_nothing_more() {
    let m = Manifest::shipped().unwrap();
    let level = |p: &str| {
        let harp = route_for(&m, p).map(|r| r.access_level.as_str());
        let php = php_route_for(&m, p, "GET").map(|r| r.access_level.as_str());
        assert_eq!(
            harp, php,
            "HaRP and the PHP proxy pick different routes for {p}"
        );
        harp
    };
    assert_eq!(
        php_route_for(&m, "/api/admin/libraries", "POST").map(|r| r.access_level.as_str()),
        Some("ADMIN")
    );
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
    // AppAPI stores --json-info's access levels as given, and HaRP's agent accepts only
    // 0, 1 or 2 (a name makes every request through HaRP 404).
    for (json, xml) in routes.iter().zip(&m.external_app.routes.route) {
        let want = match xml.access_level.as_str() {
            "PUBLIC" => 0,
            "USER" => 1,
            "ADMIN" => 2,
            other => panic!("{other}"),
        };
        assert_eq!(json["access_level"], want, "{}", xml.url);
        assert_eq!(json["url"], xml.url.as_str());
    }
    assert_eq!(
        m.json_info("harp_direct", "s", 1).unwrap()["daemon_config_name"],
        "harp_direct"
    );
}
