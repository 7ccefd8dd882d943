//! The later steps of a pod's search walk, resolved as soon as its first step is denied.
//!
//! A pod in namespace `ns` resolving `X` walks `X.ns.svc.Z`, `X.svc.Z`, `X.Z`, `X.S` for
//! each host suffix `S`, then `X.`, waiting for each answer before sending the next. When
//! the first step is denied here, the pod is certain to continue, so the steps that must
//! go upstream are asked at once: by the time the pod sends them they are cache hits or
//! coalesce with the query already in flight. Speculation is bounded (a fixed number of
//! fetches in flight; past it, nothing is started) and counted.
//!
//! `X.svc.Z` (the second step) has the shape of a first step too, with the last label of `X`
//! as namespace. So a step already generated from a recent first step is never taken for a
//! first step itself, and with the namespaces known, the namespace must exist.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::Naming;
use crate::cache::KeyRef;
use crate::forward::Forwarder;
use crate::metrics::NamingMetrics;
use crate::wire::RecordType;
use crate::wire::name::{self, LowerName, LowerNameBuf};

/// Speculative fetches in flight at once, across all clients.
const MAX_SPECULATIVE: usize = 256;
/// Later steps remembered, so that they are not mistaken for first steps.
const RECENT_STEPS: usize = 16_384;

pub struct SearchPrefetch {
    naming: Arc<Naming>,
    forwarder: Arc<Forwarder>,
    slots: Arc<Semaphore>,
    recent: quick_cache::sync::Cache<(LowerNameBuf, RecordType), ()>,
    metrics: NamingMetrics,
}

impl SearchPrefetch {
    pub fn new(naming: Arc<Naming>, forwarder: Arc<Forwarder>, metrics: NamingMetrics) -> SearchPrefetch {
        SearchPrefetch {
            naming,
            forwarder,
            slots: Arc::new(Semaphore::new(MAX_SPECULATIVE)),
            recent: quick_cache::sync::Cache::new(RECENT_STEPS),
            metrics,
        }
    }

    /// Called with a denied query (`key`'s name lower-cased). If it is the first step of a
    /// walk, starts fetching the later steps that cannot be denied locally.
    pub fn after_denial(&self, key: &KeyRef<'_>) {
        if self.recent.get(&(key.name().to_owned(), key.qtype())).is_some() {
            return;
        }
        let Some(steps) = later_steps(&self.naming, key.name()) else { return };
        self.metrics.search_walks.inc();
        for step in steps {
            self.recent.insert((step.clone(), key.qtype()), ());
            if self.naming.classify(step.as_name(), key.qtype(), key.qclass()).is_some() {
                continue; // the pod's own query will be denied locally, at once
            }
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.metrics.speculative_skipped.inc();
                continue;
            };
            self.metrics.speculative.inc();
            let key = key.renamed(step.as_name()).to_owned();
            let forwarder = self.forwarder.clone();
            tokio::spawn(async move {
                let _ = forwarder.resolve(key).await;
                drop(slot);
            });
        }
    }
}

/// For `X.<ns>.svc.<Z>` (`Z` a cluster domain), the names the pod tries next, in order;
/// `None` for any other name.
pub fn later_steps(naming: &Naming, name: LowerName<'_>) -> Option<Vec<LowerNameBuf>> {
    let settings = naming.settings();
    let zone = settings.cluster_domains.iter().find(|z| z.contains(name))?;
    let name = name.as_bytes();
    let relative = &name[..name.len() - zone.wire().as_bytes().len()];
    let (labels, n) = label_offsets(relative);
    // X (at least one label), the namespace, `svc`.
    if n < 3 || &relative[labels[n - 1]..] != b"\x03svc" || !naming.namespace_may_exist(&relative[labels[n - 2] + 1..labels[n - 1]]) {
        return None;
    }
    let x = &relative[..labels[n - 2]];
    let zone = zone.wire().as_bytes();
    let mut steps = vec![[x, b"\x03svc", zone].concat(), [x, zone].concat()];
    steps.extend(settings.search_suffixes.iter().map(|s| [x, s.wire().as_bytes()].concat()));
    steps.push([x, &[0u8][..]].concat());
    // Made of lower-cased pieces; a step over 255 octets is no name and is left out.
    Some(steps.iter().filter_map(|s| name::lower(s).map(LowerName::to_owned)).collect())
}

/// Start offsets of the labels of a relative wire name (no root label).
fn label_offsets(relative: &[u8]) -> ([usize; 128], usize) {
    let mut out = [0; 128];
    let (mut n, mut pos) = (0, 0);
    while pos < relative.len() && n < out.len() {
        out[n] = pos;
        n += 1;
        pos += 1 + usize::from(relative[pos]);
    }
    (out, n)
}
