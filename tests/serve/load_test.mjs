// SPDX-License-Identifier: GPL-3.0-or-later
// Bounded load test on loopback: CLIENTS concurrent clients each send REQUESTS greedy completions
// one after another. Every answer must be 200 with the expected text (nothing lost, nothing mixed
// up); prints the latency percentiles and throughput as JSON. Exit 1 on any lost or wrong answer.
// Usage: node load_test.mjs BASE_URL CLIENTS REQUESTS MAX_TOKENS PROMPT EXPECTED_TEXT
const [baseURL, clients, requests, maxTokens, prompt, expected] = process.argv.slice(2);

async function one() {
  const start = performance.now();
  const res = await fetch(`${baseURL}/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: Number(maxTokens), temperature: 0 }),
  });
  const body = await res.json();
  const ms = performance.now() - start;
  const ok = res.status === 200 && body.choices?.[0]?.text === expected;
  return { ms, ok, status: res.status };
}

async function client() {
  const out = [];
  for (let i = 0; i < Number(requests); i += 1) out.push(await one());
  return out;
}

const t0 = performance.now();
const results = (await Promise.all(Array.from({ length: Number(clients) }, client))).flat();
const wall = (performance.now() - t0) / 1000;
const ms = results.map((r) => r.ms).sort((a, b) => a - b);
const pct = (p) => ms[Math.min(ms.length - 1, Math.ceil((p / 100) * ms.length) - 1)];
const lost = results.filter((r) => !r.ok);
const report = {
  clients: Number(clients), requests: results.length, ok: results.length - lost.length,
  statuses: [...new Set(results.map((r) => r.status))],
  p50_ms: Math.round(pct(50)), p99_ms: Math.round(pct(99)), max_ms: Math.round(ms[ms.length - 1]),
  requests_per_s: +(results.length / wall).toFixed(2),
};
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(lost.length === 0 ? 0 : 1);
