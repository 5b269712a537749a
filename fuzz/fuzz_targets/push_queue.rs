#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raylet::fuzzing::push_queue::run(data));
