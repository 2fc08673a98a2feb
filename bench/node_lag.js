// Event-loop stall probe for the Node peer, loaded with NODE_OPTIONS=--require (bench/reconnect.py)
// so that the peer itself is not changed. Same definition as the relay's relay_loop_lag_max_seconds
// (relay/metrics.py watch_loop_lag): how late a 20 ms timer fires. Each lateness of 5 ms or more is
// printed to stderr (the peer's log) as "node-loop-lag <epoch ms> <ms late> <ms of CPU>", the last
// being the process's CPU time (all its threads) in that timer's window, as the relay logs its own.
"use strict";
const INTERVAL_MS = 20;
const REPORT_MS = 5;
let started = 0;
let cpu = process.cpuUsage();
function tick() {
  const now = performance.now();
  const late = now - started - INTERVAL_MS;
  if (late >= REPORT_MS) {
    const used = process.cpuUsage(cpu);
    process.stderr.write(`node-loop-lag ${Date.now()} ${late.toFixed(1)} ${((used.user + used.system) / 1000).toFixed(1)}\n`);
  }
  started = performance.now();
  cpu = process.cpuUsage();
  setTimeout(tick, INTERVAL_MS).unref();
}
// Start once the main script has run: loading the peer's modules is start-up, not a stall (the
// relay's own probe also starts only once its app runs).
setImmediate(() => { started = performance.now(); setTimeout(tick, INTERVAL_MS).unref(); });
