//! offloadd: the OpenOffload device. Reads its config (config/offloadd.toml unless
//! told otherwise), starts the dataplane workers and serves the gRPC API until
//! SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use control::config::{Config, Overrides};

#[derive(Parser, Debug)]
#[command(name = "offloadd", version, about = "The offloadd OpenOffload device")]
struct Args {
    /// Config file (TOML). Default: /etc/offloadd/offloadd.toml, then
    /// ./config/offloadd.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, host:port (overrides api.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Serve without TLS (overrides api.plaintext).
    #[arg(long)]
    plaintext: bool,
    /// Session capacity of the device (overrides dataplane.max_sessions).
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Worker threads (overrides dataplane.workers; cores are then not pinned unless
    /// the config lists as many).
    #[arg(long)]
    workers: Option<usize>,
    /// Run the traffic simulator on the ring device (overrides simulate.enabled).
    #[arg(long)]
    simulate: bool,
    /// Prometheus endpoint, host:port, or "" for none (overrides metrics.listen).
    #[arg(long)]
    metrics_listen: Option<String>,
}

/// Where the config is looked for without --config: the installed device's, then
/// the one of a source tree (run from its root). Never a path built in.
const DEFAULT_CONFIGS: [&str; 2] = ["/etc/offloadd/offloadd.toml", "config/offloadd.toml"];

fn default_config() -> Result<PathBuf, String> {
    DEFAULT_CONFIGS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no config file: tried {}; pass one with --config FILE",
                DEFAULT_CONFIGS.join(", ")
            )
        })
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("offloadd: {msg}");
    ExitCode::from(2)
}

/// The arguments, or the exit code when there is nothing more to do: `--help`,
/// `--version`, a usage error, or the hidden `--write-docs DIR` of the package build.
fn parse_args() -> Result<Args, ExitCode> {
    let parsed = control::cli_docs::with_write_docs_flag(Args::command())
        .try_get_matches()
        .and_then(|m| {
            if let Some(dir) = control::cli_docs::requested_dir(&m) {
                return Ok(Err(write_docs(&dir)));
            }
            Args::from_arg_matches(&m).map(Ok)
        });
    match parsed {
        Ok(done) => done,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            Err(fail(format!(
                "{} (see offloadd --help)",
                first.trim_start_matches("error: ")
            )))
        }
    }
}

/// Man page and completions for the package (see control::cli_docs).
fn write_docs(dir: &std::path::Path) -> ExitCode {
    match control::cli_docs::write(Args::command(), dir) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let path = match args.config.clone().map_or_else(default_config, Ok) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let overrides = Overrides {
        listen: args.listen,
        plaintext: args.plaintext,
        max_sessions: args.max_sessions,
        workers: args.workers,
        simulate: args.simulate,
        metrics_listen: args.metrics_listen,
    };
    let config = match Config::load(&path, &overrides) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("control")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async move {
        tracing::info!(config = %path.display(), "starting");
        for w in control::cpus::warnings(&config.dataplane, &control::cpus::allowed()) {
            tracing::warn!("{w}");
        }
        // Before "serving" is logged: a SIGTERM from then on is a clean stop.
        let mut signals = match StopSignals::install() {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot handle SIGTERM/SIGINT: {e}")),
        };
        let running = match control::server::start(config).await {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        signals.wait().await;
        tracing::info!("stopping");
        if running.device.config.api.drain_ms > 0 {
            tokio::select! {
                _ = running.drain() => {}
                _ = signals.wait() => tracing::info!("a second signal: stopping without waiting"),
            }
        }
        let s = running.shutdown().await;
        tracing::info!(
            closed_undelivered = s.closed_held + s.engine.closed_undelivered,
            sessions_live = s.engine.sessions,
            workers_crashed = s.engine.crashed,
            "stopped; closed sessions not delivered to any client: {}",
            s.closed_held + s.engine.closed_undelivered
        );
        if s.engine.crashed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// SIGTERM and SIGINT, handled from `install` on.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
