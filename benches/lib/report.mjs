// Plain-text tables and the environment header.
import os from 'node:os';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export function table({ title, head, rows }) {
  const all = [head, ...rows].map((r) => r.map(String));
  const widths = head.map((_, i) => Math.max(...all.map((r) => [...r[i]].length)));
  const numeric = head.map((_, i) => rows.every((r) => /^[-\d.,%×n/a ]+$/.test(String(r[i]))));
  const line = (r) =>
    '  ' +
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  const out = [];
  if (title) out.push(title);
  out.push(line(all[0]));
  out.push(`  ${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  for (const r of all.slice(1)) out.push(line(r));
  return out.join('\n');
}

function sha1(path) {
  return createHash('sha1').update(readFileSync(path)).digest('hex');
}

/** Which build of the engine is in place: 'release', 'debug' or 'unknown'. */
export function engineBuild(root) {
  const node = join(root, `aluvia.${process.platform}-${process.arch}-gnu.node`);
  if (!existsSync(node)) return { file: null, build: 'unknown' };
  const size = statSync(node).size;
  // Where cargo builds: CARGO_TARGET_DIR, else ./target.
  const targetDir = process.env.CARGO_TARGET_DIR || join(root, 'target');
  const dirs = existsSync(targetDir) ? readdirSync(targetDir, { withFileTypes: true }) : [];
  const triples = ['', ...dirs.filter((d) => d.isDirectory() && d.name.includes('-')).map((d) => d.name)];
  let nodeSha;
  for (const build of ['release', 'debug']) {
    for (const triple of triples) {
      const lib = join(targetDir, triple, build, 'libaluvia_sdk.so');
      if (!existsSync(lib) || statSync(lib).size !== size) continue;
      nodeSha ??= sha1(node);
      if (sha1(lib) === nodeSha) return { file: node, build, mtime: statSync(node).mtime.toISOString() };
    }
  }
  return { file: node, build: 'unknown', mtime: statSync(node).mtime.toISOString() };
}

export function environment(root) {
  return {
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model?.trim(),
    loadavg: os.loadavg().map((x) => Number(x.toFixed(2))),
    engine: engineBuild(root),
  };
}
