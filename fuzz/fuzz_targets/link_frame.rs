//! Fuzz target `link_frame`: the properties are in `src/checks.rs` (`checks::link_frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::link_frame(data));
