//! Scheduler throughput: 10,000 simulated container instances, tasks placed one `place` call
//! at a time (count 1) and in batches (count 10), each plan committed to the snapshot before
//! the next call, as the control plane's applier does.
//!
//! `cargo run --release -p berth-control --example sched_bench [instances] [placements] [filter]`
//! (`filter`: run only the scenario of that name, or those whose name contains it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_control::scheduler::{
    place, BinpackField, Expression, Instance, PlacementConstraint, PlacementStrategy, Request,
    Snapshot, SpreadField, TaskOnInstance, ACTIVE,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const AZS: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const TYPES: [(&str, i64, i64); 5] = [
    ("t3.medium", 2048, 4096),
    ("m5.large", 2048, 8192),
    ("m5.xlarge", 4096, 16384),
    ("c5.2xlarge", 8192, 16384),
    ("r5.4xlarge", 16384, 131072),
];

fn cluster(n: usize) -> Snapshot {
    let mut rng = StdRng::seed_from_u64(7);
    let mut instances = Vec::with_capacity(n);
    for i in 0..n {
        let (kind, cpu, mem) = TYPES[rng.gen_range(0..TYPES.len())];
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "ecs.availability-zone".to_owned(),
            Some(AZS[i % 3].to_owned()),
        );
        attributes.insert("ecs.instance-type".to_owned(), Some(kind.to_owned()));
        attributes.insert("ecs.os-type".to_owned(), Some("linux".to_owned()));
        attributes.insert("ecs.cpu-architecture".to_owned(), Some("x86_64".to_owned()));
        let mut inst = Instance {
            arn: format!("arn:aws:ecs:us-east-1:123456789012:container-instance/bench/{i:032x}"),
            ec2_instance_id: format!("i-{i:017x}"),
            status: ACTIVE.to_owned(),
            agent_connected: true,
            registered_at_epoch_secs: 1_700_000_000 + i as i64,
            remaining_cpu: cpu,
            remaining_memory: mem,
            agent_version: "1.80.0".to_owned(),
            attributes,
            ..Instance::default()
        };
        // Some tasks already running.
        for _ in 0..rng.gen_range(0..4) {
            let (tcpu, tmem) = (128 * rng.gen_range(1..4), 256 * rng.gen_range(1..5));
            if inst.remaining_cpu < tcpu || inst.remaining_memory < tmem {
                break;
            }
            inst.remaining_cpu -= tcpu;
            inst.remaining_memory -= tmem;
            let service = rng.gen_range(0..50);
            inst.running_tasks.push(TaskOnInstance {
                group: format!("service:svc{service}"),
                task_definition_arn: format!(
                    "arn:aws:ecs:us-east-1:123456789012:task-definition/svc{service}:1"
                ),
                family: format!("svc{service}"),
            });
            inst.running_tasks_count += 1;
        }
        instances.push(inst);
    }
    Snapshot::new(instances, 1_700_000_000)
}

fn request(count: usize, strategy: Vec<PlacementStrategy>) -> Request {
    Request {
        count,
        cpu: 256,
        memory: 512,
        group: "service:bench".into(),
        task_definition_arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/bench:1".into(),
        family: "bench".into(),
        strategy,
        ..Request::default()
    }
}

struct Outcome {
    placed: usize,
    unplaced: usize,
    in_place: Duration,
    total: Duration,
}

/// `groups > 1`: each call places tasks of one of that many services, in turn.
fn run(base: &Snapshot, req: &Request, placements: usize, groups: usize) -> Outcome {
    let mut snapshot = base.clone();
    let mut req = req.clone();
    let calls = placements / req.count.max(1);
    let mut out = Outcome {
        placed: 0,
        unplaced: 0,
        in_place: Duration::ZERO,
        total: Duration::ZERO,
    };
    let start = Instant::now();
    for call in 0..calls {
        if groups > 1 {
            req.group = format!("service:bench{}", call % groups);
        }
        let t = Instant::now();
        let plan = place(&snapshot, &req, call as u64);
        out.in_place += t.elapsed();
        out.placed += plan.placements.len();
        out.unplaced += plan.unplaced;
        snapshot
            .commit(&req, &plan)
            .expect("a fresh plan always commits");
    }
    out.total = start.elapsed();
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let instances: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let placements: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let filter = args.next().unwrap_or_default();
    let base = cluster(instances);
    println!(
        "{instances} instances, {placements} placements per scenario, each plan committed before the next call"
    );
    let az_binpack = vec![
        PlacementStrategy::Spread {
            field: SpreadField::Attribute("ecs.availability-zone".into()),
        },
        PlacementStrategy::Binpack {
            field: BinpackField::Memory,
        },
    ];
    let binpack = vec![PlacementStrategy::Binpack {
        field: BinpackField::Memory,
    }];
    let mut constrained = request(
        10,
        vec![PlacementStrategy::Spread {
            field: SpreadField::InstanceId,
        }],
    );
    constrained.constraints = vec![
        PlacementConstraint::MemberOf(
            Expression::parse(
                "attribute:ecs.instance-type =~ m5.* and attribute:ecs.os-type == linux",
            )
            .expect("valid expression"),
        ),
        PlacementConstraint::DistinctInstance,
    ];
    let scenarios = [
        ("binpack(memory), count=1", request(1, binpack.clone()), 1),
        ("binpack(memory), count=10", request(10, binpack), 1),
        (
            "spread(az)+binpack(memory), count=1",
            request(1, az_binpack.clone()),
            1,
        ),
        (
            "spread(az)+binpack(memory), count=10",
            request(10, az_binpack),
            1,
        ),
        ("random (no strategy), count=1", request(1, Vec::new()), 1),
        // 100 services in turn, each at most once per instance.
        (
            "spread(instanceId)+memberOf+distinctInstance, count=10",
            constrained,
            100,
        ),
    ];
    println!(
        "{:<58} {:>9} {:>9} {:>14} {:>14}",
        "scenario", "placed", "unplaced", "place/s", "place+commit/s"
    );
    let exact = scenarios.iter().any(|(name, _, _)| *name == filter);
    for (name, req, groups) in scenarios {
        if (exact && name != filter) || !name.contains(filter.as_str()) {
            continue;
        }
        let o = run(&base, &req, placements, groups);
        let rate = |d: Duration| o.placed as f64 / d.as_secs_f64().max(1e-9);
        println!(
            "{name:<58} {:>9} {:>9} {:>14.0} {:>14.0}",
            o.placed,
            o.unplaced,
            rate(o.in_place),
            rate(o.total)
        );
    }
}
