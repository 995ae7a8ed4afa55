//! Placement tests: each builds a small cluster, places, and checks where tasks went and
//! which failures came back.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const ARN_PREFIX: &str = "arn:aws:ecs:us-east-1:123456789012:container-instance/prod/";

fn arn(n: usize) -> String {
    format!("{ARN_PREFIX}{n:04}")
}

/// An ACTIVE, connected instance in `az` with `cpu` units and `mem` MiB free.
fn inst(n: usize, az: &str, cpu: i64, mem: i64) -> Instance {
    let mut attributes = BTreeMap::new();
    attributes.insert("ecs.availability-zone".to_owned(), Some(az.to_owned()));
    attributes.insert("ecs.instance-type".to_owned(), Some("t3.large".to_owned()));
    attributes.insert("ecs.os-type".to_owned(), Some("linux".to_owned()));
    Instance {
        arn: arn(n),
        ec2_instance_id: format!("i-{n:04}"),
        status: ACTIVE.to_owned(),
        agent_connected: true,
        registered_at_epoch_secs: 1_700_000_000,
        remaining_cpu: cpu,
        remaining_memory: mem,
        agent_version: "1.80.0".to_owned(),
        attributes,
        ..Instance::default()
    }
}

fn with_tasks(mut i: Instance, group: &str, n: usize) -> Instance {
    for _ in 0..n {
        i.running_tasks.push(TaskOnInstance {
            group: group.to_owned(),
            task_definition_arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/x:1".into(),
            family: "x".into(),
        });
    }
    i.running_tasks_count = i.running_tasks.len() as u32;
    i
}

fn req(count: usize, cpu: i64, mem: i64) -> Request {
    Request {
        count,
        cpu,
        memory: mem,
        group: "service:web".into(),
        task_definition_arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3".into(),
        family: "web".into(),
        ..Request::default()
    }
}

fn binpack(field: BinpackField) -> PlacementStrategy {
    PlacementStrategy::Binpack { field }
}

fn spread_attr(name: &str) -> PlacementStrategy {
    PlacementStrategy::Spread {
        field: SpreadField::Attribute(name.into()),
    }
}

fn spread_instance() -> PlacementStrategy {
    PlacementStrategy::Spread {
        field: SpreadField::InstanceId,
    }
}

fn member_of(expr: &str) -> PlacementConstraint {
    PlacementConstraint::MemberOf(Expression::parse(expr).expect("valid expression"))
}

fn indices(plan: &Plan) -> Vec<usize> {
    plan.placements.iter().map(|p| p.instance_index).collect()
}

/// Tasks placed per instance index.
fn per_instance(plan: &Plan) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for p in &plan.placements {
        *m.entry(p.instance_index).or_default() += 1;
    }
    m
}

/// Tasks placed per availability zone.
fn per_az(snapshot: &Snapshot, plan: &Plan) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in &plan.placements {
        let az = snapshot.instances()[p.instance_index].attributes["ecs.availability-zone"]
            .clone()
            .expect("az value");
        *m.entry(az).or_default() += 1;
    }
    m
}

fn failures(plan: &Plan) -> Vec<(String, String)> {
    plan.failures
        .iter()
        .map(|f| (f.arn.clone(), f.reason.clone()))
        .collect()
}

fn three_az_cluster(per_az: usize, cpu: i64, mem: i64) -> Snapshot {
    let mut v = Vec::new();
    for az in ["us-east-1a", "us-east-1b", "us-east-1c"] {
        for _ in 0..per_az {
            v.push(inst(v.len(), az, cpu, mem));
        }
    }
    Snapshot::new(v, 1_700_000_100)
}

// ---- binpack ----

#[test]
fn binpack_memory_chooses_the_fullest_instance_that_fits() {
    let s = Snapshot::new(
        vec![
            inst(0, "a", 4096, 8192),
            inst(1, "a", 4096, 1024),
            inst(2, "a", 4096, 512),
            inst(3, "a", 4096, 2048),
        ],
        0,
    );
    let mut r = req(1, 128, 768);
    r.strategy = vec![binpack(BinpackField::Memory)];
    for seed in 0..20 {
        let plan = place(&s, &r, seed);
        assert_eq!(indices(&plan), vec![1], "seed {seed}");
        assert_eq!(plan.placements[0].instance_arn, arn(1));
        assert_eq!(plan.unplaced, 0);
        assert!(plan.failures.is_empty());
    }
}

#[test]
fn binpack_cpu_chooses_least_remaining_cpu() {
    let s = Snapshot::new(
        vec![
            inst(0, "a", 1024, 8192),
            inst(1, "a", 300, 8192),
            inst(2, "a", 256, 512),
            inst(3, "a", 200, 8192),
        ],
        0,
    );
    let mut r = req(1, 256, 256);
    r.strategy = vec![binpack(BinpackField::Cpu)];
    assert_eq!(indices(&place(&s, &r, 7)), vec![2]);
}

#[test]
fn binpack_fills_an_instance_before_moving_on() {
    let s = Snapshot::new(vec![inst(0, "a", 4096, 2000), inst(1, "a", 4096, 1000)], 0);
    let mut r = req(3, 10, 400);
    r.strategy = vec![binpack(BinpackField::Memory)];
    // 1000 → 600 → 200 (too little), then the 2000 one.
    assert_eq!(indices(&place(&s, &r, 1)), vec![1, 1, 0]);
}

#[test]
fn binpack_ties_are_broken_by_the_next_strategy() {
    let s = Snapshot::new(
        vec![
            inst(0, "a", 4096, 1024),
            inst(1, "a", 512, 1024),
            inst(2, "a", 1024, 1024),
        ],
        0,
    );
    let mut r = req(1, 128, 256);
    r.strategy = vec![binpack(BinpackField::Memory), binpack(BinpackField::Cpu)];
    assert_eq!(indices(&place(&s, &r, 3)), vec![1]);
}

// ---- spread ----

#[test]
fn spread_over_az_puts_six_tasks_two_per_zone() {
    let s = three_az_cluster(2, 4096, 8192);
    let mut r = req(6, 256, 512);
    r.strategy = vec![spread_attr("ecs.availability-zone")];
    for seed in 0..30 {
        let plan = place(&s, &r, seed);
        assert_eq!(plan.placements.len(), 6);
        let by_az = per_az(&s, &plan);
        assert_eq!(
            by_az.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2],
            "seed {seed}: {by_az:?}"
        );
    }
}

#[test]
fn spread_over_az_counts_tasks_already_running() {
    let instances = vec![
        with_tasks(inst(0, "us-east-1a", 4096, 8192), "service:web", 2),
        with_tasks(inst(1, "us-east-1b", 4096, 8192), "service:other", 5),
        inst(2, "us-east-1c", 4096, 8192),
    ];
    let s = Snapshot::new(instances, 0);
    let mut r = req(4, 256, 512);
    r.strategy = vec![spread_attr("ecs.availability-zone")];
    let plan = place(&s, &r, 9);
    // a already has 2 of service:web; other groups do not count.
    assert_eq!(per_instance(&plan), BTreeMap::from([(1, 2), (2, 2)]));
}

#[test]
fn spread_over_an_attribute_some_instances_lack() {
    let mut a = inst(0, "x", 4096, 8192);
    a.attributes.insert("rack".into(), Some("r1".into()));
    let mut b = inst(1, "x", 4096, 8192);
    b.attributes.insert("rack".into(), Some("r2".into()));
    let c = inst(2, "x", 4096, 8192);
    let d = inst(3, "x", 4096, 8192);
    let s = Snapshot::new(vec![a, b, c, d], 0);
    let mut r = req(3, 1, 1);
    r.strategy = vec![spread_attr("rack")];
    let plan = place(&s, &r, 4);
    // r1, r2 and "no rack" get one each.
    let m = per_instance(&plan);
    assert_eq!(m.get(&0), Some(&1));
    assert_eq!(m.get(&1), Some(&1));
    assert_eq!(m.get(&2).unwrap_or(&0) + m.get(&3).unwrap_or(&0), 1);
}

#[test]
fn spread_over_an_attribute_no_instance_has_is_random() {
    let s = three_az_cluster(2, 4096, 8192);
    let mut r = req(1, 1, 1);
    r.strategy = vec![spread_attr("nope")];
    let chosen: BTreeSet<usize> = (0..40)
        .flat_map(|seed| indices(&place(&s, &r, seed)))
        .collect();
    assert!(chosen.len() > 2, "{chosen:?}");
}

#[test]
fn spread_over_instance_id_balances_instances() {
    let s = Snapshot::new((0..4).map(|n| inst(n, "a", 4096, 8192)).collect(), 0);
    let mut r = req(8, 100, 100);
    r.strategy = vec![spread_instance()];
    let plan = place(&s, &r, 11);
    assert_eq!(
        per_instance(&plan),
        BTreeMap::from([(0, 2), (1, 2), (2, 2), (3, 2)])
    );
    // `host` is the same thing.
    r.strategy = vec![PlacementStrategy::Spread {
        field: SpreadField::Host,
    }];
    assert_eq!(place(&s, &r, 11), plan);
}

#[test]
fn spread_over_instance_id_prefers_instances_without_the_group() {
    let s = Snapshot::new(
        vec![
            with_tasks(inst(0, "a", 4096, 8192), "service:web", 1),
            inst(1, "a", 4096, 8192),
            with_tasks(inst(2, "a", 4096, 8192), "service:web", 3),
        ],
        0,
    );
    let mut r = req(2, 100, 100);
    r.strategy = vec![spread_instance()];
    let plan = place(&s, &r, 0);
    assert_eq!(per_instance(&plan), BTreeMap::from([(0, 1), (1, 1)]));
}

#[test]
fn spread_over_az_then_binpack_memory() {
    let s = Snapshot::new(
        vec![
            inst(0, "us-east-1a", 4096, 4096),
            inst(1, "us-east-1a", 4096, 2048),
            inst(2, "us-east-1b", 4096, 4096),
            inst(3, "us-east-1b", 4096, 1024),
            inst(4, "us-east-1b", 4096, 256),
        ],
        0,
    );
    let mut r = req(4, 100, 512);
    r.strategy = vec![
        spread_attr("ecs.availability-zone"),
        binpack(BinpackField::Memory),
    ];
    for seed in 0..10 {
        let plan = place(&s, &r, seed);
        // Zones alternate; within each, the fullest instance that fits (4 is too small).
        assert_eq!(
            per_instance(&plan),
            BTreeMap::from([(1, 2), (3, 2)]),
            "seed {seed}"
        );
    }
}

#[test]
fn spread_over_az_then_instance_id() {
    let s = three_az_cluster(3, 4096, 8192);
    let mut r = req(9, 100, 100);
    r.strategy = vec![spread_attr("ecs.availability-zone"), spread_instance()];
    let plan = place(&s, &r, 5);
    assert_eq!(plan.placements.len(), 9);
    assert!(per_instance(&plan).values().all(|&n| n == 1));
}

// ---- random ----

#[test]
fn no_strategy_is_random_and_seeded() {
    let s = Snapshot::new((0..10).map(|n| inst(n, "a", 4096, 8192)).collect(), 0);
    let r = req(1, 100, 100);
    let chosen: BTreeSet<usize> = (0..50)
        .flat_map(|seed| indices(&place(&s, &r, seed)))
        .collect();
    assert!(chosen.len() >= 6, "50 seeds chose only {chosen:?}");
    for seed in 0..10 {
        assert_eq!(place(&s, &r, seed), place(&s, &r, seed));
    }
}

#[test]
fn random_strategy_differs_between_seeds() {
    let s = Snapshot::new((0..20).map(|n| inst(n, "a", 4096, 8192)).collect(), 0);
    let mut r = req(5, 100, 100);
    r.strategy = vec![PlacementStrategy::Random];
    let a = place(&s, &r, 1);
    let b = place(&s, &r, 2);
    assert_eq!(a.placements.len(), 5);
    assert_ne!(indices(&a), indices(&b));
}

#[test]
fn random_first_makes_later_strategies_irrelevant() {
    let s = Snapshot::new(
        (0..10)
            .map(|n| inst(n, "a", 4096, 1000 + n as i64))
            .collect(),
        0,
    );
    let mut r = req(1, 100, 100);
    r.strategy = vec![PlacementStrategy::Random, binpack(BinpackField::Memory)];
    let chosen: BTreeSet<usize> = (0..40)
        .flat_map(|seed| indices(&place(&s, &r, seed)))
        .collect();
    assert!(chosen.len() > 3, "{chosen:?}");
    // Binpack alone always takes the fullest.
    r.strategy = vec![binpack(BinpackField::Memory)];
    assert_eq!(indices(&place(&s, &r, 99)), vec![0]);
}

#[test]
fn ties_left_at_the_end_are_spread_fairly() {
    let s = Snapshot::new((0..4).map(|n| inst(n, "a", 4096, 4096)).collect(), 0);
    let mut r = req(1, 100, 100);
    r.strategy = vec![binpack(BinpackField::Memory)];
    let mut hits = [0usize; 4];
    for seed in 0..4000 {
        hits[indices(&place(&s, &r, seed))[0]] += 1;
    }
    for h in hits {
        assert!((800..1200).contains(&h), "{hits:?}");
    }
}

#[test]
fn same_seed_same_plan_for_a_complex_request() {
    let mut instances = Vec::new();
    for n in 0..60 {
        let az = ["us-east-1a", "us-east-1b", "us-east-1c"][n % 3];
        let i = inst(
            n,
            az,
            1024 + (n as i64 * 37) % 3000,
            2048 + (n as i64 * 101) % 6000,
        );
        instances.push(with_tasks(
            i,
            if n % 4 == 0 { "service:web" } else { "x" },
            n % 3,
        ));
    }
    let s = Snapshot::new(instances, 0);
    let mut r = req(25, 300, 700);
    r.strategy = vec![
        spread_attr("ecs.availability-zone"),
        binpack(BinpackField::Memory),
    ];
    r.constraints = vec![member_of("attribute:ecs.os-type == linux")];
    let plan = place(&s, &r, 42);
    assert_eq!(plan.placements.len(), 25);
    for _ in 0..5 {
        assert_eq!(place(&s, &r, 42), plan);
    }
}

// ---- constraints ----

#[test]
fn distinct_instance_never_doubles_up_and_fails_the_rest() {
    let s = Snapshot::new((0..3).map(|n| inst(n, "a", 4096, 8192)).collect(), 0);
    let mut r = req(5, 100, 100);
    r.constraints = vec![PlacementConstraint::DistinctInstance];
    r.strategy = vec![binpack(BinpackField::Memory)];
    let plan = place(&s, &r, 3);
    assert_eq!(plan.placements.len(), 3);
    assert_eq!(per_instance(&plan).len(), 3);
    assert_eq!(plan.unplaced, 2);
    assert_eq!(
        failures(&plan),
        (0..3)
            .map(|n| (arn(n), reason::DISTINCT_INSTANCE.to_owned()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn distinct_instance_counts_tasks_already_there() {
    let s = Snapshot::new(
        vec![
            with_tasks(inst(0, "a", 4096, 8192), "service:web", 1),
            inst(1, "a", 4096, 8192),
            with_tasks(inst(2, "a", 4096, 8192), "service:api", 1),
        ],
        0,
    );
    let mut r = req(2, 100, 100);
    r.constraints = vec![PlacementConstraint::DistinctInstance];
    let plan = place(&s, &r, 0);
    assert_eq!(per_instance(&plan), BTreeMap::from([(1, 1), (2, 1)]));
}

/// Instances 0..4 with distinct types, versions, registration times and tasks.
fn varied_cluster() -> Snapshot {
    let mut v = Vec::new();
    let types = ["t2.small", "t2.medium", "g2.2xlarge", "m5.large"];
    let azs = ["us-east-1a", "us-east-1b", "us-east-1d", "us-east-1a"];
    let versions = ["1.14.4", "1.14.5", "1.20.0", "1.9.0"];
    let registered = [
        1_518_000_000, // 2018-02-07
        1_518_480_000, // 2018-02-13 00:00:00Z
        1_518_566_399, // 2018-02-13 23:59:59Z
        1_600_000_000, // 2020-09-13
    ];
    for n in 0..4 {
        let mut i = inst(n, azs[n], 4096, 8192);
        i.attributes
            .insert("ecs.instance-type".into(), Some(types[n].into()));
        i.agent_version = versions[n].into();
        i.registered_at_epoch_secs = registered[n];
        v.push(i);
    }
    v[0].attributes.insert("stack".into(), Some("prod".into()));
    v[1].attributes.insert("stack".into(), Some("dev".into()));
    v[2].attributes.insert("gpu".into(), None);
    v[3].attributes.insert("weight".into(), Some("10".into()));
    v[1].attributes.insert("weight".into(), Some("9".into()));
    v[0] = with_tasks(v[0].clone(), "database", 1);
    v[2] = with_tasks(v[2].clone(), "service:production", 2);
    Snapshot::new(v, 0)
}

/// Which instances of [`varied_cluster`] a memberOf expression admits.
fn admitted(expr: &str) -> Vec<usize> {
    let s = varied_cluster();
    let mut r = req(4, 1, 1);
    r.strategy = vec![spread_instance()];
    r.constraints = vec![member_of(expr)];
    let mut v: Vec<usize> = per_instance(&place(&s, &r, 0)).into_keys().collect();
    v.sort_unstable();
    v
}

#[test]
fn member_of_with_each_operator() {
    let cases: &[(&str, &[usize])] = &[
        ("attribute:ecs.instance-type == t2.small", &[0]),
        ("attribute:ecs.instance-type equals t2.small", &[0]),
        ("attribute:ecs.instance-type != t2.small", &[1, 2, 3]),
        ("attribute:stack != prod", &[1]),
        (
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
            &[0, 1, 3],
        ),
        (
            "attribute:ecs.availability-zone !in [us-east-1a, us-east-1b]",
            &[2],
        ),
        (
            "attribute:ecs.availability-zone not_in [us-east-1a]",
            &[1, 2],
        ),
        (
            "attribute:ecs.availability-zone not in [us-east-1a]",
            &[1, 2],
        ),
        ("attribute:ecs.instance-type =~ t2.*", &[0, 1]),
        ("attribute:ecs.instance-type !~ t2.*", &[2, 3]),
        (
            "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d",
            &[],
        ),
        (
            "attribute:ecs.instance-type =~ g2.* or attribute:stack == dev",
            &[1, 2],
        ),
        ("attribute:gpu exists", &[2]),
        ("attribute:gpu !exists", &[0, 1, 3]),
        ("attribute:stack not_exists", &[2, 3]),
        ("attribute:weight > 9", &[3]),
        ("attribute:weight >= 9", &[1, 3]),
        ("attribute:weight < 10", &[1]),
        ("attribute:weight <= 10", &[1, 3]),
        ("task:group == service:production", &[2]),
        ("not(task:group == database)", &[1, 2, 3]),
        ("task:group != database", &[1, 2, 3]),
        ("task:group exists", &[0, 2]),
        ("task:group in [database, service:production]", &[0, 2]),
        ("runningTasksCount == 1", &[0]),
        ("runningTasksCount > 0", &[0, 2]),
        ("runningTasksCount <= 1", &[0, 1, 3]),
        ("agentVersion < 1.14.5", &[0, 3]),
        ("agentVersion >= 1.14.5", &[1, 2]),
        ("agentVersion == 1.20", &[2]),
        ("registeredAt < 2018-02-13", &[0]),
        ("registeredAt == 2018-02-13", &[1, 2]),
        ("registeredAt > 2018-02-13", &[3]),
        ("registeredAt <= 2018-02-13T00:00:00Z", &[0, 1]),
        ("registeredAt > 2018-02-13T01:00:00+02:00", &[1, 2, 3]),
        ("ec2InstanceId in ['i-0001', 'i-0003']", &[1, 3]),
        ("ec2InstanceId =~ 'i-000[02]'", &[0, 2]),
        ("agentConnected == true", &[0, 1, 2, 3]),
        ("agentConnected != true", &[]),
        ("!(attribute:stack exists) && attribute:weight exists", &[3]),
        (
            "attribute:stack == prod || attribute:stack == dev && runningTasksCount == 0",
            &[0, 1],
        ),
        (
            "(attribute:stack == prod || attribute:stack == dev) && runningTasksCount == 0",
            &[1],
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(admitted(expr), want.to_vec(), "{expr}");
    }
}

#[test]
fn member_of_failures_name_every_rejected_instance() {
    let s = varied_cluster();
    let mut r = req(1, 1, 1);
    r.constraints = vec![member_of("attribute:ecs.instance-type == c5.large")];
    let plan = place(&s, &r, 0);
    assert_eq!(plan.unplaced, 1);
    assert_eq!(
        failures(&plan),
        (0..4)
            .map(|n| (arn(n), reason::MEMBER_OF.to_owned()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn member_of_task_group_anti_affinity_sees_tasks_placed_by_the_same_plan() {
    let s = Snapshot::new((0..3).map(|n| inst(n, "a", 4096, 8192)).collect(), 0);
    let mut r = req(4, 100, 100);
    r.strategy = vec![binpack(BinpackField::Memory)];
    r.constraints = vec![member_of("not(task:group == service:web)")];
    let plan = place(&s, &r, 0);
    assert_eq!(per_instance(&plan).len(), 3);
    assert_eq!(plan.unplaced, 1);
    assert!(plan.failures.iter().all(|f| f.reason == reason::MEMBER_OF));
}

#[test]
fn constraints_report_in_their_order() {
    let s = Snapshot::new(
        vec![with_tasks(inst(0, "a", 4096, 8192), "service:web", 1)],
        0,
    );
    let mut r = req(1, 1, 1);
    r.constraints = vec![
        PlacementConstraint::DistinctInstance,
        member_of("attribute:nope exists"),
    ];
    assert_eq!(failures(&place(&s, &r, 0))[0].1, reason::DISTINCT_INSTANCE);
    r.constraints.reverse();
    assert_eq!(failures(&place(&s, &r, 0))[0].1, reason::MEMBER_OF);
}

#[test]
fn required_attributes() {
    let mut a = inst(0, "a", 4096, 8192);
    a.attributes.insert("ecs.capability.task-eni".into(), None);
    let mut b = inst(1, "a", 4096, 8192);
    b.attributes.insert(
        "com.amazonaws.ecs.capability.docker-remote-api.1.30".into(),
        None,
    );
    let s = Snapshot::new(vec![a, b], 0);
    let mut r = req(2, 1, 1);
    r.required_attributes = vec![RequiredAttribute {
        name: "ecs.capability.task-eni".into(),
        value: None,
    }];
    let plan = place(&s, &r, 0);
    assert_eq!(indices(&plan), vec![0, 0]);
    r.required_attributes = vec![RequiredAttribute {
        name: "ecs.os-type".into(),
        value: Some("windows".into()),
    }];
    let plan = place(&s, &r, 0);
    assert_eq!(plan.unplaced, 2);
    assert_eq!(
        failures(&plan),
        vec![
            (arn(0), reason::ATTRIBUTE.to_owned()),
            (arn(1), reason::ATTRIBUTE.to_owned())
        ]
    );
}

// ---- resources, ports, status ----

#[test]
fn tcp_port_conflicts() {
    let mut a = inst(0, "a", 4096, 8192);
    a.used_tcp_ports.insert(80);
    let s = Snapshot::new(
        vec![a, inst(1, "a", 4096, 8192), inst(2, "a", 4096, 8192)],
        0,
    );
    let mut r = req(3, 100, 100);
    r.tcp_ports = vec![80, 443];
    r.strategy = vec![binpack(BinpackField::Memory)];
    let plan = place(&s, &r, 0);
    // One task per free instance: the port is taken by the first task placed there.
    assert_eq!(per_instance(&plan), BTreeMap::from([(1, 1), (2, 1)]));
    assert_eq!(plan.unplaced, 1);
    assert_eq!(
        failures(&plan),
        (0..3)
            .map(|n| (arn(n), reason::PORTS.to_owned()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn udp_port_conflicts_are_their_own_reason() {
    let mut a = inst(0, "a", 4096, 8192);
    a.used_udp_ports.insert(53);
    a.used_tcp_ports.insert(53);
    let s = Snapshot::new(vec![a], 0);
    let mut r = req(1, 100, 100);
    r.udp_ports = vec![53];
    let plan = place(&s, &r, 0);
    assert_eq!(
        failures(&plan),
        vec![(arn(0), reason::PORTS_UDP.to_owned())]
    );
    // TCP 53 in use does not block a UDP-only task elsewhere; here it is the same instance.
    r.udp_ports = vec![5353];
    assert_eq!(indices(&place(&s, &r, 0)), vec![0]);
}

#[test]
fn draining_disconnected_and_small_instances_are_skipped_with_reasons() {
    let mut draining = inst(0, "a", 4096, 8192);
    draining.status = "DRAINING".into();
    let mut disconnected = inst(1, "a", 4096, 8192);
    disconnected.agent_connected = false;
    let small_mem = inst(2, "a", 4096, 100);
    let small_cpu = inst(3, "a", 10, 8192);
    let mut inactive = inst(4, "a", 4096, 8192);
    inactive.status = "INACTIVE".into();
    let s = Snapshot::new(
        vec![draining, disconnected, small_mem, small_cpu, inactive],
        0,
    );
    let r = req(1, 256, 512);
    let plan = place(&s, &r, 0);
    assert!(plan.placements.is_empty());
    assert_eq!(plan.unplaced, 1);
    assert_eq!(
        failures(&plan),
        vec![
            (arn(0), "DRAINING".to_owned()),
            (arn(1), reason::AGENT.to_owned()),
            (arn(2), reason::MEMORY.to_owned()),
            (arn(3), reason::CPU.to_owned()),
            (arn(4), "INACTIVE".to_owned()),
        ]
    );
}

#[test]
fn draining_instances_never_get_tasks_even_when_best() {
    let mut draining = inst(0, "a", 4096, 600);
    draining.status = "DRAINING".into();
    let s = Snapshot::new(vec![draining, inst(1, "a", 4096, 8192)], 0);
    let mut r = req(2, 1, 256);
    r.strategy = vec![binpack(BinpackField::Memory)];
    let plan = place(&s, &r, 0);
    assert_eq!(indices(&plan), vec![1, 1]);
    assert!(plan.failures.is_empty());
}

#[test]
fn count_beyond_capacity_gives_partial_placements_and_failures() {
    let s = Snapshot::new(vec![inst(0, "a", 4096, 1024), inst(1, "a", 300, 8192)], 0);
    let r = req(10, 128, 512);
    let plan = place(&s, &r, 0);
    // Instance 0: 2 by memory; instance 1: 2 by CPU.
    assert_eq!(per_instance(&plan), BTreeMap::from([(0, 2), (1, 2)]));
    assert_eq!(plan.unplaced, 6);
    assert_eq!(
        failures(&plan),
        vec![
            (arn(0), reason::MEMORY.to_owned()),
            (arn(1), reason::CPU.to_owned())
        ]
    );
}

#[test]
fn empty_cluster_and_zero_count() {
    let s = Snapshot::new(Vec::new(), 0);
    let plan = place(&s, &req(3, 1, 1), 0);
    assert_eq!(plan.unplaced, 3);
    assert!(plan.placements.is_empty() && plan.failures.is_empty());
    let s = three_az_cluster(1, 100, 100);
    assert_eq!(place(&s, &req(0, 1, 1), 0), Plan::default());
}

// ---- snapshot ----

#[test]
fn commit_applies_the_plan_and_rejects_a_stale_one() {
    let mut s = Snapshot::new(vec![inst(0, "a", 1000, 1000), inst(1, "b", 1000, 1000)], 0);
    let mut r = req(2, 300, 400);
    r.tcp_ports = vec![8080];
    r.strategy = vec![spread_instance()];
    let plan = place(&s, &r, 0);
    assert_eq!(plan.placements.len(), 2);
    s.commit(&r, &plan).expect("fresh plan commits");
    for i in s.instances() {
        assert_eq!((i.remaining_cpu, i.remaining_memory), (700, 600));
        assert!(i.used_tcp_ports.contains(&8080));
        assert_eq!(i.pending_tasks_count, 1);
        assert_eq!(i.running_tasks.len(), 1);
        assert_eq!(i.running_tasks[0].group, "service:web");
    }
    // The same plan again: the ports are taken now.
    let err = s.commit(&r, &plan).expect_err("stale");
    assert_eq!(
        err,
        CommitError::NoLongerFits {
            arn: arn(0),
            reason: reason::PORTS.into()
        }
    );
    // Nothing changed.
    assert_eq!(s.instances()[1].remaining_cpu, 700);
    // And the next placement sees the committed tasks.
    let again = place(&s, &r, 0);
    assert_eq!(again.unplaced, 2);
}

#[test]
fn commit_rejects_a_plan_for_other_instances() {
    let mut s = Snapshot::new(vec![inst(0, "a", 1000, 1000)], 0);
    let plan = Plan {
        placements: vec![Placement {
            instance_index: 0,
            instance_arn: arn(9),
        }],
        ..Plan::default()
    };
    assert!(matches!(
        s.commit(&req(1, 1, 1), &plan),
        Err(CommitError::UnknownInstance { index: 0, .. })
    ));
}

#[test]
fn committed_tasks_steer_spread_in_later_calls() {
    let mut s = three_az_cluster(2, 100_000, 100_000);
    let mut r = req(1, 1, 1);
    r.strategy = vec![spread_attr("ecs.availability-zone")];
    let mut total = Plan::default();
    for seed in 0..9 {
        let plan = place(&s, &r, seed);
        s.commit(&r, &plan).expect("commit");
        total.placements.extend(plan.placements);
    }
    assert_eq!(
        per_az(&s, &total).values().copied().collect::<Vec<_>>(),
        vec![3, 3, 3]
    );
}

#[test]
fn update_instance_keeps_the_index_right() {
    let mut s = three_az_cluster(1, 4096, 8192);
    let mut r = req(1, 1, 1);
    r.constraints = vec![member_of("attribute:ecs.availability-zone == us-east-1z")];
    assert_eq!(place(&s, &r, 0).unplaced, 1);
    assert!(s.update_instance(1, |i| {
        i.attributes
            .insert("ecs.availability-zone".into(), Some("us-east-1z".into()));
    }));
    assert_eq!(indices(&place(&s, &r, 0)), vec![1]);
    // Spread sees the new value too: us-east-1z now holds the only task of the group.
    assert!(s.update_instance(1, |i| {
        i.running_tasks.push(TaskOnInstance {
            group: "service:web".into(),
            ..TaskOnInstance::default()
        })
    }));
    r.constraints.clear();
    r.strategy = vec![spread_attr("ecs.availability-zone")];
    let plan = place(&s, &r, 0);
    assert_ne!(indices(&plan), vec![1]);
    // Status changes take effect.
    assert!(s.update_instance(0, |i| i.status = "DRAINING".into()));
    assert!(s.update_instance(2, |i| i.status = "DRAINING".into()));
    assert_eq!(indices(&place(&s, &r, 0)), vec![1]);
    assert!(!s.update_instance(7, |_| {}));
    assert_eq!(s.position(&arn(2)), Some(2));
}

#[test]
fn push_and_remove_instances() {
    let mut s = Snapshot::new(vec![inst(0, "a", 10, 10)], 0);
    let mut big = inst(1, "b", 4096, 8192);
    big.attributes.insert("new".into(), Some("yes".into()));
    assert_eq!(s.push_instance(big), 1);
    let mut r = req(1, 100, 100);
    r.constraints = vec![member_of("attribute:new == yes")];
    assert_eq!(indices(&place(&s, &r, 0)), vec![1]);
    let removed = s.remove_instance(0).expect("removed");
    assert_eq!(removed.arn, arn(0));
    assert_eq!(indices(&place(&s, &r, 0)), vec![0]);
    assert_eq!(s.position(&arn(1)), Some(0));
    assert!(s.remove_instance(5).is_none());
}

// ---- wire ----

#[test]
fn strategies_from_the_wire() {
    assert_eq!(
        PlacementStrategy::from_wire("random", None),
        Ok(PlacementStrategy::Random)
    );
    assert_eq!(
        PlacementStrategy::from_wire("binpack", Some("MEMORY")),
        Ok(binpack(BinpackField::Memory))
    );
    assert_eq!(
        PlacementStrategy::from_wire("spread", Some("attribute:ecs.availability-zone")),
        Ok(spread_attr("ecs.availability-zone"))
    );
    assert_eq!(
        PlacementStrategy::from_wire("spread", Some("instanceId")),
        Ok(spread_instance())
    );
    let msg = |t: &str, f: Option<&str>| {
        PlacementStrategy::from_wire(t, f)
            .expect_err("invalid")
            .to_string()
    };
    assert_eq!(
        msg("pack", None),
        "placement strategy type 'pack' is not valid: expected random, spread or binpack"
    );
    assert_eq!(
        msg("binpack", Some("disk")),
        "binpack placement strategy field 'disk' is not valid: expected cpu or memory"
    );
    assert_eq!(
        msg("binpack", None),
        "placement strategy field must be specified for type binpack"
    );
    assert_eq!(
        msg("spread", None),
        "placement strategy field must be specified for type spread"
    );
    assert_eq!(
        msg("spread", Some("zone")),
        "spread placement strategy field 'zone' is not valid: expected instanceId, host or attribute:NAME"
    );
    assert!(PlacementStrategy::from_wire("spread", Some("attribute:")).is_err());
    assert!(PlacementStrategy::from_wire("Random", None).is_err());
}

#[test]
fn constraints_from_the_wire() {
    assert_eq!(
        PlacementConstraint::from_wire("distinctInstance", None),
        Ok(PlacementConstraint::DistinctInstance)
    );
    let msg = |t: &str, e: Option<&str>| {
        PlacementConstraint::from_wire(t, e)
            .expect_err("invalid")
            .to_string()
    };
    assert_eq!(
        msg("distinctInstance", Some("")),
        "distinctInstance expression should not be specified"
    );
    assert_eq!(
        msg("memberOf", None),
        "memberOf expression must be specified"
    );
    assert_eq!(
        msg("memberOf", Some("  ")),
        "memberOf expression must be specified"
    );
    assert_eq!(
        msg("memberOf", Some("attribute:a == b and")),
        "memberOf expression 'attribute:a == b and' is not valid: expected a subject (attribute:NAME, task:group, agentConnected, agentVersion, ec2InstanceId, registeredAt or runningTasksCount) at column 21"
    );
    assert_eq!(
        msg("sameZone", None),
        "placement constraint type 'sameZone' is not valid: expected distinctInstance or memberOf"
    );
    let long = format!("attribute:a in [{}]", vec!["x"; 1000].join(","));
    assert_eq!(
        msg("memberOf", Some(&long)),
        "memberOf expression must be at most 2000 characters"
    );
    assert_eq!(
        PlacementConstraint::from_wire_task_definition("distinctInstance", None)
            .expect_err("not in task definitions")
            .to_string(),
        "constraint.type 'distinctInstance' is not supported"
    );
    assert!(
        PlacementConstraint::from_wire_task_definition("memberOf", Some("task:group exists"))
            .is_ok()
    );
}

#[test]
fn wire_json_round_trip() {
    let strategies: Vec<PlacementStrategy> = serde_json::from_str(
        r#"[{"type":"spread","field":"attribute:ecs.availability-zone"},{"type":"binpack","field":"memory"},{"type":"random"}]"#,
    )
    .expect("valid strategies");
    assert_eq!(
        strategies,
        vec![
            spread_attr("ecs.availability-zone"),
            binpack(BinpackField::Memory),
            PlacementStrategy::Random
        ]
    );
    assert_eq!(
        serde_json::to_string(&strategies).expect("serializes"),
        r#"[{"type":"spread","field":"attribute:ecs.availability-zone"},{"type":"binpack","field":"memory"},{"type":"random"}]"#
    );
    let constraints: Vec<PlacementConstraint> = serde_json::from_str(
        r#"[{"type":"memberOf","expression":"attribute:ecs.instance-type =~ t2.*"},{"type":"distinctInstance"}]"#,
    )
    .expect("valid constraints");
    assert_eq!(
        serde_json::to_string(&constraints).expect("serializes"),
        r#"[{"type":"memberOf","expression":"attribute:ecs.instance-type =~ t2.*"},{"type":"distinctInstance"}]"#
    );
    let bad: Result<Vec<PlacementStrategy>, _> =
        serde_json::from_str(r#"[{"type":"binpack","field":"disk"}]"#);
    assert!(bad
        .expect_err("invalid")
        .to_string()
        .contains("binpack placement strategy field 'disk' is not valid"));
}

#[test]
fn limits() {
    let five = vec![PlacementStrategy::Random; 5];
    assert!(check_limits(&five, &[]).is_ok());
    let six = vec![PlacementStrategy::Random; 6];
    assert_eq!(
        check_limits(&six, &[]),
        Err(PlacementError::TooManyStrategies(6))
    );
    let eleven = vec![PlacementConstraint::DistinctInstance; 11];
    assert_eq!(
        check_limits(&[], &eleven),
        Err(PlacementError::TooManyConstraints(11))
    );
    assert_eq!(
        PlacementStrategy::service_default(),
        vec![spread_attr("ecs.availability-zone")]
    );
}

/// The spread counts a snapshot maintains equal those summed from scratch.
fn assert_spread_counts_fresh(s: &Snapshot, group: &str, attr: &str) {
    let mut maintained = Vec::new();
    s.spread_counts(group, attr, &mut maintained);
    let fresh_snapshot = Snapshot::new(s.instances().to_vec(), 0);
    let mut fresh = Vec::new();
    fresh_snapshot.spread_counts(group, attr, &mut fresh);
    // Bucket ids depend on the order values were first seen: compare per value.
    let by_value = |snap: &Snapshot, counts: &[u32]| {
        let mut m: BTreeMap<Option<String>, u32> = BTreeMap::new();
        for (i, inst) in snap.instances().iter().enumerate() {
            let b = snap.attrs.get(attr).map_or(0, |c| c.bucket(i)) as usize;
            m.insert(inst.attributes.get(attr).cloned().flatten(), counts[b]);
        }
        m
    };
    assert_eq!(by_value(s, &maintained), by_value(&fresh_snapshot, &fresh));
}

#[test]
fn maintained_spread_counts_follow_commits_and_updates() {
    let mut s = three_az_cluster(3, 100_000, 100_000);
    let mut r = req(4, 1, 1);
    r.strategy = vec![
        spread_attr("ecs.availability-zone"),
        binpack(BinpackField::Memory),
    ];
    for seed in 0..5 {
        let plan = place(&s, &r, seed);
        s.commit(&r, &plan).expect("commit");
        assert_spread_counts_fresh(&s, "service:web", "ecs.availability-zone");
    }
    // Tasks stop, an instance moves zone, another loses the attribute, one is added.
    assert!(s.update_instance(0, |i| {
        i.running_tasks.clear();
    }));
    assert!(s.update_instance(4, |i| {
        i.attributes
            .insert("ecs.availability-zone".into(), Some("us-east-1z".into()));
    }));
    assert!(s.update_instance(5, |i| {
        i.attributes.remove("ecs.availability-zone");
    }));
    s.push_instance(with_tasks(inst(9, "us-east-1y", 10, 10), "service:web", 2));
    assert_spread_counts_fresh(&s, "service:web", "ecs.availability-zone");
    for seed in 0..5 {
        let plan = place(&s, &r, seed);
        s.commit(&r, &plan).expect("commit");
        assert_spread_counts_fresh(&s, "service:web", "ecs.availability-zone");
    }
    // Placement itself agrees with a fresh snapshot's.
    let fresh = Snapshot::new(s.instances().to_vec(), 0);
    for seed in 0..10 {
        assert_eq!(place(&s, &r, seed), place(&fresh, &r, seed));
    }
}

#[test]
fn spread_over_many_buckets() {
    // Six racks of two instances: more tied buckets than the four compared directly.
    let mut v = Vec::new();
    for n in 0..12 {
        let mut i = inst(n, "a", 4096, 8192);
        i.attributes
            .insert("rack".into(), Some(format!("r{}", n % 6)));
        v.push(i);
    }
    let s = Snapshot::new(v, 0);
    let mut r = req(12, 1, 1);
    r.strategy = vec![spread_attr("rack"), spread_instance()];
    let plan = place(&s, &r, 8);
    assert!(per_instance(&plan).values().all(|&n| n == 1), "{plan:?}");
    // 100 distinct values: past the compare path, onto the per-instance lookup.
    let mut v = Vec::new();
    for n in 0..200 {
        let mut i = inst(n, "a", 4096, 8192);
        i.attributes
            .insert("host-id".into(), Some(format!("h{}", n % 100)));
        v.push(i);
    }
    let s = Snapshot::new(v, 0);
    let mut r = req(200, 1, 1);
    r.strategy = vec![spread_attr("host-id"), spread_instance()];
    let plan = place(&s, &r, 8);
    assert!(per_instance(&plan).values().all(|&n| n == 1));
    r.count = 300;
    r.strategy = vec![spread_attr("host-id")];
    let mut per_host = BTreeMap::new();
    for p in &place(&s, &r, 8).placements {
        *per_host.entry(p.instance_index % 100).or_insert(0) += 1;
    }
    assert!(per_host.values().all(|&n| n == 3), "{per_host:?}");
}

#[test]
fn member_of_results_kept_by_the_snapshot_stay_right() {
    let mut s = varied_cluster();
    let mut r = req(1, 1, 1);
    r.constraints = vec![
        member_of("attribute:ecs.instance-type =~ t2.* and runningTasksCount == 0"),
        PlacementConstraint::DistinctInstance,
    ];
    let same_as_fresh = |s: &Snapshot, r: &Request| {
        let fresh = Snapshot::new(s.instances().to_vec(), 0);
        for seed in 0..6 {
            assert_eq!(place(s, r, seed), place(&fresh, r, seed), "seed {seed}");
        }
    };
    // Instance 1 is the only t2 without running tasks.
    let plan = place(&s, &r, 0);
    assert_eq!(indices(&plan), vec![1]);
    s.commit(&r, &plan).expect("commit");
    assert!(s
        .member_of(match &r.constraints[0] {
            PlacementConstraint::MemberOf(e) => e,
            PlacementConstraint::DistinctInstance => unreachable!(),
        })
        .is_some());
    // distinctInstance now rules out 1: nothing left, with each instance's reason.
    let plan = place(&s, &r, 0);
    assert_eq!(
        failures(&plan),
        vec![
            (arn(0), reason::MEMBER_OF.to_owned()),
            (arn(1), reason::DISTINCT_INSTANCE.to_owned()),
            (arn(2), reason::MEMBER_OF.to_owned()),
            (arn(3), reason::MEMBER_OF.to_owned()),
        ]
    );
    same_as_fresh(&s, &r);
    // An instance becomes a member, another stops being one.
    assert!(s.update_instance(3, |i| {
        i.attributes
            .insert("ecs.instance-type".into(), Some("t2.nano".into()));
    }));
    assert!(s.update_instance(1, |i| i.running_tasks_count = 4));
    assert_eq!(indices(&place(&s, &r, 0)), vec![3]);
    same_as_fresh(&s, &r);
    let mut new = inst(4, "b", 4096, 8192);
    new.attributes
        .insert("ecs.instance-type".into(), Some("t2.micro".into()));
    s.push_instance(new);
    r.count = 2;
    assert_eq!(
        per_instance(&place(&s, &r, 0)),
        BTreeMap::from([(3, 1), (4, 1)])
    );
    same_as_fresh(&s, &r);
    s.remove_instance(0).expect("removed");
    assert_eq!(
        per_instance(&place(&s, &r, 0)),
        BTreeMap::from([(2, 1), (3, 1)])
    );
    same_as_fresh(&s, &r);
}
