//! A recovery's plan: which archived segments to replay, in which order, decided from the archive's listing
//! and manifests alone (a pure function, so that every fail-closed rule is a unit test). The checks that
//! need the bytes (sha256, the chain against the bytes replayed, page headers) are the replay's.
//!
//! Rules, each a [`PlanError`] naming the segment:
//! - every segment object has its manifest, and every manifest its object; a manifest names the object it
//!   sits beside, the source's tenant and timeline, and the source's system;
//! - the first segment holds the start (the base's LSN, or `from_lsn`); from the base, its `prev_sha256` is
//!   the base's sha256 and it starts exactly at the base's LSN;
//! - each next segment has the next number, starts where the one before ends, and its `prev_sha256` is the
//!   `sha256` of the one before (also for the one before the first replayed, when the archive has it);
//! - with `to_lsn`, the archive reaches it.

use std::collections::BTreeMap;

use crate::id::{TenantId, TimelineId};
use crate::pg::Lsn;
use crate::remote_storage::index::Generation;
use crate::wal_archive::manifest::{
    ArchiveObject, SegmentManifest, Sha256Digest, parse_object_name,
};

/// A manifest as found in the store, with the name of the data object beside it.
#[derive(Clone, Debug)]
pub struct Found {
    pub manifest_object: String,
    pub data_object: String,
    pub data_present: bool,
    pub manifest: SegmentManifest,
}

/// What the plan is given.
#[derive(Clone, Debug)]
pub struct PlanInput {
    pub tenant_id: TenantId,
    pub timeline_id: TimelineId,
    pub system_identifier: u64,
    /// Completed segments (the newest generation of each name) and partials, in any order.
    pub segments: Vec<Found>,
    /// Segment data objects that have no manifest, by segment name.
    pub orphans: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the base: the first segment starts at `lsn` and chains to `sha256`.
    Base { lsn: Lsn, sha256: Sha256Digest },
    /// From the source's pages at `lsn`.
    FromLsn(Lsn),
}

impl Start {
    pub fn lsn(&self) -> Lsn {
        match self {
            Start::Base { lsn, .. } | Start::FromLsn(lsn) => *lsn,
        }
    }
}

/// One segment to replay: its manifest and objects, and the sha256 the one replayed before must have had
/// (None for the first replayed from `from_lsn` when the archive holds no segment before it).
#[derive(Clone, Debug)]
pub struct Step {
    pub found: Found,
    pub expected_prev: Option<Sha256Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("segment {segment}: its object {object} has no manifest (check: manifest present)")]
    MissingManifest { segment: String, object: String },
    #[error(
        "segment {segment}: its manifest {manifest} has no segment object {object} (check: segment present)"
    )]
    MissingObject {
        segment: String,
        manifest: String,
        object: String,
    },
    #[error(
        "segment {segment}: manifest {manifest} describes {described} (check: manifest names its segment)"
    )]
    WrongName {
        segment: String,
        manifest: String,
        described: String,
    },
    #[error(
        "segment {segment}: manifest is of tenant {tenant} timeline {timeline} (check: same timeline)"
    )]
    ForeignTimeline {
        segment: String,
        tenant: TenantId,
        timeline: TimelineId,
    },
    #[error(
        "segment {segment}: system identifier {got}, the timeline's is {expected} (check: same system)"
    )]
    ForeignSystem {
        segment: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "segment {segment} (holding {lsn}) is not in the archive (check: first segment present)"
    )]
    MissingFirst { segment: String, lsn: Lsn },
    #[error(
        "segment {segment} starts at {got}, but the base is at {expected} (check: continues the base)"
    )]
    NotAtBase {
        segment: String,
        expected: Lsn,
        got: Lsn,
    },
    #[error("segment {segment} is missing between {before} and {after} (check: no gap)")]
    Gap {
        segment: String,
        before: String,
        after: String,
    },
    #[error(
        "segment {segment} starts at {got}, but the one before ends at {expected} (check: LSN range continues)"
    )]
    Discontinuity {
        segment: String,
        expected: Lsn,
        got: Lsn,
    },
    #[error(
        "segment {segment}: prev_sha256 is {got}, but the {before} has sha256 {expected} (check: hash chain)"
    )]
    ChainBroken {
        segment: String,
        before: String,
        expected: String,
        got: String,
    },
    #[error("the archive ends at {end}, before to_lsn {to} (check: archive reaches the target)")]
    EndsBefore { end: Lsn, to: Lsn },
}

fn hex(d: Option<Sha256Digest>) -> String {
    d.map_or_else(|| "null".to_string(), |d| d.to_string())
}

/// The segments to replay from `start` to `to` (exclusive; None: the end of the archive, partial tail
/// included).
pub fn plan(input: &PlanInput, start: Start, to: Option<Lsn>) -> Result<Vec<Step>, PlanError> {
    // Completed segments by number, then the partial tail (the newest partial after the last completed).
    let mut complete: BTreeMap<u64, &Found> = BTreeMap::new();
    let mut partials: Vec<&Found> = Vec::new();
    for f in &input.segments {
        check_manifest(input, f)?;
        if f.manifest.partial {
            partials.push(f);
        } else {
            complete.insert(f.manifest.segno(), f);
        }
    }
    let mut chain: Vec<&Found> = complete.values().copied().collect();
    let last_complete = chain.last().map(|f| f.manifest.segno());
    let tail = partials
        .into_iter()
        .filter(|p| last_complete.is_none_or(|n| p.manifest.segno() == n + 1))
        .max_by_key(|p| (p.manifest.end_lsn, p.manifest.generation));
    if let Some(t) = tail {
        chain.push(t);
    }
    let start_lsn = start.lsn();
    let seg_size = chain
        .first()
        .map_or(16 << 20, |f| f.manifest.wal_segment_size);
    let first_needed = start_lsn.segment_number(seg_size);
    // A segment holding the start: one whose range contains it, or (from the base) one starting at it.
    let holds_start = |f: &&Found| {
        let m = &f.manifest;
        (m.start_lsn <= start_lsn && start_lsn < m.end_lsn) || m.start_lsn == start_lsn
    };
    let Some(first) = chain.iter().position(holds_start) else {
        return Err(PlanError::MissingFirst {
            segment: crate::wal_archive::manifest::segment_name(1, first_needed, seg_size),
            lsn: start_lsn,
        });
    };
    let last = match to {
        Some(to) => {
            let end = chain.last().map_or(start_lsn, |f| f.manifest.end_lsn);
            if end < to {
                return Err(PlanError::EndsBefore { end, to });
            }
            chain
                .iter()
                .rposition(|f| f.manifest.start_lsn < to)
                .unwrap_or(first)
                .max(first)
        }
        None => chain.len() - 1,
    };
    // Orphans (data without manifest) inside the replayed range fail the plan; later ones are an upload in
    // progress.
    let last_segno = chain[last].manifest.segno();
    for o in &input.orphans {
        if let Some((_, n)) = crate::pg::lsn::parse_wal_file_name(o, seg_size)
            && n >= first_needed.min(chain[first].manifest.segno())
            && n <= last_segno
            && !complete.contains_key(&n)
        {
            return Err(PlanError::MissingManifest {
                segment: o.clone(),
                object: o.clone(),
            });
        }
    }
    let mut steps = Vec::new();
    let mut before: Option<&Found> = first.checked_sub(1).map(|i| chain[i]);
    if let Start::Base { lsn, sha256 } = start {
        let m = &chain[first].manifest;
        if m.start_lsn != lsn {
            return Err(PlanError::NotAtBase {
                segment: m.segment.clone(),
                expected: lsn,
                got: m.start_lsn,
            });
        }
        if m.prev_sha256 != Some(sha256) {
            return Err(PlanError::ChainBroken {
                segment: m.segment.clone(),
                before: "base".into(),
                expected: sha256.to_string(),
                got: hex(m.prev_sha256),
            });
        }
        before = None;
    }
    let mut expected_prev = match start {
        Start::Base { sha256, .. } => Some(sha256),
        Start::FromLsn(_) => before.map(|b| b.manifest.sha256),
    };
    for f in &chain[first..=last] {
        let m = &f.manifest;
        if let Some(b) = before {
            let bm = &b.manifest;
            if m.segno() != bm.segno() + 1 {
                return Err(PlanError::Gap {
                    segment: crate::wal_archive::manifest::segment_name(
                        1,
                        bm.segno() + 1,
                        seg_size,
                    ),
                    before: bm.segment.clone(),
                    after: m.segment.clone(),
                });
            }
            if m.start_lsn != bm.end_lsn {
                return Err(PlanError::Discontinuity {
                    segment: m.segment.clone(),
                    expected: bm.end_lsn,
                    got: m.start_lsn,
                });
            }
            if m.prev_sha256 != Some(bm.sha256) {
                return Err(PlanError::ChainBroken {
                    segment: m.segment.clone(),
                    before: format!("segment {}", bm.segment),
                    expected: bm.sha256.to_string(),
                    got: hex(m.prev_sha256),
                });
            }
        }
        steps.push(Step {
            found: (*f).clone(),
            expected_prev,
        });
        expected_prev = Some(m.sha256);
        before = Some(f);
    }
    Ok(steps)
}

pub(crate) fn check_manifest(input: &PlanInput, f: &Found) -> Result<(), PlanError> {
    let m = &f.manifest;
    let seg_size = m.wal_segment_size;
    let described = match parse_object_name(&f.manifest_object, seg_size) {
        Some((ArchiveObject::Segment { name, .. }, _)) => name == m.segment && !m.partial,
        Some((ArchiveObject::Partial { name, end, .. }, _)) => {
            name == m.segment && end == m.end_lsn && m.partial
        }
        _ => false,
    };
    if !described {
        return Err(PlanError::WrongName {
            segment: object_segment(&f.manifest_object),
            manifest: f.manifest_object.clone(),
            described: format!(
                "{}{} {}..{}",
                m.segment,
                if m.partial { " (partial)" } else { "" },
                m.start_lsn,
                m.end_lsn
            ),
        });
    }
    if !f.data_present {
        return Err(PlanError::MissingObject {
            segment: m.segment.clone(),
            manifest: f.manifest_object.clone(),
            object: f.data_object.clone(),
        });
    }
    if m.tenant_id != input.tenant_id || m.timeline_id != input.timeline_id {
        return Err(PlanError::ForeignTimeline {
            segment: m.segment.clone(),
            tenant: m.tenant_id,
            timeline: m.timeline_id,
        });
    }
    if m.system_identifier != input.system_identifier {
        return Err(PlanError::ForeignSystem {
            segment: m.segment.clone(),
            expected: input.system_identifier,
            got: m.system_identifier,
        });
    }
    Ok(())
}

/// The segment part (first 24 characters) of an object name.
fn object_segment(object: &str) -> String {
    object.get(..24).unwrap_or(object).to_string()
}

/// The newest generation of each completed segment and every partial: `(manifest object, data object)` pairs
/// to fetch, and the orphaned data objects, from a listing of the archive.
pub fn pick_objects(names: &[String], seg_size: u32) -> (Vec<(String, String, bool)>, Vec<String>) {
    let present: std::collections::HashSet<&str> = names.iter().map(|n| n.as_str()).collect();
    let mut newest: BTreeMap<String, (Generation, String)> = BTreeMap::new();
    let mut partials = Vec::new();
    let mut data_names: BTreeMap<String, Generation> = BTreeMap::new();
    for n in names {
        match parse_object_name(n, seg_size) {
            Some((
                ArchiveObject::Segment {
                    name,
                    manifest: true,
                },
                g,
            )) if newest.get(&name).is_none_or(|(og, _)| g > *og) => {
                newest.insert(name, (g, n.clone()));
            }
            Some((
                ArchiveObject::Segment {
                    name,
                    manifest: false,
                },
                g,
            )) => {
                let e = data_names.entry(name).or_insert(g);
                *e = (*e).max(g);
            }
            Some((
                ArchiveObject::Partial {
                    name,
                    end,
                    manifest: true,
                },
                g,
            )) => {
                let (data, _) = crate::wal_archive::manifest::partial_objects(&name, end, g);
                let ok = present.contains(data.as_str());
                partials.push((n.clone(), data, ok));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, (g, manifest)) in &newest {
        let (data, _) = crate::wal_archive::manifest::segment_objects(name, *g);
        let ok = present.contains(data.as_str());
        out.push((manifest.clone(), data, ok));
    }
    out.extend(partials);
    let orphans = data_names
        .into_keys()
        .filter(|name| !newest.contains_key(name))
        .collect();
    (out, orphans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal_archive::manifest::segment_name;

    const SEG: u32 = 16 << 20;
    const SEGL: u64 = SEG as u64;

    fn tenant() -> TenantId {
        "11111111111111111111111111111111".parse().unwrap()
    }
    fn timeline() -> TimelineId {
        "22222222222222222222222222222222".parse().unwrap()
    }

    /// An archive from `base` (at `start` in segment 1) with `n` completed segments, and a partial.
    fn archive(n: u64, partial: bool) -> (PlanInput, Start) {
        let base_sha = Sha256Digest::of(b"base");
        let start = Lsn(SEGL + 0x28);
        let mut prev = Some(base_sha);
        let mut segments = Vec::new();
        let mut lsn = start;
        for i in 0..n + u64::from(partial) {
            let segno = 1 + i;
            let is_partial = i == n;
            let end = if is_partial {
                Lsn(lsn.0 + 100)
            } else {
                Lsn((segno + 1) * SEGL)
            };
            let name = segment_name(1, segno, SEG);
            let sha = Sha256Digest::of(format!("seg{segno}").as_bytes());
            let m = SegmentManifest {
                format_version: 1,
                tenant_id: tenant(),
                timeline_id: timeline(),
                segment: name.clone(),
                partial: is_partial,
                start_lsn: lsn,
                end_lsn: end,
                size: end.0 - lsn.0,
                sha256: sha,
                prev_sha256: prev,
                system_identifier: 42,
                pg_version: 15,
                wal_segment_size: SEG,
                generation: Generation(1),
                created_at: 0,
            };
            let (data, manifest) = if is_partial {
                crate::wal_archive::manifest::partial_objects(&name, end, Generation(1))
            } else {
                crate::wal_archive::manifest::segment_objects(&name, Generation(1))
            };
            segments.push(Found {
                manifest_object: manifest,
                data_object: data,
                data_present: true,
                manifest: m,
            });
            prev = Some(sha);
            lsn = end;
        }
        (
            PlanInput {
                tenant_id: tenant(),
                timeline_id: timeline(),
                system_identifier: 42,
                segments,
                orphans: vec![],
            },
            Start::Base {
                lsn: start,
                sha256: base_sha,
            },
        )
    }

    #[test]
    fn whole_archive_in_order_with_tail() {
        let (mut input, start) = archive(3, true);
        input.segments.reverse();
        let steps = plan(&input, start, None).unwrap();
        let names: Vec<u64> = steps.iter().map(|s| s.found.manifest.segno()).collect();
        assert_eq!(names, vec![1, 2, 3, 4]);
        assert!(steps[3].found.manifest.partial);
        assert_eq!(steps[0].expected_prev, Some(Sha256Digest::of(b"base")));
        assert_eq!(steps[1].expected_prev, Some(steps[0].found.manifest.sha256));
    }

    #[test]
    fn to_lsn_stops_at_its_segment_and_must_be_reached() {
        let (input, start) = archive(3, false);
        let steps = plan(&input, start, Some(Lsn(2 * SEGL + 5))).unwrap();
        assert_eq!(steps.len(), 2);
        let steps = plan(&input, start, Some(Lsn(3 * SEGL))).unwrap();
        assert_eq!(steps.len(), 2);
        let err = plan(&input, start, Some(Lsn(4 * SEGL + 1))).unwrap_err();
        assert!(matches!(err, PlanError::EndsBefore { .. }), "{err}");
    }

    #[test]
    fn from_lsn_starts_in_its_segment_and_checks_the_one_before() {
        let (input, _) = archive(3, false);
        let steps = plan(&input, Start::FromLsn(Lsn(2 * SEGL + 64)), None).unwrap();
        assert_eq!(steps[0].found.manifest.segno(), 2);
        assert_eq!(
            steps[0].expected_prev,
            Some(input.segments[0].manifest.sha256)
        );
        let (mut bad, _) = archive(3, false);
        bad.segments[2].manifest.prev_sha256 = Some(Sha256Digest::of(b"other"));
        let err = plan(&bad, Start::FromLsn(Lsn(3 * SEGL + 64)), None).unwrap_err();
        assert!(
            matches!(err, PlanError::ChainBroken { ref segment, .. } if *segment == segment_name(1, 3, SEG)),
            "{err}"
        );
    }

    #[test]
    fn each_break_fails_closed_naming_the_segment() {
        let seg2 = segment_name(1, 2, SEG);
        // A deleted middle segment.
        let (mut input, start) = archive(3, false);
        input.segments.remove(1);
        let err = plan(&input, start, None).unwrap_err();
        assert_eq!(
            err,
            PlanError::Gap {
                segment: seg2.clone(),
                before: segment_name(1, 1, SEG),
                after: segment_name(1, 3, SEG)
            }
        );
        // The first segment missing.
        let (mut input, start) = archive(3, false);
        input.segments.remove(0);
        let err = plan(&input, start, None).unwrap_err();
        assert!(
            matches!(err, PlanError::MissingFirst { ref segment, .. } if *segment == segment_name(1, 1, SEG)),
            "{err}"
        );
        // Two segments swapped (objects renamed into each other's place).
        let (mut input, start) = archive(3, false);
        let (a, b) = (
            input.segments[1].manifest.clone(),
            input.segments[2].manifest.clone(),
        );
        input.segments[1].manifest = b;
        input.segments[2].manifest = a;
        let err = plan(&input, start, None).unwrap_err();
        assert!(
            matches!(err, PlanError::WrongName { ref segment, .. } if *segment == seg2),
            "{err}"
        );
        // A wrong prev_sha256.
        let (mut input, start) = archive(3, false);
        input.segments[1].manifest.prev_sha256 = Some(Sha256Digest::of(b"x"));
        let err = plan(&input, start, None).unwrap_err();
        assert!(
            matches!(err, PlanError::ChainBroken { ref segment, .. } if *segment == seg2),
            "{err}"
        );
        // Another system's segment.
        let (mut input, start) = archive(3, false);
        input.segments[1].manifest.system_identifier = 7;
        let err = plan(&input, start, None).unwrap_err();
        assert!(
            matches!(err, PlanError::ForeignSystem { ref segment, got: 7, .. } if *segment == seg2),
            "{err}"
        );
        // A manifest without its data, and data without its manifest.
        let (mut input, start) = archive(3, false);
        input.segments[1].data_present = false;
        let err = plan(&input, start, None).unwrap_err();
        assert!(
            matches!(err, PlanError::MissingObject { ref segment, .. } if *segment == seg2),
            "{err}"
        );
        let (mut input, start) = archive(3, false);
        input.segments.remove(1);
        input.orphans.push(seg2.clone());
        let err = plan(&input, start, None).unwrap_err();
        assert!(
            matches!(err, PlanError::MissingManifest { ref segment, .. } if *segment == seg2),
            "{err}"
        );
        // A base that is not the one the first segment chains to.
        let (input, _) = archive(3, false);
        let other = Start::Base {
            lsn: Lsn(SEGL + 0x28),
            sha256: Sha256Digest::of(b"tampered"),
        };
        let err = plan(&input, other, None).unwrap_err();
        assert!(
            matches!(err, PlanError::ChainBroken { ref before, .. } if before == "base"),
            "{err}"
        );
    }

    #[test]
    fn pick_objects_takes_the_newest_generation_and_finds_orphans() {
        let s1 = segment_name(1, 1, SEG);
        let s2 = segment_name(1, 2, SEG);
        let names: Vec<String> = vec![
            format!("{s1}-00000001"),
            format!("{s1}.json-00000001"),
            format!("{s1}-00000002"),
            format!("{s1}.json-00000002"),
            format!("{s2}-00000002"),
            "base.json".into(),
        ];
        let (found, orphans) = pick_objects(&names, SEG);
        assert_eq!(
            found,
            vec![(
                format!("{s1}.json-00000002"),
                format!("{s1}-00000002"),
                true
            )]
        );
        assert_eq!(orphans, vec![s2]);
    }
}
