// The end-to-end environment: a real pebble ACME server (with pebble-challtestsrv as its DNS,
// resolving every name to 127.0.0.1), `gantry run --no-cluster` on free loopback ports pointed
// at pebble, and Debian's chromium driven by playwright-core. Every process started here is
// killed when the suite ends (and on SIGINT/SIGTERM).

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const SHOTS = path.join(ROOT, 'target', 'e2e-screenshots');

const children = [];

function killAll() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try { c.kill('SIGKILL'); } catch { /* already gone */ }
    }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAll(); process.exit(130); });
}

export function need(bin, pkg) {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
  } catch {
    throw new Error(`${bin} is missing: apt-get install ${pkg}`);
  }
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function start(name, cmd, args, opts, logFile) {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', out, out] });
  child.logFile = logFile;
  child.name = name;
  children.push(child);
  child.on('exit', (code, sig) => {
    if (!child.stopping) fs.appendFileSync(logFile, `\n[e2e] ${name} exited: ${code ?? sig}\n`);
  });
  return child;
}

export async function waitFor(what, fn, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

async function listening(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

/** A CA and a certificate for localhost/127.0.0.1 signed by it (pebble's own HTTPS listener). */
function makePebbleCerts(dir) {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=gantry e2e CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', '/CN=localhost'], dir);
  fs.writeFileSync(path.join(dir, 'leaf.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' +
    'keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'cert.pem', '-days', '2', '-extfile', 'leaf.ext'], dir);
}

/** A self-signed certificate and key for `name`, plus an unrelated key (for the mismatch). */
export function makeUploadCert(dir, name) {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'up.key', '-out', 'up.pem', '-days', '30', '-subj', `/CN=${name}`,
    '-addext', `subjectAltName=DNS:${name}`], dir);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'other.key'], dir);
  return {
    chain: path.join(dir, 'up.pem'),
    key: path.join(dir, 'up.key'),
    otherKey: path.join(dir, 'other.key'),
  };
}

export function gantryBin() {
  if (process.env.GANTRY_BIN) return process.env.GANTRY_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
  return path.join(target, 'debug', 'gantry');
}

/** Starts pebble, its DNS and gantry. Returns what the specs need. */
export async function startEnv() {
  try {
    return await startEnvInner();
  } catch (e) {
    killAll();
    throw e;
  }
}

async function startEnvInner() {
  need('pebble', 'pebble');
  need('pebble-challtestsrv', 'pebble');
  need('openssl', 'openssl');
  const bin = gantryBin();
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run cargo build -p gantry first`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-e2e-'));
  const logs = path.join(ROOT, 'target', 'e2e-logs');
  fs.mkdirSync(logs, { recursive: true });
  fs.mkdirSync(SHOTS, { recursive: true });
  makePebbleCerts(dir);

  const [dns, dnsMgmt, acme, acmeMgmt, http, https, admin] =
    await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);

  start('pebble-challtestsrv', 'pebble-challtestsrv', ['-http01', '', '-https01', '', '-tlsalpn01', '',
    '-dns01', `127.0.0.1:${dns}`, '-management', `127.0.0.1:${dnsMgmt}`, '-defaultIPv6', ''],
  {}, path.join(logs, 'challtestsrv.log'));
  fs.writeFileSync(path.join(dir, 'pebble.json'), JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${acme}`,
      managementListenAddress: `127.0.0.1:${acmeMgmt}`,
      certificate: path.join(dir, 'cert.pem'),
      privateKey: path.join(dir, 'key.pem'),
      httpPort: http,
      tlsPort: https,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  }));
  start('pebble', 'pebble', ['-config', path.join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dns}`],
    { env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' } },
    path.join(logs, 'pebble.log'));
  await waitFor('pebble', () => listening(acme));

  const data = path.join(dir, 'data');
  const gantryLog = path.join(logs, 'gantry.log');
  fs.writeFileSync(gantryLog, '');
  const gantry = start('gantry', bin, ['run', '--no-cluster', '--data-dir', data,
    '--http', `127.0.0.1:${http}`, '--https', `127.0.0.1:${https}`, '--admin', `127.0.0.1:${admin}`,
    '--acme-directory', `https://127.0.0.1:${acme}/dir`, '--acme-ca-root', path.join(dir, 'ca.pem')],
  { env: { ...process.env, GANTRY_LOG: 'info,gantry_supervisor=debug,gantry_web_ui=debug', NO_COLOR: '1' } },
  gantryLog);
  const tokenFile = path.join(data, 'setup-token');
  const exited = () => {
    if (gantry.exitCode !== null || gantry.signalCode !== null) {
      const e = new Error(`gantry exited at start:\n${fs.readFileSync(gantryLog, 'utf8').slice(-3000)}`);
      e.fatal = true;
      throw e;
    }
  };
  await waitFor('gantry ready', () => { exited(); return /Gantry is running/.test(fs.readFileSync(gantryLog, 'utf8')); });
  const token = fs.readFileSync(tokenFile, 'utf8').trim();

  return {
    dir, data, token, gantryLog,
    http, https, admin,
    adminUrl: `https://127.0.0.1:${admin}`,
    appUrl: `https://127.0.0.1:${https}`,
    plainUrl: `http://127.0.0.1:${http}`,
    gantry,
    async stop() {
      gantry.stopping = true;
      if (gantry.exitCode === null) {
        gantry.kill('SIGTERM');
        await waitFor('gantry to stop', () => gantry.exitCode !== null || gantry.signalCode !== null, 20000)
          .catch(() => gantry.kill('SIGKILL'));
      }
      for (const c of children) c.stopping = true;
      killAll();
    },
  };
}

/** The certificate served for `servername` on the TLS entrypoint. */
export function servedCert(port, servername) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false }, () => {
      const c = s.getPeerCertificate();
      s.end();
      resolve(c);
    });
    s.on('error', reject);
  });
}

const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function launchBrowser() {
  need('chromium', 'chromium');
  const { chromium } = await import('playwright-core');
  // playwright-core gives every launch a fresh temporary profile (user data dir).
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_FLAGS });
}
