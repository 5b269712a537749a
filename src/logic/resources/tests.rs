use super::*;

fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    ResourceSet::from_f64_map(pairs.iter().map(|(k, v)| (k.to_string(), *v)))
}

fn fp(x: f64) -> FixedPoint {
    FixedPoint::from_f64(x)
}

fn gpu_node(cpus: f64, gpus: f64) -> NodeResources {
    NodeResources::new(&rs(&[(CPU, cpus), (GPU, gpus)]), &[GPU])
}

#[test]
fn tenth_added_ten_times_is_exactly_one() {
    let mut sum = FixedPoint::ZERO;
    for _ in 0..10 {
        sum += FixedPoint::from_f64(0.1);
    }
    assert_eq!(sum, FixedPoint::ONE);
    assert_eq!(FixedPoint::from_f64(0.1).0, 1000);
    let mut set = ResourceSet::new();
    for _ in 0..10 {
        set.add(&rs(&[(CPU, 0.1)]));
    }
    assert_eq!(set, rs(&[(CPU, 1.0)]));
}

#[test]
fn from_f64_rounds_to_nearest_and_survives_nan() {
    assert_eq!(fp(0.00004).0, 0);
    assert_eq!(fp(0.00005).0, 1);
    assert_eq!(fp(-0.00006).0, -1);
    assert_eq!(fp(f64::NAN), FixedPoint::ZERO);
    assert_eq!(fp(f64::INFINITY).0, i64::MAX);
    assert_eq!(fp(f64::INFINITY) + FixedPoint::ONE, FixedPoint(i64::MAX));
}

#[test]
fn display_is_exact_decimal() {
    assert_eq!(fp(1.0).to_string(), "1");
    assert_eq!(fp(0.5).to_string(), "0.5");
    assert_eq!(fp(2.125).to_string(), "2.125");
    assert_eq!(fp(-0.0001).to_string(), "-0.0001");
    assert_eq!((-fp(1.5)).to_string(), "-1.5");
}

#[test]
fn resource_set_drops_zero_and_allows_negative() {
    let mut a = rs(&[(CPU, 1.0), (GPU, 0.0)]);
    assert_eq!(a.len(), 1);
    a.sub(&rs(&[(CPU, 1.0), (MEMORY, 2.0)]));
    assert!(!a.contains(CPU));
    assert_eq!(a.get(MEMORY), fp(-2.0));
    assert_eq!(a.to_f64_map().get(MEMORY), Some(&-2.0));
}

#[test]
fn subset_treats_missing_as_zero() {
    let have = rs(&[(CPU, 2.0)]);
    assert!(rs(&[(CPU, 2.0)]).is_subset_of(&have));
    assert!(!rs(&[(CPU, 2.0001)]).is_subset_of(&have));
    assert!(!rs(&[(GPU, 1.0)]).is_subset_of(&have));
    assert!(ResourceSet::new().is_subset_of(&ResourceSet::new()));
}

#[test]
fn critical_utilization_is_max_of_cpu_memory_object_store() {
    let total = rs(&[(CPU, 4.0), (MEMORY, 100.0), (GPU, 4.0)]);
    let avail = rs(&[(CPU, 3.0), (MEMORY, 40.0)]);
    assert!((critical_utilization(&total, &avail) - 0.6).abs() < 1e-9);
    assert_eq!(critical_utilization(&rs(&[(GPU, 1.0)]), &ResourceSet::new()), 0.0);
}

#[test]
fn allocation_is_atomic() {
    let mut node = gpu_node(4.0, 1.0);
    let before = node.clone();
    let err = node.try_allocate(&rs(&[(CPU, 2.0), (GPU, 2.0)])).unwrap_err();
    assert!(matches!(err, AllocError::Insufficient { ref resource, .. } if resource == GPU));
    assert_eq!(node, before);
    let err = node.try_allocate(&rs(&[(CPU, 1.0), ("custom", 1.0)]));
    assert!(err.is_err());
    assert_eq!(node, before);
}

#[test]
fn fractional_gpu_requests_pack_into_first_fitting_instance() {
    let mut node = gpu_node(8.0, 2.0);
    let a = node.try_allocate(&rs(&[(GPU, 0.5)])).unwrap();
    let b = node.try_allocate(&rs(&[(GPU, 0.5)])).unwrap();
    let c = node.try_allocate(&rs(&[(GPU, 0.7)])).unwrap();
    assert_eq!(a.get(GPU), Some(&[(0, fp(0.5))][..]));
    assert_eq!(b.get(GPU), Some(&[(0, fp(0.5))][..]));
    assert_eq!(c.get(GPU), Some(&[(1, fp(0.7))][..]));
    // 0.3 left on instance 1 only; a whole GPU is no longer free.
    assert!(node.try_allocate(&rs(&[(GPU, 1.0)])).is_err());
    let d = node.try_allocate(&rs(&[(GPU, 0.3)])).unwrap();
    assert_eq!(d.get(GPU), Some(&[(1, fp(0.3))][..]));
    assert_eq!(node.available().get(GPU), FixedPoint::ZERO);
}

#[test]
fn whole_gpu_requests_take_fully_free_instances() {
    let mut node = gpu_node(8.0, 4.0);
    let part = node.try_allocate(&rs(&[(GPU, 0.1)])).unwrap();
    let two = node.try_allocate(&rs(&[(GPU, 2.0)])).unwrap();
    assert_eq!(two.get(GPU), Some(&[(1, fp(1.0)), (2, fp(1.0))][..]));
    assert!(node.try_allocate(&rs(&[(GPU, 2.0)])).is_err());
    node.free(&part);
    assert!(node.try_allocate(&rs(&[(GPU, 2.0)])).is_ok());
}

#[test]
fn fractional_request_above_one_of_unit_resource_is_invalid() {
    let mut node = gpu_node(8.0, 4.0);
    let err = node.try_allocate(&rs(&[(GPU, 1.5)])).unwrap_err();
    assert!(matches!(err, AllocError::FractionalMultiInstance { .. }));
    assert!(!node.is_feasible(&rs(&[(GPU, 1.5)])));
    // Scalars accept any fraction.
    assert!(node.try_allocate(&rs(&[(CPU, 1.5)])).is_ok());
}

#[test]
fn negative_request_is_rejected() {
    let mut node = gpu_node(1.0, 0.0);
    let err = node.try_allocate(&rs(&[(CPU, -1.0)])).unwrap_err();
    assert!(matches!(err, AllocError::Negative { .. }));
}

#[test]
fn free_restores_exactly() {
    let total = rs(&[(CPU, 3.0), (GPU, 2.0), (MEMORY, 1e9), ("custom", 0.3)]);
    let mut node = NodeResources::new(&total, &[GPU]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let req = rs(&[(CPU, 0.1), (GPU, 0.3), (MEMORY, 1e8 / 3.0), ("custom", 0.1)]);
        held.push(node.try_allocate(&req).unwrap());
    }
    assert_eq!(node.available().get("custom"), FixedPoint::ZERO);
    for a in held.iter().rev() {
        node.free(a);
    }
    assert_eq!(node.total(), total);
    assert_eq!(node.available(), total);
}

#[test]
fn unit_total_with_fraction_keeps_whole_instances() {
    let node = NodeResources::new(&rs(&[(GPU, 2.5)]), &[GPU]);
    assert_eq!(node.instance_totals(GPU).map(<[_]>::len), Some(2));
    assert_eq!(node.total().get(GPU), fp(2.0));
}

#[test]
fn feasible_compares_with_totals_and_available_with_availability() {
    let mut node = gpu_node(2.0, 1.0);
    let _held = node.try_allocate(&rs(&[(CPU, 2.0)])).unwrap();
    assert!(node.is_feasible(&rs(&[(CPU, 2.0), (GPU, 1.0)])));
    assert!(!node.is_available(&rs(&[(CPU, 1.0)])));
    assert!(node.is_available(&rs(&[(GPU, 1.0)])));
    assert!(!node.is_feasible(&rs(&[(CPU, 3.0)])));
}

#[test]
fn reacquire_after_unblock_can_go_negative() {
    let mut node = gpu_node(1.0, 0.0);
    let a = node.try_allocate(&rs(&[(CPU, 1.0)])).unwrap();
    node.release_for_blocked(&a);
    assert_eq!(node.available().get(CPU), fp(1.0));
    let b = node.try_allocate(&rs(&[(CPU, 1.0)])).unwrap();
    node.reacquire_after_unblock(&a);
    assert_eq!(node.available().get(CPU), fp(-1.0));
    assert!((node.critical_utilization() - 2.0).abs() < 1e-9);
    node.free(&b);
    node.free(&a);
    assert_eq!(node.available(), node.total());
}

#[test]
fn release_for_blocked_only_returns_cpu() {
    let mut node = NodeResources::new(&rs(&[(CPU, 1.0), (MEMORY, 10.0)]), &[]);
    let a = node.try_allocate(&rs(&[(CPU, 1.0), (MEMORY, 10.0)])).unwrap();
    node.release_for_blocked(&a);
    assert_eq!(node.available(), rs(&[(CPU, 1.0)]));
}

#[test]
fn add_and_remove_capacity_round_trip() {
    let mut node = gpu_node(2.0, 2.0);
    let orig = node.clone();
    node.add_capacity("CPU_group_x", Capacity::Amount(fp(1.5))).unwrap();
    let inst = vec![FixedPoint::ZERO, fp(0.5)];
    node.add_capacity("GPU_group_x", Capacity::Instances(inst.clone())).unwrap();
    assert!(node.is_per_instance("GPU_group_x"));
    assert_eq!(node.total().get("CPU_group_x"), fp(1.5));
    let held = node.try_allocate(&rs(&[("GPU_group_x", 0.5)])).unwrap();
    assert_eq!(held.get("GPU_group_x"), Some(&[(1, fp(0.5))][..]));
    node.remove_capacity("GPU_group_x", Capacity::Instances(inst)).unwrap();
    node.free(&held); // vanished resource: ignored
    node.remove_capacity("CPU_group_x", Capacity::Amount(fp(1.5))).unwrap();
    assert_eq!(node, orig);
}

#[test]
fn capacity_amount_on_unit_resource_means_whole_instances() {
    let mut node = gpu_node(1.0, 1.0);
    node.add_capacity(GPU, Capacity::Amount(fp(2.0))).unwrap();
    assert_eq!(node.instance_totals(GPU).map(<[_]>::len), Some(3));
    let err = node.add_capacity(GPU, Capacity::Amount(fp(0.5)));
    assert!(matches!(err, Err(CapacityError::FractionalInstances { .. })));
    node.remove_capacity(GPU, Capacity::Amount(fp(3.0))).unwrap();
    assert!(!node.total().contains(GPU));
    // A fresh unit-named resource becomes per-instance again.
    node.add_capacity(GPU, Capacity::Amount(fp(1.0))).unwrap();
    assert!(node.is_per_instance(GPU));
}

#[test]
fn capacity_changes_reject_bad_input_without_changing_anything() {
    let mut node = gpu_node(1.0, 1.0);
    let before = node.clone();
    let neg = node.add_capacity(CPU, Capacity::Amount(fp(-1.0)));
    assert!(matches!(neg, Err(CapacityError::Negative { .. })));
    let unknown = node.remove_capacity("nope", Capacity::Amount(fp(1.0)));
    assert!(matches!(unknown, Err(CapacityError::Unknown { .. })));
    let exceeds = node.remove_capacity(CPU, Capacity::Amount(fp(2.0)));
    assert!(matches!(exceeds, Err(CapacityError::Exceeds { .. })));
    let huge = node.add_capacity(GPU, Capacity::Amount(fp(1e12)));
    assert!(matches!(huge, Err(CapacityError::TooManyInstances { .. })));
    assert_eq!(node, before);
}

#[test]
fn removing_capacity_while_held_goes_negative_and_free_caps_at_total() {
    let mut node = NodeResources::new(&rs(&[("w", 2.0)]), &[]);
    let a = node.try_allocate(&rs(&[("w", 1.0)])).unwrap();
    let b = node.try_allocate(&rs(&[("w", 1.0)])).unwrap();
    node.remove_capacity("w", Capacity::Amount(fp(1.0))).unwrap();
    assert_eq!(node.available().get("w"), fp(-1.0));
    node.free(&a);
    node.free(&b);
    assert_eq!(node.available().get("w"), fp(1.0));
    assert_eq!(node.total().get("w"), fp(1.0));
}

#[test]
fn instance_mapping_lists_indexes_and_amounts() {
    let mut node = gpu_node(4.0, 2.0);
    let a = node.try_allocate(&rs(&[(CPU, 1.0), (GPU, 2.0)])).unwrap();
    let map = a.instance_mapping();
    assert_eq!(map, vec![(CPU.to_string(), vec![(0, 1.0)]), (GPU.to_string(), vec![(0, 1.0), (1, 1.0)]),]);
    assert_eq!(a.to_resource_set(), rs(&[(CPU, 1.0), (GPU, 2.0)]));
}

#[test]
fn assign_matches_a_fresh_collect_whatever_names_change() {
    let node = gpu_node(4.0, 2.0);
    let mut view = ResourceSet::new();
    view.assign(node.availables());
    assert_eq!(view, node.available());
    // Same names: only quantities change.
    let mut busy = node.clone();
    let a = busy.try_allocate(&rs(&[(CPU, 1.5)])).unwrap();
    view.assign(busy.availables());
    assert_eq!(view, busy.available());
    // A quantity reaching zero drops its name; giving it back brings the name back.
    let b = busy.try_allocate(&rs(&[(GPU, 2.0)])).unwrap();
    view.assign(busy.availables());
    assert_eq!(view, busy.available());
    assert!(!view.contains(GPU));
    busy.free(&b);
    busy.free(&a);
    view.assign(busy.availables());
    assert_eq!(view, node.available());
    // Different names altogether.
    let custom = rs(&[("custom", 3.0)]);
    view.assign(custom.iter());
    assert_eq!(view, rs(&[("custom", 3.0)]));
}
