//! The command line: `nodedns run` and `nodedns check-config`. Parses flags into
//! [`Overrides`], reports errors with context, sets up logging and signals. The only module
//! that uses `anyhow` and exits the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, FileConfig, LogFormat, Overrides, Settings, file::parse_addr};
use crate::upstream::UpstreamSpec;
use crate::zones::Zone;

#[derive(Parser, Debug)]
#[command(name = "nodedns", version, about = "A node-local DNS cache for Kubernetes")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the cache (the default when no subcommand is given).
    Run(RunArgs),
    /// Validate a configuration file and exit non-zero on any error.
    CheckConfig {
        /// The YAML file to check.
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug, Default)]
struct RunArgs {
    /// YAML configuration file; flags below override its values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to serve DNS on, UDP and TCP (repeatable). Default 127.0.0.1:1053.
    #[arg(long, value_parser = parse_addr)]
    listen: Vec<SocketAddr>,
    /// Default upstream for every zone (repeatable): ADDR:PORT (UDP, TCP on truncation),
    /// udp://, tcp:// or tls://ADDR:PORT#server-name. Default: the nameservers in /etc/resolv.conf.
    #[arg(long, value_parser = UpstreamSpec::from_str)]
    upstream: Vec<UpstreamSpec>,
    /// Forward a zone to its own upstreams: ZONE=UPSTREAM[,UPSTREAM...] (repeatable).
    #[arg(long, value_parser = parse_forward)]
    forward: Vec<(Zone, Vec<UpstreamSpec>)>,
    /// Address for /metrics, /health and /ready. Default 127.0.0.1:9253.
    #[arg(long, value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
}

fn parse_forward(text: &str) -> Result<(Zone, Vec<UpstreamSpec>), String> {
    let (zone, servers) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected ZONE=ADDR:PORT[,ADDR:PORT...]"))?;
    let zone: Zone = zone.parse().map_err(|e| format!("{e}"))?;
    let servers = servers.split(',').map(UpstreamSpec::from_str).collect::<Result<Vec<_>, _>>()?;
    Ok((zone, servers))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::CheckConfig { file } => match config::load_file(&file).and_then(|f| Settings::build(f, Overrides::default())) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("nodedns: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => FileConfig::default(),
    };
    let overrides = Overrides { listen: args.listen, upstreams: args.upstream, forward: args.forward, metrics: args.metrics };
    let source = args.config.map(|path| crate::server::reload::Source { path, overrides: overrides.clone() });
    let settings = Settings::build(file, overrides)?;
    init_logging(&settings.log_level, settings.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone()));
        crate::server::run(settings, source, stop).await
    })
}

async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    stop.cancel();
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .with_context(|| format!("log.level `{level}` is not a valid filter"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
