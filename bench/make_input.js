// make_input.js: writes a float32 .npy of the given shape with uniform
// values in [0, 1) from a fixed seed, so both runtimes see the same input.
//   node bench/make_input.js OUT.npy 1,3,224,224
const fs = require('fs');
const [out, shapeArg] = process.argv.slice(2);
const dims = shapeArg.split(',').map(Number);
const n = dims.reduce((a, b) => a * b, 1);
let seed = 12345;
const data = new Float32Array(n);
for (let i = 0; i < n; i++) { seed = (seed * 1103515245 + 12345) >>> 0; data[i] = (seed >>> 8) / 16777216; }
const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
const pre = Buffer.alloc(10);
pre.write('\x93NUMPY', 0, 'latin1'); pre[6] = 1; pre[7] = 0; pre.writeUInt16LE(header.length, 8);
fs.writeFileSync(out, Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer)]));
