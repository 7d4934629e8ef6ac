//! Background work on layers: flush of frozen in-memory layers, compaction, GC; decisions in `plan`.

pub mod plan;
