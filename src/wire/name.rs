//! Domain names in wire form: a sequence of length-prefixed labels ending in the root label,
//! possibly ending instead in a compression pointer (RFC 1035 section 4.1.4).

use std::fmt::Write;

/// Longest name in wire form, root label included (RFC 1035 section 2.3.4).
pub const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;
const POINTER: u8 = 0xc0;

/// A name in wire form with every ASCII letter lower-cased: the form cache keys, zones and
/// naming rules compare. Only this module's readers ([`read_lowercased`],
/// [`expand_lowercased`]) and [`from_text`] make one, so a name still in a client's letter
/// case cannot reach a comparison by mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LowerName<'a>(&'a [u8]);

impl<'a> LowerName<'a> {
    /// The root, `.`.
    pub const ROOT: LowerName<'static> = LowerName(&[0]);

    /// The wire octets, root label included.
    #[inline]
    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }

    /// Whether `suffix` equals this name or ends it at a label boundary.
    #[inline]
    pub fn ends_with(self, suffix: LowerName<'_>) -> bool {
        let (name, suffix) = (self.0, suffix.0);
        let mut pos = 0;
        while pos < name.len() {
            if name.len() - pos == suffix.len() && &name[pos..] == suffix {
                return true;
            }
            pos += 1 + name[pos] as usize;
        }
        false
    }

    /// Octets the caller wrote lower-cased itself, taken without reading them again: for
    /// benchmarks that stand in for the parser and must not measure it. Debug builds check.
    #[doc(hidden)]
    pub fn written_lower(octets: &'a [u8]) -> LowerName<'a> {
        debug_assert!(lower(octets).is_some(), "not a lower-cased wire name");
        LowerName(octets)
    }

    pub fn to_owned(self) -> LowerNameBuf {
        LowerNameBuf(self.0.into())
    }
}

/// Reading one as octets is free; making one is what only the parsers can do.
impl std::ops::Deref for LowerName<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.0
    }
}

/// An owned [`LowerName`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LowerNameBuf(Box<[u8]>);

impl LowerNameBuf {
    #[inline]
    pub fn as_name(&self) -> LowerName<'_> {
        LowerName(&self.0)
    }
}

impl std::ops::Deref for LowerNameBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// `wire` as a [`LowerName`] if it is one whole uncompressed name already lower-cased (as a
/// snapshot stores its keys); `None` otherwise.
pub fn lower(wire: &[u8]) -> Option<LowerName<'_>> {
    let mut copy = [0u8; MAX_NAME];
    let (end, lowered) = read_lowercased(wire, 0, &mut copy).ok()?;
    (end == wire.len() && lowered.as_bytes() == wire).then_some(LowerName(wire))
}

/// Why a name could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name runs past the end of the message")]
    Truncated,
    #[error("name is longer than 255 octets")]
    TooLong,
    #[error("label type is reserved")]
    BadLabel,
    #[error("compression pointer where none is allowed")]
    UnexpectedPointer,
}

/// Reads an uncompressed name starting at `start`, writing it lower-cased into `lower`.
/// Returns the offset just past the name and the name, in `lower`.
///
/// Questions are never compressed in practice (the only earlier octets are the header), so a
/// pointer there is a malformed query.
#[inline]
pub fn read_lowercased<'b>(msg: &[u8], start: usize, lower: &'b mut [u8; MAX_NAME]) -> Result<(usize, LowerName<'b>), NameError> {
    let mut pos = start;
    loop {
        let len = *msg.get(pos).ok_or(NameError::Truncated)? as usize;
        if len & 0xc0 == 0xc0 {
            return Err(NameError::UnexpectedPointer);
        }
        if len > MAX_LABEL {
            return Err(NameError::BadLabel);
        }
        let end = pos + 1 + len;
        let wire_len = end - start;
        if wire_len > MAX_NAME {
            return Err(NameError::TooLong);
        }
        let label = msg.get(pos..end).ok_or(NameError::Truncated)?;
        let dst = &mut lower[pos - start..wire_len];
        for (d, s) in dst.iter_mut().zip(label) {
            *d = s.to_ascii_lowercase();
        }
        // The length octet is below 64, so lower-casing left it unchanged.
        pos = end;
        if len == 0 {
            return Ok((pos, LowerName(&lower[..wire_len])));
        }
    }
}

/// Skips a possibly compressed name starting at `start` and returns the offset after it.
/// Pointers are not followed: only their two octets belong to this name.
#[inline]
pub fn skip(msg: &[u8], start: usize) -> Result<usize, NameError> {
    let mut pos = start;
    loop {
        let len = *msg.get(pos).ok_or(NameError::Truncated)?;
        match len & 0xc0 {
            POINTER => {
                pointer_target(msg, pos, start)?;
                return Ok(pos + 2);
            }
            0 => {
                pos += 1 + len as usize;
                if pos - start > MAX_NAME {
                    return Err(NameError::TooLong);
                }
                if pos > msg.len() {
                    return Err(NameError::Truncated);
                }
                if len == 0 {
                    return Ok(pos);
                }
            }
            _ => return Err(NameError::BadLabel),
        }
    }
}

/// Reads a possibly compressed name at `start` into `out` lower-cased, following pointers
/// (each must point strictly backwards, which rules out loops). Returns the offset after the
/// name at `start` and the expanded name, in `out`.
pub fn expand_lowercased<'b>(msg: &[u8], start: usize, out: &'b mut [u8; MAX_NAME]) -> Result<(usize, LowerName<'b>), NameError> {
    let mut pos = start;
    let mut len_out = 0;
    let mut after: Option<usize> = None;
    let mut limit = start;
    loop {
        let len = *msg.get(pos).ok_or(NameError::Truncated)?;
        match len & 0xc0 {
            POINTER => {
                let target = pointer_target(msg, pos, limit)?;
                after.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            0 => {
                let end = pos + 1 + len as usize;
                let label = msg.get(pos..end).ok_or(NameError::Truncated)?;
                if len_out + label.len() > MAX_NAME {
                    return Err(NameError::TooLong);
                }
                for (d, s) in out[len_out..len_out + label.len()].iter_mut().zip(label) {
                    *d = s.to_ascii_lowercase();
                }
                len_out += label.len();
                pos = end;
                if len == 0 {
                    return Ok((after.unwrap_or(pos), LowerName(&out[..len_out])));
                }
            }
            _ => return Err(NameError::BadLabel),
        }
    }
}

/// The offset a compression pointer at `pos` points to, which must lie before `limit`:
/// pointing strictly backwards is what rules out loops.
fn pointer_target(msg: &[u8], pos: usize, limit: usize) -> Result<usize, NameError> {
    let low = *msg.get(pos + 1).ok_or(NameError::Truncated)?;
    let target = (usize::from(msg[pos] & 0x3f) << 8) | usize::from(low);
    if target >= limit { Err(NameError::BadLabel) } else { Ok(target) }
}

/// Presentation form of a wire name (`www.example.com.`), for logs and errors only.
pub fn to_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        let len = len as usize;
        if len == 0 || len > MAX_LABEL {
            break;
        }
        for &b in wire.get(pos + 1..pos + 1 + len).unwrap_or_default() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(b as char);
            } else {
                let _ = write!(out, "\\{b:03}");
            }
        }
        out.push('.');
        pos += 1 + len;
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Wire form of a presentation name, lower-cased; `None` if a label is empty or too long.
/// Used at the edges (config, CLI, tests), never on the query path.
pub fn from_text(text: &str) -> Option<LowerNameBuf> {
    let mut wire = Vec::with_capacity(text.len() + 2);
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL {
                return None;
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    wire.push(0);
    (wire.len() <= MAX_NAME).then(|| LowerNameBuf(wire.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_name_is_lower_cased_and_measured() {
        let msg = b"\x03WwW\x07Example\x03CoM\x00rest";
        let mut buf = [0u8; MAX_NAME];
        let (end, name) = read_lowercased(msg, 0, &mut buf).unwrap();
        assert_eq!(end, 17);
        assert_eq!(name.as_bytes(), b"\x03www\x07example\x03com\x00");
    }

    #[test]
    fn question_name_rejects_pointer_truncation_and_length() {
        let mut buf = [0u8; MAX_NAME];
        assert_eq!(read_lowercased(b"\x03www\xc0\x0c", 0, &mut buf), Err(NameError::UnexpectedPointer));
        assert_eq!(read_lowercased(b"\x03ww", 0, &mut buf), Err(NameError::Truncated));
        assert_eq!(read_lowercased(b"\x40", 0, &mut buf), Err(NameError::BadLabel));
        let long: Vec<u8> = std::iter::repeat_n([63u8].into_iter().chain([b'a'; 63]), 5).flatten().chain([0]).collect();
        assert_eq!(read_lowercased(&long, 0, &mut buf), Err(NameError::TooLong));
    }

    #[test]
    fn skip_stops_after_pointer_and_refuses_forward_pointers() {
        let msg = b"\x03abc\x00\x01x\xc0\x00";
        assert_eq!(skip(msg, 0), Ok(5));
        assert_eq!(skip(msg, 5), Ok(9));
        assert_eq!(skip(b"\xc0\x05", 0), Err(NameError::BadLabel));
    }

    #[test]
    fn expand_follows_pointers_and_rejects_loops() {
        let msg = b"\x03ABC\x00\x01x\xc0\x00";
        let mut out = [0u8; MAX_NAME];
        let (after, name) = expand_lowercased(msg, 5, &mut out).unwrap();
        assert_eq!((after, name.as_bytes()), (9, &b"\x01x\x03abc\x00"[..]));
        // A pointer to itself is not strictly backwards.
        assert!(expand_lowercased(b"\x00\xc0\x01", 1, &mut out).is_err());
    }

    #[test]
    fn suffix_matches_only_at_label_boundaries() {
        let name = from_text("api.Cluster.local").unwrap();
        let name = name.as_name();
        assert!(name.ends_with(from_text("cluster.local.").unwrap().as_name()));
        assert!(name.ends_with(LowerName::ROOT));
        assert!(!name.ends_with(from_text("uster.local").unwrap().as_name()));
        assert!(!from_text("local").unwrap().as_name().ends_with(name));
    }

    #[test]
    fn only_a_whole_lower_cased_name_is_taken_as_one() {
        assert_eq!(lower(b"\x03www\x07example\x00").map(LowerName::as_bytes), Some(&b"\x03www\x07example\x00"[..]));
        assert_eq!(lower(b"\x03Www\x07example\x00"), None, "a capital letter");
        assert_eq!(lower(b"\x03www\x07example\x00\x00"), None, "octets after the name");
        assert_eq!(lower(b"\x03www\x07exam"), None, "cut short");
    }

    #[test]
    fn text_round_trip() {
        assert_eq!(to_text(&from_text("WWW.example.com").unwrap()), "www.example.com.");
        assert_eq!(to_text(&from_text(".").unwrap()), ".");
        assert_eq!(from_text("a..b"), None);
    }
}
