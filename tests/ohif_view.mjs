// Open OHIF pages in headless Chromium (playwright-core, the system Chromium: nothing is downloaded) and
// write, per page, what is on screen as JSON plus a PNG screenshot. Used by tests/ohif_helpers.py. A page
// may list `click`: Playwright selectors to click in turn, each once it shows (a viewer's prompt, a panel
// button), before the page counts as settled.
//
//   node tests/ohif_view.mjs '{"chromium": "/usr/bin/chromium", "nodeModules": ".ohif/node_modules",
//     "timeoutMs": 90000, "pages": [{"url": "http://…/viewer?…", "json": "out.json", "png": "out.png"}]}'
//
// Per page: every console message at every level (OHIF reports render failures at debug/log level only),
// page errors, requests that left the page's origin or failed, the visible text inside the active viewport (HTML and SVG) with bounding boxes, the
// viewport's box, and whether its image is blank (pixel spread of a screenshot of the viewport with the
// text layers hidden).
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

const args = JSON.parse(process.argv[2]);
const require = createRequire(path.resolve(args.nodeModules) + '/');
const { chromium } = require('playwright-core');

const SELECTORS = {
  activePane: '[data-cy="viewport-pane"][data-is-active="true"]',
  viewport: '.cornerstone-viewport-element',
};
const POLL_MS = 500;
const QUIET_POLLS = 4; // with a viewport: it looks the same this many polls in a row, no request open
const QUIET_POLLS_EMPTY = 10; // without one (OHIF failed or is still loading): the page text is unchanged
const BLANK_STD = 2.0; // pixel standard deviation (0–255) below which the viewport image is blank
const INSET = 4; // px left out at each edge of the viewport for the blank check

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// In the page: the active viewport (OHIF marks its pane data-is-active), its box and its visible text items
// (the pane's HTML overlays and the SVG annotation layer over the image); null while there is none.
function readViewport(selectors) {
  const pane = document.querySelector(selectors.activePane);
  const active = pane && pane.querySelector(selectors.viewport);
  if (!active || active.getBoundingClientRect().width === 0) return null;
  const rect = (r) => ({ x: r.x, y: r.y, width: r.width, height: r.height });
  const texts = [];
  const walker = document.createTreeWalker(pane, NodeFilter.SHOW_TEXT);
  const byParent = new Map();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.replace(/\s+/g, ' ').trim();
    if (!text) continue;
    const parent = node.parentElement;
    const style = parent && getComputedStyle(parent);
    if (!parent || style.visibility === 'hidden' || style.display === 'none' || style.opacity === '0') continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    const r = range.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const entry = byParent.get(parent);
    if (entry) {
      entry.text += ' ' + text;
      const x = Math.min(entry.box.x, r.x), y = Math.min(entry.box.y, r.y);
      const right = Math.max(entry.box.x + entry.box.width, r.right);
      const bottom = Math.max(entry.box.y + entry.box.height, r.bottom);
      entry.box = { x, y, width: right - x, height: bottom - y };
    } else {
      const item = { text, box: rect(r), tag: parent.tagName.toLowerCase(), svg: parent instanceof SVGElement };
      byParent.set(parent, item);
      texts.push(item);
    }
  }
  return { viewport: rect(active.getBoundingClientRect()), pane: rect(pane.getBoundingClientRect()), texts };
}

// In the page: mean and standard deviation of a PNG's grey levels.
async function pixelStats(b64) {
  const image = new Image();
  image.src = 'data:image/png;base64,' + b64;
  await image.decode();
  const canvas = new OffscreenCanvas(image.width, image.height);
  const context = canvas.getContext('2d');
  context.drawImage(image, 0, 0);
  const { data } = context.getImageData(0, 0, image.width, image.height);
  let sum = 0, sum2 = 0;
  const n = data.length / 4;
  for (let i = 0; i < data.length; i += 4) {
    const grey = (data[i] + data[i + 1] + data[i + 2]) / 3;
    sum += grey;
    sum2 += grey * grey;
  }
  const mean = sum / n;
  return { mean, std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)) };
}

// The viewport's image alone: hide every text/SVG layer over the canvas for one screenshot, inset so that
// the active pane's highlighted border is not counted as image.
async function imageStats(page, viewport, path) {
  const box = { x: viewport.x + INSET, y: viewport.y + INSET,
    width: viewport.width - 2 * INSET, height: viewport.height - 2 * INSET };
  const pane = SELECTORS.activePane;
  const hide = await page.addStyleTag({
    content: `${pane} * { visibility: hidden !important; } ${pane} canvas { visibility: visible !important; }`,
  });
  try {
    const png = await page.screenshot({ clip: box, animations: 'disabled', path });
    return await page.evaluate(pixelStats, png.toString('base64'));
  } finally {
    await hide.evaluate((node) => node.remove());
  }
}

async function view(browser, spec) {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  await context.addInitScript(() => {
    window.localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
  });
  const page = await context.newPage();
  const consoleMessages = [];
  const pageErrors = [];
  const offOrigin = [];
  const failedRequests = [];
  const origin = new URL(spec.url).origin;
  let inFlight = 0;
  page.on('console', (m) => consoleMessages.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => pageErrors.push(String(e && e.stack ? e.stack : e)));
  page.on('request', (r) => {
    inFlight++;
    const url = r.url();
    if (!url.startsWith(origin + '/') && !url.startsWith('data:') && !url.startsWith('blob:')) offOrigin.push(url);
  });
  page.on('requestfinished', () => inFlight--);
  page.on('requestfailed', (r) => {
    inFlight--;
    failedRequests.push(`${r.url()}: ${r.failure() ? r.failure().errorText : ''}`);
  });

  const started = Date.now();
  await page.goto(spec.url, { waitUntil: 'load', timeout: args.timeoutMs });
  const clicks = spec.click || [];
  let last = '', same = 0, state = null, stats = null, settled = false, clicked = 0;
  while (Date.now() - started < args.timeoutMs) {
    await sleep(POLL_MS);
    if (clicked < clicks.length) {  // the next click, once its target shows (a prompt's "Yes", a panel button)
      const target = page.locator(clicks[clicked]);
      if (await target.count() && await target.first().isVisible()) {
        await target.first().click();
        clicked++;
        same = 0;
        continue;
      }
    }
    state = await page.evaluate(readViewport, SELECTORS);
    stats = state ? await imageStats(page, state.viewport) : null;
    const signature = JSON.stringify(state
      ? [state.texts.map((t) => [t.text, t.box]), state.viewport, Math.round(stats.mean), Math.round(stats.std)]
      : await page.evaluate(() => document.body.innerText));
    same = signature === last && inFlight === 0 ? same + 1 : 0;
    last = signature;
    if (clicked === clicks.length && same >= (state ? QUIET_POLLS : QUIET_POLLS_EMPTY)) { settled = true; break; }
  }
  const settledMs = Date.now() - started;
  await page.screenshot({ path: spec.png });
  if (state) stats = await imageStats(page, state.viewport, spec.imagePng);
  if (spec.html) writeFileSync(spec.html, await page.content());
  const result = {
    url: spec.url,
    settled,
    settledMs,
    console: consoleMessages,
    pageErrors,
    offOrigin,
    failedRequests,
    viewport: state ? state.viewport : null,
    pane: state ? state.pane : null,
    texts: state ? state.texts : [],
    pixelMean: stats ? stats.mean : 0,
    pixelStd: stats ? stats.std : 0,
    blank: !stats || stats.std < BLANK_STD,
  };
  writeFileSync(spec.json, JSON.stringify(result, null, 2));
  await context.close();
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--headless=new', '--no-sandbox', '--disable-gpu'],
});
try {
  for (const spec of args.pages) await view(browser, spec);
} finally {
  await browser.close();
}
