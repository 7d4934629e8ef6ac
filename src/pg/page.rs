//! The standard page header (storage/bufpage.h), shared by every relation page PostgreSQL writes.

use super::constants::BLCKSZ;
use super::lsn::Lsn;

pub const SIZE_OF_PAGE_HEADER: usize = 24;
/// `PG_PAGE_LAYOUT_VERSION` of PostgreSQL 8.3 and later.
pub const PAGE_LAYOUT_VERSION: u16 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub lsn: Lsn,
    pub checksum: u16,
    pub flags: u16,
    pub lower: u16,
    pub upper: u16,
    pub special: u16,
    pub pagesize_version: u16,
    pub prune_xid: u32,
}

impl PageHeader {
    /// Reads the header of an 8 KiB page; `None` if the slice is shorter than a header.
    pub fn parse(page: &[u8]) -> Option<PageHeader> {
        let h = page.get(..SIZE_OF_PAGE_HEADER)?;
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        Some(PageHeader {
            // PageXLogRecPtr: the high half first, each half in native order.
            lsn: Lsn(((u32_at(0) as u64) << 32) | u32_at(4) as u64),
            checksum: u16_at(8),
            flags: u16_at(10),
            lower: u16_at(12),
            upper: u16_at(14),
            special: u16_at(16),
            pagesize_version: u16_at(18),
            prune_xid: u32_at(20),
        })
    }

    /// The checks of PageIsVerifiedExtended on a non-new page: sizes in order and within the page.
    pub fn check(&self) -> Result<(), String> {
        let blcksz = BLCKSZ as u16;
        if self.pagesize_version != blcksz | PAGE_LAYOUT_VERSION {
            return Err(format!("page size/version {:#06X}", self.pagesize_version));
        }
        if !((SIZE_OF_PAGE_HEADER as u16) <= self.lower
            && self.lower <= self.upper
            && self.upper <= self.special
            && self.special <= blcksz)
        {
            return Err(format!(
                "pd_lower {} pd_upper {} pd_special {} out of order",
                self.lower, self.upper, self.special
            ));
        }
        if !self.special.is_multiple_of(8) {
            return Err(format!("pd_special {} not 8-aligned", self.special));
        }
        Ok(())
    }
}

/// A page never initialised: all zeros (PageIsNew looks at pd_upper == 0).
pub fn is_new(page: &[u8]) -> bool {
    page.iter().all(|&b| b == 0)
}

/// Sets the page LSN (PageSetLSN).
pub fn set_lsn(page: &mut [u8], lsn: Lsn) {
    page[0..4].copy_from_slice(&((lsn.0 >> 32) as u32).to_le_bytes());
    page[4..8].copy_from_slice(&(lsn.0 as u32).to_le_bytes());
}

/// The page checksum of `page` as block `blkno` of its relation (storage/checksum_impl.h, pg_checksum_page):
/// FNV-1a-like mixing over 32 interleaved 32-bit lanes, with `pd_checksum` taken as zero, then the block
/// number folded in and the result reduced to 1..=65535.
pub fn checksum(page: &[u8], blkno: u32) -> u16 {
    const N_SUMS: usize = 32;
    const FNV_PRIME: u32 = 16777619;
    const BASE_OFFSETS: [u32; N_SUMS] = [
        0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2,
        0x83E13D2C, 0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C,
        0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979,
        0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
        0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
    ];
    let mix = |sum: u32, value: u32| {
        let t = sum ^ value;
        t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
    };
    let mut sums = BASE_OFFSETS;
    for (i, row) in page[..BLCKSZ].chunks_exact(4 * N_SUMS).enumerate() {
        for (j, word) in row.chunks_exact(4).enumerate() {
            let mut value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            // pd_checksum (bytes 8..10, the low half of word 2 of row 0) counts as zero.
            if i == 0 && j == 2 {
                value &= 0xFFFF_0000;
            }
            sums[j] = mix(sums[j], value);
        }
    }
    for _ in 0..2 {
        for sum in &mut sums {
            *sum = mix(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    ((folded % 65535) + 1) as u16
}

/// Sets `pd_checksum` of `page`, block `blkno` of its relation, as PostgreSQL does before writing a page of a
/// cluster with data checksums (PageSetChecksumInplace); a new page (pd_upper 0) is left as it is.
pub fn set_checksum(page: &mut [u8], blkno: u32) {
    if page.len() < BLCKSZ || u16::from_le_bytes([page[14], page[15]]) == 0 {
        return;
    }
    let sum = checksum(page, blkno);
    page[8..10].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut page = vec![0u8; BLCKSZ];
        set_lsn(&mut page, Lsn(0x1_0000_0028));
        page[12..14].copy_from_slice(&24u16.to_le_bytes());
        page[14..16].copy_from_slice(&8192u16.to_le_bytes());
        page[16..18].copy_from_slice(&8192u16.to_le_bytes());
        page[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        let h = PageHeader::parse(&page).unwrap();
        assert_eq!(h.lsn, Lsn(0x1_0000_0028));
        h.check().unwrap();
        page[12..14].copy_from_slice(&9000u16.to_le_bytes());
        assert!(PageHeader::parse(&page).unwrap().check().is_err());
    }

    /// Block 2 of pg_attribute of a cluster made by PostgreSQL 15's `initdb --data-checksums`: the checksum
    /// PostgreSQL stored is the one computed here, for that block number only; set_checksum restores it.
    #[test]
    fn checksum_of_a_real_page() {
        let page = include_bytes!("page_fixtures/pg_attribute_block2_checksummed.page");
        let stored = PageHeader::parse(page).unwrap().checksum;
        assert_eq!(stored, 45886);
        assert_eq!(checksum(page, 2), stored);
        assert_ne!(checksum(page, 3), stored);
        let mut copy = page.to_vec();
        copy[8..10].copy_from_slice(&[0, 0]);
        set_checksum(&mut copy, 2);
        assert_eq!(&copy[..], &page[..]);
        let mut new = vec![0u8; BLCKSZ];
        set_checksum(&mut new, 2);
        assert!(is_new(&new), "a new page stays all zeros");
    }
}
