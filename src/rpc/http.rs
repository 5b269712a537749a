//! A minimal HTTP/1.1 endpoint for Prometheus scrapes: `GET /metrics` answers the text
//! exposition, anything else 404. One request per connection; requests are capped at 8 KiB.
//!
//! A scrape never authenticates, so it counts as a connection before its hello for its
//! whole (at most 5 s) life, under the node-wide caps of [`super::admission`].

use super::admission::ShardAdmission;
use crate::metrics::Listener;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

/// Serves `render()` at `/metrics` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, render: Rc<dyn Fn() -> String>, admission: Rc<ShardAdmission>) {
    let mut pacer = admission.pacer(Listener::Metrics);
    loop {
        match listener.accept().await {
            Ok(s) => {
                pacer.succeeded();
                let fd = std::os::unix::io::AsRawFd::as_raw_fd(&s);
                let Some(ticket) = admission.admit(fd, Listener::Metrics, s.peer_addr().ok()) else { continue };
                let render = render.clone();
                glommio::spawn_local(async move {
                    let _ = glommio::timer::timeout(Duration::from_secs(5), async move {
                        answer(s, &*render).await;
                        Ok(())
                    })
                    .await;
                    drop(ticket);
                })
                .detach();
            }
            Err(e) => {
                let pause = pacer.failed_glommio(e);
                if !pause.is_zero() {
                    glommio::timer::sleep(pause).await;
                }
            }
        }
    }
}

async fn answer(mut s: TcpStream, render: &dyn Fn() -> String) {
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if req.len() > 8192 {
            let _ = s
                .write_all(
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    let _ = s.write_all(response.as_bytes()).await;
    let _ = s.close().await;
}
