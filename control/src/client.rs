//! A connection to an offloadd (or any OpenOffload device) for offloadctl and the
//! tests: TLS with a given CA (and optionally a client certificate), or plaintext for
//! an `http://` URL, and one `SessionTable` client that speaks v1 or v2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::admin::admin_client::AdminClient;
use proto::v2::{
    AddSessionResponse, SessionId, SessionRequest, SessionRequestArgs, SessionResponse,
    SessionResponses,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Status, Streaming};

/// The gRPC metadata key that asks GetClosedSessions to keep the stream open and push
/// closures as they happen (see the README, "follow mode").
pub const FOLLOW_HEADER: &str = "offloadd-follow";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ApiVersion {
    V1,
    V2,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `https://host:port` (TLS) or `http://host:port` (plaintext).
    pub server: String,
    /// CA file the server certificate must chain to (PEM); required for https.
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (PEM).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub api: ApiVersion,
    /// Deadline of each call (None: no deadline).
    pub timeout: Option<Duration>,
}

impl ClientOptions {
    pub fn new(server: impl Into<String>) -> ClientOptions {
        ClientOptions {
            server: server.into(),
            ca: None,
            cert: None,
            key: None,
            api: ApiVersion::V2,
            timeout: None,
        }
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// Opens one HTTP/2 connection (TLS unless the URL is `http://`).
pub async fn connect_channel(o: &ClientOptions) -> Result<Channel, String> {
    let mut ep = Endpoint::from_shared(o.server.clone())
        .map_err(|e| format!("bad server URL {:?}: {e}", o.server))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(t) = o.timeout {
        ep = ep.timeout(t);
    }
    if o.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match &o.ca {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA")?)),
            None => return Err("https needs a CA file (--ca)".into()),
        }
        match (&o.cert, &o.key) {
            (Some(c), Some(k)) => {
                tls = tls.identity(Identity::from_pem(
                    read(c, "client certificate")?,
                    read(k, "client key")?,
                ))
            }
            (None, None) => {}
            _ => return Err("--cert and --key go together".into()),
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| format!("TLS setup failed: {e}"))?;
    } else if !o.server.starts_with("http://") {
        return Err(format!(
            "server URL {:?} must start with https:// or http://",
            o.server
        ));
    }
    ep.connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {}", o.server, error_chain(&e)))
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        // Errors often repeat their cause in their own text: say it once.
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

/// `SessionTable` over one connection, in either API version.
#[derive(Clone)]
pub enum SessionClient {
    V1(proto::v1::session_table_client::SessionTableClient<Channel>),
    V2(proto::v2::session_table_client::SessionTableClient<Channel>),
}

macro_rules! both {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            SessionClient::V1($c) => $e,
            SessionClient::V2($c) => $e,
        }
    };
}

impl SessionClient {
    pub fn new(channel: Channel, api: ApiVersion, max_message: usize) -> SessionClient {
        match api {
            ApiVersion::V1 => SessionClient::V1(
                proto::v1::session_table_client::SessionTableClient::new(channel)
                    .max_decoding_message_size(max_message),
            ),
            ApiVersion::V2 => SessionClient::V2(
                proto::v2::session_table_client::SessionTableClient::new(channel)
                    .max_decoding_message_size(max_message),
            ),
        }
    }

    pub async fn connect(o: &ClientOptions) -> Result<SessionClient, String> {
        Ok(SessionClient::new(
            connect_channel(o).await?,
            o.api,
            64 << 20,
        ))
    }

    /// One AddSession call with the given sessions as its stream.
    pub async fn add(
        &mut self,
        sessions: Vec<SessionRequest>,
    ) -> Result<AddSessionResponse, Status> {
        let s = tokio_stream::iter(sessions);
        Ok(both!(self, c => c.add_session(s).await?.into_inner()))
    }

    /// One AddSession call, with the answer's metadata: offloadd's trailers name the
    /// reason of each refused session (`crate::refusal::told`).
    pub async fn add_call(
        &mut self,
        sessions: Vec<SessionRequest>,
    ) -> Result<tonic::Response<AddSessionResponse>, Status> {
        let s = tokio_stream::iter(sessions);
        Ok(both!(self, c => c.add_session(s).await?))
    }

    /// One AddSession call fed from any stream.
    pub async fn add_stream(
        &mut self,
        s: impl tokio_stream::Stream<Item = SessionRequest> + Send + 'static,
    ) -> Result<AddSessionResponse, Status> {
        Ok(both!(self, c => c.add_session(s).await?.into_inner()))
    }

    pub async fn get(&mut self, id: u64) -> Result<SessionResponse, Status> {
        let r = SessionId { session_id: id };
        Ok(both!(self, c => c.get_session(r).await?.into_inner()))
    }

    pub async fn delete(&mut self, id: u64) -> Result<SessionResponse, Status> {
        let r = SessionId { session_id: id };
        Ok(both!(self, c => c.delete_session(r).await?.into_inner()))
    }

    pub async fn list(&mut self, args: SessionRequestArgs) -> Result<SessionResponses, Status> {
        Ok(both!(self, c => c.get_all_sessions(args).await?.into_inner()))
    }

    /// GetClosedSessions; `follow` keeps the stream open for closures yet to come.
    pub async fn closed(
        &mut self,
        args: SessionRequestArgs,
        follow: bool,
    ) -> Result<Streaming<SessionResponse>, Status> {
        let mut req = tonic::Request::new(args);
        if follow {
            req.metadata_mut().insert(
                FOLLOW_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        Ok(both!(self, c => c.get_closed_sessions(req).await?.into_inner()))
    }
}

/// The admin service of offloadd over the same connection.
pub fn admin(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel).max_decoding_message_size(64 << 20)
}
