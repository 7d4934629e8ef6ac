//! Compaction and GC decisions: pure functions of the layer set and the cutoffs, kept apart from the doing:
//! compaction.rs and gc.rs execute them.
//!
//! Layer kinds: an **L0** delta covers the whole key space (a flushed in-memory layer); an **L1** delta covers
//! part of it (written by compaction, never the whole); an **image** layer holds every key of its range at
//! one LSN that is in the keyspace there.

use std::ops::Range;

use crate::pg::Lsn;
use crate::repository::Key;
use crate::repository::layers::LayerName;

pub fn is_l0(name: &LayerName) -> bool {
    matches!(name, LayerName::Delta { key_range, .. } if key_range.start == Key::MIN && key_range.end == Key::MAX)
}

/// The L0 deltas to merge into L1, oldest first, once there are at least `threshold` of them.
pub fn plan_l0_compaction(layers: &[LayerName], threshold: usize) -> Option<Vec<LayerName>> {
    let mut l0: Vec<LayerName> = layers.iter().filter(|l| is_l0(l)).cloned().collect();
    if l0.len() < threshold.max(1) {
        return None;
    }
    l0.sort_by_key(|l| l.lsn_range().start);
    Some(l0)
}

fn covers(outer: &Range<Key>, inner: &Range<Key>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn overlaps(a: &Range<Key>, b: &Range<Key>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Key ranges that deserve a new image layer at `lsn`: the ranges of L1 deltas over which at least
/// `threshold` deltas lie above the newest image covering the range.
pub fn plan_image_layers(layers: &[LayerName], threshold: usize, lsn: Lsn) -> Vec<Range<Key>> {
    let mut ranges: Vec<Range<Key>> = layers
        .iter()
        .filter(|l| l.is_delta() && !is_l0(l) && l.lsn_range().end <= Lsn(lsn.0 + 1))
        .map(|l| l.key_range().clone())
        .collect();
    ranges.sort_by_key(|r| (r.start, r.end));
    ranges.dedup();
    ranges
        .into_iter()
        .filter(|range| {
            let newest_image = layers
                .iter()
                .filter_map(|l| match l {
                    LayerName::Image { key_range, lsn } if covers(key_range, range) => Some(*lsn),
                    _ => None,
                })
                .max();
            if newest_image == Some(lsn) {
                return false;
            }
            let above = layers
                .iter()
                .filter(|l| {
                    l.is_delta()
                        && overlaps(l.key_range(), range)
                        && l.lsn_range().start <= lsn
                        && newest_image.is_none_or(|img| l.lsn_range().end > Lsn(img.0 + 1))
                })
                .count();
            above >= threshold.max(1)
        })
        .collect()
}

/// The layers GC may remove, with reads allowed at and above `cutoff` and at each of `retain` (the branch
/// points of child timelines). A layer can go when every such read point at or above its start is served by
/// a newer image layer covering its whole key range at or below that point.
pub fn plan_gc(layers: &[LayerName], cutoff: Lsn, retain: &[Lsn]) -> Vec<LayerName> {
    let points: Vec<Lsn> = std::iter::once(cutoff)
        .chain(retain.iter().copied())
        .collect();
    layers
        .iter()
        .filter(|layer| {
            let range = layer.lsn_range();
            // Versions above the cutoff are still readable.
            if range.end.0 > cutoff.0 + 1 {
                return false;
            }
            points.iter().filter(|&&p| p >= range.start).all(|&point| {
                layers.iter().any(|other| match other {
                    LayerName::Image { key_range, lsn } if other != *layer => {
                        let newer = match layer {
                            LayerName::Image { lsn: own, .. } => *lsn > *own,
                            LayerName::Delta { .. } => lsn.0 + 1 >= range.end.0,
                        };
                        newer && *lsn <= point && covers(key_range, layer.key_range())
                    }
                    _ => false,
                })
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        Key {
            field6: n,
            ..Key::MIN
        }
    }
    fn delta(k: Range<u32>, l: Range<u64>) -> LayerName {
        LayerName::Delta {
            key_range: key(k.start)..key(k.end),
            lsn_range: Lsn(l.start)..Lsn(l.end),
        }
    }
    fn l0(l: Range<u64>) -> LayerName {
        LayerName::Delta {
            key_range: Key::MIN..Key::MAX,
            lsn_range: Lsn(l.start)..Lsn(l.end),
        }
    }
    fn image(k: Range<u32>, lsn: u64) -> LayerName {
        LayerName::Image {
            key_range: key(k.start)..key(k.end),
            lsn: Lsn(lsn),
        }
    }

    #[test]
    fn l0_compaction_waits_for_the_threshold() {
        let layers = vec![l0(10..20), delta(0..5, 0..10), l0(20..30)];
        assert_eq!(plan_l0_compaction(&layers, 3), None);
        assert_eq!(
            plan_l0_compaction(&layers, 2),
            Some(vec![l0(10..20), l0(20..30)])
        );
    }

    #[test]
    fn images_where_deltas_pile_up() {
        let layers = vec![
            delta(0..5, 0..10),
            l0(10..20),
            l0(20..30),
            delta(5..9, 0..10),
        ];
        assert_eq!(
            plan_image_layers(&layers, 3, Lsn(29)),
            vec![key(0)..key(5), key(5)..key(9)]
        );
        assert!(plan_image_layers(&layers, 4, Lsn(29)).is_empty());
        // An image above the deltas resets the count; one at the same LSN is not made twice.
        let mut with_image = layers.clone();
        with_image.push(image(0..9, 29));
        assert!(plan_image_layers(&with_image, 1, Lsn(29)).is_empty());
    }

    #[test]
    fn gc_keeps_what_reads_at_the_cutoff_and_branch_points_need() {
        let old = delta(0..9, 0..10);
        let img = image(0..9, 20);
        let mid = delta(0..9, 10..21);
        let new = delta(0..9, 21..40);
        let layers = vec![old.clone(), mid.clone(), img.clone(), new.clone()];
        // Cutoff above the image: the deltas below it go; the image and the newest delta stay.
        let mut removed = plan_gc(&layers, Lsn(30), &[]);
        removed.sort_by_key(|l| l.lsn_range().start);
        assert_eq!(removed, vec![old.clone(), mid.clone()]);
        // A branch at LSN 15 still needs the deltas below the image.
        assert!(plan_gc(&layers, Lsn(30), &[Lsn(15)]).is_empty());
        // Cutoff below the image: nothing can go.
        assert!(plan_gc(&layers, Lsn(19), &[]).is_empty());
        // An image that does not cover the whole key range does not make a layer removable.
        let partial = vec![old.clone(), image(0..5, 20), new];
        assert!(plan_gc(&partial, Lsn(30), &[]).is_empty());
        // Two images of one range: the older goes.
        let two = vec![image(0..9, 5), image(0..9, 20)];
        assert_eq!(plan_gc(&two, Lsn(30), &[]), vec![image(0..9, 5)]);
    }
}
