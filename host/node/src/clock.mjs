// The wall clock in the engine's unit: microseconds since the Unix epoch, UTC (BigInt).
// Date has millisecond resolution; the wall clock (not a monotonic one) is what rows
// are stamped with and retries fall due by, in either host.

export function nowMicros() {
  return BigInt(Date.now()) * 1000n;
}
