//! Placement-group bundles on this node (RAY-NOTES.md §10.2): the raylet side of the
//! GCS's two-phase commit, on shard 0. The ledger and the lease revocations are in
//! `logic::lease::scheduler`; this only feeds it and logs.

use super::SchedService;
use crate::logic::bundles::{BundleKey, BundleSpec};
use std::rc::Rc;
use std::time::Instant;

impl SchedService {
    /// `PrepareBundleResources`: reserve all or nothing.
    pub(super) fn prepare_bundles(self: &Rc<Self>, bundles: &[BundleSpec]) -> bool {
        let ok = self.core.borrow_mut().handle_prepare_bundles(Instant::now(), bundles);
        self.drive();
        if !ok {
            tracing::debug!(n = bundles.len(), "bundle prepare refused: not enough resources");
        }
        ok
    }

    /// `CommitBundleResources`.
    pub(super) fn commit_bundles(self: &Rc<Self>, bundles: &[BundleSpec]) {
        self.core.borrow_mut().handle_commit_bundles(Instant::now(), bundles);
        self.drive();
    }

    /// `CancelResourceReserve`: the group's leases are cancelled and its workers killed
    /// before the bundle's resources return.
    pub(super) fn cancel_bundle(self: &Rc<Self>, key: BundleKey) {
        self.core.borrow_mut().handle_cancel_bundle(Instant::now(), key);
        self.drive();
    }

    /// `ReleaseUnusedBundles`.
    pub(super) fn release_unused_bundles(self: &Rc<Self>, in_use: &[BundleKey]) {
        let released = self.core.borrow_mut().handle_release_unused_bundles(Instant::now(), in_use);
        self.drive();
        if !released.is_empty() {
            tracing::info!(n = released.len(), "released bundles the GCS no longer uses");
        }
    }
}
