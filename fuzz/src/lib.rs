//! The library of the fuzz targets: the properties each target checks ([`checks`], also
//! included by mosix-core's property tests) and the valid examples the seed corpus is made of
//! ([`seeds`]). See docs/fuzzing.md.

pub mod checks;
pub mod seeds;
