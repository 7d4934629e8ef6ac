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
}
