//! The cursor state machine: a keyset position over (timestamp, op_id).
//!
//! Ordering by timestamp alone is not total (many rows share one), so the
//! cursor carries the op_id of the last row delivered and the next scan asks
//! for rows strictly after the pair. It only ever moves forward.

use crate::model::{CursorMove, OperationRef, Position};

/// The engine's view of one cursor: the last position it knows was committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    known: Option<Option<Position>>,
}

impl Cursor {
    /// The committed position, if it was loaded; `Some(None)` means "from the start".
    pub fn known(&self) -> Option<&Option<Position>> {
        self.known.as_ref()
    }

    /// Records the position read from the database.
    pub fn loaded(&mut self, at: Option<Position>) {
        self.known = Some(at);
    }

    /// Forgets the position, so the next tick reads it again (after a conflict or error).
    pub fn forget(&mut self) {
        self.known = None;
    }

    /// The move covering `batch`, which the scan returned after `from` in order;
    /// `None` when the batch is empty or would not move the cursor forward.
    pub fn plan_move(
        key: &str,
        from: &Option<Position>,
        batch: &[OperationRef<'_>],
    ) -> Option<CursorMove> {
        let last = batch
            .iter()
            .reduce(|max, op| if op.is_after(max) { op } else { max })?;
        let to = last.position();
        if from.as_ref().is_some_and(|f| &to <= f) {
            return None;
        }
        Some(CursorMove {
            key: key.to_string(),
            expected: from.clone(),
            to,
        })
    }

    /// Adopts the position a committed move reached.
    pub fn committed(&mut self, to: Position) {
        self.known = Some(Some(to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn op(ts: i64, id: &str) -> OperationRef<'_> {
        OperationRef {
            op_id: id,
            op_actor: "",
            doid: "",
            producer_id: "",
            request_body_hash: None,
            response_body_hash: None,
            op_source: "",
            op_type: "",
            do_prefix: "",
            do_repository: "",
            client_ip: None,
            server_ip: None,
            timestamp: ts,
        }
    }

    /// What a database's keyset scan returns: rows strictly after `after`, in order.
    fn scan<'a>(
        table: &'a BTreeSet<Position>,
        after: &Option<Position>,
        limit: usize,
    ) -> Vec<OperationRef<'a>> {
        table
            .iter()
            .filter(|p| after.as_ref().is_none_or(|a| *p > a))
            .take(limit)
            .map(|p| op(p.timestamp, &p.op_id))
            .collect()
    }

    #[test]
    fn the_move_goes_to_the_greatest_row_wherever_it_is_in_the_batch() {
        let m = Cursor::plan_move("k", &None, &[op(3, "b"), op(4, "a"), op(3, "z")]).unwrap();
        assert_eq!(
            m.to,
            Position {
                timestamp: 4,
                op_id: "a".into()
            }
        );
    }

    #[test]
    fn empty_batch_does_not_move() {
        assert_eq!(Cursor::plan_move("k", &None, &[]), None);
    }

    #[test]
    fn a_batch_behind_the_cursor_does_not_move_it_back() {
        let from = Some(Position {
            timestamp: 10,
            op_id: "b".into(),
        });
        assert_eq!(
            Cursor::plan_move("k", &from, &[op(10, "a"), op(9, "z")]),
            None
        );
    }

    #[test]
    fn ties_on_timestamp_are_broken_by_op_id() {
        let from = Some(Position {
            timestamp: 5,
            op_id: "a".into(),
        });
        let m = Cursor::plan_move("k", &from, &[op(5, "b"), op(5, "c")]).unwrap();
        assert_eq!(
            m.to,
            Position {
                timestamp: 5,
                op_id: "c".into()
            }
        );
        assert_eq!(m.expected, from);
    }

    proptest! {
        // Many rows on few timestamps: every row is seen exactly once, whatever the batch size.
        #[test]
        fn keyset_walk_sees_every_row_exactly_once(
            rows in proptest::collection::btree_set((0i64..4, "[a-z0-9]{1,6}"), 0..400),
            batch in 1usize..120,
        ) {
            let table: BTreeSet<Position> = rows.into_iter().map(|(timestamp, op_id)| Position { timestamp, op_id }).collect();
            let mut cursor = Cursor::default();
            cursor.loaded(None);
            let mut seen = Vec::new();
            loop {
                let from = cursor.known().unwrap().clone();
                let got = scan(&table, &from, batch);
                if got.is_empty() { break; }
                let m = Cursor::plan_move("k", &from, &got).expect("a non-empty scan moves forward");
                prop_assert!(from.as_ref().is_none_or(|f| &m.to > f));
                seen.extend(got.iter().map(OperationRef::position));
                cursor.committed(m.to);
            }
            let expected: Vec<Position> = table.into_iter().collect();
            prop_assert_eq!(seen, expected);
        }
    }
}
