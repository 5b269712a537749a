//! Logging: `tracing` to stderr and, for a running node, to `<session>/logs/raylet.log`.
//! The filter comes from `RAYLET_LOG` (e.g. `debug`, `raylet::rpc=trace`), default `info`.

use std::path::Path;
use std::sync::Arc;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Logging for a node: stderr plus the session log file.
pub fn init_node(logs_dir: &Path) {
    let filter = EnvFilter::try_from_env("RAYLET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(logs_dir.join("raylet.log"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_thread_names(true).with_ansi(false);
    let _ = match file {
        Ok(f) => builder.with_writer(std::io::stderr.and(Arc::new(f))).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Logging for short CLI commands: warnings and errors to stderr.
pub fn init_cli() {
    let filter = EnvFilter::try_from_env("RAYLET_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).without_time().try_init();
}
