//! The cluster snapshot and the index placement reads.

use std::collections::{BTreeMap, HashMap};

use super::query::Expression;

use super::{
    reason, Instance, PlacementConstraint, PlacementStrategy, Plan, Request, SpreadField,
    TaskOnInstance, ACTIVE,
};

/// Why a plan could not be committed: the snapshot changed since it was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("stale plan: instance {index} is not {arn}")]
    UnknownInstance { index: usize, arn: String },
    #[error("stale plan: instance {arn} can no longer take the tasks ({reason})")]
    NoLongerFits { arn: String, reason: String },
}

/// Values of the `state` column.
pub(super) const STATE_OK: u8 = 0;
pub(super) const STATE_NOT_ACTIVE: u8 = 1;
pub(super) const STATE_AGENT: u8 = 2;

fn state_of(inst: &Instance) -> u8 {
    if inst.status != ACTIVE {
        STATE_NOT_ACTIVE
    } else if !inst.agent_connected {
        STATE_AGENT
    } else {
        STATE_OK
    }
}

/// The id of "no such attribute"; values get ids from 1, so ids never move.
pub(super) const MISSING: u32 = 0;

/// One attribute name's values, interned: `ids[instance]` is the value's id or [`MISSING`].
#[derive(Debug, Clone, Default)]
pub(super) struct AttrColumn {
    pub ids: Vec<u32>,
    values: HashMap<Option<String>, u32>,
}

impl AttrColumn {
    /// Buckets for `spread`: one per value ever seen, plus one for "no such attribute".
    pub fn buckets(&self) -> usize {
        self.values.len() + 1
    }

    pub fn bucket(&self, instance: usize) -> u32 {
        self.ids.get(instance).copied().unwrap_or(MISSING)
    }
}

/// The instances of a cluster at one moment, with the index placement reads.
///
/// Change it only through its methods, which keep the index right: [`Self::commit`] for
/// plans, [`Self::update_instance`] for anything else about an instance (a task stopped, an
/// attribute put, a status change), [`Self::push_instance`] and [`Self::remove_instance`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    instances: Vec<Instance>,
    now_epoch_secs: i64,
    /// What every placement reads of every instance, as columns (one entry per instance)
    /// so the scans over them are tight loops the compiler vectorises.
    /// Remaining CPU and memory, saturated to `i32` (2^31 MiB is 2 PiB): 32-bit lanes
    /// vectorise on every x86-64, 64-bit compares do not.
    pub(super) cpu: Vec<i32>,
    pub(super) mem: Vec<i32>,
    pub(super) state: Vec<u8>,
    /// group → instance index → tasks of that group there.
    pub(super) groups: HashMap<String, BTreeMap<u32, u32>>,
    pub(super) attrs: HashMap<String, AttrColumn>,
    /// group → attribute → tasks of the group per bucket of the attribute, for the pairs
    /// `spread(attribute:...)` has been committed with (see [`Self::spread_counts`]).
    spread: HashMap<String, HashMap<String, Vec<u32>>>,
    /// `memberOf` expressions that placing tasks cannot change (no `task:group`), with their
    /// result per instance (1: member), for those committed with (see [`Self::member_of`]).
    member_of: Vec<(Expression, Vec<u8>)>,
    by_arn: HashMap<String, usize>,
}

/// Most `memberOf` expressions a snapshot keeps results for.
const MAX_CACHED_EXPRESSIONS: usize = 32;

impl Snapshot {
    pub fn new(instances: Vec<Instance>, now_epoch_secs: i64) -> Self {
        let mut s = Snapshot {
            instances,
            now_epoch_secs,
            ..Snapshot::default()
        };
        s.rebuild();
        s
    }

    fn rebuild(&mut self) {
        let n = self.instances.len();
        self.cpu = vec![0; n];
        self.mem = vec![0; n];
        self.state = vec![STATE_OK; n];
        self.groups.clear();
        self.attrs.clear();
        self.spread.clear();
        for (_, members) in &mut self.member_of {
            members.clear();
            members.resize(n, 0);
        }
        self.by_arn.clear();
        for i in 0..self.instances.len() {
            self.index(i);
        }
    }

    /// Adds instance `i` to the index.
    fn index(&mut self, i: usize) {
        let n = self.instances.len();
        self.set_columns(i);
        let inst = &self.instances[i];
        for (expr, members) in &mut self.member_of {
            members[i] = u8::from(expr.matches(inst));
        }
        self.by_arn.insert(inst.arn.clone(), i);
        for task in &inst.running_tasks {
            add_group(&mut self.groups, &task.group, i, 1);
        }
        for (name, value) in &inst.attributes {
            let column = match self.attrs.get_mut(name) {
                Some(c) => c,
                None => self
                    .attrs
                    .entry(name.clone())
                    .or_insert_with(|| AttrColumn {
                        ids: vec![MISSING; n],
                        values: HashMap::new(),
                    }),
            };
            let next = column.values.len() as u32 + 1;
            let id = match column.values.get(value) {
                Some(&id) => id,
                None => {
                    column.values.insert(value.clone(), next);
                    next
                }
            };
            column.ids[i] = id;
        }
        for t in 0..inst.running_tasks.len() {
            let group = &self.instances[i].running_tasks[t].group;
            spread_add(&mut self.spread, &self.attrs, group, i, 1);
        }
    }

    fn set_columns(&mut self, i: usize) {
        let inst = &self.instances[i];
        self.cpu[i] = saturate(inst.remaining_cpu);
        self.mem[i] = saturate(inst.remaining_memory);
        self.state[i] = state_of(inst);
    }

    /// Takes instance `i` out of the index.
    fn unindex(&mut self, i: usize) {
        let inst = &self.instances[i];
        if self.by_arn.get(&inst.arn) == Some(&i) {
            self.by_arn.remove(&inst.arn);
        }
        for task in &inst.running_tasks {
            remove_group(&mut self.groups, &task.group, i, 1);
            spread_add(&mut self.spread, &self.attrs, &task.group, i, -1);
        }
        for name in inst.attributes.keys() {
            if let Some(column) = self.attrs.get_mut(name) {
                column.ids[i] = MISSING;
            }
        }
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    pub fn instance(&self, index: usize) -> Option<&Instance> {
        self.instances.get(index)
    }

    /// The index of the instance with this `containerInstanceArn`.
    pub fn position(&self, arn: &str) -> Option<usize> {
        self.by_arn.get(arn).copied()
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// When the snapshot was taken (the caller's clock).
    pub fn now_epoch_secs(&self) -> i64 {
        self.now_epoch_secs
    }

    pub fn set_now_epoch_secs(&mut self, now: i64) {
        self.now_epoch_secs = now;
    }

    /// Adds an instance; returns its index.
    pub fn push_instance(&mut self, instance: Instance) -> usize {
        self.instances.push(instance);
        self.cpu.push(0);
        self.mem.push(0);
        self.state.push(STATE_OK);
        for (_, members) in &mut self.member_of {
            members.push(0);
        }
        for column in self.attrs.values_mut() {
            column.ids.push(MISSING);
        }
        let i = self.instances.len() - 1;
        self.index(i);
        i
    }

    /// Removes an instance (the indices after it shift down by one).
    pub fn remove_instance(&mut self, index: usize) -> Option<Instance> {
        if index >= self.instances.len() {
            return None;
        }
        let removed = self.instances.remove(index);
        self.rebuild();
        Some(removed)
    }

    /// Changes instance `index` in place; false if there is none.
    pub fn update_instance(&mut self, index: usize, change: impl FnOnce(&mut Instance)) -> bool {
        if index >= self.instances.len() {
            return false;
        }
        self.unindex(index);
        change(&mut self.instances[index]);
        self.index(index);
        true
    }

    /// Records a plan made from this snapshot, as the applier does once the plan is durable:
    /// each placement takes its CPU, memory and ports from the instance and adds a pending
    /// task of the request's group there. A plan that no longer fits (the instance changed
    /// since) is refused whole, and nothing changes.
    pub fn commit(&mut self, request: &Request, plan: &Plan) -> Result<(), CommitError> {
        let mut per_instance: BTreeMap<usize, i64> = BTreeMap::new();
        for p in &plan.placements {
            match self.instances.get(p.instance_index) {
                Some(inst) if inst.arn == p.instance_arn => {
                    *per_instance.entry(p.instance_index).or_default() += 1;
                }
                _ => {
                    return Err(CommitError::UnknownInstance {
                        index: p.instance_index,
                        arn: p.instance_arn.clone(),
                    })
                }
            }
        }
        let distinct = request
            .constraints
            .iter()
            .any(|c| matches!(c, PlacementConstraint::DistinctInstance));
        for (&i, &k) in &per_instance {
            let inst = &self.instances[i];
            let unfit = if inst.status != ACTIVE {
                Some(inst.status.as_str())
            } else if !inst.agent_connected {
                Some(reason::AGENT)
            } else if inst.remaining_cpu < request.cpu.saturating_mul(k) {
                Some(reason::CPU)
            } else if inst.remaining_memory < request.memory.saturating_mul(k) {
                Some(reason::MEMORY)
            } else if !request.tcp_ports.is_empty()
                && (k > 1
                    || request
                        .tcp_ports
                        .iter()
                        .any(|p| inst.used_tcp_ports.contains(p)))
            {
                Some(reason::PORTS)
            } else if !request.udp_ports.is_empty()
                && (k > 1
                    || request
                        .udp_ports
                        .iter()
                        .any(|p| inst.used_udp_ports.contains(p)))
            {
                Some(reason::PORTS_UDP)
            } else if distinct
                && (k > 1
                    || self
                        .groups
                        .get(&request.group)
                        .is_some_and(|g| g.contains_key(&(i as u32))))
            {
                Some(reason::DISTINCT_INSTANCE)
            } else {
                None
            };
            if let Some(reason) = unfit {
                return Err(CommitError::NoLongerFits {
                    arn: inst.arn.clone(),
                    reason: reason.to_owned(),
                });
            }
        }
        // Start keeping per-bucket counts for the spreads this group uses.
        for strategy in &request.strategy {
            if let PlacementStrategy::Spread {
                field: SpreadField::Attribute(attr),
            } = strategy
            {
                let known = self
                    .spread
                    .get(&request.group)
                    .is_some_and(|m| m.contains_key(attr));
                if !known {
                    let mut counts = Vec::new();
                    self.spread_counts(&request.group, attr, &mut counts);
                    self.spread
                        .entry(request.group.clone())
                        .or_default()
                        .insert(attr.clone(), counts);
                }
            }
        }
        // And start keeping the results of its task-independent memberOf expressions.
        for c in &request.constraints {
            if let PlacementConstraint::MemberOf(expr) = c {
                if !expr.references_task_group()
                    && self.member_of.len() < MAX_CACHED_EXPRESSIONS
                    && self.member_of(expr).is_none()
                {
                    let members = self
                        .instances
                        .iter()
                        .map(|inst| u8::from(expr.matches(inst)))
                        .collect();
                    self.member_of.push((expr.clone(), members));
                }
            }
        }
        for (&i, &k) in &per_instance {
            let inst = &mut self.instances[i];
            inst.remaining_cpu -= request.cpu.saturating_mul(k);
            inst.remaining_memory -= request.memory.saturating_mul(k);
            inst.used_tcp_ports
                .extend(request.tcp_ports.iter().copied());
            inst.used_udp_ports
                .extend(request.udp_ports.iter().copied());
            for _ in 0..k {
                inst.running_tasks.push(TaskOnInstance {
                    group: request.group.clone(),
                    task_definition_arn: request.task_definition_arn.clone(),
                    family: request.family.clone(),
                });
            }
            inst.pending_tasks_count = inst
                .pending_tasks_count
                .saturating_add(u32::try_from(k).unwrap_or(u32::MAX));
            self.set_columns(i);
            add_group(&mut self.groups, &request.group, i, k as u32);
            spread_add(&mut self.spread, &self.attrs, &request.group, i, k);
        }
        Ok(())
    }

    /// Per instance, whether it is a member of `expr` (1) or not (0), when a commit has
    /// asked for that expression.
    pub(super) fn member_of(&self, expr: &Expression) -> Option<&[u8]> {
        self.member_of
            .iter()
            .find(|(e, _)| e == expr)
            .map(|(_, members)| members.as_slice())
    }

    /// Tasks of `group` per bucket of attribute `attr` (bucket 0: instances without it),
    /// written to `out`: from the maintained counts when a commit has asked for them, else
    /// summed over the group's instances.
    pub(super) fn spread_counts(&self, group: &str, attr: &str, out: &mut Vec<u32>) {
        out.clear();
        out.resize(self.attrs.get(attr).map_or(1, AttrColumn::buckets), 0);
        if let Some(counts) = self.spread.get(group).and_then(|m| m.get(attr)) {
            for (o, &c) in out.iter_mut().zip(counts) {
                *o = c;
            }
            return;
        }
        if let (Some(column), Some(per_instance)) = (self.attrs.get(attr), self.groups.get(group)) {
            for (&i, &n) in per_instance {
                out[column.bucket(i as usize) as usize] += n;
            }
        }
    }
}

/// `v` as an `i32`, clamped.
pub(super) fn saturate(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

/// Adds `delta` tasks of `group` on instance `i` to the maintained spread counts.
fn spread_add(
    spread: &mut HashMap<String, HashMap<String, Vec<u32>>>,
    attrs: &HashMap<String, AttrColumn>,
    group: &str,
    i: usize,
    delta: i64,
) {
    let Some(per_attr) = spread.get_mut(group) else {
        return;
    };
    for (attr, counts) in per_attr.iter_mut() {
        let bucket = attrs.get(attr).map_or(MISSING, |c| c.bucket(i)) as usize;
        if counts.len() <= bucket {
            counts.resize(bucket + 1, 0);
        }
        let c = &mut counts[bucket];
        *c = u32::try_from((i64::from(*c) + delta).max(0)).unwrap_or(u32::MAX);
    }
}

fn add_group(groups: &mut HashMap<String, BTreeMap<u32, u32>>, group: &str, i: usize, k: u32) {
    let per_instance = match groups.get_mut(group) {
        Some(m) => m,
        None => groups.entry(group.to_owned()).or_default(),
    };
    *per_instance.entry(i as u32).or_default() += k;
}

fn remove_group(groups: &mut HashMap<String, BTreeMap<u32, u32>>, group: &str, i: usize, k: u32) {
    let Some(per_instance) = groups.get_mut(group) else {
        return;
    };
    if let Some(count) = per_instance.get_mut(&(i as u32)) {
        *count = count.saturating_sub(k);
        if *count == 0 {
            per_instance.remove(&(i as u32));
        }
    }
    if per_instance.is_empty() {
        groups.remove(group);
    }
}
