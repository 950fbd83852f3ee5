// The dashboard's browser test: Debian's chromium, headless, driven by playwright-core
// (from ui/node_modules). tests/tests/ui.rs runs it against a real ctld over HTTPS:
//
//   node tests/ui/dashboard.mjs --url https://127.0.0.1:PORT/ui/login?token=T \
//        --instance c1 --artifacts DIR [--bulk 200]
//
// It logs in through the link, checks the live list, stop/start, the terminal (a command,
// a resize), a snapshot restore, a launch and a delete from the dialogs, that a foreign
// Origin and a request without the session are refused, and how fast 200 instances
// render. Each result is one line `UI-REPORT {json}`; the exit code is 0 only if every
// check passed. On failure, screenshots of the list and the terminal go to the artifacts
// directory.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import { join } from 'node:path';

const require = createRequire(new URL('../../ui/package.json', import.meta.url));
const { chromium } = require('playwright-core');

function args() {
  // --dev 1: against ui/dev/proxy.mjs (no HTTPS, no sessions): the session checks are skipped.
  const out = { url: '', instance: 'c1', artifacts: 'target/ui-artifacts', bulk: 200, chromium: '/usr/bin/chromium', dev: '' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in out)) throw new Error(`unknown option ${argv[i]}`);
    out[key] = key === 'bulk' ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!out.url) throw new Error('--url is required');
  return out;
}

const opts = args();
const base = new URL(opts.url);
const origin = base.origin;
const started = Date.now();

function report(step, fields = {}) {
  console.log(`UI-REPORT ${JSON.stringify({ step, ...fields })}`);
}

/** One request outside the browser (node's own client): `{status, body}`. */
function request(method, path, { headers = {}, body } = {}) {
  const lib = base.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      new URL(path, origin),
      { method, headers, rejectUnauthorized: false },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode, body: data }));
      },
    );
    // A websocket handshake that is accepted answers 101 and never ends: that is enough.
    req.on('upgrade', (res, sock) => {
      sock.destroy();
      resolve({ status: res.statusCode, body: '' });
    });
    req.on('error', reject);
    if (body !== undefined) req.write(typeof body === 'string' ? body : JSON.stringify(body));
    req.end();
  });
}

async function waitFor(what, f, timeout = 10000, every = 100) {
  const until = Date.now() + timeout;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeout} ms: ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

const browser = await chromium.launch({
  executablePath: opts.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
const problems = [];
page.on('console', (m) => {
  const text = m.text();
  if (m.type() === 'error' || /Content Security Policy/i.test(text)) problems.push(`console ${m.type()}: ${text}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('response', (r) => {
  if (r.status() >= 400) problems.push(`response ${r.status()}: ${r.request().method()} ${new URL(r.url()).pathname}`);
});
let navigations = 0;
page.on('framenavigated', (f) => {
  if (f === page.mainFrame()) navigations++;
});

const name = opts.instance;
const row = (n) => page.locator(`tr[data-testid="instance-row"][data-name="${n}"]`);
const status = (n) => row(n).locator('[data-testid="status"]');
const termRows = () => page.locator('[data-testid="terminal-rows"]');

async function termText() {
  return (await termRows().innerText()).split('\n').map((l) => l.replace(/\s+$/, ''));
}

/** Type a command into the terminal and wait for a whole line matching `want`. */
async function runInTerminal(command, want, timeout = 10000) {
  await page.locator('[data-testid="terminal"]').click();
  await page.keyboard.type(command);
  await page.keyboard.press('Enter');
  return waitFor(`terminal line ${want} after ${command}`, async () => (await termText()).find((l) => want.test(l)), timeout);
}

async function openTerminal() {
  await page.locator('[data-testid="tab-terminal"]').click();
  await page.locator('[data-testid="terminal-phase"][data-phase="connected"]').waitFor({ timeout: 10000 });
  // The shell's prompt: the session is live.
  await waitFor('a shell prompt', async () => (await termText()).some((l) => /[#$] ?$/.test(l)), 10000);
}

async function screenshots() {
  mkdirSync(opts.artifacts, { recursive: true });
  const shots = [];
  const shot = async (file) => {
    const path = join(opts.artifacts, file);
    try {
      await page.screenshot({ path, fullPage: true });
      shots.push(path);
    } catch (e) {
      console.error(`screenshot ${file}: ${e.message}`);
    }
  };
  await shot('failure.png');
  try {
    await page.goto(new URL('/ui/', origin).href);
    await page.locator('[data-testid="instance-list"][data-loaded="true"]').waitFor({ timeout: 5000 });
  } catch (e) {
    console.error(`list page: ${e.message}`);
  }
  await shot('list.png');
  try {
    await page.goto(new URL(`/ui/instances/${name}/terminal`, origin).href);
    await page.locator('[data-testid="terminal-phase"][data-phase="connected"]').waitFor({ timeout: 5000 });
    await page.waitForTimeout(500);
  } catch (e) {
    console.error(`terminal page: ${e.message}`);
  }
  await shot('terminal.png');
  return shots;
}

/** Ends a --dev run before the session checks. */
class Skip extends Error {}

let failed = false;
try {
  // Log in with the single-use link: the server answers with the session cookie and /ui/.
  await page.goto(opts.url);
  await page.locator('[data-testid="instance-list"][data-loaded="true"]').waitFor({ timeout: 10000 });
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name.startsWith('__Host-ctl_session_'));
  report('login', { url: page.url(), cookie: Boolean(session), http_only: session?.httpOnly ?? null, secure: session?.secure ?? null, same_site: session?.sameSite ?? null });
  await page.locator('[data-testid="live"]', { hasText: 'live' }).waitFor({ timeout: 5000 });
  const cookie = session ? `${session.name}=${session.value}` : '';
  const withCookie = cookie ? { Cookie: cookie } : {};

  // The instance is listed as running.
  await status(name).filter({ hasText: 'Running' }).waitFor({ timeout: 5000 });
  report('running', { instance: name });

  // Stop it: the list shows Stopped within 2 s, without a reload.
  const before = navigations;
  await page.evaluate(() => {
    document.body.dataset.uiTestMarker = 'kept';
  });
  // Timed inside the page: from the click to the row saying Stopped (playwright's own
  // polling would add its intervals).
  await page.evaluate((n) => {
    const tr = document.querySelector(`tr[data-testid="instance-row"][data-name="${n}"]`);
    const timing = { clickAt: 0, stoppedAt: 0 };
    document.body.dataset.uiTestTiming = '';
    tr.querySelector('[data-testid="action-force-stop"]').addEventListener('click', () => (timing.clickAt = performance.now()), { capture: true, once: true });
    new MutationObserver((_, obs) => {
      if (timing.clickAt && tr.querySelector('[data-testid="status"]').textContent === 'Stopped') {
        timing.stoppedAt = performance.now();
        document.body.dataset.uiTestTiming = String(timing.stoppedAt - timing.clickAt);
        obs.disconnect();
      }
    }).observe(tr, { subtree: true, childList: true, characterData: true });
  }, name);
  let t = performance.now();
  await row(name).locator('[data-testid="action-force-stop"]').click();
  await status(name).filter({ hasText: 'Stopped' }).waitFor({ timeout: 10000 });
  const stopMs = Number(await page.evaluate(() => document.body.dataset.uiTestTiming));
  const kept = await page.evaluate(() => document.body.dataset.uiTestMarker);
  if (kept !== 'kept' || navigations !== before) throw new Error('the page reloaded while stopping');
  // How much of it was the daemon's own stop (its operation's lifetime).
  const ops = await page.evaluate(async () => (await (await fetch('/1.0/operations?recursion=1')).json()).metadata);
  const stopOp = Object.values(ops || {})
    .flat()
    .filter((o) => o.description === 'Stopping instance')
    .sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)))[0];
  const serverMs = stopOp ? (Date.parse(stopOp.updated_at) - Date.parse(stopOp.created_at)) : null;
  if (!(stopMs < 2000)) throw new Error(`Stopped shown ${stopMs} ms after the click (limit 2000; the daemon's stop took ${serverMs} ms)`);
  report('stopped', { ms: Math.round(stopMs), server_ms: serverMs, wall_ms: Math.round(performance.now() - t) });

  t = performance.now();
  await row(name).locator('[data-testid="action-start"]').click();
  await status(name).filter({ hasText: 'Running' }).waitFor({ timeout: 5000 });
  report('started', { ms: Math.round(performance.now() - t) });

  // Terminal: a command and its output.
  await row(name).locator('[data-testid="instance-link"]').click();
  await openTerminal();
  const line = await runInTerminal('echo ui-$((6*7))', /^ui-42$/);
  report('terminal', { line });

  // Console: attached over its websocket; its log shown.
  await page.locator('[data-testid="tab-console"]').click();
  await page.locator('[data-testid="console-phase"][data-phase="connected"]').waitFor({ timeout: 10000 });
  await page.locator('[data-testid="console-show-log"]').click();
  await page.locator('[data-testid="console-log"]').waitFor({ timeout: 5000 });
  // Overview: the three graphs sample …/state.
  await page.locator('[data-testid="tab-overview"]').click();
  for (const g of ['graph-cpu', 'graph-memory', 'graph-network']) await page.locator(`[data-testid="${g}"] canvas`).waitFor({ timeout: 5000 });
  report('console_tab', { attached: true });
  await page.locator('[data-testid="tab-terminal"]').click();
  await openTerminal();

  // Resize: the window changes, the terminal follows, the shell sees the new size.
  const host = page.locator('[data-testid="terminal"]');
  const size0 = `${await host.getAttribute('data-rows')} ${await host.getAttribute('data-cols')}`;
  await page.setViewportSize({ width: 900, height: 620 });
  // The new size, once it settled (width and height may reach the terminal in two steps).
  let last = '';
  let same = 0;
  const size = await waitFor('a new, settled terminal size', async () => {
    const s = `${await host.getAttribute('data-rows')} ${await host.getAttribute('data-cols')}`;
    same = s === last ? same + 1 : 0;
    last = s;
    return s !== size0 && same >= 3 ? s : null;
  }, 10000, 150);
  // The control message travels on its own websocket; the shell reads the size at once.
  const stty = await runInTerminal('stty size', new RegExp(`^${size}$`));
  report('resize', { before: size0, after: size, stty });
  await page.setViewportSize({ width: 1280, height: 800 });

  // Snapshot: create, change a file, restore, and the change is gone.
  await runInTerminal('touch /ui-before && echo marked-before', /^marked-before$/);
  await page.locator('[data-testid="tab-snapshots"]').click();
  await page.locator('[data-testid="snapshot-name"]').fill('ui-snap');
  await page.locator('[data-testid="snapshot-create"]').click();
  const snapRow = page.locator('tr[data-testid="snapshot-row"][data-name="ui-snap"]');
  await snapRow.waitFor({ timeout: 15000 });
  await openTerminal();
  await runInTerminal('touch /ui-after && echo marked-after', /^marked-after$/);
  await page.locator('[data-testid="tab-snapshots"]').click();
  t = performance.now();
  await snapRow.locator('[data-testid="snapshot-restore"]').click();
  await page.locator('[data-testid="confirm-yes"]').click();
  await page.locator('[data-testid="confirm-dialog"]').waitFor({ state: 'detached', timeout: 30000 });
  const restoreMs = performance.now() - t;
  await page.locator('[data-testid="instance-status"]', { hasText: 'Running' }).waitFor({ timeout: 10000 });
  await openTerminal();
  const marks = await runInTerminal('echo marks-$(test -e /ui-before && echo B)$(test -e /ui-after && echo A)', /^marks-/);
  if (marks !== 'marks-B') throw new Error(`after the restore: ${marks} (want marks-B)`);
  report('snapshot', { restore_ms: Math.round(restoreMs), marks });

  // Launch c2 from the dialog, then delete it with confirmation.
  await page.locator('[data-testid="nav-instances"]').click();
  await page.locator('[data-testid="launch"]').click();
  await page.locator('[data-testid="launch-image"]').selectOption('alias:busybox');
  // The server's error text reaches the user.
  await page.locator('[data-testid="launch-name"]').fill('no_such name');
  await page.locator('[data-testid="launch-submit"]').click();
  const apiError = await page.locator('[data-testid="dialog-error"]').innerText({ timeout: 10000 });
  report('api_error', { text: apiError });
  await page.locator('[data-testid="launch-name"]').fill('c2');
  await page.locator('[data-testid="launch-cpu"]').fill('1');
  await page.locator('[data-testid="launch-memory"]').fill('128MiB');
  t = performance.now();
  await page.locator('[data-testid="launch-submit"]').click();
  await page.locator('[data-testid="launch-dialog"]').waitFor({ state: 'detached', timeout: 30000 });
  await status('c2').filter({ hasText: 'Running' }).waitFor({ timeout: 10000 });
  report('launch', { instance: 'c2', ms: Math.round(performance.now() - t) });
  // Rename (a stopped instance), then delete with confirmation.
  await row('c2').locator('[data-testid="action-force-stop"]').click();
  await status('c2').filter({ hasText: 'Stopped' }).waitFor({ timeout: 10000 });
  await row('c2').locator('[data-testid="action-rename"]').click();
  await page.locator('[data-testid="prompt-input"]').fill('c2-renamed');
  await page.locator('[data-testid="prompt-ok"]').click();
  await row('c2-renamed').waitFor({ timeout: 10000 });
  await row('c2').waitFor({ state: 'detached', timeout: 5000 });
  report('rename', { from: 'c2', to: 'c2-renamed' });
  await row('c2-renamed').locator('[data-testid="action-delete"]').click();
  await page.locator('[data-testid="confirm-yes"]').click();
  await row('c2-renamed').waitFor({ state: 'detached', timeout: 15000 });
  report('delete', { instance: 'c2-renamed' });

  // 200 instances (created, not started) render in under 1 s.
  if (opts.bulk > 0) {
    t = performance.now();
    const names = Array.from({ length: opts.bulk }, (_, i) => `bulk-${String(i).padStart(3, '0')}`);
    const jsonHeaders = { ...withCookie, Origin: origin, 'Content-Type': 'application/json' };
    for (let i = 0; i < names.length; i += 10) {
      await Promise.all(
        names.slice(i, i + 10).map(async (n) => {
          const r = await request('POST', '/1.0/instances', { headers: jsonHeaders, body: { name: n, source: { type: 'image', alias: 'busybox' } } });
          if (r.status !== 202) throw new Error(`create ${n}: ${r.status} ${r.body}`);
          const op = JSON.parse(r.body).operation;
          const w = await request('GET', `${op}/wait?timeout=60`, { headers: withCookie });
          if (JSON.parse(w.body).metadata?.status !== 'Success') throw new Error(`create ${n}: ${w.body}`);
        }),
      );
    }
    const createMs = performance.now() - t;
    const fresh = await context.newPage();
    fresh.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    t = performance.now();
    await fresh.goto(new URL('/ui/', origin).href);
    const list = fresh.locator('[data-testid="instance-list"][data-loaded="true"]');
    await list.waitFor({ timeout: 10000 });
    const rows = await fresh.locator('tr[data-testid="instance-row"]').count();
    const wallMs = performance.now() - t;
    const renderedMs = Number(await list.getAttribute('data-rendered-ms'));
    const renderedRows = Number(await list.getAttribute('data-rendered-rows'));
    const fetchMs = Number(await list.getAttribute('data-fetch-ms'));
    await fresh.locator('[data-testid="filter"]').fill('bulk-19');
    await waitFor('the filter', async () => (await fresh.locator('tr[data-testid="instance-row"]').count()) === 10, 5000);
    report('bulk', { instances: rows, rendered_rows: renderedRows, rendered_ms: renderedMs, fetch_ms: fetchMs, wall_ms: Math.round(wallMs), create_ms: Math.round(createMs) });
    if (renderedRows < opts.bulk) throw new Error(`first full render had ${renderedRows} rows`);
    if (!(renderedMs < 1000)) throw new Error(`${renderedRows} instances rendered in ${renderedMs} ms (limit 1000)`);
    await fresh.close();
  }

  // No CSP violation (nor any other console error) on the way.
  const csp = problems.filter((p) => /Content Security Policy/i.test(p));
  report('console', { problems: problems.length, csp: csp.length, first: problems.slice(0, 8) });
  if (csp.length) throw new Error(`CSP violations: ${csp.join('; ')}`);

  if (opts.dev) throw new Skip();

  // Refusals, outside the browser: a foreign Origin (with the session), no session.
  const ok = await request('GET', '/1.0/instances', { headers: withCookie });
  const sameOrigin = await request('POST', '/1.0/instances', {
    headers: { ...withCookie, Origin: origin, 'Content-Type': 'application/json' },
    body: '{"name": ""',
  });
  const foreign = await request('POST', '/1.0/instances', {
    headers: { ...withCookie, Origin: 'https://evil.example', 'Content-Type': 'application/json' },
    body: { name: 'evil', source: { type: 'image', alias: 'busybox' } },
  });
  const wsHeaders = { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' };
  const foreignWs = await request('GET', '/1.0/events', { headers: { ...withCookie, ...wsHeaders, Origin: 'https://evil.example' } });
  const noCookie = await request('GET', '/1.0/instances', { headers: { Origin: origin } });
  const noCookieWs = await request('GET', '/1.0/events', { headers: { ...wsHeaders, Origin: origin } });
  report('refusals', {
    with_session: ok.status,
    same_origin_bad_body: sameOrigin.status,
    foreign_origin: foreign.status,
    foreign_origin_ws: foreignWs.status,
    no_session: noCookie.status,
    no_session_ws: noCookieWs.status,
    no_session_error: noCookie.body.slice(0, 200),
  });
  if (ok.status !== 200) throw new Error(`GET /1.0/instances with the session: ${ok.status}`);
  if (sameOrigin.status !== 400) throw new Error(`same-origin POST with a bad body: ${sameOrigin.status} (want 400)`);
  for (const [what, r] of [
    ['foreign Origin POST', foreign],
    ['foreign Origin websocket', foreignWs],
    ['request without the session', noCookie],
    ['websocket without the session', noCookieWs],
  ]) {
    if (r.status !== 403) throw new Error(`${what}: ${r.status} (want 403) ${r.body.slice(0, 200)}`);
  }

  // Log out: the session is gone.
  await page.locator('[data-testid="logout"]').click();
  await page.locator('[data-testid="logged-out"]').waitFor({ timeout: 5000 });
  const after = await request('GET', '/1.0/instances', { headers: withCookie });
  report('logout', { old_session: after.status });
  if (after.status !== 403) throw new Error(`the session still works after logout: ${after.status}`);
} catch (e) {
  if (e instanceof Skip) {
    report('skipped', { why: '--dev: no session checks' });
  } else {
    failed = true;
    console.error(`FAILED: ${e.stack || e}`);
    for (const p of problems) console.error(p);
    const shots = await screenshots();
    report('failure', { error: String(e.message || e), screenshots: shots });
  }
} finally {
  await browser.close();
  report('done', { ok: !failed, ms: Date.now() - started });
}
process.exit(failed ? 1 : 0);
