//! Fuzz target `stdin`: the start-up stdin detector (options Any vs BootstrapParams). The body and
//! its properties are `shimgate::fuzz::stdin`, shared with the CI test `tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shimgate::fuzz::stdin(data));
