#!/usr/bin/env node
// client.mjs reads a TUF repository with tuf-js (the sigstore-js TUF client),
// trusting nothing but the given 1.root.json, and downloads targets through it.
//
//   node client.mjs --metadata-url URL --targets-url URL --root 1.root.json \
//     --cache DIR TARGET_PATH...
//
// tuf-js refreshes root, timestamp, snapshot and targets (walking delegations),
// then for each target path looks up its TargetFile and downloads it, checking
// length and hashes. The script prints one JSON object on stdout:
//
//   {"ok": true, "targets": [{"path": "...", "ok": true, "length": N,
//     "sha256": "...", "custom": {...}}, {"path": "...", "ok": false,
//     "error": "..."}]}
//
// and exits 0 when the refresh and every download succeeded, 1 when any
// failed (the JSON says which), and 2 on a usage error.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

import { Updater } from 'tuf-js';

function usage(msg) {
  process.stderr.write(
    `client.mjs: ${msg}\n` +
      'usage: node client.mjs --metadata-url URL --targets-url URL --root 1.root.json --cache DIR TARGET_PATH...\n',
  );
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      'metadata-url': { type: 'string' },
      'targets-url': { type: 'string' },
      root: { type: 'string' },
      cache: { type: 'string' },
    },
  });
} catch (err) {
  usage(err.message);
}
const opts = args.values;
for (const name of ['metadata-url', 'targets-url', 'root', 'cache']) {
  if (!opts[name]) usage(`--${name} is required`);
}
if (args.positionals.length === 0) usage('no target paths given');

function errorText(err) {
  const name = err && err.constructor ? err.constructor.name : 'Error';
  return `${name}: ${err && err.message ? err.message : String(err)}`;
}

const metadataDir = join(opts.cache, 'metadata');
const targetDir = join(opts.cache, 'targets');
mkdirSync(metadataDir, { recursive: true });
mkdirSync(targetDir, { recursive: true });
// tuf-js starts from metadataDir/root.json: the only trust it gets.
const trustedRoot = join(metadataDir, 'root.json');
if (!existsSync(trustedRoot)) copyFileSync(opts.root, trustedRoot);

const updater = new Updater({
  metadataDir,
  metadataBaseUrl: opts['metadata-url'],
  targetDir,
  targetBaseUrl: opts['targets-url'],
  // Fail fast: the repository is local, and a retry only hides a failure.
  config: { fetchTimeout: 30_000, fetchRetry: false },
});

const out = { ok: true, targets: [] };
try {
  await updater.refresh();
} catch (err) {
  out.ok = false;
  out.error = `refresh: ${errorText(err)}`;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(1);
}

for (const path of args.positionals) {
  const res = { path, ok: false };
  try {
    const info = await updater.getTargetInfo(path);
    if (!info) throw new Error('target not found in trusted metadata');
    // Never a cached copy: each run must fetch and verify.
    const file = await updater.downloadTarget(info);
    const data = readFileSync(file);
    res.ok = true;
    res.length = data.length;
    res.sha256 = createHash('sha256').update(data).digest('hex');
    res.trusted_sha256 = info.hashes.sha256;
    res.custom = info.custom;
  } catch (err) {
    res.error = errorText(err);
    out.ok = false;
  }
  out.targets.push(res);
}

process.stdout.write(JSON.stringify(out) + '\n');
process.exit(out.ok ? 0 : 1);
