//! A deterministic fake of WAL redo for tests of the repository: the page is the base image (or nothing)
//! followed by the bytes of each PostgreSQL record, in order. Rust-side records are refused.

use bytes::{Bytes, BytesMut};

use crate::repository::{Key, Value};

use crate::walredo::{
    RedoError, RedoFuture, RedoManager, RedoRequest, WalRecord, native::NativeError,
};

#[derive(Debug, Default)]
pub struct AppendRedo;

impl AppendRedo {
    pub fn apply(request: &RedoRequest) -> Result<Bytes, RedoError> {
        let mut page = BytesMut::new();
        if let Some(base) = &request.base_image {
            page.extend_from_slice(base);
        }
        for (_, rec) in &request.records {
            match rec {
                WalRecord::Postgres { will_init, rec } => {
                    if *will_init {
                        page.clear();
                    }
                    page.extend_from_slice(rec);
                }
                _ => {
                    return Err(NativeError::Invalid(
                        "the fake redo applies only PostgreSQL records".into(),
                    )
                    .into());
                }
            }
        }
        Ok(page.freeze())
    }
}

impl RedoManager for AppendRedo {
    fn redo(&self, request: RedoRequest) -> RedoFuture<'_> {
        Box::pin(async move { AppendRedo::apply(&request) })
    }
}

/// The directory entries that make main fork blocks `0..nblocks` of each of `rels` part of a timeline's
/// keyspace (the database directory, each database's relation directory, each relation's size), for tests
/// that write page versions without ingesting WAL: compaction makes image layers of the keyspace only.
pub fn relation_directory(rels: &[crate::pg::RelFileNode], nblocks: u32) -> Vec<(Key, Value)> {
    use crate::repository::datadir::{
        DbDirectory, RelDirectory, encode_db_dir, encode_nblocks, encode_rel_dir,
    };
    let mut dbs = DbDirectory::new();
    let mut reldirs: std::collections::BTreeMap<(u32, u32), RelDirectory> = Default::default();
    let mut puts = Vec::new();
    for rel in rels {
        dbs.insert((rel.spc, rel.db), false);
        reldirs
            .entry((rel.spc, rel.db))
            .or_default()
            .insert((rel.rel, 0));
        puts.push((
            Key::rel_size(*rel, 0),
            Value::Image(encode_nblocks(nblocks)),
        ));
    }
    puts.push((Key::dbdir(), Value::Image(encode_db_dir(&dbs))));
    for ((spc, db), dir) in &reldirs {
        puts.push((Key::reldir(*spc, *db), Value::Image(encode_rel_dir(dir))));
    }
    puts
}
