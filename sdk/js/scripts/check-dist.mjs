#!/usr/bin/env node
// Checks that dist/ is what `tsc` builds from src/ now: compiles into a temporary directory and
// compares every file both ways. Exits 1 (naming the files) when dist/ is stale: run `npm run build`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SDK_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function files(dir, base = dir) {
  let out = [];
  let entries = [];
  try { entries = readdirSync(dir, { withFileTypes: true }); } catch { return out; }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out = out.concat(files(p, base));
    else out.push(path.relative(base, p));
  }
  return out.sort();
}

/** Differences between dist/ and a fresh build: a list of `path: reason`. */
export function distProblems() {
  const tmp = mkdtempSync(path.join(tmpdir(), 'ringmq-sdk-dist-'));
  try {
    const tsc = createRequire(path.join(SDK_DIR, 'package.json')).resolve('typescript/bin/tsc');
    execFileSync(process.execPath, [tsc, '-p', path.join(SDK_DIR, 'tsconfig.json'), '--outDir', tmp], { cwd: SDK_DIR, stdio: 'pipe' });
    const dist = path.join(SDK_DIR, 'dist');
    const want = files(tmp);
    const have = files(dist);
    const problems = [];
    for (const f of want) {
      if (!have.includes(f)) problems.push(`dist/${f}: missing`);
      else if (readFileSync(path.join(tmp, f), 'utf8') !== readFileSync(path.join(dist, f), 'utf8')) problems.push(`dist/${f}: differs from a fresh build`);
    }
    for (const f of have) if (!want.includes(f)) problems.push(`dist/${f}: not built from src/ any more`);
    return problems;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const problems = distProblems();
  if (problems.length) {
    console.error(`dist/ is stale (run \`npm run build\` in sdk/js):\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log('dist/ is fresh');
}
