// The committed generated types and dist/ must be what the generator and tsc produce now.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { distProblems } from '../scripts/check-dist.mjs';
import { OUTPUT_PATH, generate, generateFromRepo } from '../scripts/gen-types.mjs';

test('src/generated/api-types.ts is fresh (regenerated from the repository\'s openapi.json)', () => {
  const committed = readFileSync(OUTPUT_PATH, 'utf8');
  assert.ok(committed === generateFromRepo(), 'src/generated/api-types.ts is stale: run `npm run gen` (then `npm run build`) in sdk/js');
});

test('the generator notices a change of the document', () => {
  const doc = JSON.parse(JSON.stringify({ openapi: '3.0.3', info: { title: 't', version: '1' }, paths: {},
    components: { schemas: { A: { type: 'object', properties: { x: { type: 'string', nullable: true } }, required: ['x'] } } } }));
  const before = generate(doc);
  assert.match(before, /export interface A \{\n {2}x: string \| null;\n\}/);
  doc.components.schemas.A.properties.y = { type: 'array', items: { $ref: '#/components/schemas/A' } };
  assert.match(generate(doc), /y\?: A\[\];/);
});

test('dist/ is fresh (rebuilt into a temporary directory and compared)', { timeout: 120_000 }, () => {
  assert.deepEqual(distProblems(), [], 'dist/ is stale: run `npm run build` in sdk/js');
});

test('the package exports what it documents', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.exports['.'].types, './dist/index.d.ts');
  assert.equal(pkg.exports['.'].import, './dist/index.js');
  assert.equal(pkg.dependencies.mqtt, '5.16.0');
  const sdk = await import('@ringmq/sdk'); // self-reference through package.json "exports"
  for (const name of ['RingmqClient', 'RingmqApi', 'RingmqError', 'RingmqStream', 'RingmqMqttError', 'decodePayload']) {
    assert.equal(typeof sdk[name], 'function', name);
  }
});

test('the packed package holds dist/, its types and the README', async () => {
  const { execFileSync } = await import('node:child_process');
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: new URL('..', import.meta.url), encoding: 'utf8', timeout: 60_000 });
  const files = JSON.parse(out)[0].files.map((f) => f.path);
  for (const f of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/client.js', 'dist/generated/api-types.d.ts']) {
    assert.ok(files.includes(f), `${f} not in the package: ${files}`);
  }
  assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')));
});

test('openapi.json: refs resolve, path parameters are declared, success answers name their schema', async () => {
  const { OPENAPI_PATH } = await import('../scripts/gen-types.mjs');
  const doc = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8'));
  assert.equal(doc.openapi, '3.0.3');
  const problems = [];
  const walk = (v, at) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${at}[${i}]`));
    else if (v && typeof v === 'object') {
      if (typeof v.$ref === 'string') {
        const [, kind, name] = /^#\/components\/(schemas|responses)\/(.+)$/.exec(v.$ref) ?? [];
        if (!kind || !doc.components[kind][name]) problems.push(`${at}: unresolved ${v.$ref}`);
      }
      for (const [k, x] of Object.entries(v)) walk(x, `${at}.${k}`);
    }
  };
  walk(doc, '$');
  for (const [p, item] of Object.entries(doc.paths)) {
    const want = [...p.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
    for (const [m, op] of Object.entries(item)) {
      const have = (op.parameters ?? []).filter((x) => x.in === 'path').map((x) => x.name);
      if (JSON.stringify(have) !== JSON.stringify(want)) problems.push(`${m} ${p}: path parameters ${have}, want ${want}`);
      for (const [code, r] of Object.entries(op.responses)) {
        const schema = r.content?.['application/json']?.schema;
        if (/^2/.test(code) && code !== '204' && p !== '/v1/openapi.json' && !schema?.$ref) problems.push(`${m} ${p} ${code}: no named schema`);
      }
    }
  }
  assert.deepEqual(problems, []);
});
