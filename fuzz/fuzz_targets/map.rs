//! Fuzz target `map`: the properties are in `src/checks.rs` (`checks::map`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::map(data));
