//! Cache keys: the question that was asked, exactly.
//!
//! A key is (lower-cased name, type, class, DO, CD). The store indexes entries by a keyed
//! hash of it, and a hit is confirmed by comparing every part with the question the entry
//! answers, never by the hash alone (CoreDNS once keyed on a hash and served one name's
//! answer for another, coredns#3695). [`KeyRef`] is the borrowed form built on the stack
//! for lookups, so a hit allocates nothing; it hashes exactly like the owned [`CacheKey`],
//! which the in-flight table and the snapshots use.

use std::hash::{Hash, Hasher};

use crate::wire::RecordType;
use crate::wire::name::{LowerName, LowerNameBuf};

const DO_BIT: u8 = 1;
const CD_BIT: u8 = 2;

/// An owned key, stored in the cache and in the in-flight table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey {
    name: LowerNameBuf,
    qtype: RecordType,
    qclass: u16,
    bits: u8,
}

/// A borrowed key for lookups.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    name: LowerName<'a>,
    qtype: RecordType,
    qclass: u16,
    bits: u8,
}

impl<'a> KeyRef<'a> {
    #[inline]
    pub fn new(name: LowerName<'a>, qtype: RecordType, qclass: u16, dnssec_ok: bool, checking_disabled: bool) -> Self {
        let bits = if dnssec_ok { DO_BIT } else { 0 } | if checking_disabled { CD_BIT } else { 0 };
        KeyRef { name, qtype, qclass, bits }
    }

    pub(super) fn with_bits(name: LowerName<'a>, qtype: RecordType, qclass: u16, bits: u8) -> Self {
        KeyRef { name, qtype, qclass, bits }
    }

    /// The key of a parsed query, given its lower-cased name.
    #[inline]
    pub fn for_query(query: &crate::wire::Query<'_>, lower_name: LowerName<'a>) -> Self {
        let dnssec_ok = query.edns.is_some_and(|e| e.dnssec_ok);
        let checking_disabled = query.header.flags.has(crate::wire::Flags::CD);
        KeyRef::new(lower_name, query.qtype, query.qclass, dnssec_ok, checking_disabled)
    }

    /// The same question about another name.
    pub fn renamed<'b>(&self, name: LowerName<'b>) -> KeyRef<'b> {
        KeyRef { name, qtype: self.qtype, qclass: self.qclass, bits: self.bits }
    }

    pub fn name(&self) -> LowerName<'a> {
        self.name
    }

    pub fn qtype(&self) -> RecordType {
        self.qtype
    }

    pub fn qclass(&self) -> u16 {
        self.qclass
    }

    /// DO and CD, as one octet.
    pub(super) fn bits(&self) -> u8 {
        self.bits
    }

    pub fn to_owned(&self) -> CacheKey {
        CacheKey { name: self.name.to_owned(), qtype: self.qtype, qclass: self.qclass, bits: self.bits }
    }
}

impl CacheKey {
    pub fn borrowed(&self) -> KeyRef<'_> {
        KeyRef { name: self.name.as_name(), qtype: self.qtype, qclass: self.qclass, bits: self.bits }
    }
    pub fn name(&self) -> LowerName<'_> {
        self.name.as_name()
    }
    pub fn qtype(&self) -> RecordType {
        self.qtype
    }
    pub fn qclass(&self) -> u16 {
        self.qclass
    }
    pub fn dnssec_ok(&self) -> bool {
        self.bits & DO_BIT != 0
    }
    pub fn checking_disabled(&self) -> bool {
        self.bits & CD_BIT != 0
    }
}

fn hash_parts<H: Hasher>(state: &mut H, name: &[u8], qtype: RecordType, qclass: u16, bits: u8) {
    state.write(name);
    state.write_u16(qtype.0);
    state.write_u16(qclass);
    state.write_u8(bits);
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, self.name.as_name().as_bytes(), self.qtype, self.qclass, self.bits);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, self.name.as_bytes(), self.qtype, self.qclass, self.bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn borrowed_and_owned_keys_hash_alike() {
        let name = crate::wire::name::from_text("example.com").unwrap();
        let borrowed = KeyRef::new(name.as_name(), crate::wire::RecordType(1), 1, true, false);
        let owned = borrowed.to_owned();
        let s = std::hash::RandomState::new();
        assert_eq!(s.hash_one(borrowed), s.hash_one(&owned));
        assert_eq!(s.hash_one(owned.borrowed()), s.hash_one(&owned));
    }

    #[test]
    fn keys_differ_by_every_part() {
        let a = crate::wire::name::from_text("a.example").unwrap();
        let b = crate::wire::name::from_text("b.example").unwrap();
        let base = KeyRef::new(a.as_name(), crate::wire::RecordType(1), 1, false, false).to_owned();
        for other in [
            KeyRef::new(b.as_name(), crate::wire::RecordType(1), 1, false, false),
            KeyRef::new(a.as_name(), crate::wire::RecordType(28), 1, false, false),
            KeyRef::new(a.as_name(), crate::wire::RecordType(1), 3, false, false),
            KeyRef::new(a.as_name(), crate::wire::RecordType(1), 1, true, false),
            KeyRef::new(a.as_name(), crate::wire::RecordType(1), 1, false, true),
        ] {
            assert_ne!(other.to_owned(), base);
        }
    }
}
