//! Which namespaces exist: unknown, a fixed list from the config, or a watch on the
//! Kubernetes API (`list`/`watch` on namespaces, metadata only: a few hundred bytes per
//! namespace, whatever the cluster's size).
//!
//! Denying a name because its namespace does not exist is only safe while the list is
//! complete. So the watched set counts as unknown (the rule is off) until the first full
//! listing, and again from any watch error until the next full listing.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

type Set = HashSet<Vec<u8>>;

#[derive(Default)]
pub struct Namespaces {
    known: RwLock<Option<Set>>,
}

impl Namespaces {
    /// Namespaces known to be exactly `names` (lower-cased here).
    pub fn fixed(names: &[String]) -> Namespaces {
        Namespaces { known: RwLock::new(Some(names.iter().map(|n| n.to_ascii_lowercase().into_bytes()).collect())) }
    }

    /// Whether namespace `name` (lower-case label) may exist: it does, or the list is unknown.
    pub fn may_exist(&self, name: &[u8]) -> bool {
        self.known.read().unwrap_or_else(PoisonError::into_inner).as_ref().is_none_or(|set| set.contains(name))
    }

    fn replace(&self, set: Option<Set>) {
        *self.known.write().unwrap_or_else(PoisonError::into_inner) = set;
    }

    fn update(&self, change: impl FnOnce(&mut Set)) {
        if let Some(set) = self.known.write().unwrap_or_else(PoisonError::into_inner).as_mut() {
            change(set);
        }
    }

    /// Follows the cluster's namespaces until the process ends. The watcher reconnects
    /// with backoff by itself; every error makes the list unknown until relisted.
    pub async fn follow(self: Arc<Self>, client: kube::Client) {
        let api = kube::Api::<PartialObjectMeta<Namespace>>::all(client);
        let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut listing = Set::new();
        let name = |meta: &PartialObjectMeta<Namespace>| meta.metadata.name.clone().unwrap_or_default().into_bytes();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(ns)) => {
                    listing.insert(name(&ns));
                }
                Ok(Event::InitDone) => {
                    tracing::info!(namespaces = listing.len(), "namespaces listed; names in other namespaces are denied locally");
                    self.replace(Some(std::mem::take(&mut listing)));
                }
                Ok(Event::Apply(ns)) => self.update(|set| {
                    set.insert(name(&ns));
                }),
                Ok(Event::Delete(ns)) => self.update(|set| {
                    set.remove(&name(&ns));
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "namespace watch failed; namespaces unknown until relisted");
                    self.replace(None);
                }
            }
        }
    }
}
