//! Development certificates: a CA, a server certificate for localhost / 127.0.0.1 /
//! ::1 signed by it, and a client certificate for mutual TLS. `offloadctl certs`
//! writes them into `certs/`; tests make fresh ones in a temporary directory.
//!
//! `server.crt` holds the server certificate followed by the CA certificate: the
//! server presents the whole chain, and a client that is handed `server.crt` as its
//! root store (as the Python OpenOffload clients are) finds the CA in it.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// File names inside the certificate directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
pub const CLIENT_CERT: &str = "client.crt";
pub const CLIENT_KEY: &str = "client.key";

fn params(cn: &str, sans: &[&str]) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(|e| format!("certificate parameters: {e}"))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "offloadd development");
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    Ok(p)
}

/// Writes a new CA, server and client certificate with their keys into `dir`.
pub fn generate(dir: &Path) -> Result<(), String> {
    let err = |e: rcgen::Error| format!("certificate generation failed: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = params("offloadd development CA", &[])?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;

    let server_key = KeyPair::generate().map_err(err)?;
    let mut server = params("localhost", &["localhost", "127.0.0.1", "::1"])?;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .map_err(err)?;

    let client_key = KeyPair::generate().map_err(err)?;
    let mut client = params("offloadd firewall", &[])?;
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client
        .signed_by(&client_key, &ca_cert, &ca_key)
        .map_err(err)?;

    let files = [
        (CA_CERT, ca_cert.pem()),
        (CA_KEY, ca_key.serialize_pem()),
        (
            SERVER_CERT,
            format!("{}{}", server_cert.pem(), ca_cert.pem()),
        ),
        (SERVER_KEY, server_key.serialize_pem()),
        (CLIENT_CERT, client_cert.pem()),
        (CLIENT_KEY, client_key.serialize_pem()),
    ];
    for (name, pem) in files {
        let p = dir.join(name);
        std::fs::write(&p, pem).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    Ok(())
}
