// Sample operations for the demo: realistic, varied and valid, like host/src/sample.rs.

import { createHash } from 'node:crypto';

const KINDS = ['Create', 'Update', 'Delete', 'Retrieve'];

/**
 * Sample operation `i` of run `run` (jco's `operation` shape). Ten operations share
 * each timestamp from `base` (BigInt microseconds): the cursor must neither lose nor
 * repeat rows of one instant.
 */
export function sampleOperation(run, i, base) {
  return {
    opId: `${run}-${String(i).padStart(7, '0')}`,
    opActor: `user-${i % 7}`,
    doid: `10.1000/demo.${i}`,
    producerId: 'demo-producer',
    requestBodyHash: sha256Hex(`request ${i}`),
    responseBodyHash: i % 3 !== 0 ? sha256Hex(`response ${i}`) : undefined,
    opSource: i % 2 === 0 ? 'IRP' : 'DOIP',
    opType: KINDS[i % 4],
    doPrefix: '10.1000',
    doRepository: 'demo-repository',
    clientIp: `192.0.2.${(i % 250) + 1}`,
    serverIp: i % 5 !== 0 ? '198.51.100.7' : undefined,
    timestamp: BigInt(base) + BigInt(Math.floor(i / 10)),
  };
}

function sha256Hex(text) {
  return createHash('sha256').update(text).digest('hex');
}
