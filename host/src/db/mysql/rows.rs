//! Values to and from MySQL/MariaDB rows: op_id lists, `DATETIME(6)` to the
//! microsecond, operations, dead letters and counts, each unreadable value named by its
//! column.

use super::*;

/// Appends `(?, ?, ...)` binding `ids`; callers never pass an empty list.
pub(super) fn push_id_list<'a>(qb: &mut QueryBuilder<MySql>, ids: impl Iterator<Item = &'a str>) {
    qb.push("(");
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    list.push_unseparated(")");
}

/// Refuses an op_id that the PAD SPACE key collation would not order by its bytes: one
/// ending in a space (equal to the op_id without it) or holding an ASCII control
/// character (sorting before the op_id without it). The schema's `operation_op_id_chars`
/// refuses the same for rows inserted with plain SQL.
pub(super) fn check_op_id(op_id: &str) -> Result<(), DbError> {
    if op_id.ends_with(' ') || op_id.chars().any(|c| c.is_ascii_control()) {
        return Err(DbError::Invalid(FieldError::new(
            "op_id",
            format!(
                "{op_id:?} ends with a space or holds a control character, which MySQL's \
                 key collation cannot order byte by byte"
            ),
        )));
    }
    Ok(())
}

/// The DATETIME holding `micros` (UTC); `field` names the value when it lies outside
/// DATETIME's range, 1000-01-01 to 9999-12-31.
pub(super) fn to_datetime(field: &str, micros: Micros) -> Result<NaiveDateTime, DbError> {
    (MIN_TIMESTAMP..=MAX_TIMESTAMP)
        .contains(&micros)
        .then(|| DateTime::from_timestamp_micros(micros))
        .flatten()
        .map(|at| at.naive_utc())
        .ok_or_else(|| {
            DbError::Invalid(FieldError::new(
                field,
                format!(
                    "{micros} µs since the epoch lies outside MySQL's DATETIME range, \
                     1000-01-01 to 9999-12-31"
                ),
            ))
        })
}

/// Microseconds since the epoch of a time read as UTC: a DATETIME of any precision
/// (holding UTC) or a TIMESTAMP (which the session's `+00:00` zone converts), both of
/// which sqlx decodes as `DateTime<Utc>`, where `NaiveDateTime` takes DATETIME only.
pub(super) fn micros_of(at: DateTime<Utc>) -> Micros {
    at.timestamp_micros()
}

/// The [`Operation`] in the first [`OPERATION_COLUMN_COUNT`] columns of `row`.
pub(super) fn operation_at(row: &MySqlRow) -> Result<Result<Operation, RowFault>, DbError> {
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
        // DATETIME of any precision and TIMESTAMP (converted by the session's UTC zone).
        let timestamp: DateTime<Utc> = row
            .try_get(12)
            .map_err(|e| crate::db::fault(&op_id, "timestamp", map_error(e)))?;
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
            timestamp: micros_of(timestamp),
            op_id: op_id.clone(),
        })
    };
    Ok(read())
}

/// The [`DeadLetter`] in the columns `dead_letter_columns!` lists.
pub(super) fn dead_letter_at(row: &MySqlRow) -> Result<DeadLetter, DbError> {
    let op_id: String = row.try_get(0).map_err(map_error)?;
    let timestamp: Option<DateTime<Utc>> = row.try_get(1).ok();
    let count: i64 = row.try_get(2).map_err(map_error)?;
    let retry_count = u32::try_from(count)
        .map_err(|_| DbError::Other(format!("retry_count {count} of {op_id:?} is out of range")))?;
    let error_message: Option<String> = row.try_get(3).map_err(map_error)?;
    let created_at: DateTime<Utc> = row.try_get(4).map_err(map_error)?;
    let updated_at: DateTime<Utc> = row.try_get(5).map_err(map_error)?;
    let last_retry_at: Option<DateTime<Utc>> = row.try_get(6).map_err(map_error)?;
    Ok(DeadLetter {
        timestamp: timestamp.map(micros_of),
        retry_count,
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: micros_of(created_at),
        updated_at: micros_of(updated_at),
        last_retry_at: last_retry_at.map(micros_of),
        op_id,
    })
}

/// The [`FoundOperation`] in the columns `found_columns!` lists.
pub(super) fn found_at(row: &MySqlRow) -> Result<FoundOperation, DbError> {
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
fn retry_at(row: &MySqlRow, op_id: &str) -> Result<search::RetryRow, DbError> {
    let fault = |column: &'static str| {
        move |e: sqlx::Error| search::retry_fault(op_id, column, map_error(e))
    };
    let count: i64 = row
        .try_get(col::RETRY_COUNT)
        .map_err(fault("retry_count"))?;
    let error_message: Option<String> = row
        .try_get(col::ERROR_MESSAGE)
        .map_err(fault("error_message"))?;
    let last_retry_at: Option<DateTime<Utc>> = row
        .try_get(col::LAST_RETRY_AT)
        .map_err(fault("last_retry_at"))?;
    let next_retry_at: Option<DateTime<Utc>> = row
        .try_get(col::NEXT_RETRY_AT)
        .map_err(fault("next_retry_at"))?;
    let created_at: DateTime<Utc> = row.try_get(col::CREATED_AT).map_err(fault("created_at"))?;
    let updated_at: DateTime<Utc> = row.try_get(col::UPDATED_AT).map_err(fault("updated_at"))?;
    Ok(search::RetryRow {
        retry_count: search::retry_count(op_id, count)?,
        retry_status: row
            .try_get(col::RETRY_STATUS)
            .map_err(fault("retry_status"))?,
        last_retry_at: last_retry_at.map(micros_of),
        next_retry_at: next_retry_at.map(micros_of),
        // The schema allows NULL; rows written by hand or by the seed may hold it.
        error_message: error_message.unwrap_or_default(),
        created_at: micros_of(created_at),
        updated_at: micros_of(updated_at),
    })
}

/// The `COUNT(*)` in column 1 of `row`.
pub(super) fn count_at(row: &MySqlRow) -> Result<u64, DbError> {
    count_in(row, 1)
}

/// The count in column `index`.
pub(super) fn count_in(row: &MySqlRow, index: usize) -> Result<u64, DbError> {
    let count: i64 = row.try_get(index).map_err(map_error)?;
    u64::try_from(count).map_err(|_| DbError::Other(format!("negative count {count}")))
}
