//! Starting a real device in-process for tests: fresh certificates in a temporary
//! directory, TLS on 127.0.0.1 with an OS-chosen port, the ring device, and clients
//! of either API version. Used by control's integration tests and offloadctl's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{connect_channel, ApiVersion, ClientOptions, SessionClient};
use crate::config::{Config, Overrides};
use crate::server::{start_with, RunningDevice};

pub struct TestDevice {
    pub running: Option<RunningDevice>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub plaintext: bool,
}

impl TestDevice {
    /// A device on `config_toml` (empty: the default ring device) with capacity
    /// `max_sessions`, over TLS unless the config says plaintext.
    pub async fn start(config_toml: &str) -> TestDevice {
        TestDevice::start_with(config_toml, false).await
    }

    /// `start`; with `keep_rings` the test drives the ring ports itself
    /// (`running.ring_ends`).
    pub async fn start_with(config_toml: &str, keep_rings: bool) -> TestDevice {
        TestDevice::start_listening(config_toml, keep_rings, "127.0.0.1:0").await
    }

    /// `start_with`, listening on `listen` (a device started again on the port of
    /// one stopped, say).
    pub async fn start_listening(config_toml: &str, keep_rings: bool, listen: &str) -> TestDevice {
        let dir = tempfile::tempdir().expect("temp dir");
        crate::certs::generate(dir.path()).expect("certificates");
        let overrides = Overrides {
            listen: Some(listen.into()),
            ..Overrides::default()
        };
        let mut config = Config::parse(config_toml, dir.path(), &overrides).expect("test config");
        // Tests run side by side: each device's endpoint on a port of its own.
        if config.metrics.listen == crate::config::MetricsConfig::default().listen {
            config.metrics.listen = "127.0.0.1:0".into();
        }
        config.tls.cert = dir.path().join(crate::certs::SERVER_CERT);
        config.tls.key = dir.path().join(crate::certs::SERVER_KEY);
        if config.tls.client_ca.is_some() {
            config.tls.client_ca = Some(dir.path().join(crate::certs::CA_CERT));
        }
        let plaintext = config.api.plaintext;
        let running = start_with(config, keep_rings).await.expect("device starts");
        let addr = running.local_addrs()[0];
        let scheme = if plaintext { "http" } else { "https" };
        TestDevice {
            running: Some(running),
            url: format!("{scheme}://localhost:{}", addr.port()),
            dir,
            plaintext,
        }
    }

    pub fn certs(&self) -> &Path {
        self.dir.path()
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Options of a client that trusts the test CA.
    pub fn options(&self, api: ApiVersion) -> ClientOptions {
        let mut o = ClientOptions::new(self.url.clone());
        o.ca = Some(self.cert(crate::certs::CA_CERT));
        o.api = api;
        o.timeout = Some(Duration::from_secs(20));
        o
    }

    /// Options with the test client certificate (mutual TLS).
    pub fn options_with_cert(&self, api: ApiVersion) -> ClientOptions {
        let mut o = self.options(api);
        o.cert = Some(self.cert(crate::certs::CLIENT_CERT));
        o.key = Some(self.cert(crate::certs::CLIENT_KEY));
        o
    }

    pub async fn client(&self, api: ApiVersion) -> SessionClient {
        SessionClient::connect(&self.options(api))
            .await
            .expect("client connects")
    }

    pub async fn admin(
        &self,
    ) -> proto::admin::admin_client::AdminClient<tonic::transport::Channel> {
        crate::client::admin(
            connect_channel(&self.options(ApiVersion::V2))
                .await
                .expect("connect"),
        )
    }

    /// The ring end of port `name` (with `keep_rings`).
    pub fn ring(&mut self, name: &str) -> &mut crate::device::RingEnd {
        self.running
            .as_mut()
            .expect("running")
            .ring_ends
            .iter_mut()
            .find(|e| e.name == name)
            .expect("a ring port of that name")
    }

    pub fn device(&self) -> &crate::device::Device {
        &self.running.as_ref().expect("running").device
    }

    /// Where the device's API listens.
    pub fn running_addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().expect("running").local_addrs()[0]
    }

    /// Where the device's Prometheus endpoint listens (on a port of its own unless
    /// the test's config chose one).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.as_ref().expect("running").metrics_addr()
    }

    pub async fn stop(mut self) -> crate::server::StopSummary {
        self.running.take().expect("running").shutdown().await
    }
}

/// What a test does when this machine cannot run it (not root, a tool missing): under
/// `CI=true` that is a failure, so CI never counts an untested behaviour as passed;
/// elsewhere the test prints `skipped: <why>` and the caller returns. A setup step
/// that fails where the test could run is not a reason to skip: the test panics.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and this test cannot run: {why}");
    }
    eprintln!("skipped: {why}");
}

/// Why this process cannot run tests that need root, if it is not root.
pub fn not_root() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } != 0).then(|| "not root".to_string())
}

/// Why `tool` cannot be run, if it is not on the PATH.
pub fn missing_tool(tool: &str) -> Option<String> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| format!("`{tool}` is not installed"))
}
