//! Visibility-map bits cleared by heap records: PostgreSQL clears them on the VM page without logging that
//! page, so the pageserver stores a Rust-applied record on it (walredo/native.rs).

use super::PageChange;
use crate::pg::DecodedRecord;
use crate::pg::constants::{MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};
use crate::pg::records::HeapRecord;
use crate::walredo::native::VM_HEAPBLOCKS_PER_PAGE;
use crate::walredo::{BufferTag, PageId, WalRecord};

/// The VM changes of a heap record: one record per VM page touched.
pub fn vm_changes(rec: &DecodedRecord, heap: &HeapRecord) -> Vec<PageChange> {
    let (new_flags, old_flags) = heap.vm_bits_cleared();
    if new_flags == 0 && old_flags == 0 {
        return vec![];
    }
    let Some(new_block) = rec.block(0).filter(|b| b.forknum == MAIN_FORKNUM) else {
        return vec![];
    };
    // An update that moved the tuple has the old page as block 1; otherwise old and new are one page.
    let old_blkno = rec.block(1).map_or(new_block.blkno, |b| b.blkno);
    let mut targets: Vec<(u32, u8)> = Vec::new();
    if new_flags != 0 {
        targets.push((new_block.blkno, new_flags));
    }
    if old_flags != 0 {
        targets.push((old_blkno, old_flags));
    }
    let vm_tag = |heap_blk: u32| BufferTag {
        rnode: new_block.rnode,
        forknum: VISIBILITYMAP_FORKNUM,
        blkno: heap_blk / VM_HEAPBLOCKS_PER_PAGE,
    };
    let clear = |heap_blk: u32, other: Option<u32>, flags: u8| {
        PageChange::Record(
            PageId::Rel(vm_tag(heap_blk)),
            WalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: Some(heap_blk),
                old_heap_blkno: other,
                flags,
            },
        )
    };
    match targets[..] {
        // Two heap blocks on one VM page with the same flags: one record naming both.
        [(a, fa), (b, fb)] if fa == fb && vm_tag(a) == vm_tag(b) => vec![clear(a, Some(b), fa)],
        _ => targets
            .iter()
            .map(|&(blk, flags)| clear(blk, None, flags))
            .collect(),
    }
}
