#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raylet::fuzzing::local_codec::run(data));
