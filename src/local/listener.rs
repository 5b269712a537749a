//! The local socket: `<session>/sockets/raylet` in a 0700 directory. One acceptor thread
//! blocks in `accept`, checks the peer with `SO_PEERCRED` (same uid or root), and forwards
//! the descriptor to shard 0, which hands each connection to its owner shard round robin.

use crate::metrics::ErrorKind;
use crate::shard::msg::Req;
use crate::shard::Shard;
use futures_lite::StreamExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::io::{IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::rc::Rc;

/// Binds the socket and starts accepting (shard 0).
pub fn start(shard: &Rc<Shard>) -> std::io::Result<()> {
    let path = shard.cfg.socket_path();
    let dir = path.parent().ok_or_else(|| std::io::Error::other("socket path has no directory"))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let (mut tx, mut rx) = futures_channel::mpsc::channel::<RawFd>(128);
    let metrics = shard.metrics.clone();
    std::thread::Builder::new().name("local-accept".into()).spawn(move || {
        let me = nix::unistd::geteuid().as_raw();
        loop {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("local accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
                Ok(c) if c.uid() == me || c.uid() == 0 => {}
                Ok(c) => {
                    metrics.shard(0).error(ErrorKind::LocalBadPeer);
                    tracing::warn!(uid = c.uid(), pid = c.pid(), "refusing local connection from another user");
                    continue;
                }
                Err(e) => {
                    metrics.shard(0).error(ErrorKind::LocalBadPeer);
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
                // Shard 0 is gone: the node is stopping.
                let _ = nix::unistd::close(fd);
                return;
            }
        }
    })?;
    let s = shard.clone();
    shard.keep(
        glommio::spawn_local(async move {
            let mut seq = 0u64;
            while let Some(fd) = rx.next().await {
                let owner = crate::shard::route::owner_of_connection(seq, s.n);
                seq += 1;
                if owner == s.id {
                    super::conn::adopt(&s, fd);
                } else if s.mesh.tell(owner, Req::AdoptLocal(fd)).await.is_err() {
                    let _ = nix::unistd::close(fd);
                }
            }
        })
        .detach(),
    );
    Ok(())
}
