//! Running as NodeLocal DNSCache's `node-cache`: its command line, with its defaults, and
//! the Corefile it generates from the node-local-dns ConfigMap's template, so that an
//! existing `node-local-dns` DaemonSet runs nodedns with only its image changed.
//!
//! node-cache fills in the template's `__PILLAR__CLUSTER__DNS__` (the IP of the Service named
//! by `-upstreamsvc`, from the environment variable the kubelet sets for it),
//! `__PILLAR__UPSTREAM__SERVERS__` (the kube-dns ConfigMap's `upstreamNameservers`, else
//! `/etc/resolv.conf`), `__PILLAR__LOCAL__DNS__` and `__PILLAR__DNS__SERVER__`, adds a block
//! per `stubDomains` entry, writes the result to `-conf`, and sets up the node. Here the
//! generated Corefile is imported ([`super::corefile`]) and node-cache's flags become the
//! node settings, with node-cache's own packet-filter rules.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::corefile::{self, Context};
use super::{ConfigError, FileConfig};

/// node-cache's flags, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCacheArgs {
    pub local_ips: Vec<IpAddr>,
    /// Where the generated Corefile is written (`-conf`).
    pub conf: Option<PathBuf>,
    pub base_corefile: PathBuf,
    pub upstream_service: String,
    /// The kube-dns ConfigMap's directory; `None`: `/etc/kube-dns` if it exists.
    pub kube_dns_config: Option<PathBuf>,
    pub health_port: u16,
    pub setup_interface: bool,
    pub setup_iptables: bool,
    pub interface: String,
    pub skip_teardown: bool,
    pub sync_interval: Duration,
    pub metrics_listen: SocketAddr,
    pub pidfile: Option<PathBuf>,
    pub dns_port: u16,
    /// Flags accepted for compatibility that change nothing in nodedns, to log once.
    pub without_meaning: Vec<String>,
    /// `-version`: print the version and exit.
    pub version: bool,
}

impl Default for NodeCacheArgs {
    fn default() -> Self {
        NodeCacheArgs {
            local_ips: Vec::new(),
            conf: None,
            base_corefile: "/etc/coredns/Corefile.base".into(),
            upstream_service: "kube-dns".into(),
            kube_dns_config: None,
            health_port: 8080,
            setup_interface: true,
            setup_iptables: true,
            interface: "nodelocaldns".into(),
            skip_teardown: false,
            sync_interval: Duration::from_secs(60),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9353)),
            pidfile: None,
            dns_port: 53,
            without_meaning: Vec::new(),
            version: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    #[error("flag needs an argument: -{0}")]
    Missing(String),
    #[error("invalid value {value:?} for flag -{flag}: {why}")]
    Invalid { flag: String, value: String, why: String },
    #[error("extra command line arguments: {0:?}")]
    Extra(Vec<String>),
}

/// The flags node-cache knows that mean nothing to nodedns.
const WITHOUT_MEANING: &[&str] = &["corefile", "reloadwithsignal", "quiet", "plugins"];
const BOOLEANS: &[&str] = &["setupinterface", "setupiptables", "skipteardown", "reloadwithsignal", "quiet", "plugins", "version"];
/// node-cache's flags that take a value (CoreDNS's `-p` is `-dns.port`).
const WITH_VALUE: &[&str] = &[
    "localip",
    "conf",
    "basecorefile",
    "upstreamsvc",
    "kubednscm",
    "health-port",
    "interfacename",
    "syncinterval",
    "metrics-listen-address",
    "pidfile",
    "dns.port",
    "p",
    "corefile",
];

/// Parses node-cache's command line (without the program name) as Go's `flag` package
/// does: `-name value`, `-name=value`, `--name`; booleans only as `-name` or `-name=BOOL`;
/// parsing stops at the first argument that is not a flag, and leftovers are an error.
pub fn parse_args(args: &[String]) -> Result<NodeCacheArgs, FlagError> {
    let mut out = NodeCacheArgs::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).filter(|f| !f.is_empty()) else {
            let extra: Vec<String> = std::iter::once(arg.clone()).chain(rest.cloned()).collect();
            return Err(FlagError::Extra(extra));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if !BOOLEANS.contains(&name) && !WITH_VALUE.contains(&name) {
            return Err(FlagError::Unknown(name.to_string()));
        }
        if BOOLEANS.contains(&name) {
            let value = match inline.as_deref() {
                None => true,
                Some(v) => parse_bool(v).ok_or_else(|| invalid(name, v, "parse error"))?,
            };
            set_bool(&mut out, name, value);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => rest.next().cloned().ok_or_else(|| FlagError::Missing(name.to_string()))?,
        };
        set_value(&mut out, name, &value)?;
    }
    if let Some(extra) = args.iter().position(|a| a == "--").map(|i| args[i + 1..].to_vec()).filter(|e| !e.is_empty()) {
        return Err(FlagError::Extra(extra));
    }
    Ok(out)
}

fn invalid(flag: &str, value: &str, why: &str) -> FlagError {
    FlagError::Invalid { flag: flag.into(), value: value.into(), why: why.into() }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn set_bool(out: &mut NodeCacheArgs, name: &str, value: bool) {
    match name {
        "setupinterface" => out.setup_interface = value,
        "setupiptables" => out.setup_iptables = value,
        "skipteardown" => out.skip_teardown = value,
        "version" => out.version = value,
        other => out.without_meaning.push(other.to_string()),
    }
}

fn set_value(out: &mut NodeCacheArgs, name: &str, value: &str) -> Result<(), FlagError> {
    let port = |v: &str| v.parse::<u16>().map_err(|_| invalid(name, v, "not a port"));
    match name {
        "localip" => {
            out.local_ips = value
                .split(',')
                .map(|ip| ip.parse::<IpAddr>().map_err(|_| invalid(name, value, &format!("`{ip}` is not an IP address"))))
                .collect::<Result<_, _>>()?;
            if out.local_ips.iter().any(|ip| ip.is_ipv4() != out.local_ips[0].is_ipv4()) {
                return Err(invalid(name, value, "the addresses must be of one family"));
            }
        }
        "conf" => out.conf = Some(value.into()),
        "basecorefile" => out.base_corefile = value.into(),
        "upstreamsvc" => out.upstream_service = value.into(),
        "kubednscm" => out.kube_dns_config = (!value.is_empty()).then(|| value.into()),
        "health-port" => out.health_port = port(value)?,
        "interfacename" => out.interface = value.into(),
        "syncinterval" => out.sync_interval = sync_interval(value).ok_or_else(|| invalid(name, value, "not a duration"))?,
        "metrics-listen-address" => {
            out.metrics_listen = super::file::parse_addr(value)
                .ok()
                .or_else(|| value.strip_prefix(':').and_then(|p| p.parse().ok()).map(|p| SocketAddr::from(([0, 0, 0, 0], p))))
                .ok_or_else(|| invalid(name, value, "not an address"))?;
        }
        "pidfile" => out.pidfile = (!value.is_empty()).then(|| value.into()),
        "dns.port" | "p" => out.dns_port = port(value)?,
        n if WITHOUT_MEANING.contains(&n) => out.without_meaning.push(n.to_string()),
        other => return Err(FlagError::Unknown(other.to_string())),
    }
    Ok(())
}

/// node-cache multiplies `-syncinterval` by a second: its default `60` is 60 s and `60ns`
/// is too. A value with another unit is read as that duration, which is what an operator
/// writing `-syncinterval=30s` means.
fn sync_interval(value: &str) -> Option<Duration> {
    let d = match value.parse::<u64>() {
        Ok(n) => Duration::from_secs(n),
        Err(_) => match value.strip_suffix("ns").and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => Duration::from_secs(n),
            None => humantime::parse_duration(value).ok()?,
        },
    };
    (!d.is_zero()).then_some(d)
}

/// The environment variable the kubelet sets to a Service's cluster IP.
pub fn service_host_variable(service: &str) -> String {
    format!("{}_SERVICE_HOST", service.to_uppercase().replace('-', "_"))
}

/// The kube-dns ConfigMap's settings node-cache honours.
#[derive(Debug, Default, Clone, PartialEq)]
struct KubeDnsConfig {
    stub_domains: BTreeMap<String, Vec<String>>,
    upstream_nameservers: Vec<String>,
}

impl NodeCacheArgs {
    fn kube_dns_dir(&self) -> Option<PathBuf> {
        self.kube_dns_config.clone().or_else(|| Path::new("/etc/kube-dns").is_dir().then(|| "/etc/kube-dns".into()))
    }

    /// The files whose change regenerates the Corefile.
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut files = vec![self.base_corefile.clone()];
        if let Some(dir) = self.kube_dns_dir() {
            files.extend(["stubDomains", "upstreamNameservers"].map(|f| dir.join(f)));
        }
        files
    }

    fn kube_dns(&self) -> Result<KubeDnsConfig, ConfigError> {
        let Some(dir) = self.kube_dns_dir() else { return Ok(KubeDnsConfig::default()) };
        let read = |name: &str| -> Result<Option<(String, String)>, ConfigError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some((path.display().to_string(), text))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(ConfigError::Read { file: path.display().to_string(), source }),
            }
        };
        let bad = |file: &str, e: serde_json::Error| ConfigError::Invalid {
            file: file.into(),
            line: e.line(),
            key: "".into(),
            message: e.to_string(),
        };
        let mut config = KubeDnsConfig::default();
        if let Some((file, text)) = read("stubDomains")? {
            config.stub_domains = serde_json::from_str(&text).map_err(|e| bad(&file, e))?;
        }
        if let Some((file, text)) = read("upstreamNameservers")? {
            config.upstream_nameservers = serde_json::from_str(&text).map_err(|e| bad(&file, e))?;
            if config.upstream_nameservers.len() > 3 {
                return Err(ConfigError::Invalid {
                    file,
                    line: 1,
                    key: "upstreamNameservers".into(),
                    message: "at most 3 nameservers".into(),
                });
            }
        }
        Ok(config)
    }

    /// The Corefile node-cache would run: the template with its placeholders filled in and
    /// a block per stub domain.
    pub fn generate(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
        let base = self.base_corefile.display().to_string();
        let mut text = std::fs::read_to_string(&self.base_corefile).map_err(|source| ConfigError::Read { file: base.clone(), source })?;
        let kube_dns = self.kube_dns()?;
        let local = self.local_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        if text.contains("__PILLAR__CLUSTER__DNS__") {
            let variable = service_host_variable(&self.upstream_service);
            let ip = env(&variable).and_then(|v| v.parse::<IpAddr>().ok()).ok_or_else(|| {
                ConfigError::Settings(format!(
                    "{base}: __PILLAR__CLUSTER__DNS__ needs the IP of Service `{}` in ${variable}, which is not set (-upstreamsvc names the Service; the kubelet sets the variable for Services of the pod's namespace)",
                    self.upstream_service
                ))
            })?;
            text = text.replace("__PILLAR__CLUSTER__DNS__", &ip.to_string());
        }
        let upstreams = match kube_dns.upstream_nameservers.is_empty() {
            true => "/etc/resolv.conf".to_string(),
            false => kube_dns.upstream_nameservers.join(" "),
        };
        text = text.replace("__PILLAR__UPSTREAM__SERVERS__", &upstreams);
        text = text.replace("__PILLAR__LOCAL__DNS__", &local);
        text = text.replace("__PILLAR__DNS__SERVER__", "");
        for (domain, servers) in &kube_dns.stub_domains {
            text.push_str(&format!(
                "\n{domain}:{port} {{\n    errors\n    cache 30\n    bind {local}\n    forward . {servers}\n}}\n",
                port = self.dns_port,
                servers = servers.join(" ")
            ));
        }
        Ok(text)
    }

    /// The configuration node-cache's flags and generated Corefile make. The Corefile is
    /// written to `-conf` as node-cache does, for whoever looks at it.
    pub fn load(&self) -> Result<FileConfig, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let text = self.generate(&env)?;
        let name = self.conf.as_ref().unwrap_or(&self.base_corefile).display().to_string();
        if let Some(conf) = &self.conf {
            write_replacing(conf, &text).map_err(|source| ConfigError::Read { file: name.clone(), source })?;
        }
        let cx = Context { env: &env, default_port: self.dns_port, read_file: &|path| std::fs::read_to_string(path) };
        let imported = corefile::import(&name, &text, &cx)?;
        let mut file = super::parse_file(&format!("{name} (as imported)"), &imported.yaml)?;
        self.apply(&mut file);
        Ok(file)
    }

    /// node-cache's flags over what the Corefile says.
    fn apply(&self, file: &mut FileConfig) {
        let node = &mut file.node;
        node.setup = self.setup_interface || self.setup_iptables;
        node.interface = self.interface.clone();
        node.rules = if self.setup_iptables { crate::node::Backend::NodeCache } else { crate::node::Backend::None };
        node.addresses = Some(self.local_ips.clone());
        node.dns_port = self.dns_port;
        node.health_port = Some(self.health_port);
        node.assign_addresses = self.setup_interface;
        node.keep_on_exit = self.skip_teardown;
        node.check_interval = self.sync_interval;
        if !file.http_listen.contains(&self.metrics_listen) && file.metrics != Some(self.metrics_listen) {
            file.http_listen.push(self.metrics_listen);
        }
    }
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half of it.
fn write_replacing(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("nodedns-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests;
