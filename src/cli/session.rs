//! Session directories, the auth token, and how CLI commands find the local cluster.
//!
//! Layout: `<temp-dir>/session_<unix-ms>_<pid>/{sockets/raylet, logs/, auth_token,
//! gcs_address}`; `<temp-dir>/session_latest` points at the newest head's session.
//!
//! Local trust: session and log directories are 0700 (and a temp dir this creates too);
//! a token file that group or others may access is refused; and the CLI (and a joiner
//! looking for the head's token) follows `<temp-dir>/session_latest` only when the temp
//! dir, the link and the session it names belong to the caller, since whoever controls
//! them would learn the token read there, or receive the client's objects.

use crate::config::NodeConfig;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the symlink to the newest head session.
pub const LATEST: &str = "session_latest";

/// Creates this node's session directory and settles the auth token.
pub fn prepare(cfg: &mut NodeConfig, token_file: Option<&Path>) -> Result<(), String> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = cfg.temp_dir.join(format!("session_{ms}_{}", std::process::id()));
    // The session dir's parents that this creates (the temp dir) get 0700 too.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
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
    trusted_latest(&cfg.temp_dir)
        .and_then(|latest| read_token(&latest.join("auth_token")))
        .map_err(|e| format!("{e} (set RAYLET_AUTH_TOKEN or --auth-token-file to join a cluster started elsewhere)"))
}

/// Reads a token file (trimmed). A file that group or others may read or write is
/// refused: the token is the cluster's only credential.
pub fn read_token(path: &Path) -> Result<String, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read auth token {}: {e}", path.display()))?;
    let mode = f.metadata().map_err(|e| format!("cannot stat auth token {}: {e}", path.display()))?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "auth token file {} has mode {mode:04o}: group or others may read it; make it private (chmod 600)",
            path.display()
        ));
    }
    let t = std::io::read_to_string(f).map_err(|e| format!("cannot read auth token {}: {e}", path.display()))?;
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
    let env_token = std::env::var("RAYLET_AUTH_TOKEN").ok().filter(|t| !t.is_empty());
    let latest = match (address, &env_token, token_file) {
        // Nothing is read through session_latest: a foreign one is simply not used.
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => trusted_latest(temp_dir).unwrap_or_else(|_| PathBuf::new()),
        _ => trusted_latest(temp_dir)?,
    };
    let session_dir = std::fs::canonicalize(&latest).ok().filter(|_| !latest.as_os_str().is_empty());
    let gcs = match address {
        Some(a) => a.to_string(),
        None => std::fs::read_to_string(latest.join("gcs_address"))
            .map_err(|e| format!("no local cluster found under {} ({e}); pass --address", temp_dir.display()))?,
    };
    let gcs = resolve_addr(gcs.trim())?;
    let token = match env_token {
        Some(t) => t,
        None => match token_file {
            Some(f) => read_token(f)?,
            None => read_token(&latest.join("auth_token"))?,
        },
    };
    Ok(ClusterRef { gcs, token, session_dir })
}

/// `<temp-dir>/session_latest`, once `temp_dir`, the link and the session directory it
/// points at are known to belong to the caller's effective uid (root included: a root CLI
/// must not follow another user's link either). Missing paths pass: reading through them
/// then fails with its own message.
pub fn trusted_latest(temp_dir: &Path) -> Result<PathBuf, String> {
    let me = nix::unistd::geteuid().as_raw();
    let latest = temp_dir.join(LATEST);
    for path in [temp_dir, latest.as_path()] {
        // The path itself (a link, maybe), then what it resolves to.
        let checks = [
            (path.to_path_buf(), std::fs::symlink_metadata(path)),
            (std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()), std::fs::metadata(path)),
        ];
        for (shown, meta) in checks {
            let Ok(meta) = meta else { continue };
            if meta.uid() != me {
                return Err(format!(
                    "refusing to trust {}: it belongs to uid {}, not to you (uid {me}); pass --address and \
                     the auth token, or use a --temp-dir of your own",
                    shown.display(),
                    meta.uid()
                ));
            }
        }
    }
    Ok(latest)
}

/// Parses `host:port`, resolving a host name if needed.
pub fn resolve_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("bad address {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {s:?} resolves to nothing"))
}
