//! Log sequence numbers and WAL segment arithmetic.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::constants::{MAXIMUM_ALIGNOF, XLOG_BLCKSZ};

/// A position in the WAL: a byte offset in the infinite WAL stream. Text form `X/Y` (high and low 32 bits in
/// uppercase hex, no padding), as PostgreSQL's `pg_lsn` prints it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const INVALID: Lsn = Lsn(0);
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// Rounded up to the next multiple of 8, where records start.
    pub fn align(self) -> Lsn {
        Lsn((self.0 + (MAXIMUM_ALIGNOF - 1)) & !(MAXIMUM_ALIGNOF - 1))
    }

    pub fn is_aligned(self) -> bool {
        self.0.is_multiple_of(MAXIMUM_ALIGNOF)
    }

    /// Offset within its WAL page.
    pub fn block_offset(self) -> u64 {
        self.0 % XLOG_BLCKSZ as u64
    }

    /// Offset within its WAL segment.
    pub fn segment_offset(self, seg_size: u32) -> u64 {
        self.0 % seg_size as u64
    }

    pub fn segment_number(self, seg_size: u32) -> u64 {
        self.0 / seg_size as u64
    }

    /// Start of the segment after the one holding this LSN.
    pub fn next_segment_start(self, seg_size: u32) -> Lsn {
        Lsn((self.segment_number(seg_size) + 1) * seg_size as u64)
    }

    pub fn checked_add(self, n: u64) -> Option<Lsn> {
        self.0.checked_add(n).map(Lsn)
    }

    pub fn checked_sub(self, other: Lsn) -> Option<u64> {
        self.0.checked_sub(other.0)
    }

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl std::ops::Add<u64> for Lsn {
    type Output = Lsn;
    fn add(self, n: u64) -> Lsn {
        Lsn(self.0 + n)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers as in 16/B374D848")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Lsn, LsnParseError> {
        let err = || LsnParseError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let valid =
            |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid(hi) || !valid(lo) {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The name of a WAL segment file: timeline, then the segment number split in two (XLogFileName).
pub fn wal_file_name(timeline: u32, segno: u64, seg_size: u32) -> String {
    let per_id = segments_per_xlog_id(seg_size);
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Parses a WAL segment file name into (timeline, segment number); `None` if it is not one.
pub fn parse_wal_file_name(name: &str, seg_size: u32) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_id = segments_per_xlog_id(seg_size);
    if seg >= per_id {
        return None;
    }
    Some((tli, log * per_id + seg))
}

fn segments_per_xlog_id(seg_size: u32) -> u64 {
    0x1_0000_0000 / seg_size as u64
}

/// A valid WAL segment size: a power of two from 1 MiB to 1 GiB.
pub fn is_valid_segment_size(size: u32) -> bool {
    size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0x100).to_string(), "0/100");
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), Lsn(0x16_B374_D848));
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1/2/3",
            "g/0",
            "123456789/0",
            "1",
            " 1/0",
            "+1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn arithmetic() {
        assert_eq!(Lsn(9).align(), Lsn(16));
        assert_eq!(Lsn(16).align(), Lsn(16));
        assert_eq!(Lsn(8192 + 5).block_offset(), 5);
        let seg = 16 << 20;
        assert_eq!(
            Lsn(seg as u64 + 1).next_segment_start(seg),
            Lsn(2 * seg as u64)
        );
    }

    #[test]
    fn file_names() {
        let seg = 16 << 20;
        assert_eq!(wal_file_name(1, 1, seg), "000000010000000000000001");
        assert_eq!(
            wal_file_name(1, 0x1_00 + 0x3F, seg),
            "00000001000000010000003F"
        );
        assert_eq!(
            parse_wal_file_name("00000001000000010000003F", seg),
            Some((1, 0x13F))
        );
        assert_eq!(parse_wal_file_name("000000010000000100000100", seg), None);
        assert_eq!(
            parse_wal_file_name("00000001000000010000003F.partial", seg),
            None
        );
    }
}
