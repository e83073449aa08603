//! Fuzz target `overheads`: the properties are in `src/checks.rs` (`checks::overheads`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::overheads(data));
