/**
 * A small real demo consortium for the browser tests: three site agents on loopback.
 *
 * Global setup runs `python -m mpc_jupyter.cli demo --serve-only` (2,000 patients per
 * hospital) in a folder of its own, waits for the agents to serve, computes the pooled
 * answer of the test query from the sites' Parquet files with DuckDB, and writes
 * test-results/consortium.json ({folder, path, pid, query, expected}). The Jupyter server
 * gets MPC_CONSORTIUM (webServer.env in playwright.config.js), so `%mpc connect` with no
 * path in a kernel connects to it. Global teardown sends SIGTERM (the demo then stops its
 * agents) and waits; it runs when tests fail too.
 *
 * Environment: MPC_UI_CONSORTIUM=0 disables all this (the consortium specs are skipped),
 * MPC_UI_CONSORTIUM_DIR sets the folder, MPC_UI_PATIENTS the hospital size, MPC_PYTHON the
 * interpreter (default: `python` on PATH, the project's .venv in scripts/browser-tests.sh).
 */
const { execFileSync, spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const PORT = Number(process.env.MPC_UI_PORT || 8888);
const ENABLED = process.env.MPC_UI_CONSORTIUM !== '0';
const FOLDER = path.resolve(process.env.MPC_UI_CONSORTIUM_DIR || path.join(os.tmpdir(), `mpc-ui-consortium-${PORT}`));
const STATE_FILE = path.resolve(__dirname, 'test-results', 'consortium.json');
const PYTHON = process.env.MPC_PYTHON || 'python';
const PATIENTS = String(process.env.MPC_UI_PATIENTS || 2000);

/** The query the consortium spec runs; the setup computes its pooled answer. */
const QUERY = 'SELECT ward, COUNT(*) AS admissions FROM admissions GROUP BY ward';

const POOLED = `
import json, sys
import duckdb
folder = sys.argv[1]
files = [f"{folder}/data/{site}/admissions.parquet" for site in ("north", "central", "south")]
rows = duckdb.sql(f"SELECT ward, COUNT(*) FROM read_parquet({files!r}) GROUP BY ward").fetchall()
print(json.dumps({ward: int(n) for ward, n in rows}))
`;

function consortiumPath() {
  return path.join(FOLDER, 'consortium.toml');
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function stopProcess(pid, seconds = 20) {
  if (!pid || !alive(pid)) {
    return;
  }
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + seconds * 1000;
  while (alive(pid) && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  if (alive(pid)) {
    process.kill(pid, 'SIGKILL');
  }
}

/** Start the consortium; resolves once the agents serve and the expected answer is written. */
async function startConsortium() {
  fs.rmSync(STATE_FILE, { force: true });
  if (!ENABLED) {
    return;
  }
  fs.mkdirSync(path.dirname(STATE_FILE), { recursive: true });
  const log = path.resolve(__dirname, 'test-results', 'consortium.log');
  const args = ['-m', 'mpc_jupyter.cli', 'demo', '--serve-only', '--fresh', '--patients', PATIENTS, '--dir', FOLDER];
  const child = spawn(PYTHON, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = fs.createWriteStream(log);
  let text = '';
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consortium not serving after 120 s (see ${log})`)), 120000);
    const onData = chunk => {
      out.write(chunk);
      text += chunk.toString();
      if (/^MPC_CONSORTIUM=/m.test(text)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', chunk => out.write(chunk));
    child.on('exit', code => {
      clearTimeout(timer);
      reject(new Error(`the demo consortium exited with ${code} before serving:\n${text}`));
    });
    child.on('error', reject);
  });
  // Keep writing the log after setup; the runner must not wait for the child.
  child.unref();
  try {
    await ready;
    const expected = JSON.parse(execFileSync(PYTHON, ['-c', POOLED, FOLDER], { encoding: 'utf-8' }));
    const state = { folder: FOLDER, path: consortiumPath(), pid: child.pid, query: QUERY, expected };
    fs.writeFileSync(STATE_FILE, JSON.stringify(state, null, 2) + '\n');
    console.log(`consortium serving (pid ${child.pid}): ${consortiumPath()}`);
  } catch (error) {
    await stopProcess(child.pid);
    throw error;
  }
}

/** Stop the consortium started by startConsortium (if any). */
async function stopConsortium() {
  const state = readState();
  if (state) {
    await stopProcess(state.pid);
  }
}

/** What the setup wrote, or null when no consortium runs. */
function readState() {
  try {
    return JSON.parse(fs.readFileSync(STATE_FILE, 'utf-8'));
  } catch {
    return null;
  }
}

module.exports = { ENABLED, QUERY, STATE_FILE, consortiumPath, readState, startConsortium, stopConsortium };
