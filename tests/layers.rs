//! The modules' layers, checked from the source: data flows up, imports point down.
//!
//! ```text
//! cli ─▶ web ─▶ engine ─▶ backend ─▶ appapi ─▶ config ─▶ p2p ─▶ content, identity ─▶ chain, db
//!    └─▶ roles (node, cache, import: no Nextcloud) ─▶ p2p
//! ```
//!
//! The engine reports through its event stream and never names the web layer; it reaches
//! files through `backend/`, never the WebDAV client itself. Each top-level module may use
//! only the modules its row below allows, so no arrow points back up and no two folders
//! form a circle.

use std::collections::BTreeSet;
use std::path::Path;

/// Leaf helpers every module may use (they import nothing of ours).
const BASE: &[&str] = &["clock", "locks", "cursor"];

/// Which modules each top-level module may import (`crate::<module>`), besides [`BASE`].
const ALLOWED: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("cursor", &[]),
    ("locks", &[]),
    ("owner_only", &[]),
    ("chain", &["db"]),
    ("db", &["owner_only"]),
    ("identity", &["chain", "owner_only"]),
    ("content", &["chain", "db", "owner_only"]),
    ("p2p", &["chain", "content", "identity", "db", "owner_only"]),
    ("appinfo", &[]),
    ("config", &["appinfo", "p2p"]),
    ("logging", &["config"]),
    ("listener", &["config"]),
    ("appapi", &["config", "appinfo"]),
    ("backend", &["appapi", "config"]),
    (
        "roles",
        &["p2p", "chain", "content", "identity", "db", "owner_only"],
    ),
    (
        "engine",
        &[
            "backend", "appapi", "config", "chain", "content", "db", "identity",
        ],
    ),
    ("link", &["engine", "p2p", "chain"]),
    (
        "web",
        &[
            "link", "engine", "backend", "appapi", "appinfo", "config", "chain", "content", "db",
            "identity", "p2p", "listener", "logging",
        ],
    ),
];

/// `crate::<module>` names used in code (not in comments) of every `.rs` file below `dir`.
fn imports(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            imports(&path, found);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let mut path_in =
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'));
                let full = path_in.next().unwrap_or("").to_owned();
                found.push((path.display().to_string(), format!("{name}|{full}")));
            }
        }
    }
}

/// The top-level module a file under `src/` belongs to.
fn module_of(file: &str) -> String {
    let rel = file.trim_start_matches("src/");
    let first = rel.split('/').next().unwrap_or(rel);
    first.trim_end_matches(".rs").to_owned()
}

#[test]
fn imports_point_down_the_layers() {
    let mut found = Vec::new();
    imports(Path::new("src"), &mut found);
    assert!(
        !found.is_empty(),
        "no imports found: run from the crate root"
    );
    let mut wrong = BTreeSet::new();
    for (file, import) in &found {
        let (target, full) = import.split_once('|').unwrap();
        let module = module_of(file);
        if target.is_empty() {
            wrong.insert(format!(
                "{file}: `crate::{{…}}`: name one module per path, so the layers can be read"
            ));
            continue;
        }
        if module == target || ["cli", "lib", "main"].contains(&module.as_str()) {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else {
            wrong.insert(format!("{file}: module {module} has no row in ALLOWED"));
            continue;
        };
        if !allowed.contains(&target) && !BASE.contains(&target) {
            wrong.insert(format!("{file}: {module} may not import crate::{full}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        Vec::from_iter(wrong).join("\n")
    );
}

#[test]
fn nothing_below_web_names_web() {
    let mut found = Vec::new();
    imports(Path::new("src"), &mut found);
    let wrong: Vec<_> = found
        .iter()
        .filter(|(file, import)| {
            let module = module_of(file);
            import.starts_with("web|") && !["web", "cli", "lib", "main"].contains(&module.as_str())
        })
        .collect();
    assert!(wrong.is_empty(), "below web, web is named: {wrong:?}");
}

#[test]
fn the_engine_reaches_files_only_through_the_backend_trait() {
    let mut found = Vec::new();
    imports(Path::new("src/engine"), &mut found);
    let wrong: Vec<_> = found
        .iter()
        .filter(|(_, import)| {
            let full = import.split_once('|').map(|(_, f)| f).unwrap_or("");
            full.contains("webdav")
                || full.contains("multistatus")
                || full.starts_with("backend::nextcloud")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "the engine names a backend's insides: {wrong:?}"
    );
}
