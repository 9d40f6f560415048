/**
 * `npm run bench`: every benchmark section against a Redis (REDIS_URL, or one
 * started here), printed as a report with same-run baselines and ratios.
 * BENCH_QUICK=1 runs smaller sizes; BENCH_ONLY=name,name picks sections;
 * BENCH_JSON=file also writes the figures as JSON (rewritten after each
 * section, so an interrupted run keeps what it measured) for comparing runs.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { startRedis } from '../harness/redis.js';
import { benchCluster } from './cluster.js';
import { benchConsole } from './console.js';
import { benchDelivery } from './delivery.js';
import { benchEventLog } from './eventlog.js';
import { benchHttp } from './http.js';
import { benchMatrix } from './matrix.js';
import { benchMatrixE2ee } from './matrix-e2ee.js';
import { benchMqtt } from './mqtt.js';
import { benchMqttSync } from './mqtt-sync.js';
import { benchRestart } from './restart.js';
import { benchScale } from './scale.js';
import { benchXmpp } from './xmpp.js';
import { benchXmppOmemo } from './xmpp-omemo.js';
import { benchXmppRooms } from './xmpp-rooms.js';
import { formatSection, type Bench, type BenchSection } from './report.js';

const sections: Record<string, Bench> = {
  eventlog: benchEventLog,
  delivery: benchDelivery,
  http: benchHttp,
  matrix: benchMatrix,
  'matrix-e2ee': benchMatrixE2ee,
  mqtt: benchMqtt,
  'mqtt-sync': benchMqttSync,
  xmpp: benchXmpp,
  'xmpp-rooms': benchXmppRooms,
  'xmpp-omemo': benchXmppOmemo,
  restart: benchRestart,
  cluster: benchCluster,
  scale: benchScale,
  console: benchConsole,
};

async function main(): Promise<void> {
  const quick = process.env['BENCH_QUICK'] === '1';
  const only = process.env['BENCH_ONLY']?.split(',').filter(Boolean);
  const jsonFile = process.env['BENCH_JSON'];
  const redis = await startRedis();
  const started = new Date().toISOString();
  process.stdout.write(`# syncgate benchmarks — ${started}, node ${process.version}, ${quick ? 'quick' : 'full'} run, Redis ${redis.owned ? 'started by the harness' : 'from REDIS_URL'}\n\n`);
  const done: Array<BenchSection & { readonly name: string; readonly loadavg: number[] }> = [];
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryMiB: Math.round(totalmem() / 2 ** 20),
    platform: `${process.platform}-${process.arch}`,
  };
  try {
    for (const [name, bench] of Object.entries(sections)) {
      if (only && !only.includes(name)) continue;
      const section = await bench({ redisUrl: redis.url, quick });
      process.stdout.write(`${formatSection(section)}\n\n`);
      done.push({ name, loadavg: loadavg(), ...section });
      if (jsonFile) {
        const report = { started, finished: new Date().toISOString(), node: process.version, quick, only: only ?? null, machine, sections: done };
        writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
      }
    }
  } finally {
    await redis.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
