// Envelopes as they come out of the component, packed (the WIT's `envelope-batch`,
// guest/src/envelope_batch.rs): every op_id in one string, every payload in one byte
// list, where each ends, and 64 hex digits of SHA-256 per envelope. A guest's batch is
// untrusted, so every end is checked as the Rust host checks it.

const HEX_DIGEST = 64;

/** How many envelopes a batch claims to hold (one payload end each). */
export function envelopeCount(batch) {
  return batch.payloadEnds.length;
}

/**
 * The envelopes `{ opId, payload, sha256 }`, in order; throws an Error naming the first
 * fault when the lists do not match, an end goes backwards or past its buffer, or an
 * op_id or digest is cut off a character boundary.
 */
export function unpackEnvelopes(batch) {
  const n = batch.payloadEnds.length;
  const opIds = Buffer.from(batch.opIds, 'utf8');
  const digests = Buffer.from(batch.sha256, 'utf8');
  if (batch.opIdEnds.length !== n || digests.length !== n * HEX_DIGEST) {
    throw new Error(
      `an envelope batch of ${n} payloads came with ${batch.opIdEnds.length} op_id ends and ${digests.length} digest digits (${HEX_DIGEST} per payload expected)`,
    );
  }
  const payloads = batch.payloads;
  const payloadSpans = spans(batch.payloadEnds, payloads.length);
  const opIdSpans = spans(batch.opIdEnds, opIds.length);
  const envelopes = [];
  for (let i = 0; i < n; i++) {
    const payload = payloadSpans.next().value;
    if (typeof payload === 'string') throw new Error(`envelope ${i}: its payload ${payload}`);
    const opIdSpan = opIdSpans.next().value;
    if (typeof opIdSpan === 'string') throw new Error(`envelope ${i}: its op_id ${opIdSpan}`);
    const opId = utf8(opIds.subarray(...opIdSpan));
    if (opId === undefined) throw new Error(`envelope ${i}: its op_id ${opIdSpan[0]}..${opIdSpan[1]} splits a character`);
    const sha256 = utf8(digests.subarray(i * HEX_DIGEST, (i + 1) * HEX_DIGEST));
    if (sha256 === undefined) throw new Error(`envelope ${i}: its digest splits a character`);
    envelopes.push({ opId, payload: payloads.subarray(...payload), sha256 });
  }
  return envelopes;
}

/** The [start, end) spans `ends` cut a buffer of `len` bytes into; a string saying why for a bad end. */
function* spans(ends, len) {
  let start = 0;
  for (const end of ends) {
    if (end < start || end > len) {
      yield `spans bytes ${start}..${end} of ${len}, backwards or past the end`;
      return;
    }
    yield [start, end];
    start = end;
  }
}

function utf8(bytes) {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return undefined;
  }
}
