//! CLOG and multixact pages from transaction and multixact records: which page each record touches and with
//! what (a record of walredo/record.rs, applied by walredo/native.rs). Pure functions of the record body.

use std::collections::BTreeMap;

use super::PageChange;
use crate::pg::records::{MultiXactCreate, RecordBody, XactParsed};
use crate::walredo::native::{
    CLOG_XACTS_PER_PAGE, MULTIXACT_MEMBERS_PER_PAGE, MULTIXACT_OFFSETS_PER_PAGE,
};
use crate::walredo::{PageId, SlruKind, WalRecord, zero_page};

/// Pages per SLRU segment file.
pub const SLRU_PAGES_PER_SEGMENT: u32 = 32;

fn slru(kind: SlruKind, pageno: u32) -> PageId {
    PageId::Slru { kind, pageno }
}

/// The SLRU changes of a record body; empty for records that touch no SLRU page.
pub fn slru_changes(body: &RecordBody) -> Vec<PageChange> {
    match body {
        RecordBody::XactCommit(x) | RecordBody::XactCommitPrepared(x) => clog_status(x, true),
        RecordBody::XactAbort(x) | RecordBody::XactAbortPrepared(x) => clog_status(x, false),
        RecordBody::ClogZeroPage { pageno } => vec![PageChange::Image(
            slru(SlruKind::Clog, *pageno as u32),
            zero_page(),
        )],
        RecordBody::MultiXactZeroOffsetPage { pageno } => {
            vec![PageChange::Image(
                slru(SlruKind::MultiXactOffsets, *pageno as u32),
                zero_page(),
            )]
        }
        RecordBody::MultiXactZeroMemberPage { pageno } => {
            vec![PageChange::Image(
                slru(SlruKind::MultiXactMembers, *pageno as u32),
                zero_page(),
            )]
        }
        RecordBody::MultiXactCreate(create) => multixact_create(create),
        _ => vec![],
    }
}

/// The transaction and its subtransactions, grouped by CLOG page, one record per page.
fn clog_status(x: &XactParsed, committed: bool) -> Vec<PageChange> {
    let mut by_page: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &xid in std::iter::once(&x.xid).chain(&x.subxacts) {
        // Special xids (invalid, bootstrap, frozen) have no CLOG entry.
        if xid >= 3 {
            by_page
                .entry(xid / CLOG_XACTS_PER_PAGE)
                .or_default()
                .push(xid);
        }
    }
    by_page
        .into_iter()
        .map(|(pageno, xids)| {
            let rec = if committed {
                WalRecord::ClogSetCommitted { xids }
            } else {
                WalRecord::ClogSetAborted { xids }
            };
            PageChange::Record(slru(SlruKind::Clog, pageno), rec)
        })
        .collect()
}

fn multixact_create(create: &MultiXactCreate) -> Vec<PageChange> {
    let offsets = WalRecord::MultixactOffsetCreate {
        mid: create.mid,
        moff: create.moff,
        nmembers: create.members.len() as u32,
    };
    let page = create.mid / MULTIXACT_OFFSETS_PER_PAGE;
    let next = match create.mid.wrapping_add(1) {
        0 => 1,
        n => n,
    };
    let next_page = next / MULTIXACT_OFFSETS_PER_PAGE;
    let mut changes = vec![PageChange::Record(
        slru(SlruKind::MultiXactOffsets, page),
        offsets.clone(),
    )];
    if next_page != page {
        changes.push(PageChange::Record(
            slru(SlruKind::MultiXactOffsets, next_page),
            offsets,
        ));
    }
    // Every members page the members fall on gets the whole record; it applies the ones on that page.
    let n = create.members.len() as u32;
    if n > 0 {
        let first = create.moff / MULTIXACT_MEMBERS_PER_PAGE;
        let last = create.moff.wrapping_add(n - 1) / MULTIXACT_MEMBERS_PER_PAGE;
        let pages: Vec<u32> = if first <= last {
            (first..=last).collect()
        } else {
            // The member offsets wrapped around 2^32.
            vec![first, last]
        };
        for pageno in pages {
            changes.push(PageChange::Record(
                slru(SlruKind::MultiXactMembers, pageno),
                WalRecord::MultixactMembersCreate {
                    moff: create.moff,
                    members: create.members.clone(),
                },
            ));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::records::MultiXactMember;

    #[test]
    fn commits_group_subtransactions_by_page() {
        let x = XactParsed {
            xid: 10,
            subxacts: vec![CLOG_XACTS_PER_PAGE + 1, 11],
            ..Default::default()
        };
        let changes = slru_changes(&RecordBody::XactCommit(x));
        assert_eq!(
            changes,
            vec![
                PageChange::Record(
                    slru(SlruKind::Clog, 0),
                    WalRecord::ClogSetCommitted { xids: vec![10, 11] }
                ),
                PageChange::Record(
                    slru(SlruKind::Clog, 1),
                    WalRecord::ClogSetCommitted {
                        xids: vec![CLOG_XACTS_PER_PAGE + 1]
                    }
                ),
            ]
        );
    }

    #[test]
    fn multixact_members_across_pages() {
        let members = vec![MultiXactMember { xid: 5, status: 1 }; 3];
        let create = MultiXactCreate {
            mid: 7,
            moff: MULTIXACT_MEMBERS_PER_PAGE - 1,
            members,
        };
        let changes = slru_changes(&RecordBody::MultiXactCreate(create));
        let pages: Vec<PageId> = changes
            .iter()
            .map(|c| match c {
                PageChange::Record(p, _) | PageChange::Image(p, _) => *p,
            })
            .collect();
        assert_eq!(
            pages,
            vec![
                slru(SlruKind::MultiXactOffsets, 0),
                slru(SlruKind::MultiXactMembers, 0),
                slru(SlruKind::MultiXactMembers, 1)
            ]
        );
    }
}
