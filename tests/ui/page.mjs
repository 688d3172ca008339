// Drives bindwatch's timeline page in Debian's Chromium and prints what it
// measured as one JSON document; the callers judge it.
//
//   node tests/ui/page.mjs story URL OUTDIR   geometry, a scripted drag zoom,
//       the table's rows, a click on a mark and on a row; screenshots of the
//       default and the zoomed view in OUTDIR (tests/timeline_page.rs)
//   node tests/ui/page.mjs fit URL            the default view's geometry
//   node tests/ui/page.mjs bench FILE ROUNDS  time to open a large page and
//       to redraw it per zoom step (bench/ui)
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [mode, target, arg] = process.argv.slice(2);

async function open() {
  const profile = mkdtempSync(join(tmpdir(), 'bindwatch-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1300, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const close = async () => { await ctx.close(); rmSync(profile, { recursive: true, force: true }); };
  return { ctx, page: ctx.pages()[0] || await ctx.newPage(), close };
}

// Where the page's elements are, as the browser laid them out.
async function geometry(page) {
  return page.evaluate(() => {
    const box = e => { const r = e.getBoundingClientRect(); return { left: r.left, right: r.right, width: r.width }; };
    const svg = document.getElementById('lanes');
    return {
      plot: box(document.getElementById('plot')),
      view: [Number(svg.dataset.viewFrom), Number(svg.dataset.viewTo)],
      axis: [...svg.querySelectorAll(':scope > text.axis')].map(t => t.textContent),
      bars: [...svg.querySelectorAll('rect.bar')].map(b => ({
        ...box(b), label: b.dataset.label, open: b.dataset.open === '1', row: Number(b.dataset.row),
        labelled: [...svg.querySelectorAll('text.bar-label')].some(t => t.dataset.for === b.dataset.label),
      })),
      marks: [...svg.querySelectorAll('circle.mark')].map(m => ({ ...box(m), count: Number(m.dataset.count), row: Number(m.dataset.row) })),
      alerts: [...svg.querySelectorAll('rect.alert')].map(a => ({ ...box(a), alert: a.dataset.alert, row: Number(a.dataset.row) })),
      highlights: svg.querySelectorAll('rect.hl').length,
      selectedInPicture: [...svg.querySelectorAll('.sel')].map(e => Number(e.dataset.row)),
      rows: [...document.querySelectorAll('#rows tr.row')].map(tr => ({
        row: Number(tr.dataset.row), kind: tr.cells[1].textContent, count: tr.cells[2].textContent,
        summary: tr.cells[6].textContent, selected: tr.classList.contains('selected'),
      })),
      members: document.querySelectorAll('#rows tr.member').length,
      card: document.getElementById('card').hidden ? null : document.getElementById('card').innerText,
    };
  });
}

async function story(url, outdir) {
  const { page, close } = await open();
  await page.goto(url);
  await page.waitForFunction(() => window.bindwatchPage && window.bindwatchPage.draws > 0);
  const out = { default: await geometry(page) };
  await page.screenshot({ path: join(outdir, 'timeline-default.png'), fullPage: true });
  // The whole window, as the page drew it before it fitted the records.
  await page.keyboard.press('w');
  out.whole = await geometry(page);
  await page.keyboard.press('0');
  // Drag across the first bar too narrow for its label.
  const hidden = out.default.bars.find(b => !b.labelled);
  out.dragged = hidden ? hidden.label : null;
  if (hidden) {
    const y = await page.evaluate(() => {
      const r = document.getElementById('plot').getBoundingClientRect();
      return r.top + 10;
    });
    const p = out.default.plot;
    const from = Math.max(p.left + 1, hidden.left - 15), to = Math.min(p.right - 1, hidden.right + 15);
    await page.mouse.move(from, y);
    await page.mouse.down();
    await page.mouse.move((from + to) / 2, y, { steps: 4 });
    await page.mouse.move(to, y, { steps: 4 });
    await page.mouse.up();
  }
  out.zoomed = await geometry(page);
  await page.screenshot({ path: join(outdir, 'timeline-zoomed.png'), fullPage: true });
  // A click on a mark selects its row and shows its record.
  await page.keyboard.press('0');
  const mark = (await geometry(page)).marks[0];
  if (mark) {
    const y = await page.evaluate(() => {
      const m = document.querySelector('circle.mark');
      const r = m.getBoundingClientRect();
      return r.top + r.height / 2;
    });
    await page.mouse.click((mark.left + mark.right) / 2, y);
    out.clickedMark = mark;
    out.afterMark = await geometry(page);
  }
  // A click on a grouped failure's row highlights it in the picture; its
  // button lists the records behind it.
  const group = out.default.rows.find(r => r.kind === 'bind_failed' && /×/.test(r.count));
  if (group) {
    await page.click(`#rows tr.row[data-row="${group.row}"] td:nth-child(7)`);
    out.clickedRow = group.row;
    out.afterRow = await geometry(page);
    await page.click(`#rows tr.row[data-row="${group.row}"] button.expand`);
    out.expanded = await geometry(page);
  }
  // The wheel zooms around the pointer, the arrow keys pan, Esc resets.
  await page.keyboard.press('0');
  const plot = await page.evaluate(() => { const r = document.getElementById('plot').getBoundingClientRect(); return [r.left + r.width / 2, r.top + 10]; });
  await page.mouse.move(plot[0], plot[1]);
  const viewBefore = (await geometry(page)).view;
  for (let i = 0; i < 3; i++) await page.mouse.wheel(0, -100);
  // Wheel events arrive asynchronously: wait until the drawn view moves.
  await page.waitForFunction(v => {
    const svg = document.getElementById('lanes');
    return Number(svg.dataset.viewFrom) !== v[0] || Number(svg.dataset.viewTo) !== v[1];
  }, viewBefore);
  out.wheeled = (await geometry(page)).view;
  await page.keyboard.press('ArrowRight');
  out.panned = (await geometry(page)).view;
  await page.keyboard.press('Escape');
  out.reset = (await geometry(page)).view;
  await close();
  return out;
}

const median = xs => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

async function bench(file, rounds) {
  const opens = [], draws = [], records = [];
  for (let i = 0; i < rounds; i++) {
    const { page, close } = await open();
    const t = Date.now();
    await page.goto('file://' + file);
    await page.waitForFunction(() => window.bindwatchPage && window.bindwatchPage.draws > 0);
    // Until the page is drawn and the browser has laid it out.
    await page.evaluate(() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))));
    opens.push(Date.now() - t);
    // Zoom in step by step around the middle with the wheel, then out.
    const box = await page.evaluate(() => { const r = document.getElementById('plot').getBoundingClientRect(); return [r.left + r.width / 2, r.top + 20]; });
    await page.mouse.move(box[0], box[1]);
    for (const dy of [...Array(12).fill(-100), ...Array(12).fill(100)]) {
      await page.mouse.wheel(0, dy);
      const ms = await page.evaluate(() => new Promise(r => requestAnimationFrame(() => r(window.bindwatchPage.lastDrawMs))));
      draws.push(ms);
    }
    records.push(await page.evaluate(() => JSON.parse(document.getElementById('picture').textContent).records));
    await close();
  }
  return {
    records: records[0],
    rounds,
    open_ms: opens, open_ms_median: median(opens),
    zoom_draw_ms_median: median(draws), zoom_draw_ms_max: Math.max(...draws), zoom_steps: draws.length,
  };
}

async function fit(url) {
  const { page, close } = await open();
  await page.goto(url);
  await page.waitForFunction(() => window.bindwatchPage && window.bindwatchPage.draws > 0);
  const out = { default: await geometry(page) };
  await close();
  return out;
}

const result = mode === 'story' ? await story(target, arg)
  : mode === 'fit' ? await fit(target)
  : mode === 'bench' ? await bench(target, Number(arg || 5))
  : (() => { throw new Error('usage: page.mjs story URL OUTDIR | bench FILE ROUNDS'); })();
process.stdout.write(JSON.stringify(result) + '\n');
