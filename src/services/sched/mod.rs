//! The scheduling plane: worker pool, resources, leases, placement-group bundles.

pub mod msg;
pub mod rpc;
