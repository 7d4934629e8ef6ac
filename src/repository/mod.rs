//! The repository: every version of every page, per tenant and timeline (DESIGN.md D4–D6).

pub mod key;
pub mod layers;
pub mod metadata;
pub mod page_cache;
pub mod tasks;
pub mod testing;
pub mod value;

pub use key::Key;
pub use value::Value;
