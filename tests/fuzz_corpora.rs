//! Replays every fuzz target's committed corpus (`fuzz/corpus/<target>/`), its crash
//! regressions (`fuzz/regressions/<target>/`) and its built-in seeds through the same
//! bodies the cargo-fuzz targets run (`raylet::fuzzing`), on stable and without
//! sanitizers, so the targets build and keep passing in CI. `scripts/fuzz.sh` runs the
//! fuzzers themselves.

use std::path::{Path, PathBuf};

use raylet::fuzzing::{seeds::seeds, TARGETS};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn replay(name: &str) -> usize {
    let (_, run) = TARGETS.iter().find(|(n, _)| *n == name).expect("a target of that name");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for seed in seeds(name) {
        run(&seed);
        n += 1;
    }
    for dir in ["corpus", "regressions"] {
        for file in inputs(&root.join(dir).join(name)) {
            let data = std::fs::read(&file).expect("readable corpus file");
            // A panic names the file, so a failing input can be fed to the fuzzer again.
            eprintln!("replaying {}", file.display());
            run(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn every_target_has_a_corpus_and_replays_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, _) in TARGETS {
        assert!(!inputs(&root.join(name)).is_empty(), "no committed corpus for {name}");
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs")).is_file());
    }
}

macro_rules! replay_tests {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            assert!(replay(stringify!($name)) > 0);
        }
    )*};
}

replay_tests!(rpc_frames, local_codec, spill_record, pull_queue, push_queue, object_table, lease_queue);

// Crashes the fuzzers found, as named tests (their inputs are in fuzz/regressions/ too).

/// spill_record: a URL whose record would end past `u64::MAX` parsed, and its payload
/// offset then overflowed (a panic with overflow checks, a wrapped offset without).
#[test]
fn a_spill_url_whose_record_ends_past_u64_max_is_refused() {
    use raylet::logic::spill::SpillUrl;
    assert!(SpillUrl::parse("spill-1?offset=18446744073709551609&size=57").is_err());
    assert!(SpillUrl::parse("spill-1?offset=18446744073709551609&size=0").is_err(), "a header must fit too");
    let near = SpillUrl::parse("spill-1?offset=18446744073709551000&size=77").expect("a record that fits");
    assert_eq!(near.payload(), (18446744073709551064, 13));
}

/// Writes every target's built-in seeds as files into `$RAYLET_FUZZ_SEEDS_DIR/<target>/`,
/// for `scripts/fuzz.sh` to start a working corpus from.
#[test]
#[ignore = "writes files; scripts/fuzz.sh runs it"]
fn write_seeds() {
    let dir = PathBuf::from(std::env::var("RAYLET_FUZZ_SEEDS_DIR").expect("RAYLET_FUZZ_SEEDS_DIR"));
    for (name, _) in TARGETS {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("seed directory");
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), seed).expect("seed file");
        }
    }
}
