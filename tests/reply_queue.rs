//! A connection's reply queue is bounded (issue 11, item 9). A server's read loop sends
//! inline replies itself; while another task's write is stuck on a peer that does not
//! read, those replies queue behind it. Before, the queue grew without bound (a peer
//! pipelining requests and never reading made the node hold every reply); now a sender
//! past `MAX_QUEUED_BYTES` waits for room, which stops the read loop, and a closed
//! connection fails the waiting senders.
//!
//! In-process, on one glommio executor, with a writer that never completes a write.

use futures_lite::AsyncWrite;
use raylet::rpc::conn::{FrameSender, OutFrame, MAX_QUEUED_BYTES};
use raylet::rpc::frame::FrameHeader;
use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// A socket whose peer never reads: every write stays pending. It keeps the writer's
/// waker, as a socket does (a task nobody can wake is dropped by the executor).
#[derive(Default)]
struct NeverWrites(Option<std::task::Waker>);

impl AsyncWrite for NeverWrites {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
        self.0 = Some(cx.waker().clone());
        Poll::Pending
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0 = Some(cx.waker().clone());
        Poll::Pending
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn reply() -> OutFrame {
    OutFrame::new(FrameHeader::request(1, 1, 7, 0), &vec![0u8; 1 << 20])
}

/// Lets every task that can run do so: parking on a timer runs the executor's ready
/// tasks first (no task here waits for anything but the stuck writer and the queue).
async fn let_others_run() {
    for _ in 0..5 {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[test]
fn senders_wait_for_room_once_the_queue_holds_its_limit_and_fail_when_it_closes() {
    let ex = glommio::LocalExecutorBuilder::default().spawn(|| async {
        let tx = FrameSender::new(NeverWrites::default(), |_| {});
        // This send takes the writer and never finishes: everything after it queues.
        let t = tx.clone();
        glommio::spawn_local(async move {
            let _ = t.send(reply()).await;
        })
        .detach();
        let_others_run().await;

        let (queued, ended) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(false)));
        let (t, q, e) = (tx.clone(), queued.clone(), ended.clone());
        glommio::spawn_local(async move {
            for _ in 0..64 {
                if t.send(reply()).await.is_err() {
                    break;
                }
                q.set(q.get() + 1);
            }
            e.set(true);
        })
        .detach();
        let_others_run().await;
        let fit = MAX_QUEUED_BYTES / reply().head.len();
        assert_eq!(queued.get(), fit - 1, "the stuck frame and {} queued ones fill the queue", fit - 1);
        assert!(!ended.get(), "the next sender waits for room");

        tx.close().await;
        let_others_run().await;
        assert!(ended.get(), "closing the connection fails the waiting sender");
        assert_eq!(queued.get(), fit - 1, "nothing more was queued");
    });
    ex.expect("start an executor").join().expect("the test body");
}
