// strata console: plain JS, no framework, nothing from the network but the
// admin API of the control plane that serves this page. Charts are SVG
// drawn here. All text goes in through textContent (no innerHTML): names,
// labels and messages come from manifests, metrics and logs.
'use strict';

const REFRESH_MS = 5000;
const RANGE_S = 15 * 60;   // charts: the last 15 minutes
const STEP_S = 15;         // 60 points per chart
const TOKEN_KEY = 'strata.admin.token';

const Q = {
  rate: 'sum by (service) (rate(strata_http_requests_total{job="app"}[1m]))',
  // 0 (not "no data") for a service without any 5xx series
  err: '(sum by (service) (rate(strata_http_requests_total{job="app",code=~"5.."}[1m]))' +
       ' or 0 * sum by (service) (rate(strata_http_requests_total{job="app"}[1m])))' +
       ' / sum by (service) (rate(strata_http_requests_total{job="app"}[1m]))',
  p99: 'histogram_quantile(0.99, sum by (service, le) (rate(strata_http_request_duration_seconds_bucket{job="app"}[1m])))',
  // sidecars' outbound side: who calls whom (source and destination are
  // the app label / Service name), by status class
  mesh: 'sum by (source_workload, destination_workload, code_class) ' +
        '(rate(strata_mesh_requests_total{direction="outbound"}[1m]))',
  // the gateway to each cluster (a Service), by status class
  gw: 'sum by (cluster, code_class) (rate(strata_proxy_upstream_requests_total{job="gateway"}[1m]))',
  // clients to the gateway
  ingress: 'sum by (code_class) (rate(strata_proxy_requests_total{job="gateway"}[1m]))',
  alerts: 'ALERTS{alertstate="firing"}',
};

// ---- tiny DOM helpers ------------------------------------------------------

const $ = (id) => document.getElementById(id);
const SVGNS = 'http://www.w3.org/2000/svg';

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    e.setAttribute(k, String(v));
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function replace(el, ...kids) {
  el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}

const empty = (text) => h('div', { class: 'empty' }, text);

// ---- formatting --------------------------------------------------------------

function fmtRate(v) {
  if (!isFinite(v) || v <= 0) return '0/s';
  if (v < 0.01) return '<0.01/s';
  if (v < 10) return v.toFixed(2) + '/s';
  if (v < 100) return v.toFixed(1) + '/s';
  return Math.round(v) + '/s';
}

function fmtPct(v) {
  if (!isFinite(v) || v <= 0) return '0%';
  if (v < 0.001) return '<0.1%';
  return (v * 100).toFixed(v < 0.1 ? 1 : 0) + '%';
}

function fmtMs(sec) {
  if (!isFinite(sec)) return '–';
  const ms = sec * 1000;
  if (ms < 1) return ms.toFixed(2) + ' ms';
  if (ms < 100) return ms.toFixed(1) + ' ms';
  if (ms < 10000) return Math.round(ms) + ' ms';
  return (ms / 1000).toFixed(1) + ' s';
}

function fmtAge(epochSec) {
  if (!epochSec) return '–';
  const d = Math.max(0, Date.now() / 1000 - epochSec);
  if (d < 60) return Math.round(d) + 's';
  if (d < 3600) return Math.round(d / 60) + 'm';
  if (d < 86400) return (d / 3600).toFixed(1) + 'h';
  return (d / 86400).toFixed(1) + 'd';
}

function fmtClock(epochSec) {
  const t = new Date(epochSec * 1000);
  return t.toLocaleTimeString([], { hour12: false });
}

const shortVer = (v) => (v ? String(v).slice(0, 10) : '–');

function errClass(ratio, rate) {
  if (!(rate > 0)) return 'idle';
  if (ratio >= 0.05) return 'bad';
  if (ratio >= 0.01) return 'warn';
  return 'ok';
}

// ---- the admin API -----------------------------------------------------------

function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    // out of the address bar (and of the history)
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const tok = sessionStorage.getItem(TOKEN_KEY);
  const r = await fetch(path, { headers: { Authorization: 'Bearer ' + tok }, cache: 'no-store' });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const msg = body && body.error && body.error.message ? body.error.message : r.statusText;
    throw new HttpError(r.status, path.split('?')[0] + ': ' + r.status + ' ' + msg);
  }
  return body;
}

async function prom(query) {
  const j = await api('/v1/prom/query?query=' + encodeURIComponent(query));
  return (j && j.data && j.data.result) || [];
}

async function promRange(query, start, end, step) {
  const j = await api('/v1/prom/query_range?query=' + encodeURIComponent(query) +
    '&start=' + start + '&end=' + end + '&step=' + step);
  return (j && j.data && j.data.result) || [];
}

// instant vector → { key: value } keyed by one label
function byLabel(result, label) {
  const out = {};
  for (const r of result) out[r.metric[label] || ''] = parseFloat(r.value[1]);
  return out;
}

// ---- topology ----------------------------------------------------------------

const isErrClass = (c) => c === '5xx' || c === 'none';

// edges: [{from, to, rate, err}] from the mesh, gateway and ingress series
function buildEdges(mesh, gw, ingress) {
  const m = new Map();
  const add = (from, to, cls, v) => {
    if (!from || !to || !isFinite(v)) return;
    const k = from + '\u2192' + to;
    const e = m.get(k) || { from, to, rate: 0, errs: 0 };
    e.rate += v;
    if (isErrClass(cls)) e.errs += v;
    m.set(k, e);
  };
  for (const r of mesh) add(r.metric.source_workload, r.metric.destination_workload, r.metric.code_class, parseFloat(r.value[1]));
  for (const r of gw) add('gateway', r.metric.cluster, r.metric.code_class, parseFloat(r.value[1]));
  for (const r of ingress) add('clients', 'gateway', r.metric.code_class, parseFloat(r.value[1]));
  const edges = [...m.values()].filter((e) => e.to !== 'unknown');
  for (const e of edges) e.err = e.rate > 0 ? e.errs / e.rate : 0;
  edges.sort((a, b) => (a.from + a.to).localeCompare(b.from + b.to));
  return edges;
}

// columns by longest path from the sources (cycles cut after n rounds)
function layout(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const e of edges) {
      if (e.from === e.to) continue;
      const d = depth.get(e.from) + 1;
      if (d > depth.get(e.to) && d < nodes.length) { depth.set(e.to, d); changed = true; }
    }
    if (!changed) break;
  }
  const cols = [];
  for (const n of nodes) (cols[depth.get(n)] = cols[depth.get(n)] || []).push(n);
  return cols.filter(Boolean);
}

function renderTopology(st) {
  const svcNames = new Set(Object.keys(st.rate));
  for (const e of st.edges) { svcNames.add(e.from); svcNames.add(e.to); }
  svcNames.delete('');
  const nodes = [...svcNames].sort();
  if (!nodes.length) {
    replace($('topology'), empty(st.promError ? 'no metrics: ' + st.promError : 'no traffic seen yet'));
    replace($('edges'));
    return;
  }
  const cols = layout(nodes, st.edges);
  const NW = 170, NH = 46, COLW = 290, ROWH = 74, PAD = 14;
  const rows = Math.max(...cols.map((c) => c.length));
  const W = PAD * 2 + (cols.length - 1) * COLW + NW;
  const pos = new Map();
  cols.forEach((col, ci) => {
    const off = ((rows - col.length) * ROWH) / 2;
    col.forEach((n, ri) => pos.set(n, { x: PAD + ci * COLW, y: PAD + off + ri * ROWH, col: ci }));
  });
  // Edges between neighbouring columns are S-curves; the others (skipping
  // a column, within one, or backwards) arc below the nodes, deeper the
  // further they go, so that they never cross a box.
  const arcDepth = (a, b) => 34 + 26 * Math.max(0, Math.abs(b.col - a.col) - 1);
  const arcs = st.edges.map((e) => [pos.get(e.from), pos.get(e.to)]).filter(([a, b]) => a && b && b.col - a.col !== 1);
  const below = Math.max(0, ...arcs.map(([a, b]) => Math.max(a.y, b.y) + NH + 0.75 * arcDepth(a, b) + 10));
  const H = Math.max(PAD * 2 + (rows - 1) * ROWH + NH, below);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'service topology' });
  svg.setAttribute('height', String(Math.min(H, 460)));
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z' }))));
  for (const e of st.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    let d, lx, ly;
    if (e.from === e.to) {
      d = `M${a.x + NW - 30},${a.y} c 20,-30 50,-10 30,10`;
      lx = a.x + NW; ly = a.y - 6;
    } else if (b.col - a.col === 1) {
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, c = (x2 - x1) / 2;
      d = `M${x1},${y1} C${x1 + c},${y1} ${x2 - c},${y2} ${x2},${y2}`;
      lx = (x1 + x2) / 2; ly = (y1 + y2) / 2;
    } else {
      const dep = arcDepth(a, b), x1 = a.x + NW / 2 + 12, x2 = b.x + NW / 2 - 12;
      const y1 = a.y + NH, y2 = b.y + NH, yc = Math.max(y1, y2) + dep;
      d = `M${x1},${y1} C${x1},${yc} ${x2},${yc} ${x2},${y2}`;
      lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 + 0.75 * (yc - (y1 + y2) / 2);
    }
    const label = fmtRate(e.rate) + ' \u00b7 ' + fmtPct(e.err);
    const lw = label.length * 6.4 + 8;
    svg.append(s('g', { class: 'edge ' + errClass(e.err, e.rate), 'data-edge': e.from + '\u2192' + e.to },
      s('title', {}, `${e.from} \u2192 ${e.to}: ${fmtRate(e.rate)}, ${fmtPct(e.err)} errors`),
      s('path', { d, 'marker-end': 'url(#arrow)' }),
      s('rect', { class: 'label', x: lx - lw / 2, y: ly - 9, width: lw, height: 14, rx: 3 }),
      s('text', { x: lx, y: ly + 2, 'text-anchor': 'middle' }, label)));
  }
  for (const n of nodes) {
    const p = pos.get(n);
    const rate = st.rate[n], err = st.err[n], p99 = st.p99[n];
    const stat = rate !== undefined ? `${fmtRate(rate)}  ${fmtPct(err)}  p99 ${fmtMs(p99)}` : '';
    svg.append(s('g', { class: 'node' + (n === 'gateway' || n === 'clients' ? ' gw' : ''), 'data-node': n },
      s('rect', { x: p.x, y: p.y, width: NW, height: NH, rx: 6 }),
      s('text', { class: 'name', x: p.x + 8, y: p.y + 18 }, n),
      s('text', { class: 'stat', x: p.x + 8, y: p.y + 36 }, stat)));
  }
  replace($('topology'), svg);
  const t = $('edges');
  replace(t, h('tr', {}, h('th', {}, 'edge'), h('th', { class: 'num' }, 'requests'), h('th', { class: 'num' }, 'errors')),
    st.edges.map((e) => h('tr', { class: 'edge', 'data-edge': e.from + '\u2192' + e.to },
      h('td', {}, e.from + ' \u2192 ' + e.to),
      h('td', { class: 'num', 'data-rate': e.rate }, fmtRate(e.rate)),
      h('td', { class: 'num ' + errClass(e.err, e.rate) }, fmtPct(e.err)))));
}

// ---- RED charts ----------------------------------------------------------------

function chart(kind, title, points, fmt, start, end) {
  const W = 200, H = 44;
  const vals = points.map((p) => p[1]).filter(isFinite);
  const max = Math.max(kind === 'err' ? 0.01 : 1e-9, ...vals);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none' });
  const xy = points.filter((p) => isFinite(p[1]))
    .map((p) => [((p[0] - start) / (end - start)) * W, H - 2 - (p[1] / max) * (H - 4)]);
  if (xy.length) {
    if (xy.length === 1) xy.unshift([Math.max(0, xy[0][0] - 4), xy[0][1]]);
    const line = xy.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ');
    svg.append(s('polygon', { class: 'area', points: `${xy[0][0].toFixed(1)},${H} ${line} ${xy[xy.length - 1][0].toFixed(1)},${H}` }),
      s('polyline', { points: line }));
  }
  const last = vals.length ? vals[vals.length - 1] : NaN;
  return h('div', { class: 'chart ' + kind, title: vals.length ? `${title}: now ${fmt(last)}, top of the chart ${fmt(max)}` : title },
    h('div', { class: 'title' }, h('span', {}, title), h('span', { class: 'num' }, vals.length ? fmt(last) : 'no data')),
    svg, h('div', { class: 'scale num' }, vals.length ? 'max ' + fmt(max) : ''));
}

function series(result, label) {
  const out = {};
  for (const r of result) out[r.metric[label] || ''] = r.values.map((v) => [v[0], parseFloat(v[1])]);
  return out;
}

function renderServices(st) {
  const names = [...new Set([...Object.keys(st.rate), ...Object.keys(st.ranges.rate || {})])].filter(Boolean).sort();
  if (!names.length) {
    replace($('services'), empty(st.promError ? 'no metrics: ' + st.promError : 'no requests recorded yet'));
    return;
  }
  // The x axis spans the data when there is less than the range (a
  // platform just started): a few points fill the chart, not its last pixel.
  const firsts = Object.values(st.ranges.rate || {}).filter((v) => v.length).map((v) => v[0][0]);
  const x0 = firsts.length ? Math.max(st.start, Math.min(st.end - 120, ...firsts)) : st.start;
  replace($('services'), names.map((n) => {
    const rate = st.rate[n] || 0, err = st.err[n], p99 = st.p99[n];
    return h('div', { class: 'svc', 'data-service': n },
      h('div', { class: 'head' }, h('b', {}, n),
        h('span', { class: 'num rate', 'data-rate': rate }, fmtRate(rate)),
        h('span', { class: 'num ' + errClass(err || 0, rate) }, fmtPct(err || 0) + ' errors'),
        h('span', { class: 'num' }, 'p99 ' + fmtMs(p99))),
      h('div', { class: 'charts' },
        chart('rate', 'rate', (st.ranges.rate || {})[n] || [], fmtRate, x0, st.end),
        chart('err', 'errors', (st.ranges.err || {})[n] || [], fmtPct, x0, st.end),
        chart('lat', 'p99', (st.ranges.p99 || {})[n] || [], fmtMs, x0, st.end)));
  }));
}

// ---- workloads and rollouts ----------------------------------------------------

function renderWorkloads(status) {
  const t = $('workloads');
  const wl = (status && status.workloads) || [];
  if (!wl.length) { replace(t, h('tr', {}, h('td', {}, empty('no workloads')))); return; }
  const rows = [h('tr', {}, h('th', {}, 'workload / replica'), h('th', {}, 'ready'), h('th', {}, 'phase'),
    h('th', { class: 'num' }, 'restarts'), h('th', {}, 'version'), h('th', {}, 'rollout / address'), h('th', { class: 'num' }, 'age'))];
  for (const w of wl) {
    const full = w.ready >= w.replicas;
    const ro = w.rollout || {};
    rows.push(h('tr', { class: 'workload', 'data-workload': w.name },
      h('td', {}, h('b', {}, w.name), w.gateway ? h('span', { class: 'muted' }, ' gateway') : null,
        w.deleted ? h('span', { class: 'pill bad' }, 'deleted') : null),
      h('td', { class: 'num ' + (full ? 'ok' : 'warn') }, `${w.ready}/${w.replicas}`),
      h('td', {}, ''),
      h('td', { class: 'num ' + (w.restarts > 0 ? 'warn' : '') }, String(w.restarts)),
      h('td', { class: 'mono' }, shortVer(w.version)),
      h('td', {}, ro.complete ? h('span', { class: 'ok' }, 'complete')
        : h('span', { class: 'warn' }, `${ro.updated}/${w.replicas} updated, ${ro.old} old`)),
      h('td', {}, '')));
    for (const p of w.pods || []) {
      rows.push(h('tr', { class: 'pod', 'data-replica': p.name },
        h('td', { class: 'mono' }, p.name),
        h('td', { class: p.ready ? 'ok' : 'warn' }, p.ready ? 'ready' : 'not ready'),
        h('td', {}, p.phase || ''),
        h('td', { class: 'num ' + (p.restarts > 0 ? 'warn' : '') }, String(p.restarts || 0)),
        h('td', { class: 'mono' + (p.version !== w.version ? ' warn' : '') }, shortVer(p.version)),
        h('td', { class: 'mono muted' }, p.address || ''),
        h('td', { class: 'num' }, fmtAge(p.started))));
    }
  }
  replace(t, rows);
}

function renderRollouts(status) {
  const wl = ((status && status.workloads) || []).filter((w) => w.rollout && !w.rollout.complete);
  if (!wl.length) { replace($('rollouts'), empty('no rollout in progress')); return; }
  replace($('rollouts'), wl.map((w) => {
    const frac = w.replicas > 0 ? Math.min(1, w.rollout.updated / w.replicas) : 0;
    return h('div', { class: 'rollout', 'data-workload': w.name },
      h('div', {}, h('b', {}, w.name), ` ${w.rollout.updated}/${w.replicas} updated, ${w.rollout.old} old, ${w.ready} ready`),
      h('div', { class: 'bar' }, s('svg', { viewBox: '0 0 100 8', preserveAspectRatio: 'none' },
        s('rect', { class: 'done', x: 0, y: 0, width: (frac * 100).toFixed(1), height: 8 }))));
  }));
}

// ---- alerts ----------------------------------------------------------------------

// Firing alerts from Prometheus (ALERTS) and notifications recorded by the
// control plane's Alertmanager webhook (/v1/alerts), whichever exist.
function normAlerts(j) {
  const list = Array.isArray(j) ? j : (j && (j.alerts || j.notifications || j.items)) || [];
  return list.map((a) => {
    const labels = a.labels || {};
    const ann = a.annotations || {};
    return {
      name: labels.alertname || a.alertname || a.name || 'alert',
      severity: labels.severity || a.severity || '',
      status: a.status || a.state || 'firing',
      since: a.startsAt || a.starts_at || a.since || a.time || '',
      text: ann.summary || ann.description || a.summary || a.message || '',
      labels,
    };
  });
}

function renderAlerts(st) {
  const items = [];
  const seen = new Set();
  for (const r of st.promAlerts || []) {
    const l = r.metric;
    seen.add(l.alertname);
    items.push({ name: l.alertname, severity: l.severity || '', status: 'firing', since: '', text: '', labels: l, src: 'Prometheus' });
  }
  for (const a of st.alerts || []) {
    if (a.status === 'resolved' || seen.has(a.name)) continue;
    items.push({ ...a, src: 'Alertmanager' });
  }
  const el = $('alerts');
  if (!items.length) {
    replace(el, empty(st.alertsError ? 'no alerts (' + st.alertsError + ')' : 'no alerts firing'));
    return;
  }
  replace(el, items.map((a) => {
    const where = Object.entries(a.labels || {})
      .filter(([k]) => !['__name__', 'alertname', 'alertstate', 'severity'].includes(k))
      .map(([k, v]) => `${k}=${v}`).join(' ');
    return h('div', { class: 'alert ' + a.severity, 'data-alert': a.name },
      h('div', {}, h('span', { class: 't' }, a.name), ' ', a.severity ? h('span', { class: 'pill' }, a.severity) : null,
        ' ', h('span', { class: 'muted' }, a.status + (a.since ? ' since ' + a.since : ''))),
      a.text ? h('div', {}, a.text) : null,
      where ? h('div', { class: 'mono muted' }, where) : null);
  }));
}

// ---- traces ------------------------------------------------------------------------

// Times arrive as epoch numbers (s, ms, µs or ns) or OTLP's decimal strings
// of nanoseconds: everything becomes milliseconds.
function toMs(v) {
  if (v === undefined || v === null || v === '') return NaN;
  if (typeof v === 'string' && !/^\d+(\.\d+)?$/.test(v)) return Date.parse(v);
  const n = Number(v);
  if (n > 1e17) return n / 1e6;
  if (n > 1e14) return n / 1e3;
  if (n > 1e11) return n;
  return n * 1000;
}

function attrsOf(list) {
  const o = {};
  for (const a of list || []) {
    const v = a.value || {};
    o[a.key] = v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue ?? '';
  }
  return o;
}

// spans of one trace, flat: {id, parent, name, service, start, end (ms), error}
function normSpans(j) {
  const out = [];
  const rs = (j && (j.resourceSpans || (j.trace && j.trace.resourceSpans))) || null;
  if (rs) {
    for (const r of rs) {
      const svc = attrsOf(r.resource && r.resource.attributes)['service.name'] || '';
      for (const ss of r.scopeSpans || r.instrumentationLibrarySpans || []) {
        for (const sp of ss.spans || []) {
          out.push({ id: sp.spanId, parent: sp.parentSpanId || '', name: sp.name, service: svc,
            start: toMs(sp.startTimeUnixNano), end: toMs(sp.endTimeUnixNano),
            error: sp.status && (sp.status.code === 2 || sp.status.code === 'STATUS_CODE_ERROR') });
        }
      }
    }
    return out;
  }
  const spans = Array.isArray(j) ? j : (j && (j.spans || (j.trace && j.trace.spans))) || [];
  for (const sp of spans) {
    const start = toMs(sp.start_time_unix_nano ?? sp.startTimeUnixNano ?? sp.start_ns ?? sp.start_us ?? sp.start_ms ??
      sp.start_time ?? sp.start ?? sp.timestamp);
    let end = toMs(sp.end_time_unix_nano ?? sp.endTimeUnixNano ?? sp.end_ns ?? sp.end_us ?? sp.end_ms ?? sp.end_time ?? sp.end);
    if (!isFinite(end)) {
      const dur = sp.duration_ms ?? (sp.duration_us !== undefined ? sp.duration_us / 1e3 : undefined) ??
        (sp.duration_ns !== undefined ? sp.duration_ns / 1e6 : undefined) ?? sp.duration;
      end = start + Number(dur || 0);
    }
    const st = sp.status;
    out.push({ id: sp.span_id ?? sp.spanId ?? sp.id, parent: sp.parent_span_id ?? sp.parentSpanId ?? sp.parent_id ?? sp.parent ?? '',
      name: sp.name || '', service: sp.service ?? sp.service_name ?? (sp.resource && sp.resource['service.name']) ?? '',
      start, end, error: st === 'error' || st === 'ERROR' || st === 2 || (st && (st.code === 2 || st.code === 'error')) || !!sp.error });
  }
  return out;
}

const count = (x) => (Array.isArray(x) ? x.length : x);

function normTraceList(j) {
  const list = Array.isArray(j) ? j : (j && (j.traces || j.items)) || [];
  return list.map((t) => {
    const start = toMs(t.start_time_unix_nano ?? t.start_ns ?? t.start_ms ?? t.start_time ?? t.start ?? t.time);
    let dur = t.duration_ms ?? (t.duration_us !== undefined ? t.duration_us / 1e3 : undefined) ??
      (t.duration_ns !== undefined ? t.duration_ns / 1e6 : undefined) ?? t.duration;
    if (dur === undefined && t.end !== undefined) dur = toMs(t.end) - start;
    return { id: t.trace_id ?? t.traceId ?? t.id, name: t.root_name ?? t.name ?? t.root ?? (t.root_span && t.root_span.name) ?? '',
      service: t.root_service ?? t.service ?? (t.root_span && t.root_span.service) ?? '',
      start, dur: Number(dur), spans: count(t.span_count ?? t.spans ?? t.nspans ?? ''), error: !!(t.error || t.errors) };
  }).filter((t) => t.id);
}

let selectedTrace = null;

function renderTraceList(st) {
  const el = $('traces');
  if (st.tracesError || !st.traces.length) {
    replace(el, empty(st.tracesError && st.tracesError.status !== 404 ? 'traces: ' + st.tracesError.message : 'no traces yet'));
    replace($('waterfall'));
    return;
  }
  const list = st.traces.slice(0, 12);
  if (!selectedTrace || !list.some((t) => t.id === selectedTrace)) selectedTrace = list[0].id;
  replace(el, h('table', { class: 'dense' },
    h('tr', {}, h('th', {}, 'time'), h('th', {}, 'root'), h('th', {}, 'service'), h('th', { class: 'num' }, 'spans'),
      h('th', { class: 'num' }, 'duration'), h('th', {}, 'trace id')),
    list.map((t) => h('tr', { class: 'clickable' + (t.id === selectedTrace ? ' selected' : ''), 'data-trace': t.id,
      onclick: () => { selectedTrace = t.id; refresh(); } },
      h('td', { class: 'num' }, isFinite(t.start) ? fmtClock(t.start / 1000) : ''),
      h('td', { class: t.error ? 'bad' : '' }, t.name), h('td', {}, t.service),
      h('td', { class: 'num' }, String(t.spans)), h('td', { class: 'num' }, isFinite(t.dur) ? fmtMs(t.dur / 1000) : ''),
      h('td', { class: 'mono muted' }, String(t.id).slice(0, 16))))));
}

function renderWaterfall(spans, id) {
  const el = $('waterfall');
  if (!spans || !spans.length) { replace(el, id ? empty('trace ' + id + ': no spans') : null); return; }
  const byId = new Map(spans.map((sp) => [sp.id, sp]));
  const kids = new Map();
  const roots = [];
  for (const sp of spans) {
    if (sp.parent && byId.has(sp.parent)) (kids.get(sp.parent) || kids.set(sp.parent, []).get(sp.parent)).push(sp);
    else roots.push(sp);
  }
  const order = [];
  const walk = (sp, depth) => {
    if (order.length > 500) return;
    order.push([sp, depth]);
    for (const k of (kids.get(sp.id) || []).sort((a, b) => a.start - b.start)) walk(k, depth + 1);
  };
  for (const r of roots.sort((a, b) => a.start - b.start)) walk(r, 0);
  const t0 = Math.min(...spans.map((sp) => sp.start).filter(isFinite));
  const t1 = Math.max(...spans.map((sp) => sp.end).filter(isFinite));
  const total = Math.max(t1 - t0, 0.001);
  const services = new Set(spans.map((sp) => sp.service).filter(Boolean));
  replace(el, h('div', { class: 'wf', 'data-trace': id },
    h('div', { class: 'hdr' }, `trace ${id} \u00b7 ${spans.length} spans \u00b7 ${services.size} services \u00b7 ${fmtMs(total / 1000)}`),
    order.map(([sp, depth]) => {
      const x = ((sp.start - t0) / total) * 100, w = Math.max(((sp.end - sp.start) / total) * 100, 0.3);
      const label = h('div', { class: 'label' }, h('span', { class: 'svcname' }, sp.service ? sp.service + ' ' : ''), sp.name);
      label.style.paddingLeft = depth * 12 + 'px';
      return h('div', { class: 'wf-row' }, label,
        s('svg', { viewBox: '0 0 100 12', preserveAspectRatio: 'none' },
          s('rect', { class: 'track', x: 0, y: 0, width: 100, height: 12 }),
          s('rect', { class: 'span' + (sp.error ? ' error' : ''), x: x.toFixed(2), y: 1, width: w.toFixed(2), height: 10 })),
        h('div', { class: 'num' }, fmtMs((sp.end - sp.start) / 1000)));
    })));
}

// ---- events ----------------------------------------------------------------------

function renderEvents(j) {
  const ev = ((j && j.events) || []).slice(-40).reverse();
  const t = $('events');
  if (!ev.length) { replace(t, h('tr', {}, h('td', {}, empty('no events')))); return; }
  replace(t, ev.map((e) => h('tr', {},
    h('td', { class: 'num muted' }, fmtClock(e.time)),
    h('td', {}, h('b', {}, e.object)),
    h('td', { class: /fail|error|crash|kill|backoff|unhealthy/i.test(e.reason) ? 'bad' : '' }, e.reason),
    h('td', {}, e.message))));
}

// ---- the refresh loop ------------------------------------------------------------

const settle = (p) => p.then((v) => ({ ok: true, v }), (e) => ({ ok: false, e }));

let timer = null;
let running = false;

async function refresh() {
  if (running) return;
  running = true;
  clearTimeout(timer);
  const problems = [];
  try {
    const end = Math.floor(Date.now() / 1000), start = end - RANGE_S;
    const [status, events, alerts, traces, rate, err, p99, mesh, gw, ingress, pa, rRate, rErr, rP99] = await Promise.all([
      settle(api('/v1/status')), settle(api('/v1/events')), settle(api('/v1/alerts')), settle(api('/v1/traces')),
      settle(prom(Q.rate)), settle(prom(Q.err)), settle(prom(Q.p99)), settle(prom(Q.mesh)), settle(prom(Q.gw)),
      settle(prom(Q.ingress)), settle(prom(Q.alerts)),
      settle(promRange(Q.rate, start, end, STEP_S)), settle(promRange(Q.err, start, end, STEP_S)),
      settle(promRange(Q.p99, start, end, STEP_S)),
    ]);
    if (!status.ok && status.e.status === 401) { showLogin('The token was refused (a new one is made at each start).'); return; }

    if (status.ok) {
      const st = status.v;
      const wl = st.workloads || [];
      const ready = wl.reduce((a, w) => a + (w.ready || 0), 0), want = wl.reduce((a, w) => a + (w.replicas || 0), 0);
      replace($('summary'), h('b', { class: st.ready ? 'ok' : 'warn' }, st.ready ? 'ready' : 'not ready'),
        ` \u00b7 ${wl.length} workloads \u00b7 ${ready}/${want} replicas ready \u00b7 manifests ${shortVer(st.version)}`);
      renderWorkloads(st);
      renderRollouts(st);
    } else problems.push(status.e.message);
    if (events.ok) renderEvents(events.v);

    const firstPromErr = [rate, mesh].find((x) => !x.ok);
    const promError = firstPromErr ? firstPromErr.e.message : '';
    if (promError) problems.push(promError);
    const topo = {
      rate: rate.ok ? byLabel(rate.v, 'service') : {},
      err: err.ok ? byLabel(err.v, 'service') : {},
      p99: p99.ok ? byLabel(p99.v, 'service') : {},
      edges: buildEdges(mesh.ok ? mesh.v : [], gw.ok ? gw.v : [], ingress.ok ? ingress.v : []),
      promError,
      ranges: { rate: rRate.ok ? series(rRate.v, 'service') : {}, err: rErr.ok ? series(rErr.v, 'service') : {},
        p99: rP99.ok ? series(rP99.v, 'service') : {} },
      start, end,
    };
    renderTopology(topo);
    renderServices(topo);

    renderAlerts({ promAlerts: pa.ok ? pa.v : [], alerts: alerts.ok ? normAlerts(alerts.v) : [],
      alertsError: alerts.ok || alerts.e.status === 404 ? '' : alerts.e.message });

    const tl = traces.ok ? normTraceList(traces.v) : [];
    renderTraceList({ traces: tl, tracesError: traces.ok ? null : traces.e });
    if (tl.length && selectedTrace) {
      const one = await settle(api('/v1/traces/' + encodeURIComponent(selectedTrace)));
      renderWaterfall(one.ok ? normSpans(one.v) : [], selectedTrace);
    }
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString([], { hour12: false });
  } catch (e) {
    problems.push(String(e && e.message ? e.message : e));
  } finally {
    $('problems').textContent = problems.join(' \u00b7 ');
    running = false;
    if (sessionStorage.getItem(TOKEN_KEY)) timer = setTimeout(refresh, REFRESH_MS);
  }
}

function showLogin(why) {
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  $('main').hidden = true;
  $('login').hidden = false;
  if (why) $('login-why').textContent = why;
  $('summary').textContent = 'no token';
}

function start() {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('login-token').value.trim();
    if (!v) return;
    sessionStorage.setItem(TOKEN_KEY, v);
    $('login-token').value = '';
    $('login').hidden = true;
    $('main').hidden = false;
    refresh();
  });
  if (!takeToken()) { showLogin(); return; }
  $('main').hidden = false;
  refresh();
}

start();
