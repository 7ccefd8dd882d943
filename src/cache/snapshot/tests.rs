use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::*;
use crate::cache::{Capacity, TtlPolicy, ZoneTtl};
use crate::testutil::{self, a, response, soa};

fn cache(policy: TtlPolicy) -> Cache {
    let cap = Capacity { max_entries: 1000, max_bytes: 1 << 20 };
    Cache::new(cap, cap, policy)
}

fn put(cache: &Cache, msg: &[u8], qname: &str, qtype: u16, now: Instant) {
    let wire = testutil::wire_name(qname);
    let resp = UpstreamResponse::parse(msg, wire.as_name(), crate::wire::RecordType(qtype), 1).unwrap();
    let key = KeyRef::new(wire.as_name(), crate::wire::RecordType(qtype), 1, false, false);
    cache.insert(&key, Entry::from_response(&key, msg, &resp, cache.policy(), now));
}

fn put_a(cache: &Cache, qname: &str, ttl: u32, now: Instant) {
    put(cache, &response(qname, RecordType::A, ResponseCode::NoError, vec![a(qname, ttl, [192, 0, 2, 7])], vec![], false), qname, 1, now);
}

/// The TTL a client would see for `qname` now, if the cache answers it fresh.
fn served_ttl(cache: &Cache, qname: &str, qtype: u16, now: Instant) -> Option<u32> {
    let wire = testutil::wire_name(qname);
    let (entry, age) = cache.lookup(&KeyRef::new(wire.as_name(), crate::wire::RecordType(qtype), 1, false, false), now)?;
    let q = testutil::query(qname, qtype, None);
    let mut lower = [0u8; crate::wire::name::MAX_NAME];
    let (query, _) = crate::wire::Query::parse(&q, &mut lower).unwrap();
    let mut out = vec![0u8; crate::wire::MAX_MESSAGE];
    let n = entry.write_for(&query, age, 1232, 65535, &mut out);
    let msg = testutil::parse_message(&out[..n]);
    Some(msg.answers.first().or(msg.authorities.first()).unwrap().ttl)
}

#[test]
fn a_snapshot_read_later_serves_the_same_answers_aged_by_the_time_in_between() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let old = cache(TtlPolicy::default());
    put_a(&old, "www.example.", 300, now);
    let nx = response("gone.example.", RecordType::A, ResponseCode::NXDomain, vec![], vec![soa("example.", 3600, 60)], false);
    put(&old, &nx, "gone.example.", 1, now);
    let bytes = encode(&old, now + Duration::from_secs(10), wall);

    let new = cache(TtlPolicy::default());
    let later = Instant::now();
    let restored = decode_into(&new, &bytes, later, wall + Duration::from_secs(20)).unwrap();
    assert_eq!(restored, Restored { loaded: 2, expired: 0 });
    assert_eq!(served_ttl(&new, "www.example.", 1, later), Some(300 - 30), "10 s in the old cache, 20 s in between");
    assert_eq!(served_ttl(&new, "gone.example.", 1, later), Some(60 - 30), "negative TTL aged alike");
}

#[test]
fn expired_entries_come_back_only_as_stale_candidates_within_the_maximum_age() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let policy = TtlPolicy { stale_max_age: 100, ..TtlPolicy::default() };
    let old = cache(policy.clone());
    put_a(&old, "short.example.", 5, now);
    put_a(&old, "long.example.", 300, now);
    let bytes = encode(&old, now, wall);

    let new = cache(policy.clone());
    let later = Instant::now();
    let restored = decode_into(&new, &bytes, later, wall + Duration::from_secs(50)).unwrap();
    assert_eq!(restored.loaded, 2);
    assert_eq!(served_ttl(&new, "short.example.", 1, later), None, "expired: not a hit");
    let key = testutil::wire_name("short.example.");
    assert!(new.stale(&KeyRef::new(key.as_name(), crate::wire::RecordType(1), 1, false, false), later).is_some(), "but servable stale");

    let too_late = cache(policy);
    let restored = decode_into(&too_late, &bytes, later, wall + Duration::from_secs(200)).unwrap();
    assert_eq!(restored, Restored { loaded: 1, expired: 1 });
    let no_stale = cache(TtlPolicy::default());
    let restored = decode_into(&no_stale, &bytes, later, wall + Duration::from_secs(50)).unwrap();
    assert_eq!(restored, Restored { loaded: 1, expired: 1 }, "without serve-stale expired entries are dropped");
}

#[test]
fn a_damaged_or_foreign_snapshot_is_rejected_whole() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let old = cache(TtlPolicy::default());
    for i in 0..20 {
        put_a(&old, &format!("h{i}.example."), 300, now);
    }
    let bytes = encode(&old, now, wall);
    let new = cache(TtlPolicy::default());
    for at in [0, 9, 30, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(decode_into(&new, &bad, now, wall).is_err(), "flipped octet {at}");
    }
    assert!(matches!(decode_into(&new, &bytes[..bytes.len() - 7], now, wall), Err(SnapshotError::Damaged)));
    assert!(matches!(decode_into(&new, b"hello", now, wall), Err(SnapshotError::NotASnapshot)));
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(decode_into(&new, &future, now, wall), Err(SnapshotError::Version(2))));
    assert_eq!(new.len(), (0, 0), "nothing was loaded from any of them");
}

#[test]
fn save_replaces_the_file_atomically_and_load_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.snapshot");
    std::fs::write(&path, b"previous").unwrap();
    let old = cache(TtlPolicy::default());
    put_a(&old, "www.example.", 300, Instant::now());
    let written = save(&old, &path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, written);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    let new = cache(TtlPolicy::default());
    assert_eq!(load(&new, &path).unwrap().loaded, 1);
    assert!(matches!(load(&new, &dir.path().join("missing")), Err(SnapshotError::Io(_))));
}

/// The fuzz seed is a real snapshot body, so the fuzzer starts deep in the entry parser.
#[test]
fn the_fuzz_seed_snapshot_loads_every_entry() {
    let mut bytes = b"NDNSSNAP\0\0\0\x01".to_vec();
    bytes.extend_from_slice(include_bytes!("../../../fuzz/corpus/snapshot/three_entries"));
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_be_bytes());
    let cache = cache(TtlPolicy { stale_max_age: 3600, ..TtlPolicy::default() });
    let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(decode_into(&cache, &bytes, Instant::now(), wall).unwrap(), Restored { loaded: 3, expired: 0 });
}

#[test]
fn a_restored_entry_takes_the_bounds_of_its_zone_in_the_cache_it_joins() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let old = cache(TtlPolicy::default());
    put_a(&old, "kubernetes.default.svc.cluster.local.", 300, now);
    put_a(&old, "www.example.", 300, now);
    let bytes = encode(&old, now, wall);

    let zone = ZoneTtl { positive_max_ttl: Some(30), ..ZoneTtl::new(testutil::wire_name("cluster.local.")) };
    let new = cache(TtlPolicy::default()).with_zones([zone]);
    let later = Instant::now();
    decode_into(&new, &bytes, later, wall + Duration::from_secs(10)).unwrap();
    assert_eq!(served_ttl(&new, "kubernetes.default.svc.cluster.local.", 1, later), Some(30 - 10), "capped at 30 s, then aged");
    assert_eq!(served_ttl(&new, "www.example.", 1, later), Some(300 - 10), "outside the zone the global bounds hold");
}
