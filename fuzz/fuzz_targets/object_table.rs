#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raylet::fuzzing::object_table::run(data));
