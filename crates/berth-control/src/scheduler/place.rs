//! The placement algorithm (see the module documentation of [`super`]).
//!
//! Per call: one pass over the snapshot's columns marks the instances that can take a task
//! (`ok`). Each task is then chosen by narrowing a copy of that mask key by key: one pass
//! finds the smallest value of the key among the instances still in, a second keeps only
//! the instances with that value; what is left after the last key is a set of ties, of
//! which one is drawn with the seeded generator. These passes are branch-free loops over
//! plain arrays, which the compiler vectorises. Instances the plan has already placed a task
//! on leave the mask and live in a short side list with their updated resources.

use std::cell::RefCell;

use super::query::Expression;
use super::snapshot::{saturate, AttrColumn, Snapshot, STATE_AGENT, STATE_NOT_ACTIVE, STATE_OK};
use super::{
    reason, BinpackField, Failure, Instance, Placement, PlacementConstraint, PlacementStrategy,
    Plan, Request, SpreadField,
};

/// Why an instance cannot take the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Status,
    Agent,
    Attribute,
    Cpu,
    Memory,
    Ports,
    PortsUdp,
    MemberOf,
    DistinctInstance,
}

impl Reason {
    fn text(self, inst: &Instance) -> String {
        match self {
            Reason::Status => return inst.status.clone(),
            Reason::Agent => reason::AGENT,
            Reason::Attribute => reason::ATTRIBUTE,
            Reason::Cpu => reason::CPU,
            Reason::Memory => reason::MEMORY,
            Reason::Ports => reason::PORTS,
            Reason::PortsUdp => reason::PORTS_UDP,
            Reason::MemberOf => reason::MEMBER_OF,
            Reason::DistinctInstance => reason::DISTINCT_INSTANCE,
        }
        .to_owned()
    }
}

/// One sort key; smaller is better.
#[derive(Debug, Clone, Copy)]
enum Key {
    Cpu,
    Mem,
    GroupTasks,
    /// `spread(attribute:...)`: index into the spread attributes.
    Bucket(usize),
}

/// An instance this plan has placed tasks on, with what is left of it.
#[derive(Debug, Clone, Copy)]
struct Touched {
    idx: u32,
    cpu: i64,
    mem: i64,
    group_tasks: u32,
    /// Set once the plan's own tasks have used the instance up.
    dead: Option<Reason>,
    /// Still tied in the current selection.
    tied: bool,
}

/// Buffers reused between calls (per thread), so a placement allocates almost nothing.
#[derive(Debug, Default)]
struct Scratch {
    /// Per instance: 1 if it can take a task and the plan has not touched it yet.
    ok: Vec<u8>,
    /// Per instance: 1 while still in the running for the current task.
    mask: Vec<u8>,
    /// Per instance: tasks of the request's group there (filled only when read).
    group_tasks: Vec<u32>,
    touched: Vec<Touched>,
    /// Per spread attribute: tasks of the group per bucket, this plan's included.
    counts: Vec<Vec<u32>>,
    /// Buffers of [`narrow_few_buckets`].
    order: Vec<u32>,
    set: Vec<u32>,
    table: Vec<u8>,
    touched_values: Vec<i64>,
}

/// SplitMix64: tiny, fast, and the same on every platform and `rand` version, so a seed
/// means the same plan forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// Places `request.count` tasks on the instances of `snapshot`. Deterministic in `seed`.
pub fn place(snapshot: &Snapshot, request: &Request, seed: u64) -> Plan {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => place_in(&mut scratch, snapshot, request, seed),
        Err(_) => place_in(&mut Scratch::default(), snapshot, request, seed),
    })
}

/// What a constraint needs at placement time.
enum Check<'a> {
    MemberOf {
        expr: &'a Expression,
        /// Re-evaluated after each placement on the instance.
        dynamic: bool,
        /// The snapshot's per-instance results, when it keeps them.
        members: Option<&'a [u8]>,
    },
    Distinct,
}

/// The request, compiled against one snapshot.
struct Ctx<'a> {
    snapshot: &'a Snapshot,
    req: &'a Request,
    keys: Vec<Key>,
    /// Per spread attribute, its column (`None`: no instance has it: one bucket).
    columns: Vec<Option<&'a AttrColumn>>,
    checks: Vec<Check<'a>>,
    needs_group_tasks: bool,
}

impl Ctx<'_> {
    /// Checks the mask passes cannot do (they do state, CPU, memory, distinctInstance and
    /// the memberOf expressions the snapshot keeps results for); run one instance at a time
    /// on the instances that passed those.
    fn has_scalar_checks(&self) -> bool {
        !self.req.required_attributes.is_empty()
            || !self.req.tcp_ports.is_empty()
            || !self.req.udp_ports.is_empty()
            || self
                .checks
                .iter()
                .any(|c| matches!(c, Check::MemberOf { members: None, .. }))
    }

    /// Why instance `i` cannot take a task (before this plan), in the documented order.
    fn reason(&self, i: usize, group_tasks: u32) -> Option<Reason> {
        let s = self.snapshot;
        let (req, inst) = (self.req, &s.instances()[i]);
        if s.state[i] == STATE_NOT_ACTIVE {
            return Some(Reason::Status);
        }
        if s.state[i] == STATE_AGENT {
            return Some(Reason::Agent);
        }
        if !req.required_attributes.iter().all(|r| {
            inst.attributes
                .get(&r.name)
                .is_some_and(|v| r.value.is_none() || *v == r.value)
        }) {
            return Some(Reason::Attribute);
        }
        if inst.remaining_cpu < req.cpu {
            return Some(Reason::Cpu);
        }
        if inst.remaining_memory < req.memory {
            return Some(Reason::Memory);
        }
        if req
            .tcp_ports
            .iter()
            .any(|p| inst.used_tcp_ports.contains(p))
        {
            return Some(Reason::Ports);
        }
        if req
            .udp_ports
            .iter()
            .any(|p| inst.used_udp_ports.contains(p))
        {
            return Some(Reason::PortsUdp);
        }
        self.checks.iter().find_map(|check| match check {
            Check::MemberOf {
                members: Some(m), ..
            } => (m.get(i) != Some(&1)).then_some(Reason::MemberOf),
            Check::MemberOf { expr, .. } => {
                (!expr.matches_with(inst, None)).then_some(Reason::MemberOf)
            }
            Check::Distinct => (group_tasks > 0).then_some(Reason::DistinctInstance),
        })
    }

    /// Why a touched instance can take no more tasks of this plan.
    fn reason_after(&self, t: &Touched) -> Option<Reason> {
        let req = self.req;
        if t.cpu < req.cpu {
            Some(Reason::Cpu)
        } else if t.mem < req.memory {
            Some(Reason::Memory)
        } else if !req.tcp_ports.is_empty() {
            Some(Reason::Ports)
        } else if !req.udp_ports.is_empty() {
            Some(Reason::PortsUdp)
        } else {
            let inst = &self.snapshot.instances()[t.idx as usize];
            self.checks.iter().find_map(|check| match check {
                Check::MemberOf {
                    expr,
                    dynamic: true,
                    ..
                } => (!expr.matches_with(inst, Some(&req.group))).then_some(Reason::MemberOf),
                Check::MemberOf { .. } => None,
                Check::Distinct => Some(Reason::DistinctInstance),
            })
        }
    }

    fn bucket(&self, k: usize, i: usize) -> usize {
        self.columns[k].map_or(0, |c| c.bucket(i) as usize)
    }

    fn touched_value(&self, key: Key, t: &Touched, counts: &[Vec<u32>]) -> i64 {
        match key {
            Key::Cpu => t.cpu,
            Key::Mem => t.mem,
            Key::GroupTasks => i64::from(t.group_tasks),
            Key::Bucket(k) => i64::from(counts[k][self.bucket(k, t.idx as usize)]),
        }
    }
}

fn compile<'a>(snapshot: &'a Snapshot, req: &'a Request) -> Ctx<'a> {
    let mut keys = Vec::with_capacity(req.strategy.len());
    let mut columns = Vec::new();
    for strategy in &req.strategy {
        keys.push(match strategy {
            PlacementStrategy::Random => break,
            PlacementStrategy::Binpack {
                field: BinpackField::Cpu,
            } => Key::Cpu,
            PlacementStrategy::Binpack {
                field: BinpackField::Memory,
            } => Key::Mem,
            PlacementStrategy::Spread {
                field: SpreadField::InstanceId | SpreadField::Host,
            } => Key::GroupTasks,
            PlacementStrategy::Spread {
                field: SpreadField::Attribute(name),
            } => {
                columns.push(snapshot.attrs.get(name));
                Key::Bucket(columns.len() - 1)
            }
        });
    }
    let checks: Vec<Check<'_>> = req
        .constraints
        .iter()
        .map(|c| match c {
            PlacementConstraint::DistinctInstance => Check::Distinct,
            PlacementConstraint::MemberOf(expr) => {
                let dynamic = expr.references_task_group();
                Check::MemberOf {
                    expr,
                    dynamic,
                    members: if dynamic {
                        None
                    } else {
                        snapshot.member_of(expr)
                    },
                }
            }
        })
        .collect();
    let needs_group_tasks = keys.iter().any(|k| matches!(k, Key::GroupTasks))
        || checks.iter().any(|c| matches!(c, Check::Distinct));
    Ctx {
        snapshot,
        req,
        keys,
        columns,
        checks,
        needs_group_tasks,
    }
}

/// The smallest of `values` where `mask` is set (`i64::MAX` if none).
fn masked_min(mask: &[u8], values: &[i32]) -> i64 {
    let (min, any) = mask
        .iter()
        .zip(values)
        .fold((i32::MAX, 0u8), |(m, any), (&b, &v)| {
            (if b != 0 { m.min(v) } else { m }, any | b)
        });
    if any == 0 {
        i64::MAX
    } else {
        i64::from(min)
    }
}

/// The smallest of `values` where `mask` is set (`i64::MAX` if none).
fn masked_min_u32(mask: &[u8], values: &[u32]) -> i64 {
    mask.iter().zip(values).fold(
        i64::MAX,
        |m, (&b, &v)| if b != 0 { m.min(i64::from(v)) } else { m },
    )
}

/// Clears `mask` where `values` differs from `keep`.
fn keep_equal(mask: &mut [u8], values: &[i32], keep: i64) {
    match i32::try_from(keep) {
        Ok(keep) => {
            for (b, &v) in mask.iter_mut().zip(values) {
                *b &= u8::from(v == keep);
            }
        }
        Err(_) => mask.fill(0),
    }
}

/// Attributes with at most this many buckets take the compare-based path in [`select`].
const FEW_BUCKETS: usize = 64;

/// Whether `id` is one of `set` (1 to 4 ids; shorter sets repeat their first).
#[inline(always)]
fn in4(set: &[u32; 4], id: u32) -> bool {
    (id == set[0]) | (id == set[1]) | (id == set[2]) | (id == set[3])
}

fn pad4(set: &[u32]) -> [u32; 4] {
    let first = set.first().copied().unwrap_or(u32::MAX);
    [
        first,
        set.get(1).copied().unwrap_or(first),
        set.get(2).copied().unwrap_or(first),
        set.get(3).copied().unwrap_or(first),
    ]
}

/// Whether some instance in `mask` has its bucket in `set` (`table[bucket]` is 1 for those).
fn any_in(mask: &[u8], ids: &[u32], set: &[u32], table: &[u8]) -> bool {
    const CHUNK: usize = 512;
    if set.len() <= 4 {
        let set = pad4(set);
        mask.chunks(CHUNK).zip(ids.chunks(CHUNK)).any(|(m, ids)| {
            m.iter()
                .zip(ids)
                .fold(0u8, |acc, (&b, &id)| acc | (b & u8::from(in4(&set, id))))
                != 0
        })
    } else {
        mask.chunks(CHUNK).zip(ids.chunks(CHUNK)).any(|(m, ids)| {
            m.iter().zip(ids).fold(0u8, |acc, (&b, &id)| {
                acc | (b & table.get(id as usize).copied().unwrap_or(0))
            }) != 0
        })
    }
}

/// Clears `mask` where the bucket is not in `set`.
fn keep_in(mask: &mut [u8], ids: &[u32], set: &[u32], table: &[u8]) {
    if set.len() <= 4 {
        let set = pad4(set);
        for (b, &id) in mask.iter_mut().zip(ids) {
            *b &= u8::from(in4(&set, id));
        }
    } else {
        for (b, &id) in mask.iter_mut().zip(ids) {
            *b &= table.get(id as usize).copied().unwrap_or(0);
        }
    }
}

/// `spread(attribute:...)` over few buckets: finds the smallest count among buckets holding
/// a candidate (fresh in `mask`, or a tied touched instance, whose values are `touched`),
/// keeps in `mask` only the instances of buckets with that count, and returns it.
fn narrow_few_buckets(
    mask: &mut [u8],
    ids: &[u32],
    counts: &[u32],
    touched: &[i64],
    order: &mut Vec<u32>,
    set: &mut Vec<u32>,
    table: &mut Vec<u8>,
) -> i64 {
    order.clear();
    order.extend(0..counts.len() as u32);
    order.sort_unstable_by_key(|&b| (counts[b as usize], b));
    let mut start = 0;
    while start < order.len() {
        let value = counts[order[start] as usize];
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&b| counts[b as usize] == value)
                .count();
        set.clear();
        set.extend_from_slice(&order[start..end]);
        table.clear();
        table.resize(counts.len(), 0);
        for &b in set.iter() {
            table[b as usize] = 1;
        }
        let value = i64::from(value);
        if touched.contains(&value) || any_in(mask, ids, set, table) {
            keep_in(mask, ids, set, table);
            return value;
        }
        start = end;
    }
    mask.fill(0);
    i64::MAX
}

/// Where the next task goes.
enum Choice {
    /// An instance the plan has not used yet.
    Fresh(usize),
    /// An entry of the touched list.
    Touched(usize),
}

/// Narrows `mask` (a copy of `ok`) and the touched list key by key, then draws among ties.
fn select(
    ctx: &Ctx<'_>,
    s: &mut Scratch,
    rng: &mut SplitMix64,
    fresh_left: usize,
) -> Option<Choice> {
    let snap = ctx.snapshot;
    let Scratch {
        ok,
        mask,
        group_tasks,
        touched,
        counts,
        order,
        set,
        table,
        touched_values,
    } = s;
    for t in touched.iter_mut() {
        t.tied = t.dead.is_none();
    }
    let touched_in = touched.iter().filter(|t| t.tied).count();
    if fresh_left == 0 && touched_in == 0 {
        return None;
    }
    mask.clear();
    mask.extend_from_slice(ok);
    for &key in &ctx.keys {
        if let Key::Bucket(k) = key {
            if let Some(column) = ctx.columns[k].filter(|_| counts[k].len() <= FEW_BUCKETS) {
                touched_values.clear();
                touched_values.extend(
                    touched
                        .iter()
                        .filter(|t| t.tied)
                        .map(|t| ctx.touched_value(key, t, counts)),
                );
                let min = narrow_few_buckets(
                    mask,
                    &column.ids,
                    &counts[k],
                    touched_values,
                    order,
                    set,
                    table,
                );
                for t in touched.iter_mut() {
                    if t.tied && ctx.touched_value(key, t, counts) != min {
                        t.tied = false;
                    }
                }
                continue;
            }
        }
        // The smallest value among those still in.
        let mut min = match key {
            Key::Cpu if fresh_left > 0 => masked_min(mask, &snap.cpu),
            Key::Mem if fresh_left > 0 => masked_min(mask, &snap.mem),
            Key::GroupTasks if fresh_left > 0 => masked_min_u32(mask, group_tasks),
            Key::Bucket(k) if fresh_left > 0 => match ctx.columns[k] {
                None => i64::from(counts[k][0]),
                Some(column) => {
                    let c = &counts[k];
                    mask.iter().zip(&column.ids).fold(i64::MAX, |m, (&b, &id)| {
                        if b != 0 {
                            m.min(i64::from(c[id as usize]))
                        } else {
                            m
                        }
                    })
                }
            },
            _ => i64::MAX,
        };
        for t in touched.iter().filter(|t| t.tied) {
            min = min.min(ctx.touched_value(key, t, counts));
        }
        // Keep only those with it.
        if fresh_left > 0 {
            match key {
                Key::Cpu => keep_equal(mask, &snap.cpu, min),
                Key::Mem => keep_equal(mask, &snap.mem, min),
                Key::GroupTasks => {
                    for (b, &v) in mask.iter_mut().zip(group_tasks.iter()) {
                        *b &= u8::from(i64::from(v) == min);
                    }
                }
                Key::Bucket(k) => {
                    if let Some(column) = ctx.columns[k] {
                        let c = &counts[k];
                        for (b, &id) in mask.iter_mut().zip(&column.ids) {
                            *b &= u8::from(i64::from(c[id as usize]) == min);
                        }
                    } else if i64::from(counts[k][0]) != min {
                        mask.fill(0);
                    }
                }
            }
        }
        for t in touched.iter_mut() {
            if t.tied && ctx.touched_value(key, t, counts) != min {
                t.tied = false;
            }
        }
    }
    // Draw one of the ties: fresh instances in index order, then touched ones.
    let fresh_ties: u64 = if fresh_left > 0 {
        mask.iter().map(|&b| u64::from(b)).sum()
    } else {
        0
    };
    let touched_ties = touched.iter().filter(|t| t.tied).count() as u64;
    let ties = fresh_ties + touched_ties;
    if ties == 0 {
        return None;
    }
    let mut r = rng.below(ties);
    if r < fresh_ties {
        for (i, &b) in mask.iter().enumerate() {
            if b != 0 {
                if r == 0 {
                    return Some(Choice::Fresh(i));
                }
                r -= 1;
            }
        }
        return None;
    }
    r -= fresh_ties;
    touched
        .iter()
        .enumerate()
        .filter(|(_, t)| t.tied)
        .nth(r as usize)
        .map(|(ti, _)| Choice::Touched(ti))
}

fn place_in(s: &mut Scratch, snapshot: &Snapshot, req: &Request, seed: u64) -> Plan {
    let mut plan = Plan::default();
    if req.count == 0 {
        return plan;
    }
    let ctx = compile(snapshot, req);
    let n = snapshot.len();

    s.touched.clear();
    s.counts.resize_with(ctx.columns.len(), Vec::new);
    for (k, strategy_attr) in req
        .strategy
        .iter()
        .filter_map(|st| match st {
            PlacementStrategy::Spread {
                field: SpreadField::Attribute(a),
            } => Some(a),
            _ => None,
        })
        .enumerate()
        .take(ctx.columns.len())
    {
        snapshot.spread_counts(&req.group, strategy_attr, &mut s.counts[k]);
    }
    s.group_tasks.clear();
    if ctx.needs_group_tasks {
        s.group_tasks.resize(n, 0);
        if let Some(group) = snapshot.groups.get(&req.group) {
            for (&i, &c) in group {
                if let Some(slot) = s.group_tasks.get_mut(i as usize) {
                    *slot = c;
                }
            }
        }
    }

    // Who can take one task: state, CPU and memory for everyone, in one tight loop...
    let (rc, rm) = (saturate(req.cpu), saturate(req.memory));
    s.ok.clear();
    s.ok.extend(
        snapshot
            .state
            .iter()
            .zip(&snapshot.cpu)
            .zip(&snapshot.mem)
            .map(|((&st, &c), &m)| u8::from((st == STATE_OK) & (c >= rc) & (m >= rm))),
    );
    // ...the constraints that have per-instance columns the same way...
    for check in &ctx.checks {
        match check {
            Check::MemberOf {
                members: Some(m), ..
            } => {
                for (b, &member) in s.ok.iter_mut().zip(m.iter()) {
                    *b &= member;
                }
            }
            Check::Distinct => {
                for (b, &g) in s.ok.iter_mut().zip(&s.group_tasks) {
                    *b &= u8::from(g == 0);
                }
            }
            Check::MemberOf { .. } => {}
        }
    }
    // ...and the rest one by one, only for those that passed.
    if ctx.has_scalar_checks() {
        for i in 0..n {
            if s.ok[i] != 0 {
                let g = s.group_tasks.get(i).copied().unwrap_or(0);
                if ctx.reason(i, g).is_some() {
                    s.ok[i] = 0;
                }
            }
        }
    }
    let mut fresh_left: usize = s.ok.iter().map(|&b| usize::from(b)).sum();

    let mut rng = SplitMix64(seed);
    for placed in 0..req.count {
        let Some(choice) = select(&ctx, s, &mut rng, fresh_left) else {
            plan.unplaced = req.count - placed;
            break;
        };
        let ti = match choice {
            Choice::Fresh(i) => {
                s.ok[i] = 0;
                fresh_left -= 1;
                s.touched.push(Touched {
                    idx: i as u32,
                    cpu: snapshot.instances()[i].remaining_cpu,
                    mem: snapshot.instances()[i].remaining_memory,
                    group_tasks: s.group_tasks.get(i).copied().unwrap_or(0),
                    dead: None,
                    tied: false,
                });
                s.touched.len() - 1
            }
            Choice::Touched(ti) => ti,
        };
        let mut t = s.touched[ti];
        plan.placements.push(Placement {
            instance_index: t.idx as usize,
            instance_arn: snapshot.instances()[t.idx as usize].arn.clone(),
        });
        t.cpu -= req.cpu;
        t.mem -= req.memory;
        t.group_tasks += 1;
        for k in 0..ctx.columns.len() {
            let b = ctx.bucket(k, t.idx as usize);
            s.counts[k][b] += 1;
        }
        t.dead = ctx.reason_after(&t);
        s.touched[ti] = t;
    }

    if plan.unplaced > 0 {
        let instances = snapshot.instances();
        let mut why: Vec<(u32, Reason)> = s
            .touched
            .iter()
            .filter_map(|t| t.dead.map(|r| (t.idx, r)))
            .collect();
        // Mark the touched instances: their reasons are already in.
        s.mask.clear();
        s.mask.resize(n, 0);
        for t in &s.touched {
            s.mask[t.idx as usize] = 1;
        }
        for i in 0..n {
            if s.mask[i] != 0 {
                continue;
            }
            let g = s.group_tasks.get(i).copied().unwrap_or(0);
            if let Some(r) = ctx.reason(i, g) {
                why.push((i as u32, r));
            }
        }
        why.sort_unstable_by_key(|&(i, _)| i);
        plan.failures = why
            .into_iter()
            .map(|(i, r)| {
                let inst = &instances[i as usize];
                Failure {
                    arn: inst.arn.clone(),
                    reason: r.text(inst),
                }
            })
            .collect();
    }
    plan
}
