// POST /send-email from VUS connections for DURATION (or ITERATIONS in all, shared),
// with an optional /healthz probe at HEALTH_RATE requests per second alongside.
// Writes its figures to SUMMARY (JSON) from handleSummary.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL;
const VUS = parseInt(__ENV.VUS || '64', 10);
const DURATION = __ENV.DURATION || '10s';
const ITERATIONS = parseInt(__ENV.ITERATIONS || '0', 10);
const HEALTH_RATE = parseInt(__ENV.HEALTH_RATE || '0', 10);
const MAX_DURATION = __ENV.MAX_DURATION || '120s';

const enqueueMs = new Trend('enqueue_ms', true);
const enqueueOk = new Counter('enqueue_ok');
const enqueueBad = new Counter('enqueue_bad');
const healthMs = new Trend('health_ms', true);
const healthOk = new Counter('health_ok');
const healthBad = new Counter('health_bad');

const params = {
  headers: {
    'Content-Type': 'application/json',
    Authorization: `Bearer ${__ENV.API_KEY || 'none'}`,
  },
  timeout: '10s',
};

const scenarios = {};
if (ITERATIONS > 0) {
  scenarios.enqueue = {
    executor: 'shared-iterations',
    exec: 'enqueue',
    vus: Math.min(VUS, ITERATIONS),
    iterations: ITERATIONS,
    maxDuration: MAX_DURATION,
  };
} else {
  scenarios.enqueue = { executor: 'constant-vus', exec: 'enqueue', vus: VUS, duration: DURATION };
}
if (HEALTH_RATE > 0) {
  scenarios.health = {
    executor: 'constant-arrival-rate',
    exec: 'health',
    rate: HEALTH_RATE,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: 4,
    maxVUs: 32,
  };
}

export const options = {
  scenarios,
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(99)', 'count'],
  noConnectionReuse: false,
};

export function enqueue() {
  // A new recipient every time, at one of 20 domains: addresses rarely repeat in real
  // traffic, domains do (shared_schemas.addresses remembers each domain's check).
  const body = JSON.stringify({
    to: [`user${__VU}.${__ITER}@example${__ITER % 20}.com`],
    subject: `Bench ${__VU}-${__ITER}`,
    body: 'Hello from make bench. This is a short plain-text mail body.',
  });
  const res = http.post(`${BASE_URL}/send-email`, body, params);
  if (res.status === 202) {
    enqueueOk.add(1);
    enqueueMs.add(res.timings.duration);
  } else {
    enqueueBad.add(1);
  }
}

export function health() {
  const res = http.get(`${BASE_URL}/healthz`, { timeout: '10s' });
  if (res.status === 200) {
    healthOk.add(1);
    healthMs.add(res.timings.duration);
  } else {
    healthBad.add(1);
  }
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
