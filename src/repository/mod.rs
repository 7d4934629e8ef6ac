//! The repository: every version of every page, per tenant and timeline (docs/repository.md).

pub mod datadir;
pub mod draw;
pub mod eviction;
pub mod key;
pub mod keyspace;
pub mod layer_map;
pub mod layers;
pub mod metadata;
pub mod mgr;
pub mod page_cache;
pub mod remote;
pub mod stress;
pub mod tasks;
pub mod tenant;
pub mod testing;
pub mod timeline;
pub mod value;

pub use key::Key;
pub use value::Value;
