//! Background work on layers: flush of frozen in-memory layers, compaction, GC; decisions in `plan`.

pub mod compaction;
pub mod flush;
pub mod gc;
pub mod plan;
