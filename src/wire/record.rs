//! One resource record's fixed fields, read in place: the step every walk over a message's
//! sections shares (a client query's additional section, an upstream response, a learned SOA).

use super::{RecordType, name, read_u16, read_u32};

/// Where one record sits in its message, and its fixed fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordAt {
    /// Offset of its owner name.
    pub owner: usize,
    pub rtype: RecordType,
    pub class: u16,
    /// Offset of its TTL field (a cache entry patches TTLs there).
    pub ttl_at: usize,
    pub ttl: u32,
    pub rdata_start: usize,
    /// Offset just past its RDATA, where the next record starts.
    pub end: usize,
}

/// Reads the record starting at `pos`; `None` if its owner name is malformed or the record
/// runs past the message.
#[inline]
pub fn read(msg: &[u8], pos: usize) -> Option<RecordAt> {
    let fixed = name::skip(msg, pos).ok()?;
    let rtype = RecordType(read_u16(msg, fixed)?);
    let class = read_u16(msg, fixed + 2)?;
    let ttl = read_u32(msg, fixed + 4)?;
    let rdata_start = fixed + 10;
    let end = rdata_start + usize::from(read_u16(msg, fixed + 8)?);
    (end <= msg.len()).then_some(RecordAt { owner: pos, rtype, class, ttl_at: fixed + 4, ttl, rdata_start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_with_its_offsets_and_one_that_overruns_is_refused() {
        // Owner `a.` then A IN, TTL 300, four octets of RDATA.
        let msg = [1, b'a', 0, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1];
        let r = read(&msg, 0).expect("a record");
        assert_eq!(r, RecordAt { owner: 0, rtype: RecordType::A, class: 1, ttl_at: 7, ttl: 300, rdata_start: 13, end: 17 });
        assert_eq!(read(&msg[..16], 0), None, "RDATA cut short");
        assert_eq!(read(&msg[..9], 0), None, "fixed fields cut short");
    }
}
