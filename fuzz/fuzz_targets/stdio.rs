//! Fuzz target `stdio`: the stdio URI parser. The body and its properties are
//! `shimgate::fuzz::stdio`, shared with the CI test `tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shimgate::fuzz::stdio(data));
