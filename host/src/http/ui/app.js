// Sonde's web page: the service map, golden metrics per service, incidents and their reports,
// plugins. Plain JavaScript and SVG, no dependencies. It reads only the JSON API (relative
// URLs: `api/map`, `api/series`, …), so the same file works behind a hub that serves those
// shapes under a prefix. Every string from the API is escaped before it reaches the DOM: names,
// routes and log templates come from captured traffic.
'use strict';

const POLL_MS = 2000;
// Points of history kept per series: 10 minutes at the poll interval.
const KEEP = 300;
// Rates in tables are over this window (a 2 s delta holds too few requests for a p99).
const TABLE_WINDOW_MS = 10000;
const SKETCH_BUCKETS = 128;

const S = {
  snaps: [],          // [{t, byKey: Map(key -> series)}], oldest first
  hist: new Map(),    // 'server|svc' / 'client|svc' -> [{t, rate, err, p50, p99}]
  rows: null,         // groups over the table window
  map: null,
  incidents: null,
  containers: new Map(), // key -> {t, usage} of the previous read
  lastOk: 0,
  failures: 0,
};

// ---------- helpers ----------

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
function esc(v) { return String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c]); }
function enc(v) { return encodeURIComponent(v); }

async function api(path) {
  const r = await fetch('api/' + path, { cache: 'no-store' });
  if (!r.ok) {
    const text = await r.text();
    throw new Error(`${path}: ${r.status} ${text.trim()}`);
  }
  return r.json();
}

function num(v, digits = 1) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(digits) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(digits) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(digits) + 'k';
  if (a >= 100) return v.toFixed(0);
  return v.toFixed(digits);
}
function pct(v) { return v === null || v === undefined || !Number.isFinite(v) ? '–' : (v * 100).toFixed(v && v < 0.01 ? 2 : 1) + '%'; }
function ms(sec) { return sec === null || sec === undefined ? '–' : num(sec * 1000, 1) + ' ms'; }
function bytes(b) {
  if (b === null || b === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return b.toFixed(i ? 1 : 0) + ' ' + u[i];
}
function when(unixMs) {
  if (!unixMs) return '–';
  const d = new Date(unixMs);
  const time = d.toLocaleTimeString(undefined, { hour12: false });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}
function ago(unixMs) {
  if (!unixMs) return '';
  const s = Math.max(0, (Date.now() - unixMs) / 1000);
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
const RANK = { ok: 0, warning: 1, critical: 2 };
function worse(a, b) { return (RANK[b] || 0) > (RANK[a] || 0) ? b : a; }
function badge(status) { return `<span class="badge ${esc(status)}">${esc(status)}</span>`; }
function svcLink(name) { return `<a href="#/service/${enc(name)}">${esc(name)}</a>`; }
function label(labels, key) {
  for (const [k, v] of labels) if (k === key) return v;
  return '';
}

// ---------- RED series: deltas between reads (as `sonde top` does) ----------

// Which end, protocol and endpoint a series is (the same grouping as `sonde top`).
function describe(s) {
  const l = s.labels;
  switch (s.metric) {
    case 'http_server_request_duration_seconds':
      return ['server', 'http', `${label(l, 'http_request_method')} ${label(l, 'http_route')}`];
    case 'http_client_request_duration_seconds':
      return ['client', 'http', `${label(l, 'http_request_method')} ${label(l, 'url_template')}`];
    case 'db_client_operation_duration_seconds':
      return ['client', label(l, 'db_system_name'), label(l, 'db_operation_name')];
    case 'dns_lookup_duration_seconds':
      return [label(l, 'side'), 'dns', label(l, 'dns_question_type')];
    default:
      return [label(l, 'side'), label(l, 'protocol'), label(l, 'operation')];
  }
}

function seriesKey(s) { return s.metric + '\u0000' + JSON.stringify(s.labels); }

function newGroup(extra) {
  return Object.assign({ count: 0, errors: 0, sum: 0, sketch: new Array(SKETCH_BUCKETS).fill(0) }, extra);
}

// A sketch bucket's representative duration (s): index 0 is < 1 µs, i ≥ 1 is
// [2^((i-1)/4), 2^(i/4)) µs; its geometric middle.
function sketchValue(i) { return i === 0 ? 5e-7 : 1e-6 * Math.pow(2, (i - 0.5) / 4); }
function quantile(sketch, q) {
  let total = 0;
  for (const c of sketch) total += c;
  if (!total) return null;
  const rank = Math.min(Math.max(Math.ceil(q * total), 1), total);
  let seen = 0;
  for (let i = 0; i < sketch.length; i++) {
    seen += sketch[i];
    if (seen >= rank) return sketchValue(i);
  }
  return null;
}

// Groups of the difference between two reads: per service and side, per endpoint, per
// (service, peer) pair.
function diff(before, after, secs) {
  const svc = new Map(), ep = new Map(), pair = new Map(), port = new Map();
  for (const [key, s] of after.byKey) {
    const p = before ? before.byKey.get(key) : null;
    const count = s.count - (p ? Math.min(p.count, s.count) : 0);
    if (count <= 0) continue;
    const errors = s.errors - (p ? Math.min(p.errors, s.errors) : 0);
    const sum = Math.max(0, s.sum_seconds - (p ? p.sum_seconds : 0));
    const [side, protocol, endpoint] = describe(s);
    const service = label(s.labels, 'service_name');
    const peer = label(s.labels, 'peer_service_name');
    const serverPort = label(s.labels, 'server_port');
    const prev = new Map(p ? p.sketch : []);
    const groups = [
      [svc, `${side}|${service}`, { side, service }],
      [ep, `${side}|${service}|${protocol}|${endpoint}|${peer}|${serverPort}`, { side, service, protocol, endpoint, peer, port: serverPort }],
      [pair, `${side}|${service}|${peer}`, { side, service, peer }],
      [port, `${side}|${service}|${serverPort}`, { side, service, port: serverPort }],
    ];
    for (const [m, k, extra] of groups) {
      let g = m.get(k);
      if (!g) { g = newGroup(extra); m.set(k, g); }
      g.count += count;
      g.errors += errors;
      g.sum += sum;
      for (const [i, c] of s.sketch) {
        const d = c - Math.min(prev.get(i) || 0, c);
        if (i < SKETCH_BUCKETS) g.sketch[i] += d;
      }
    }
  }
  const finish = (m) => {
    for (const g of m.values()) {
      g.rate = g.count / Math.max(secs, 1e-3);
      g.err = g.errors / g.count;
      g.mean = g.sum / g.count;
      g.p50 = quantile(g.sketch, 0.5);
      g.p99 = quantile(g.sketch, 0.99);
      delete g.sketch;
    }
    return m;
  };
  return { svc: finish(svc), ep: finish(ep), pair: finish(pair), port: finish(port), secs };
}

function ingestSeries(list, t) {
  const prev = S.snaps[S.snaps.length - 1];
  // A read right after another (a view change) adds nothing but noise to the rates.
  if (prev && t - prev.t < 500) return;
  const snap = { t, byKey: new Map(list.map((s) => [seriesKey(s), s])) };
  if (prev) {
    const d = diff(prev, snap, (t - prev.t) / 1000);
    const seen = new Set();
    for (const [k, g] of d.svc) {
      seen.add(k);
      push(k, { t, rate: g.rate, err: g.err, p50: g.p50, p99: g.p99 });
    }
    // Services that went quiet get a zero point, so a chart does not hold its last value.
    for (const k of S.hist.keys()) if (!seen.has(k)) push(k, { t, rate: 0, err: null, p50: null, p99: null });
  }
  S.snaps.push(snap);
  while (S.snaps.length > 2 && t - S.snaps[1].t >= TABLE_WINDOW_MS) S.snaps.shift();
  const first = S.snaps[0];
  S.rows = S.snaps.length > 1 ? diff(first, snap, (t - first.t) / 1000) : null;
}

function push(key, point) {
  let h = S.hist.get(key);
  if (!h) { h = []; S.hist.set(key, h); }
  h.push(point);
  if (h.length > KEEP) h.shift();
}

// ---------- the map ----------

// The service map from `/api/map`: nodes merged by name (an address without one is an
// external endpoint), edges merged per (client, server) over their ports.
function serviceGraph(topo) {
  const nodes = new Map(), edges = new Map();
  const windowS = Math.max(topo.window_s || 0, 1);
  const nodeKey = (name, ip) => name || ip;
  const addNode = (name, ip, labels, status, reasons) => {
    const key = nodeKey(name, ip);
    let n = nodes.get(key);
    if (!n) {
      n = { key, name: key, external: !name, ips: new Set(), labels: {}, status: 'ok', reasons: [] };
      nodes.set(key, n);
    }
    if (ip) n.ips.add(ip);
    Object.assign(n.labels, labels || {});
    n.status = worse(n.status, status || 'ok');
    for (const r of reasons || []) if (!n.reasons.includes(r)) n.reasons.push(r);
    return n;
  };
  for (const v of topo.nodes || []) addNode(v.name, v.ip, v.labels, v.status, v.reasons);
  for (const e of topo.edges || []) {
    const c = addNode(e.client_name, e.client_ip, e.client_labels, 'ok', []);
    const s = addNode(e.server_name, e.server_ip + ':' + e.server_port, e.server_labels, 'ok', []);
    const key = c.key + '\u0000' + s.key;
    let g = edges.get(key);
    if (!g) {
      g = { client: c.key, server: s.key, ports: new Set(), status: 'ok', reasons: [], badness: 0,
        requests: 0, errors: 0, durationNs: 0, retransmits: 0, drops: 0, resets: 0, connectFails: 0,
        rtt: null, connections: 0 };
      edges.set(key, g);
    }
    const w = e.window || {};
    g.ports.add(e.server_port);
    g.status = worse(g.status, e.status);
    g.badness = Math.max(g.badness, e.badness || 0);
    for (const r of e.reasons || []) if (!g.reasons.includes(r)) g.reasons.push(r);
    // The server's parser when it runs on this node, else the client's.
    const server = (w.server_requests || 0) > 0;
    g.requests += server ? w.server_requests : (w.client_requests || 0);
    g.errors += server ? w.server_errors : (w.client_errors || 0);
    g.durationNs += server ? w.server_duration_ns : (w.client_duration_ns || 0);
    g.retransmits += (w.retransmits || 0) + (w.syn_retransmits || 0);
    g.drops += w.drops || 0;
    g.resets += (w.resets_sent || 0) + (w.resets_received || 0);
    g.connectFails += (w.connect_refused || 0) + (w.connect_timeouts || 0);
    if (e.rtt_ms !== null && e.rtt_ms !== undefined) g.rtt = Math.max(g.rtt || 0, e.rtt_ms);
    g.connections += e.connections || 0;
  }
  for (const g of edges.values()) {
    g.rate = g.requests / windowS;
    g.err = g.requests ? g.errors / g.requests : null;
    g.mean = g.requests ? g.durationNs / g.requests / 1e9 : null;
    // The RED series of the call, when there are: over the page's last seconds, not the map's
    // whole window (which a new edge has not filled yet).
    const red = edgeRed(g.client, g.server, g.ports);
    g.p99 = red ? red.p99 : null;
    if (red) { g.rate = red.rate; g.err = red.err; }
  }
  return { nodes, edges: [...edges.values()], windowS };
}

// An edge's requests in the RED series: the client's calls to the server (by the peer's
// name, else the server's port), else the server's requests from this client.
function edgeRed(client, server, ports) {
  if (!S.rows) return null;
  const found = [S.rows.pair.get(`client|${client}|${server}`)];
  for (const p of ports) found.push(S.rows.port.get(`client|${client}|${p}`));
  found.push(S.rows.pair.get(`server|${server}|${client}`));
  for (const g of found) if (g && g.p99 !== null) return g;
  return null;
}

// Which service listens on a port, from the map (for calls whose series name no peer).
function portOwner(port) {
  for (const e of (S.map && S.map.edges) || []) {
    if (String(e.server_port) === String(port)) return e.server_name || '';
  }
  return '';
}

function groupOf(n) {
  const l = n.labels;
  return l.namespace || l.k8s_namespace_name || l.node || l.k8s_node_name || (n.external ? 'external' : 'this node');
}

// Columns by the longest chain of callers (clients left, servers right). Calls that close a
// cycle (found by a depth-first walk from the callers nobody calls) do not count.
function layout(graph) {
  const out = new Map([...graph.nodes.keys()].map((k) => [k, []]));
  const indeg = new Map([...graph.nodes.keys()].map((k) => [k, 0]));
  for (const e of graph.edges) {
    if (e.client === e.server || !out.has(e.client) || !out.has(e.server)) continue;
    out.get(e.client).push(e.server);
    indeg.set(e.server, indeg.get(e.server) + 1);
  }
  const state = new Map(), order = [], back = new Set();
  const visit = (k) => {
    state.set(k, 1);
    for (const n of out.get(k)) {
      if (state.get(n) === 1) back.add(k + '\u0000' + n);
      else if (!state.has(n)) visit(n);
    }
    state.set(k, 2);
    order.push(k);
  };
  const starts = [...graph.nodes.keys()].sort((a, b) => indeg.get(a) - indeg.get(b));
  for (const k of starts) if (!state.has(k)) visit(k);
  const depth = new Map([...graph.nodes.keys()].map((k) => [k, 0]));
  for (const k of order.reverse()) {
    for (const n of out.get(k)) {
      if (!back.has(k + '\u0000' + n)) depth.set(n, Math.max(depth.get(n), depth.get(k) + 1));
    }
  }
  const cols = [];
  for (const n of graph.nodes.values()) {
    const d = depth.get(n.key);
    (cols[d] = cols[d] || []).push(n);
  }
  const W = 180, H = 46, GX = 170, GY = 26;
  let height = 0;
  const pos = new Map();
  cols.forEach((col, ci) => {
    col.sort((a, b) => (a.external - b.external) || groupOf(a).localeCompare(groupOf(b)) || a.name.localeCompare(b.name));
    let y = 30, last = null;
    for (const n of col) {
      const g = groupOf(n);
      if (g !== last) { y += last === null ? 0 : 14; n.groupLabel = g; last = g; } else n.groupLabel = null;
      pos.set(n.key, { x: 20 + ci * (W + GX), y, w: W, h: H });
      y += H + GY;
    }
    height = Math.max(height, y);
  });
  return { pos, width: 40 + cols.length * (W + GX) - GX, height: height + 10 };
}

// Short enough to sit between two columns: rate, error %, p99 (else mean), retransmits, drops.
function edgeLabel(e) {
  const parts = [`${num(e.rate, 1)}/s`];
  if (e.requests || e.rate) parts.push(`${pct(e.err)} err`);
  else if (!e.connections) return e.connectFails ? `${e.connectFails} failed connects` : '';
  const short = (sec) => num(sec * 1000, 1) + 'ms';
  if (e.p99 !== null) parts.push(`p99 ${short(e.p99)}`);
  else if (e.mean !== null) parts.push(`avg ${short(e.mean)}`);
  if (e.retransmits) parts.push(`${e.retransmits} retx`);
  if (e.drops) parts.push(`${e.drops} drop`);
  return parts.join(' ');
}

function edgeTitle(e, windowS) {
  const lines = [`${e.client} → ${e.server} (port ${[...e.ports].join(', ')})`, `status: ${e.status}`];
  for (const r of e.reasons) lines.push(`• ${r}`);
  lines.push(`over the last ${windowS} s: ${e.requests} requests, ${e.errors} errors, ` +
    `${e.retransmits} retransmits, ${e.drops} drops, ${e.resets} resets, ${e.connectFails} failed connects`);
  if (e.rtt !== null) lines.push(`RTT ${num(e.rtt, 2)} ms`);
  lines.push(`${e.connections} connections open`);
  return lines.join('\n');
}

function mapSvg(graph) {
  const { pos, width, height } = layout(graph);
  // As wide as the card (down to its own size), never wider: a large map scales down.
  const out = [`<svg id="map" class="map" width="100%" viewBox="0 0 ${width} ${height}" data-width="${width}" role="img" aria-label="service map">`];
  out.push('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a93a3"/></marker></defs>');
  // Labels already placed (x, y, width): a label that would overlap one moves down a line.
  const placed = [];
  const place = (x, y, text) => {
    const w = text.length * 5.6 + 6;
    for (let i = 0; i < 6; i++) {
      if (!placed.some((p) => Math.abs(p.x - x) < (p.w + w) / 2 && Math.abs(p.y - y) < 12)) break;
      y += 13;
    }
    placed.push({ x, y, w });
    return y;
  };
  const into = new Map();
  for (const e of graph.edges) into.set(e.server, (into.get(e.server) || []).concat([e]));
  for (const e of graph.edges) {
    const a = pos.get(e.client), b = pos.get(e.server);
    if (!a || !b) continue;
    let d, lx, ly;
    // Labels of edges into one server sit at different points of their curves.
    const peers = into.get(e.server), k = peers.indexOf(e);
    const t = Math.min(0.8, Math.max(0.2, 0.5 + 0.15 * (k - (peers.length - 1) / 2)));
    if (e.client === e.server) {
      const x = a.x + a.w - 20, y = a.y;
      d = `M${x},${y} C${x + 40},${y - 40} ${x + 60},${y + 10} ${a.x + a.w},${y + a.h / 2}`;
      lx = x + 10; ly = y - 18;
    } else {
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
      const back = x2 <= x1;
      const bend = back ? 80 : Math.max(40, (x2 - x1) / 2);
      // A call back to an earlier column arcs over the top (kept inside the drawing).
      const c = back
        ? [x1, y1, x1 + bend, Math.max(2, y1 - 70), x2 - bend, Math.max(2, y2 - 70), x2, y2]
        : [x1, y1, x1 + bend, y1, x2 - bend, y2, x2, y2];
      d = `M${c[0]},${c[1]} C${c[2]},${c[3]} ${c[4]},${c[5]} ${c[6]},${c[7]}`;
      const bez = (i) => (1 - t) ** 3 * c[i] + 3 * (1 - t) ** 2 * t * c[i + 2] + 3 * (1 - t) * t * t * c[i + 4] + t ** 3 * c[i + 6];
      lx = bez(0); ly = Math.max(12, bez(1) - 5);
    }
    const text = edgeLabel(e);
    if (text) ly = place(lx, ly, text);
    out.push(`<g class="edge ${esc(e.status)}" data-client="${esc(e.client)}" data-server="${esc(e.server)}" data-rate="${e.rate}">` +
      `<title>${esc(edgeTitle(e, graph.windowS))}</title>` +
      `<path d="${d}" marker-end="url(#arrow)"/>` +
      `<text class="label" x="${lx.toFixed(1)}" y="${ly.toFixed(1)}" text-anchor="middle">${esc(text)}</text></g>`);
  }
  for (const n of graph.nodes.values()) {
    const p = pos.get(n.key);
    const title = [n.name, `status: ${n.status}`, ...n.reasons.map((r) => `• ${r}`),
      [...n.ips].join(', '), ...Object.entries(n.labels).map(([k, v]) => `${k}: ${v}`)].join('\n');
    if (n.groupLabel) out.push(`<text class="group" x="${p.x}" y="${p.y - 6}">${esc(n.groupLabel)}</text>`);
    const sub = n.external ? 'external endpoint' : [...n.ips].slice(0, 2).join(', ');
    out.push(`<a href="#/service/${enc(n.key)}"><g class="node${n.external ? ' external' : ''}" data-name="${esc(n.key)}" data-status="${esc(n.status)}">` +
      `<title>${esc(title)}</title>` +
      `<rect x="${p.x}" y="${p.y}" width="${p.w}" height="${p.h}" rx="6"/>` +
      `<circle class="dot ${esc(n.status)}" cx="${p.x + 14}" cy="${p.y + 16}" r="5"/>` +
      `<text class="name" x="${p.x + 26}" y="${p.y + 20}">${esc(clip(n.name, 22))}</text>` +
      `<text class="sub" x="${p.x + 26}" y="${p.y + 36}">${esc(clip(sub, 28))}</text></g></a>`);
  }
  out.push('</svg>');
  return out.join('');
}

function clip(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + '…' : s; }

function viewMap() {
  const topo = S.map;
  if (!topo) return '<h1>Service map</h1><p class="muted">Waiting for the first read of the network map…</p>';
  const graph = serviceGraph(topo);
  // Services seen only in the RED series (no TCP edge yet) still get a node.
  if (S.rows) for (const g of S.rows.svc.values()) {
    if (g.service && !graph.nodes.has(g.service)) {
      graph.nodes.set(g.service, { key: g.service, name: g.service, external: false, ips: new Set(), labels: {}, status: 'ok', reasons: [] });
    }
  }
  const worst = graph.edges.slice().sort((a, b) =>
    (RANK[b.status] - RANK[a.status]) || (b.badness - a.badness) || ((b.err || 0) - (a.err || 0)) || (b.rate - a.rate));
  const nodesBad = [...graph.nodes.values()].filter((n) => n.status !== 'ok')
    .sort((a, b) => RANK[b.status] - RANK[a.status]);
  const side = ['<div class="side card"><h2>Worst first</h2><ul id="worst">'];
  for (const n of nodesBad) {
    const more = n.reasons.length > 3 ? `; and ${n.reasons.length - 3} more` : '';
    side.push(`<li>${badge(n.status)} ${svcLink(n.key)}<small>${esc(n.reasons.slice(0, 3).join('; ') + more)}</small></li>`);
  }
  for (const e of worst.slice(0, 30)) {
    side.push(`<li>${badge(e.status)} ${svcLink(e.client)} → ${svcLink(e.server)}` +
      `<small>${esc(edgeLabel(e))}${e.reasons.length ? ' — ' + esc(e.reasons.join('; ')) : ''}</small></li>`);
  }
  if (!worst.length && !nodesBad.length) side.push('<li class="muted">No connections seen yet.</li>');
  side.push('</ul></div>');
  const stats = topo.stats || {};
  const note = (topo.probes_missing || []).length
    ? `<p class="muted">Network probes not running: ${esc(topo.probes_missing.join(', '))}</p>` : '';
  return `<h1>Service map <span class="muted">· last ${esc(graph.windowS)} s</span></h1>
<div class="layout"><div class="card mapbox">${graph.nodes.size ? mapSvg(graph) : '<p class="muted">No services seen yet.</p>'}</div>${side.join('')}</div>
${note}<p class="muted">${graph.nodes.size} nodes, ${graph.edges.length} edges; ${esc(stats.reads ?? 0)} map reads. Hover a node or an edge for the reasons of its status; click a node for its service page.</p>`;
}

// ---------- charts ----------

function lineChart(id, title, lines, fmt) {
  const W = 340, H = 150, L = 52, R = 10, T = 22, B = 20;
  const pts = lines.flatMap((l) => l.pts.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  const out = [`<svg class="chart" id="${esc(id)}" width="100%" viewBox="0 0 ${W} ${H}">`];
  out.push(`<text class="title" x="8" y="15">${esc(title)}</text>`);
  if (!pts.length) {
    out.push(`<text class="tick" x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text></svg>`);
    return out.join('');
  }
  const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]), t0 + 1);
  const vmax = Math.max(...pts.map((p) => p[1]), 1e-9);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / vmax) * (H - T - B);
  out.push(`<line class="axis" x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}"/><line class="axis" x1="${L}" y1="${T}" x2="${L}" y2="${H - B}"/>`);
  out.push(`<text class="tick" x="${L - 4}" y="${T + 8}" text-anchor="end">${esc(fmt(vmax))}</text><text class="tick" x="${L - 4}" y="${H - B}" text-anchor="end">0</text>`);
  out.push(`<text class="tick" x="${L}" y="${H - 5}">${esc(new Date(t0).toLocaleTimeString(undefined, { hour12: false }))}</text>`);
  out.push(`<text class="tick" x="${W - R}" y="${H - 5}" text-anchor="end">${esc(new Date(t1).toLocaleTimeString(undefined, { hour12: false }))}</text>`);
  lines.forEach((l, i) => {
    const p = l.pts.filter((q) => q[1] !== null && Number.isFinite(q[1]));
    if (!p.length) return;
    out.push(`<polyline class="l${i}" points="${p.map((q) => `${x(q[0]).toFixed(1)},${y(q[1]).toFixed(1)}`).join(' ')}"/>`);
    const last = p[p.length - 1][1];
    out.push(`<text class="tick legend${i}" x="${W - R}" y="${15 + i * 12}" text-anchor="end">${esc(l.name)} ${esc(fmt(last))}</text>`);
  });
  out.push('</svg>');
  return out.join('');
}

function spark(before, after) {
  const W = 80, H = 22, vmax = Math.max(Math.abs(before), Math.abs(after), 1e-12);
  const y = (v) => (H - 3 - (Math.max(v, 0) / vmax) * (H - 6)).toFixed(1);
  return `<svg class="spark" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}"><polyline points="4,${y(before)} 40,${y(before)} 76,${y(after)}"/><circle cx="76" cy="${y(after)}" r="2.5"/></svg>`;
}

// ---------- a service ----------

function endpointTable(rows, side) {
  const list = [...rows].filter((g) => g.side === side).sort((a, b) => b.count - a.count);
  if (!list.length) return '<p class="muted">None in the last seconds.</p>';
  const client = side === 'client';
  // The other end: the peer the series names, else (a call) whoever listens on its port.
  const other = (g) => g.peer || (client ? portOwner(g.port) : '');
  const peers = list.some((g) => other(g));
  const cell = (g) => !peers ? '' : `<td>${other(g) ? svcLink(other(g)) : '<span class="muted">–</span>'}${client && g.port ? ` <small class="muted">:${esc(g.port)}</small>` : ''}</td>`;
  return `<table class="endpoints ${side}"><tr><th>protocol</th><th>${client ? 'call' : 'endpoint'}</th>${peers ? (client ? '<th>to</th>' : '<th>from</th>') : ''}<th class="num">req/s</th><th class="num">errors</th><th class="num">p50</th><th class="num">p99</th></tr>` +
    list.map((g) => `<tr><td>${esc(g.protocol)}</td><td class="wrap mono">${esc(g.endpoint)}</td>${cell(g)}` +
      `<td class="num">${num(g.rate, 2)}</td><td class="num">${pct(g.err)}</td><td class="num">${ms(g.p50)}</td><td class="num">${ms(g.p99)}</td></tr>`).join('') +
    '</table>';
}

function neighbourTable(edges, which) {
  if (!edges.length) return '<p class="muted">None seen.</p>';
  return `<table><tr><th>${which}</th><th>status</th><th class="num">req/s</th><th class="num">errors</th><th class="num">p99</th><th class="num">retx</th><th class="num">drops</th></tr>` +
    edges.map((e) => {
      const other = which === 'caller' ? e.client : e.server;
      return `<tr><td>${svcLink(other)}</td><td>${badge(e.status)} <span class="muted">${esc(e.reasons.join('; '))}</span></td><td class="num">${num(e.rate, 2)}</td>` +
        `<td class="num">${pct(e.err)}</td><td class="num">${ms(e.p99 ?? e.mean)}</td><td class="num">${e.retransmits}</td><td class="num">${e.drops}</td></tr>`;
    }).join('') + '</table>';
}

function containerTable(rows, now) {
  if (!rows.length) return '<p class="muted">No container of this service (or correlation is off).</p>';
  return '<table><tr><th>container</th><th>pod</th><th class="num">pids</th><th class="num">CPU</th><th class="num">throttled</th><th class="num">memory</th><th class="num">of limit</th></tr>' +
    rows.map(([key, row]) => {
      const u = row.usage || {}, id = row.identity || {};
      const prev = S.containers.get(key);
      let cpu = null, thr = null;
      if (prev && now > prev.t) {
        const secs = (now - prev.t) / 1000;
        if (u.cpu_usage_ns !== null && prev.usage.cpu_usage_ns !== null && u.cpu_usage_ns !== undefined) cpu = Math.max(0, u.cpu_usage_ns - prev.usage.cpu_usage_ns) / 1e9 / secs;
        const dp = (u.cpu_periods || 0) - (prev.usage.cpu_periods || 0);
        if (dp > 0) thr = Math.max(0, (u.cpu_throttled_periods || 0) - (prev.usage.cpu_throttled_periods || 0)) / dp;
      }
      const mem = u.memory_bytes, lim = u.memory_limit_bytes;
      return `<tr><td class="mono">${esc(id.container_name || clip(key, 20))}</td><td>${esc(id.pod || '–')}</td><td class="num">${esc(row.pids)}</td>` +
        `<td class="num">${cpu === null ? '–' : num(cpu, 2) + ' cores'}</td><td class="num">${thr === null ? '–' : pct(thr)}</td>` +
        `<td class="num">${bytes(mem)}</td><td class="num">${lim && mem !== null ? pct(mem / lim) : 'no limit'}</td></tr>`;
    }).join('') + '</table>';
}

// Database operations slower than slow_query_ms (`/api/slow-queries`), by statement.
function slowTable(rows) {
  if (!rows.length) return '<p class="muted">None slower than the slow-query threshold.</p>';
  const by = new Map();
  for (const q of rows) {
    const k = `${q.system}|${q.server}|${q.statement || q.operation}`;
    const g = by.get(k) || { q, count: 0, sum: 0, max: 0, errors: 0 };
    g.count++; g.sum += q.duration_seconds; g.max = Math.max(g.max, q.duration_seconds);
    if (q.error) { g.errors++; g.lastError = q.error; }
    by.set(k, g);
  }
  const list = [...by.values()].sort((a, b) => b.sum - a.sum).slice(0, 20);
  return '<table class="slow"><tr><th>system</th><th>server</th><th>statement</th><th class="num">count</th><th class="num">mean</th><th class="num">max</th><th>errors</th></tr>' +
    list.map((g) => `<tr><td>${esc(g.q.system)}</td><td class="mono">${esc(g.q.server)}</td><td class="mono wrap">${esc(g.q.statement || g.q.operation)}</td><td class="num">${g.count}</td>` +
      `<td class="num">${ms(g.sum / g.count)}</td><td class="num">${ms(g.max)}</td><td>${g.errors ? `${g.errors}: ${esc(g.lastError)}` : ''}</td></tr>`).join('') + '</table>';
}

function attr(r, key) {
  for (const [k, v] of r.attributes || []) if (k === key) return v;
  return '';
}

function recordTable(records) {
  if (!records.length) return '<p class="muted">No recent records of this service.</p>';
  return '<table class="records"><tr><th>side</th><th>protocol</th><th>operation</th><th class="num">status</th><th class="num">duration</th><th>peer</th><th>trace id</th></tr>' +
    records.map((r) => `<tr><td>${esc(r.side)}</td><td>${esc(r.protocol)}</td><td class="wrap mono">${esc(r.operation)}</td>` +
      `<td class="num">${r.error ? `<span class="error">${esc(r.status)} ${esc(r.error)}</span>` : esc(r.status)}</td><td class="num">${ms(r.duration_seconds)}</td>` +
      `<td class="mono">${esc(r.remote || '')}</td><td class="mono">${esc(attr(r, 'trace_id')) || '<span class="muted">–</span>'}</td></tr>`).join('') + '</table>';
}

function logTable(rows) {
  if (!rows.length) return '<p class="muted">No log lines mined from this service in the last 10 minutes.</p>';
  rows.sort((a, b) => (b.is_error - a.is_error) || (b.count - a.count));
  return '<table class="logs"><tr><th class="num">lines</th><th>template</th><th>last seen</th></tr>' +
    rows.slice(0, 30).map((t) => `<tr><td class="num">${esc(t.count)}</td><td class="wrap mono">${t.is_error ? '<span class="badge critical">error</span> ' : ''}${esc(t.template)}</td><td>${esc(ago(t.last_seen_ms))}</td></tr>`).join('') + '</table>';
}

async function viewService(name) {
  const now = Date.now();
  const [containers, records, logs, live, slow] = await Promise.all([
    api('containers'), api('records?limit=300'), api('logs?minutes=10'), api('live'), api('slow-queries'),
  ]);
  const side = S.hist.has(`server|${name}`) ? 'server' : 'client';
  const h = S.hist.get(`${side}|${name}`) || [];
  const cur = S.rows ? S.rows.svc.get(`${side}|${name}`) : null;
  const graph = S.map ? serviceGraph(S.map) : { nodes: new Map(), edges: [] };
  const node = graph.nodes.get(name);
  const callers = graph.edges.filter((e) => e.server === name && e.client !== name);
  const callees = graph.edges.filter((e) => e.client === name && e.server !== name);
  const mine = (containers || []).filter(([, row]) => row.identity && row.identity.service_name === name);
  const recs = (records || []).filter((r) => (r.labels || {}).service_name === name || r.comm === name).slice(-25).reverse();
  const kpis = (live.latest || []).filter(([e]) => e === `service:${name}`).sort((a, b) => a[1].localeCompare(b[1]));
  const eps = S.rows ? [...S.rows.ep.values()].filter((g) => g.service === name) : [];
  const html = `<h1>${esc(name)} ${node ? badge(node.status) : ''} <span class="muted">· ${side} side</span></h1>
${node && node.reasons.length ? `<p>${esc(node.reasons.join('; '))}</p>` : ''}
<div class="kpis">
 <div class="kpi"><b id="svc-rate" data-value="${cur ? cur.rate : 0}">${cur ? num(cur.rate, 2) : '–'}</b><span>requests/s</span></div>
 <div class="kpi"><b id="svc-errors">${cur ? pct(cur.err) : '–'}</b><span>errors</span></div>
 <div class="kpi"><b id="svc-p50">${cur ? ms(cur.p50) : '–'}</b><span>p50</span></div>
 <div class="kpi"><b id="svc-p99">${cur ? ms(cur.p99) : '–'}</b><span>p99</span></div>
</div>
<p class="muted">Rates over the last ${S.rows ? num(S.rows.secs, 0) : '–'} s; charts over the ${h.length > 1 ? esc(ago(h[0].t).replace(' ago', '')) : 'few seconds'} this page has been open (it keeps 10 minutes).</p>
<div class="charts">
${lineChart('chart-rate', 'requests/s', [{ name: 'req/s', pts: h.map((p) => [p.t, p.rate]) }], (v) => num(v, 1))}
${lineChart('chart-errors', 'error %', [{ name: 'errors', pts: h.map((p) => [p.t, p.err === null ? null : p.err * 100]) }], (v) => num(v, 1) + '%')}
${lineChart('chart-latency', 'latency', [{ name: 'p50', pts: h.map((p) => [p.t, p.p50 === null ? null : p.p50 * 1000]) }, { name: 'p99', pts: h.map((p) => [p.t, p.p99 === null ? null : p.p99 * 1000]) }], (v) => num(v, 1) + ' ms')}
</div>
<h2>Endpoints served</h2>${endpointTable(eps, 'server')}
<h2>Calls made</h2>${endpointTable(eps, 'client')}
<h2>Slow statements</h2>${slowTable((slow || []).filter((q) => q.service === name))}
<h2>Callers</h2>${neighbourTable(callers, 'caller')}
<h2>Callees</h2>${neighbourTable(callees, 'callee')}
<h2>Live diagnosis</h2>${kpis.length ? '<table><tr><th>KPI</th><th class="num">last step</th></tr>' + kpis.map(([, m, v]) => `<tr><td>${esc(m)}</td><td class="num">${num(v, 3)}</td></tr>`).join('') + '</table>' : '<p class="muted">No live series for this service yet.</p>'}
<h2>Containers</h2>${containerTable(mine, now)}
<h2>Recent records</h2>${recordTable(recs)}
<h2>Log templates</h2>${logTable((logs || []).filter((t) => t.service === name))}`;
  for (const [key, row] of containers || []) S.containers.set(key, { t: now, usage: row.usage || {} });
  return html;
}

// ---------- incidents ----------

function element(el) {
  if (!el) return '–';
  if (el.kind === 'service') return svcLink(el.name);
  if (el.kind === 'edge') return `${svcLink(el.caller)} → ${svcLink(el.callee)}`;
  if (el.kind === 'node') return `node ${esc(el.name)}`;
  return esc(JSON.stringify(el));
}
function elementText(el) {
  if (!el) return '';
  if (el.kind === 'edge') return `${el.caller}->${el.callee}`;
  return el.name || '';
}

function viewIncidents() {
  const list = S.incidents;
  if (!list) return '<h1>Incidents</h1><p class="muted">Loading…</p>';
  const rows = list.slice().sort((a, b) => (a.state === b.state ? 0 : a.state === 'open' ? -1 : 1) || b.start_unix_ms - a.start_unix_ms);
  if (!rows.length) return '<h1>Incidents</h1><p class="muted">No incidents. The live diagnosis opens one when a service\'s error rate or latency departs from what it learned.</p>';
  return `<h1>Incidents <span class="muted">· ${rows.filter((i) => i.state === 'open').length} open</span></h1>
<table id="incidents"><tr><th>state</th><th>incident</th><th>entry</th><th>KPI</th><th>started</th><th>top cause</th></tr>` +
    rows.map((i) => {
      const c = i.top_cause;
      return `<tr class="incident" data-id="${esc(i.id)}"><td>${badge(i.state)}</td><td><a href="#/incident/${enc(i.id)}">${esc(i.id)}</a>${i.parent ? `<br><small class="muted">under ${esc(i.parent)}</small>` : ''}</td>` +
        `<td>${svcLink(i.entry)}</td><td>${esc(i.kpi)}<br><small class="muted">opened by ${esc(i.trigger)}</small></td><td>${esc(when(i.start_unix_ms))}<br><small class="muted">${esc(ago(i.start_unix_ms))}${i.resolved_unix_ms ? ', resolved ' + esc(ago(i.resolved_unix_ms)) : ''}</small></td>` +
        `<td>${c ? `${element(c.element)} <span class="badge">${esc(c.category)}</span> ${pct(c.confidence)}<br><small class="muted">${esc(c.explanation)}</small>` : '<span class="muted">report pending</span>'}</td></tr>`;
    }).join('') + '</table>';
}

function evidenceList(ev) {
  if (!ev || !ev.length) return '';
  return '<ul>' + ev.map((e) => `<li><span class="mono">${esc(e.metric)}</span> ${num(e.before, 3)} → ${num(e.after, 3)} ${spark(e.before, e.after)} ${esc(e.note)}</li>`).join('') + '</ul>';
}

function pathView(path, root) {
  if (!path || !path.length) return '<p class="muted">No propagation path.</p>';
  return '<div class="path" id="propagation">' + path.map((p, i) =>
    `${i ? '<span class="arrow">→</span>' : ''}<span class="hop${i === 0 && root ? ' root' : ''}">${esc(p)}</span>`).join('') + '</div>';
}

async function viewIncident(id) {
  const d = await api(`incidents/${enc(id)}`);
  const i = d.incident, r = d.report;
  const parts = [`<h1>Incident ${esc(i.id)} ${badge(i.state)}</h1>
<p>Entry ${svcLink(i.entry)}, ${esc(i.kpi)}; opened by ${esc(i.trigger)} · started ${esc(when(i.start_unix_ms))} (${esc(ago(i.start_unix_ms))})${i.resolved_unix_ms ? ' · resolved ' + esc(when(i.resolved_unix_ms)) : ''}${i.report_unix_ms ? ` · report ${num((i.report_unix_ms - i.start_unix_ms) / 1000, 1)} s after the start` : ''}</p>`];
  if (!r) {
    parts.push(`<p class="muted">No report yet${d.error ? ': ' + esc(d.error) : ''}.</p>`);
  } else {
    parts.push(`<p class="phenomenon card" id="phenomenon">${esc(r.phenomenon)}</p>`);
    if (r.slo) parts.push(`<p>SLO ${pct(r.slo.objective)}: burn rate ${num(r.slo.burn_rate, 2)}×${r.slo.firing ? ' <span class="badge critical">firing</span>' : ''}</p>`);
    parts.push('<h2>Key metrics</h2>');
    parts.push(r.key_metrics.length ? '<table><tr><th>entity</th><th>metric</th><th class="num">before</th><th class="num">during</th><th></th><th class="num">score</th></tr>' +
      r.key_metrics.map((k) => `<tr><td class="mono">${esc(k.entity)}</td><td>${esc(k.metric)}</td><td class="num">${num(k.before, 3)}</td><td class="num">${num(k.after, 3)}</td><td>${spark(k.before, k.after)}</td><td class="num">${num(k.score, 1)}</td></tr>`).join('') + '</table>'
      : '<p class="muted">None.</p>');
    parts.push('<h2>Root causes</h2>');
    if (!r.root_causes.length) parts.push('<p class="muted">No root cause found.</p>');
    for (const c of r.root_causes.slice(0, 5)) {
      parts.push(`<div class="cause card" data-rank="${esc(c.rank)}" data-element="${esc(elementText(c.element))}"><h3>#${esc(c.rank)} ${element(c.element)} <span class="badge">${esc(c.category)}</span> confidence ${pct(c.confidence)} <span class="muted">· score ${num(c.score, 2)}${c.rule ? ' · rule ' + esc(c.rule) : ''}</span></h3>` +
        `<div>${esc(c.explanation)}</div>${evidenceList(c.evidence)}</div>`);
    }
    parts.push('<h2>Propagation path</h2>' + pathView(r.propagation_path, true));
    parts.push('<h2>Attribution</h2>');
    const attr = r.attributions.filter((a) => a.causes.length);
    parts.push(attr.length ? '<table><tr><th>service</th><th>KPI</th><th>where</th><th class="num">explains</th><th class="num">change</th><th class="num">actual</th><th class="num">expected</th></tr>' +
      attr.flatMap((a) => a.causes.map((c) => `<tr><td>${svcLink(a.service)}</td><td>${esc(a.kpi)}</td><td class="mono wrap">${esc(c.elements.map(([k, v]) => `${k}=${v}`).join(', '))}</td>` +
        `<td class="num">${pct(c.explanatory_power)}</td><td class="num">${Number.isFinite(c.deviation) ? pct(c.deviation) : '∞'}</td><td class="num">${num(c.actual, 3)}</td><td class="num">${num(c.forecast, 3)}</td></tr>`)).join('') + '</table>'
      : '<p class="muted">No dimension stood out.</p>');
    if (r.rule_failures.length) parts.push('<h2>Rules that could not answer</h2><ul>' + r.rule_failures.map((f) => `<li>${esc(f.rule)}: ${esc(f.error)}</li>`).join('') + '</ul>');
    parts.push(`<p class="muted">${esc(r.visited)} elements visited, ${esc(r.candidates)} candidates, analysis ${num(r.elapsed_ms, 1)} ms.</p>`);
  }
  parts.push('<h2>Slow SQL</h2>');
  parts.push(d.slow_queries.length ? '<table><tr><th class="num">count</th><th class="num">mean</th><th class="num">max</th><th>from → to</th><th>statement</th><th>errors</th></tr>' +
    d.slow_queries.map((q) => `<tr><td class="num">${esc(q.count)}</td><td class="num">${num(q.mean_ms, 1)} ms</td><td class="num">${num(q.max_ms, 1)} ms</td><td>${svcLink(q.service)} → ${esc(q.server)}</td><td class="mono wrap">${esc(q.statement)}</td><td>${q.errors ? `${esc(q.errors)}: ${esc(q.last_error || '')}` : ''}</td></tr>`).join('') + '</table>'
    : '<p class="muted">None.</p>');
  parts.push('<h2>Error-log templates</h2>');
  parts.push(d.log_templates.length ? '<table id="report-logs"><tr><th class="num">lines</th><th>service</th><th>template</th></tr>' +
    d.log_templates.map((t) => `<tr><td class="num">${esc(t.count)}</td><td>${svcLink(t.service)}</td><td class="mono wrap">${esc(t.template)}</td></tr>`).join('') + '</table>'
    : '<p class="muted">None.</p>');
  if (d.merged && d.merged.length) parts.push('<h2>Merged</h2><ul>' + d.merged.map((m) => `<li>${esc(m.id)}: ${esc(m.kpi)} of ${esc(m.trigger)}</li>`).join('') + '</ul>');
  if (d.bundle_dir) parts.push(`<p class="muted">Bundle: <code>${esc(d.bundle_dir)}</code> (replay: <code>sonde analyze ${esc(d.bundle_dir)}</code>)</p>`);
  parts.push(`<p><a href="api/incidents/${enc(i.id)}?format=text">as text</a> · <a href="#/incidents">all incidents</a></p>`);
  return parts.join('\n');
}

// ---------- plugins ----------

async function viewPlugins() {
  const [plugins, health] = await Promise.all([api('plugins'), api('health')]);
  const parsers = plugins.parsers || [];
  const out = [`<h1>Plugins</h1><h2>Protocol parsers</h2>`];
  out.push(parsers.length ? '<table id="parsers"><tr><th>parser</th><th>version</th><th>source</th><th>state</th><th class="num">records</th><th class="num">connections</th><th class="num">calls</th><th class="num">failures</th><th class="num">longest call</th><th>last error</th></tr>' +
    parsers.map((p) => {
      const h = p.health || {}, c = p.counters || {};
      const state = h.failures_in_a_row ? 'warning' : 'ok';
      return `<tr class="parser" data-name="${esc(p.name)}"><td><b>${esc(p.name)}</b></td><td>${esc(p.version)}</td><td class="mono wrap">${esc(p.source)}</td><td>${badge(state)}${h.quarantines ? ` <small class="muted">${esc(h.quarantines)} quarantines</small>` : ''}</td>` +
        `<td class="num">${num(c.records, 0)}</td><td class="num">${num(c.claimed, 0)}</td><td class="num">${num(h.calls, 0)}</td><td class="num">${num(h.failures, 0)}</td><td class="num">${num((h.max_call_us || 0) / 1000, 2)} ms</td><td class="wrap">${esc(h.last_error || '')}</td></tr>`;
    }).join('') + '</table>' : '<p class="muted">No parser loaded.</p>');
  const rules = plugins.rules || [];
  out.push('<h2>Fault-tree rules</h2>');
  out.push(rules.length ? '<table id="rules"><tr><th>rule</th><th>version</th><th>source</th><th>world</th></tr>' +
    rules.map((r) => `<tr class="rule" data-name="${esc(r.name)}"><td><b>${esc(r.name)}</b></td><td>${esc(r.version)}</td><td class="mono wrap">${esc(r.source)}</td><td>${esc(r.world)}</td></tr>`).join('') + '</table>'
    : '<p class="muted">No rules loaded (or the live diagnosis is off).</p>');
  out.push(`<h2>Kernel programs</h2><p class="muted">Kernel ${esc(health.kernel)}${health.socket_lookup ? ', socket lookup ' + esc(health.socket_lookup) : ''}</p>`);
  const probes = health.probes || [];
  out.push(probes.length ? '<table><tr><th>program</th><th>feature</th><th>state</th><th>detail</th></tr>' +
    probes.map((p) => `<tr><td class="mono">${esc(p.program)}</td><td>${esc(p.feature)}</td><td>${badge(p.state === 'attached' ? 'ok' : p.state === 'failed' ? 'critical' : 'warning')} ${esc(p.state)}</td><td class="wrap">${esc(p.detail)}</td></tr>`).join('') + '</table>'
    : '<p class="muted">No kernel programs listed.</p>');
  return out.join('\n');
}

// ---------- routing and refresh ----------

function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const [view, ...rest] = h.split('/');
  const arg = rest.length ? decodeURIComponent(rest.join('/')) : '';
  switch (view) {
    case 'service': return { view, arg, nav: 'map' };
    case 'incidents': return { view, nav: 'incidents' };
    case 'incident': return { view, arg, nav: 'incidents' };
    case 'plugins': return { view, nav: 'plugins' };
    default: return { view: 'map', nav: 'map' };
  }
}

let rendered = '';
let renderedRoute = '';
async function render() {
  const r = route();
  let html;
  try {
    switch (r.view) {
      case 'service': html = await viewService(r.arg); break;
      case 'incidents': html = viewIncidents(); break;
      case 'incident': html = await viewIncident(r.arg); break;
      case 'plugins': html = await viewPlugins(); break;
      default: html = viewMap();
    }
  } catch (e) {
    // A view whose data is gone (an incident dropped from the list) says so in its place.
    html = `<h1>${esc(r.view)} ${esc(r.arg || '')}</h1><p class="error">${esc(e.message)}</p><p><a href="#/map">the map</a> · <a href="#/incidents">incidents</a></p>`;
  }
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.view === r.nav);
  document.title = `Sonde · ${r.view}${r.arg ? ' ' + r.arg : ''}`;
  const key = location.hash;
  // Only touch the DOM when something changed: keeps a selection and the hover titles.
  if (html !== rendered || key !== renderedRoute) {
    document.getElementById('view').innerHTML = html;
    rendered = html;
    if (key !== renderedRoute) window.scrollTo(0, 0);
    renderedRoute = key;
  }
  document.body.dataset.view = r.view;
  document.body.dataset.ready = '1';
}

async function poll() {
  const status = document.getElementById('status');
  try {
    const t = Date.now();
    const [series, map, incidents] = await Promise.all([api('series'), api('map'), api('incidents')]);
    ingestSeries(series, t);
    S.map = map;
    S.incidents = incidents.incidents || [];
    await render();
    S.lastOk = Date.now();
    S.failures = 0;
    status.textContent = `updated ${new Date(S.lastOk).toLocaleTimeString(undefined, { hour12: false })}`;
    status.className = '';
  } catch (e) {
    S.failures++;
    status.textContent = `API unreachable: ${e.message}`;
    status.className = 'bad';
  }
}

// One read at a time: a view change during a read asks for another one after it.
let timer = null, busy = false, again = false;
async function tick() {
  if (busy) { again = true; return; }
  busy = true;
  try { await poll(); } finally { busy = false; }
  if (again) { again = false; await tick(); }
}
function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(async () => { await tick(); schedule(POLL_MS); }, ms);
}

window.addEventListener('hashchange', () => { rendered = ''; schedule(0); });
document.addEventListener('visibilitychange', () => { if (!document.hidden) schedule(0); });
// A first read now and a second one soon: rates need two reads.
tick().then(() => schedule(1000));
