// ort_bench.js: ONNX Runtime's side of the benchmark.
//   node bench/ort_bench.js MODEL INPUT.npy RUNS THREADS
// Feeds the .npy (float32) to the model's first input, runs RUNS times after
// warm-up and prints one JSON line: median and min latency in ms.
const path = require('path');
const fs = require('fs');
const ort = require(path.join(__dirname, '..', 'tools', 'ort', 'node_modules', 'onnxruntime-node'));

function readNpyF32(file) {
  const b = fs.readFileSync(file);
  if (b.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(file + ': not .npy');
  const v1 = b[6] === 1;
  const hlen = v1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = v1 ? 10 : 12;
  const header = b.toString('latin1', start, start + hlen);
  if (!header.includes("'<f4'")) throw new Error(file + ': float32 only');
  const dims = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map(s => s.trim()).filter(Boolean).map(Number);
  const body = b.subarray(start + hlen);
  const data = new Float32Array(body.length / 4);
  new Uint8Array(data.buffer).set(body);
  return { dims, data };
}

(async () => {
  const [model, input, runsArg, threadsArg] = process.argv.slice(2);
  const runs = parseInt(runsArg || '20', 10), threads = parseInt(threadsArg || '0', 10);
  const opts = { graphOptimizationLevel: 'all', executionMode: 'sequential' };
  if (threads > 0) { opts.intraOpNumThreads = threads; opts.interOpNumThreads = 1; }
  const sess = await ort.InferenceSession.create(model, opts);
  const x = readNpyF32(input);
  const feeds = { [sess.inputNames[0]]: new ort.Tensor('float32', x.data, x.dims) };
  for (let i = 0; i < 3; i++) await sess.run(feeds);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await sess.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ median_ms: times[runs >> 1], min_ms: times[0] }));
})().catch(e => { console.error(String(e)); process.exit(1); });
