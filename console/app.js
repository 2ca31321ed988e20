// ringmq web console: one hand-written ES module, served by the broker from /console/app.js.
//
// Why no framework: the console is compiled into the broker's binary and must run under a strict
// Content-Security-Policy (script-src 'self', style-src 'self', nothing off the broker's host), so
// it cannot pull anything from a CDN, and a build step would add a toolchain to a Rust project for
// a few pages of forms and tables. The DOM API is enough: every element is made with
// createElement and every value goes in through textContent (client ids, topics, payloads and
// usernames are hostile input; nothing here ever assigns innerHTML), and no inline style or
// script is used, so the policy needs no exception. Small, auditable, and nothing to update.
//
// Layout of this file: DOM helpers; the API client (Bearer key, 401 → login); the alert region
// and dialogs; login and routing; the stats feed (fetch + a hand-made SSE parser) and the
// overview's SVG charts; then one view per section (sessions, users, ACL, keys, org, orgs,
// topics).

'use strict';

const KEY_STORAGE = 'ringmq.console.key';
const FEED_POINTS = 300; // five minutes at one frame a second
const FEED_RETRY_MS = 2000;
const FEED_STALL_MS = 10_000; // no frame for this long: reconnect
const WATCH_MAX = 200; // messages kept in the Topics list
const PAYLOAD_SHOWN_MAX = 64 * 1024;
const PAGE_SIZE = 50;

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** h('button', {class: 'x', testid: 'y', onclick: f}, 'text', child…): an element. Strings become
 *  text nodes; null/false children are skipped. Never takes HTML. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  appendAll(el, children);
  return el;
}

function setProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'text') el.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = String(v);
    else if (k === 'checked' || k === 'selected') el[k] = Boolean(v);
    else if (k === 'style') throw new Error('no inline styles (CSP)');
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function appendAll(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, String(v));
  }
  appendAll(el, children);
  return el;
}

let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

/** A labelled form field: returns {wrap, input}. `input` is an element made by the caller or the
 *  props of an <input>. */
function field(label, input, hint) {
  const control = input instanceof Node ? input : h('input', input);
  if (!control.id) control.id = nextId('f');
  const hintEl = hint ? h('span', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  const wrap = h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
  return { wrap, input: control };
}

function checkbox(label, props) {
  const input = h('input', { type: 'checkbox', ...props });
  input.id = input.id || nextId('c');
  const wrap = h('div', { class: 'field field-check' }, input, h('label', { for: input.id }, label));
  return { wrap, input };
}

function select(props, options) {
  const el = h('select', props);
  for (const o of options) {
    const [value, label] = Array.isArray(o) ? o : [o, o];
    el.append(h('option', { value }, label));
  }
  return el;
}

function button(label, props = {}) {
  return h('button', { type: 'button', ...props }, label);
}

/** A table in a horizontally scrolling wrapper. `columns`: header labels. Returns {wrap, table, tbody}. */
function table(caption, columns, testid) {
  const tbody = h('tbody');
  const tbl = h('table', { class: 'table', testid },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  const wrap = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption }, tbl);
  return { wrap, table: tbl, tbody };
}

function emptyRow(tbody, columns, text) {
  tbody.replaceChildren(h('tr', null, h('td', { colspan: String(columns), class: 'empty' }, text)));
}

function pad(n, w = 2) { return String(n).padStart(w, '0'); }

/** Unix seconds (or ms with `ms`) → "2026-12-07 12:34:56" in local time. */
function fmtTime(t, ms = false) {
  if (t === null || t === undefined || !Number.isFinite(Number(t))) return '—';
  const d = new Date(ms ? Number(t) : Number(t) * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtClock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

function fmtRate(v) {
  if (v === null || v === undefined) return '—';
  if (v === 0) return '0';
  return v >= 100 ? String(Math.round(v)) : v.toFixed(1);
}

function fmtCount(v) {
  if (v === null || v === undefined) return '—';
  return String(v);
}

function fmtGrouped(v) {
  if (v === null || v === undefined) return '—';
  return Number(v).toLocaleString('en-US');
}

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const enc = (s) => encodeURIComponent(s);

// ---------------------------------------------------------------------------------------------
// State, API client

const state = {
  key: null,
  kind: null, // 'secret' | 'public' | 'restricted'
  root: false,
  org: null, // GET /v1/org, for secret keys
  route: null,
  cleanup: null,
};

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** One management call. Throws ApiError (with the server's `detail`); a 401 logs out first. */
async function api(method, path, body) {
  const key = state.key;
  if (!key) throw new ApiError(401, 'unauthorized', 'Not logged in.');
  const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `The broker did not answer ${method} ${path.split('?')[0]} (${e.message}).`);
  }
  const text = res.status === 204 ? '' : await res.text().catch(() => '');
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (res.status === 401) {
    if (state.key === key) {
      loggedOut(`The broker refused the key (401${data && data.detail ? `: ${data.detail}` : ''}). Log in again.`);
    }
    throw new ApiError(401, 'unauthorized', (data && data.detail) || 'unauthorized');
  }
  if (!res.ok) {
    let detail = (data && typeof data.detail === 'string' && data.detail) || `${res.status} ${res.statusText}`;
    const retry = res.headers.get('Retry-After');
    if (res.status === 429 && retry) detail += ` (retry in ${retry} s)`;
    throw new ApiError(res.status, (data && data.error) || 'error', detail);
  }
  return data;
}

/** Every item of a list, following next_cursor (bounded: at most `max` items). */
async function listAll(path, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', `${path}${sep}limit=${Math.min(1000, max)}${cursor ? `&cursor=${enc(cursor)}` : ''}`);
    items.push(...(page.items || []));
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

// ---------------------------------------------------------------------------------------------
// Alert region, status lines, dialogs

const $ = (id) => document.getElementById(id);

function showError(err) {
  if (err instanceof ApiError && err.status === 401) return; // the login says it
  const text = err instanceof ApiError ? err.detail : (err && err.message) || String(err);
  $('alert-text').textContent = text;
  $('alert').hidden = false;
}

function clearError() {
  $('alert').hidden = true;
  $('alert-text').textContent = '';
}

/** Runs `f`, showing its failure in the alert region; returns its result or undefined. */
async function attempt(f) {
  try {
    clearError();
    return await f();
  } catch (e) {
    showError(e);
    return undefined;
  }
}

function statusLine(testid) {
  return h('p', { class: 'status', role: 'status', testid });
}

/** A modal <dialog>. `body`: nodes; `onConfirm(form)` may throw (the error is shown in the dialog
 *  and it stays open) or return false to stay open. Resolves true when confirmed. */
function openDialog({ title, body = [], confirmLabel = 'Confirm', danger = false, onConfirm }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const titleId = nextId('dlg');
    const error = h('p', { class: 'form-error', role: 'alert' });
    const confirm = h('button', { type: 'submit', class: danger ? 'btn-danger' : 'btn-primary', testid: 'confirm' }, confirmLabel);
    const cancel = button('Cancel', { testid: 'cancel' });
    const form = h('form', { class: 'stack', novalidate: true },
      h('h2', { id: titleId }, title), body, error, h('div', { class: 'actions' }, cancel, confirm));
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': titleId }, form);
    let confirmed = false;
    cancel.addEventListener('click', () => dlg.close());
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!form.checkValidity()) { form.reportValidity(); return; }
      confirm.disabled = true;
      error.textContent = '';
      try {
        const ok = onConfirm ? await onConfirm(form) : true;
        if (ok === false) return;
        confirmed = true;
        dlg.close();
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) { dlg.close(); return; }
        error.textContent = err instanceof ApiError ? err.detail : err.message;
      } finally {
        confirm.disabled = false;
      }
    });
    dlg.addEventListener('close', () => {
      dlg.remove();
      if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
      resolve(confirmed);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

function confirmDialog(title, message, confirmLabel, onConfirm) {
  return openDialog({ title, body: [h('p', null, message)], confirmLabel, danger: true, onConfirm });
}

/** A secret shown once: warning, read-only field, copy button. */
function secretPanel(title, secret, extra = [], testid = 'new-key') {
  const input = h('input', { type: 'text', readonly: true, value: secret, class: 'mono', testid: `${testid}-secret`, spellcheck: 'false' });
  input.id = nextId('secret');
  const copied = h('span', { class: 'status', role: 'status' });
  const copy = button('Copy', {
    testid: `${testid}-copy`,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(secret);
        copied.textContent = 'Copied.';
      } catch {
        input.select();
        copied.textContent = 'Select the text and copy it (Ctrl+C).';
      }
    },
  });
  const panel = h('section', { class: 'panel panel-warn', testid, 'aria-labelledby': `${input.id}-t`, tabindex: '-1' },
    h('h3', { id: `${input.id}-t` }, title),
    h('p', { class: 'warn' }, 'This is the only time the secret is shown: copy it now and keep it somewhere safe. The broker keeps only a hash of it.'),
    extra,
    h('div', { class: 'field' }, h('label', { for: input.id }, 'Secret'), h('div', { class: 'inline' }, input, copy)),
    copied,
    h('div', null, button('I have copied it', { onclick: () => panel.remove() })));
  return panel;
}

// ---------------------------------------------------------------------------------------------
// Login, logout, routing

function keyKind(key) {
  if (key.startsWith('sk_')) return 'secret';
  if (key.startsWith('pk_')) return 'public';
  if (key.startsWith('rk_')) return 'restricted';
  return 'unknown';
}

async function login(key, { quiet = false } = {}) {
  state.key = key;
  state.kind = keyKind(key);
  state.root = false;
  state.org = null;
  if (state.kind === 'secret' || state.kind === 'unknown') {
    try {
      state.org = await api('GET', '/v1/org');
    } catch (e) {
      if (e.status === 401) return false; // loggedOut() already showed the login
      if (e.status !== 403) {
        state.key = null;
        showLogin(`Could not log in: ${e.detail}`);
        return false;
      }
      state.kind = 'limited';
    }
    if (state.org) {
      state.kind = 'secret';
      try {
        await api('GET', '/v1/orgs?limit=1');
        state.root = true;
      } catch (e) {
        if (e.status === 401) return false;
        state.root = false; // 403: not the root key
      }
    }
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  enterConsole(quiet);
  return true;
}

/** Drops the key and shows the login with `message`. */
function loggedOut(message) {
  state.key = null;
  state.org = null;
  state.root = false;
  sessionStorage.removeItem(KEY_STORAGE);
  stopFeed();
  resetFeed();
  showLogin(message);
}

function showLogin(message = '') {
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  state.route = null;
  $('view').replaceChildren();
  $('nav').hidden = true;
  $('who').hidden = true;
  clearError();
  $('login').hidden = false;
  $('login-error').textContent = message;
  const input = $('login-key');
  input.value = '';
  input.focus();
}

function allowedRoutes() {
  if (state.kind === 'secret') {
    const r = ['overview', 'sessions', 'users', 'acl', 'keys', 'org', 'topics'];
    if (state.root) r.splice(6, 0, 'orgs');
    return r;
  }
  // Public keys may read streams, restricted keys publish/subscribe their topics: no management.
  return ['topics'];
}

function enterConsole(quiet) {
  $('login').hidden = true;
  $('login-error').textContent = '';
  const allowed = allowedRoutes();
  for (const a of document.querySelectorAll('#nav a[data-route]')) {
    a.parentElement.hidden = !allowed.includes(a.dataset.route);
    a.hidden = !allowed.includes(a.dataset.route);
  }
  $('nav').hidden = false;
  const who = state.org
    ? `${state.org.name || state.org.id} (${state.org.id})${state.root ? ' · root key' : ''} · ${state.key.slice(0, 10)}…`
    : `${state.kind} key ${state.key.slice(0, 10)}…`;
  $('who-label').textContent = who;
  $('who').hidden = false;
  if (state.kind === 'secret') startFeed();
  route(!quiet);
}

function currentRouteName() {
  if (!location.hash.startsWith('#/')) return state.route || 'overview';
  return location.hash.slice(2).split('?')[0] || 'overview';
}

const VIEWS = {};

function route(focus = true) {
  if (!state.key) return;
  const allowed = allowedRoutes();
  let name = currentRouteName();
  if (!allowed.includes(name)) {
    name = allowed[0];
    history.replaceState(null, '', `#/${name}`);
  }
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  clearError();
  state.route = name;
  for (const a of document.querySelectorAll('#nav a[data-route]')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const root = h('div', { class: `page page-${name}` });
  $('view').replaceChildren(root);
  const cleanup = VIEWS[name](root);
  state.cleanup = typeof cleanup === 'function' ? cleanup : null;
  const heading = root.querySelector('h1');
  if (heading) {
    document.title = `${heading.textContent} · ringmq console`;
    if (focus) { heading.tabIndex = -1; heading.focus({ preventScroll: false }); }
  }
}

// ---------------------------------------------------------------------------------------------
// The stats feed: GET /v1/console/feed as text/event-stream, read with fetch (an EventSource
// cannot send the Authorization header).

const feed = {
  gen: 0,
  abort: null,
  timer: null,
  points: [], // {t, scope, values: {metric: {total, shards: [..]}}, raw}
  prev: null,
  status: 'idle',
  listeners: new Set(),
};

/** An SSE parser: push(text chunk) calls onEvent(type, data) per complete event. */
function sseParser(onEvent) {
  let buf = '';
  let type = '';
  let data = [];
  return (chunk) => {
    buf += chunk;
    for (;;) {
      const i = buf.search(/[\r\n]/);
      if (i < 0) break;
      if (buf[i] === '\r' && i === buf.length - 1) break; // maybe the \r of a \r\n split in two
      const line = buf.slice(0, i);
      buf = buf.slice(i + (buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1));
      if (line === '') {
        if (data.length) onEvent(type || 'message', data.join('\n'));
        type = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue; // comment (heartbeat)
      const c = line.indexOf(':');
      const name = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (name === 'event') type = value;
      else if (name === 'data') data.push(value);
    }
    if (buf.length > 1 << 20) { buf = ''; type = ''; data = []; } // a line over 1 MiB: not ours
  };
}

function setFeedStatus(s) {
  feed.status = s;
  for (const f of feed.listeners) f();
}

function startFeed() {
  stopFeed();
  connectFeed(++feed.gen, state.key);
}

function stopFeed() {
  feed.gen += 1;
  if (feed.abort) feed.abort.abort();
  feed.abort = null;
  clearTimeout(feed.timer);
  feed.timer = null;
}

function resetFeed() {
  feed.points = [];
  feed.prev = null;
  feed.status = 'idle';
}

async function connectFeed(gen, key) {
  const live = () => gen === feed.gen && state.key === key;
  const retry = await readFeed(key, live);
  if (retry !== null && live()) feed.timer = setTimeout(() => { if (live()) connectFeed(gen, key); }, retry);
}

/** One connection of the feed, until it ends; returns the ms to wait before the next one, or
 *  null for none (logged out, or another connection took over). */
async function readFeed(key, live) {
  const ctrl = new AbortController();
  feed.abort = ctrl;
  let stall = null;
  const kick = () => {
    clearTimeout(stall);
    stall = setTimeout(() => ctrl.abort(), FEED_STALL_MS);
  };
  try {
    kick();
    const res = await fetch('/v1/console/feed', {
      headers: { Authorization: `Bearer ${key}`, Accept: 'text/event-stream' },
      cache: 'no-store',
      credentials: 'omit',
      signal: ctrl.signal,
    });
    if (!live()) { ctrl.abort(); return null; }
    if (res.status === 401) {
      ctrl.abort();
      loggedOut('The broker refused the key (401). Log in again.');
      return null;
    }
    if (!res.ok) {
      let detail = `${res.status}`;
      try { detail = (await res.json()).detail || detail; } catch { /* not JSON */ }
      const after = Number(res.headers.get('Retry-After'));
      const wait = Number.isFinite(after) && after > 0 ? after * 1000
        : (res.status === 404 || res.status === 403 ? 10_000 : FEED_RETRY_MS);
      setFeedStatus(`The live figures are not available: ${detail}. Trying again in ${Math.round(wait / 1000)} s.`);
      return wait;
    }
    setFeedStatus('live');
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let ended = null;
    const push = sseParser((type, data) => {
      if (type === 'stats') {
        let frame;
        try { frame = JSON.parse(data); } catch { return; }
        addFrame(frame);
      } else if (type === 'end') {
        try { ended = JSON.parse(data) || {}; } catch { ended = { error: 'end' }; }
      }
    });
    for (;;) {
      const { value, done } = await reader.read();
      if (done || !live()) break;
      kick();
      push(decoder.decode(value, { stream: true }));
      if (ended) break;
    }
    ctrl.abort();
    if (!live()) return null;
    if (ended && ended.error === 'unauthorized') {
      // The key was revoked: a management call now answers 401, which brings the login back.
      await api('GET', '/v1/org').catch(() => {});
      if (!live()) return null;
    }
    setFeedStatus('The live feed ended; reconnecting…');
    return FEED_RETRY_MS;
  } catch (e) {
    if (!live()) return null;
    setFeedStatus(`The live feed was interrupted (${e.name === 'AbortError' ? 'no data for 10 s' : e.message}); reconnecting…`);
    return FEED_RETRY_MS;
  } finally {
    clearTimeout(stall);
  }
}

// The overview's metrics. `rate`: per second from a cumulative counter; `frame`: a broker-wide
// figure of the frame itself (no per-shard values).
const METRICS = [
  { id: 'connections', label: 'Connections', key: 'connections' },
  { id: 'messages-in', label: 'Messages in /s', key: 'messages_in', rate: true },
  { id: 'messages-out', label: 'Messages out /s', key: 'messages_out', rate: true },
  { id: 'dropped', label: 'Drops /s', key: 'dropped', rate: true },
  { id: 'inflight', label: 'In flight (QoS 1/2)', key: 'inflight' },
  { id: 'streams', label: 'Streams', key: 'streams' },
  { id: 'asleep', label: 'Sockets asleep', frame: 'asleep' },
  { id: 'memory', label: 'Memory', frame: 'memory_bytes', bytes: true },
];

function addFrame(frame) {
  if (!frame || typeof frame !== 'object') return;
  const t = num(frame.t) ?? Date.now();
  const totals = frame.totals && typeof frame.totals === 'object' ? frame.totals : {};
  const shards = Array.isArray(frame.shards) ? frame.shards.filter((s) => s && typeof s === 'object').slice(0, 256) : [];
  const prev = feed.prev;
  const dt = prev ? (t - prev.t) / 1000 : 0;
  const rate = (now, before) => {
    if (!prev || !(dt > 0) || dt > 60 || num(now) === null || num(before) === null) return null;
    const d = now - before;
    return d < 0 ? null : d / dt; // a counter that went back: the broker restarted
  };
  const values = {};
  for (const m of METRICS) {
    if (m.frame) {
      values[m.id] = { total: num(frame[m.frame]), shards: [] };
      continue;
    }
    const total = m.rate ? rate(num(totals[m.key]), prev && prev.totals[m.key]) : num(totals[m.key]);
    const perShard = shards.map((s, i) => {
      if (!m.rate) return num(s[m.key]);
      const before = prev && prev.shards[i] ? prev.shards[i][m.key] : null;
      return rate(num(s[m.key]), num(before));
    });
    // A counter missing from the frame (an org key's feed) is not shown at all.
    values[m.id] = { total, shards: perShard, absent: !(m.key in totals) };
  }
  feed.prev = { t, totals, shards };
  feed.points.push({ t, scope: frame.scope, values, shards, totals });
  if (feed.points.length > FEED_POINTS) feed.points.splice(0, feed.points.length - FEED_POINTS);
  for (const f of feed.listeners) f();
}

function fmtMetric(m, v) {
  if (v === null || v === undefined) return '—';
  if (m.bytes) return fmtBytes(v);
  if (m.rate) return fmtRate(v);
  return fmtCount(v);
}

/** One chart: total (thick) and each shard, the last 5 minutes, as SVG paths. */
function makeChart(m) {
  const W = 600;
  const H = 150;
  const pathsG = svg('g');
  const grid = svg('g', { class: 'chart-grid' },
    [0.25, 0.5, 0.75].map((f) => svg('line', { x1: 0, x2: W, y1: H * f, y2: H * f, 'vector-effect': 'non-scaling-stroke' })));
  const chartSvg = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart-svg', role: 'img', 'aria-label': m.label }, grid, pathsG);
  const current = h('span', { class: 'chart-now' });
  const top = h('span', { class: 'chart-max' });
  const legend = h('ul', { class: 'legend' });
  const fig = h('figure', { class: 'chart', testid: `chart-${m.id}` },
    h('figcaption', null, h('span', { class: 'chart-title' }, m.label), current),
    h('div', { class: 'chart-body' }, top, chartSvg),
    h('div', { class: 'chart-axis' }, h('span', null, '−5 min'), h('span', null, 'now')),
    legend);
  let legendKey = '';
  function update(points) {
    const last = points[points.length - 1];
    const v = last ? last.values[m.id] : null;
    current.textContent = v ? fmtMetric(m, v.total) : '—';
    const nShards = v ? v.shards.length : 0;
    let max = 0;
    for (const p of points) {
      const pv = p.values[m.id];
      if (!pv) continue;
      if (pv.total !== null) max = Math.max(max, pv.total);
      for (const s of pv.shards) if (s !== null) max = Math.max(max, s);
    }
    const scale = niceMax(max, m.bytes);
    top.textContent = fmtMetric(m, scale);
    const end = last ? last.t : Date.now();
    const start = end - FEED_POINTS * 1000;
    const x = (t) => ((t - start) / (end - start)) * W;
    const y = (val) => H - (val / scale) * (H - 4) - 2;
    const series = [{ cls: nShards > 1 ? 'series-total' : 'series-total series-solo', get: (pv) => pv.total, name: 'total' }];
    if (nShards > 1) {
      for (let i = 0; i < nShards; i += 1) series.push({ cls: `series-s${i % 8}`, get: (pv) => pv.shards[i] ?? null, name: `shard ${i}` });
    }
    const paths = series.map((s) => {
      let d = '';
      let pen = false;
      let lastT = null;
      for (const p of points) {
        const pv = p.values[m.id];
        const val = pv ? s.get(pv) : null;
        if (val === null || p.t < start || (lastT !== null && p.t - lastT > 5000)) pen = false;
        lastT = p.t;
        if (val === null || p.t < start) continue;
        d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)} ${y(val).toFixed(1)}`;
        pen = true;
      }
      return svg('path', { d: d || 'M0 0', class: `series ${s.cls}${d ? '' : ' series-empty'}`, 'vector-effect': 'non-scaling-stroke', fill: 'none' });
    });
    pathsG.replaceChildren(...paths);
    const key = series.map((s) => s.name).join(',');
    if (key !== legendKey) {
      legendKey = key;
      legend.replaceChildren(...series.map((s) => h('li', null, h('span', { class: `swatch ${s.cls}`, 'aria-hidden': 'true' }), s.name)));
      legend.hidden = series.length < 2;
    }
    chartSvg.setAttribute('aria-label', `${m.label} over the last 5 minutes; now ${current.textContent}`);
  }
  return { el: fig, update };
}

function niceMax(max, bytes) {
  if (!(max > 0)) return 1;
  if (bytes) {
    let unit = 1;
    while (max / unit >= 1024) unit *= 1024;
    const steps = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
    return unit * steps.find((s) => s * unit >= max);
  }
  const p = 10 ** Math.floor(Math.log10(max));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= max) return f * p;
  return 10 * p;
}

VIEWS.overview = (root) => {
  const status = h('p', { class: 'status', role: 'status', testid: 'feed-status' });
  const cards = h('div', { class: 'cards' });
  const cardEls = {};
  for (const m of METRICS) {
    const value = h('span', { class: 'card-value', testid: `metric-${m.id}` }, '—');
    const card = h('div', { class: 'card' }, h('span', { class: 'card-label' }, m.label), value);
    cardEls[m.id] = { card, value };
    cards.append(card);
  }
  const charts = METRICS.map(makeChart);
  const chartGrid = h('div', { class: 'charts' }, charts.map((c) => c.el));
  const shardCols = ['Shard', 'Connections', 'Sockets', 'Sessions', 'Subscriptions', 'Retained', 'In /s', 'Out /s', 'Drops /s', 'In flight', 'Streams'];
  const shardTable = table('Per shard, now', shardCols, 'shards-table');
  const shardSection = h('section', { 'aria-labelledby': 'shards-h' }, h('h2', { id: 'shards-h' }, 'Per shard'), shardTable.wrap);
  const scopeNote = h('p', { class: 'muted' });
  root.append(
    h('h1', null, 'Overview'),
    scopeNote,
    status,
    h('section', { 'aria-label': 'Now' }, cards),
    h('section', { 'aria-labelledby': 'charts-h' }, h('h2', { id: 'charts-h' }, 'Last 5 minutes'), chartGrid),
    shardSection);

  let pending = false;
  function update() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  }
  function draw() {
    const points = feed.points;
    const last = points[points.length - 1];
    status.textContent = feed.status === 'live' ? (last ? `Live · updated ${fmtClock(last.t)}` : 'Live · waiting for the first figures…')
      : feed.status === 'idle' ? 'Connecting to the live feed…' : feed.status;
    status.classList.toggle('status-warn', feed.status !== 'live' && feed.status !== 'idle');
    if (!last) return;
    scopeNote.textContent = last.scope === 'org'
      ? `Figures of org ${state.org ? state.org.id : ''} only: its connections and its messages in and out.`
      : 'Figures of the whole broker, per shard and in total.';
    METRICS.forEach((m, i) => {
      const v = last.values[m.id];
      const shown = v && !v.absent && !(m.frame && v.total === null);
      cardEls[m.id].card.hidden = !shown;
      charts[i].el.hidden = !shown;
      cardEls[m.id].value.textContent = v ? fmtMetric(m, v.total) : '—';
      if (shown) charts[i].update(points);
    });
    shardSection.hidden = last.shards.length === 0;
    if (last.shards.length) {
      const rows = last.shards.map((s, i) => {
        const rateOf = (id) => fmtRate(last.values[id].shards[i]);
        return h('tr', null,
          h('th', { scope: 'row' }, fmtCount(num(s.shard) ?? i)),
          ['connections', 'sockets', 'sessions', 'subscriptions', 'retained'].map((k) => h('td', { class: 'num' }, fmtCount(num(s[k])))),
          h('td', { class: 'num' }, rateOf('messages-in')),
          h('td', { class: 'num' }, rateOf('messages-out')),
          h('td', { class: 'num' }, rateOf('dropped')),
          h('td', { class: 'num' }, fmtCount(num(s.inflight))),
          h('td', { class: 'num' }, fmtCount(num(s.streams))));
      });
      const t = last.totals;
      rows.push(h('tr', { class: 'row-total' },
        h('th', { scope: 'row' }, 'Total'),
        ['connections', 'sockets', 'sessions', 'subscriptions', 'retained'].map((k) => h('td', { class: 'num' }, fmtCount(num(t[k])))),
        h('td', { class: 'num' }, fmtRate(last.values['messages-in'].total)),
        h('td', { class: 'num' }, fmtRate(last.values['messages-out'].total)),
        h('td', { class: 'num' }, fmtRate(last.values.dropped.total)),
        h('td', { class: 'num' }, fmtCount(num(t.inflight))),
        h('td', { class: 'num' }, fmtCount(num(t.streams)))));
      shardTable.tbody.replaceChildren(...rows);
    }
  }
  feed.listeners.add(update);
  draw();
  return () => feed.listeners.delete(update);
};

// ---------------------------------------------------------------------------------------------
// Sessions

VIEWS.sessions = (root) => {
  const search = h('input', { type: 'search', testid: 'sessions-search', autocomplete: 'off', spellcheck: 'false', maxlength: '256' });
  const stateSel = select({ testid: 'sessions-state' }, [['active', 'Connected'], ['disconnected', 'Disconnected'], ['all', 'All']]);
  const form = h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Sessions' },
    field('Client id or username contains', search).wrap,
    field('State', stateSel).wrap,
    h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'sessions-go' }, 'Search')),
    h('div', { class: 'field field-button' }, button('Refresh', { testid: 'sessions-refresh', onclick: () => load() })));
  const cols = ['Client id', 'Username', 'State', 'Shard', 'Address', 'Connected at', 'Subscriptions', 'Queued', 'Actions'];
  const tbl = table('Sessions', cols, 'sessions-table');
  const prev = button('Previous page', { testid: 'sessions-prev' });
  const next = button('Next page', { testid: 'sessions-next' });
  const pageInfo = h('span', { class: 'muted', role: 'status' });
  const details = h('section', { class: 'panel', testid: 'session-details', 'aria-labelledby': 'sd-h', tabindex: '-1', hidden: true });
  root.append(h('h1', null, 'Sessions'), form, tbl.wrap, h('div', { class: 'pager' }, prev, pageInfo, next), details);

  let cursors = [null]; // cursor of each page seen; the last is the current page's
  let nextCursor = null;
  let gen = 0;
  let debounce = null;
  let later = null;

  async function load() {
    const my = ++gen;
    const cursor = cursors[cursors.length - 1];
    const q = new URLSearchParams({ state: stateSel.value, limit: String(PAGE_SIZE) });
    if (cursor) q.set('cursor', cursor);
    const text = search.value.trim();
    if (text) q.set('search', text);
    const page = await attempt(() => api('GET', `/v1/sessions?${q.toString().replace(/\+/g, '%20')}`));
    if (my !== gen || !page) return;
    nextCursor = page.next_cursor || null;
    render(page.items || []);
  }

  function render(items) {
    prev.disabled = cursors.length <= 1;
    next.disabled = !nextCursor;
    pageInfo.textContent = `Page ${cursors.length} · ${items.length} session${items.length === 1 ? '' : 's'}`;
    if (!items.length) { emptyRow(tbl.tbody, cols.length, 'No sessions.'); return; }
    tbl.tbody.replaceChildren(...items.map((s) => {
      const id = String(s.client_id);
      const actions = h('div', { class: 'row-actions' },
        button('Details', { testid: `details-${id}`, 'aria-label': `Details of ${id}`, onclick: () => showDetails(id) }),
        s.connected ? button('Disconnect', { testid: `disconnect-${id}`, 'aria-label': `Disconnect ${id}`, onclick: () => disconnect(id) }) : null,
        button('Delete', { class: 'btn-danger-quiet', testid: `delete-${id}`, 'aria-label': `Delete the session of ${id}`, onclick: () => remove(id) }));
      return h('tr', { 'data-client-id': id },
        h('th', { scope: 'row', class: 'mono wrap' }, id),
        h('td', null, s.username ?? '—'),
        h('td', null, h('span', { class: s.connected ? 'badge badge-ok' : 'badge' }, s.connected ? 'connected' : 'disconnected')),
        h('td', { class: 'num' }, fmtCount(s.shard)),
        h('td', { class: 'mono' }, s.address ?? '—'),
        h('td', null, fmtTime(s.connected_at)),
        h('td', { class: 'num' }, Array.isArray(s.subscriptions) ? String(s.subscriptions.length) : '—'),
        h('td', { class: 'num' }, fmtCount(s.queued)),
        h('td', null, actions));
    }));
  }

  async function showDetails(id) {
    const s = await attempt(() => api('GET', `/v1/sessions/${enc(id)}`));
    if (!s) return;
    const subs = table(`Subscriptions of ${id}`, ['Filter', 'QoS'], 'session-subscriptions');
    const list = Array.isArray(s.subscriptions) ? s.subscriptions : [];
    if (list.length) subs.tbody.replaceChildren(...list.map((x) => h('tr', null, h('td', { class: 'mono wrap' }, x.filter), h('td', { class: 'num' }, fmtCount(x.qos)))));
    else emptyRow(subs.tbody, 2, 'No subscriptions.');
    details.replaceChildren(
      h('h2', { id: 'sd-h' }, 'Session ', h('span', { class: 'mono' }, id)),
      dl([
        ['Client id', id], ['Username', s.username ?? '—'], ['State', s.connected ? 'connected' : 'disconnected'],
        ['Shard', fmtCount(s.shard)], ['Address', s.address ?? '—'], ['Connected at', fmtTime(s.connected_at)],
        ['Queued messages', fmtCount(s.queued)],
      ]),
      h('h3', null, 'Subscriptions'), subs.wrap,
      h('div', { class: 'actions' }, button('Close', { onclick: () => { details.hidden = true; } })));
    details.hidden = false;
    details.focus();
  }

  // The shards close a connection a moment after the API's answer: look again a second later.
  function reloadSoon() {
    load();
    clearTimeout(later);
    later = setTimeout(load, 1000);
  }

  async function disconnect(id) {
    const ok = await confirmDialog('Disconnect this client?', `Client ${id} will be disconnected now. It may reconnect; a persistent session is kept.`, 'Disconnect',
      () => api('POST', `/v1/sessions/${enc(id)}/disconnect`));
    if (ok) reloadSoon();
  }

  async function remove(id) {
    const ok = await confirmDialog('Delete this session?', `The session of ${id} is discarded (disconnected if connected), with its subscriptions and queued messages.`, 'Delete session',
      () => api('DELETE', `/v1/sessions/${enc(id)}`));
    if (ok) { details.hidden = true; reloadSoon(); }
  }

  form.addEventListener('submit', (e) => { e.preventDefault(); cursors = [null]; load(); });
  search.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { cursors = [null]; load(); }, 300);
  });
  stateSel.addEventListener('change', () => { cursors = [null]; load(); });
  next.addEventListener('click', () => { if (nextCursor) { cursors.push(nextCursor); load(); } });
  prev.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  emptyRow(tbl.tbody, cols.length, 'Loading…');
  load();
  return () => { gen += 1; clearTimeout(debounce); clearTimeout(later); };
};

function dl(pairs) {
  return h('dl', { class: 'props' }, pairs.map(([k, v]) => [h('dt', null, k), h('dd', null, v instanceof Node ? v : String(v))]));
}

// ---------------------------------------------------------------------------------------------
// Users

const NAME_PATTERN = '[A-Za-z0-9._\\-]{1,64}';
const splitList = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);

VIEWS.users = (root) => {
  const username = field('Username', { type: 'text', testid: 'user-username', required: true, pattern: NAME_PATTERN, autocomplete: 'off', spellcheck: 'false' },
    'Letters, digits, . _ -. MQTT clients log in as this name (other orgs: name@org_id).');
  const password = field('Password', { type: 'password', testid: 'user-password', required: true, minlength: '8', maxlength: '256', autocomplete: 'new-password' }, 'At least 8 characters.');
  const sets = field('ACL sets', { type: 'text', testid: 'user-sets', autocomplete: 'off', spellcheck: 'false' }, 'Optional, comma-separated. The set "default" applies to every user anyway.');
  const created = statusLine('user-status');
  const form = h('form', { class: 'form-grid', 'aria-labelledby': 'uc-h', novalidate: true },
    username.wrap, password.wrap, sets.wrap,
    h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'user-create' }, 'Create user')));
  const cols = ['Username', 'State', 'ACL sets', 'Namespace', 'Created', 'Expires', 'Actions'];
  const tbl = table('Users', cols, 'users-table');
  const more = button('Load more', { testid: 'users-more', hidden: true });
  root.append(h('h1', null, 'Users'),
    h('p', { class: 'muted' }, 'MQTT users of this org. A user may publish and subscribe only where an ACL allow rule says so (see ACL).'),
    h('section', { class: 'panel' }, h('h2', { id: 'uc-h' }, 'Create a user'), form, created),
    h('section', { 'aria-label': 'Users' }, tbl.wrap, more));

  let items = [];
  let cursor = null;

  async function load(append = false) {
    const page = await attempt(() => api('GET', `/v1/users?limit=${PAGE_SIZE}${append && cursor ? `&cursor=${enc(cursor)}` : ''}`));
    if (!page) return;
    items = append ? items.concat(page.items || []) : (page.items || []);
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
    render();
  }

  function render() {
    if (!items.length) { emptyRow(tbl.tbody, cols.length, 'No users yet.'); return; }
    tbl.tbody.replaceChildren(...items.map((u) => {
      const name = String(u.username);
      return h('tr', null,
        h('th', { scope: 'row', class: 'mono' }, name),
        h('td', null, h('span', { class: u.enabled ? 'badge badge-ok' : 'badge badge-off' }, u.enabled ? 'enabled' : 'disabled')),
        h('td', null, (u.acl_sets || []).join(', ') || '—'),
        h('td', null, u.namespace ?? '—'),
        h('td', null, fmtTime(u.created_at)),
        h('td', null, u.expires_at ? fmtTime(u.expires_at) : 'never'),
        h('td', null, h('div', { class: 'row-actions' },
          button(u.enabled ? 'Disable' : 'Enable', { testid: `user-toggle-${name}`, 'aria-label': `${u.enabled ? 'Disable' : 'Enable'} ${name}`, onclick: () => toggle(u) }),
          button('Password', { testid: `user-passwd-${name}`, 'aria-label': `Change the password of ${name}`, onclick: () => changePassword(name) }),
          button('ACL sets', { testid: `user-sets-${name}`, 'aria-label': `ACL sets of ${name}`, onclick: () => editSets(u) }),
          button('Delete', { class: 'btn-danger-quiet', testid: `user-delete-${name}`, 'aria-label': `Delete ${name}`, onclick: () => remove(name) }))));
    }));
  }

  async function toggle(u) {
    if (u.enabled) {
      const ok = await confirmDialog(`Disable ${u.username}?`, 'Its live connections are closed and it cannot log in until enabled again.', 'Disable',
        () => api('PATCH', `/v1/users/${enc(u.username)}`, { enabled: false }));
      if (!ok) return;
    } else {
      const r = await attempt(() => api('PATCH', `/v1/users/${enc(u.username)}`, { enabled: true }));
      if (!r) return;
    }
    await load();
  }

  async function changePassword(name) {
    const pw = field('New password', { type: 'password', required: true, minlength: '8', maxlength: '256', autocomplete: 'new-password', testid: 'dialog-password' }, 'At least 8 characters. Live connections of the user are closed.');
    const ok = await openDialog({
      title: `Password of ${name}`, body: [pw.wrap], confirmLabel: 'Change password',
      onConfirm: () => api('PATCH', `/v1/users/${enc(name)}`, { password: pw.input.value }),
    });
    if (ok) created.textContent = `The password of ${name} was changed.`;
  }

  async function editSets(u) {
    let all = [];
    try { all = (await listAll('/v1/acl/sets')).map((s) => s.name).filter((n) => n !== 'default'); } catch (e) { showError(e); return; }
    const boxes = all.map((n) => checkbox(n, { value: n, checked: (u.acl_sets || []).includes(n) }));
    const body = all.length
      ? [h('fieldset', null, h('legend', null, 'Sets of this user (besides "default")'), boxes.map((b) => b.wrap))]
      : [h('p', null, 'This org has no ACL sets besides "default" (which applies to every user). Create sets on the ACL page.')];
    const ok = await openDialog({
      title: `ACL sets of ${u.username}`, body, confirmLabel: 'Save',
      onConfirm: () => api('PATCH', `/v1/users/${enc(u.username)}`, { acl_sets: boxes.filter((b) => b.input.checked).map((b) => b.input.value) }),
    });
    if (ok) await load();
  }

  async function remove(name) {
    const ok = await confirmDialog(`Delete ${name}?`, 'The user is deleted, its live connections closed and its persistent sessions discarded.', 'Delete user',
      () => api('DELETE', `/v1/users/${enc(name)}`));
    if (ok) await load();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    created.textContent = '';
    if (!form.checkValidity()) { form.reportValidity(); return; }
    const body = { username: username.input.value.trim(), password: password.input.value };
    const s = splitList(sets.input.value);
    if (s.length) body.acl_sets = s;
    const u = await attempt(() => api('POST', '/v1/users', body));
    if (!u) return;
    created.textContent = `User ${u.username} created.`;
    form.reset();
    await load();
  });
  more.addEventListener('click', () => load(true));
  emptyRow(tbl.tbody, cols.length, 'Loading…');
  load();
};

// ---------------------------------------------------------------------------------------------
// ACL rules and sets

VIEWS.acl = (root) => {
  // Sets
  const setName = field('Name', { type: 'text', testid: 'set-name', required: true, pattern: NAME_PATTERN, autocomplete: 'off', spellcheck: 'false' });
  const setDesc = field('Description', { type: 'text', testid: 'set-description', maxlength: '256', autocomplete: 'off' });
  const setForm = h('form', { class: 'form-grid', novalidate: true, 'aria-label': 'Create a set' },
    setName.wrap, setDesc.wrap,
    h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'set-create' }, 'Create set')));
  const setCols = ['Name', 'Description', 'Rules', 'Created', 'Actions'];
  const setTbl = table('ACL sets', setCols, 'sets-table');

  // Rules
  const topic = field('Topic pattern', { type: 'text', testid: 'rule-topic', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'sensors/{username}/#' },
    'MQTT filter; + and # are wildcards; {username} and {clientid} are replaced on each client.');
  const action = field('Action', select({ testid: 'rule-action' }, [['all', 'publish and subscribe'], ['publish', 'publish'], ['subscribe', 'subscribe']]));
  const permission = field('Permission', select({ testid: 'rule-permission' }, ['allow', 'deny']));
  const ruleSet = field('Set', select({ testid: 'rule-set' }, ['default']));
  const ruleForm = h('form', { class: 'form-grid', novalidate: true, 'aria-label': 'Add a rule' },
    topic.wrap, action.wrap, permission.wrap, ruleSet.wrap,
    h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'rule-create' }, 'Add rule')));
  const filter = select({ testid: 'rules-filter' }, [['', 'All sets']]);
  const ruleCols = ['Set', 'Permission', 'Action', 'Topic', 'Created', 'Actions'];
  const ruleTbl = table('ACL rules', ruleCols, 'rules-table');
  const status = statusLine('acl-status');

  root.append(h('h1', null, 'ACL'),
    h('p', { class: 'muted' }, 'Default deny, and deny wins. The set "default" applies to every MQTT user of the org; other sets apply to the users and public keys they are attached to.'),
    status,
    h('section', { class: 'panel', 'aria-labelledby': 'rules-h' }, h('h2', { id: 'rules-h' }, 'Rules'), ruleForm,
      h('div', { class: 'toolbar' }, field('Show rules of', filter).wrap), ruleTbl.wrap),
    h('section', { class: 'panel', 'aria-labelledby': 'sets-h' }, h('h2', { id: 'sets-h' }, 'Sets'), setForm, setTbl.wrap));

  let sets = [];

  async function loadSets() {
    const items = await attempt(() => listAll('/v1/acl/sets'));
    if (!items) return;
    sets = items;
    const keepRule = ruleSet.input.value;
    const keepFilter = filter.value;
    ruleSet.input.replaceChildren(...sets.map((s) => h('option', { value: s.name }, s.name)));
    ruleSet.input.value = sets.some((s) => s.name === keepRule) ? keepRule : 'default';
    filter.replaceChildren(h('option', { value: '' }, 'All sets'), ...sets.map((s) => h('option', { value: s.name }, s.name)));
    filter.value = sets.some((s) => s.name === keepFilter) ? keepFilter : '';
    if (!sets.length) { emptyRow(setTbl.tbody, setCols.length, 'No sets.'); return; }
    setTbl.tbody.replaceChildren(...sets.map((s) => {
      const name = String(s.name);
      return h('tr', null,
        h('th', { scope: 'row', class: 'mono' }, name),
        h('td', null, s.description || '—'),
        h('td', { class: 'num' }, fmtCount(s.rule_count)),
        h('td', null, fmtTime(s.created_at)),
        h('td', null, h('div', { class: 'row-actions' },
          button('Rules', { 'aria-label': `Show the rules of ${name}`, onclick: () => { filter.value = name; ruleSet.input.value = name; loadRules(); topic.input.focus(); } }),
          button('Description', { testid: `set-edit-${name}`, 'aria-label': `Edit the description of ${name}`, onclick: () => editSet(s) }),
          name === 'default' ? null : button('Delete', { class: 'btn-danger-quiet', testid: `set-delete-${name}`, 'aria-label': `Delete the set ${name}`, onclick: () => removeSet(name) }))));
    }));
  }

  async function loadRules() {
    const q = filter.value ? `?set=${enc(filter.value)}` : '';
    const items = await attempt(() => listAll(`/v1/acl/rules${q}`));
    if (!items) return;
    if (!items.length) { emptyRow(ruleTbl.tbody, ruleCols.length, 'No rules: nothing is allowed.'); return; }
    items.sort((a, b) => String(a.set).localeCompare(String(b.set)) || String(a.topic).localeCompare(String(b.topic)));
    ruleTbl.tbody.replaceChildren(...items.map((r) => h('tr', null,
      h('td', { class: 'mono' }, r.set),
      h('td', null, h('span', { class: r.permission === 'allow' ? 'badge badge-ok' : 'badge badge-off' }, r.permission)),
      h('td', null, r.action),
      h('th', { scope: 'row', class: 'mono wrap' }, r.topic),
      h('td', null, fmtTime(r.created_at)),
      h('td', null, h('div', { class: 'row-actions' },
        button('Edit', { testid: `rule-edit-${r.id}`, 'aria-label': `Edit the rule ${r.permission} ${r.action} ${r.topic}`, onclick: () => editRule(r) }),
        button('Delete', { class: 'btn-danger-quiet', testid: `rule-delete-${r.id}`, 'aria-label': `Delete the rule ${r.permission} ${r.action} ${r.topic}`, onclick: () => removeRule(r) }))))));
  }

  async function editSet(s) {
    const d = field('Description', { type: 'text', value: s.description || '', maxlength: '256' });
    const ok = await openDialog({ title: `Set ${s.name}`, body: [d.wrap], confirmLabel: 'Save',
      onConfirm: () => api('PATCH', `/v1/acl/sets/${enc(s.name)}`, { description: d.input.value }) });
    if (ok) loadSets();
  }

  async function removeSet(name) {
    const ok = await confirmDialog(`Delete the set ${name}?`, 'The set and its rules are deleted. A set still attached to a user or key cannot be deleted.', 'Delete set',
      () => api('DELETE', `/v1/acl/sets/${enc(name)}`));
    if (ok) { await loadSets(); await loadRules(); }
  }

  async function editRule(r) {
    const t = field('Topic pattern', { type: 'text', value: r.topic, required: true, spellcheck: 'false' });
    const a = field('Action', select({}, [['all', 'publish and subscribe'], ['publish', 'publish'], ['subscribe', 'subscribe']]));
    a.input.value = r.action;
    const p = field('Permission', select({}, ['allow', 'deny']));
    p.input.value = r.permission;
    const ok = await openDialog({ title: 'Edit rule', body: [t.wrap, a.wrap, p.wrap], confirmLabel: 'Save',
      onConfirm: () => api('PATCH', `/v1/acl/rules/${enc(r.id)}`, { topic: t.input.value.trim(), action: a.input.value, permission: p.input.value }) });
    if (ok) loadRules();
  }

  async function removeRule(r) {
    const ok = await confirmDialog('Delete this rule?', `${r.permission} ${r.action} ${r.topic} (set ${r.set}). Subscriptions it alone allowed are removed.`, 'Delete rule',
      () => api('DELETE', `/v1/acl/rules/${enc(r.id)}`));
    if (ok) { await loadRules(); await loadSets(); }
  }

  setForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!setForm.checkValidity()) { setForm.reportValidity(); return; }
    const s = await attempt(() => api('POST', '/v1/acl/sets', { name: setName.input.value.trim(), description: setDesc.input.value }));
    if (!s) return;
    status.textContent = `Set ${s.name} created.`;
    setForm.reset();
    await loadSets();
  });
  ruleForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!ruleForm.checkValidity()) { ruleForm.reportValidity(); return; }
    const r = await attempt(() => api('POST', '/v1/acl/rules', {
      topic: topic.input.value.trim(), action: action.input.value, permission: permission.input.value, set: ruleSet.input.value || 'default',
    }));
    if (!r) return;
    status.textContent = `Rule added: ${r.permission} ${r.action} ${r.topic} (set ${r.set}).`;
    topic.input.value = '';
    await loadRules();
    await loadSets();
  });
  filter.addEventListener('change', loadRules);
  emptyRow(setTbl.tbody, setCols.length, 'Loading…');
  emptyRow(ruleTbl.tbody, ruleCols.length, 'Loading…');
  loadSets().then(loadRules);
};

// ---------------------------------------------------------------------------------------------
// API keys

function parsePermissions(text) {
  const out = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const m = /^(publish|subscribe|all)\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`Each permission line is "publish|subscribe|all TOPIC"; not: ${line}`);
    out.push({ action: m[1], topic: m[2] });
  }
  return out;
}

VIEWS.keys = (root) => {
  const name = field('Name', { type: 'text', testid: 'key-name', required: true, maxlength: '128', autocomplete: 'off' });
  const kind = field('Kind', select({ testid: 'key-kind' }, [['secret', 'secret (sk_)'], ['public', 'public (pk_)'], ['restricted', 'restricted (rk_)']]),
    'Secret: everything in the org. Public: read streams. Restricted: publish/subscribe on listed topics only.');
  const perms = field('Permissions', h('textarea', { testid: 'key-permissions', rows: '3', spellcheck: 'false', placeholder: 'publish sensors/#\nsubscribe alerts/#' }),
    'Restricted keys: one per line, "publish", "subscribe" or "all", a space, a topic pattern.');
  const sets = field('ACL sets', { type: 'text', testid: 'key-sets', autocomplete: 'off', spellcheck: 'false' }, 'Public keys: comma-separated sets limiting what it may read (none: every topic of the org).');
  const form = h('form', { class: 'form-grid', novalidate: true, 'aria-labelledby': 'kc-h' },
    name.wrap, kind.wrap, perms.wrap, sets.wrap,
    h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'key-create' }, 'Create key')));
  const secretSlot = h('div');
  const cols = ['Name', 'Kind', 'Prefix', 'Rights', 'Created', 'Last used', 'State', 'Actions'];
  const tbl = table('API keys', cols, 'keys-table');
  const showRevoked = checkbox('Show revoked keys', { testid: 'keys-show-revoked' });
  root.append(h('h1', null, 'API keys'),
    h('section', { class: 'panel' }, h('h2', { id: 'kc-h' }, 'Create a key'), form),
    secretSlot,
    h('section', { 'aria-label': 'Keys' }, h('div', { class: 'toolbar' }, showRevoked.wrap), tbl.wrap));

  function syncKind() {
    perms.wrap.hidden = kind.input.value !== 'restricted';
    sets.wrap.hidden = kind.input.value !== 'public';
  }
  kind.input.addEventListener('change', syncKind);
  syncKind();

  let items = [];
  async function load() {
    const all = await attempt(() => listAll('/v1/keys'));
    if (!all) return;
    items = all;
    render();
  }

  function render() {
    const shown = items.filter((k) => showRevoked.input.checked || !k.revoked_at);
    if (!shown.length) { emptyRow(tbl.tbody, cols.length, 'No keys.'); return; }
    const mine = state.key ? state.key.slice(0, 10) : '';
    tbl.tbody.replaceChildren(...shown.map((k) => {
      const rights = k.kind === 'restricted'
        ? (k.permissions || []).map((p) => `${p.action} ${p.topic}`).join(', ')
        : k.kind === 'public' ? ((k.acl_sets || []).length ? `sets: ${k.acl_sets.join(', ')}` : 'every topic (read)') : 'everything in the org';
      const self = k.prefix === mine && !k.revoked_at;
      return h('tr', { class: k.revoked_at ? 'row-muted' : null },
        h('th', { scope: 'row' }, k.name, self ? h('span', { class: 'badge badge-info' }, 'this console') : null),
        h('td', null, k.kind),
        h('td', { class: 'mono' }, k.prefix),
        h('td', { class: 'mono wrap' }, rights),
        h('td', null, fmtTime(k.created_at)),
        h('td', null, k.last_used_at ? fmtTime(k.last_used_at) : 'never'),
        h('td', null, k.revoked_at ? `revoked ${fmtTime(k.revoked_at)}` : h('span', { class: 'badge badge-ok' }, 'active')),
        h('td', null, k.revoked_at ? null : h('div', { class: 'row-actions' },
          button('Rename', { testid: `key-rename-${k.id}`, 'aria-label': `Rename the key ${k.name}`, onclick: () => rename(k) }),
          button('Revoke', { class: 'btn-danger-quiet', testid: `key-revoke-${k.id}`, 'aria-label': `Revoke the key ${k.name}`, onclick: () => revoke(k, self) }))));
    }));
  }

  async function rename(k) {
    const n = field('Name', { type: 'text', value: k.name, required: true, maxlength: '128' });
    const ok = await openDialog({ title: `Rename ${k.prefix}…`, body: [n.wrap], confirmLabel: 'Rename',
      onConfirm: () => api('PATCH', `/v1/keys/${enc(k.id)}`, { name: n.input.value.trim() }) });
    if (ok) load();
  }

  async function revoke(k, self) {
    const msg = `Key ${k.name} (${k.prefix}…) stops working at once, on every shard; its streams are closed. This cannot be undone.` +
      (self ? ' It is the key this console is logged in with: you will be logged out.' : '');
    const ok = await confirmDialog('Revoke this key?', msg, 'Revoke key', () => api('DELETE', `/v1/keys/${enc(k.id)}`));
    if (ok) load();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!form.checkValidity()) { form.reportValidity(); return; }
    const body = { name: name.input.value.trim(), kind: kind.input.value };
    try {
      if (body.kind === 'restricted') body.permissions = parsePermissions(perms.input.value);
    } catch (err) { showError(err); return; }
    if (body.kind === 'public') {
      const s = splitList(sets.input.value);
      if (s.length) body.acl_sets = s;
    }
    const k = await attempt(() => api('POST', '/v1/keys', body));
    if (!k) return;
    form.reset();
    syncKind();
    const panel = secretPanel(`New ${k.kind} key "${k.name}"`, k.key);
    secretSlot.replaceChildren(panel);
    panel.focus();
    await load();
  });
  showRevoked.input.addEventListener('change', render);
  emptyRow(tbl.tbody, cols.length, 'Loading…');
  load();
};

// ---------------------------------------------------------------------------------------------
// Org

const SETTINGS = [
  ['rate_limit_per_sec', 'Rate limit (requests/s)'],
  ['rate_burst', 'Rate burst'],
  ['monthly_quota', 'Monthly quota (REST messages)'],
  ['connections_max', 'Connections max'],
];

function settingsFields(current = {}, testidPrefix = 'setting') {
  return SETTINGS.map(([k, label]) => {
    const f = field(label, { type: 'number', min: '0', step: '1', inputmode: 'numeric', testid: `${testidPrefix}-${k}`, value: current[k] ?? '' });
    f.key = k;
    return f;
  });
}

/** The settings typed in `fields` (blank ones left out). */
function settingsBody(fields) {
  const s = {};
  for (const f of fields) {
    const v = f.input.value.trim();
    if (v === '') continue;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${f.key}: a whole number of 0 or more`);
    s[f.key] = n;
  }
  return s;
}

function usageMeter(org) {
  const u = org.usage || {};
  const quota = num(org.settings && org.settings.monthly_quota);
  const used = num(u.rest_publishes) ?? 0;
  const pct = quota ? Math.min(100, (used / quota) * 100) : 0;
  const meterId = nextId('m');
  return h('div', { class: 'usage', testid: 'org-usage' },
    h('label', { for: meterId }, `REST messages in ${u.month || 'this month'} against the monthly quota`),
    h('meter', { id: meterId, min: '0', max: String(quota || 1), value: String(Math.min(used, quota || 1)), low: String((quota || 1) * 0.75), high: String((quota || 1) * 0.9), optimum: '0', class: 'meter' }),
    h('p', { class: 'usage-text' }, `${fmtGrouped(used)} of ${fmtGrouped(quota)} (${pct < 0.1 && used > 0 ? '<0.1' : pct.toFixed(1)} %)`),
    dl([
      ['Connections now', fmtGrouped(u.connections)],
      ['MQTT messages in this month', fmtGrouped(u.messages_in)],
      ['MQTT messages out this month', fmtGrouped(u.messages_out)],
      ['REST publishes this month', fmtGrouped(u.rest_publishes)],
    ]));
}

VIEWS.org = (root) => {
  const body = h('div', null, h('p', { class: 'muted' }, 'Loading…'));
  root.append(h('h1', null, 'Org'), body);
  async function load() {
    const org = await attempt(() => api('GET', '/v1/org'));
    if (!org) return;
    state.org = org;
    const name = field('Name', { type: 'text', testid: 'org-name', value: org.name, required: true, maxlength: '128' });
    const status = statusLine('org-status');
    const nameForm = h('form', { class: 'form-grid', novalidate: true, 'aria-label': 'Rename the org' }, name.wrap,
      h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'org-save' }, 'Save name')));
    nameForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!nameForm.checkValidity()) { nameForm.reportValidity(); return; }
      const r = await attempt(() => api('PATCH', '/v1/org', { name: name.input.value.trim() }));
      if (r) { status.textContent = 'Name saved.'; state.org = r; }
    });
    const s = org.settings || {};
    const settingsSection = h('section', { class: 'panel', 'aria-labelledby': 'os-h' }, h('h2', { id: 'os-h' }, 'Settings'),
      dl(SETTINGS.map(([k, label]) => [label, fmtGrouped(s[k])])));
    if (state.root) {
      // The root key's org is `default`; only the root key may change an org's limits.
      const fields = settingsFields(s, 'org-setting');
      const sForm = h('form', { class: 'form-grid', novalidate: true, 'aria-label': 'Change the settings' }, fields.map((f) => f.wrap),
        h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'org-settings-save' }, 'Save settings')));
      sForm.addEventListener('submit', async (e) => {
        e.preventDefault();
        let settings;
        try { settings = settingsBody(fields); } catch (err) { showError(err); return; }
        const r = await attempt(() => api('PATCH', '/v1/org', { settings }));
        if (r) load();
      });
      settingsSection.append(h('h3', null, 'Change the settings'), sForm);
    } else {
      settingsSection.append(h('p', { class: 'muted' }, 'The settings are the org\'s limits: only the broker\'s root key may change them.'));
    }
    body.replaceChildren(
      h('section', { class: 'panel', 'aria-labelledby': 'oi-h' }, h('h2', { id: 'oi-h' }, org.name || org.id),
        dl([['Id', org.id], ['Created', fmtTime(org.created_at)]]), nameForm, status),
      h('section', { class: 'panel', 'aria-labelledby': 'ou-h' }, h('h2', { id: 'ou-h' }, 'Usage this month'), usageMeter(org)),
      settingsSection);
  }
  load();
};

// ---------------------------------------------------------------------------------------------
// Orgs (root key only)

VIEWS.orgs = (root) => {
  const name = field('Name', { type: 'text', testid: 'org-new-name', required: true, maxlength: '128', autocomplete: 'off' });
  const fields = settingsFields({}, 'org-new');
  const form = h('form', { class: 'form-grid', novalidate: true, 'aria-labelledby': 'oc-h' }, name.wrap, fields.map((f) => f.wrap),
    h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'org-create' }, 'Create org')));
  const secretSlot = h('div');
  const cols = ['Id', 'Name', 'Created', 'Rate /s', 'Burst', 'Monthly quota', 'Connections max', 'Usage', 'Actions'];
  const tbl = table('Orgs', cols, 'orgs-table');
  root.append(h('h1', null, 'Orgs'),
    h('p', { class: 'muted' }, 'Every org of the broker (root key only). Blank settings take the defaults.'),
    h('section', { class: 'panel' }, h('h2', { id: 'oc-h' }, 'Create an org'), form),
    secretSlot, tbl.wrap);

  async function load() {
    const items = await attempt(() => listAll('/v1/orgs'));
    if (!items) return;
    if (!items.length) { emptyRow(tbl.tbody, cols.length, 'No orgs.'); return; }
    tbl.tbody.replaceChildren(...items.map((o) => {
      const s = o.settings || {};
      const u = o.usage;
      return h('tr', null,
        h('th', { scope: 'row', class: 'mono' }, o.id),
        h('td', null, o.name),
        h('td', null, fmtTime(o.created_at)),
        ['rate_limit_per_sec', 'rate_burst', 'monthly_quota', 'connections_max'].map((k) => h('td', { class: 'num' }, fmtGrouped(s[k]))),
        h('td', null, u ? `${fmtGrouped(u.connections)} conn. · ${fmtGrouped(u.rest_publishes)} REST msgs` : '—'),
        h('td', null, h('div', { class: 'row-actions' },
          button('Edit', { testid: `org-edit-${o.id}`, 'aria-label': `Edit org ${o.id}`, onclick: () => edit(o) }),
          o.id === 'default' ? null : button('Delete', { class: 'btn-danger-quiet', testid: `org-delete-${o.id}`, 'aria-label': `Delete org ${o.id}`, onclick: () => remove(o) }))));
    }));
  }

  async function edit(o) {
    const n = field('Name', { type: 'text', value: o.name, required: true, maxlength: '128' });
    const fs = settingsFields(o.settings || {});
    const ok = await openDialog({ title: `Org ${o.id}`, body: [n.wrap, fs.map((f) => f.wrap)], confirmLabel: 'Save',
      onConfirm: () => api('PATCH', `/v1/orgs/${enc(o.id)}`, { name: n.input.value.trim(), settings: settingsBody(fs) }) });
    if (ok) load();
  }

  async function remove(o) {
    const ok = await confirmDialog(`Delete org ${o.id}?`, `"${o.name}" is deleted with its users, rules, keys and sessions; its connections are closed.`, 'Delete org',
      () => api('DELETE', `/v1/orgs/${enc(o.id)}`));
    if (ok) load();
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!form.checkValidity()) { form.reportValidity(); return; }
    let settings;
    try { settings = settingsBody(fields); } catch (err) { showError(err); return; }
    const body = { name: name.input.value.trim() };
    if (Object.keys(settings).length) body.settings = settings;
    const r = await attempt(() => api('POST', '/v1/orgs', body));
    if (!r) return;
    form.reset();
    const panel = secretPanel(`Org ${r.org.id} created: its first key`, r.key.key, [dl([['Org id', r.org.id], ['Key id', r.key.id]])], 'new-org-key');
    secretSlot.replaceChildren(panel);
    panel.focus();
    load();
  });
  emptyRow(tbl.tbody, cols.length, 'Loading…');
  load();
};

// ---------------------------------------------------------------------------------------------
// Topics: watch a filter through the WebSocket stream, publish through REST

/** Percent-encodes a query value but keeps / and + readable (+ is the MQTT wildcard there). */
function encQuery(s) {
  return encodeURIComponent(s).replace(/%2F/g, '/').replace(/%2B/g, '+');
}

/** Why `f` is not an MQTT topic filter, or null. The broker checks again (and the key's rights). */
function filterProblem(f) {
  if (!f) return 'Type a topic filter, e.g. sensors/# (# alone: everything this key may read).';
  const levels = f.split('/');
  for (let i = 0; i < levels.length; i += 1) {
    const l = levels[i];
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return `Not a topic filter: "#" must be a whole level and the last one (${f}).`;
    if (l.includes('+') && l !== '+') return `Not a topic filter: "+" must be a whole level (${f}).`;
  }
  return null;
}

function prettyPayload(f) {
  let text = typeof f.payload === 'string' ? f.payload : JSON.stringify(f.payload);
  let note = f.is_base64 ? 'base64' : null;
  if (!f.is_base64) {
    const t = text.trim();
    if ((t.startsWith('{') || t.startsWith('[')) && t.length <= PAYLOAD_SHOWN_MAX) {
      try { text = JSON.stringify(JSON.parse(t), null, 2); note = 'JSON'; } catch { /* not JSON */ }
    }
  }
  if (text.length > PAYLOAD_SHOWN_MAX) {
    text = `${text.slice(0, PAYLOAD_SHOWN_MAX)}…`;
    note = `${note ? `${note}, ` : ''}first ${PAYLOAD_SHOWN_MAX / 1024} KiB`;
  }
  return { text, note };
}

VIEWS.topics = (root) => {
  const filter = field('Topic filter', { type: 'text', testid: 'watch-filter', value: '#', required: true, autocomplete: 'off', spellcheck: 'false' }, '+ and # are wildcards.');
  const start = h('button', { type: 'submit', class: 'btn-primary', testid: 'watch-start' }, 'Watch');
  const stop = button('Stop', { testid: 'watch-stop', disabled: true });
  const clear = button('Clear list', { testid: 'watch-clear' });
  const status = h('p', { class: 'status', role: 'status', testid: 'watch-status' }, 'Not watching.');
  const count = h('span', { class: 'muted', testid: 'watch-count' });
  const list = h('ol', { class: 'messages', testid: 'watch-messages', 'aria-label': 'Messages, newest first' });
  const watchForm = h('form', { class: 'toolbar', novalidate: true, 'aria-labelledby': 'tw-h' }, filter.wrap,
    h('div', { class: 'field field-button inline' }, start, stop, clear));

  const pTopic = field('Topic', { type: 'text', testid: 'publish-topic', required: true, autocomplete: 'off', spellcheck: 'false' });
  const pPayload = field('Payload', h('textarea', { testid: 'publish-payload', rows: '4', spellcheck: 'false' }), 'Sent as UTF-8 text.');
  const pQos = field('QoS', select({ testid: 'publish-qos' }, [['0', '0 (at most once)'], ['1', '1 (at least once)']]));
  const pRetain = checkbox('Retain', { testid: 'publish-retain' });
  const pStatus = statusLine('publish-status');
  const pubForm = h('form', { class: 'stack', novalidate: true, 'aria-labelledby': 'tp-h' }, pTopic.wrap, pPayload.wrap, pQos.wrap, pRetain.wrap,
    h('div', { class: 'field field-button' }, h('button', { type: 'submit', class: 'btn-primary', testid: 'publish-submit' }, 'Publish')));

  const canPublish = state.kind !== 'public';
  root.append(h('h1', null, 'Topics'),
    h('div', { class: canPublish ? 'topics-layout' : null },
      h('section', { class: 'panel', 'aria-labelledby': 'tw-h' }, h('h2', { id: 'tw-h' }, 'Watch'), watchForm, status,
        h('p', null, count), list),
      canPublish ? h('section', { class: 'panel panel-side', 'aria-labelledby': 'tp-h' }, h('h2', { id: 'tp-h' }, 'Publish'), pubForm, pStatus) : null));

  let ws = null;
  let queue = [];
  let raf = 0;
  let received = 0;

  function flush() {
    raf = 0;
    const batch = queue.slice(-WATCH_MAX);
    queue = [];
    const nodes = batch.reverse().map(messageItem);
    list.prepend(...nodes);
    while (list.childElementCount > WATCH_MAX) list.lastElementChild.remove();
    count.textContent = `${received} received · showing the latest ${list.childElementCount}`;
  }

  function messageItem(f) {
    const { text, note } = prettyPayload(f);
    const ts = num(f.ts_ms) ?? (num(f.ts) !== null ? f.ts * 1000 : Date.now());
    return h('li', { class: 'message' },
      h('div', { class: 'message-head' },
        h('span', { class: 'message-topic mono' }, String(f.topic)),
        h('span', { class: 'muted' }, fmtClock(ts)),
        h('span', { class: 'badge' }, `QoS ${fmtCount(f.qos)}`),
        f.retained ? h('span', { class: 'badge badge-info' }, 'retained') : null,
        note ? h('span', { class: 'badge' }, note) : null),
      h('pre', { class: 'payload' }, text));
  }

  function close() {
    if (ws) {
      const w = ws;
      ws = null;
      w.onopen = w.onmessage = w.onerror = w.onclose = null;
      try { w.close(1000); } catch { /* closed already */ }
    }
    start.disabled = false;
    stop.disabled = true;
  }

  function watch() {
    close();
    const f = filter.input.value.trim();
    const problem = filterProblem(f);
    if (problem) { status.textContent = problem; status.dataset.state = 'invalid'; filter.input.focus(); return; }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${scheme}://${location.host}/v1/mqtt/stream?token=${enc(state.key)}&topic=${encQuery(f)}`;
    let opened = false;
    let w;
    try { w = new WebSocket(url); } catch (e) { status.textContent = `Could not open the stream: ${e.message}`; return; }
    ws = w;
    start.disabled = true;
    stop.disabled = false;
    status.textContent = `Connecting to ${f}…`;
    status.dataset.state = 'connecting';
    w.onopen = () => {
      opened = true;
      status.textContent = `Watching ${f}`;
      status.dataset.state = 'open';
    };
    w.onmessage = (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch { return; }
      if (!frame || typeof frame !== 'object') return;
      received += 1;
      queue.push(frame);
      if (queue.length > WATCH_MAX) queue.splice(0, queue.length - WATCH_MAX);
      if (!raf) raf = requestAnimationFrame(flush);
    };
    w.onclose = (e) => {
      if (ws !== w) return;
      ws = null;
      start.disabled = false;
      stop.disabled = true;
      status.dataset.state = 'closed';
      if (!opened) {
        status.textContent = `The broker refused the stream for ${f}: check the filter and that this key may subscribe to it (a WebSocket does not tell why).`;
      } else if (e.code === 1008) {
        status.textContent = 'The stream was closed: this key may no longer read it (revoked, or its rules changed).';
      } else {
        status.textContent = `The stream closed (${e.code}${e.reason ? `: ${e.reason}` : ''}).`;
      }
      // A revoked key: the next call answers 401 and brings back the login.
      if ((!opened || e.code === 1008) && state.kind === 'secret') api('GET', '/v1/org').catch(() => {});
    };
  }

  watchForm.addEventListener('submit', (e) => { e.preventDefault(); watch(); });
  stop.addEventListener('click', () => { close(); status.textContent = 'Stopped.'; status.dataset.state = 'stopped'; });
  clear.addEventListener('click', () => { list.replaceChildren(); queue = []; received = 0; count.textContent = ''; });

  pubForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    pStatus.textContent = '';
    if (!pubForm.checkValidity()) { pubForm.reportValidity(); return; }
    const body = { topic: pTopic.input.value.trim(), payload: pPayload.input.value, qos: Number(pQos.input.value), retain: pRetain.input.checked };
    const r = await attempt(() => api('POST', '/v1/publish', body));
    if (!r) return;
    pStatus.textContent = r.qos === 1
      ? `Published to ${r.topic} at QoS 1: queued for ${r.matched} MQTT subscription${r.matched === 1 ? '' : 's'} (streams are not counted).`
      : `Published to ${r.topic} at QoS 0 (accepted).`;
  });

  return () => { close(); if (raf) cancelAnimationFrame(raf); };
};

// ---------------------------------------------------------------------------------------------
// Start

function init() {
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('login-key');
    const key = input.value.trim();
    if (!key) { $('login-error').textContent = 'Paste an API key.'; input.focus(); return; }
    if (/[\s\u0000-\u001f\u007f]/.test(key)) { $('login-error').textContent = 'An API key has no spaces or control characters.'; return; }
    $('login-error').textContent = '';
    const submit = e.target.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      const ok = await login(key);
      if (!ok && !$('login-error').textContent) $('login-error').textContent = 'The key was refused.';
    } finally {
      submit.disabled = false;
    }
  });
  $('logout').addEventListener('click', () => {
    loggedOut('Logged out.');
  });
  $('alert-close').addEventListener('click', clearError);
  // Routes are #/name; other fragments (the skip link's #main) only move the focus.
  window.addEventListener('hashchange', () => {
    if (location.hash && !location.hash.startsWith('#/')) return;
    route(true);
  });
  const stored = sessionStorage.getItem(KEY_STORAGE);
  if (stored) login(stored, { quiet: true });
  else showLogin();
}

init();
