//! Wire ↔ domain conversion for the scheduling plane, with the validation of peer input:
//! malformed ids, negative or non-finite quantities, oversized maps and unknown enum values
//! become `InvalidArgument` statuses here, before anything reaches shard 0.

use super::msg::{LeaseOutcome, RemoteUpdate};
use crate::ids::{JobId, LeaseId, NodeId, ObjectId, PlacementGroupId, WorkerId};
use crate::logic::bundles::{format_indexed, format_wildcard, parse_formatted, BundleKey, BundleSpec, BUNDLE_RESOURCE};
use crate::logic::lease::policy::Strategy;
use crate::logic::lease::queue::{CancelReason, LeaseRequest};
use crate::logic::resources::{FixedPoint, ResourceSet};
use crate::rpc::Status;
use crate::wire::rpc::*;
use prost::Message;
use std::collections::HashMap;

/// Most entries accepted in one resource map.
const MAX_RESOURCES: usize = 1024;
/// Longest resource name accepted.
const MAX_NAME: usize = 512;
/// What a bundle lease adds on the bundle marker resource (Ray: 0.001).
const BUNDLE_MARKER: FixedPoint = FixedPoint(10);

fn bad(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg)
}

/// A resource map from a peer: names non-empty and bounded, quantities finite and ≥ 0.
pub(super) fn resource_set(map: &HashMap<String, f64>, what: &str) -> Result<ResourceSet, Status> {
    if map.len() > MAX_RESOURCES {
        return Err(bad(format!("{what}: {} resources (max {MAX_RESOURCES})", map.len())));
    }
    for (k, v) in map {
        if k.is_empty() || k.len() > MAX_NAME {
            return Err(bad(format!("{what}: resource name of length {}", k.len())));
        }
        if !v.is_finite() || *v < 0.0 {
            return Err(bad(format!("{what}: {k} = {v} is not a non-negative quantity")));
        }
    }
    Ok(ResourceSet::from_f64_map(map.iter().map(|(k, v)| (k.clone(), *v))))
}

/// A placement-group bundle id.
pub(super) fn bundle_key(b: Option<&BundleId>) -> Result<BundleKey, Status> {
    let b = b.ok_or_else(|| bad("bundle id is missing"))?;
    let pg = PlacementGroupId::from_bytes(&b.placement_group_id).map_err(|e| bad(e.to_string()))?;
    if b.bundle_index < -1 {
        return Err(bad(format!("bundle index {} is invalid", b.bundle_index)));
    }
    Ok(BundleKey { pg, index: b.bundle_index })
}

/// A bundle to reserve: a concrete index (≥ 0) and its resources.
pub(super) fn bundle_spec(b: &Bundle) -> Result<BundleSpec, Status> {
    let key = bundle_key(b.bundle_id.as_ref())?;
    if key.index < 0 {
        return Err(bad("a reserved bundle needs an index ≥ 0"));
    }
    let unit_resources = resource_set(&b.unit_resources, "bundle")?;
    if unit_resources.iter().any(|(k, _)| parse_formatted(k).is_some()) {
        return Err(bad("bundle resources must use plain names"));
    }
    Ok(BundleSpec { key, unit_resources })
}

/// The resources a lease in bundle `key` asks for: every plain name rewritten to the
/// bundle's formatted name (indexed, or wildcard for index −1), plus a share of the bundle
/// marker so a lease without resources still lands on the bundle's node.
fn rewrite_for_bundle(plain: &ResourceSet, key: BundleKey) -> ResourceSet {
    let name = |r: &str| match key.index {
        -1 => format_wildcard(r, key.pg),
        i => format_indexed(r, i, key.pg),
    };
    let mut out = ResourceSet::new();
    for (k, v) in plain.iter() {
        let k = if parse_formatted(k).is_some() { k.to_string() } else { name(k) };
        let cur = out.get(&k);
        out.set(k, cur + v);
    }
    let marker = name(BUNDLE_RESOURCE);
    if out.get(&marker).is_zero() {
        out.set(marker, BUNDLE_MARKER);
    }
    out
}

/// The scheduling-class shape of a lease spec (a backlog report's key).
pub(super) fn shape(spec: &LeaseSpec) -> Result<ResourceSet, Status> {
    let resources = resource_set(&spec.required_resources, "required_resources")?;
    Ok(match &spec.bundle {
        Some(b) if !b.placement_group_id.is_empty() => rewrite_for_bundle(&resources, bundle_key(Some(b))?),
        _ => resources,
    })
}

/// A `RequestWorkerLease` as the queue sees it.
pub(super) fn lease_request(req: &RequestWorkerLeaseRequest) -> Result<LeaseRequest, Status> {
    let spec = req.lease_spec.as_ref().ok_or_else(|| bad("lease_spec is missing"))?;
    let id = LeaseId::from_bytes(&spec.lease_id).map_err(|e| bad(e.to_string()))?;
    if id.is_nil() {
        return Err(bad("lease id must not be nil"));
    }
    let job = if spec.job_id.is_empty() {
        JobId::NIL
    } else {
        JobId::from_bytes(&spec.job_id).map_err(|e| bad(e.to_string()))?
    };
    let owner = spec
        .caller_address
        .as_ref()
        .filter(|a| !a.worker_id.is_empty())
        .map(|a| WorkerId::from_bytes(&a.worker_id))
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let owner_node = spec
        .caller_address
        .as_ref()
        .filter(|a| !a.node_id.is_empty())
        .map(|a| NodeId::from_bytes(&a.node_id))
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let strategy = match SchedulingStrategyKind::try_from(spec.strategy) {
        Ok(SchedulingStrategyKind::Default) => Strategy::Default,
        Ok(SchedulingStrategyKind::Spread) => Strategy::Spread,
        Ok(SchedulingStrategyKind::NodeAffinity) => Strategy::NodeAffinity {
            node: NodeId::from_bytes(&spec.node_affinity_node_id).map_err(|e| bad(format!("affinity node: {e}")))?,
            soft: spec.node_affinity_soft,
        },
        Err(_) => return Err(bad(format!("unknown scheduling strategy {}", spec.strategy))),
    };
    let mut resources = resource_set(&spec.required_resources, "required_resources")?;
    let bundle = match &spec.bundle {
        Some(b) if !b.placement_group_id.is_empty() => Some(bundle_key(Some(b))?),
        _ => None,
    };
    if let Some(key) = bundle {
        resources = rewrite_for_bundle(&resources, key);
    }
    if spec.dependencies.len() > MAX_LEASE_DEPS {
        return Err(bad(format!("{} dependencies; at most {MAX_LEASE_DEPS}", spec.dependencies.len())));
    }
    let mut deps = Vec::with_capacity(spec.dependencies.len());
    let mut seen = std::collections::HashSet::new();
    for d in &spec.dependencies {
        let id = ObjectId::from_bytes(d).map_err(|e| bad(format!("dependency: {e}")))?;
        if seen.insert(id) {
            deps.push(id);
        }
    }
    Ok(LeaseRequest {
        id,
        job,
        owner,
        owner_node,
        resources,
        strategy,
        bundle,
        grant_or_reject: req.grant_or_reject,
        conn: None,
        deps,
    })
}

/// The most object arguments one lease may name.
pub const MAX_LEASE_DEPS: usize = 4096;

/// Ray's failure type for a cancel reason.
fn failure_type(r: CancelReason) -> LeaseFailureType {
    match r {
        CancelReason::Intended => LeaseFailureType::CancelledIntended,
        CancelReason::PlacementGroupRemoved => LeaseFailureType::CancelledPlacementGroupRemoved,
        CancelReason::Unschedulable => LeaseFailureType::CancelledUnschedulable,
        // Answered with a ResourceExhausted status instead (`rpc::request_worker_lease`).
        CancelReason::QueueFull => LeaseFailureType::SchedulingFailed,
    }
}

/// The wire reply for a lease outcome.
pub(super) fn lease_reply(outcome: LeaseOutcome, node: NodeId) -> RequestWorkerLeaseReply {
    let mut reply = RequestWorkerLeaseReply::default();
    match outcome {
        LeaseOutcome::Granted { worker, addr, pid, mapping } => {
            reply.worker_address = Some(Address {
                node_id: node.to_vec(),
                ip_address: addr.ip().to_string(),
                port: i32::from(addr.port()),
                worker_id: worker.to_vec(),
            });
            reply.worker_pid = pid;
            reply.resource_mapping = mapping
                .into_iter()
                .map(|(name, ids)| ResourceMapEntry {
                    name,
                    resource_ids: ids.into_iter().map(|(i, q)| ResourceId { index: i as i64, quantity: q }).collect(),
                })
                .collect();
        }
        LeaseOutcome::Spillback { node, addr } => {
            reply.retry_at_raylet_address = Some(Address {
                node_id: node.to_vec(),
                ip_address: addr.ip().to_string(),
                port: i32::from(addr.port()),
                worker_id: Vec::new(),
            });
        }
        LeaseOutcome::Rejected => reply.rejected = true,
        LeaseOutcome::Cancelled { reason, message } => {
            reply.canceled = true;
            reply.failure_type = failure_type(reason) as i32;
            reply.scheduling_failure_message = message;
        }
    }
    reply
}

/// Decodes an `UpdateResourceUsage` batch.
pub(super) fn remote_updates(bytes: &[u8]) -> Result<(i64, Vec<RemoteUpdate>), Status> {
    let batch = ResourceUsageBroadcastData::decode(bytes).map_err(|e| bad(format!("undecodable batch: {e}")))?;
    let mut out = Vec::with_capacity(batch.batch.len());
    for u in batch.batch {
        match u.update {
            Some(resource_update::Update::Data(d)) => out.push(RemoteUpdate::Data {
                node: NodeId::from_bytes(&d.node_id).map_err(|e| bad(e.to_string()))?,
                total: resource_set(&d.resources_total, "resources_total")?,
                available: resource_set(&d.resources_available, "resources_available")?,
                pulls_queued: d.object_pulls_queued,
                should_global_gc: d.should_global_gc,
            }),
            Some(resource_update::Update::Change(c)) => out.push(RemoteUpdate::Change {
                node: NodeId::from_bytes(&c.node_id).map_err(|e| bad(e.to_string()))?,
                updated: resource_set(&c.updated_resources, "updated_resources")?,
                deleted: c.deleted_resources,
            }),
            None => return Err(bad("a batch entry carries no update")),
        }
    }
    Ok((batch.seq_no, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LeaseSpec {
        LeaseSpec {
            lease_id: vec![1; LeaseId::LEN],
            required_resources: [("CPU".to_string(), 1.0)].into_iter().collect(),
            ..Default::default()
        }
    }

    fn req(spec: LeaseSpec) -> RequestWorkerLeaseRequest {
        RequestWorkerLeaseRequest { lease_spec: Some(spec), ..Default::default() }
    }

    #[test]
    fn bad_lease_requests_are_refused() {
        assert!(lease_request(&RequestWorkerLeaseRequest::default()).is_err(), "no spec");
        let mut s = spec();
        s.lease_id = vec![1, 2];
        assert!(lease_request(&req(s)).is_err(), "short id");
        let mut s = spec();
        s.lease_id = vec![0; LeaseId::LEN];
        assert!(lease_request(&req(s)).is_err(), "nil id");
        for v in [-1.0, f64::NAN, f64::INFINITY] {
            let mut s = spec();
            s.required_resources.insert("CPU".into(), v);
            assert!(lease_request(&req(s)).is_err(), "quantity {v}");
        }
        let mut s = spec();
        s.strategy = 42;
        assert!(lease_request(&req(s)).is_err(), "unknown strategy");
        let mut s = spec();
        s.strategy = SchedulingStrategyKind::NodeAffinity as i32;
        assert!(lease_request(&req(s)).is_err(), "affinity without a node");
        let mut s = spec();
        s.bundle = Some(BundleId { placement_group_id: vec![1; 3], bundle_index: 0 });
        assert!(lease_request(&req(s)).is_err(), "short group id");
        let mut s = spec();
        s.dependencies = vec![vec![3; 5]];
        assert!(lease_request(&req(s)).is_err(), "short dependency id");
        let mut s = spec();
        s.dependencies = vec![vec![3; ObjectId::LEN]; MAX_LEASE_DEPS + 1];
        assert!(lease_request(&req(s)).is_err(), "too many dependencies");
        let mut s = spec();
        s.dependencies = vec![vec![3; ObjectId::LEN], vec![4; ObjectId::LEN], vec![3; ObjectId::LEN]];
        let deps = lease_request(&req(s)).unwrap().deps;
        assert_eq!(deps, vec![ObjectId([3; ObjectId::LEN]), ObjectId([4; ObjectId::LEN])], "repeats dropped");
    }

    #[test]
    fn bundle_leases_ask_for_formatted_resources_and_the_marker() {
        let pg = PlacementGroupId([5; PlacementGroupId::LEN]);
        let mut s = spec();
        s.bundle = Some(BundleId { placement_group_id: pg.to_vec(), bundle_index: 1 });
        let r = lease_request(&req(s)).unwrap();
        assert_eq!(r.bundle, Some(BundleKey { pg, index: 1 }));
        assert_eq!(r.resources.get(&format_indexed("CPU", 1, pg)), FixedPoint::ONE);
        assert_eq!(r.resources.get(&format_indexed("bundle", 1, pg)), BUNDLE_MARKER);
        assert_eq!(r.resources.len(), 2);
        let mut s = spec();
        s.bundle = Some(BundleId { placement_group_id: pg.to_vec(), bundle_index: -1 });
        let r = lease_request(&req(s)).unwrap();
        assert_eq!(r.resources.get(&format_wildcard("CPU", pg)), FixedPoint::ONE);
    }

    #[test]
    fn undecodable_or_empty_broadcast_entries_are_refused() {
        assert!(remote_updates(&[0xff, 0xff]).is_err());
        let empty = ResourceUsageBroadcastData { seq_no: 1, batch: vec![ResourceUpdate { update: None }] };
        assert!(remote_updates(&empty.encode_to_vec()).is_err());
    }
}
