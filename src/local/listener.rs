//! The local sockets: `<session>/sockets/raylet` (registration and everything else) and
//! one `<session>/sockets/raylet.<shard>` per shard (store operations on that shard's
//! objects, with no cross-shard hop), all in a 0700 directory.
//!
//! Each socket has one acceptor thread that blocks in `accept`, checks the peer with
//! `SO_PEERCRED` (same uid or root), and forwards the descriptor to its shard: the main
//! socket's go to shard 0, which hands each connection to an owner shard round robin; a
//! per-shard socket's go straight to that shard. A failed accept pauses the thread
//! (doubling while the process is out of fds, see `rpc::admission::AcceptPacer`).

use super::conn::SocketKind;
use crate::config::NodeConfig;
use crate::metrics::{ErrorKind, Listener, Metrics};
use crate::shard::msg::Req;
use crate::shard::Shard;
use futures_lite::StreamExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::{IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The per-shard socket of shard `i`.
pub fn shard_socket_path(cfg: &NodeConfig, i: usize) -> PathBuf {
    let main = cfg.socket_path();
    main.with_file_name(format!("raylet.{i}"))
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("socket path has no directory"))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Starts the acceptor thread for `listener`; returns the stream of checked descriptors.
fn accept_thread(
    listener: UnixListener,
    metrics: Metrics,
    shard: usize,
    which: Listener,
) -> std::io::Result<futures_channel::mpsc::Receiver<RawFd>> {
    let (mut tx, rx) = futures_channel::mpsc::channel::<RawFd>(128);
    let mut pacer = crate::rpc::admission::AcceptPacer::new(which, metrics.clone(), shard);
    std::thread::Builder::new().name(format!("local-accept-{shard}")).spawn(move || {
        let me = nix::unistd::geteuid().as_raw();
        loop {
            let stream = match listener.accept() {
                Ok((s, _)) => {
                    pacer.succeeded();
                    s
                }
                Err(e) => {
                    std::thread::sleep(pacer.failed(&e));
                    continue;
                }
            };
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
                Ok(c) if c.uid() == me || c.uid() == 0 => {}
                Ok(c) => {
                    metrics.shard(shard).error(ErrorKind::LocalBadPeer);
                    tracing::warn!(uid = c.uid(), pid = c.pid(), "refusing local connection from another user");
                    continue;
                }
                Err(e) => {
                    metrics.shard(shard).error(ErrorKind::LocalBadPeer);
                    tracing::warn!("cannot read peer credentials: {e}");
                    continue;
                }
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let fd = stream.into_raw_fd();
            let sent = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| tx.poll_ready(cx)))
                .and_then(|_| tx.start_send(fd));
            if sent.is_err() {
                // The shard is gone: the node is stopping.
                let _ = nix::unistd::close(fd);
                return;
            }
        }
    })?;
    Ok(rx)
}

/// Binds the main socket (shard 0).
pub fn start(shard: &Rc<Shard>) -> std::io::Result<()> {
    let listener = bind(&shard.cfg.socket_path())?;
    let mut rx = accept_thread(listener, shard.metrics.clone(), 0, Listener::Local)?;
    let s = shard.clone();
    shard.keep(
        glommio::spawn_local(async move {
            let mut seq = 0u64;
            while let Some(fd) = rx.next().await {
                let owner = crate::shard::route::owner_of_connection(seq, s.n);
                seq += 1;
                if owner == s.id {
                    super::conn::adopt(&s, fd, SocketKind::Main);
                } else if s.mesh.tell(owner, Req::AdoptLocal(fd)).await.is_err() {
                    let _ = nix::unistd::close(fd);
                }
            }
        })
        .detach(),
    );
    Ok(())
}

/// Binds this shard's own socket.
pub fn start_shard_socket(shard: &Rc<Shard>) -> std::io::Result<()> {
    let listener = bind(&shard_socket_path(&shard.cfg, shard.id.index()))?;
    let mut rx = accept_thread(listener, shard.metrics.clone(), shard.id.index(), Listener::LocalShard)?;
    let s = shard.clone();
    shard.keep(
        glommio::spawn_local(async move {
            while let Some(fd) = rx.next().await {
                super::conn::adopt(&s, fd, SocketKind::Shard);
            }
        })
        .detach(),
    );
    Ok(())
}
