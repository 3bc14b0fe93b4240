// POST /send-email/batch with BATCH mails per request from VUS connections for DURATION.
// Each mail is shaped as enqueue.js sends it. Counts mails accepted (BATCH per 202).
// Writes its figures to SUMMARY (JSON) from handleSummary.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL;
const VUS = parseInt(__ENV.VUS || '4', 10);
const DURATION = __ENV.DURATION || '10s';
const BATCH = parseInt(__ENV.BATCH || '500', 10);
// Bodies built once, up front: building 500 mails per request would cost the load
// generator more CPU than the API spends on them, on the same cores. Each has its own
// recipients; the API remembers domains, not addresses (shared_schemas.addresses).
const BODIES = 8;

const batchMs = new Trend('batch_ms', true);
const batchOk = new Counter('batch_ok');
const batchBad = new Counter('batch_bad');
const mailsOk = new Counter('mails_ok');

const params = {
  headers: {
    'Content-Type': 'application/json',
    Authorization: `Bearer ${__ENV.API_KEY || 'none'}`,
  },
  timeout: '30s',
};

const bodies = [];
for (let b = 0; b < BODIES; b++) {
  const messages = [];
  for (let i = 0; i < BATCH; i++) {
    messages.push({
      to: [`batch${b}.${i}@example${i % 20}.com`],
      subject: `Bench batch ${b}-${i}`,
      body: 'Hello from make bench. This is a short plain-text mail body.',
    });
  }
  bodies.push(JSON.stringify({ messages }));
}

export const options = {
  scenarios: {
    batch: { executor: 'constant-vus', exec: 'batch', vus: VUS, duration: DURATION },
  },
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(99)', 'count'],
};

export function batch() {
  const res = http.post(`${BASE_URL}/send-email/batch`, bodies[__ITER % BODIES], params);
  if (res.status === 202) {
    batchOk.add(1);
    mailsOk.add(BATCH);
    batchMs.add(res.timings.duration);
  } else {
    batchBad.add(1);
  }
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
