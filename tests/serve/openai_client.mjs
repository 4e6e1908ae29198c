// SPDX-License-Identifier: GPL-3.0-or-later
// The official `openai` npm client against `retnet serve`: lists the models, then streams a
// greedy completion and prints {model, text, chunks, finish} as JSON.
// Usage: node openai_client.mjs BASE_URL PROMPT MAX_TOKENS
import OpenAI from 'openai';

const [baseURL, prompt, maxTokens] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0 });
const models = await client.models.list();
const model = models.data[0].id;
const stream = await client.completions.create({
  model, prompt, max_tokens: Number(maxTokens), temperature: 0, stream: true,
});
let text = '';
let chunks = 0;
let finish = null;
for await (const chunk of stream) {
  text += chunk.choices[0].text;
  chunks += 1;
  finish = chunk.choices[0].finish_reason ?? finish;
}
process.stdout.write(JSON.stringify({ model, text, chunks, finish }) + '\n');
