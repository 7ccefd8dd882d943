//! Warm restarts: the cache written out as octets (to a file at shutdown, or to a successor
//! process during a handover) and read back with the time that passed in between.
//!
//! A restart used to start with an empty cache, which is exactly when every pod on the node
//! asks again at once: a herd on an upstream that may itself be
//! recovering. The format is versioned and checksummed; anything
//! that does not read back cleanly is rejected whole, and the caller starts cold.
//!
//! Layout, big-endian: magic `NDNSSNAP`, version (u32), wall-clock time written (u64 Unix
//! seconds), entry count (u32), the entries, CRC-32 of everything before it (u32). An entry:
//! name length (u8) and lower-cased wire name, type (u16), class (u16), DO/CD bits (u8),
//! stale flag (u8), age in seconds (u32), seconds from the time written to the upstream
//! answer's expiry (i64, negative when past), message length (u16) and the stored message.
//! Messages are parsed again on reading, exactly as upstream answers are.

use std::io::Write;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{Cache, CacheKey, Entry, KeyRef, Kind};
use crate::wire::name;
use crate::wire::{RecordType, UpstreamResponse};

const MAGIC: &[u8; 8] = b"NDNSSNAP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a nodedns cache snapshot")]
    NotASnapshot,
    #[error("snapshot format version {0}, this build reads version {VERSION}")]
    Version(u32),
    #[error("snapshot is damaged (checksum mismatch or truncated)")]
    Damaged,
    #[error("snapshot entry {0} does not parse")]
    BadEntry(u32),
}

/// What reading a snapshot did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries put back, fresh or as stale candidates.
    pub loaded: usize,
    /// Entries too old to serve, even stale.
    pub expired: usize,
}

fn unix_secs(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cache's positive and negative entries (not SERVFAILs) as snapshot octets.
pub fn encode(cache: &Cache, now: Instant, wall: SystemTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + (cache.weight().0 + cache.weight().1) as usize);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&unix_secs(wall).to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    let mut count = 0u32;
    for entry in cache.positive.entries().into_iter().chain(cache.negative.entries()) {
        if matches!(entry.kind(), Kind::Positive | Kind::Negative)
            && let Some(key) = entry.key()
        {
            encode_entry(&mut out, &key, &entry, now);
            count += 1;
        }
    }
    out[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn encode_entry(out: &mut Vec<u8>, key: &CacheKey, entry: &Entry, now: Instant) {
    let expiry = entry.expires_in(now);
    out.push(key.name().as_bytes().len() as u8);
    out.extend_from_slice(key.name().as_bytes());
    out.extend_from_slice(&key.qtype().to_be_bytes());
    out.extend_from_slice(&key.qclass().to_be_bytes());
    out.push(u8::from(key.dnssec_ok()) | u8::from(key.checking_disabled()) << 1);
    out.push(u8::from(entry.is_stale()));
    out.extend_from_slice(&entry.age(now).to_be_bytes());
    out.extend_from_slice(&expiry.to_be_bytes());
    out.extend_from_slice(&(entry.wire().len() as u16).to_be_bytes());
    out.extend_from_slice(entry.wire());
}

/// Reads snapshot octets into `cache`, ageing every entry by the wall-clock time since it
/// was written. All or nothing: a damaged snapshot adds no entry.
pub fn decode_into(cache: &Cache, bytes: &[u8], now: Instant, wall: SystemTime) -> Result<Restored, SnapshotError> {
    if bytes.len() < HEADER_LEN + 4 || &bytes[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = u32::from_be_bytes(bytes[8..12].try_into().expect("4 octets"));
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().expect("4 octets")) {
        return Err(SnapshotError::Damaged);
    }
    let written = u64::from_be_bytes(body[12..20].try_into().expect("8 octets"));
    // A clock that went backwards counts as no time passed.
    let elapsed = unix_secs(wall).saturating_sub(written);
    let count = u32::from_be_bytes(body[20..24].try_into().expect("4 octets"));
    let mut reader = Reader { bytes: body, pos: HEADER_LEN };
    let mut entries = Vec::with_capacity(count.min(1 << 20) as usize);
    for i in 0..count {
        let entry = reader.entry(cache, now, elapsed).ok_or(SnapshotError::BadEntry(i))?;
        entries.push(entry);
    }
    if reader.pos != body.len() {
        return Err(SnapshotError::Damaged);
    }
    let mut restored = Restored::default();
    for (key, entry) in entries.into_iter().flatten() {
        cache.insert(&key, entry);
        restored.loaded += 1;
    }
    restored.expired = count as usize - restored.loaded;
    Ok(restored)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes: &'a [u8] = self.bytes;
        let out = bytes.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(out)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    /// One entry: `Some(None)` when it is too old to keep, `None` when it does not parse.
    fn entry(&mut self, cache: &Cache, now: Instant, elapsed: u64) -> Option<Option<(KeyRef<'a>, Entry)>> {
        let name_len = usize::from(*self.take(1)?.first()?);
        let name = name::lower(self.take(name_len)?)?;
        let (qtype, qclass) = (RecordType(self.u16()?), self.u16()?);
        let flags = self.take(2)?;
        let (bits, stale) = (flags[0], flags[1] != 0);
        let age = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        let expiry = i64::from_be_bytes(self.take(8)?.try_into().ok()?);
        let msg_len = usize::from(self.u16()?);
        let msg = self.take(msg_len)?;

        let key = KeyRef::new(name, qtype, qclass, bits & 1 != 0, bits & 2 != 0);
        let resp = UpstreamResponse::parse(msg, name, qtype, qclass).ok()?;
        let age = u32::try_from(u64::from(age) + elapsed).unwrap_or(u32::MAX);
        // No DNS TTL exceeds 2^31 seconds; anything further out is damage, kept in range.
        let bound = i64::from(u32::MAX);
        let expiry = expiry.clamp(-bound, bound).saturating_sub(i64::try_from(elapsed).unwrap_or(bound)).max(-bound);
        let entry = Entry::restored(&key, msg, &resp, cache.policy_for(name), now, age, expiry, stale);
        if !matches!(entry.kind(), Kind::Positive | Kind::Negative) {
            return None;
        }
        let max_stale = u64::from(cache.policy().stale_max_age);
        let keep = entry.expired_for(now).is_none_or(|_| max_stale > 0 && expiry.unsigned_abs() <= max_stale);
        Some(keep.then_some((key, entry)))
    }
}

/// Writes `cache` to `path` atomically: a temporary file in the same directory, synced,
/// then renamed over the old snapshot. Returns the number of octets written.
pub fn save(cache: &Cache, path: &Path) -> Result<usize, SnapshotError> {
    let bytes = encode(cache, Instant::now(), SystemTime::now());
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(bytes.len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the snapshot at `path` into `cache`.
pub fn load(cache: &Cache, path: &Path) -> Result<Restored, SnapshotError> {
    let bytes = std::fs::read(path)?;
    decode_into(cache, &bytes, Instant::now(), SystemTime::now())
}

#[cfg(test)]
mod tests;
