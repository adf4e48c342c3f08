//! Envelopes packed for the trip out of the component, as operations are packed for
//! the trip in ([`crate::packed`]): every op_id in one string, every payload in one
//! list of bytes, where each of them ends, and the digests' hex, 64 digits apiece.
//!
//! The engine writes each payload straight into the batch, so a batch of any size is
//! five buffers instead of three allocations per envelope; the canonical ABI copies
//! five lists across instead of lifting three values per envelope; and `digest`
//! hashes the payloads where they lie. The host unpacks ([`EnvelopeBatch::envelopes`]),
//! checking every end, since a guest's batch is untrusted.

use std::ops::Range;

use crate::envelope;
use crate::model::{Envelope, FieldError, OperationRef};

/// Hex digits of one SHA-256 in [`EnvelopeBatch::sha256`].
pub const HEX_DIGEST: usize = 64;

/// Envelopes in the order they were pushed (`envelope-batch` in the WIT).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeBatch {
    /// Every envelope's op_id, one after another.
    pub op_ids: String,
    /// One per envelope: where its op_id ends in `op_ids`.
    pub op_id_ends: Vec<u32>,
    /// Every envelope's canonical bytes, one after another.
    pub payloads: Vec<u8>,
    /// One per envelope: where its payload ends in `payloads`.
    pub payload_ends: Vec<u32>,
    /// [`HEX_DIGEST`] lower-case hex digits per envelope: its payload's SHA-256.
    pub sha256: String,
}

/// Why an operation did not join a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unjoined {
    /// Its fields cannot be encoded, now or ever.
    Invalid(FieldError),
    /// The batch's bytes would pass what its u32 ends address; a later batch takes it.
    Full,
}

/// Room reserved per envelope up front; payloads are about 400 bytes, an op_id tens.
const PAYLOAD_GUESS: usize = 512;
const OP_ID_GUESS: usize = 32;

impl EnvelopeBatch {
    /// An empty batch with room for `envelopes` typical envelopes.
    pub fn with_capacity(envelopes: usize) -> EnvelopeBatch {
        EnvelopeBatch {
            op_ids: String::with_capacity(envelopes * OP_ID_GUESS),
            op_id_ends: Vec::with_capacity(envelopes),
            payloads: Vec::with_capacity(envelopes * PAYLOAD_GUESS),
            payload_ends: Vec::with_capacity(envelopes),
            sha256: String::with_capacity(envelopes * HEX_DIGEST),
        }
    }

    /// How many envelopes the batch holds (sealed or not).
    pub fn len(&self) -> usize {
        self.payload_ends.len()
    }

    /// Whether the batch holds no envelope.
    pub fn is_empty(&self) -> bool {
        self.payload_ends.is_empty()
    }

    /// Writes the envelope of `op` into the batch, its digest to follow in
    /// [`EnvelopeBatch::seal`]. An operation that cannot join leaves the batch as it was.
    pub fn push(&mut self, op: OperationRef<'_>) -> Result<(), Unjoined> {
        let (payloads, op_ids) = (self.payloads.len(), self.op_ids.len());
        envelope::append_canonical(&mut self.payloads, op).map_err(Unjoined::Invalid)?;
        self.op_ids.push_str(op.op_id);
        match (
            u32::try_from(self.payloads.len()),
            u32::try_from(self.op_ids.len()),
        ) {
            (Ok(payload_end), Ok(op_id_end)) => {
                self.payload_ends.push(payload_end);
                self.op_id_ends.push(op_id_end);
                Ok(())
            }
            _ => {
                self.payloads.truncate(payloads);
                self.op_ids.truncate(op_ids);
                Err(Unjoined::Full)
            }
        }
    }

    /// Every payload and where each ends: what `digest.sha256` hashes.
    pub fn payloads(&self) -> (&[u8], &[u32]) {
        (&self.payloads, &self.payload_ends)
    }

    /// Appends the hex of each digest, in order: one per envelope, once all are pushed.
    pub fn seal(&mut self, digests: &[[u8; 32]]) {
        for digest in digests {
            envelope::append_hex(&mut self.sha256, digest);
        }
    }

    /// The envelopes, owned, in order. Lists that do not match, an end before its
    /// start or past its buffer, and an op_id or digest cut off a character boundary
    /// refuse the whole batch, naming the first fault.
    pub fn envelopes(&self) -> Result<Vec<Envelope>, String> {
        let n = self.payload_ends.len();
        if self.op_id_ends.len() != n || self.sha256.len() != n * HEX_DIGEST {
            return Err(format!(
                "an envelope batch of {n} payloads came with {} op_id ends and {} digest \
                 digits ({HEX_DIGEST} per payload expected)",
                self.op_id_ends.len(),
                self.sha256.len()
            ));
        }
        let payloads = spans(&self.payload_ends, self.payloads.len());
        let op_ids = spans(&self.op_id_ends, self.op_ids.len());
        payloads
            .zip(op_ids)
            .enumerate()
            .map(|(i, (payload, op_id))| {
                let payload = payload.map_err(|e| format!("envelope {i}: its payload {e}"))?;
                let op_id = op_id.map_err(|e| format!("envelope {i}: its op_id {e}"))?;
                let op_id = self.op_ids.get(op_id.clone()).ok_or_else(|| {
                    format!("envelope {i}: its op_id {op_id:?} splits a character")
                })?;
                let digest = i * HEX_DIGEST..(i + 1) * HEX_DIGEST;
                let sha256 = self.sha256.get(digest.clone()).ok_or_else(|| {
                    format!("envelope {i}: its digest {digest:?} splits a character")
                })?;
                Ok(Envelope {
                    op_id: op_id.to_owned(),
                    payload: self.payloads[payload].to_vec(),
                    sha256: sha256.to_owned(),
                })
            })
            .collect()
    }
}

/// The spans `ends` cut a buffer of `len` bytes into, each starting where the one
/// before it ended; an end before its start or past `len` is an error naming both.
pub fn spans(ends: &[u32], len: usize) -> impl Iterator<Item = Result<Range<usize>, String>> + '_ {
    let mut start = 0usize;
    ends.iter().map(move |&end| {
        let end = end as usize;
        if end < start || end > len {
            return Err(format!(
                "spans bytes {start}..{end} of {len}, backwards or past the end"
            ));
        }
        let span = start..end;
        start = end;
        Ok(span)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Operation;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn op(op_id: &str, actor: &str) -> Operation {
        Operation {
            op_id: op_id.into(),
            op_actor: actor.into(),
            doid: "10.1000/1".into(),
            producer_id: "p".into(),
            request_body_hash: None,
            response_body_hash: Some("ab".into()),
            op_source: "IRP".into(),
            op_type: "Create".into(),
            do_prefix: "10.1000".into(),
            do_repository: "repo".into(),
            client_ip: None,
            server_ip: Some("192.0.2.1".into()),
            timestamp: 1_764_000_000_123_456,
        }
    }

    /// A sealed batch of `ops`, hashed here as the host would.
    fn sealed(ops: &[Operation]) -> EnvelopeBatch {
        let mut batch = EnvelopeBatch::with_capacity(ops.len());
        for o in ops {
            batch.push(o.view()).unwrap();
        }
        let digests: Vec<[u8; 32]> = spans(&batch.payload_ends, batch.payloads.len())
            .map(|s| Sha256::digest(&batch.payloads[s.unwrap()]).into())
            .collect();
        batch.seal(&digests);
        batch
    }

    fn refusal(batch: &EnvelopeBatch) -> String {
        batch.envelopes().unwrap_err()
    }

    proptest! {
        #[test]
        fn a_sealed_batch_unpacks_into_the_envelopes_built_one_by_one(
            ids in proptest::collection::vec("\\PC{1,20}", 0..12),
            actors in proptest::collection::vec("(\\PC|[\\x00-\\x1f\"\\\\]){0,30}", 12),
        ) {
            let ops: Vec<Operation> = ids.iter().zip(&actors).map(|(i, a)| op(i, a)).collect();
            let one_by_one: Vec<Envelope> = ops.iter().map(|o| envelope::build(o).unwrap()).collect();
            prop_assert_eq!(sealed(&ops).envelopes().unwrap(), one_by_one);
        }
    }

    #[test]
    fn an_operation_that_cannot_be_encoded_leaves_the_batch_as_it_was() {
        let mut batch = EnvelopeBatch::default();
        batch.push(op("a", "x").view()).unwrap();
        let before = batch.clone();
        let mut bad = op("b", "y");
        bad.timestamp = i64::MAX;
        match batch.push(bad.view()) {
            Err(Unjoined::Invalid(e)) => assert_eq!(e.field, "timestamp"),
            other => panic!("expected an invalid timestamp, got {other:?}"),
        }
        assert_eq!(batch, before);
    }

    #[test]
    fn lists_that_do_not_match_refuse_the_batch() {
        let whole = sealed(&[op("a", "x"), op("b", "y")]);
        let mut batch = whole.clone();
        batch.op_id_ends.pop();
        assert!(
            refusal(&batch).contains("1 op_id ends"),
            "{}",
            refusal(&batch)
        );
        let mut batch = whole;
        batch.sha256.push('0');
        assert!(
            refusal(&batch).contains("129 digest digits"),
            "{}",
            refusal(&batch)
        );
    }

    #[test]
    fn an_end_backwards_or_past_its_buffer_refuses_the_batch_naming_the_envelope() {
        let whole = sealed(&[op("a", "x"), op("b", "y")]);
        let mut batch = whole.clone();
        batch.payload_ends[1] = batch.payload_ends[0] - 1;
        assert!(
            refusal(&batch).starts_with("envelope 1: its payload spans"),
            "{}",
            refusal(&batch)
        );
        let mut batch = whole;
        batch.op_id_ends[1] = 100;
        assert!(
            refusal(&batch).contains("envelope 1: its op_id spans bytes 1..100 of 2"),
            "{}",
            refusal(&batch)
        );
    }

    #[test]
    fn an_op_id_or_digest_that_splits_a_character_refuses_the_batch() {
        let mut batch = sealed(&[op("é", "x")]);
        batch.op_id_ends[0] = 1;
        assert!(
            refusal(&batch).contains("splits a character"),
            "{}",
            refusal(&batch)
        );
        // The same length, with a two-byte character across the first digest's end.
        let mut batch = sealed(&[op("a", "x"), op("b", "y")]);
        batch.sha256 = format!("{}é{}", &batch.sha256[..63], &batch.sha256[65..]);
        assert!(
            refusal(&batch).contains("envelope 0: its digest"),
            "{}",
            refusal(&batch)
        );
    }

    #[test]
    fn spans_cut_the_buffer_in_order_and_stop_at_a_bad_end() {
        let cut: Vec<_> = spans(&[2, 2, 5], 5).collect();
        assert_eq!(cut, [Ok(0..2), Ok(2..2), Ok(2..5)]);
        let cut: Vec<_> = spans(&[3, 1], 5).collect();
        assert_eq!(cut[0], Ok(0..3));
        assert!(cut[1].as_ref().unwrap_err().contains("3..1 of 5"));
    }
}
