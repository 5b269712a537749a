#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raylet::fuzzing::spill_record::run(data));
