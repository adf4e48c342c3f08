// Operations packed column by column for the trip into the component (the WIT's
// `operation-batch`, guest/src/packed.rs): one string holding every text field of every
// row, twelve UTF-8 byte ends per row, an absent-field mask per row and the timestamps.
// The canonical ABI then copies four buffers, instead of lowering twelve strings a row.

import { DbError } from './db-error.mjs';

/** The text fields of `operation`, in the WIT's field order (column names). */
export const TEXT_FIELDS = [
  'op_id', 'op_actor', 'doid', 'producer_id', 'request_body_hash', 'response_body_hash',
  'op_source', 'op_type', 'do_prefix', 'do_repository', 'client_ip', 'server_ip',
];

/** The same fields as jco names them on an `operation` record. */
export const RECORD_FIELDS = TEXT_FIELDS.map((f) => f.replace(/_(\w)/g, (_, c) => c.toUpperCase()));

/** The bit of the absent mask of each optional field, by its index in TEXT_FIELDS. */
const ABSENT_BITS = new Map([[4, 1], [5, 2], [10, 4], [11, 8]]);

const MAX_U32 = 0xffff_ffff;

/**
 * Packs `ops` (jco `operation` records: camelCase fields, `undefined` for none, a
 * BigInt timestamp), in order, with `faults` (the rows of the same read that could
 * not be read) beside them.
 */
export function packOperations(ops, faults = []) {
  const parts = [];
  const ends = new Uint32Array(ops.length * TEXT_FIELDS.length);
  const absent = new Uint8Array(ops.length);
  const timestamps = new BigInt64Array(ops.length);
  let at = 0;
  let end = 0;
  ops.forEach((op, row) => {
    let mask = 0;
    RECORD_FIELDS.forEach((field, i) => {
      const value = op[field];
      if (value === undefined || value === null) {
        // Only the four optional fields may be absent; anything else is a host bug.
        const bit = ABSENT_BITS.get(i);
        if (bit === undefined) throw DbError.other(`packing op_id ${JSON.stringify(op.opId)}: ${TEXT_FIELDS[i]} has no value`);
        mask |= bit;
      } else {
        parts.push(value);
        end += Buffer.byteLength(value, 'utf8');
      }
      ends[at++] = end;
    });
    absent[row] = mask;
    timestamps[row] = op.timestamp;
  });
  // Ends are u32 byte offsets; a batch's text is kilobytes, never 4 GiB.
  if (end > MAX_U32) {
    throw DbError.other(`a batch of ${ops.length} operations holds ${end} bytes of text, more than a packed batch can address`);
  }
  return { text: parts.join(''), ends, absent, timestamps, faults };
}
