//! Fuzz target `tunables`: the properties are in `src/checks.rs` (`checks::tunables`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::tunables(data));
