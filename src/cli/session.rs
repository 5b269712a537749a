//! Session directories, the auth token, and how CLI commands find the local cluster.
//!
//! Layout: `<temp-dir>/session_<unix-ms>_<pid>/{sockets/raylet, logs/, auth_token,
//! gcs_address}`; `<temp-dir>/session_latest` points at the newest head's session.

use crate::config::NodeConfig;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the symlink to the newest head session.
pub const LATEST: &str = "session_latest";

/// Creates this node's session directory and settles the auth token.
pub fn prepare(cfg: &mut NodeConfig, token_file: Option<&Path>) -> Result<(), String> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = cfg.temp_dir.join(format!("session_{ms}_{}", std::process::id()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir.join("logs"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    cfg.session_dir = dir;
    cfg.auth_token = resolve_token(cfg, token_file)?;
    Ok(())
}

fn resolve_token(cfg: &NodeConfig, token_file: Option<&Path>) -> Result<String, String> {
    if let Ok(t) = std::env::var("RAYLET_AUTH_TOKEN") {
        if !t.is_empty() {
            return Ok(t);
        }
    }
    if let Some(f) = token_file {
        return read_token(f);
    }
    if cfg.head {
        let mut b = [0u8; 32];
        crate::ids::os_random(&mut b);
        let token = crate::ids::hex_encode(&b);
        let path = cfg.session_dir.join("auth_token");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, token.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        return Ok(token);
    }
    read_token(&cfg.temp_dir.join(LATEST).join("auth_token"))
        .map_err(|e| format!("{e} (set RAYLET_AUTH_TOKEN or --auth-token-file to join a cluster started elsewhere)"))
}

/// Reads a token file (trimmed).
pub fn read_token(path: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path).map_err(|e| format!("cannot read auth token {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(format!("auth token file {} is empty", path.display()));
    }
    Ok(t)
}

/// On the head, once ready: record the GCS address and point `session_latest` here.
pub fn publish_head(cfg: &NodeConfig, gcs_address: &str) {
    let _ = std::fs::write(cfg.session_dir.join("gcs_address"), gcs_address);
    let latest = cfg.temp_dir.join(LATEST);
    let tmp = cfg.temp_dir.join(format!(".{LATEST}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::os::unix::fs::symlink(&cfg.session_dir, &tmp).is_ok() {
        if let Err(e) = std::fs::rename(&tmp, &latest) {
            tracing::warn!("cannot update {}: {e}", latest.display());
        }
    }
}

/// What a CLI command needs to reach a cluster.
#[derive(Debug, Clone)]
pub struct ClusterRef {
    /// The GCS.
    pub gcs: std::net::SocketAddr,
    /// The auth token.
    pub token: String,
    /// The newest head session, when found locally.
    pub session_dir: Option<PathBuf>,
}

/// Finds the cluster: `--address` if given, else `<temp-dir>/session_latest`. The token:
/// `RAYLET_AUTH_TOKEN`, else `--auth-token-file`, else the local session's file.
pub fn find_cluster(address: Option<&str>, temp_dir: &Path, token_file: Option<&Path>) -> Result<ClusterRef, String> {
    let latest = temp_dir.join(LATEST);
    let session_dir = std::fs::canonicalize(&latest).ok();
    let gcs = match address {
        Some(a) => a.to_string(),
        None => std::fs::read_to_string(latest.join("gcs_address"))
            .map_err(|e| format!("no local cluster found under {} ({e}); pass --address", temp_dir.display()))?,
    };
    let gcs = resolve_addr(gcs.trim())?;
    let token = match std::env::var("RAYLET_AUTH_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => match token_file {
            Some(f) => read_token(f)?,
            None => read_token(&latest.join("auth_token"))?,
        },
    };
    Ok(ClusterRef { gcs, token, session_dir })
}

/// Parses `host:port`, resolving a host name if needed.
pub fn resolve_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("bad address {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {s:?} resolves to nothing"))
}
