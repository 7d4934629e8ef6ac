//! A deterministic fake of WAL redo for tests of the repository: the page is the base image (or nothing)
//! followed by the bytes of each PostgreSQL record, in order. Rust-side records are refused.

use bytes::{Bytes, BytesMut};

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
