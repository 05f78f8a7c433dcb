// serve_top1.js: compares two float32 .npy outputs [N, C] row by row (an
// FP32 reference and an INT8 model's, both from ONNX Runtime) over rows
// FROM..N-1 and prints {"rows", "top1_agreement", "max_abs_diff", "finite"}.
//   node serve_top1.js REF.npy GOT.npy FROM
'use strict';
const fs = require('fs');

function readNpy(file) {
  const b = fs.readFileSync(file);
  if (b[0] !== 0x93 || b.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const v1 = b[6] === 1;
  const hlen = v1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = v1 ? 10 : 12;
  const header = b.toString('latin1', start, start + hlen);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${file}: float32 (<f4) expected`);
  const dims = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map(s => s.trim()).filter(Boolean).map(Number);
  const body = b.subarray(start + hlen);
  const data = new Float32Array(body.length / 4);
  new Uint8Array(data.buffer).set(body);
  return { dims, data };
}

const [refFile, gotFile, fromArg] = process.argv.slice(2);
if (!gotFile) { console.error('usage: serve_top1.js REF.npy GOT.npy [FROM]'); process.exit(2); }
const ref = readNpy(refFile), got = readNpy(gotFile);
if (ref.dims.join() !== got.dims.join()) {
  console.error(`shape ${got.dims} != reference ${ref.dims}`);
  process.exit(1);
}
const n = ref.dims[0], c = ref.data.length / n, from = parseInt(fromArg || '0', 10);
let agree = 0, maxAbs = 0, finite = true;
const argmax = (a, o) => { let k = 0; for (let i = 1; i < c; i++) if (a[o + i] > a[o + k]) k = i; return k; };
for (let r = from; r < n; r++) {
  const o = r * c;
  if (argmax(ref.data, o) === argmax(got.data, o)) agree++;
  for (let i = 0; i < c; i++) {
    if (!Number.isFinite(got.data[o + i])) finite = false;
    maxAbs = Math.max(maxAbs, Math.abs(got.data[o + i] - ref.data[o + i]));
  }
}
console.log(JSON.stringify({ rows: n - from, top1_agreement: agree / Math.max(1, n - from), max_abs_diff: maxAbs, finite }));
