//! Layers: the in-memory layer that takes new values, and the immutable delta and image layer files.

pub mod inmemory;
pub mod name;

pub use name::LayerName;
