// ort_tool.js: ONNX Runtime (CPU) as the reference runtime for onnxq's tests.
//   node ort_tool.js optimize MODEL OUT.onnx
//       loads MODEL with the extended graph optimizations (where the QDQ
//       fusions live) and saves the optimized graph to OUT.onnx, so a test
//       can count which ops ONNX Runtime turned into integer kernels.
//   node ort_tool.js run MODEL IN.npy BATCH OUT.npy [THREADS]
//       feeds IN.npy (float32, first axis = samples) to the model's first
//       input BATCH rows at a time and writes the first output, all rows
//       concatenated, to OUT.npy (float32).
// Exits non-zero with the error on stderr when the model fails to load or run.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(file) {
  const b = fs.readFileSync(file);
  if (b[0] !== 0x93 || b.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const v1 = b[6] === 1;
  const hlen = v1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = v1 ? 10 : 12;
  const header = b.toString('latin1', start, start + hlen);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${file}: float32 (<f4) expected`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: C order expected`);
  const dims = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map(s => s.trim()).filter(Boolean).map(Number);
  const body = b.subarray(start + hlen);
  const data = new Float32Array(body.length / 4);
  new Uint8Array(data.buffer).set(body);
  return { dims, data };
}

function writeNpy(file, dims, data) {
  const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const tmp = `${file}.tmp${process.pid}`;
  fs.writeFileSync(tmp, Buffer.concat([pre, Buffer.from(header, 'latin1'), body]));
  fs.renameSync(tmp, file);
}

async function optimize(model, out) {
  await ort.InferenceSession.create(model, { graphOptimizationLevel: 'extended', optimizedModelFilePath: out });
  if (!fs.existsSync(out)) throw new Error('ONNX Runtime did not write the optimized model');
}

async function run(model, input, batchArg, out, threadsArg) {
  const batch = parseInt(batchArg, 10);
  const opts = { graphOptimizationLevel: 'all' };
  if (threadsArg) opts.intraOpNumThreads = parseInt(threadsArg, 10);
  const sess = await ort.InferenceSession.create(model, opts);
  const x = readNpy(input);
  const n = x.dims[0], per = x.data.length / n;
  let result = null, outDims = null;
  for (let s = 0; s < n; s += batch) {
    const b = Math.min(batch, n - s);
    const feed = new ort.Tensor('float32', x.data.subarray(s * per, (s + b) * per), [b, ...x.dims.slice(1)]);
    const r = await sess.run({ [sess.inputNames[0]]: feed });
    const y = r[sess.outputNames[0]];
    if (y.type !== 'float32') throw new Error(`output type ${y.type}, float32 expected`);
    if (!result) {
      const perOut = y.data.length / b;
      result = new Float32Array(n * perOut);
      outDims = [n, ...y.dims.slice(1)];
    }
    result.set(y.data, s * (result.length / n));
  }
  writeNpy(out, outDims, result);
}

(async () => {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === 'optimize' && args.length === 2) await optimize(...args);
  else if (cmd === 'run' && args.length >= 4) await run(...args);
  else throw new Error('usage: ort_tool.js optimize MODEL OUT.onnx | run MODEL IN.npy BATCH OUT.npy [THREADS]');
})().catch(e => { console.error(`ort_tool: ${e.message || e}`); process.exit(1); });
