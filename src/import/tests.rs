//! The scanners on small synthetic data directories: what keys a tar and the same directory on disk yield
//! (identically), and that bad input is an error naming the entry.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;

use super::datadir::{ImportError, ImportStats, scan_dir, scan_tar};
use crate::pg::control::sample_control_file;
use crate::pg::records::CheckPoint;
use crate::pg::{Lsn, RelFileNode};
use crate::repository::Key;
use crate::repository::datadir::{
    decode_db_dir, decode_rel_dir, decode_u32_set, decode_u64_set, encode_nblocks,
};
use crate::walredo::SlruKind;

type Values = BTreeMap<Key, Bytes>;

fn page(fill: u8) -> Vec<u8> {
    vec![fill; 8192]
}

fn twophase_state(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    v
}

/// (path, contents); a path ending in `/` is a directory.
fn sample_files() -> Vec<(&'static str, Vec<u8>)> {
    let cp = CheckPoint {
        redo: Lsn(0x14E_0028),
        this_timeline_id: 1,
        next_xid: 735,
        ..Default::default()
    };
    vec![
        ("global/", vec![]),
        (
            "global/pg_control",
            sample_control_file(Lsn(0x14E_0028), &cp),
        ),
        ("global/pg_filenode.map", vec![7; 512]),
        ("global/1262", [page(1), page(2)].concat()),
        ("base/", vec![]),
        ("base/5/", vec![]),
        ("base/5/PG_VERSION", b"15\n".to_vec()),
        ("base/5/pg_filenode.map", vec![9; 512]),
        ("base/5/16384", [page(3), page(4), page(5)].concat()),
        ("base/5/16384_fsm", page(6)),
        ("base/5/16385", vec![]),
        ("base/5/pg_internal.init", vec![1, 2, 3]),
        ("base/5/t3_16400", page(0)),
        ("pg_xact/", vec![]),
        ("pg_xact/0000", page(0x55)),
        ("pg_multixact/", vec![]),
        ("pg_multixact/offsets/", vec![]),
        ("pg_multixact/offsets/0000", page(0x11)),
        ("pg_twophase/", vec![]),
        ("pg_twophase/000002DF", twophase_state(b"prepared state")),
        ("pg_tblspc/", vec![]),
        ("pg_wal/", vec![]),
        ("pg_wal/000000010000000000000001", vec![0; 100]),
        ("PG_VERSION", b"15\n".to_vec()),
        ("postgresql.conf", b"port = 1\n".to_vec()),
        ("neon.signal", b"PREV LSN: none".to_vec()),
        (
            "backup_label",
            b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
              CHECKPOINT LOCATION: 0/2000060\n"
                .to_vec(),
        ),
    ]
}

fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_size(data.len() as u64);
        }
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn scan_tar_bytes(tar: &[u8]) -> Result<(ImportStats, Values), ImportError> {
    let mut values = Values::new();
    let stats = scan_tar(tar, crate::pg::PgVersion::V15, |k, v| {
        values.insert(k, v);
        Ok(())
    })?;
    Ok((stats, values))
}

fn write_dir(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (path, data) in files {
        let p = root.join(path);
        if path.ends_with('/') {
            std::fs::create_dir_all(&p).unwrap();
        } else {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
        }
    }
}

#[test]
fn tar_and_directory_give_the_same_keys() {
    let files = sample_files();
    let (stats, values) = scan_tar_bytes(&tar_of(&files)).unwrap();

    let rel = |db, rel| RelFileNode {
        spc: if db == 0 { 1664 } else { 1663 },
        db,
        rel,
    };
    let v = |k: Key| values.get(&k).unwrap_or_else(|| panic!("no value for {k}"));
    assert_eq!(v(Key::rel_block(rel(5, 16384), 0, 2)), &page(5)[..]);
    assert_eq!(v(Key::rel_block(rel(0, 1262), 0, 1)), &page(2)[..]);
    assert_eq!(v(Key::rel_size(rel(5, 16384), 0)), &encode_nblocks(3));
    assert_eq!(v(Key::rel_size(rel(5, 16384), 1)), &encode_nblocks(1));
    assert_eq!(v(Key::rel_size(rel(5, 16385), 0)), &encode_nblocks(0));
    assert!(
        !values.contains_key(&Key::rel_block(rel(5, 16400), 0, 0)),
        "temp relation"
    );
    let rels = decode_rel_dir(v(Key::reldir(1663, 5))).unwrap();
    assert_eq!(
        rels,
        [(16384, 0), (16384, 1), (16385, 0)].into_iter().collect()
    );
    assert_eq!(
        decode_rel_dir(v(Key::reldir(1664, 0))).unwrap(),
        [(1262, 0)].into_iter().collect()
    );
    let dbs = decode_db_dir(v(Key::dbdir())).unwrap();
    assert_eq!(
        dbs,
        [((1663, 5), true), ((1664, 0), true)].into_iter().collect()
    );
    assert_eq!(v(Key::relmap_file(1663, 5)), &vec![9u8; 512][..]);
    assert_eq!(v(Key::slru_block(SlruKind::Clog, 0, 0)), &page(0x55)[..]);
    assert_eq!(
        v(Key::slru_segment_size(SlruKind::Clog, 0)),
        &encode_nblocks(1)
    );
    assert_eq!(
        decode_u32_set(v(Key::slru_dir(SlruKind::MultiXactOffsets))).unwrap(),
        [0].into_iter().collect()
    );
    assert!(
        decode_u32_set(v(Key::slru_dir(SlruKind::MultiXactMembers)))
            .unwrap()
            .is_empty()
    );
    assert_eq!(v(Key::twophase_file(735)), &b"prepared state"[..]);
    assert_eq!(
        decode_u64_set(v(Key::twophase_dir())).unwrap(),
        [735].into_iter().collect()
    );
    assert_eq!(v(Key::control_file()).len(), 8192);
    assert_eq!(v(Key::checkpoint()).len(), CheckPoint::SIZE);
    assert_eq!(stats.blocks, 6);
    assert_eq!(
        (stats.relations, stats.rel_forks, stats.databases),
        (3, 4, 2)
    );
    assert_eq!(
        (
            stats.slru_segments,
            stats.twophase_files,
            stats.relmap_files
        ),
        (2, 1, 2)
    );
    assert_eq!(stats.backup_label_start_lsn, Some(Lsn(0x200_0028)));
    assert_eq!(stats.backup_label_checkpoint_lsn, Some(Lsn(0x200_0060)));
    assert_eq!(stats.control_checkpoint_lsn, Lsn(0x14E_0028));

    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &files);
    let mut from_dir = Values::new();
    let dir_stats = scan_dir(dir.path(), crate::pg::PgVersion::V15, |k, v| {
        from_dir.insert(k, v);
        Ok(())
    })
    .unwrap();
    assert_eq!(from_dir, values, "the directory and its tar import alike");
    // The walk does not enter skipped directories, so it counts fewer skipped files.
    assert_eq!(
        ImportStats {
            skipped: 0,
            ..dir_stats
        },
        ImportStats {
            skipped: 0,
            ..stats
        }
    );
}

/// The error of scanning `files` with `change` applied, as text.
fn error_with(change: impl FnOnce(&mut Vec<(&'static str, Vec<u8>)>)) -> String {
    let mut files = sample_files();
    change(&mut files);
    scan_tar_bytes(&tar_of(&files))
        .map(|_| ())
        .expect_err("scan should fail")
        .to_string()
}

fn set(files: &mut Vec<(&'static str, Vec<u8>)>, path: &'static str, data: Vec<u8>) {
    files.retain(|(p, _)| *p != path);
    files.push((path, data));
}

#[test]
fn bad_input_is_an_error_naming_the_entry() {
    let e = error_with(|f| set(f, "base/5/16386", vec![0; 100]));
    assert!(e.contains("base/5/16386") && e.contains("100"), "{e}");
    let e = error_with(|f| set(f, "base/5/16386_bad", vec![]));
    assert!(
        e.contains("base/5/16386_bad") && e.contains("bad name"),
        "{e}"
    );
    let e = error_with(|f| set(f, "pg_twophase/000002E0", b"state\x01\x02\x03\x04".to_vec()));
    assert!(
        e.contains("pg_twophase/000002E0") && e.contains("checksum"),
        "{e}"
    );
    let e = error_with(|f| set(f, "pg_twophase/000002E0", vec![1, 2]));
    assert!(e.contains("pg_twophase/000002E0"), "{e}");
    let e = error_with(|f| set(f, "global/pg_filenode.map", vec![0; 100]));
    assert!(e.contains("global/pg_filenode.map"), "{e}");
    let e = error_with(|f| {
        let control = &mut f
            .iter_mut()
            .find(|(p, _)| *p == "global/pg_control")
            .unwrap()
            .1;
        control[60] ^= 0xFF;
    });
    assert!(
        e.contains("global/pg_control") && e.contains("checksum"),
        "{e}"
    );
    let e = error_with(|f| f.retain(|(p, _)| *p != "global/pg_control"));
    assert!(e.contains("pg_control"), "{e}");
    let e = error_with(|f| set(f, "pg_tblspc/16500/PG_15_202209061/5/16384", page(0)));
    assert!(
        e.contains("pg_tblspc/16500") && e.contains("tablespaces"),
        "{e}"
    );
    let e = error_with(|f| set(f, "tablespace_map", b"16500 /srv/ts\n".to_vec()));
    assert!(e.contains("tablespace_map"), "{e}");
    let e = error_with(|f| set(f, "backup_label", b"LABEL: x\n".to_vec()));
    assert!(
        e.contains("backup_label") && e.contains("START WAL LOCATION"),
        "{e}"
    );
    let e = error_with(|f| set(f, "pg_xact/0001", vec![0; 33 * 8192]));
    assert!(e.contains("pg_xact/0001"), "{e}");
    let e = error_with(|f| f.push(("./base/5/16384", page(0))));
    assert!(e.contains("base/5/16384") && e.contains("twice"), "{e}");
    let e = error_with(|f| set(f, "base/5/16384.1", page(0)));
    assert!(e.contains("base/5/16384") && e.contains("segment 1"), "{e}");
}

#[test]
fn symlinks_truncation_and_garbage() {
    // A tablespace link, as pg_basebackup -Ft writes when there are tablespaces.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "pg_tblspc/16500", "/srv/ts").unwrap();
    let e = scan_tar_bytes(&b.into_inner().unwrap()).unwrap_err();
    assert!(
        matches!(e, ImportError::Tablespace { ref entry } if entry == "pg_tblspc/16500"),
        "{e}"
    );

    // A link where data belongs.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "base/5/16384", "/elsewhere").unwrap();
    let e = scan_tar_bytes(&b.into_inner().unwrap()).unwrap_err();
    assert!(
        matches!(e, ImportError::UnsupportedEntry { ref entry, .. } if entry == "base/5/16384"),
        "{e}"
    );

    // Cut in the middle of a relation file's data.
    let files = sample_files();
    let tar = tar_of(&files);
    let mut archive = tar::Archive::new(&tar[..]);
    let (start, size) = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path_bytes().as_ref() == b"base/5/16384")
        .map(|e| (e.raw_file_position(), e.size()))
        .unwrap();
    let cut = &tar[..(start + size / 2) as usize];
    let e = scan_tar_bytes(cut).unwrap_err();
    assert!(
        matches!(e, ImportError::Truncated { ref entry, .. } if entry == "base/5/16384"),
        "{e}"
    );

    // Cut inside a header.
    let e = scan_tar_bytes(&tar[..(start - 100) as usize]).unwrap_err();
    assert!(matches!(e, ImportError::Tar { .. }), "{e}");

    // A name that leaves the data directory (the tar writer refuses to write one, so it is patched in).
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../etc/passwd");
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[][..]).unwrap();
    let e = scan_tar_bytes(&b.into_inner().unwrap()).unwrap_err();
    assert!(
        matches!(e, ImportError::BadName { ref entry, .. } if entry == "../etc/passwd"),
        "{e}"
    );

    // Not a tar at all.
    let e = scan_tar_bytes(&[0x42u8; 4096]).unwrap_err();
    assert!(matches!(e, ImportError::Tar { after: None, .. }), "{e}");
}
