use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::*;
use crate::testutil::{self, a, cname, response, soa};
use crate::wire::name::MAX_NAME;
use crate::wire::{MAX_MESSAGE, Query, UpstreamResponse};

fn policy() -> TtlPolicy {
    TtlPolicy::default()
}

fn entry_for(msg: &[u8], qname: &str, qtype: u16, now: Instant) -> Entry {
    let name = testutil::wire_name(qname);
    let resp = UpstreamResponse::parse(msg, name.as_name(), crate::wire::RecordType(qtype), 1).unwrap();
    Entry::from_response(&KeyRef::new(name.as_name(), crate::wire::RecordType(qtype), 1, false, false), msg, &resp, &policy(), now)
}

/// Stores `msg` as the answer to `qname IN qtype` (no DO or CD) and returns the key.
fn put(cache: &Cache, msg: &[u8], qname: &str, qtype: u16, now: Instant) -> CacheKey {
    let name = testutil::wire_name(qname);
    let resp = UpstreamResponse::parse(msg, name.as_name(), crate::wire::RecordType(qtype), 1).unwrap();
    let key = KeyRef::new(name.as_name(), crate::wire::RecordType(qtype), 1, false, false);
    cache.insert(&key, Entry::from_response(&key, msg, &resp, cache.policy_for(key.name()), now));
    key.to_owned()
}

fn cache() -> Cache {
    let cap = Capacity { max_entries: 1000, max_bytes: 1 << 20 };
    Cache::new(cap, cap, policy())
}

/// Serves `entry` to a fresh client query and parses the result with hickory.
fn serve(
    entry: &Entry,
    client_name: &str,
    qtype: u16,
    edns: Option<(u16, bool)>,
    age: u32,
    limit: usize,
) -> (Vec<u8>, hickory_proto::op::Message) {
    let q = testutil::query(client_name, qtype, edns);
    let mut lower = [0u8; MAX_NAME];
    let (query, _) = Query::parse(&q, &mut lower).unwrap();
    let mut out = vec![0u8; MAX_MESSAGE];
    let n = entry.write_for(&query, age, 1232, limit, &mut out);
    out.truncate(n);
    let parsed = testutil::parse_message(&out);
    (out, parsed)
}

#[test]
fn positive_answer_is_served_with_client_id_case_and_aged_ttls() {
    let now = Instant::now();
    let msg = response(
        "www.example.com.",
        RecordType::A,
        ResponseCode::NoError,
        vec![cname("www.example.com.", 300, "web.example.com."), a("web.example.com.", 60, [192, 0, 2, 1])],
        vec![],
        true,
    );
    let entry = entry_for(&msg, "www.example.com", 1, now);
    assert_eq!(entry.kind(), Kind::Positive);
    let (bytes, parsed) = serve(&entry, "WwW.ExAmple.com", 1, None, 10, 512);
    assert_eq!(parsed.metadata.id, 0x9999);
    assert_eq!(&bytes[12..29], b"\x03WwW\x07ExAmple\x03com\x00");
    let ttls: Vec<u32> = parsed.answers.iter().map(|r| r.ttl).collect();
    assert_eq!(ttls, vec![290, 50]);
    assert!(parsed.edns.is_none(), "no OPT for a client that sent none");
    assert!(!parsed.metadata.authoritative && parsed.metadata.recursion_available);
}

#[test]
fn edns_client_gets_our_opt_with_its_do_bit() {
    let now = Instant::now();
    let msg = response("a.example.", RecordType::A, ResponseCode::NoError, vec![a("a.example.", 60, [192, 0, 2, 1])], vec![], true);
    let entry = entry_for(&msg, "a.example", 1, now);
    let (_, parsed) = serve(&entry, "a.example", 1, Some((4096, true)), 0, 1232);
    let edns = parsed.edns.expect("OPT in response");
    assert_eq!(edns.max_payload(), 1232);
    assert!(edns.flags().dnssec_ok);
}

#[test]
fn negative_answer_lives_for_soa_minimum_and_carries_it() {
    let now = Instant::now();
    let msg = response("nope.example.", RecordType::A, ResponseCode::NXDomain, vec![], vec![soa("example.", 3600, 30)], false);
    let entry = entry_for(&msg, "nope.example", 1, now);
    assert_eq!(entry.kind(), Kind::Negative);
    assert_eq!(entry.age_if_fresh(now + Duration::from_secs(29)), Some(29));
    assert_eq!(entry.age_if_fresh(now + Duration::from_secs(30)), None);
    let (_, parsed) = serve(&entry, "nope.example", 1, None, 5, 512);
    assert_eq!(parsed.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(parsed.authorities[0].ttl, 25);
}

#[test]
fn nodata_is_negative_and_without_soa_is_not_cached() {
    let now = Instant::now();
    let nodata = response("a.example.", RecordType::AAAA, ResponseCode::NoError, vec![], vec![soa("example.", 60, 300)], false);
    let entry = entry_for(&nodata, "a.example", 28, now);
    assert_eq!(entry.kind(), Kind::Negative);
    assert_eq!(entry.age_if_fresh(now + Duration::from_secs(59)), Some(59));
    assert_eq!(entry.age_if_fresh(now + Duration::from_secs(60)), None);

    let bare = response("a.example.", RecordType::AAAA, ResponseCode::NoError, vec![], vec![], false);
    assert_eq!(entry_for(&bare, "a.example", 28, now).kind(), Kind::Uncacheable);
}

#[test]
fn servfail_is_kept_briefly_and_truncated_never() {
    let now = Instant::now();
    let fail = response("a.example.", RecordType::A, ResponseCode::ServFail, vec![], vec![], false);
    let entry = entry_for(&fail, "a.example", 1, now);
    assert_eq!(entry.kind(), Kind::Failure);
    assert_eq!(entry.age_if_fresh(now + Duration::from_secs(5)), None);

    let mut tc = response("a.example.", RecordType::A, ResponseCode::NoError, vec![a("a.example.", 60, [1, 2, 3, 4])], vec![], false);
    tc[2] |= 0x02;
    assert_eq!(entry_for(&tc, "a.example", 1, now).kind(), Kind::Uncacheable);
}

#[test]
fn refusals_are_kept_briefly_like_a_servfail() {
    let now = Instant::now();
    for rcode in [ResponseCode::Refused, ResponseCode::NotImp, ResponseCode::FormErr] {
        let msg = response("a.example.", RecordType::A, rcode, vec![], vec![], false);
        let entry = entry_for(&msg, "a.example", 1, now);
        assert_eq!(entry.kind(), Kind::Failure, "{rcode:?}");
        assert!(entry.age_if_fresh(now + Duration::from_secs(4)).is_some(), "{rcode:?} kept for servfail_ttl");
        assert_eq!(entry.age_if_fresh(now + Duration::from_secs(5)), None, "{rcode:?} only that long");
    }
}

#[test]
fn ttls_are_clamped_into_the_policy_range() {
    let now = Instant::now();
    let msg = response("a.example.", RecordType::A, ResponseCode::NoError, vec![a("a.example.", 999_999, [1, 2, 3, 4])], vec![], false);
    let entry = entry_for(&msg, "a.example", 1, now);
    let (_, parsed) = serve(&entry, "a.example", 1, None, 0, 512);
    assert_eq!(parsed.answers[0].ttl, 3600);
}

#[test]
fn response_larger_than_client_limit_is_truncated_with_question() {
    let now = Instant::now();
    let answers = (0..40).map(|i| a("big.example.", 60, [10, 0, 0, i])).collect();
    let msg = response("big.example.", RecordType::A, ResponseCode::NoError, answers, vec![], false);
    let entry = entry_for(&msg, "big.example", 1, now);
    let (bytes, parsed) = serve(&entry, "Big.example", 1, None, 0, 512);
    assert!(parsed.metadata.truncation);
    assert!(parsed.answers.is_empty());
    assert_eq!(&bytes[12..16], b"\x03Big");
    let (_, full) = serve(&entry, "big.example", 1, None, 0, MAX_MESSAGE);
    assert_eq!(full.answers.len(), 40);
}

#[test]
fn lookup_finds_fresh_entries_only_and_under_the_exact_key() {
    let cache = cache();
    let now = Instant::now();
    let msg = response("a.example.", RecordType::A, ResponseCode::NoError, vec![a("a.example.", 10, [1, 2, 3, 4])], vec![], false);
    let name = put(&cache, &msg, "a.example", 1, now).name().to_owned();
    assert!(cache.lookup(&KeyRef::new(name.as_name(), crate::wire::RecordType(1), 1, false, false), now).is_some());
    assert!(cache.lookup(&KeyRef::new(name.as_name(), crate::wire::RecordType(1), 1, true, false), now).is_none());
    assert!(cache.lookup(&KeyRef::new(name.as_name(), crate::wire::RecordType(28), 1, false, false), now).is_none());
    assert!(
        cache.lookup(&KeyRef::new(name.as_name(), crate::wire::RecordType(1), 1, false, false), now + Duration::from_secs(10)).is_none()
    );
    assert_eq!(cache.len(), (1, 0));
}

#[test]
fn entry_count_is_bounded_by_the_weight_floor() {
    let cap = Capacity { max_entries: 100, max_bytes: 1 << 30 };
    let cache = Cache::new(cap, cap, policy());
    let now = Instant::now();
    for i in 0..1000 {
        let qname = format!("n{i}.example");
        let msg = response(
            &format!("{qname}."),
            RecordType::A,
            ResponseCode::NoError,
            vec![a(&format!("{qname}."), 60, [1, 2, 3, 4])],
            vec![],
            false,
        );
        put(&cache, &msg, &qname, 1, now);
    }
    assert!(cache.len().0 <= 100, "{} entries", cache.len().0);
}

#[test]
fn byte_bound_holds_for_large_entries() {
    let cap = Capacity { max_entries: 1_000_000, max_bytes: 64 * 1024 };
    let cache = Cache::new(cap, cap, policy());
    let now = Instant::now();
    for i in 0..500 {
        let qname = format!("n{i}.example");
        let answers = (0..20).map(|j| a(&format!("{qname}."), 60, [10, 0, 0, j])).collect();
        let msg = response(&format!("{qname}."), RecordType::A, ResponseCode::NoError, answers, vec![], false);
        put(&cache, &msg, &qname, 1, now);
    }
    assert!(cache.weight().0 <= 64 * 1024);
}

#[test]
fn flood_of_one_off_names_does_not_evict_the_hot_set() {
    let cap = Capacity { max_entries: 2000, max_bytes: 1 << 30 };
    let cache = Cache::new(cap, cap, policy());
    let now = Instant::now();
    let insert = |qname: &str| {
        let msg = response(
            &format!("{qname}."),
            RecordType::A,
            ResponseCode::NoError,
            vec![a(&format!("{qname}."), 300, [1, 2, 3, 4])],
            vec![],
            false,
        );
        put(&cache, &msg, qname, 1, now);
    };
    let hot: Vec<_> = (0..500).map(|i| testutil::wire_name(&format!("hot{i}.example"))).collect();
    for i in 0..500 {
        insert(&format!("hot{i}.example"));
    }
    let hits = |cache: &Cache| {
        hot.iter().filter(|n| cache.lookup(&KeyRef::new(n.as_name(), crate::wire::RecordType(1), 1, false, false), now).is_some()).count()
    };
    assert_eq!(hits(&cache), 500);
    // 50,000 unique names, 25 times the capacity, while the hot set is asked for once per
    // 2,000 new names: more than an LRU has room for between two touches of a hot name.
    for round in 0..25 {
        for j in 0..2000 {
            insert(&format!("flood{round}-{j}.example"));
        }
        hits(&cache);
    }
    assert!(hits(&cache) >= 490, "hot entries left: {}", hits(&cache));
}

fn stale_policy() -> TtlPolicy {
    TtlPolicy { stale_max_age: 600, stale_ttl: 30, prefetch_percent: 10, prefetch_min_hits: 2, ..TtlPolicy::default() }
}

fn stale_cache() -> Cache {
    let cap = Capacity { max_entries: 1000, max_bytes: 1 << 20 };
    Cache::new(cap, cap, stale_policy())
}

fn store_a(cache: &Cache, qname: &str, ttl: u32, now: Instant) -> CacheKey {
    let msg = response(qname, RecordType::A, ResponseCode::NoError, vec![a(qname, ttl, [192, 0, 2, 1])], vec![], false);
    put(cache, &msg, qname, 1, now)
}

#[test]
fn an_expired_answer_is_stale_only_within_the_maximum_age_and_only_when_enabled() {
    let now = Instant::now();
    let cache = stale_cache();
    let key = store_a(&cache, "a.example.", 60, now);
    assert!(cache.stale(&key.borrowed(), now + Duration::from_secs(59)).is_none(), "fresh is not stale");
    assert!(cache.stale(&key.borrowed(), now + Duration::from_secs(61)).is_some());
    assert!(cache.stale(&key.borrowed(), now + Duration::from_secs(60 + 600)).is_some());
    assert!(cache.stale(&key.borrowed(), now + Duration::from_secs(60 + 601)).is_none(), "past stale_max_age");

    let off = self::cache();
    let key = store_a(&off, "a.example.", 60, now);
    assert!(off.stale(&key.borrowed(), now + Duration::from_secs(61)).is_none(), "stale_max_age 0 turns it off");
}

#[test]
fn a_failure_keeps_a_fresh_answer_and_turns_an_expired_one_into_a_stale_copy() {
    let now = Instant::now();
    let cache = stale_cache();
    let key = store_a(&cache, "a.example.", 60, now);
    let kept = cache.keep_on_failure(&key.borrowed(), now + Duration::from_secs(10)).expect("fresh answer kept");
    assert!(!kept.is_stale(), "a failed refresh leaves the fresh answer alone");

    let later = now + Duration::from_secs(100);
    let stale = cache.keep_on_failure(&key.borrowed(), later).expect("stale copy");
    assert!(stale.is_stale());
    let (_, parsed) = serve(&stale, "a.example.", 1, None, 0, 512);
    assert_eq!(parsed.answers[0].ttl, 30, "RFC 8767: stale answers carry a 30 s TTL");
    let (hit, _) = cache.lookup(&key.borrowed(), later + Duration::from_secs(29)).expect("the copy is answered at once for 30 s");
    assert!(hit.is_stale());
    assert!(cache.lookup(&key.borrowed(), later + Duration::from_secs(30)).is_none(), "then the upstream is asked again");
    // The maximum age counts from the upstream's expiry, not from the copy.
    assert!(cache.keep_on_failure(&key.borrowed(), now + Duration::from_secs(60 + 601)).is_none());
}

#[test]
fn a_servfail_is_never_served_stale() {
    let now = Instant::now();
    let cache = stale_cache();
    let msg = response("b.example.", RecordType::A, ResponseCode::ServFail, vec![], vec![], false);
    let key = put(&cache, &msg, "b.example.", 1, now);
    assert!(cache.stale(&key.borrowed(), now + Duration::from_secs(6)).is_none());
}

#[test]
fn exactly_one_hit_in_the_last_tenth_of_a_life_starts_a_refresh() {
    let now = Instant::now();
    let cache = stale_cache();
    let key = store_a(&cache, "a.example.", 100, now);
    let (entry, _) = cache.lookup(&key.borrowed(), now).unwrap();
    assert!((0..89).all(|age| !entry.hit_starts_refresh(age, 2)), "hits before the window do not count");
    assert!(!entry.hit_starts_refresh(90, 2), "first hit in the window");
    assert!(entry.hit_starts_refresh(91, 2), "second hit: refresh");
    assert!((92..100).all(|age| !entry.hit_starts_refresh(age, 2)), "one refresh per entry");

    let short = store_a(&cache, "short.example.", 1, now);
    let (entry, _) = cache.lookup(&short.borrowed(), now).unwrap();
    assert!((0..10).all(|_| !entry.hit_starts_refresh(0, 2)), "a one-second entry is not refreshed ahead");
    let off = self::cache();
    let key = store_a(&off, "a.example.", 100, now);
    let (entry, _) = off.lookup(&key.borrowed(), now).unwrap();
    assert!((0..100).all(|age| !entry.hit_starts_refresh(age, 2)), "prefetch_percent 0 turns it off");
}

#[test]
fn an_entry_answers_exactly_its_own_question() {
    let now = Instant::now();
    let msg = response("a.example.", RecordType::A, ResponseCode::NoError, vec![a("a.example.", 60, [192, 0, 2, 1])], vec![], false);
    let entry = entry_for(&msg, "a.example", 1, now);
    let name = |n: &str| testutil::wire_name(n);
    assert!(entry.answers(&KeyRef::new(name("a.example").as_name(), crate::wire::RecordType::A, 1, false, false)));
    for (other, qtype, qclass, dnssec_ok, checking_disabled) in [
        ("b.example", 1, 1, false, false),
        ("a.example.com", 1, 1, false, false),
        ("example", 1, 1, false, false),
        ("a.example", 28, 1, false, false),
        ("a.example", 1, 3, false, false),
        ("a.example", 1, 1, true, false),
        ("a.example", 1, 1, false, true),
    ] {
        let other_name = name(other);
        let key = KeyRef::new(other_name.as_name(), crate::wire::RecordType(qtype), qclass, dnssec_ok, checking_disabled);
        assert!(!entry.answers(&key), "{other} {qtype} {qclass} {dnssec_ok} {checking_disabled}");
    }
}

#[test]
fn an_entry_stores_its_answer_in_one_allocation_of_about_a_hundred_octets() {
    let msg = response(
        "h12345.bench.example.",
        RecordType::A,
        ResponseCode::NoError,
        vec![a("h12345.bench.example.", 60, [10, 0, 48, 57])],
        vec![],
        false,
    );
    let entry = entry_for(&msg, "h12345.bench.example", 1, Instant::now());
    // Reference count, fixed part and slice length, one TTL offset, the 54-octet message.
    assert_eq!(entry.wire().len(), 54);
    assert_eq!(entry.footprint(), 96);
    assert_eq!(size_of::<Entry>(), size_of::<usize>(), "a handle is one pointer");
}

#[test]
fn snapshot_keys_come_back_from_the_entries_lower_cased() {
    let now = Instant::now();
    let cache = cache();
    let msg =
        response("MiXeD.example.", RecordType::A, ResponseCode::NoError, vec![a("MiXeD.example.", 60, [192, 0, 2, 1])], vec![], false);
    let name = testutil::wire_name("mixed.example");
    let resp = UpstreamResponse::parse(&msg, name.as_name(), crate::wire::RecordType(1), 1).unwrap();
    let key = KeyRef::new(name.as_name(), crate::wire::RecordType(1), 1, true, false);
    cache.insert(&key, Entry::from_response(&key, &msg, &resp, cache.policy(), now));
    let (entry, _) = cache.lookup(&key, now).expect("stored under the lower-cased key");
    assert_eq!(entry.key(), Some(key.to_owned()));
}

/// NodeLocal DNSCache's `cluster.local` block: answers at most 30 s, denials at most 5 s.
fn zoned_cache() -> Cache {
    let cluster = ZoneTtl { positive_max_ttl: Some(30), negative_max_ttl: Some(5), ..ZoneTtl::new(testutil::wire_name("cluster.local.")) };
    let svc = ZoneTtl { positive_max_ttl: Some(10), ..ZoneTtl::new(testutil::wire_name("svc.cluster.local.")) };
    let other = ZoneTtl { servfail_ttl: Some(1), ..ZoneTtl::new(testutil::wire_name("example.")) };
    cache().with_zones([cluster, other, svc])
}

#[test]
fn the_longest_zone_ending_a_name_decides_its_policy() {
    let cache = zoned_cache();
    let policy_of = |name: &str| cache.policy_for(testutil::wire_name(name).as_name()).clone();
    let global = policy();
    assert_eq!(
        policy_of("api.prod.svc.cluster.local."),
        TtlPolicy { positive_max_ttl: 10, ..global.clone() },
        "svc.cluster.local is longer"
    );
    assert_eq!(policy_of("10-244-1-7.prod.pod.cluster.local."), TtlPolicy { positive_max_ttl: 30, negative_max_ttl: 5, ..global.clone() });
    assert_eq!(
        policy_of("cluster.local."),
        TtlPolicy { positive_max_ttl: 30, negative_max_ttl: 5, ..global.clone() },
        "the apex is in its zone"
    );
    assert_eq!(policy_of("www.example."), TtlPolicy { servfail_ttl: 1, ..global.clone() });
    assert_eq!(policy_of("notcluster.local."), global, "zones end names at a label boundary");
    assert_eq!(policy_of("www.example.com."), global, "a name in no zone has the global policy");
    assert_eq!(policy_of("."), global);
}

#[test]
fn a_zone_matches_whatever_the_letter_case_of_the_question() {
    let cache = zoned_cache();
    let q = testutil::query("Kubernetes.Default.SVC.Cluster.LOCAL.", 1, None);
    let mut lower = [0u8; MAX_NAME];
    let (_, name) = Query::parse(&q, &mut lower).unwrap();
    assert_eq!(cache.policy_for(name).positive_max_ttl, 10);
    let zone_in_capitals = ZoneTtl { positive_max_ttl: Some(7), ..ZoneTtl::new(testutil::wire_name("EXAMPLE.Org.")) };
    let cache = self::cache().with_zones([zone_in_capitals]);
    assert_eq!(cache.policy_for(testutil::wire_name("www.example.org.").as_name()).positive_max_ttl, 7);
}

#[test]
fn entries_live_as_long_as_their_zone_allows() {
    let (cache, now) = (zoned_cache(), Instant::now());
    for (name, lifetime) in [("kubernetes.default.svc.cluster.local.", 10), ("x.pod.cluster.local.", 30), ("www.example.com.", 300)] {
        let key = store_a(&cache, name, 300, now);
        let (entry, _) = cache.lookup(&key.borrowed(), now).expect("stored");
        assert_eq!(entry.ttl_left(now), Some(lifetime), "{name}");
        let (_, parsed) = serve(&entry, name, 1, None, 0, 512);
        assert_eq!(parsed.answers[0].ttl, lifetime, "{name}: the record's TTL is capped too");
    }
    let nx = |name: &str| response(name, RecordType::A, ResponseCode::NXDomain, vec![], vec![soa("cluster.local.", 30, 60)], false);
    let key = put(&cache, &nx("gone.cluster.local."), "gone.cluster.local.", 1, now);
    let (entry, _) = cache.lookup(&key.borrowed(), now).expect("a denial is stored");
    assert_eq!(entry.ttl_left(now), Some(5), "denials under cluster.local live 5 s");
    assert!(cache.lookup(&key.borrowed(), now + Duration::from_secs(5)).is_none());
    let key = put(&cache, &nx("gone.example.com."), "gone.example.com.", 1, now);
    assert_eq!(cache.lookup(&key.borrowed(), now).and_then(|(e, _)| e.ttl_left(now)), Some(30), "elsewhere the SOA decides");
}

#[test]
fn a_zone_left_unset_keeps_the_global_bounds_of_the_cache_it_joins() {
    let global = TtlPolicy { positive_min_ttl: 20, negative_max_ttl: 900, stale_max_age: 60, ..policy() };
    let cap = Capacity { max_entries: 10, max_bytes: 1 << 20 };
    let zone = ZoneTtl { positive_max_ttl: Some(30), ..ZoneTtl::new(testutil::wire_name("cluster.local.")) };
    let cache = Cache::new(cap, cap, global.clone()).with_zones([zone]);
    assert_eq!(*cache.policy_for(testutil::wire_name("a.cluster.local.").as_name()), TtlPolicy { positive_max_ttl: 30, ..global });
}
