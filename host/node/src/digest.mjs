// The WIT `digest` interface: the guest decides what is hashed (the canonical bytes of
// each envelope) and the host runs SHA-256 with OpenSSL, which uses the CPU's SHA
// instructions where wasm has none. One call per batch.

import { createHash } from 'node:crypto';

/**
 * SHA-256 of each payload, 32 bytes apiece, concatenated. Payload `i` runs from the end
 * of payload `i - 1` (or 0) to `ends[i]`; an end before its start or past the bytes
 * ends the answer there, as the contract says.
 */
export function sha256(payloads, ends) {
  const out = new Uint8Array(32 * ends.length);
  let start = 0;
  let written = 0;
  for (const end of ends) {
    if (end < start || end > payloads.length) break;
    out.set(createHash('sha256').update(payloads.subarray(start, end)).digest(), written);
    written += 32;
    start = end;
  }
  return written === out.length ? out : out.subarray(0, written);
}
