//! The command line: `nodedns run`, `check-config`, `import-corefile`, the diagnostics
//! (`explain`, `probe`, `stats`, `querylog`), and node-cache's command line when invoked as
//! `node-cache` (or `nodedns node-cache ...`). Parses flags into [`Overrides`] and
//! diagnostic requests, reports errors with context, sets up logging and signals. The only
//! module that exits the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::resolv_conf::ResolvConf;
use crate::config::{self, FileConfig, LogFormat, Origin, Overrides, Settings, file::parse_addr};
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
        /// The YAML file to check (a Corefile with --corefile).
        file: PathBuf,
        /// The file is a CoreDNS Corefile.
        #[arg(long)]
        corefile: bool,
    },
    /// Print the nodedns YAML equivalent to a CoreDNS Corefile, with a comment on every line
    /// whose meaning changed.
    ImportCorefile {
        file: PathBuf,
        /// The port of server blocks that name none (CoreDNS's -dns.port).
        #[arg(long, default_value_t = 53)]
        dns_port: u16,
    },
    /// Run with NodeLocal DNSCache's node-cache flags (what running as `node-cache` does).
    #[command(name = "node-cache", disable_help_flag = true)]
    NodeCache {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    #[arg(long, short, conflicts_with = "corefile")]
    config: Option<PathBuf>,
    /// A CoreDNS Corefile to run instead of a YAML file (see `import-corefile`).
    #[arg(long)]
    corefile: Option<PathBuf>,
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
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_default();
    let args: Vec<String> = argv.collect();
    if std::path::Path::new(&program).file_name().is_some_and(|name| name == "node-cache") || node_cache_flags(&args) {
        return node_cache(args);
    }
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run(RunArgs::default())) {
        Command::NodeCache { args } => node_cache(args),
        Command::ImportCorefile { file, dns_port } => {
            let name = file.display().to_string();
            printed(std::fs::read_to_string(&file).map_err(|e| format!("{name}: cannot read: {e}")).and_then(|text| {
                let cx = config::corefile::Context::system(dns_port);
                config::corefile::import(&name, &text, &cx).map(|import| import.yaml).map_err(|e| e.to_string())
            }))
        }
        Command::CheckConfig { file, corefile } => printed(
            origin_of(Some(file.clone()), corefile)
                .load()
                .and_then(|f| Settings::build(f, Overrides::default()))
                .map(|_| format!("{}: OK\n", file.display()))
                .map_err(|e| e.to_string()),
        ),
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

/// Whether the command line is node-cache's rather than ours: a node-local-dns DaemonSet
/// whose image was swapped for nodedns's passes its arguments (`-localip ...`) to the
/// image's entry point. A word after a single dash is never one of our flags.
fn node_cache_flags(args: &[String]) -> bool {
    args.first().and_then(|a| a.strip_prefix('-')).is_some_and(|flag| flag.len() > 1 && !flag.starts_with('-'))
}

/// Prints what a command made, or its error, which alone is the message (file, line, key).
fn printed(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
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

fn origin_of(path: Option<PathBuf>, corefile: bool) -> Origin {
    match path {
        None => Origin::Defaults,
        Some(path) if corefile => Origin::Corefile(path),
        Some(path) => Origin::Yaml(path),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let origin = match args.corefile {
        Some(path) => Origin::Corefile(path),
        None => origin_of(args.config, false),
    };
    let overrides = Overrides { listen: args.listen, upstreams: args.upstream, forward: args.forward, metrics: args.metrics };
    serve(origin, overrides)
}

/// Runs as NodeLocal DNSCache's node-cache: its flags, its Corefile, its node setup. Flag
/// errors exit 2 with Go's messages, as node-cache's do.
fn node_cache(args: Vec<String>) -> ExitCode {
    use crate::config::nodecache;
    if args.iter().any(|a| matches!(a.as_str(), "-h" | "-help" | "--help")) {
        println!(
            "Usage of node-cache:\nRuns nodedns as a NodeLocal DNSCache node-cache: -localip, -conf, -basecorefile, -upstreamsvc, -kubednscm, -health-port, -setupinterface, -setupiptables, -interfacename, -skipteardown, -syncinterval, -metrics-listen-address, -pidfile, -dns.port"
        );
        return ExitCode::SUCCESS;
    }
    let parsed = match nodecache::parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if parsed.version {
        println!("nodedns {} (as node-cache)", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if parsed.local_ips.is_empty() {
        eprintln!("Error parsing flags - invalid localip specified - \"\", Exiting");
        return ExitCode::FAILURE;
    }
    report(serve(Origin::NodeCache(Box::new(parsed)), Overrides::default()))
}

/// Loads the configuration from `origin` and serves until SIGTERM or SIGINT. As node-cache,
/// its flags without meaning are logged once and its pidfile is there while it serves.
fn serve(origin: Origin, overrides: Overrides) -> anyhow::Result<()> {
    let file = origin.load()?;
    let (pidfile, ignored) = match &origin {
        Origin::NodeCache(args) => (args.pidfile.clone(), args.without_meaning.clone()),
        _ => (None, Vec::new()),
    };
    let source = (origin != Origin::Defaults).then(|| crate::process::reload::Source { origin, overrides: overrides.clone() });
    let settings = Settings::build(file, overrides)?;
    init_logging(&settings.restart_only.log_level, settings.restart_only.log_format)?;
    for flag in ignored {
        tracing::info!(flag = %format!("-{flag}"), "node-cache flag accepted; it changes nothing in nodedns");
    }
    if let Some(path) = &pidfile {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pidfile {}", path.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(stop_on_signal(stop.clone()));
        crate::process::run(settings, source, stop).await
    });
    if let Some(path) = pidfile {
        let _ = std::fs::remove_file(path);
    }
    served
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
