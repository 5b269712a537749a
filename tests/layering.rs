//! Layering rules of STYLE.md §6.2, checked by reading the source:
//!
//! - `src/logic/` is sans-IO: its code must not mention `glommio`, `async `, `std::net`,
//!   `std::fs`, `libc`, `nix::`, `Instant::now`, `SystemTime::now` or `thread_rng`.
//!   Test code is exempt (sibling `tests.rs` files, `tests/` directories, `sim.rs`, and
//!   inline `#[cfg(test)] mod ... { }` blocks): a test may take `Instant::now()` as the base
//!   of its virtual clock. Comments are exempt too: they may name what the code avoids.
//! - `unsafe` appears only in `src/store/arena.rs`, `src/store/buffer.rs`,
//!   `src/local/fdpass.rs`, `src/rpc/sockopt.rs` (borrowing a glommio stream's fd for
//!   socket2), and the generated code under `src/wire/generated/`.

use std::path::{Path, PathBuf};

const FORBIDDEN_IN_LOGIC: [&str; 9] =
    ["glommio", "async ", "std::net", "std::fs", "libc", "nix::", "Instant::now", "SystemTime::now", "thread_rng"];

const UNSAFE_ALLOWED: [&str; 4] =
    ["src/store/arena.rs", "src/store/buffer.rs", "src/local/fdpass.rs", "src/rpc/sockopt.rs"];
const UNSAFE_ALLOWED_DIR: &str = "src/wire/generated/";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// The lines of `src` that are code: comment lines dropped, trailing `//` comments cut,
/// and (when `skip_test_modules`) inline `#[cfg(test)] mod x { ... }` blocks removed.
/// Relies on rustfmt's layout: a test module's closing brace sits alone at its indent.
fn code_lines(src: &str, skip_test_modules: bool) -> Vec<(usize, String)> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if skip_test_modules && trimmed.starts_with("#[cfg(test)]") {
            // Find the item it applies to.
            let mut j = i + 1;
            while j < lines.len() && (lines[j].trim().is_empty() || lines[j].trim_start().starts_with("#[")) {
                j += 1;
            }
            if j < lines.len() {
                let item = lines[j].trim_start();
                let is_inline_mod =
                    ["mod ", "pub mod ", "pub(crate) mod ", "pub(super) mod "].iter().any(|p| item.starts_with(p))
                        && item.trim_end().ends_with('{');
                if is_inline_mod {
                    let indent = &lines[j][..lines[j].len() - item.len()];
                    let close = format!("{indent}}}");
                    let mut k = j + 1;
                    while k < lines.len() && lines[k] != close {
                        k += 1;
                    }
                    i = k + 1;
                    continue;
                }
            }
        }
        if trimmed.starts_with("//") {
            i += 1;
            continue;
        }
        let code = match line.find("//") {
            // Keep `//` inside string literals (an even number of quotes before it).
            Some(pos) if line[..pos].matches('"').count().is_multiple_of(2) => &line[..pos],
            _ => line,
        };
        out.push((i + 1, code.to_string()));
        i += 1;
    }
    out
}

fn is_test_code(rel_path: &str) -> bool {
    rel_path.ends_with("/tests.rs") || rel_path.contains("/tests/") || rel_path.ends_with("/sim.rs")
}

#[test]
fn logic_does_no_io_and_reads_no_clock() {
    let mut files = Vec::new();
    rust_files(&root().join("src/logic"), &mut files);
    assert!(!files.is_empty(), "src/logic has Rust files");
    let mut violations = Vec::new();
    for f in &files {
        let r = rel(f);
        if is_test_code(&r) {
            continue;
        }
        let src = std::fs::read_to_string(f).unwrap();
        for (n, line) in code_lines(&src, true) {
            for word in FORBIDDEN_IN_LOGIC {
                if line.contains(word) {
                    violations.push(format!("{r}:{n}: `{word}` in: {}", line.trim()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "src/logic must stay sans-IO (STYLE.md §6.2):\n{}", violations.join("\n"));
}

/// Whether `line` uses the `unsafe` keyword (as a token, not inside a longer identifier).
fn has_unsafe_token(line: &str) -> bool {
    let bytes = line.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    line.match_indices("unsafe").any(|(i, _)| {
        let before = i == 0 || !ident(bytes[i - 1]);
        let after = i + 6 >= bytes.len() || !ident(bytes[i + 6]);
        before && after
    })
}

#[test]
fn unsafe_lives_only_in_the_allowed_files() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut violations = Vec::new();
    for f in &files {
        let r = rel(f);
        if UNSAFE_ALLOWED.contains(&r.as_str()) || r.starts_with(UNSAFE_ALLOWED_DIR) {
            continue;
        }
        let src = std::fs::read_to_string(f).unwrap();
        for (n, line) in code_lines(&src, false) {
            if has_unsafe_token(&line) {
                violations.push(format!("{r}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "`unsafe` is allowed only in {UNSAFE_ALLOWED:?} and {UNSAFE_ALLOWED_DIR} (STYLE.md §6.2):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_itself_sees_what_it_must() {
    let src = "use std::fs;\n// glommio in a comment\nlet x = 1; // libc here\n#[cfg(test)]\nmod tests {\n    fn f() { Instant::now(); }\n}\nasync fn g() {}\n";
    let lines: Vec<String> = code_lines(src, true).into_iter().map(|(_, l)| l).collect();
    let joined = lines.join("\n");
    assert!(joined.contains("std::fs") && joined.contains("async fn"));
    assert!(!joined.contains("glommio") && !joined.contains("libc") && !joined.contains("Instant::now"));
    assert!(has_unsafe_token("    unsafe { x }"));
    assert!(!has_unsafe_token("#![allow(unsafe_op_in_unsafe_fn)]"));
}
