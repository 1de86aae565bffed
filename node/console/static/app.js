// pushnode console. Plain JavaScript, no framework, no build step, nothing
// loaded from elsewhere. Everything it shows comes from the node's /v1/
// HTTP API, called with the API token the user signs in with; the token
// lives in sessionStorage only.
'use strict';

(() => {
  const TOKEN_KEY = 'pushnode.token';
  const STATUS_EVERY_MS = 5000;
  const SAMPLES = 61; // 5 minutes of status samples
  const MAX_EVENTS = 200; // events kept in the live list
  const MAX_BULK_ROWS = 500; // accepted targets listed after a bulk push
  const MAX_TARGETS = 10000; // api.MaxBulkTargets
  const FATE_RANK = { queued: 0, sent: 1, acknowledged: 2, superseded: 2, expired: 2 };
  const TERMINAL = new Set(['acknowledged', 'superseded', 'expired']);
  const HEX32 = /^[0-9a-fA-F]{32}$/;
  const MAX_MASK = (1n << 64n) - 1n;
  const NUM_SLOTS = 1024; // slotmap.NumSlots: fixed, only the owners change

  const $ = (id) => document.getElementById(id);
  const encoder = new TextEncoder();

  const state = {
    token: null,
    gen: 0, // bumped at every sign in and sign out: stale loops stop
    view: null,
    status: null,
    maxContent: 500,
    samples: [],
    cursor: null,
    streamCtrl: null,
    statusTimer: null,
    countersTimer: null,
    clientTimer: null,
    client: null, // {by, q, uuid}
    clientSeq: 0,
    pushes: new Map(), // push id -> {fate, badges: Set<Element>}
    seen: new Map(), // push id -> the latest fate the event stream told, for pushes not (yet) on the page
    slotmap: null, // GET /v1/slotmap as last read, or {none: true, self} for a node without a map
    shardsSeq: 0,
  };

  // ---------- small helpers ----------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) {
      if (kid === undefined || kid === null || kid === false) continue;
      e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function fmtNum(n) {
    return typeof n === 'number' && isFinite(n) ? n.toLocaleString() : '–';
  }

  function fmtBytes(n) {
    if (typeof n !== 'number') return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + u[i];
  }

  function fmtDuration(s) {
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + (s % 60) + 's';
    return s + 's';
  }

  function ago(date) {
    const s = Math.round((Date.now() - date.getTime()) / 1000);
    const abs = Math.abs(s);
    let t;
    if (abs < 60) t = abs + ' s';
    else if (abs < 3600) t = Math.round(abs / 60) + ' min';
    else if (abs < 172800) t = Math.round(abs / 3600) + ' h';
    else t = Math.round(abs / 86400) + ' d';
    return s >= 0 ? t + ' ago' : 'in ' + t;
  }

  // A <time> with the local date and time and how long ago it was.
  function timeEl(iso, withAgo = true) {
    if (!iso) return document.createTextNode('—');
    const d = new Date(iso);
    const text = d.toLocaleString() + (withAgo ? ' (' + ago(d) + ')' : '');
    return el('time', { datetime: iso, title: iso, text });
  }

  function clock(iso) {
    return new Date(iso).toLocaleTimeString();
  }

  function show(id, text) {
    const e = $(id);
    e.textContent = text || '';
    e.hidden = !text;
  }

  function badge(fate) {
    return el('span', { class: 'badge', 'data-fate': fate, text: fate });
  }

  function b64bytes(s) {
    const bin = atob(s || '');
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // What a custom payload looks like: its text if it is UTF-8, else hex.
  function preview(bytes, max = 200) {
    try {
      const s = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      return s.length > max ? s.slice(0, max) + '…' : s;
    } catch {
      const hex = Array.from(bytes.slice(0, 48), (b) => b.toString(16).padStart(2, '0')).join(' ');
      return 'binary: ' + hex + (bytes.length > 48 ? ' …' : '');
    }
  }

  function bitsCount(hex) {
    try {
      let v = BigInt(hex), n = 0;
      while (v > 0n) { n += Number(v & 1n); v >>= 1n; }
      return n;
    } catch { return 0; }
  }

  // ---------- the API ----------

  class APIError extends Error {
    constructor(status, message, data) { super(message); this.status = status; this.data = data; }
  }

  // The console is served at <base>/console/, the API at <base>/v1/.
  function apiURL(path) {
    return new URL('../' + path, document.baseURI).toString();
  }

  async function call(path, { method = 'GET', body, token = state.token, timeout = 30000 } = {}) {
    const gen = state.gen;
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res, text;
    try {
      res = await fetch(apiURL(path), {
        method, headers, cache: 'no-store', credentials: 'omit',
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeout),
      });
      text = await res.text();
    } catch (e) {
      throw new APIError(0, e && e.name === 'TimeoutError'
        ? 'the node did not answer within ' + timeout / 1000 + ' s'
        : 'cannot reach the node (' + (e && e.message) + ')');
    }
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!res.ok) {
      const msg = (data && data.error) || (text || '').trim() || res.statusText || 'HTTP ' + res.status;
      if (res.status === 401 && token && token === state.token && gen === state.gen) {
        signOut('The node refused the token (' + msg + '). Sign in again.');
      }
      throw new APIError(res.status, msg, data);
    }
    return data;
  }

  // ---------- sign in and out ----------

  async function onSignIn(ev) {
    ev.preventDefault();
    const input = $('token');
    const token = input.value.trim();
    show('signin-error', '');
    input.removeAttribute('aria-invalid');
    if (!token) {
      input.setAttribute('aria-invalid', 'true');
      show('signin-error', 'Enter the API token.');
      input.focus();
      return;
    }
    const btn = $('signin-submit');
    btn.disabled = true;
    try {
      const st = await call('v1/status', { token });
      input.value = '';
      startSession(token, st);
    } catch (e) {
      input.setAttribute('aria-invalid', 'true');
      show('signin-error', e.status === 401
        ? 'The node refused this token: ' + e.message + '.'
        : 'Could not sign in: ' + e.message + '.');
      input.focus();
      input.select();
    } finally {
      btn.disabled = false;
    }
  }

  function startSession(token, st) {
    state.token = token;
    state.gen++;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('nav').hidden = false;
    $('signout').hidden = false;
    state.samples = [];
    state.cursor = null;
    if (st) {
      applyStatus(st);
      // Show the last few events the node still has, then follow.
      state.cursor = Math.max(0, (st.eventSeq || 0) - 50);
    }
    scheduleStatus(st ? STATUS_EVERY_MS : 0);
    runStream(state.gen);
    route();
  }

  function signOut(message) {
    state.token = null;
    state.gen++;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.statusTimer);
    clearTimeout(state.clientTimer);
    clearTimeout(state.countersTimer);
    state.countersTimer = null;
    if (state.streamCtrl) state.streamCtrl.abort();
    state.streamCtrl = null;
    state.status = null;
    state.samples = [];
    state.client = null;
    state.pushes.clear();
    state.seen.clear();
    state.slotmap = null;
    clearData();
    $('nav').hidden = true;
    $('signout').hidden = true;
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    show('signin-error', message || '');
    setView('signin', true);
  }

  // Leaves nothing the node said on the page.
  function clearData() {
    for (const id of ['st-records', 'st-online', 'st-tcp', 'st-accepted', 'st-rejected', 'st-duplicate', 'st-acked',
      'st-sent', 'st-queued', 'st-superseded', 'st-expired', 'st-uptime', 'st-store',
      'chart-clients-online', 'chart-clients-records', 'chart-clients-max', 'chart-traffic-pushed',
      'chart-traffic-sent', 'chart-traffic-acked', 'chart-traffic-max']) {
      $(id).textContent = '–';
    }
    $('node-version').textContent = '';
    $('status-updated').textContent = '';
    $('chart-clients').replaceChildren();
    $('chart-traffic').replaceChildren();
    for (const n of document.querySelectorAll('.legend .collecting')) n.remove();
    $('events').replaceChildren();
    $('events-empty').hidden = false;
    $('node-facts').replaceChildren();
    setStreamState('off');
    show('status-error', '');
    $('client-card').hidden = true;
    $('c-home-label').hidden = true;
    $('c-home').hidden = true;
    $('push-panel').hidden = true;
    $('push-result').replaceChildren();
    $('push-history').replaceChildren();
    $('push-history-title').hidden = true;
    $('lookup-q').value = '';
    show('lookup-error', '');
    $('bulk-result').hidden = true;
    $('b-targets').value = '';
    $('shards-none').hidden = true;
    $('shards-map').hidden = true;
    show('shards-error', '');
    $('shards-updated').textContent = '';
    for (const id of ['sh-self', 'sh-epoch', 'sh-slots', 'sh-share', 'sh-links', 'sh-links-note', 'sh-strip-summary']) $(id).textContent = '–';
    $('sh-strip').replaceChildren();
    $('sh-table').tBodies[0].replaceChildren();
    for (const f of [$('push-form'), $('bulk-form')]) {
      f.querySelector('.custom-data').value = '';
      setMask(f, 0n);
      showFormError(f, '');
      updateCount(f);
    }
    updateTargetCount();
  }

  // ---------- views ----------

  const VIEWS = ['signin', 'dashboard', 'client', 'bulk', 'shards'];

  function setView(view, focus) {
    const changed = state.view !== view;
    state.view = view;
    for (const v of VIEWS) $(v + '-view').hidden = v !== view;
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const title = { signin: 'Sign in', dashboard: 'Dashboard', client: 'Client', bulk: 'Bulk push', shards: 'Shards' }[view];
    document.title = title + ' · pushnode console';
    if (view === 'signin') {
      if (focus) $('token').focus();
    } else if (changed && focus) {
      $(view + '-title').focus();
    }
  }

  // Routes: #dashboard, #client, #client/uuid/HEX, #client/userId/ID, #bulk, #shards.
  function route() {
    if (!state.token) { setView('signin', false); return; }
    const parts = location.hash.replace(/^#/, '').split('/');
    const view = ['dashboard', 'client', 'bulk', 'shards'].includes(parts[0]) ? parts[0] : 'dashboard';
    const was = state.view;
    setView(view, was !== null);
    if (view === 'shards' && was !== 'shards') loadShards();
    if (view !== 'client') return;
    if ((parts[1] === 'uuid' || parts[1] === 'userId') && parts.length > 2) {
      let q;
      try { q = decodeURIComponent(parts.slice(2).join('/')); } catch { return; }
      const c = state.client;
      if (!c || c.by !== parts[1] || c.q !== q) {
        $('lookup-by').value = parts[1];
        $('lookup-q').value = q;
        lookup(parts[1], q);
        return;
      }
    }
    if (state.client && was !== 'client') scheduleClientRefresh(0);
  }

  // ---------- status and charts ----------

  function scheduleStatus(ms) {
    clearTimeout(state.statusTimer);
    const gen = state.gen;
    state.statusTimer = setTimeout(async () => {
      if (gen !== state.gen) return;
      try {
        const st = await call('v1/status');
        if (gen !== state.gen) return;
        applyStatus(st, true);
        show('status-error', '');
      } catch (e) {
        if (gen !== state.gen) return;
        show('status-error', 'Cannot read the node status: ' + e.message);
      }
      if (gen === state.gen) scheduleStatus(STATUS_EVERY_MS);
    }, ms);
  }

  // Counters follow deliveries at once (at most once a second); the
  // charts take one sample per STATUS_EVERY_MS.
  function refreshCountersSoon() {
    if (state.countersTimer) return;
    const gen = state.gen;
    state.countersTimer = setTimeout(async () => {
      try {
        const st = await call('v1/status');
        if (gen === state.gen) applyStatus(st, false);
      } catch { /* the periodic poll reports errors */ }
      state.countersTimer = null;
    }, 1000);
  }

  function applyStatus(st, sample) {
    state.status = st;
    state.maxContent = st.maxContentLength || 500;
    const pushes = st.pushes || {}, del = st.deliveries || {};
    $('node-version').textContent = st.version || '';
    $('st-records').textContent = fmtNum(st.records);
    $('st-online').textContent = fmtNum(st.online);
    $('st-tcp').textContent = fmtNum(st.tcpClients);
    $('st-accepted').textContent = fmtNum(pushes.accepted);
    $('st-rejected').textContent = fmtNum(pushes.rejected);
    $('st-duplicate').textContent = fmtNum(pushes.duplicate);
    $('st-acked').textContent = fmtNum(del.acknowledged);
    $('st-sent').textContent = fmtNum(del.sent);
    $('st-queued').textContent = fmtNum(del.queued);
    $('st-superseded').textContent = fmtNum(del.superseded);
    $('st-expired').textContent = fmtNum(del.expired);
    $('st-uptime').textContent = fmtDuration(st.uptimeSeconds || 0);
    $('st-store').textContent = fmtBytes(st.storeBytes);
    $('status-updated').textContent = 'updated ' + new Date().toLocaleTimeString();

    const facts = [
      ['Version', st.version || '—'],
      ['Started', timeEl(st.startedAt)],
      ['Heartbeat policy', st.heartbeatPolicy],
      ['Expiry age', (st.expiryAgeHours ?? '—') + ' h'],
      ['Largest custom message', fmtNum(st.maxContentLength) + ' bytes'],
      ['Event sequence', fmtNum(st.eventSeq)],
      ['Store incarnation', st.incarnation || '—'],
      ['Ordinal', typeof st.ordinal === 'number' ? String(st.ordinal) : '—'],
      ['Slot map', st.slotmap
        ? 'epoch ' + st.slotmap.epoch + ': slots ' + (st.slotmap.slots ? st.slotmap.ranges + ' (' + fmtNum(st.slotmap.slots) + ')' : 'none')
        : 'none: this node serves every slot'],
      ['Packets in', kv(st.packetsIn)],
      ['Packets out', kv(st.packetsOut)],
      ['Drops', kv(st.drops) || 'none'],
    ];
    $('node-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
    if (state.view === 'shards') followShards(st);

    if (sample === false) return;
    const s = {
      t: Date.now(), online: st.online || 0, records: st.records || 0,
      pushed: pushes.accepted || 0, sent: del.sent || 0, acked: del.acknowledged || 0,
    };
    state.samples.push(s);
    if (state.samples.length > SAMPLES) state.samples.shift();
    drawCharts();
    for (const f of [$('push-form'), $('bulk-form')]) updateCount(f);
  }

  function kv(m) {
    return Object.entries(m || {}).filter(([, v]) => v).map(([k, v]) => k + ' ' + fmtNum(v)).join(' · ');
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  // Lines over the last SAMPLES slots, the newest at the right edge.
  function drawChart(svg, series) {
    const W = 300, H = 100;
    const all = series.flatMap((s) => s.values);
    const max = niceMax(Math.max(0, ...all));
    const kids = [0.25, 0.5, 0.75].map((f) => svgEl('line', { class: 'grid', x1: 0, x2: W, y1: H * f, y2: H * f }));
    for (const s of series) {
      const n = s.values.length;
      if (n < 2) continue;
      const pts = s.values.map((v, i) => {
        const x = (W * (SAMPLES - n + i)) / (SAMPLES - 1);
        const y = H - 3 - (v / max) * (H - 6);
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      kids.push(svgEl('polyline', { class: s.cls, points: pts.join(' ') }));
    }
    svg.replaceChildren(...kids);
    return max;
  }

  function drawCharts() {
    const ss = state.samples;
    const last = ss[ss.length - 1];
    const m1 = drawChart($('chart-clients'), [
      { cls: 's1', values: ss.map((s) => s.online) },
      { cls: 's2', values: ss.map((s) => s.records) },
    ]);
    $('chart-clients-online').textContent = fmtNum(last.online);
    $('chart-clients-records').textContent = fmtNum(last.records);
    $('chart-clients-max').textContent = fmtNum(m1);

    const rate = (k) => ss.slice(1).map((s, i) => {
      const dt = (s.t - ss[i].t) / 1000;
      return dt > 0 ? Math.max(0, s[k] - ss[i][k]) / dt : 0;
    });
    const pushed = rate('pushed'), sent = rate('sent'), acked = rate('acked');
    const m2 = drawChart($('chart-traffic'), [
      { cls: 's1', values: pushed }, { cls: 's3', values: sent }, { cls: 's2', values: acked },
    ]);
    const fmtRate = (a) => (a.length ? a[a.length - 1].toFixed(a[a.length - 1] < 10 ? 1 : 0) : '–');
    $('chart-traffic-pushed').textContent = fmtRate(pushed);
    $('chart-traffic-sent').textContent = fmtRate(sent);
    $('chart-traffic-acked').textContent = fmtRate(acked);
    $('chart-traffic-max').textContent = fmtNum(m2);
    for (const id of ['chart-clients-desc', 'chart-traffic-desc']) {
      const legend = $(id);
      let note = legend.querySelector('.collecting');
      if (ss.length < 2 && !note) {
        legend.append(el('span', { class: 'collecting muted', text: 'Sampling every ' + STATUS_EVERY_MS / 1000 + ' s; the lines start with the second sample.' }));
      } else if (ss.length >= 2 && note) {
        note.remove();
      }
    }
  }

  // ---------- the live event stream ----------

  function setStreamState(s) {
    const b = $('stream-state');
    b.dataset.state = s;
    b.textContent = s;
  }

  // Follows /v1/events as Server-Sent Events read through fetch (an
  // EventSource cannot send the Authorization header), reconnecting from
  // the last event seen. Falls back to long polling where a response body
  // cannot be streamed.
  async function runStream(gen) {
    let backoff = 1000;
    while (state.token && gen === state.gen) {
      const ctrl = new AbortController();
      state.streamCtrl = ctrl;
      let watchdog = null;
      try {
        setStreamState('connecting');
        const q = state.cursor === null ? 'from=now' : 'after=' + state.cursor;
        const res = await fetch(apiURL('v1/events?' + q), {
          headers: { Authorization: 'Bearer ' + state.token, Accept: 'text/event-stream' },
          cache: 'no-store', credentials: 'omit', signal: ctrl.signal,
        });
        if (gen !== state.gen) return;
        if (res.status === 401) { signOut('The node refused the token. Sign in again.'); return; }
        if (!res.ok) throw new Error('HTTP ' + res.status);
        if (!res.body || typeof TextDecoderStream === 'undefined') {
          ctrl.abort();
          await longPoll(gen);
          return;
        }
        setStreamState('live');
        backoff = 1000;
        // The node writes a keep-alive every 15 s: silence means a dead link.
        const kick = () => { clearTimeout(watchdog); watchdog = setTimeout(() => ctrl.abort(), 45000); };
        kick();
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done || gen !== state.gen) break;
          kick();
          buf += value;
          let i;
          while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i).replace(/^\r?\n\r?\n/, '');
            sseBlock(block);
          }
        }
      } catch {
        // aborted or dropped: reconnect below
      } finally {
        clearTimeout(watchdog);
      }
      if (!state.token || gen !== state.gen) return;
      setStreamState('reconnecting');
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  async function longPoll(gen) {
    setStreamState('live');
    while (state.token && gen === state.gen) {
      try {
        const r = await call('v1/events?after=' + (state.cursor || 0) + '&wait=25s', { timeout: 40000 });
        if (gen !== state.gen) return;
        if (r.gap) addGap();
        for (const e of r.events || []) onEvent(e);
        state.cursor = Math.max(state.cursor || 0, r.next || 0);
        setStreamState('live');
      } catch (e) {
        if (e.status === 401 || gen !== state.gen) return;
        setStreamState('reconnecting');
        await sleep(3000);
      }
    }
  }

  function sseBlock(block) {
    let event = 'message';
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(':')) continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let v = c < 0 ? '' : line.slice(c + 1);
      if (v.startsWith(' ')) v = v.slice(1);
      if (field === 'event') event = v;
      else if (field === 'data') data.push(v);
    }
    if (event === 'gap') { addGap(); return; }
    if (event !== 'delivery' || !data.length) return;
    try { onEvent(JSON.parse(data.join('\n'))); } catch { /* not an event */ }
  }

  function addGap() {
    const list = $('events');
    list.prepend(el('li', { class: 'gap', text: 'Some older events were already trimmed by the node.' }));
  }

  function clientLink(uuid) {
    return el('a', { href: '#client/uuid/' + uuid, text: uuid, title: 'Look up this client' });
  }

  function onEvent(ev) {
    if (typeof ev.seq === 'number' && (state.cursor === null || ev.seq > state.cursor)) state.cursor = ev.seq;
    const list = $('events');
    const li = el('li', { 'data-seq': ev.seq, 'data-push': ev.pushId, 'data-fate': ev.fate },
      el('time', { class: 'ev-time', datetime: ev.at, title: ev.at, text: clock(ev.at) }),
      el('span', {}, badge(ev.fate)),
      el('span', { class: 'ev-what', text: ev.kind + ' · push #' + ev.pushId }),
      el('span', { class: 'ev-uuid' }, clientLink(ev.uuid)));
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
    $('events-empty').hidden = true;
    refreshCountersSoon();
    if (rank(ev.fate) >= rank(state.seen.get(ev.pushId))) {
      state.seen.delete(ev.pushId); // re-inserted last, so the oldest go first
      state.seen.set(ev.pushId, ev.fate);
      if (state.seen.size > 20000) state.seen.delete(state.seen.keys().next().value);
    }
    setFate(ev.pushId, ev.fate);
    if (state.client && state.client.uuid === ev.uuid) scheduleClientRefresh(300);
  }

  // ---------- push fates ----------

  // Keeps every badge showing a push's fate up to date. Fates only move
  // forward: queued, sent, then acknowledged, superseded or expired.
  function trackBadge(id, b) {
    let t = state.pushes.get(id);
    if (!t) {
      // An event can overtake the answer that names the push.
      const seen = state.seen.get(id);
      const fate = seen && rank(seen) > rank(b.dataset.fate) ? seen : b.dataset.fate;
      t = { fate, badges: new Set() };
      state.pushes.set(id, t);
    }
    t.badges.add(b);
    paint(b, t.fate);
  }

  const rank = (fate) => FATE_RANK[fate] ?? -1;

  function paint(b, fate) {
    b.dataset.fate = fate;
    b.textContent = fate;
  }

  function setFate(id, fate) {
    const t = state.pushes.get(id);
    if (!t) return;
    if (rank(fate) < rank(t.fate)) return;
    t.fate = fate;
    for (const b of t.badges) {
      if (!b.isConnected) t.badges.delete(b);
      else paint(b, fate);
    }
  }

  // Reads a push's fate now and then until it is final; the event stream
  // usually gets there first.
  async function watchPush(id, budgetMs = 10 * 60 * 1000) {
    const gen = state.gen;
    const until = Date.now() + budgetMs;
    let delay = 1000;
    for (;;) {
      try {
        const p = await call('v1/pushes/' + id);
        if (gen !== state.gen) return;
        setFate(id, p.fate);
        const t = state.pushes.get(id);
        if (t && !t.acceptedAt && p.acceptedAt) {
          t.acceptedAt = p.acceptedAt;
          for (const cell of document.querySelectorAll('#c-pending tr[data-push="' + id + '"] .pushed-at')) {
            cell.replaceChildren(timeEl(p.acceptedAt));
          }
        }
      } catch (e) {
        if (e.status === 404 || e.status === 401) return;
      }
      const t = state.pushes.get(id);
      if (gen !== state.gen || !t || TERMINAL.has(t.fate) || Date.now() + delay > until) return;
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
  }

  // ---------- message forms (single and bulk) ----------

  function setupMessageForm(form) {
    const grid = form.querySelector('.bitgrid');
    for (let i = 0; i < 64; i++) {
      const cb = el('input', { type: 'checkbox', value: i });
      grid.append(el('label', {}, cb, el('span', {}, el('span', { class: 'sr-only', text: 'bit ' }), String(i))));
    }
    grid.addEventListener('change', () => {
      let m = 0n;
      for (const cb of grid.querySelectorAll('input:checked')) m |= 1n << BigInt(cb.value);
      const mask = form.querySelector('.bits-mask');
      mask.value = '0x' + m.toString(16);
      mask.removeAttribute('aria-invalid');
    });
    form.querySelector('.bits-mask').addEventListener('input', (e) => {
      const m = parseMask(e.target.value);
      if (m === null) { e.target.setAttribute('aria-invalid', 'true'); return; }
      e.target.removeAttribute('aria-invalid');
      for (const cb of grid.querySelectorAll('input')) cb.checked = ((m >> BigInt(cb.value)) & 1n) === 1n;
    });
    form.querySelector('.bits-clear').addEventListener('click', () => setMask(form, 0n));
    for (const r of form.querySelectorAll('input[name="kind"]')) r.addEventListener('change', () => showKind(form));
    form.querySelector('.custom-data').addEventListener('input', () => updateCount(form));
    showKind(form);
    updateCount(form);
  }

  function parseMask(s) {
    s = s.trim();
    if (!/^(0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20})$/.test(s)) return null;
    const v = BigInt(s);
    return v <= MAX_MASK ? v : null;
  }

  function setMask(form, m) {
    form.querySelector('.bits-mask').value = '0x' + m.toString(16);
    form.querySelector('.bits-mask').removeAttribute('aria-invalid');
    for (const cb of form.querySelectorAll('.bitgrid input')) cb.checked = ((m >> BigInt(cb.value)) & 1n) === 1n;
  }

  function kindOf(form) {
    const r = form.querySelector('input[name="kind"]:checked');
    return r ? r.value : 'general';
  }

  function showKind(form) {
    const k = kindOf(form);
    form.querySelector('.kind-classified').hidden = k !== 'classified';
    form.querySelector('.kind-custom').hidden = k !== 'custom';
  }

  function updateCount(form) {
    const ta = form.querySelector('.custom-data');
    const n = encoder.encode(ta.value).length;
    const max = state.maxContent;
    const out = form.querySelector('.count');
    let text = n + ' / ' + max + ' bytes';
    if (n > max) text += ': ' + (n - max) + ' over this node\'s limit';
    out.textContent = text;
    out.dataset.over = String(n > max);
    if (n > max) ta.setAttribute('aria-invalid', 'true');
    else ta.removeAttribute('aria-invalid');
  }

  function showFormError(form, msg) {
    const e = form.querySelector('.form-error');
    e.textContent = msg || '';
    e.hidden = !msg;
  }

  // The message part of a push request, or an Error saying what is wrong.
  function readMessage(form) {
    const kind = kindOf(form);
    if (kind === 'classified') {
      const m = parseMask(form.querySelector('.bits-mask').value);
      if (m === null) throw new Error('The mask must be a 64-bit number, decimal or 0x hex.');
      if (m === 0n) throw new Error('Pick at least one bit.');
      return { kind, bits: '0x' + m.toString(16) };
    }
    if (kind === 'custom') {
      const data = form.querySelector('.custom-data').value;
      const n = encoder.encode(data).length;
      if (n === 0) throw new Error('A custom message needs at least one byte of text.');
      if (n > state.maxContent) throw new Error('The text is ' + n + ' bytes; this node takes at most ' + state.maxContent + '.');
      return { kind, data };
    }
    return { kind };
  }

  function describe(p) {
    if (p.kind === 'custom') return 'custom, ' + p.size + ' bytes';
    if (p.kind === 'classified') return 'classified, bits ' + p.bits;
    return p.kind;
  }

  // ---------- client lookup ----------

  async function onLookup(ev) {
    ev.preventDefault();
    const q = $('lookup-q').value.trim();
    if (!q) {
      show('lookup-error', 'Enter a user id or a uuid.');
      $('lookup-q').focus();
      return;
    }
    let by = $('lookup-by').value;
    if (by === 'auto') by = HEX32.test(q) ? 'uuid' : 'userId';
    history.replaceState(null, '', '#client/' + by + '/' + encodeURIComponent(q));
    await lookup(by, q);
  }

  async function lookup(by, q) {
    if (by === 'uuid') q = q.toLowerCase();
    state.client = { by, q, uuid: by === 'uuid' && HEX32.test(q) ? q : null };
    $('c-home-label').hidden = true;
    $('c-home').hidden = true;
    $('push-result').replaceChildren();
    $('push-history').replaceChildren();
    $('push-history-title').hidden = true;
    showFormError($('push-form'), '');
    await refreshClient();
  }

  function scheduleClientRefresh(ms) {
    clearTimeout(state.clientTimer);
    const gen = state.gen;
    state.clientTimer = setTimeout(() => { if (gen === state.gen) refreshClient(); }, ms);
  }

  async function refreshClient() {
    const c = state.client;
    if (!c) return;
    const seq = ++state.clientSeq;
    const path = c.by === 'uuid'
      ? 'v1/clients/' + encodeURIComponent(c.q)
      : 'v1/clients/?userId=' + encodeURIComponent(c.q);
    try {
      const info = await call(path);
      if (seq !== state.clientSeq || c !== state.client) return;
      c.uuid = info.uuid;
      show('lookup-error', '');
      renderClient(info, c);
      showHome(c, info.uuid);
    } catch (e) {
      if (seq !== state.clientSeq || c !== state.client) return;
      $('client-card').hidden = true;
      if (e.status === 404) {
        show('lookup-error', 'No client ' + (c.by === 'userId' ? 'for user id "' + c.q + '"' : c.q) +
          ' on this node. A push creates its record, and the message waits for the phone.');
      } else {
        show('lookup-error', 'Lookup failed: ' + e.message);
      }
      if (e.status !== 404 && e.status !== 0) { $('push-panel').hidden = true; return; }
    }
    renderTarget(c);
    // Heartbeat times and online state move on their own.
    if (state.view === 'client') scheduleClientRefresh(10000);
  }

  function renderTarget(c) {
    const t = $('push-target');
    t.textContent = c.by === 'userId' ? 'user ' + c.q : c.q;
    t.title = c.uuid ? 'uuid ' + c.uuid : '';
    $('push-panel').hidden = !(c.by === 'userId' || HEX32.test(c.q));
    if (c.by === 'uuid' && !HEX32.test(c.q)) {
      show('lookup-error', '"' + c.q + '" is not a uuid: a uuid is 32 hex characters.');
    }
  }

  function renderClient(info, c) {
    $('client-card').hidden = false;
    $('c-title').textContent = c.by === 'userId' ? 'User ' + c.q : 'Client';
    const on = $('c-online');
    on.dataset.online = String(!!info.online);
    on.textContent = info.online ? 'online' : 'offline';
    $('c-uuid').textContent = info.uuid;
    const byUser = c.by === 'userId';
    $('c-user-label').hidden = !byUser;
    $('c-user').hidden = !byUser;
    if (byUser) $('c-user').replaceChildren(c.q + ' ', el('span', { class: 'muted', text: '(the uuid is md5 of it)' }));
    $('c-transport').textContent = info.transport || (info.online ? '—' : 'none (offline)');
    $('c-heartbeat').replaceChildren(info.lastHeartbeat ? timeEl(info.lastHeartbeat) : 'never');
    $('c-address').textContent = info.address || '—';
    const act = [timeEl(info.lastActivity)];
    const hours = state.status && state.status.expiryAgeHours;
    if (hours > 0 && info.lastActivity) {
      const at = new Date(new Date(info.lastActivity).getTime() + hours * 3600e3);
      act.push(el('span', { class: 'muted', text: ' · removed if idle until ' + at.toLocaleString() }));
    }
    $('c-activity').replaceChildren(...act);
    $('c-mask').textContent = info.mask || '0x0';

    const pending = info.pending || [];
    $('c-nopending').hidden = pending.length > 0;
    $('c-pending').hidden = pending.length === 0;
    const rows = pending.map((p) => {
      let content;
      if (p.kind === 'custom') {
        const bytes = b64bytes(p.data);
        content = el('span', {}, el('span', { class: 'muted', text: p.size + ' bytes: ' }),
          el('span', { class: 'preview', text: preview(bytes) }));
      } else if (p.kind === 'classified') {
        content = el('span', { class: 'mono', text: p.bits + ' (' + bitsCount(p.bits) + ' bit' + (bitsCount(p.bits) === 1 ? '' : 's') + ')' });
      } else {
        content = el('span', { class: 'muted', text: 'a notice' });
      }
      const b = badge(p.sent ? 'sent' : 'queued');
      trackBadge(p.pushId, b);
      const known = state.pushes.get(p.pushId);
      if (!known.fetched) { known.fetched = true; watchPush(p.pushId, 0); }
      // The lookup gives every pending classified push the time of the
      // latest one; the push itself knows when it was accepted.
      return el('tr', { 'data-push': p.pushId },
        el('td', { 'data-label': 'Kind', text: p.kind }),
        el('td', { 'data-label': 'Push', class: 'mono', text: '#' + p.pushId }),
        el('td', { 'data-label': 'Pushed', class: 'pushed-at' }, timeEl(known.acceptedAt || p.at)),
        el('td', { 'data-label': 'Content' }, content),
        el('td', { 'data-label': 'Fate' }, b));
    });
    $('c-pending').tBodies[0].replaceChildren(...rows);
  }

  // In a PushNode of several pods, which pod keeps this client's record:
  // a lookup on another pod is relayed there, so the card alone does not
  // say. Hidden for a node without a slot map.
  async function showHome(c, uuid) {
    const hide = () => { $('c-home-label').hidden = true; $('c-home').hidden = true; };
    let o;
    try {
      o = await call('v1/slotmap/owner?uuid=' + encodeURIComponent(uuid));
    } catch {
      if (c === state.client) hide();
      return;
    }
    if (c !== state.client) return;
    if (!o || !o.epoch) { hide(); return; }
    const pod = podOfPeer(o.peer, o.ordinal);
    const where = o.ordinal === o.self ? 'this pod' : 'this pod (ordinal ' + o.self + ') relays to it';
    $('c-home').replaceChildren('ordinal ' + o.ordinal + (pod ? ', pod ' + pod : ''),
      el('span', { class: 'muted', text: ' · ' + where + ' · slot ' + o.slot }));
    $('c-home-label').hidden = false;
    $('c-home').hidden = false;
  }

  async function onPush(ev) {
    ev.preventDefault();
    const form = $('push-form');
    const c = state.client;
    if (!c) return;
    showFormError(form, '');
    let msg;
    try { msg = readMessage(form); } catch (e) { showFormError(form, e.message); return; }
    const body = Object.assign(c.uuid ? { uuid: c.uuid } : c.by === 'userId' ? { userId: c.q } : { uuid: c.q }, msg);
    const btn = $('push-submit');
    btn.disabled = true;
    try {
      const p = await call('v1/pushes', { method: 'POST', body });
      if (c !== state.client) return;
      renderPushResult(p);
      scheduleClientRefresh(200);
    } catch (e) {
      showFormError(form, 'The node did not take the push: ' + e.message);
    } finally {
      btn.disabled = false;
    }
  }

  function renderPushResult(p) {
    const b = badge(p.fate);
    b.id = 'push-result-fate';
    trackBadge(p.id, b);
    $('push-result').replaceChildren(el('p', { class: 'line', 'data-push': p.id },
      'Push ', el('strong', { text: '#' + p.id }), ' (' + describe(p) + ') accepted at ' + clock(p.acceptedAt) + '. Fate: ', b));
    const hb = badge(p.fate);
    trackBadge(p.id, hb);
    $('push-history-title').hidden = false;
    $('push-history').prepend(el('li', { 'data-push': p.id },
      el('span', { class: 'mono', text: '#' + p.id }), el('span', { text: describe(p) }),
      el('span', { class: 'muted', text: clock(p.acceptedAt) }), hb));
    watchPush(p.id);
  }

  // ---------- bulk push ----------

  function entriesMode() {
    const r = $('bulk-form').querySelector('input[name="entries"]:checked');
    return r ? r.value : 'uuid';
  }

  // uuids are split on any space, comma or semicolon; user ids, which may
  // hold those, are one per line.
  function parseTargets() {
    const text = $('b-targets').value;
    if (entriesMode() === 'userId') return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
    return text.split(/[\s,;]+/).filter(Boolean);
  }

  function updateTargetCount() {
    const n = parseTargets().length;
    const out = $('b-targets-count');
    out.textContent = n + ' target' + (n === 1 ? '' : 's') + (n > MAX_TARGETS ? ': more than the ' + MAX_TARGETS + ' one push may name' : '');
    out.dataset.over = String(n > MAX_TARGETS);
  }

  async function onBulk(ev) {
    ev.preventDefault();
    const form = $('bulk-form');
    showFormError(form, '');
    const targets = parseTargets();
    if (targets.length === 0) { showFormError(form, 'Paste at least one target.'); $('b-targets').focus(); return; }
    if (targets.length > MAX_TARGETS) { showFormError(form, 'At most ' + MAX_TARGETS + ' targets in one push.'); return; }
    let msg;
    try { msg = readMessage(form); } catch (e) { showFormError(form, e.message); return; }
    const mode = entriesMode();
    const body = Object.assign({}, msg);
    if (mode === 'uuid') body.uuids = targets;
    else if (mode === 'userId') body.userIds = targets;
    else {
      const u = targets.filter((t) => HEX32.test(t)), ids = targets.filter((t) => !HEX32.test(t));
      if (u.length) body.uuids = u;
      if (ids.length) body.userIds = ids;
    }
    const btn = $('bulk-submit');
    btn.disabled = true;
    try {
      const r = await call('v1/pushes/bulk', { method: 'POST', body, timeout: 120000 });
      renderBulk(r);
    } catch (e) {
      showFormError(form, 'The node did not take the push: ' + e.message);
    } finally {
      btn.disabled = false;
    }
  }

  function renderBulk(r) {
    $('bulk-result').hidden = false;
    $('b-accepted').textContent = fmtNum(r.accepted);
    $('b-rejected').textContent = fmtNum(r.rejected);
    const results = r.results || [];
    const refused = results.filter((x) => x.error);
    const ok = results.filter((x) => !x.error);
    $('b-refused-wrap').hidden = refused.length === 0;
    $('b-refused').tBodies[0].replaceChildren(...refused.map((x) => el('tr', {},
      el('td', { 'data-label': 'Target', class: 'mono', text: x.target }),
      el('td', { 'data-label': 'Why', text: x.error }))));
    $('b-accepted-wrap').hidden = ok.length === 0;
    $('b-accepted-list').tBodies[0].replaceChildren(...ok.slice(0, MAX_BULK_ROWS).map((x) => {
      const b = badge(x.fate);
      trackBadge(x.id, b);
      // A user id shows the uuid it stands for; a uuid links to its client.
      const target = x.target === x.uuid ? clientLink(x.uuid)
        : el('span', {}, x.target + ' ', el('span', { class: 'muted' }, '→ ', clientLink(x.uuid)));
      return el('tr', { 'data-push': x.id },
        el('td', { 'data-label': 'Target', class: 'mono' }, target),
        el('td', { 'data-label': 'Push', class: 'mono', text: '#' + x.id }),
        el('td', { 'data-label': 'Fate' }, b));
    }));
    show('b-accepted-more', ok.length > MAX_BULK_ROWS ? 'and ' + fmtNum(ok.length - MAX_BULK_ROWS) + ' more accepted' : '');
    $('bulk-result-title').focus();
  }

  // ---------- shards ----------

  // Reads the slot map; the peer links come from the status polls.
  async function loadShards() {
    const gen = state.gen;
    const seq = ++state.shardsSeq;
    let m;
    try {
      m = await call('v1/slotmap');
    } catch (e) {
      if (gen !== state.gen || seq !== state.shardsSeq) return;
      if (e.status !== 404) {
        show('shards-error', 'Cannot read the slot map: ' + e.message);
        return;
      }
      // A node without a map says so with a 404 naming its ordinal; a node
      // from before slot maps has no such endpoint and is not sharded either.
      m = { none: true, self: e.data && typeof e.data.self === 'number' ? e.data.self : null };
    }
    if (gen !== state.gen || seq !== state.shardsSeq) return;
    state.slotmap = m;
    show('shards-error', '');
    renderShards();
  }

  // Called with each status while the view is open: a new epoch (or a map
  // given or taken away) reads the map again; otherwise only the links move.
  function followShards(st) {
    const m = state.slotmap;
    if (!m) return;
    const had = m.none ? null : m.epoch;
    const has = st.slotmap ? st.slotmap.epoch : null;
    if (had !== has) loadShards();
    else renderShards();
  }

  // The pod behind a peer address when the address is the pod's own DNS
  // name, as the operator writes it (<PushNode>-<ordinal>.<service>...:9977);
  // '' for an IP or any other name.
  function podOfPeer(addr, ordinal) {
    const host = String(addr || '').replace(/:\d+$/, '');
    if (!host || host.startsWith('[') || /^\d+(\.\d+){3}$/.test(host)) return '';
    const label = host.split('.')[0];
    const m = /.-(0|[1-9]\d{0,2})$/.exec(label);
    return m && Number(m[1]) === ordinal ? label : '';
  }

  function pct(slots) {
    return (100 * slots / NUM_SLOTS).toFixed(1) + '%';
  }

  function renderShards() {
    const m = state.slotmap;
    if (!m) return;
    const st = state.status || {};
    $('shards-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    $('shards-none').hidden = !m.none;
    $('shards-map').hidden = !!m.none;
    if (m.none) {
      const self = typeof m.self === 'number' ? m.self : st.ordinal;
      $('shards-none-detail').textContent = 'It holds no slot map, so it is the home of every uuid' +
        (typeof self === 'number' ? ' (this pod is ordinal ' + self + ')' : '') +
        '. A PushNode with one pod runs this way; with more, the operator gives every pod a map.';
      return;
    }
    const self = m.self;
    const per = new Map(); // ordinal -> {ranges, slots}
    const of = (o) => {
      if (!per.has(o)) per.set(o, { ranges: [], slots: 0 });
      return per.get(o);
    };
    for (const r of m.ranges || []) {
      const p = of(r.ordinal);
      p.ranges.push(r);
      p.slots += r.to - r.from + 1;
    }
    const peers = m.peers || {};
    for (const k of Object.keys(peers)) of(Number(k));
    of(self);
    const links = new Map((st.peers || []).map((p) => [p.ordinal, p]));
    for (const o of links.keys()) if (o !== self) of(o);

    const mine = of(self);
    $('sh-self').textContent = String(self);
    const selfPod = podOfPeer(peers[String(self)], self);
    $('sh-self-note').textContent = selfPod ? 'pod ' + selfPod : 'its ordinal in the PushNode';
    $('sh-epoch').textContent = fmtNum(m.epoch);
    $('sh-slots').textContent = fmtNum(mine.slots);
    $('sh-share').textContent = pct(mine.slots);
    const down = [...links.values()].filter((p) => !p.up).map((p) => p.ordinal).sort((a, b) => a - b);
    $('sh-links').textContent = links.size ? (links.size - down.length) + ' / ' + links.size + ' up' : '–';
    $('sh-links-note').textContent = !links.size ? 'this pod reports no links'
      : down.length ? 'down to ordinal ' + down.join(', ') : 'every link is up';

    // Neighbouring ranges of other pods alternate shades, so that two of
    // them side by side still show as two.
    const rects = (m.ranges || []).map((r, i) => {
      const cls = r.ordinal === self ? 'own' : 'other a' + (i % 2);
      const rect = svgEl('rect', { class: cls, x: r.from, y: 0, width: r.to - r.from + 1, height: 24, 'data-ordinal': r.ordinal });
      const title = svgEl('title', {});
      title.textContent = 'ordinal ' + r.ordinal + ': slots ' + r.from + '–' + r.to;
      rect.append(title);
      return rect;
    });
    $('sh-strip').replaceChildren(...rects);
    const owners = [...per.values()].filter((p) => p.slots > 0).length;
    $('sh-strip-summary').textContent = owners + ' pod' + (owners === 1 ? '' : 's') + ' own slots, in ' +
      (m.ranges || []).length + ' range' + ((m.ranges || []).length === 1 ? '' : 's');

    const rows = [...per.keys()].sort((a, b) => a - b).map((o) => {
      const p = per.get(o);
      const link = links.get(o);
      let b;
      if (o === self) b = el('span', { class: 'badge', 'data-link': 'self', text: 'this pod' });
      else if (link) {
        b = el('span', {}, el('span', { class: 'badge', 'data-link': link.up ? 'up' : 'down', text: link.up ? 'up' : 'down' }));
        // Why a link is down, as the pod last saw it.
        if (!link.up && link.lastError) b.append(el('span', { class: 'muted small link-error', title: link.lastError, text: link.lastError }));
      }
      else b = el('span', { class: 'badge', 'data-link': 'unknown', text: 'not reported' });
      const addr = peers[String(o)] || (link && link.addr) || '—';
      return el('tr', { 'data-ordinal': o, class: o === self ? 'self' : null },
        el('td', { 'data-label': 'Ordinal', class: 'mono' }, String(o),
          podOfPeer(peers[String(o)], o) ? el('span', { class: 'muted small pod', text: podOfPeer(peers[String(o)], o) }) : null),
        el('td', { 'data-label': 'Slots', text: fmtNum(p.slots) }),
        el('td', { 'data-label': 'Share', text: pct(p.slots) }),
        el('td', { 'data-label': 'Ranges', class: 'mono ranges' }, ...(p.ranges.length ? p.ranges.flatMap((r, i) =>
          [i ? ', ' : null, el('span', { text: r.from === r.to ? String(r.from) : r.from + '–' + r.to })]) : ['none'])),
        el('td', { 'data-label': 'Peer address', class: 'mono', text: addr }),
        el('td', { 'data-label': 'Link' }, b));
    });
    $('sh-table').tBodies[0].replaceChildren(...rows);
  }

  // ---------- start ----------

  function init() {
    $('bulk-result-title').tabIndex = -1;
    $('signin-form').addEventListener('submit', onSignIn);
    $('signout').addEventListener('click', () => signOut(''));
    $('lookup-form').addEventListener('submit', onLookup);
    $('client-refresh').addEventListener('click', () => refreshClient());
    $('push-form').addEventListener('submit', onPush);
    $('bulk-form').addEventListener('submit', onBulk);
    $('shards-refresh').addEventListener('click', () => loadShards());
    $('b-targets').addEventListener('input', updateTargetCount);
    for (const r of document.querySelectorAll('#bulk-form input[name="entries"]')) r.addEventListener('change', updateTargetCount);
    setupMessageForm($('push-form'));
    setupMessageForm($('bulk-form'));
    window.addEventListener('hashchange', route);
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) startSession(saved, null);
    else route();
    document.documentElement.dataset.ready = 'true';
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
