//! Values to and from PostgreSQL's rows: timestamps to the microsecond, operations,
//! retry rows, dead letters and counts, each unreadable value named by its column.

use super::*;

/// A timestamp bound as PostgreSQL's `timestamptz`: microseconds since 2000-01-01 UTC.
///
/// Exact over every `i64` of Unix microseconds PostgreSQL can hold, which chrono's
/// `DateTime` (±262,143 years) is not; the encoding is the one sqlx uses for `DateTime`.
#[derive(Debug, Clone, Copy)]
pub(super) struct PgTime(pub(super) i64);

impl PgTime {
    /// A value to store; refused when PostgreSQL cannot hold it.
    pub(super) fn stored(micros: Micros) -> Result<PgTime, String> {
        if micros < PG_MIN_MICROS {
            return Err(format!(
                "{micros} µs since the Unix epoch is before 4714-11-24T00:00:00Z BC, \
                 the earliest timestamp PostgreSQL stores"
            ));
        }
        Ok(PgTime(micros - PG_EPOCH_MICROS))
    }

    /// A bound to compare with: an instant before PostgreSQL's range is `-infinity`,
    /// which sorts before every stored value just as the instant would.
    pub(super) fn bound(micros: Micros) -> PgTime {
        PgTime::stored(micros).unwrap_or(PgTime(i64::MIN))
    }
}

impl Type<Postgres> for PgTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl PgHasArrayType for PgTime {
    fn array_type_info() -> PgTypeInfo {
        <DateTime<Utc> as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for PgTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(self.0, buf)
    }

    fn size_hint(&self) -> usize {
        std::mem::size_of::<i64>()
    }
}

/// The Unix microseconds of the `timestamptz` in column `index` of `row`.
///
/// Decoded from the wire by hand: sqlx's chrono decoding panics on `infinity` and on
/// years chrono cannot represent, both of which a row written by hand may hold.
pub(super) fn micros_at(row: &PgRow, index: usize) -> Result<Micros, DbError> {
    let value = row.try_get_raw(index).map_err(map_error)?;
    let type_info = value.type_info().into_owned();
    let bad =
        |what: String| DbError::Other(format!("column {index} ({}): {what}", type_info.name()));
    // A `timestamp` without time zone comes cast by the query (`::timestamptz`), so the
    // session's zone applies; read raw, it would be taken as UTC whatever the zone.
    if !<PgTime as Type<Postgres>>::compatible(&type_info) {
        return Err(bad("expected a TIMESTAMPTZ".to_string()));
    }
    if value.is_null() {
        return Err(bad("unexpected NULL".to_string()));
    }
    if value.format() != PgValueFormat::Binary {
        return Err(bad("expected the binary format".to_string()));
    }
    let pg = <i64 as Decode<Postgres>>::decode(value).map_err(|e| bad(e.to_string()))?;
    if pg == i64::MIN || pg == i64::MAX {
        return Err(bad("the timestamp is infinite".to_string()));
    }
    pg.checked_add(PG_EPOCH_MICROS).ok_or_else(|| {
        bad(format!(
            "{pg} µs after 2000-01-01 is beyond the range of i64 Unix microseconds"
        ))
    })
}

/// `trustlog_retry` rows as the arrays [`UPSERT_RETRIES`] binds.
pub(super) struct RetryColumns {
    pub(super) op_id: Vec<String>,
    pub(super) retry_count: Vec<i64>,
    pub(super) retry_status: Vec<&'static str>,
    pub(super) last_retry_at: Vec<Option<PgTime>>,
    pub(super) next_retry_at: Vec<Option<PgTime>>,
    pub(super) error_message: Vec<String>,
    pub(super) now: PgTime,
}

impl RetryColumns {
    /// The columns of `retries`, written at `now`.
    pub(super) fn new(retries: Vec<RetryUpdate>, now: PgTime) -> Result<RetryColumns, DbError> {
        // One statement cannot update a row twice; the last update of an op_id wins, as
        // it would applied one after the other.
        let mut seen = HashSet::new();
        let mut retries: Vec<RetryUpdate> = retries
            .into_iter()
            .rev()
            .filter(|r| seen.insert(r.op_id.clone()))
            .collect();
        retries.reverse();
        let time = |field: &'static str, micros: Option<Micros>, op_id: &str| {
            micros
                .map(|m| {
                    PgTime::stored(m).map_err(|message| {
                        DbError::Invalid(FieldError::new(
                            field,
                            format!("op_id {op_id:?}: {message}"),
                        ))
                    })
                })
                .transpose()
        };
        let mut columns = RetryColumns {
            op_id: Vec::with_capacity(retries.len()),
            retry_count: Vec::with_capacity(retries.len()),
            retry_status: Vec::with_capacity(retries.len()),
            last_retry_at: Vec::with_capacity(retries.len()),
            next_retry_at: Vec::with_capacity(retries.len()),
            error_message: Vec::with_capacity(retries.len()),
            now,
        };
        for r in retries {
            columns
                .last_retry_at
                .push(time("last_retry_at", r.last_retry_at, &r.op_id)?);
            columns
                .next_retry_at
                .push(time("next_retry_at", r.next_retry_at, &r.op_id)?);
            columns.retry_count.push(i64::from(r.retry_count));
            columns.retry_status.push(r.retry_status.as_str());
            columns.error_message.push(r.error_message);
            columns.op_id.push(r.op_id);
        }
        Ok(columns)
    }
}

/// The [`Operation`] in the first [`OPERATION_COLUMN_COUNT`] columns of `row`.
pub(super) fn operation_at(row: &PgRow) -> Result<Result<Operation, RowFault>, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let text = |i: usize| -> Result<String, RowFault> {
        row.try_get(i)
            .map_err(|e| crate::db::fault(&op_id, TEXT_FIELDS[i], map_error(e)))
    };
    let optional = |i: usize| -> Result<Option<String>, RowFault> {
        row.try_get(i)
            .map_err(|e| crate::db::fault(&op_id, TEXT_FIELDS[i], map_error(e)))
    };
    let read = || -> Result<Operation, RowFault> {
        Ok(Operation {
            op_actor: text(1)?,
            doid: text(2)?,
            producer_id: text(3)?,
            request_body_hash: optional(4)?,
            response_body_hash: optional(5)?,
            op_source: text(6)?,
            op_type: text(7)?,
            do_prefix: text(8)?,
            do_repository: text(9)?,
            client_ip: optional(10)?,
            server_ip: optional(11)?,
            timestamp: micros_at(row, 12).map_err(|e| crate::db::fault(&op_id, "timestamp", e))?,
            op_id: op_id.clone(),
        })
    };
    Ok(read())
}

/// Like [`micros_at`], for a nullable column.
pub(super) fn optional_micros_at(row: &PgRow, index: usize) -> Result<Option<Micros>, DbError> {
    if row.try_get_raw(index).map_err(map_error)?.is_null() {
        return Ok(None);
    }
    micros_at(row, index).map(Some)
}

/// The [`DeadLetter`] in the columns `dead_letter_columns!` lists.
pub(super) fn dead_letter_at(row: &PgRow) -> Result<DeadLetter, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let count: i64 = row.try_get(2).map_err(map_error)?;
    let retry_count = u32::try_from(count)
        .map_err(|_| DbError::Other(format!("retry_count {count} of {op_id:?} is out of range")))?;
    let error_message: Option<String> = row.try_get(3).map_err(map_error)?;
    Ok(DeadLetter {
        timestamp: micros_at(row, 1).ok(),
        retry_count,
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: micros_at(row, 4)?,
        updated_at: micros_at(row, 5)?,
        last_retry_at: optional_micros_at(row, 6)?,
        op_id,
    })
}

/// The [`FoundOperation`] in the columns `found_columns!` lists.
pub(super) fn found_at(row: &PgRow) -> Result<FoundOperation, DbError> {
    let read = operation_at(row)?;
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let trustlog_status = row.try_get(col::STATUS).map_err(map_error)?;
    let timestamp = row.try_get(col::TIMESTAMP).map_err(map_error)?;
    let retry = match row
        .try_get::<Option<String>, _>(col::RETRY_OP_ID)
        .map_err(map_error)?
    {
        Some(_) => Some(retry_at(row, &op_id)?),
        None => None,
    };
    Ok(FoundOperation::assemble(
        op_id,
        read,
        trustlog_status,
        timestamp,
        retry,
    ))
}

/// The retry row of `op_id` in the columns `found_columns!` lists.
fn retry_at(row: &PgRow, op_id: &str) -> Result<search::RetryRow, DbError> {
    let fault = |column: &'static str| move |e: DbError| search::retry_fault(op_id, column, e);
    let sql_fault = |column: &'static str| move |e: sqlx::Error| fault(column)(map_error(e));
    let count: i64 = row
        .try_get(col::RETRY_COUNT)
        .map_err(sql_fault("retry_count"))?;
    let error_message: Option<String> = row
        .try_get(col::ERROR_MESSAGE)
        .map_err(sql_fault("error_message"))?;
    Ok(search::RetryRow {
        retry_count: search::retry_count(op_id, count)?,
        retry_status: row
            .try_get(col::RETRY_STATUS)
            .map_err(sql_fault("retry_status"))?,
        last_retry_at: optional_micros_at(row, col::LAST_RETRY_AT)
            .map_err(fault("last_retry_at"))?,
        next_retry_at: optional_micros_at(row, col::NEXT_RETRY_AT)
            .map_err(fault("next_retry_at"))?,
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: micros_at(row, col::CREATED_AT).map_err(fault("created_at"))?,
        updated_at: micros_at(row, col::UPDATED_AT).map_err(fault("updated_at"))?,
    })
}

/// The `COUNT(*)` in column 1 of `row`.
pub(super) fn count_at(row: &PgRow) -> Result<u64, DbError> {
    count_in(row, 1)
}

/// The count in column `index`.
pub(super) fn count_in(row: &PgRow, index: usize) -> Result<u64, DbError> {
    let count: i64 = row.try_get(index).map_err(map_error)?;
    u64::try_from(count).map_err(|_| DbError::Other(format!("negative count {count}")))
}
