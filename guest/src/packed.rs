//! Operations packed for the trip into the component, column by column: the text
//! of every field of every row in one string, where each field ends, which optional
//! fields are absent, and the timestamps.
//!
//! The canonical ABI calls the component's allocator (`cabi_realloc`, a call from
//! the host into wasm) for every string it passes in: twelve per operation, twelve
//! thousand per scan batch. It lowers a list of records field by field, each field
//! a lookup of the guest's memory, but a list of numbers in one copy. Packed, a batch
//! of any size is one string and three lists of numbers, and delivery reads the rows
//! in place ([`OperationRef`]). The host packs ([`OperationBatch::pack`]); the
//! component checks every field as it reads ([`OperationBatch::views`]).

use crate::model::{
    DbError, Fetched, Micros, Operation, OperationRef, RetryRow, RowFault, TEXT_FIELDS,
};

/// Text fields per operation, each with an entry in [`OperationBatch::ends`].
pub const FIELDS: usize = TEXT_FIELDS.len();

/// The bits of [`OperationBatch::absent`]: one per optional field, in field order.
pub const ABSENT_REQUEST_BODY_HASH: u8 = 1;
/// Set when `response_body_hash` is none.
pub const ABSENT_RESPONSE_BODY_HASH: u8 = 1 << 1;
/// Set when `client_ip` is none.
pub const ABSENT_CLIENT_IP: u8 = 1 << 2;
/// Set when `server_ip` is none.
pub const ABSENT_SERVER_IP: u8 = 1 << 3;
const ABSENT_ANY: u8 =
    ABSENT_REQUEST_BODY_HASH | ABSENT_RESPONSE_BODY_HASH | ABSENT_CLIENT_IP | ABSENT_SERVER_IP;

/// Operations in the order given, packed column by column (`operation-batch` in the WIT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationBatch {
    /// Every row's text fields in `operation`'s field order, one after another.
    pub text: String,
    /// [`FIELDS`] per row: where each field ends in `text`; each starts where the one
    /// before it ends.
    pub ends: Vec<u32>,
    /// One per row: the `ABSENT_*` bits of its optional fields that are none.
    pub absent: Vec<u8>,
    /// One per row.
    pub timestamps: Vec<Micros>,
    /// Rows of the same read that could not be read.
    pub faults: Vec<RowFault>,
}

/// Due retries, packed: `retry_counts[i]` belongs to row `i` of `ops`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryBatch {
    /// The due operations, packed.
    pub ops: OperationBatch,
    /// One per row of `ops`: its failed retries so far.
    pub retry_counts: Vec<u32>,
}

impl OperationBatch {
    /// Packs `ops`, in order.
    pub fn pack(ops: &[Operation]) -> Result<OperationBatch, DbError> {
        Self::pack_each(ops.iter(), ops.len())
    }

    /// Packs what a read fetched: its rows, in order, and its faults.
    pub fn pack_fetched(fetched: Fetched<Operation>) -> Result<OperationBatch, DbError> {
        let mut batch = Self::pack(&fetched.rows)?;
        batch.faults = fetched.faults;
        Ok(batch)
    }

    /// Packs `count` operations borrowed from wherever they live, in order.
    fn pack_each<'a>(
        ops: impl Iterator<Item = &'a Operation> + Clone,
        count: usize,
    ) -> Result<OperationBatch, DbError> {
        let bytes: usize = ops.clone().map(text_len).sum();
        // Spans are u32 offsets; a batch's text is kilobytes, never 4 GiB.
        if u32::try_from(bytes).is_err() {
            return Err(DbError::Other(format!(
                "a batch of {count} operations holds {bytes} bytes of text, more than a packed batch can address"
            )));
        }
        let mut batch = OperationBatch {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(count * FIELDS),
            absent: Vec::with_capacity(count),
            timestamps: Vec::with_capacity(count),
            faults: Vec::new(),
        };
        for op in ops {
            let mut absent = 0;
            let mut optional = |s: &'a Option<String>, bit: u8| -> &'a str {
                absent |= if s.is_none() { bit } else { 0 };
                s.as_deref().unwrap_or("")
            };
            let fields: [&str; FIELDS] = [
                &op.op_id,
                &op.op_actor,
                &op.doid,
                &op.producer_id,
                optional(&op.request_body_hash, ABSENT_REQUEST_BODY_HASH),
                optional(&op.response_body_hash, ABSENT_RESPONSE_BODY_HASH),
                &op.op_source,
                &op.op_type,
                &op.do_prefix,
                &op.do_repository,
                optional(&op.client_ip, ABSENT_CLIENT_IP),
                optional(&op.server_ip, ABSENT_SERVER_IP),
            ];
            for field in fields {
                batch.text.push_str(field);
                // Within u32: the whole text's length was checked above.
                batch.ends.push(batch.text.len() as u32);
            }
            batch.absent.push(absent);
            batch.timestamps.push(op.timestamp);
        }
        Ok(batch)
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The operations, in order, borrowed from `text`. Lists of different lengths, an
    /// end before its field's start, past `text` or off a character boundary, or text
    /// in an absent field are the host's fault and refuse the whole batch.
    pub fn views(&self) -> Result<Vec<OperationRef<'_>>, DbError> {
        let rows = self.timestamps.len();
        if self.ends.len() != rows * FIELDS || self.absent.len() != rows {
            return Err(DbError::Other(format!(
                "a packed batch of {rows} timestamps came with {} field ends ({FIELDS} per row \
                 expected) and {} absent-field masks",
                self.ends.len(),
                self.absent.len()
            )));
        }
        let text = self.text.as_str();
        let mut start = 0usize;
        let mut views = Vec::with_capacity(rows);
        for (row, ((ends, &absent), &timestamp)) in self
            .ends
            .chunks_exact(FIELDS)
            .zip(&self.absent)
            .zip(&self.timestamps)
            .enumerate()
        {
            if absent & !ABSENT_ANY != 0 {
                return Err(DbError::Other(format!(
                    "packed row {row}: absent-field mask {absent:#04x} sets a bit for no optional field"
                )));
            }
            let mut fields = [""; FIELDS];
            for (i, (&end, value)) in ends.iter().zip(&mut fields).enumerate() {
                let end = end as usize;
                *value = text
                    .get(start..end)
                    .ok_or_else(|| bad_field(text, row, TEXT_FIELDS[i], start, end))?;
                start = end;
            }
            let optional = |i: usize, bit: u8| -> Result<Option<&str>, DbError> {
                match (absent & bit != 0, fields[i]) {
                    (false, value) => Ok(Some(value)),
                    (true, "") => Ok(None),
                    (true, _) => Err(DbError::Other(format!(
                        "packed row {row}: {} is marked absent but has text",
                        TEXT_FIELDS[i]
                    ))),
                }
            };
            views.push(OperationRef {
                op_id: fields[0],
                op_actor: fields[1],
                doid: fields[2],
                producer_id: fields[3],
                request_body_hash: optional(4, ABSENT_REQUEST_BODY_HASH)?,
                response_body_hash: optional(5, ABSENT_RESPONSE_BODY_HASH)?,
                op_source: fields[6],
                op_type: fields[7],
                do_prefix: fields[8],
                do_repository: fields[9],
                client_ip: optional(10, ABSENT_CLIENT_IP)?,
                server_ip: optional(11, ABSENT_SERVER_IP)?,
                timestamp,
            });
        }
        Ok(views)
    }
}

impl RetryBatch {
    /// Packs `rows`, in order.
    pub fn pack(rows: &[RetryRow]) -> Result<RetryBatch, DbError> {
        Ok(RetryBatch {
            ops: OperationBatch::pack_each(rows.iter().map(|r| &r.op), rows.len())?,
            retry_counts: rows.iter().map(|r| r.retry_count).collect(),
        })
    }

    /// Packs what a read of due retries fetched: its rows, in order, and its faults.
    pub fn pack_fetched(fetched: Fetched<RetryRow>) -> Result<RetryBatch, DbError> {
        let mut batch = Self::pack(&fetched.rows)?;
        batch.ops.faults = fetched.faults;
        Ok(batch)
    }

    /// The operations with their retry counts, in order; refuses a batch whose counts
    /// do not match its rows.
    pub fn views(&self) -> Result<Vec<(OperationRef<'_>, u32)>, DbError> {
        if self.retry_counts.len() != self.ops.len() {
            return Err(DbError::Other(format!(
                "a retry batch of {} operations came with {} retry counts",
                self.ops.len(),
                self.retry_counts.len()
            )));
        }
        Ok(self
            .ops
            .views()?
            .into_iter()
            .zip(self.retry_counts.iter().copied())
            .collect())
    }
}

/// Rows as a scan hands them over: owned (the native engine's host) or packed (the
/// component's imports). Delivery reads either through the same borrowed views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// Read into owned operations, by the native engine's host.
    Owned(Fetched<Operation>),
    /// Packed column by column, through the component's imports.
    Packed(OperationBatch),
}

impl Rows {
    /// The operations, in order.
    pub fn views(&self) -> Result<Vec<OperationRef<'_>>, DbError> {
        match self {
            Rows::Owned(f) => Ok(f.rows.iter().map(Operation::view).collect()),
            Rows::Packed(batch) => batch.views(),
        }
    }

    /// The rows that could not be read.
    pub fn faults(&self) -> &[RowFault] {
        match self {
            Rows::Owned(f) => &f.faults,
            Rows::Packed(batch) => &batch.faults,
        }
    }
}

/// Due retries as the host hands them over, owned or packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryRows {
    /// Read into owned retry rows, by the native engine's host.
    Owned(Fetched<RetryRow>),
    /// Packed column by column, through the component's imports.
    Packed(RetryBatch),
}

impl RetryRows {
    /// The operations with their retry counts, in order.
    pub fn views(&self) -> Result<Vec<(OperationRef<'_>, u32)>, DbError> {
        match self {
            RetryRows::Owned(f) => Ok(f
                .rows
                .iter()
                .map(|r| (r.op.view(), r.retry_count))
                .collect()),
            RetryRows::Packed(batch) => batch.views(),
        }
    }

    /// The rows that could not be read, with their retry counts.
    pub fn faults(&self) -> &[RowFault] {
        match self {
            RetryRows::Owned(f) => &f.faults,
            RetryRows::Packed(batch) => &batch.ops.faults,
        }
    }
}

fn text_len(op: &Operation) -> usize {
    let optional = |s: &Option<String>| s.as_deref().map_or(0, str::len);
    op.op_id.len()
        + op.op_actor.len()
        + op.doid.len()
        + op.producer_id.len()
        + optional(&op.request_body_hash)
        + optional(&op.response_body_hash)
        + op.op_source.len()
        + op.op_type.len()
        + op.do_prefix.len()
        + op.do_repository.len()
        + optional(&op.client_ip)
        + optional(&op.server_ip)
}

#[cold]
fn bad_field(text: &str, row: usize, name: &str, start: usize, end: usize) -> DbError {
    DbError::Other(format!(
        "packed row {row}: {name} spans bytes {start}..{end} of a {}-byte text, \
         backwards, outside it or off a character boundary",
        text.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_operation() -> impl Strategy<Value = Operation> {
        let text = ".{0,24}";
        (
            (
                text,
                text,
                text,
                text,
                proptest::option::of(text),
                proptest::option::of(text),
            ),
            (
                text,
                text,
                text,
                text,
                proptest::option::of(text),
                proptest::option::of(text),
            ),
            any::<i64>(),
        )
            .prop_map(
                |((a, b, c, d, e, f), (g, h, i, j, k, l), timestamp)| Operation {
                    op_id: a,
                    op_actor: b,
                    doid: c,
                    producer_id: d,
                    request_body_hash: e,
                    response_body_hash: f,
                    op_source: g,
                    op_type: h,
                    do_prefix: i,
                    do_repository: j,
                    client_ip: k,
                    server_ip: l,
                    timestamp,
                },
            )
    }

    fn one(op_id: &str) -> Operation {
        Operation {
            op_id: op_id.into(),
            op_actor: "actor".into(),
            doid: "doid".into(),
            producer_id: "producer".into(),
            request_body_hash: None,
            response_body_hash: Some("ab".into()),
            op_source: "src".into(),
            op_type: "type".into(),
            do_prefix: "prefix".into(),
            do_repository: "repo".into(),
            client_ip: None,
            server_ip: None,
            timestamp: 7,
        }
    }

    proptest! {
        #[test]
        fn unpacking_a_packed_batch_gives_back_every_operation_in_order(
            ops in proptest::collection::vec(any_operation(), 0..20)
        ) {
            let batch = OperationBatch::pack(&ops).unwrap();
            prop_assert_eq!(batch.text.len(), ops.iter().map(text_len).sum::<usize>());
            let back: Vec<Operation> = batch.views().unwrap().iter().map(OperationRef::to_operation).collect();
            prop_assert_eq!(back, ops);
        }

        #[test]
        fn retry_counts_stay_with_their_rows(
            rows in proptest::collection::vec((any_operation(), any::<u32>()), 0..10)
        ) {
            let rows: Vec<RetryRow> = rows
                .into_iter()
                .map(|(op, retry_count)| RetryRow { op, retry_count })
                .collect();
            let batch = RetryBatch::pack(&rows).unwrap();
            let back: Vec<RetryRow> = batch
                .views()
                .unwrap()
                .into_iter()
                .map(|(op, retry_count)| RetryRow { op: op.to_operation(), retry_count })
                .collect();
            prop_assert_eq!(back, rows);
        }
    }

    /// Where field `field` of row `row` ends in `batch.ends`.
    fn end_of<'b>(batch: &'b mut OperationBatch, row: usize, field: &str) -> &'b mut u32 {
        let i = TEXT_FIELDS.iter().position(|f| *f == field).unwrap();
        &mut batch.ends[row * FIELDS + i]
    }

    fn refusal(batch: &OperationBatch) -> String {
        match batch.views() {
            Err(DbError::Other(message)) => message,
            other => panic!("expected DbError::Other, got {other:?}"),
        }
    }

    #[test]
    fn the_text_holds_each_field_in_operation_order_and_absent_fields_take_none() {
        let batch = OperationBatch::pack(&[one("a")]).unwrap();
        assert_eq!(batch.text, "aactordoidproducerabsrctypeprefixrepo");
        assert_eq!(batch.ends, [1, 6, 10, 18, 18, 20, 23, 27, 33, 37, 37, 37]);
        assert_eq!(
            batch.absent,
            [ABSENT_REQUEST_BODY_HASH | ABSENT_CLIENT_IP | ABSENT_SERVER_IP]
        );
        assert_eq!(batch.timestamps, [7]);
    }

    #[test]
    fn an_end_past_the_text_refuses_the_batch_naming_row_and_field() {
        let mut batch = OperationBatch::pack(&[one("a"), one("b")]).unwrap();
        *end_of(&mut batch, 1, "doid") = 1_000;
        let message = refusal(&batch);
        assert!(message.starts_with("packed row 1: doid spans"), "{message}");
    }

    #[test]
    fn an_end_before_its_fields_start_refuses_the_batch() {
        let mut batch = OperationBatch::pack(&[one("abc")]).unwrap();
        *end_of(&mut batch, 0, "op_actor") = 1;
        assert!(refusal(&batch).contains("op_actor spans bytes 3..1"));
    }

    #[test]
    fn an_end_that_splits_a_character_refuses_the_batch() {
        // "é" is two bytes; one byte of it is not text.
        let mut batch = OperationBatch::pack(&[one("é")]).unwrap();
        *end_of(&mut batch, 0, "op_id") = 1;
        assert!(refusal(&batch).contains("op_id"));
    }

    #[test]
    fn lists_that_do_not_match_the_rows_refuse_the_batch() {
        let whole = OperationBatch::pack(&[one("a"), one("b")]).unwrap();
        let mut batch = whole.clone();
        batch.ends.pop();
        assert!(refusal(&batch).contains("23 field ends"));
        let mut batch = whole.clone();
        batch.absent.push(0);
        assert!(refusal(&batch).contains("3 absent-field masks"));
        let mut batch = whole;
        batch.timestamps.push(8);
        assert!(refusal(&batch).contains("3 timestamps"));
    }

    #[test]
    fn an_absent_field_with_text_refuses_the_batch() {
        let mut batch = OperationBatch::pack(&[one("a")]).unwrap();
        batch.absent[0] |= ABSENT_RESPONSE_BODY_HASH;
        assert!(refusal(&batch).contains("response_body_hash is marked absent but has text"));
    }

    #[test]
    fn a_mask_bit_for_no_optional_field_refuses_the_batch() {
        let mut batch = OperationBatch::pack(&[one("a")]).unwrap();
        batch.absent[0] |= 1 << 4;
        assert!(refusal(&batch).contains("mask 0x1"));
    }

    #[test]
    fn retry_counts_that_do_not_match_the_rows_refuse_the_batch() {
        let rows = [RetryRow {
            op: one("a"),
            retry_count: 2,
        }];
        let mut batch = RetryBatch::pack(&rows).unwrap();
        batch.retry_counts.push(3);
        assert!(matches!(batch.views(), Err(DbError::Other(m)) if m.contains("2 retry counts")));
    }
}
