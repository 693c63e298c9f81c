//! Start-up configuration: a missing or malformed setting stops `serve` with exit code 2
//! and exactly one line that names it.

use std::process::Command;

const REQUIRED: [&str; 6] = [
    "APP_ID",
    "APP_SECRET",
    "APP_VERSION",
    "APP_HOST",
    "APP_PORT",
    "NEXTCLOUD_URL",
];

fn base_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("APP_ID", "harpbridge"),
        ("APP_SECRET", "cfgSecretQ7x"),
        ("APP_VERSION", "0.1.0"),
        ("APP_HOST", "127.0.0.1"),
        ("APP_PORT", "23000"),
        ("NEXTCLOUD_URL", "http://127.0.0.1:9/index.php"),
    ]
}

fn serve(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harpbridge"))
        .arg("serve")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run harpbridge");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_naming(stderr: &str, name: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr:?}");
    assert!(lines[0].contains(name), "{name} not named in {stderr:?}");
    assert!(!stderr.contains("cfgSecretQ7x"), "the secret was printed");
}

#[test]
fn each_missing_required_variable_exits_2_naming_it() {
    for missing in REQUIRED {
        let env: Vec<_> = base_env()
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (code, stdout, stderr) = serve(&env, &[]);
        assert_eq!(code, Some(2), "{missing}: {stderr}");
        assert!(stdout.is_empty());
        assert_one_line_naming(&stderr, missing);
    }
}

#[test]
fn empty_values_count_as_missing() {
    let env: Vec<_> = base_env()
        .into_iter()
        .map(|(k, v)| if k == "APP_SECRET" { (k, "  ") } else { (k, v) })
        .collect();
    let (code, _, stderr) = serve(&env, &[]);
    assert_eq!(code, Some(2));
    assert_one_line_naming(&stderr, "APP_SECRET");
}

#[test]
fn malformed_values_exit_2_naming_them() {
    let cases = [
        ("APP_PORT", "http"),
        ("APP_PORT", "70000"),
        ("NEXTCLOUD_URL", "nextcloud.local"),
        ("COMPUTE_DEVICE", "TPU"),
        ("HP_FRP_PORT", "x"),
        ("APP_ID", "../etc"),
        ("HARPBRIDGE_P2P_PEERS", "not-an-address"),
        (
            "HARPBRIDGE_P2P_PEERS",
            "/p2p/12D3KooWEpUZRwhvHJt7rYRM7rNtGXrwcnx84UxC9f3bokuhJ12f",
        ),
    ];
    for (var, value) in cases {
        let mut env = base_env();
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        if var == "HP_FRP_PORT" {
            env.push(("HP_SHARED_KEY", "harpKeyZ9"));
        }
        let (code, _, stderr) = serve(&env, &[]);
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        assert_one_line_naming(&stderr, var);
        assert!(!stderr.contains("harpKeyZ9"));
    }
    let (code, _, stderr) = serve(&base_env(), &["--listen", "udp://1.2.3.4:5"]);
    assert_eq!(code, Some(2));
    assert_one_line_naming(&stderr, "--listen");
}

#[test]
fn flags_override_the_environment() {
    // A flag fills in for a missing variable: the next missing one is reported instead.
    let env: Vec<_> = base_env()
        .into_iter()
        .filter(|(k, _)| *k != "APP_ID" && *k != "APP_PORT")
        .collect();
    let (code, _, stderr) = serve(&env, &["--app-id", "harpbridge"]);
    assert_eq!(code, Some(2));
    assert_one_line_naming(&stderr, "APP_PORT");
}

#[test]
fn help_does_not_show_secret_values() {
    let out = Command::new(env!("CARGO_BIN_EXE_harpbridge"))
        .args(["serve", "--help"])
        .env("APP_SECRET", "helpSecretW2")
        .env("HP_SHARED_KEY", "helpHarpKeyW2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("APP_SECRET"));
    assert!(!text.contains("helpSecretW2") && !text.contains("helpHarpKeyW2"));
}
