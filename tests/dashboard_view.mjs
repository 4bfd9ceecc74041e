// Drive the dashboard in headless Chromium (playwright-core, the system Chromium: nothing downloaded), the
// same way as ohif_view.mjs drives OHIF. Used by tests/web_helpers.py.
//
//   node tests/dashboard_view.mjs '{"chromium": "/usr/bin/chromium", "nodeModules": ".ohif/node_modules",
//     "state": "cookies.json", "out": "result.json", "timeoutMs": 30000, "steps": [
//       {"goto": "http://127.0.0.1:8080/login"}, {"fill": ["input[name=name]", "admin"]},
//       {"click": "button[type=submit]"}, {"waitFor": "table.worklist"},
//       {"text": ["rows", "#rows"]}, {"screenshot": "worklist.png"}]}'
//
// Steps run in order on one page; `state` keeps the cookies between runs (a login survives); a `signal`
// step writes a file the test waits for (to act while the page is open). The JSON
// written to `out` holds what the `text`, `attr`, `count` and `eval` steps read, the URL after each step,
// every console message and page error, and any request that left the dashboard's origin.
import { createRequire } from 'node:module';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const args = JSON.parse(process.argv[2]);
const require = createRequire(path.resolve(args.nodeModules) + '/');
const { chromium } = require('playwright-core');

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--headless=new', '--no-sandbox', '--disable-gpu'],
});
const result = { values: {}, urls: [], console: [], pageErrors: [], offOrigin: [], failedStep: null, error: null };
try {
  const context = await browser.newContext({
    viewport: { width: args.width || 1280, height: args.height || 800 },
    storageState: args.state && existsSync(args.state) ? args.state : undefined,
  });
  context.setDefaultTimeout(args.timeoutMs || 30000);
  const page = await context.newPage();
  let origin = null;
  page.on('console', (m) => result.console.push({ type: m.type(), text: m.text() }));
  page.on('pageerror', (e) => result.pageErrors.push(String(e)));
  page.on('request', (r) => {
    const url = r.url();
    if (origin && !url.startsWith(origin + '/') && !url.startsWith('data:')) result.offOrigin.push(url);
  });
  for (const [index, step] of args.steps.entries()) {
    try {
      if (step.goto) {
        origin = origin || new URL(step.goto).origin;
        await page.goto(step.goto, { waitUntil: 'load' });
      } else if (step.fill) {
        await page.fill(step.fill[0], step.fill[1]);
      } else if (step.select) {
        await page.selectOption(step.select[0], step.select[1]);
      } else if (step.click) {
        await Promise.all([page.waitForLoadState('load'), page.click(step.click)]);
      } else if (step.waitFor) {
        await page.waitForSelector(step.waitFor, { state: 'visible' });
      } else if (step.waitForText) {
        await page.waitForFunction(
          ([selector, text]) => {
            const el = document.querySelector(selector);
            return el && el.innerText.includes(text);
          }, step.waitForText, { polling: 250 });
      } else if (step.text) {
        result.values[step.text[0]] = await page.innerText(step.text[1]);
      } else if (step.attr) {
        result.values[step.attr[0]] = await page.getAttribute(step.attr[1], step.attr[2]);
      } else if (step.count) {
        result.values[step.count[0]] = await page.locator(step.count[1]).count();
      } else if (step.eval) {
        result.values[step.eval[0]] = await page.evaluate(step.eval[1]);
      } else if (step.signal) {
        writeFileSync(step.signal, page.url());
      } else if (step.screenshot) {
        await page.screenshot({ path: step.screenshot, fullPage: !!step.fullPage, animations: 'disabled' });
      } else {
        throw new Error('unknown step ' + JSON.stringify(step));
      }
      result.urls.push(page.url());
    } catch (error) {
      result.failedStep = index;
      result.error = `step ${index} ${JSON.stringify(step)}: ${error.message}`;
      result.values.__html = await page.content();
      if (args.failureShot) await page.screenshot({ path: args.failureShot, fullPage: true });
      break;
    }
  }
  if (args.state) await context.storageState({ path: args.state });
  await context.close();
} finally {
  await browser.close();
  writeFileSync(args.out, JSON.stringify(result, null, 2));
}
