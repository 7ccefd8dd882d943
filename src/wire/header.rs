//! The DNS message header (RFC 1035 section 4.1.1).

use super::read_u16;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;

/// The header's flag word, with named accessors for the bits a forwarder cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flags(pub u16);

impl Flags {
    pub const QR: u16 = 1 << 15;
    /// The four opcode bits.
    pub const OPCODE: u16 = 0xf << 11;
    pub const AA: u16 = 1 << 10;
    pub const TC: u16 = 1 << 9;
    pub const RD: u16 = 1 << 8;
    pub const RA: u16 = 1 << 7;
    pub const AD: u16 = 1 << 5;
    pub const CD: u16 = 1 << 4;

    #[inline]
    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
    #[inline]
    pub fn opcode(self) -> Opcode {
        Opcode(((self.0 >> 11) & 0xf) as u8)
    }
    #[inline]
    pub fn rcode(self) -> Rcode {
        Rcode((self.0 & 0xf) as u8)
    }
    #[inline]
    pub fn with(self, bit: u16, on: bool) -> Flags {
        Flags(if on { self.0 | bit } else { self.0 & !bit })
    }
    #[inline]
    pub fn with_rcode(self, rcode: Rcode) -> Flags {
        Flags((self.0 & !0xf) | u16::from(rcode.0 & 0xf))
    }
}

/// The four-bit operation code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const QUERY: Opcode = Opcode(0);
}

/// A response code (the header's four bits; extended codes live in the OPT record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rcode(pub u8);

impl Rcode {
    pub const NOERROR: Rcode = Rcode(0);
    pub const FORMERR: Rcode = Rcode(1);
    pub const SERVFAIL: Rcode = Rcode(2);
    pub const NXDOMAIN: Rcode = Rcode(3);
    pub const NOTIMP: Rcode = Rcode(4);
    pub const REFUSED: Rcode = Rcode(5);
    /// Extended (RFC 6891): its low four bits go in the header, the rest in the OPT record.
    pub const BADVERS: Rcode = Rcode(16);

    /// The mnemonic CoreDNS uses in its `rcode` metric label.
    pub fn as_str(self) -> &'static str {
        match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            16 => "BADVERS",
            _ => "OTHER",
        }
    }
}

/// A parsed header: identifier, flags and the four section counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: Flags,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    /// Parses the header at the start of `msg`, or `None` if the message is shorter than one.
    #[inline]
    pub fn parse(msg: &[u8]) -> Option<Header> {
        if msg.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            id: read_u16(msg, 0)?,
            flags: Flags(read_u16(msg, 2)?),
            qdcount: read_u16(msg, 4)?,
            ancount: read_u16(msg, 6)?,
            nscount: read_u16(msg, 8)?,
            arcount: read_u16(msg, 10)?,
        })
    }

    /// Writes the header into the first 12 octets of `out`.
    #[inline]
    pub fn compose(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.id.to_be_bytes());
        out[2..4].copy_from_slice(&self.flags.0.to_be_bytes());
        out[4..6].copy_from_slice(&self.qdcount.to_be_bytes());
        out[6..8].copy_from_slice(&self.ancount.to_be_bytes());
        out[8..10].copy_from_slice(&self.nscount.to_be_bytes());
        out[10..12].copy_from_slice(&self.arcount.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_compose_and_parse() {
        let h = Header {
            id: 0xbeef,
            flags: Flags(Flags::QR | Flags::RD | Flags::CD).with_rcode(Rcode::NXDOMAIN),
            qdcount: 1,
            ancount: 2,
            nscount: 3,
            arcount: 4,
        };
        let mut buf = [0u8; 12];
        h.compose(&mut buf);
        assert_eq!(Header::parse(&buf), Some(h));
        assert_eq!(h.flags.rcode(), Rcode::NXDOMAIN);
        assert!(h.flags.has(Flags::CD) && !h.flags.has(Flags::AD));
    }

    #[test]
    fn short_message_has_no_header() {
        assert_eq!(Header::parse(&[0u8; 11]), None);
    }
}
