//! offloadctl: the firewall side of OpenOffload and the operator's tool for offloadd.
//!
//! One binary, one subcommand per job: session calls (add/get/delete/list/closed),
//! a live view (watch), the firewall simulator (fw-sim), a load generator (bench), the
//! device's counters, neighbour table and latency histograms (stats, metrics,
//! neighbours, latency), and the development
//! certificates (certs).
//!
//! Output is for people by default. `--json` prints JSON Lines: one JSON object per
//! line (one per session or record for the session commands, one document on one
//! line for stats and latency, and the result object as the last line of bench).
//! Every error is one line on stderr and a non-zero exit code.

/// `println!` to stdout that ends the program quietly (exit code 141, as if killed
/// by SIGPIPE) when the reader has gone, e.g. `offloadctl list | head`.
macro_rules! out {
    ($($t:tt)*) => { $crate::output::emit(&format!("{}\n", format_args!($($t)*))) };
}

/// `print!` with the same behaviour.
macro_rules! out_raw {
    ($($t:tt)*) => { $crate::output::emit(&format!($($t)*)) };
}

mod bench;
mod fw_sim;
mod latency;
mod neighbours;
mod output;
mod plot;
mod progress;
mod sessions;
mod stats;
mod watch;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use control::client::{self, ApiVersion, ClientOptions, SessionClient};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "offloadctl",
    version,
    about = "Client of an OpenOffload device (offloadd): sessions, live view, firewall simulator, benchmarks, statistics",
    after_help = "With --json every command prints JSON Lines: one JSON object per line."
)]
pub struct Cli {
    /// Device URL: https:// for TLS, http:// for plaintext.
    #[arg(long, global = true, default_value = "https://localhost:3443")]
    pub server: String,
    /// CA certificate (PEM) the device's certificate must chain to [default:
    /// /etc/offloadd/certs/ca.crt, then ./certs/ca.crt].
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS; needs --cert.
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// OpenOffload API version of the session calls.
    #[arg(long, global = true, value_enum, default_value = "v2")]
    pub api: ApiVersion,
    /// Print JSON Lines (one JSON object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Offload one session.
    Add(sessions::AddArgs),
    /// Show one session (state, close code, counters, times).
    Get {
        /// The session id.
        id: u64,
    },
    /// Remove one session and show its final counters.
    Delete {
        /// The session id.
        id: u64,
    },
    /// List sessions in id order (all of them unless --page or --cursor is given).
    List(sessions::ListArgs),
    /// Print closed sessions as the device hands them over (each one only once).
    Closed(sessions::ClosedArgs),
    /// Refreshing view of the device and its sessions, like top.
    Watch(watch::WatchArgs),
    /// Firewall simulator: offloads sessions, collects closures, offloads again.
    FwSim(fw_sim::FwSimArgs),
    /// Load generator that checks every answer.
    Bench(bench::BenchArgs),
    /// Device, worker and port counters.
    Stats,
    /// Prometheus text of the device's counters, levels and histograms (what its
    /// metrics endpoint serves).
    Metrics,
    /// The neighbour table: next hops, their MACs, ports, states and ages.
    Neighbours,
    /// Latency histograms of the device: percentiles, .hgrm text, SVG plot.
    Latency(latency::LatencyArgs),
    /// Write fresh development certificates (CA, server, client).
    Certs {
        /// Directory to write them into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    Drop,
    Forward,
    Mirror,
    Snoop,
}

impl ActionArg {
    pub fn action(self) -> dataplane::session::Action {
        use dataplane::session::Action;
        match self {
            ActionArg::Drop => Action::Drop,
            ActionArg::Forward => Action::Forward,
            ActionArg::Mirror => Action::Mirror,
            ActionArg::Snoop => Action::Snoop,
        }
    }
}

/// How to reach the device, shared by every subcommand.
pub struct Conn {
    pub options: ClientOptions,
    pub json: bool,
}

/// Where the CA is looked for without --ca: the installed device's, then the
/// development one of a source tree.
const DEFAULT_CAS: [&str; 2] = ["/etc/offloadd/certs/ca.crt", "certs/ca.crt"];

/// The CA to trust: --ca, or the first default that exists.
fn find_ca(given: Option<&PathBuf>) -> Result<PathBuf, String> {
    if let Some(ca) = given {
        if ca.exists() {
            return Ok(ca.clone());
        }
        return Err(format!(
            "CA file {} not found: pass the device's CA with --ca FILE, or use an http:// --server for plaintext",
            ca.display()
        ));
    }
    DEFAULT_CAS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "no CA file: tried {}; pass the device's CA with --ca FILE \
                 (`offloadctl certs` writes certs/ca.crt), or use an http:// --server for plaintext",
                DEFAULT_CAS.join(", ")
            )
        })
}

impl Conn {
    fn from_cli(cli: &Cli) -> Result<Conn, String> {
        let mut o = ClientOptions::new(cli.server.clone());
        o.api = cli.api;
        o.cert = cli.cert.clone();
        o.key = cli.key.clone();
        if cli.server.starts_with("https://") {
            o.ca = Some(find_ca(cli.ca.as_ref())?);
        }
        Ok(Conn {
            options: o,
            json: cli.json,
        })
    }

    pub async fn channel(&self) -> Result<Channel, String> {
        client::connect_channel(&self.options).await
    }

    pub async fn sessions(&self) -> Result<SessionClient, String> {
        SessionClient::connect(&self.options).await
    }

    pub fn session_client(&self, ch: Channel) -> SessionClient {
        SessionClient::new(ch, self.options.api, 64 << 20)
    }
}

/// A gRPC error on one line.
pub fn status_line(what: &str, s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{what}: {:?}", s.code())
    } else {
        format!("{what}: {:?}: {}", s.code(), s.message())
    }
}

/// Parses an address for flags; clap reports the error.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Cmd::Certs { out } = &cli.cmd {
        control::certs::generate(out)?;
        if cli.json {
            out!(
                "{}",
                serde_json::json!({ "certs": out.display().to_string() })
            );
        } else {
            out!("wrote development certificates to {}", out.display());
        }
        return Ok(());
    }
    let conn = Conn::from_cli(&cli)?;
    match cli.cmd {
        Cmd::Add(a) => sessions::add(&conn, a).await,
        Cmd::Get { id } => sessions::get(&conn, id).await,
        Cmd::Delete { id } => sessions::delete(&conn, id).await,
        Cmd::List(a) => sessions::list(&conn, a).await,
        Cmd::Closed(a) => sessions::closed(&conn, a).await,
        Cmd::Watch(a) => watch::run(&conn, a).await,
        Cmd::FwSim(a) => fw_sim::run(&conn, a).await,
        Cmd::Bench(a) => bench::run(&conn, a).await,
        Cmd::Stats => stats::run(&conn).await,
        Cmd::Metrics => stats::metrics(&conn).await,
        Cmd::Neighbours => neighbours::run(&conn).await,
        Cmd::Latency(a) => latency::run(&conn, a).await,
        Cmd::Certs { .. } => unreachable!("handled above"),
    }
}

/// The command line (clap exits on --help, --version and usage errors), or the exit
/// code of the hidden `write-docs DIR` of the package build.
fn parse_cli() -> Result<Cli, ExitCode> {
    let m = control::cli_docs::with_write_docs_subcommand(Cli::command()).get_matches();
    if let Some(dir) = control::cli_docs::requested_dir(&m) {
        return Err(match control::cli_docs::write(Cli::command(), &dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("offloadctl: {e}");
                ExitCode::FAILURE
            }
        });
    }
    Cli::from_arg_matches(&m).map_err(|e| e.exit())
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("offloadctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = cli.server.clone();
    let ca = cli.ca.clone();
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let e = if tls_behind_http(&e, &server) {
                let addr = server.trim_start_matches("http://");
                format!("{server} does not speak plaintext HTTP/2 but TLS: pass --server https://{addr}")
            } else {
                explain(&e, &server, ca.as_deref())
            };
            eprintln!("offloadctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether a failed call to an http:// server failed because the server wants TLS:
/// the error is the transport's, and the server does not answer the HTTP/2 preface
/// with HTTP/2. (gRPC reports this case in several ways, none of which says TLS.)
fn tls_behind_http(e: &str, server: &str) -> bool {
    let transport = [
        "transport error",
        "h2 protocol error",
        "Cancelled",
        "connection",
    ];
    let Some(addr) = server.strip_prefix("http://") else {
        return false;
    };
    transport.iter().any(|m| e.contains(m)) && answers_plaintext_h2(addr) == Some(false)
}

/// Whether `addr` (host:port) answers the HTTP/2 client preface with a SETTINGS frame,
/// as a plaintext HTTP/2 server does; None if it cannot be asked.
fn answers_plaintext_h2(addr: &str) -> Option<bool> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(2);
    let to = addr.to_socket_addrs().ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&to, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    // The preface, then an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .ok()?;
    let mut head = [0u8; 9];
    Some(match s.read_exact(&mut head) {
        Ok(()) => head[3] == 0x04,
        Err(_) => false,
    })
}

/// A connection error as what is wrong and what to pass, when the cause is one a
/// person commonly meets; otherwise the error as it came.
fn explain(e: &str, server: &str, ca: Option<&std::path::Path>) -> String {
    let addr = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let ca = ca.map_or_else(|| "the default CA".to_string(), |p| p.display().to_string());
    let plaintext = server.starts_with("http://");
    let h2_failed = [
        "h2 protocol error",
        "frame with invalid size",
        "Cancelled",
        "connection closed",
    ];
    if plaintext && h2_failed.iter().any(|m| e.contains(m)) {
        format!("{server} does not speak plaintext HTTP/2: if the device uses TLS (the default), pass --server https://{addr}")
    } else if !plaintext && (e.contains("InvalidContentType") || e.contains("corrupt message")) {
        format!(
            "{server} answered without TLS: the device is plaintext; pass --server http://{addr}"
        )
    } else if e.contains("UnknownIssuer") || e.contains("BadSignature") {
        format!(
            "the device's certificate is not signed by {ca}: pass the device's CA with --ca FILE"
        )
    } else if e.contains("NotValidForName") {
        format!("the device's certificate does not name the host of {server}: use a name it has (e.g. localhost)")
    } else if e.contains("Expired") && !e.contains("received fatal alert") {
        "the device's certificate has expired: the device needs a new one (offloadctl certs)"
            .to_string()
    } else if e.contains("CertificateExpired")
        || e.contains("BadCertificate")
        || e.contains("CertificateRequired")
    {
        "the device refused the client certificate (expired, missing, or not signed by its client CA): pass a valid one with --cert and --key".to_string()
    } else if e.contains("Connection refused") {
        format!("nothing listens at {addr}: is offloadd running there? (--server)")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn common_connection_errors_say_what_to_pass() {
        let tls = "https://localhost:3443";
        let e = explain(
            "GetStats failed: Internal: h2 protocol error: http2 error",
            "http://localhost:3443",
            None,
        );
        assert_eq!(e, "http://localhost:3443 does not speak plaintext HTTP/2: if the device uses TLS (the default), pass --server https://localhost:3443");
        let e = explain(
            "GetStats failed: Cancelled: operation was canceled",
            "http://localhost:3443",
            None,
        );
        assert!(e.ends_with("pass --server https://localhost:3443"), "{e}");
        let e = explain("cannot connect to https://h:1: transport error: received corrupt message of type InvalidContentType", "https://h:1", None);
        assert!(e.ends_with("pass --server http://h:1"), "{e}");
        let e = explain(
            "invalid peer certificate: UnknownIssuer",
            tls,
            Some(std::path::Path::new("ca.pem")),
        );
        assert!(
            e.starts_with("the device's certificate is not signed by ca.pem"),
            "{e}"
        );
        let e = explain(
            "tcp connect error: Connection refused (os error 111)",
            tls,
            None,
        );
        assert_eq!(
            e,
            "nothing listens at localhost:3443: is offloadd running there? (--server)"
        );
        let e = explain("received fatal alert: CertificateExpired", tls, None);
        assert!(e.contains("--cert and --key"), "{e}");
        assert_eq!(
            explain("GetSession failed: NotFound", tls, None),
            "GetSession failed: NotFound"
        );
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_globals() {
        let c = Cli::try_parse_from(["offloadctl", "get", "7"]).unwrap();
        assert_eq!(c.server, "https://localhost:3443");
        assert_eq!(c.api, ApiVersion::V2);
        assert!(matches!(c.cmd, Cmd::Get { id: 7 }));
        let c = Cli::try_parse_from(["offloadctl", "stats", "--json", "--api", "v1"]).unwrap();
        assert!(c.json);
        assert_eq!(c.api, ApiVersion::V1);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            vec!["offloadctl", "get"],
            vec!["offloadctl", "get", "x"],
            vec!["offloadctl", "--api", "v3", "stats"],
            vec!["offloadctl", "--cert", "c.pem", "stats"],
            vec!["offloadctl", "add", "--id", "1", "--src", "10.0.0.1"],
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn missing_ca_says_how_to_pass_it() {
        let mut c = Cli::try_parse_from(["offloadctl", "stats"]).unwrap();
        c.ca = Some(PathBuf::from("/nonexistent/ca.crt"));
        let e = Conn::from_cli(&c).err().unwrap();
        assert!(e.contains("--ca"), "{e}");
        c.server = "http://localhost:3443".into();
        assert!(Conn::from_cli(&c).is_ok());
    }
}
