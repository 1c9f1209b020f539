//! What the device's port answers a client speaking raw TLS or raw HTTP/2, read
//! directly from the socket: the refusal itself, which gRPC clients report only as
//! "connection closed" or "protocol error".

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// The HTTP/2 connection preface every gRPC client opens with.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connects over TLS (trusting `ca`, no client certificate, ALPN h2), sends the
/// HTTP/2 preface and reads: the error the connection ends with (for a device that
/// requires client certificates, the TLS alert it sent), or `Ok` with what it answered.
pub async fn tls_without_client_cert(addr: SocketAddr, ca: &Path) -> Result<Vec<u8>, String> {
    let roots = roots(ca);
    let config = client_config(roots);
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let name = ServerName::try_from("localhost").unwrap();
    let exchange = async {
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(H2_PREFACE).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256];
        let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
        buf.truncate(n);
        Ok(buf)
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the device answers or ends the connection")
}

fn roots(ca: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("CA is usable");
    }
    roots
}

/// A TLS client trusting `roots`, without a certificate, offering ALPN h2.
fn client_config(roots: RootCertStore) -> ClientConfig {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A completed TLS handshake (trusting `ca`) after which the client sends nothing,
/// or the error the handshake ended with.
pub async fn tls_handshake_only(
    addr: SocketAddr,
    ca: &Path,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tls_over(tcp, ca).await
}

/// `tls_handshake_only` on a connection already made.
pub async fn tls_over(
    tcp: TcpStream,
    ca: &Path,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from("localhost").unwrap();
    let handshake = TlsConnector::from(Arc::new(client_config(roots(ca)))).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(20), handshake)
        .await
        .map_err(|_| "TLS handshake not done in 20 s".to_string())?
        .map_err(|e| e.to_string())
}

/// Reads from `s` until the device ends the connection (end of stream or an error);
/// false if it is still open after `limit`.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let until_closed = async {
        let mut buf = [0u8; 512];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(limit, until_closed).await.is_ok()
}

/// Sends the HTTP/2 preface in plaintext and returns the device's answer, up to the
/// end of the connection.
pub async fn plaintext_h2(addr: SocketAddr) -> Vec<u8> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("TCP connect");
        s.write_all(H2_PREFACE).await.expect("send the preface");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        answer
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the device answers and ends the connection")
}
