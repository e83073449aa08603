//! Fuzz target `sealed`: the properties are in `src/checks.rs` (`checks::sealed`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::sealed(data));
