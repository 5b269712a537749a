//! Runs the scheduler: after every input, drain its actions and perform them (replies,
//! spawns, kills, reaping RPCs), then re-arm its single timer (quinn's
//! `ConnectionDriver` shape). No `RefCell` borrow of the scheduler is held while an action
//! is performed or across an `.await`.

use super::SchedService;
use crate::logic::lease::scheduler::SchedAction;
use std::rc::Rc;
use std::time::Instant;

/// The scheduler's timer fired.
pub(super) fn fire(s: &Rc<SchedService>, now: Instant) {
    s.core.borrow_mut().handle_timeout(now);
    s.drive();
}

impl SchedService {
    /// Drains the scheduler's actions and performs them; re-arms the timer.
    pub(super) fn drive(self: &Rc<Self>) {
        loop {
            let action = self.core.borrow_mut().poll_action();
            let Some(action) = action else { break };
            match action {
                SchedAction::Reply { lease, decision } => self.reply(lease, decision),
                SchedAction::Infeasible { lease } => self.report_infeasible(lease),
                SchedAction::StartProcess { token } => self.start_worker(token),
                SchedAction::Kill { pid, worker, force } => self.kill_worker(pid, worker, force),
                SchedAction::RequestExit { worker } => self.request_exit(worker),
                SchedAction::FetchArgs { lease, deps } => self.fetch_args(lease, deps),
                SchedAction::ReleaseArgs { lease } => self.release_args(lease),
            }
        }
        self.timer.rearm(self.core.borrow().poll_timeout());
    }
}
