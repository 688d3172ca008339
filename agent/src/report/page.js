(function () {
'use strict';
// The picture's data is computed by bindwatch (report::picture); this
// script only draws it, zooms and pans it, and links it to the table.
const P = JSON.parse(document.getElementById('picture').textContent);
const NS = 'http://www.w3.org/2000/svg';
const W = 1200, LEFT = 110, RIGHT = 10, LANE = 26, TOP = 22, PW = W - LEFT - RIGHT;
const OV_H = 34;
const MIN_SPAN = 1e6;
const svg = document.getElementById('lanes');
const ov = document.getElementById('overview');
const H = TOP + Math.max(1, P.lanes.length) * LANE + 8;
svg.setAttribute('width', W); svg.setAttribute('height', H);
ov.setAttribute('width', W); ov.setAttribute('height', OV_H);
const fitView = [P.fit_from_ns, Math.max(P.fit_to_ns, P.fit_from_ns + MIN_SPAN)];
const whole = [Math.min(P.from_ns, fitView[0]), Math.max(P.to_ns, fitView[1])];
let view = fitView.slice();
let selected = null;
let lastInput = -Infinity;
// What tests and the benchmark read: the view and the cost of drawing it.
const page = { draws: 0, lastDrawMs: 0, view: () => view.slice(), setView: (a, b) => setView(a, b) };
window.bindwatchPage = page;

function el(name, attrs, parent, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}
// Local time of the host that wrote the page, as the table shows it.
function parts(ns) {
  return new Date(ns / 1e6 + P.utc_offset_s * 1000).toISOString();
}
function full(ns) { return parts(ns).replace('T', ' ').slice(0, 23); }
function label(ns, step) {
  const s = parts(ns);
  if (step < 1e9) return s.slice(11, 23);
  if (step < 86400e9) return s.slice(11, 19);
  return s.slice(5, 16).replace('T', ' ');
}
function duration(ns) {
  const s = ns / 1e9;
  if (s < 1) return (ns / 1e6).toFixed(s < 0.01 ? 2 : 0) + ' ms';
  if (s < 120) return s.toFixed(s < 10 ? 2 : 0) + ' s';
  if (s < 7200) return (s / 60).toFixed(1) + ' min';
  if (s < 172800) return (s / 3600).toFixed(1) + ' h';
  return (s / 86400).toFixed(1) + ' d';
}
const STEPS = [1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9, 2e9, 5e9, 1e10, 15e9, 3e10, 6e10,
  12e10, 3e11, 6e11, 9e11, 18e11, 36e11, 72e11, 108e11, 216e11, 432e11, 864e11, 1728e11, 6048e11];

const x = t => LEFT + PW * (t - view[0]) / (view[1] - view[0]);
const tAt = px => view[0] + (px - LEFT) / PW * (view[1] - view[0]);
const clampX = v => Math.max(LEFT, Math.min(LEFT + PW, v));
const ox = t => LEFT + PW * (t - whole[0]) / (whole[1] - whole[0]);
const otAt = px => whole[0] + (px - LEFT) / PW * (whole[1] - whole[0]);

// The time axis of the lanes: ticks at a round step, with grid lines.
function ticks(g, a, b, y) {
  const span = b - a;
  const step = STEPS.find(s => span / s <= 8) || STEPS[STEPS.length - 1];
  const off = P.utc_offset_s * 1e9;
  for (let t = Math.ceil((a + off) / step) * step - off; t <= b; t += step) {
    const px = x(t);
    el('line', { class: 'grid', x1: px, x2: px, y1: y + 4, y2: H }, g);
    const anchor = px > LEFT + PW - 40 ? 'end' : px < LEFT + 40 ? 'start' : 'middle';
    el('text', { class: 'axis', x: px, y: y, 'text-anchor': anchor }, g, label(t, step));
  }
}

function drawOverview() {
  ov.textContent = '';
  el('rect', { class: 'ov-fit', x: ox(fitView[0]), y: 0, height: OV_H, width: Math.max(2, ox(fitView[1]) - ox(fitView[0])) }, ov);
  // Failures over the whole window, as a density strip.
  const cols = new Array(PW).fill(0);
  for (const l of P.lanes) for (const m of l.marks) {
    const c = Math.floor(ox(m.time_ns) - LEFT);
    if (c >= 0 && c < PW) cols[c] += m.count;
  }
  const max = Math.max(1, ...cols);
  cols.forEach((n, c) => {
    if (n) {
      const h = 4 + 16 * Math.log(1 + n) / Math.log(1 + max);
      el('rect', { class: 'ov-fail', x: LEFT + c, y: OV_H - 2 - h, width: 1, height: h }, ov);
    }
  });
  el('text', { class: 'axis', x: 4, y: 13 }, ov, 'window');
  el('text', { class: 'axis', x: LEFT, y: 10 }, ov, full(whole[0]));
  el('text', { class: 'axis', x: LEFT + PW, y: 10, 'text-anchor': 'end' }, ov, full(whole[1]));
  el('rect', { id: 'ov-view', class: 'ov-view', x: 0, y: 1, height: OV_H - 2, width: 1 }, ov);
}

// Hover text, made when asked for: a busy day has thousands of elements
// and a redraw per zoom step must stay cheap.
let tips = [];
function tip(e, text) {
  e.dataset.tip = tips.length;
  tips.push(text);
}
const tipBox = document.getElementById('tip');
svg.addEventListener('mousemove', e => {
  const i = e.target.dataset && e.target.dataset.tip;
  if (i === undefined) { tipBox.hidden = true; return; }
  tipBox.textContent = tips[i]();
  tipBox.style.left = (e.pageX + 12) + 'px';
  tipBox.style.top = (e.pageY + 12) + 'px';
  tipBox.hidden = false;
});
svg.addEventListener('mouseleave', () => { tipBox.hidden = true; });

function draw() {
  const started = performance.now();
  svg.textContent = '';
  tips = [];
  svg.dataset.viewFrom = view[0];
  svg.dataset.viewTo = view[1];
  const defs = el('defs', {}, svg);
  el('rect', { x: LEFT, y: 0, width: PW, height: H }, el('clipPath', { id: 'plotclip' }, defs));
  el('rect', { id: 'plot', class: 'plot', x: LEFT, y: TOP - 4, width: PW, height: P.lanes.length * LANE }, svg);
  ticks(svg, view[0], view[1], 12);
  const hl = selected === null ? null : P.rows[selected];
  P.lanes.forEach((l, i) => {
    const y = TOP + i * LANE;
    const g = el('g', { class: 'lane', 'data-port': l.port, 'data-proto': l.proto }, svg);
    el('text', { x: 4, y: y + 16, class: 'lane-label' }, g, l.proto + ' ' + l.port);
    const c = el('g', { 'clip-path': 'url(#plotclip)' }, g);
    if (hl && hl.port === l.port && hl.proto === l.proto) {
      const a = x(hl.first_ns), b = x(hl.last_ns || hl.first_ns);
      el('rect', { class: 'hl', x: Math.min(a, b) - 3, y: y, height: LANE - 2, width: Math.abs(b - a) + 6 }, c);
    }
    for (const a of l.alerts) {
      const end = a.end_ns || P.to_ns;
      if (end < view[0] || a.start_ns > view[1]) continue;
      const x0 = clampX(x(a.start_ns)), x1 = clampX(x(end));
      const r = el('rect', { class: 'alert', 'data-alert': a.alert, 'data-row': a.row, x: x0, y: y, height: LANE - 2, width: Math.max(2, x1 - x0) }, c);
      if (a.row === selected && a.row !== null) r.classList.add('sel');
      tip(r, () => a.alert + ' from ' + full(a.start_ns) + (a.end_ns ? ' to ' + full(a.end_ns) : ' (still firing)'));
    }
    for (const b of l.bars) {
      const end = b.end_ns || P.to_ns;
      if (end < view[0] || b.start_ns > view[1]) continue;
      const x0 = clampX(x(b.start_ns)), x1 = clampX(x(end));
      const r = el('rect', { class: 'bar', 'data-label': b.label, 'data-row': b.row, 'data-open': b.end_ns ? '0' : '1', x: x0, y: y + 4, height: LANE - 10, width: Math.max(2, x1 - x0) }, c);
      if (b.row === selected && b.row !== null) r.classList.add('sel');
      tip(r, () => b.label + ' held ' + l.proto + ' ' + l.port + ' from ' + full(b.start_ns) + (b.end_ns ? ' to ' + full(b.end_ns) : ' to the end of the window'));
      // A label as soon as the bar can hold it.
      if (x1 - x0 >= b.label.length * 6.2 + 8) el('text', { x: x0 + 4, y: y + 17, class: 'bar-label', 'data-for': b.label }, c, b.label);
    }
    // Marks that would overlap at this zoom are drawn as one.
    let cur = null;
    const merged = [];
    for (const m of l.marks) {
      if (m.time_ns < view[0] || m.time_ns > view[1]) continue;
      const px = x(m.time_ns);
      if (cur && px - cur.px < 7) { cur.count += m.count; continue; }
      cur = { px: px, count: m.count, m: m };
      merged.push(cur);
    }
    for (const k of merged) {
      const mc = el('circle', { class: 'mark', 'data-count': k.count, 'data-row': k.m.row, cx: k.px, cy: y + LANE / 2 - 1, r: k.count > 1 ? 5 : 3.5 }, c);
      if (k.m.row === selected && k.m.row !== null) mc.classList.add('sel');
      tip(mc, () => (k.count > 1 ? k.count + ' failed binds from ' : '') + full(k.m.time_ns) + ': ' + k.m.summary);
    }
  });
  if (P.at_ns && P.at_ns >= view[0] && P.at_ns <= view[1]) {
    const ax = x(P.at_ns);
    el('line', { id: 'at', x1: ax, x2: ax, y1: 14, y2: H - 4, stroke: '#222', 'stroke-dasharray': '4 3' }, svg);
    el('text', { x: ax + 3, y: H - 6, class: 'axis' }, svg, 'at ' + full(P.at_ns).slice(11));
  }
  const v = document.getElementById('ov-view');
  const a = ox(view[0]), b = ox(view[1]);
  v.setAttribute('x', a); v.setAttribute('width', Math.max(2, b - a));
  document.getElementById('viewtext').textContent =
    full(view[0]) + ' to ' + full(view[1]).slice(11) + ' (' + duration(view[1] - view[0]) + ')';
  page.draws++;
  page.lastDrawMs = performance.now() - started;
}

function setView(a, b) {
  let span = Math.min(Math.max(MIN_SPAN, b - a), whole[1] - whole[0]);
  a = Math.max(whole[0], Math.min(a, whole[1] - span));
  view = [a, a + span];
  draw();
  history.replaceState(null, '', '#view=' + Math.round(view[0]) + ',' + Math.round(view[1]));
}
function zoom(f, at) {
  const c = at === undefined ? (view[0] + view[1]) / 2 : at;
  setView(c - (c - view[0]) * f, c + (view[1] - c) * f);
}
function pan(frac) {
  const d = (view[1] - view[0]) * frac;
  setView(view[0] + d, view[1] + d);
}

// Dragging selects a span to zoom into (on the lanes or the overview); a
// press without a drag is a click (on an element: its record).
function brush(target, toTime, onClick) {
  let start = null, rect = null;
  const px = e => e.clientX - target.getBoundingClientRect().left;
  target.addEventListener('mousedown', e => {
    if (e.button !== 0) return;
    lastInput = performance.now();
    start = px(e);
    rect = null;
    e.preventDefault();
    target.focus && target.focus();
  });
  window.addEventListener('mousemove', e => {
    if (start === null) return;
    const p = clampX(px(e));
    if (!rect && Math.abs(p - start) > 4) rect = el('rect', { class: 'brush', y: 0, height: target.getAttribute('height') }, target);
    if (rect) { rect.setAttribute('x', Math.min(start, p)); rect.setAttribute('width', Math.abs(p - start)); }
  });
  window.addEventListener('mouseup', e => {
    if (start === null) return;
    const p = clampX(px(e));
    const s = start;
    start = null;
    if (rect) { rect.remove(); rect = null; setView(toTime(Math.min(s, p)), toTime(Math.max(s, p))); }
    else onClick(e, s);
  });
}
brush(svg, tAt, e => {
  const hit = e.target.closest && e.target.closest('[data-row]');
  if (hit && hit.dataset.row !== '' && hit.dataset.row !== 'null') select(Number(hit.dataset.row), true);
});
brush(ov, otAt, (e, p) => {
  const c = otAt(p), h = (view[1] - view[0]) / 2;
  setView(c - h, c + h);
});
svg.addEventListener('wheel', e => {
  e.preventDefault();
  lastInput = performance.now();
  if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) pan((e.deltaX || e.deltaY) > 0 ? 0.1 : -0.1);
  else zoom(e.deltaY > 0 ? 1.25 : 0.8, tAt(e.clientX - svg.getBoundingClientRect().left));
}, { passive: false });
document.addEventListener('keydown', e => {
  if (e.target.tagName === 'INPUT' || e.ctrlKey || e.metaKey || e.altKey) return;
  lastInput = performance.now();
  const act = {
    '+': () => zoom(0.5), '=': () => zoom(0.5), '-': () => zoom(2), '_': () => zoom(2),
    ArrowLeft: () => pan(-0.2), ArrowRight: () => pan(0.2),
    '0': () => setView(fitView[0], fitView[1]), Home: () => setView(fitView[0], fitView[1]),
    Escape: () => setView(fitView[0], fitView[1]), w: () => setView(whole[0], whole[1]),
  }[e.key];
  if (act) { act(); e.preventDefault(); }
});
document.getElementById('fit').onclick = () => setView(fitView[0], fitView[1]);
document.getElementById('whole').onclick = () => setView(whole[0], whole[1]);
document.getElementById('zin').onclick = () => zoom(0.5);
document.getElementById('zout').onclick = () => zoom(2);

// The table: one row per episode, per group of repeated failures, per
// other record; a group expands to its records.
const tbody = document.querySelector('#rows tbody');
const trs = [];
function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
P.rows.forEach((r, i) => {
  const tr = document.createElement('tr');
  tr.className = 'row ' + r.kind;
  tr.dataset.row = i;
  let when = full(r.first_ns);
  if (r.kind === 'alert') when += ' to ' + (r.last_ns ? full(r.last_ns).slice(11) : 'still firing');
  else if (r.last_ns && r.last_ns !== r.first_ns) when += ' to ' + full(r.last_ns).slice(11);
  cell(tr, when);
  cell(tr, r.kind === 'alert' ? 'alert episode' : r.kind);
  const n = cell(tr, r.kind === 'alert'
    ? r.count + (r.count > 1 ? ' notifications' : ' notification') + (r.covered !== undefined ? ', ' + r.covered + (r.covered === 1 ? ' failed bind' : ' failed binds') : '')
    : r.count > 1 ? r.count + '×' : '');
  if (r.kind === 'bind_failed' && r.count > 1) {
    const b = document.createElement('button');
    b.className = 'expand';
    b.textContent = '▸';
    b.onclick = e => { e.stopPropagation(); expand(i, tr, b); };
    n.prepend(b);
  }
  cell(tr, (r.proto || '-') + ' ' + (r.port === undefined ? '' : r.port));
  cell(tr, r.pid === undefined ? '' : String(r.pid));
  cell(tr, r.comm || '');
  cell(tr, r.summary);
  tr.onclick = () => { lastInput = performance.now(); select(i, false); };
  tbody.appendChild(tr);
  trs.push(tr);
});
function expand(i, tr, button) {
  const r = P.rows[i];
  if (tr.members) {
    for (const m of tr.members) m.remove();
    tr.members = null;
    button.textContent = '▸';
    return;
  }
  tr.members = [];
  let after = tr;
  const add = (t, s) => {
    const m = document.createElement('tr');
    m.className = 'member';
    cell(m, t); cell(m, 'bind_failed'); cell(m, ''); cell(m, ''); cell(m, ''); cell(m, ''); cell(m, s);
    after.after(m);
    after = m;
    tr.members.push(m);
  };
  for (const m of r.members) add(full(m.time_ns), m.summary);
  if (r.members_left_out) add('', 'and ' + r.members_left_out + ' more');
  button.textContent = '▾';
}

function showCard(r) {
  const card = document.getElementById('card');
  card.textContent = '';
  const h = document.createElement('h3');
  h.textContent = (r.kind === 'alert' ? 'Alert episode' : r.kind) + ' at ' + full(r.first_ns);
  card.appendChild(h);
  const dl = document.createElement('dl');
  for (const [k, v] of r.card) {
    const dt = document.createElement('dt'); dt.textContent = k; dl.appendChild(dt);
    const dd = document.createElement('dd'); dd.textContent = v; dl.appendChild(dd);
  }
  card.appendChild(dl);
  card.hidden = false;
}

function select(i, fromPicture) {
  if (!(i in P.rows)) return;
  selected = i;
  for (const tr of trs) tr.classList.remove('selected');
  trs[i].classList.add('selected');
  showCard(P.rows[i]);
  if (fromPicture) {
    trs[i].scrollIntoView({ block: 'nearest' });
    draw();
  } else {
    // Bring the row's span into the picture, keeping the zoom if it fits.
    const r = P.rows[i], a = r.first_ns, b = r.last_ns || r.first_ns, span = view[1] - view[0];
    if (a >= view[0] && b <= view[1]) draw();
    else if (b - a < span * 0.9) setView((a + b) / 2 - span / 2, (a + b) / 2 + span / 2);
    else setView(a - (b - a) / 20, b + (b - a) / 20);
  }
}

drawOverview();
const m = /#view=(\d+),(\d+)/.exec(location.hash);
if (m) setView(Number(m[1]), Number(m[2])); else draw();
// /ui reloads with the database's content, keeping the view (in the
// address's fragment), but not while someone is reading.
if (P.refresh_s) {
  setInterval(() => {
    if (performance.now() - lastInput > 60000) location.reload();
  }, P.refresh_s * 1000);
}
})();
