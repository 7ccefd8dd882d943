//! What nodedns would do with one question, without doing it: whether the cache holds an
//! answer, whether a Kubernetes naming rule answers it, and which upstream group gets it
//! otherwise. Served at `/explain` by a running instance (with its cache and the
//! namespaces it knows) and computed from a configuration file by `nodedns explain` when
//! no instance is reachable. Never changes the cache or asks an upstream.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, KeyRef};
use crate::kubernetes::Naming;
use crate::wire::name::{self, LowerName};
use crate::wire::{Header, RecordType};
use crate::zones::Router;

/// The decision for one question, in the order the query path takes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `hit` (fresh), `stale` (expired, may be served if the upstream fails), `miss`, or
    /// `unknown` (no running instance was asked).
    pub cache: String,
    /// The cached answer's rcode, and its seconds left for a hit.
    pub cached_rcode: Option<String>,
    pub cached_answers: Option<u16>,
    pub ttl_left: Option<u32>,
    /// The naming rule that answers the question locally when the cache does not, and with
    /// which rcode.
    pub local: Option<String>,
    pub local_rcode: Option<String>,
    /// Anything that makes the query path differ from the above.
    pub note: Option<String>,
    /// The zone whose upstream group gets the question when neither does; `None`: no zone
    /// covers it (REFUSED).
    pub zone: Option<String>,
    pub upstreams: Vec<String>,
}

impl Decision {
    /// The decision of a running instance for `wire`; `soa_known`
    /// tells whether a naming rule's zone has its SOA learned (without it, nothing is
    /// answered locally).
    pub fn live(
        wire: LowerName<'_>,
        qtype: RecordType,
        cache: &Cache,
        naming: &Naming,
        soa_known: impl Fn(usize) -> bool,
        route: Option<(String, Vec<String>)>,
    ) -> Decision {
        let key = KeyRef::new(wire, qtype, 1, false, false);
        let now = Instant::now();
        let mut decision = Decision::without_cache(wire, qtype, naming, soa_known, route);
        match cache.lookup(&key, now) {
            Some((entry, _)) => {
                decision.cache = if entry.is_stale() { "stale" } else { "hit" }.into();
                decision.cached_rcode = Some(entry.rcode().as_str().into());
                decision.cached_answers = Header::parse(entry.wire()).map(|h| h.ancount);
                decision.ttl_left = entry.ttl_left(now);
            }
            None => {
                decision.cache = "miss".into();
                if let Some(stale) = cache.stale(&key, now) {
                    decision.cache = "stale".into();
                    decision.cached_rcode = Some(stale.rcode().as_str().into());
                }
            }
        }
        decision
    }

    /// The decision a configuration's routing table and naming rules lead to, cache
    /// unknown; namespaces only as listed in the configuration.
    pub fn from_configured(name: &str, qtype: RecordType, router: &Router, naming: &Naming) -> Option<Decision> {
        let wire = name::from_text(name)?;
        let route = router.route(wire.as_name()).map(|g| (g.zone.to_string(), g.servers.iter().map(ToString::to_string).collect()));
        // Evaluated here, no SOA has been learned; the rules are reported as they would apply.
        Some(Decision { cache: "unknown".into(), ..Decision::without_cache(wire.as_name(), qtype, naming, |_| true, route) })
    }

    fn without_cache(
        wire: LowerName<'_>,
        qtype: RecordType,
        naming: &Naming,
        soa_known: impl Fn(usize) -> bool,
        route: Option<(String, Vec<String>)>,
    ) -> Decision {
        let (zone, upstreams) = route.unzip();
        let mut decision = Decision { zone, upstreams: upstreams.unwrap_or_default(), ..Decision::default() };
        match naming.classify(wire, qtype, 1) {
            Some(answer) if soa_known(answer.zone) => {
                decision.local = Some(answer.reason.as_str().into());
                decision.local_rcode = Some(answer.rcode.as_str().into());
            }
            Some(answer) => {
                let zone = &naming.zones()[answer.zone];
                decision.note = Some(format!(
                    "rule {} applies, but the SOA of {zone} is not learned from the upstream yet: forwarded",
                    answer.reason.as_str()
                ));
            }
            None => {}
        }
        decision
    }
}
