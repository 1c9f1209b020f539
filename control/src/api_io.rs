//! What tonic serves an API connection over: the accepted `Connection`, decrypted
//! here when TLS is on, with its HTTP/2 frames watched (`h2_credit::CreditIo`).
//!
//! TLS is done by the device, not by tonic, because the frame watch needs the bytes
//! in the clear and tonic would encrypt above any IO the device hands it. The rustls
//! setup is the one tonic's `ServerTlsConfig` builds: the identity, ALPN h2, and,
//! with `tls.client_ca`, client certificates required and verified against it; the
//! handshake is limited by `api.handshake_timeout_ms`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::connections::{Connection, ConnectionInfo};
use crate::h2_credit::CreditIo;

/// A connection's bytes: as accepted, or decrypted.
pub enum ApiStream {
    Plain(Connection),
    Tls(Box<TlsStream<Connection>>),
}

/// What tonic is handed for each connection.
pub type ApiIo = CreditIo<ApiStream>;

impl ApiStream {
    fn connection(&self) -> &Connection {
        match self {
            ApiStream::Plain(c) => c,
            ApiStream::Tls(t) => t.get_ref().0,
        }
    }
}

/// Watches `stream`'s frames with its connection's credit book.
pub fn watched(stream: ApiStream) -> ApiIo {
    let book = stream.connection().info().credit.clone();
    CreditIo::new(stream, book)
}

impl tonic::transport::server::Connected for ApiIo {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.get_ref().connection().info().clone()
    }
}

/// The device's TLS server side.
#[derive(Clone)]
pub struct ApiTls {
    acceptor: TlsAcceptor,
    timeout: Duration,
}

fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key} = {}: {e}", path.display()))
}

fn certificates(pem: &[u8], key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS setup failed: {key}: {e}"))
}

impl ApiTls {
    /// From `[tls]`; errors are one line for the operator.
    pub fn from_config(c: &Config) -> Result<ApiTls, String> {
        let cert = certificates(&read(&c.tls.cert, "tls.cert")?, "tls.cert")?;
        let key = PrivateKeyDer::from_pem_slice(&read(&c.tls.key, "tls.key")?)
            .map_err(|e| format!("TLS setup failed: tls.key: {e}"))?;
        let builder = ServerConfig::builder();
        let builder = match &c.tls.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(certificates(
                    &read(ca, "tls.client_ca")?,
                    "tls.client_ca",
                )?);
                let verifier = WebPkiClientVerifier::builder(roots.into())
                    .build()
                    .map_err(|e| format!("TLS setup failed: tls.client_ca: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(cert, key)
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        config.alpn_protocols.push(b"h2".to_vec());
        Ok(ApiTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            timeout: Duration::from_millis(c.api.handshake_timeout_ms),
        })
    }

    /// The TLS handshake on an accepted connection, within the handshake time.
    pub async fn accept(&self, c: Connection) -> io::Result<ApiStream> {
        match tokio::time::timeout(self.timeout, self.acceptor.accept(c)).await {
            Ok(tls) => Ok(ApiStream::Tls(Box::new(tls?))),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake time is up",
            )),
        }
    }
}

impl AsyncRead for ApiStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(c) => Pin::new(c).poll_read(cx, buf),
            ApiStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ApiStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ApiStream::Plain(c) => Pin::new(c).poll_write(cx, buf),
            ApiStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(c) => Pin::new(c).poll_flush(cx),
            ApiStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ApiStream::Plain(c) => Pin::new(c).poll_shutdown(cx),
            ApiStream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}
