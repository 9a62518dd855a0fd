#![no_main]
// The property checks live in fuzz/src/checks.rs, shared with agent/tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| canarie_fuzz::checks::keyvault_secret(data));
