//! The settings `[defaults]` and a tenant share, and the values they are written in:
//! durations, sizes, strategies and ranges, each checked and named in errors.

use super::*;

/// The settings `[defaults]` and a `[[tenant]]` share, resolved.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) engine: Config,
    pub(super) intervals: Intervals,
    pub(super) limits: Limits,
    pub(super) poll_only: bool,
}

impl Default for Settings {
    /// The command line's defaults, so a one-tenant file behaves like the flags.
    fn default() -> Self {
        Settings {
            engine: Config::default(),
            intervals: Intervals::default(),
            limits: Limits::default(),
            poll_only: false,
        }
    }
}

/// `base` with whatever `raw` sets; errors name fields under `scope`.
pub(super) fn apply(
    raw: RawSettings,
    base: &Settings,
    scope: &str,
) -> Result<Settings, ConfigError> {
    let mut settings = base.clone();
    apply_engine(&raw, &mut settings.engine, scope)?;
    apply_intervals(&raw, &mut settings.intervals, scope)?;
    if let Some(limits) = &raw.limits {
        apply_limits(limits, &mut settings.limits, &join(scope, "limits"))?;
    }
    if let Some(poll_only) = raw.poll_only {
        settings.poll_only = poll_only;
    }
    Ok(settings)
}

pub(super) fn apply_engine(
    raw: &RawSettings,
    engine: &mut Config,
    scope: &str,
) -> Result<(), ConfigError> {
    let field = |key: &str| join(scope, key);
    if let Some(v) = &raw.strategy {
        engine.default_strategy = parse_strategy(v, field("strategy"))?;
    }
    if let Some(v) = raw.batch_size {
        engine.batch_size = in_range(v, 1, i64::from(MAX_BATCH_SIZE), field("batch_size"))?;
    }
    if let Some(v) = raw.pipeline_depth {
        engine.pipeline_depth =
            in_range(v, 1, i64::from(MAX_PIPELINE_DEPTH), field("pipeline_depth"))?;
    }
    if let Some(v) = &raw.cursor_key {
        engine.cursor_key = non_empty(v.clone(), field("cursor_key"))?;
    }
    if let Some(v) = &raw.catch_up_window {
        engine.catch_up_window_micros = micros(duration(v, field("catch_up_window"))?);
    }
    let backoff = &mut engine.backoff;
    if let Some(v) = &raw.backoff_base {
        backoff.base_micros = micros(duration(v, field("backoff_base"))?);
    }
    if let Some(v) = raw.backoff_factor {
        // A factor of 0 would make every retry after the first immediate.
        backoff.factor = in_range(v, 1, i64::from(u32::MAX), field("backoff_factor"))?;
    }
    if let Some(v) = &raw.backoff_cap {
        backoff.cap_micros = micros(duration(v, field("backoff_cap"))?);
    }
    if let Some(v) = raw.max_retries {
        backoff.max_retries = in_range(v, 0, i64::from(u32::MAX), field("max_retries"))?;
    }
    Ok(())
}

pub(super) fn apply_intervals(
    raw: &RawSettings,
    intervals: &mut Intervals,
    scope: &str,
) -> Result<(), ConfigError> {
    let field = |key: &str| join(scope, key);
    if let Some(v) = &raw.poll_interval {
        intervals.poll = interval(v, field("poll_interval"))?;
    }
    if let Some(v) = &raw.retry_interval {
        intervals.retry = interval(v, field("retry_interval"))?;
    }
    if let Some(v) = &raw.sweep_interval {
        intervals.sweep = interval(v, field("sweep_interval"))?;
    }
    if let Some(v) = &raw.watch_interval {
        intervals.watch = interval(v, field("watch_interval"))?;
    }
    if let Some(v) = &raw.lease_ttl {
        intervals.lease_ttl = at_least(v, Duration::from_secs(1), field("lease_ttl"))?;
    }
    Ok(())
}

pub(super) fn apply_limits(
    raw: &RawLimits,
    limits: &mut Limits,
    scope: &str,
) -> Result<(), ConfigError> {
    let field = |key: &str| join(scope, key);
    let max_usize = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
    if let Some(v) = &raw.memory {
        limits.memory_bytes = size(v, field("memory"), MIN_MEMORY_BYTES, usize::MAX)?;
    }
    if let Some(v) = &raw.cpu_per_call {
        // No time at all would trap every call at its first epoch check.
        limits.cpu_per_call = interval(v, field("cpu_per_call"))?;
    }
    if let Some(v) = raw.table_elements {
        limits.table_elements = in_range(v, 0, max_usize, field("table_elements"))?;
    }
    if let Some(v) = raw.log_lines_per_sec {
        limits.log_lines_per_sec = in_range(v, 0, i64::from(u32::MAX), field("log_lines_per_sec"))?;
    }
    if let Some(v) = &raw.restart_after {
        limits.restart_after = match v.as_str() {
            "never" => None,
            // A restart with no pause at all would spin a guest that fails at once.
            _ => Some(at_least(
                v,
                Duration::from_millis(10),
                field("restart_after"),
            )?),
        };
    }
    apply_request_limits(
        raw.request_body.as_ref(),
        raw.request_operations,
        &mut limits.requests,
        &field,
    )
}

/// `request_body` and `request_operations`, of a tenant's limits or a credential.
pub(super) fn apply_request_limits(
    body: Option<&toml::Value>,
    operations: Option<i64>,
    limits: &mut RequestLimits,
    field: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if let Some(v) = body {
        limits.body_bytes = size(
            v,
            field("request_body"),
            MIN_REQUEST_BYTES,
            MAX_REQUEST_BYTES,
        )?;
    }
    if let Some(v) = operations {
        limits.operations = in_range(v, 1, 1_000_000, field("request_operations"))?;
    }
    Ok(())
}

pub(super) fn parse_strategy(value: &str, field: String) -> Result<Strategy, ConfigError> {
    value.parse().map_err(
        |e: trustlog_guest::model::FieldError| ConfigError::BadStrategy {
            field,
            reason: e.message,
        },
    )
}

/// `value` as a `T`, if within `min..=max` (TOML integers are all i64).
pub(super) fn in_range<T: TryFrom<i64>>(
    value: i64,
    min: i64,
    max: i64,
    field: String,
) -> Result<T, ConfigError> {
    let out_of_range = || ConfigError::OutOfRange {
        field: field.clone(),
        value,
        min,
        max,
    };
    if !(min..=max).contains(&value) {
        return Err(out_of_range());
    }
    T::try_from(value).map_err(|_| out_of_range())
}

pub(super) fn duration(value: &str, field: String) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| ConfigError::BadDuration {
        field,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// A duration a timer ticks at: zero would spin.
pub(super) fn interval(value: &str, field: String) -> Result<Duration, ConfigError> {
    let d = duration(value, field.clone())?;
    if d.is_zero() {
        return Err(ConfigError::BadDuration {
            field,
            value: value.to_string(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(d)
}

/// A duration of at least `min`.
pub(super) fn at_least(value: &str, min: Duration, field: String) -> Result<Duration, ConfigError> {
    let d = duration(value, field.clone())?;
    if d < min {
        return Err(ConfigError::BadDuration {
            field,
            value: value.to_string(),
            reason: format!("must be at least {}", humantime::format_duration(min)),
        });
    }
    Ok(d)
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A size: an integer of bytes or a string like `"64MiB"`, within `min..=max`.
pub(super) fn size(
    value: &toml::Value,
    field: String,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let bad = |reason: String| ConfigError::BadSize {
        field: field.clone(),
        value: match value {
            toml::Value::String(s) => format!("{s:?}"),
            toml::Value::Integer(n) => n.to_string(),
            other => format!("(a {})", other.type_str()),
        },
        reason,
    };
    let bytes = match value {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| bad("negative".into()))?,
        toml::Value::String(s) => parse_size(s).map_err(bad)?,
        _ => {
            return Err(bad(
                "expected a size like \"64MiB\" or a number of bytes".into()
            ));
        }
    };
    let bytes = usize::try_from(bytes).map_err(|_| bad("too large".into()))?;
    if bytes < min {
        return Err(bad(format!("below the minimum of {}", show_size(min))));
    }
    if bytes > max {
        return Err(bad(format!("above the maximum of {}", show_size(max))));
    }
    Ok(bytes)
}

/// `bytes` in the largest binary unit that divides it.
pub(super) fn show_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// `"64MiB"`, `"512 KiB"`, `"1GiB"`, `"1048576B"` or `"1048576"`, in bytes.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a number followed by B, KiB, MiB or GiB".to_string())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        // Decimal units are a common slip; say so rather than guess which was meant.
        "K" | "KB" | "kB" | "M" | "MB" | "G" | "GB" => {
            return Err(format!(
                "unit {:?} is ambiguous; use KiB, MiB or GiB",
                unit.trim()
            ));
        }
        other => return Err(format!("unknown unit {other:?}; use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| "too large".to_string())
}
