//! Fuzz target `image`: the properties are in `src/checks.rs` (`checks::image`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::image(data));
