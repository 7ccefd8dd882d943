//! The rules that prove a name does not exist (or has no AAAA) without asking upstream.
//!
//! Under a cluster domain `Z` the Kubernetes DNS specification (kubernetes/dns,
//! `docs/specification.md`) defines only these names, where `ns` is a namespace:
//! `<svc>.<ns>.svc.Z`, `<hostname>.<svc>.<ns>.svc.Z`, `_<port>._<proto>.<svc>.<ns>.svc.Z`,
//! `<a-b-c-d>.<ns>.pod.Z` and `dns-version.Z`, plus the empty non-terminals above them
//! (`<ns>.svc.Z`, `svc.Z`, `pod.Z`, `Z`), which are never denied here because names exist
//! below them. Anything else under `Z` is NXDOMAIN, and so is anything in a namespace that
//! is known not to exist.
//!
//! Under a host search suffix `S` outside the cluster (`c.proj.internal`), `X.S` is denied
//! when the last label of `X` is a public top-level domain: that is `api.example.com`
//! with the suffix appended by the resolver, never a real name in a cloud's internal zone.

use std::sync::Arc;

use super::namespaces::Namespaces;
use crate::wire::RecordType;
use crate::wire::header::Rcode;
use crate::wire::name::LowerName;
use crate::zones::Zone;

/// Why a query was answered locally; the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Under a cluster domain, in no form the specification defines.
    NotInSpecification,
    /// Under a cluster domain, in a namespace that does not exist.
    UnknownNamespace,
    /// A public name with a host search suffix appended.
    SearchSuffix,
    /// AAAA in a zone configured as IPv4-only.
    AaaaFilter,
}

impl Reason {
    /// Every reason, each at the index of its discriminant (its metric counter's).
    pub const ALL: [Reason; 4] = [Reason::NotInSpecification, Reason::UnknownNamespace, Reason::SearchSuffix, Reason::AaaaFilter];

    /// The rules' counters, one local-answer counter per reason (counted by `reason as usize`).
    pub fn metrics(metrics: &crate::metrics::Metrics) -> crate::metrics::NamingMetrics {
        metrics.naming(&Reason::ALL.map(Reason::as_str))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotInSpecification => "not_in_specification",
            Reason::UnknownNamespace => "unknown_namespace",
            Reason::SearchSuffix => "search_suffix",
            Reason::AaaaFilter => "aaaa_filter",
        }
    }
}

/// A query this module answers itself: with `rcode` (NXDOMAIN, or NOERROR for NODATA) and
/// the SOA of zone number `zone` (an index into [`Naming::zones`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAnswer {
    pub rcode: Rcode,
    pub zone: usize,
    pub reason: Reason,
}

/// What the rules are given; see `docs/KUBERNETES-NAMES.md`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamingSettings {
    /// Off switch for every rule.
    pub enabled: bool,
    pub cluster_domains: Vec<Zone>,
    pub namespaces: NamespaceSource,
    /// The node's search suffixes outside the cluster.
    pub search_suffixes: Vec<Zone>,
    /// Zones whose AAAA queries get NODATA.
    pub filter_aaaa: Vec<Zone>,
    /// Resolve the later steps of a search walk as soon as its first step is seen.
    pub search_prefetch: bool,
}

/// Where the list of namespaces comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NamespaceSource {
    /// Not known: the namespace rule is off.
    #[default]
    Unknown,
    /// Exactly these (for clusters whose namespaces are fixed, and for tests).
    Fixed(Vec<String>),
    /// Followed through the Kubernetes API.
    Watch,
}

/// The compiled rules.
pub struct Naming {
    settings: NamingSettings,
    namespaces: Arc<Namespaces>,
    /// Every zone an answer can name: cluster domains, then search suffixes, then AAAA
    /// filter zones. Their SOAs are learned by [`super::SoaBook`].
    zones: Vec<Zone>,
}

/// Most labels a name can have (255 octets, one-octet labels).
const MAX_LABELS: usize = 128;

/// The labels of a lower-cased wire name, without the root, left to right.
fn labels(name: &[u8]) -> ([&[u8]; MAX_LABELS], usize) {
    let mut out = [&name[..0]; MAX_LABELS];
    let (mut n, mut pos) = (0, 0);
    while let Some(&len) = name.get(pos) {
        if len == 0 || n == MAX_LABELS {
            break;
        }
        let end = (pos + 1 + usize::from(len)).min(name.len());
        out[n] = &name[pos + 1..end];
        n += 1;
        pos = end;
    }
    (out, n)
}

fn label_count(zone: &Zone) -> usize {
    labels(zone.wire().as_bytes()).1
}

impl Naming {
    pub fn new(settings: NamingSettings) -> Naming {
        let namespaces = Arc::new(match &settings.namespaces {
            NamespaceSource::Fixed(list) => Namespaces::fixed(list),
            NamespaceSource::Unknown | NamespaceSource::Watch => Namespaces::default(),
        });
        let zones = settings.cluster_domains.iter().chain(&settings.search_suffixes).chain(&settings.filter_aaaa).cloned().collect();
        Naming { settings, namespaces, zones }
    }

    pub fn settings(&self) -> &NamingSettings {
        &self.settings
    }

    /// The namespace list, for the watch to fill when the source is [`NamespaceSource::Watch`].
    pub fn namespaces(&self) -> &Arc<Namespaces> {
        &self.namespaces
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Whether a namespace of this name may exist: it does, or the namespaces are unknown.
    pub fn namespace_may_exist(&self, name: &[u8]) -> bool {
        self.namespaces.may_exist(name)
    }

    /// Decides a question. `None`: ask upstream.
    pub fn classify(&self, name: LowerName<'_>, qtype: RecordType, qclass: u16) -> Option<LocalAnswer> {
        if !self.settings.enabled || qclass != 1 {
            return None;
        }
        let (labels, n) = labels(name.as_bytes());
        let labels = &labels[..n];
        let nx = |zone, reason| Some(LocalAnswer { rcode: Rcode::NXDOMAIN, zone, reason });
        if let Some((zone, depth)) = self.longest(name, 0, self.settings.cluster_domains.len())
            && let Some(reason) = self.cluster_rule(&labels[..n - depth])
        {
            return nx(zone, reason);
        }
        let suffixes = self.settings.cluster_domains.len();
        if let Some((zone, depth)) = self.longest(name, suffixes, suffixes + self.settings.search_suffixes.len())
            && n > depth
            && is_public_tld(labels[n - depth - 1])
        {
            return nx(zone, Reason::SearchSuffix);
        }
        if qtype == RecordType::AAAA {
            let filters = suffixes + self.settings.search_suffixes.len();
            if let Some((zone, _)) = self.longest(name, filters, self.zones.len()) {
                return Some(LocalAnswer { rcode: Rcode::NOERROR, zone, reason: Reason::AaaaFilter });
            }
        }
        None
    }

    /// The deepest of `zones[from..to]` containing `name`, with its label count.
    fn longest(&self, name: LowerName<'_>, from: usize, to: usize) -> Option<(usize, usize)> {
        (from..to).filter(|&i| self.zones[i].contains(name)).map(|i| (i, label_count(&self.zones[i]))).max_by_key(|&(_, depth)| depth)
    }

    /// `relative`: the labels before the cluster domain. `None` when the name may exist.
    fn cluster_rule(&self, relative: &[&[u8]]) -> Option<Reason> {
        let (&top, below) = relative.split_last()?;
        // Labels allowed between a name and its namespace, exclusive.
        let max_below_namespace = match top {
            b"svc" => 3,
            b"pod" => 2,
            b"dns-version" => return (!below.is_empty()).then_some(Reason::NotInSpecification),
            _ => return Some(Reason::NotInSpecification),
        };
        let (&namespace, inside) = below.split_last()?;
        if !self.namespace_may_exist(namespace) {
            return Some(Reason::UnknownNamespace);
        }
        let fits = match inside.len() {
            n if n < max_below_namespace => true,
            // Only SRV names have three labels below the namespace: `_port._proto.svc`.
            3 if top == b"svc" => inside[0].starts_with(b"_") && inside[1].starts_with(b"_"),
            _ => false,
        };
        (!fits).then_some(Reason::NotInSpecification)
    }
}

/// Whether `label` is a top-level domain on the Public Suffix List's ICANN section.
fn is_public_tld(label: &[u8]) -> bool {
    psl::suffix(label).is_some_and(|s| s.is_known() && s.typ() == Some(psl::Type::Icann) && s.as_bytes() == label)
}

#[cfg(test)]
mod tests;
