//! The command line: `nodedns run`, `check-config`, and the diagnostics (`explain`,
//! `probe`, `stats`, `querylog`). Parses flags into [`Overrides`] and diagnostic requests,
//! reports errors with context, sets up logging and signals. The only module that exits
//! the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::resolv_conf::ResolvConf;
use crate::config::{self, FileConfig, LogFormat, Overrides, Settings, file::parse_addr};
use crate::upstream::UpstreamSpec;
use crate::wire::RecordType;
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
    /// Show the queries a pod's libc sends for one lookup and what nodedns does with each.
    Explain(ExplainArgs),
    /// Look names up repeatedly like a pod does; print slow lookups, export metrics.
    Probe(ProbeArgs),
    /// Summarise a running nodedns from its metrics.
    Stats {
        /// The running instance's HTTP endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9253")]
        instance: String,
    },
    /// Show or switch a running nodedns's query log (switching from the node itself only).
    Querylog(QuerylogArgs),
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
    /// The name as the application passes it to getaddrinfo.
    name: String,
    /// The pod's resolv.conf. Default: what the kubelet writes for a pod in --namespace.
    #[arg(long)]
    resolv_conf: Option<PathBuf>,
    /// Namespace for the default resolv.conf.
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The pod's C library.
    #[arg(long, value_enum, default_value = "glibc")]
    resolver: crate::diagnose::libc::Libc,
    /// The type the application asks for. Default: A and AAAA (getaddrinfo, AF_UNSPEC).
    #[arg(long = "type")]
    qtype: Option<RecordType>,
    /// A running nodedns's HTTP endpoint, asked what it would do with each query (cache
    /// state included), e.g. http://127.0.0.1:9253. Without it, --config is evaluated here.
    #[arg(long)]
    instance: Option<String>,
    /// The configuration to evaluate when no --instance is given.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Send the queries to this DNS server (ADDR:PORT) to see the real results; without
    /// it, results are predicted.
    #[arg(long, value_parser = parse_addr)]
    server: Option<SocketAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ProbeArgs {
    /// A name to look up (repeatable), as an application would pass it.
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// Time between rounds of lookups.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// DNS server to ask. Default: the first nameserver of --resolv-conf.
    #[arg(long, value_parser = parse_addr)]
    server: Option<SocketAddr>,
    /// resolv.conf giving the search list and options (a pod's own by default).
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    #[arg(long, value_enum, default_value = "glibc")]
    resolver: crate::diagnose::libc::Libc,
    /// The type asked for. Default: A and AAAA.
    #[arg(long = "type")]
    qtype: Option<RecordType>,
    /// Lookups at least this slow are printed as they happen (failures always are).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    slow: std::time::Duration,
    /// Stop after this many rounds and print a summary. Default: run until stopped.
    #[arg(long)]
    count: Option<u64>,
    /// Serve the probe's metrics here (ADDR:PORT), at /metrics.
    #[arg(long, value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
}

#[derive(clap::Args, Debug)]
struct QuerylogArgs {
    /// `on` or `off`; without it, the current policy is printed.
    #[arg(value_parser = ["on", "off"])]
    switch: Option<String>,
    /// Fraction of queries logged (0 to 1).
    #[arg(long)]
    sample: Option<f64>,
    /// Log every query at least this slow, whatever the sample (e.g. 100ms; 0s: off).
    #[arg(long)]
    slow: Option<String>,
    #[arg(long, default_value = "http://127.0.0.1:9253")]
    instance: String,
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
        Command::Run(args) => report(run(args)),
        Command::Explain(args) => report(block_on(explain(args))),
        Command::Probe(args) => report(block_on(probe(args))),
        Command::Stats { instance } => report(block_on(async move {
            let text = crate::diagnose::client::instance(hyper::Method::GET, &instance, "metrics").await?;
            print!("{}", crate::diagnose::stats::summarise(&instance, &text));
            Ok(())
        })),
        Command::Querylog(args) => report(block_on(querylog(args))),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodedns: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a diagnostic on a small runtime of its own.
fn block_on(task: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?.block_on(task)
}

fn asked_types(qtype: Option<RecordType>) -> Vec<RecordType> {
    match qtype {
        Some(t) => vec![t],
        None => vec![crate::wire::RecordType::A, crate::wire::RecordType::AAAA],
    }
}

fn read_resolv_conf(path: &std::path::Path) -> anyhow::Result<ResolvConf> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(ResolvConf::parse(&text))
}

async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    use crate::diagnose::explain::{self, Decider, ExplainRequest};
    let conf = match &args.resolv_conf {
        Some(path) => read_resolv_conf(path)?,
        None => ResolvConf::kubernetes_pod(&args.namespace, &args.cluster_domain, "10.96.0.10".parse().expect("literal")),
    };
    let decider = match args.instance {
        Some(url) => Decider::Instance(url),
        None => {
            let file = match &args.config {
                Some(path) => config::load_file(path)?,
                None => FileConfig::default(),
            };
            let settings = Settings::build(file, Overrides::default())?;
            let naming = crate::kubernetes::Naming::new(settings.restart_only.naming.clone());
            Decider::Settings(Box::new(settings), naming)
        }
    };
    let req = ExplainRequest { name: args.name, libc: args.resolver, conf, types: asked_types(args.qtype), decider, server: args.server };
    let (lookup, explanation) = explain::explain(&req).await?;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&explanation)?),
        false => print!("{}", explain::render(&req, &lookup, &explanation)),
    }
    Ok(())
}

async fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let conf = read_resolv_conf(&args.resolv_conf)?;
    let server = match args.server.or_else(|| conf.nameservers.first().copied()) {
        Some(server) => server,
        None => anyhow::bail!("{}: no nameserver line; pass --server", args.resolv_conf.display()),
    };
    let settings = crate::diagnose::probe::ProbeSettings {
        names: args.names,
        interval: args.interval,
        server,
        libc: args.resolver,
        conf,
        types: asked_types(args.qtype),
        slow: args.slow,
        rounds: args.count,
        metrics: args.metrics,
    };
    crate::diagnose::probe::run(settings).await
}

async fn querylog(args: QuerylogArgs) -> anyhow::Result<()> {
    let mut params = form_urlencoded::Serializer::new(String::new());
    if let Some(switch) = &args.switch {
        params.append_pair("enabled", if switch == "on" { "true" } else { "false" });
    }
    if let Some(sample) = args.sample {
        params.append_pair("sample", &sample.to_string());
    }
    if let Some(slow) = &args.slow {
        params.append_pair("slow", slow);
    }
    let params = params.finish();
    let method = if params.is_empty() { hyper::Method::GET } else { hyper::Method::POST };
    let body = crate::diagnose::client::instance(method, &args.instance, &format!("querylog?{params}")).await?;
    print!("{body}");
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::load_file(path)?,
        None => FileConfig::default(),
    };
    let overrides = Overrides { listen: args.listen, upstreams: args.upstream, forward: args.forward, metrics: args.metrics };
    let source = args.config.map(|path| crate::process::reload::Source { path, overrides: overrides.clone() });
    let settings = Settings::build(file, overrides)?;
    init_logging(&settings.restart_only.log_level, settings.restart_only.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone()));
        crate::process::run(settings, source, stop).await
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
    // Colour only for a person at a terminal: `kubectl logs` and log shippers read a pipe or
    // a file, where escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
