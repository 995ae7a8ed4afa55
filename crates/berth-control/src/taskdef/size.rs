//! Task-level `cpu` and `memory` strings: CPU units or vCPUs, MiB or GB. ECS converts the unit
//! forms when the task definition is registered and echoes the numbers (`"1 vCPU"` → `"1024"`,
//! `"0.5 GB"` → `"512"`).

/// Smallest and largest task-level CPU ECS accepts (0.125 and 192 vCPU).
pub const TASK_CPU_RANGE: std::ops::RangeInclusive<u32> = 128..=196_608;
/// Smallest task-level memory we accept: Docker's minimum for one container.
pub const MIN_TASK_MEMORY_MIB: u32 = 6;
/// Largest task-level memory we accept (the largest Fargate size, 120 GB, is well under it).
pub const MAX_TASK_MEMORY_MIB: u32 = 16 * 1024 * 1024;

/// Parses a task-level `cpu`: `"256"` (units), `"0.25 vCPU"` / `"1 vcpu"` / `"2vCPU"` (× 1024).
/// `None` when the text is not one of those forms, is not a whole number of units, or is outside
/// [`TASK_CPU_RANGE`].
pub fn parse_task_cpu(text: &str) -> Option<u32> {
    let t = text.trim();
    let units = match strip_suffix_ignore_case(t, "vcpu") {
        Some(number) => scaled_decimal(number.trim_end(), 1024)?,
        None => plain_integer(t)?,
    };
    TASK_CPU_RANGE.contains(&units).then_some(units)
}

/// Parses a task-level `memory`: `"512"` (MiB), `"1 GB"` / `"0.5GB"` / `"2 gb"` (× 1024).
pub fn parse_task_memory(text: &str) -> Option<u32> {
    let t = text.trim();
    let mib = match strip_suffix_ignore_case(t, "gb") {
        Some(number) => scaled_decimal(number.trim_end(), 1024)?,
        None => plain_integer(t)?,
    };
    (MIN_TASK_MEMORY_MIB..=MAX_TASK_MEMORY_MIB)
        .contains(&mib)
        .then_some(mib)
}

/// Whether Fargate offers this cpu/memory pair (the table in ECS's `TaskDefinition.memory` doc).
pub fn is_fargate_size(cpu_units: u32, memory_mib: u32) -> bool {
    let gb = |n: u32| n * 1024;
    let stepped = |lo: u32, hi: u32, step: u32| {
        (lo..=hi).contains(&memory_mib) && (memory_mib - lo).is_multiple_of(step)
    };
    match cpu_units {
        256 => matches!(memory_mib, 512 | 1024 | 2048),
        512 => stepped(gb(1), gb(4), gb(1)),
        1024 => stepped(gb(2), gb(8), gb(1)),
        2048 => stepped(gb(4), gb(16), gb(1)),
        4096 => stepped(gb(8), gb(30), gb(1)),
        8192 => stepped(gb(16), gb(60), gb(4)),
        16384 => stepped(gb(32), gb(120), gb(8)),
        _ => false,
    }
}

fn strip_suffix_ignore_case<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let split = text.len().checked_sub(suffix.len())?;
    let (head, tail) = (text.get(..split)?, text.get(split..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// Digits only, no sign, no surrounding text.
fn plain_integer(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `"1"`, `"0.25"`, `".5"`, `"2."` times `scale`, exactly: `None` unless the product is whole.
fn scaled_decimal(text: &str, scale: u64) -> Option<u32> {
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int_part) || !digits(frac_part) || frac_part.len() > 9 {
        return None;
    }
    let int: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().ok()?
    };
    let frac: u64 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().ok()?
    };
    let denom = 10u64.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
    let frac_scaled = frac.checked_mul(scale)?;
    if frac_scaled % denom != 0 {
        return None;
    }
    let total = int.checked_mul(scale)?.checked_add(frac_scaled / denom)?;
    u32::try_from(total).ok()
}
