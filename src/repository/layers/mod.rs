//! Layers: the in-memory layer that takes new values, and the immutable delta and image layer files
//! (`file_format` is their shared container; docs/storage-format.md specifies it byte by byte).

pub mod delta;
pub mod file_format;
pub mod image;
pub mod index_cache;
pub mod inmemory;
pub mod inspect;
pub mod name;

#[cfg(test)]
pub(crate) mod tests;

pub use delta::{DeltaLayer, DeltaLayerWriter};
pub use file_format::{FORMAT_VERSION, LayerError, LayerKind};
pub use image::{ImageLayer, ImageLayerWriter};
pub use name::LayerName;
