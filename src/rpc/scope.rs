//! What lives as long as one server connection. A handler whose effect must end with the
//! peer that asked for it (a worker lease held by a driver that vanished) registers a hook
//! on the connection's scope; the server runs the hooks once the connection has ended,
//! however it ended (peer closed, bad frame, I/O error, node stopping).
//!
//! The scope of the call being started is [`ConnScope::current`]: the server sets it
//! while it polls a handler for the first time, so a handler reads it in its synchronous
//! start (before its first `.await`); later it is gone. In-process calls have none.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

thread_local! {
    static CURRENT: RefCell<Option<Rc<ConnScope>>> = const { RefCell::new(None) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

type Hook = Box<dyn FnOnce()>;

/// One server connection's scope.
pub struct ConnScope {
    id: u64,
    hooks: RefCell<Vec<(&'static str, Hook)>>,
    closed: Cell<bool>,
}

impl std::fmt::Debug for ConnScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.hooks.borrow().iter().map(|(k, _)| *k).collect();
        f.debug_struct("ConnScope").field("id", &self.id).field("hooks", &keys).finish()
    }
}

impl ConnScope {
    /// A new scope with an id unique on this thread (shard).
    pub(super) fn new() -> Rc<Self> {
        let id = NEXT_ID.with(|n| {
            let id = n.get();
            n.set(id + 1);
            id
        });
        Rc::new(Self { id, hooks: RefCell::new(Vec::new()), closed: Cell::new(false) })
    }

    /// The scope of the call whose handler is starting, if it came over a connection.
    pub fn current() -> Option<Rc<Self>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// This connection's id, unique among this shard's connections.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Runs `hook` when the connection ends, unless a hook under `key` is registered
    /// already (then `hook` is dropped). On a scope that has ended, `hook` runs now.
    pub fn on_close_once(&self, key: &'static str, hook: impl FnOnce() + 'static) {
        if self.closed.get() {
            hook();
            return;
        }
        let mut hooks = self.hooks.borrow_mut();
        if !hooks.iter().any(|(k, _)| *k == key) {
            hooks.push((key, Box::new(hook)));
        }
    }

    /// Runs `f` with this scope as the current one.
    pub(super) fn enter<T>(self: &Rc<Self>, f: impl FnOnce() -> T) -> T {
        let prev = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let out = f();
        CURRENT.with(|c| *c.borrow_mut() = prev);
        out
    }

    /// The connection ended: runs the hooks, once.
    pub(super) fn close(&self) {
        self.closed.set(true);
        let hooks = std::mem::take(&mut *self.hooks.borrow_mut());
        for (_, hook) in hooks {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_set_only_inside_enter_and_hooks_run_once_per_key() {
        let s = ConnScope::new();
        assert!(ConnScope::current().is_none());
        let ran = Rc::new(Cell::new(0));
        s.enter(|| {
            let cur = ConnScope::current().expect("inside enter");
            assert_eq!(cur.id(), s.id());
            for _ in 0..3 {
                let r = ran.clone();
                cur.on_close_once("k", move || r.set(r.get() + 1));
            }
        });
        assert!(ConnScope::current().is_none());
        assert_eq!(ran.get(), 0);
        s.close();
        s.close();
        assert_eq!(ran.get(), 1);
        let r = ran.clone();
        s.on_close_once("late", move || r.set(r.get() + 10));
        assert_eq!(ran.get(), 11, "a hook on an ended scope runs at once");
        assert_ne!(ConnScope::new().id(), s.id());
    }
}
