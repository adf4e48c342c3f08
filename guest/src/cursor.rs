//! The cursor state machine: a keyset position over (timestamp, op_id).
//!
//! Ordering by timestamp alone is not total (many rows share one), so the
//! cursor carries the op_id of the last row delivered and the next scan asks
//! for rows strictly after the pair. It only ever moves forward.

use std::collections::HashSet;

use crate::model::{CursorMove, Micros, OperationRef, Position};

/// How far past `now` the cursor may go: a row stamped later than that (a skewed
/// clock, a bad value) is delivered without moving the cursor to it, so it holds
/// no row stamped at the right time behind the cursor.
pub const FUTURE_SLACK_MICROS: Micros = 1_000_000;

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

    /// The move covering `settled`, rows the scan returned after `from` that are
    /// settled (confirmed, retried or dead-lettered); `None` when there are none or the
    /// move would not take the cursor forward.
    pub fn plan_move<'r, 'a: 'r>(
        key: &str,
        from: &Option<Position>,
        settled: impl IntoIterator<Item = &'r OperationRef<'a>>,
    ) -> Option<CursorMove> {
        let to = Cursor::furthest(settled)?.position();
        if from.as_ref().is_some_and(|f| &to <= f) {
            return None;
        }
        Some(CursorMove {
            key: key.to_string(),
            expected: from.clone(),
            to,
        })
    }

    /// The row furthest along in keyset order, wherever it is among `rows`.
    pub fn furthest<'r, 'a: 'r>(
        rows: impl IntoIterator<Item = &'r OperationRef<'a>>,
    ) -> Option<&'r OperationRef<'a>> {
        rows.into_iter()
            .reduce(|max, op| if op.is_after(max) { op } else { max })
    }

    /// The rows of a scanned batch, in keyset order, that the cursor may move over:
    /// those before the first row left `unsettled` (not confirmed, retried or
    /// dead-lettered, so still to be scanned), stamped no later than `horizon`.
    pub fn movable<'r, 'a>(
        batch: &'r [OperationRef<'a>],
        unsettled: &[String],
        horizon: Micros,
    ) -> impl Iterator<Item = &'r OperationRef<'a>> {
        let unsettled: HashSet<&str> = unsettled.iter().map(String::as_str).collect();
        batch
            .iter()
            .take_while(move |op| !unsettled.contains(op.op_id))
            .filter(move |op| op.timestamp <= horizon)
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
        assert_eq!(Cursor::plan_move("k", &None, &[] as &[OperationRef]), None);
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

    #[test]
    fn the_cursor_stops_before_the_first_unsettled_row_and_at_the_horizon() {
        let batch = [op(1, "a"), op(2, "b"), op(3, "c"), op(50, "z")];
        let over = |unsettled: &[&str], horizon| {
            let unsettled: Vec<String> = unsettled.iter().map(|s| s.to_string()).collect();
            Cursor::movable(&batch, &unsettled, horizon)
                .map(|o| o.op_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(over(&[], 10), ["a", "b", "c"]);
        assert_eq!(over(&["b"], 100), ["a"]);
        assert_eq!(over(&["a"], 100), [] as [&str; 0]);
        assert_eq!(over(&[], 100), ["a", "b", "c", "z"]);
    }

    proptest! {
        // Rows far in the future and rows left unsettled by an outage: walking the keyset
        // with the scan's rules (settled rows leave the waiting set, the cursor moves over
        // the settled prefix up to the horizon) delivers every row exactly once, never
        // moves the cursor past an unsettled row, and leaves it at or before the horizon.
        #[test]
        fn outages_and_future_rows_neither_skip_nor_stall_the_walk(
            rows in proptest::collection::btree_set((0i64..40, "[a-z]{1,3}"), 0..200),
            batch in 1usize..50,
            down in proptest::collection::vec(any::<bool>(), 0..30),
        ) {
            const HORIZON: i64 = 30;
            let mut waiting: BTreeSet<Position> = rows.into_iter().map(|(timestamp, op_id)| Position { timestamp, op_id }).collect();
            let total = waiting.len();
            let mut cursor: Option<Position> = None;
            let mut delivered = Vec::new();
            let mut outage = down.into_iter();
            for _ in 0..10_000 {
                let got = scan(&waiting, &cursor, batch);
                if got.is_empty() { break; }
                // An outage leaves the whole batch unsettled: the next scan gets it again.
                let unsettled: Vec<String> = if outage.next().unwrap_or(false) {
                    got.iter().map(|o| o.op_id.to_string()).collect()
                } else {
                    Vec::new()
                };
                let moved = Cursor::plan_move("k", &cursor, Cursor::movable(&got, &unsettled, HORIZON));
                for o in &got {
                    if !unsettled.iter().any(|u| u == o.op_id) {
                        delivered.push(o.position());
                    }
                }
                if let Some(m) = moved {
                    prop_assert!(m.to.timestamp <= HORIZON);
                    cursor = Some(m.to);
                }
                let gone: Vec<Position> = delivered.iter().filter(|p| waiting.contains(*p)).cloned().collect();
                for p in gone { waiting.remove(&p); }
            }
            prop_assert!(waiting.is_empty(), "left waiting: {:?}", waiting);
            let distinct: BTreeSet<&Position> = delivered.iter().collect();
            prop_assert_eq!(distinct.len(), total);
            prop_assert_eq!(delivered.len(), total);
        }
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
