//! libFuzzer entry for `fuzz_targets::csr` (the body and its invariant are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::csr(data));
