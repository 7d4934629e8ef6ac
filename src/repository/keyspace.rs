//! The keyspace of a timeline at an LSN: every key that holds a value there, as sorted, non-overlapping,
//! end-exclusive ranges (what Neon's `GET .../keyspace` answers, `libs/pageserver_api/src/models/partitioning.rs`;
//! docs/operations.md). It is derived from the directories: the database directory, per database its relmap
//! file, relation directory and every fork's blocks and size key; the SLRU directories, segments and their size
//! keys; the two-phase directory and files; the control file, checkpoint and commit-timestamp keys. We keep no
//! sparse (metadata) keys.

use std::ops::Range;

use crate::pg::{Lsn, RelFileNode};
use crate::repository::Key;
use crate::repository::datadir::DatadirError;
use crate::repository::timeline::Timeline;
use crate::walredo::SlruKind;

/// Ranges of keys, sorted, non-overlapping and not touching (adjacent ranges are merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpace {
    pub ranges: Vec<Range<Key>>,
}

impl KeySpace {
    /// Sorts and merges `ranges` (empty ones dropped).
    pub fn from_ranges(mut ranges: Vec<Range<Key>>) -> KeySpace {
        ranges.retain(|r| r.start < r.end);
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<Key>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => {
                    if r.end > last.end {
                        last.end = r.end;
                    }
                }
                _ => merged.push(r),
            }
        }
        KeySpace { ranges: merged }
    }

    pub fn contains(&self, key: &Key) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= *key);
        self.ranges.get(i).is_some_and(|r| r.contains(key))
    }
}

fn one(key: Key) -> Range<Key> {
    key..key.next()
}

impl Timeline {
    /// Every key with a value at `lsn`.
    pub async fn keyspace(&self, lsn: Lsn) -> Result<KeySpace, DatadirError> {
        let mut ranges = vec![
            one(Key::dbdir()),
            one(Key::control_file()),
            one(Key::checkpoint()),
        ];
        if self.commit_ts(lsn).await?.is_some() {
            ranges.push(one(Key::commit_timestamp()));
        }
        if self.checkpoint_location(lsn).await?.is_some() {
            ranges.push(one(Key::checkpoint_location()));
        }
        if !self.restore_points(lsn).await?.is_empty() {
            ranges.push(one(Key::restore_points()));
        }
        for ((spc, db), has_relmap) in self.list_dbdirs(lsn).await? {
            ranges.push(one(Key::reldir(spc, db)));
            if has_relmap {
                ranges.push(one(Key::relmap_file(spc, db)));
            }
            for (rel, fork) in self.list_rels(spc, db, lsn).await? {
                let rnode = RelFileNode { spc, db, rel };
                let nblocks = match self.rel_size(rnode, fork, lsn).await {
                    Ok(n) => n,
                    Err(DatadirError::NoRelation { .. }) => continue,
                    Err(e) => return Err(e),
                };
                ranges.push(Key::rel_block(rnode, fork, 0)..Key::rel_block(rnode, fork, nblocks));
                ranges.push(one(Key::rel_size(rnode, fork)));
            }
        }
        for kind in [
            SlruKind::Clog,
            SlruKind::MultiXactMembers,
            SlruKind::MultiXactOffsets,
        ] {
            ranges.push(one(Key::slru_dir(kind)));
            for segno in self.list_slru_segments(kind, lsn).await? {
                let n = self.slru_segment_size(kind, segno, lsn).await?.unwrap_or(0);
                ranges.push(Key::slru_block(kind, segno, 0)..Key::slru_block(kind, segno, n));
                ranges.push(one(Key::slru_segment_size(kind, segno)));
            }
        }
        ranges.push(one(Key::twophase_dir()));
        for xid in self.list_twophase(lsn).await? {
            ranges.push(one(Key::twophase_file(xid)));
        }
        Ok(KeySpace::from_ranges(ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_sorted_merged_and_end_exclusive() {
        let k = |n: u32| Key {
            field1: 0,
            field2: 1663,
            field3: 5,
            field4: 16384,
            field5: 0,
            field6: n,
        };
        let ks = KeySpace::from_ranges(vec![
            k(10)..k(20),
            k(0)..k(5),
            k(5)..k(7),
            k(15)..k(30),
            k(40)..k(40),
        ]);
        assert_eq!(ks.ranges, vec![k(0)..k(7), k(10)..k(30)]);
        assert!(ks.contains(&k(0)) && ks.contains(&k(6)) && ks.contains(&k(29)));
        assert!(!ks.contains(&k(7)) && !ks.contains(&k(30)) && !ks.contains(&k(40)));
    }
}
