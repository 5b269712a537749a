//! Local trust: what a node and the CLI accept from the local file system. A token file
//! that group or others may read is refused with its mode named; session, log and
//! socket directories are private (0700); and the CLI follows `<temp-dir>/session_latest`
//! only when the temp dir, the link and the session it names belong to the caller.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn a_token_file_that_group_or_others_may_read_is_refused() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let token = dir.path().join("token");
        std::fs::write(&token, "a-private-token\n").expect("write token");
        let t = token.display().to_string();
        for mode in [0o644, 0o640, 0o604] {
            set_mode(&token, mode);
            let opts = NodeOpts::head().args(["--auth-token-file", t.as_str()]);
            let (st, out, err) = dir.start_expect_failure(&opts, Duration::from_secs(60));
            assert!(!st.success() && !out.contains("raylet ready"), "started with a {mode:o} token file: {out}");
            assert!(err.contains(&format!("{mode:04o}")) && err.contains(&t), "the error names file and mode:\n{err}");
            assert!(err.contains("chmod 600"), "the error says how to fix it:\n{err}");
        }
        set_mode(&token, 0o600);
        let head = dir.start(&NodeOpts::head().args(["--auth-token-file", t.as_str()]));
        // The CLI applies the same rule to the token file it is given.
        let addr = head.ready.gcs_address.to_string();
        let ok = dir.cli(&["status", "--address", &addr, "--auth-token-file", &t]);
        assert!(ok.status.success(), "status with a private token file: {}", ok.stderr);
        set_mode(&token, 0o644);
        let refused = dir.cli(&["status", "--address", &addr, "--auth-token-file", &t]);
        assert!(!refused.status.success() && refused.stderr.contains("0644"), "CLI: {}", refused.stderr);
        head.assert_no_panic();
    });
}

#[test]
fn session_log_and_socket_directories_are_private() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let joiner = dir.start(&NodeOpts::join(head.ready.gcs_address));
        for node in [&head, &joiner] {
            let s = &node.ready.session_dir;
            for d in [s.clone(), s.join("logs"), s.join("sockets")] {
                let mode = std::fs::metadata(&d).expect("stat").mode() & 0o777;
                assert_eq!(mode, 0o700, "{} has mode {mode:o}", d.display());
            }
        }
    });
}

/// Runs `f` with `path` (not what it points to) owned by `uid`, then gives it back.
fn owned_by(path: &Path, uid: u32, f: impl FnOnce()) {
    let me = nix::unistd::geteuid();
    std::os::unix::fs::lchown(path, Some(uid), None).expect("lchown");
    f();
    std::os::unix::fs::lchown(path, Some(me.as_raw()), None).expect("lchown back");
}

#[test]
fn the_cli_does_not_follow_a_temp_dir_or_session_latest_of_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let file = dir.path().join("payload");
        std::fs::write(&file, b"trusted").expect("write");
        let f = file.display().to_string();
        assert!(dir.try_status().is_ok(), "status through our own session_latest");
        let latest = dir.path().join("session_latest");
        let other = 4242;
        for (what, path) in [("temp dir", dir.path()), ("link", latest.as_path()), ("session", &head.ready.session_dir)]
        {
            owned_by(path, other, || {
                for args in [vec!["status"], vec!["object", "put", f.as_str()]] {
                    let out = dir.cli(&args);
                    assert!(!out.status.success(), "{what} of uid {other}: `{args:?}` must refuse it");
                    assert!(
                        out.stderr.contains("refusing to trust") && out.stderr.contains("uid 4242"),
                        "{what}: the error says whose it is:\n{}",
                        out.stderr
                    );
                }
                // With the address and the token given, nothing is read through it.
                let addr = head.ready.gcs_address.to_string();
                let token = head.ready.token();
                let out = dir.cli_with_env(&["status", "--address", &addr], &[("RAYLET_AUTH_TOKEN", &token)]);
                assert!(out.status.success(), "{what}: status with --address: {}", out.stderr);
            });
        }
        assert!(dir.try_status().is_ok(), "status works again once everything is ours");
        head.assert_no_panic();
    });
}
