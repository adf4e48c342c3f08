//! Operations packed for the trip into the component: the text of every field of
//! every row in one string, and each row's fields as spans of it.
//!
//! The canonical ABI calls the component's allocator (`cabi_realloc`, a call from
//! the host into wasm) for every string it passes in: twelve per operation, twelve
//! thousand per scan batch. Packed, a batch of any size takes two, and delivery reads
//! the rows in place ([`OperationRef`]) rather than as a dozen strings each. The host
//! packs ([`OperationBatch::pack`]); the component checks every span as it reads.

use crate::model::{DbError, Micros, Operation, OperationRef, RetryRow};

/// Where one field's text lies in its batch's `text`: `len` bytes from byte `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

/// An [`Operation`] whose text fields are spans of its batch's `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedOperation {
    pub op_id: Span,
    pub op_actor: Span,
    pub doid: Span,
    pub producer_id: Span,
    pub request_body_hash: Option<Span>,
    pub response_body_hash: Option<Span>,
    pub op_source: Span,
    pub op_type: Span,
    pub do_prefix: Span,
    pub do_repository: Span,
    pub client_ip: Option<Span>,
    pub server_ip: Option<Span>,
    pub timestamp: Micros,
}

/// Operations in the order given, packed into one text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationBatch {
    pub text: String,
    pub rows: Vec<PackedOperation>,
}

/// Due retries, packed: `retry_counts[i]` belongs to `ops.rows[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryBatch {
    pub ops: OperationBatch,
    pub retry_counts: Vec<u32>,
}

impl OperationBatch {
    /// Packs `ops`, in order.
    pub fn pack(ops: &[Operation]) -> Result<OperationBatch, DbError> {
        Self::pack_each(ops.iter(), ops.len())
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
        let mut text = String::with_capacity(bytes);
        let mut push = |s: &str| {
            let start = text.len() as u32;
            text.push_str(s);
            Span {
                start,
                len: s.len() as u32,
            }
        };
        let rows = ops
            .map(|op| PackedOperation {
                op_id: push(&op.op_id),
                op_actor: push(&op.op_actor),
                doid: push(&op.doid),
                producer_id: push(&op.producer_id),
                request_body_hash: op.request_body_hash.as_deref().map(&mut push),
                response_body_hash: op.response_body_hash.as_deref().map(&mut push),
                op_source: push(&op.op_source),
                op_type: push(&op.op_type),
                do_prefix: push(&op.do_prefix),
                do_repository: push(&op.do_repository),
                client_ip: op.client_ip.as_deref().map(&mut push),
                server_ip: op.server_ip.as_deref().map(&mut push),
                timestamp: op.timestamp,
            })
            .collect();
        Ok(OperationBatch { text, rows })
    }

    /// The operations, in order, borrowed from `text`; a span outside it or off a
    /// character boundary is the host's fault and refuses the whole batch.
    pub fn views(&self) -> Result<Vec<OperationRef<'_>>, DbError> {
        let text = self.text.as_str();
        self.rows
            .iter()
            .enumerate()
            .map(|(row, p)| {
                let field = |name: &str, span: Span| field(text, row, name, span);
                let optional =
                    |name: &str, span: Option<Span>| span.map(|s| field(name, s)).transpose();
                Ok(OperationRef {
                    op_id: field("op_id", p.op_id)?,
                    op_actor: field("op_actor", p.op_actor)?,
                    doid: field("doid", p.doid)?,
                    producer_id: field("producer_id", p.producer_id)?,
                    request_body_hash: optional("request_body_hash", p.request_body_hash)?,
                    response_body_hash: optional("response_body_hash", p.response_body_hash)?,
                    op_source: field("op_source", p.op_source)?,
                    op_type: field("op_type", p.op_type)?,
                    do_prefix: field("do_prefix", p.do_prefix)?,
                    do_repository: field("do_repository", p.do_repository)?,
                    client_ip: optional("client_ip", p.client_ip)?,
                    server_ip: optional("server_ip", p.server_ip)?,
                    timestamp: p.timestamp,
                })
            })
            .collect()
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

    /// The operations with their retry counts, in order; refuses a batch whose counts
    /// do not match its rows.
    pub fn views(&self) -> Result<Vec<(OperationRef<'_>, u32)>, DbError> {
        if self.retry_counts.len() != self.ops.rows.len() {
            return Err(DbError::Other(format!(
                "a retry batch of {} operations came with {} retry counts",
                self.ops.rows.len(),
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
    Owned(Vec<Operation>),
    Packed(OperationBatch),
}

impl Rows {
    /// The operations, in order.
    pub fn views(&self) -> Result<Vec<OperationRef<'_>>, DbError> {
        match self {
            Rows::Owned(ops) => Ok(ops.iter().map(Operation::view).collect()),
            Rows::Packed(batch) => batch.views(),
        }
    }
}

/// Due retries as the host hands them over, owned or packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryRows {
    Owned(Vec<RetryRow>),
    Packed(RetryBatch),
}

impl RetryRows {
    /// The operations with their retry counts, in order.
    pub fn views(&self) -> Result<Vec<(OperationRef<'_>, u32)>, DbError> {
        match self {
            RetryRows::Owned(rows) => {
                Ok(rows.iter().map(|r| (r.op.view(), r.retry_count)).collect())
            }
            RetryRows::Packed(batch) => batch.views(),
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

#[inline]
fn field<'a>(text: &'a str, row: usize, name: &str, span: Span) -> Result<&'a str, DbError> {
    let start = span.start as usize;
    match start
        .checked_add(span.len as usize)
        .and_then(|end| text.get(start..end))
    {
        Some(value) => Ok(value),
        None => Err(bad_span(text, row, name, span)),
    }
}

#[cold]
fn bad_span(text: &str, row: usize, name: &str, span: Span) -> DbError {
    DbError::Other(format!(
        "packed row {row}: {name} spans bytes {}..+{} of a {}-byte text, \
         outside it or off a character boundary",
        span.start,
        span.len,
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

    #[test]
    fn a_span_past_the_end_of_the_text_refuses_the_batch_naming_row_and_field() {
        let mut batch = OperationBatch::pack(&[one("a"), one("b")]).unwrap();
        batch.rows[1].doid.len = 1_000;
        let DbError::Other(message) = batch.views().unwrap_err() else {
            panic!("expected DbError::Other");
        };
        assert!(message.starts_with("packed row 1: doid spans"), "{message}");
    }

    #[test]
    fn a_span_whose_end_overflows_refuses_the_batch() {
        let mut batch = OperationBatch::pack(&[one("a")]).unwrap();
        batch.rows[0].op_id = Span {
            start: u32::MAX,
            len: u32::MAX,
        };
        assert!(matches!(batch.views(), Err(DbError::Other(m)) if m.contains("op_id")));
    }

    #[test]
    fn a_span_that_splits_a_character_refuses_the_batch() {
        let mut op = one("é");
        op.client_ip = Some("x".into());
        let mut batch = OperationBatch::pack(&[op]).unwrap();
        // "é" is two bytes; one byte of it is not text.
        batch.rows[0].client_ip = Some(Span { start: 0, len: 1 });
        assert!(matches!(batch.views(), Err(DbError::Other(m)) if m.contains("client_ip")));
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

    #[test]
    fn spans_may_share_text_and_come_in_any_order() {
        // The host is free to lay text out as it likes: one span for two equal fields.
        let mut batch = OperationBatch::pack(&[one("same")]).unwrap();
        let id = batch.rows[0].op_id;
        batch.rows[0].doid = id;
        assert_eq!(batch.views().unwrap()[0].doid, "same");
    }
}
