//! Fuzz target `checkpoint`: the properties are in `src/checks.rs` (`checks::checkpoint`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::checkpoint(data));
