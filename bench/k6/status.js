// GET /task-status/<id> from VUS connections for DURATION, over the ids in IDS_FILE
// (a JSON list of finished tasks). Writes its figures to SUMMARY (JSON).
import http from 'k6/http';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL;
const ids = new SharedArray('ids', () => JSON.parse(open(__ENV.IDS_FILE)));

const statusMs = new Trend('status_ms', true);
const statusOk = new Counter('status_ok');
const statusBad = new Counter('status_bad');

const params = {
  headers: { Authorization: `Bearer ${__ENV.API_KEY || 'none'}` },
  timeout: '10s',
};

export const options = {
  scenarios: {
    status: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '64', 10),
      duration: __ENV.DURATION || '10s',
    },
  },
  discardResponseBodies: false,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(99)', 'count'],
};

export default function () {
  const id = ids[(__VU * 7919 + __ITER) % ids.length];
  const res = http.get(`${BASE_URL}/task-status/${id}`, params);
  if (res.status === 200 && res.body.includes('SUCCESS')) {
    statusOk.add(1);
    statusMs.add(res.timings.duration);
  } else {
    statusBad.add(1);
  }
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
