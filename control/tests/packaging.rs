//! The Debian package's files that can drift from the source tree: the installed
//! config is the source tree's `config/offloadd.toml` with the certificates in
//! /etc/offloadd/certs, and it loads; the unit starts offloadd with that config.
//! (packaging/ci.sh builds and installs the package itself.)

use std::path::Path;

use control::config::{Config, Overrides};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const INSTALLED_CERTS: &str = "/etc/offloadd/certs/";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The text after the opening comment block (which says what the file is).
fn body(text: &str) -> &str {
    text.split_once("\n\n")
        .expect("a comment block, then the keys")
        .1
}

#[test]
fn packaged_config_is_the_source_config_with_installed_cert_paths() {
    let source = read("config/offloadd.toml");
    let packaged = read("packaging/offloadd.toml");
    assert!(
        body(&source).contains("\"../certs/"),
        "the source config names ../certs/"
    );
    assert_eq!(
        body(&packaged),
        body(&source).replace("\"../certs/", &format!("\"{INSTALLED_CERTS}")),
        "packaging/offloadd.toml differs from config/offloadd.toml in more than the certificate paths"
    );
}

#[test]
fn packaged_config_loads_with_generated_certs() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    control::certs::generate(&certs).unwrap();
    let config = dir.path().join("offloadd.toml");
    let text =
        read("packaging/offloadd.toml").replace(INSTALLED_CERTS, &format!("{}/", certs.display()));
    std::fs::write(&config, text).unwrap();
    let c = Config::load(&config, &Overrides::default()).unwrap();
    assert!(!c.api.plaintext);
}

#[test]
fn unit_runs_the_installed_binary_with_the_installed_config() {
    let unit = read("packaging/debian/offloadd.service");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/offloadd --config /etc/offloadd/offloadd.toml"),
        "{unit}"
    );
    let manifest = read("control/Cargo.toml");
    assert!(
        manifest.contains(r#"["../packaging/offloadd.toml", "etc/offloadd/offloadd.toml", "644"]"#),
        "control/Cargo.toml does not install packaging/offloadd.toml as /etc/offloadd/offloadd.toml"
    );
}
