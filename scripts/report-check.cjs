// Opens a kcirc report (and its standalone SVG) in headless Chromium as a person would and checks what they
// would see: a page that is not blank, no network request of any kind, no console error, one SVG element per
// circuit node and per drawn edge, the edge control and node highlighting working.
//
// node scripts/report-check.cjs --chromium /usr/bin/chromium --report r.html --svg c.svg --circuit c.json
//      [--max-edges 5000] [--edges 500] [--screenshot out.png] [--width 1500] [--height 1000]
// Needs the npm package playwright-core (no browser download: it drives the given Chromium); PLAYWRIGHT_CORE
// names its folder. Prints one line per check and a closing `test result:` line; exits 1 if any check failed.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const circuit = JSON.parse(fs.readFileSync(args.circuit, 'utf8'));
const maxEdges = Number(args['max-edges'] || 5000);
const shownEdges = Number(args.edges || 500);
const drawn = Math.min(circuit.edges.length, maxEdges);
const shown = Math.min(drawn, shownEdges);

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail === undefined ? '' : ': ' + detail}`);
}

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kcirc-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: args.chromium,
    headless: true,
    viewport: { width: Number(args.width || 1500), height: Number(args.height || 1000) },
    deviceScaleFactor: 1,
    // Without the background-networking flags Chromium itself tries the network.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-default-apps', '--disable-extensions', '--disable-dev-shm-usage'],
  });
  const requests = [];
  const errors = [];
  context.on('request', (r) => requests.push(r.url()));
  const watch = (page) => {
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
  };
  try {
    const page = await context.newPage();
    watch(page);
    await page.goto('file://' + path.resolve(args.report), { waitUntil: 'load' });
    await page.waitForTimeout(300);
    const counts = await page.evaluate(() => ({
      nodes: document.querySelectorAll('svg.circuit g.node').length,
      edges: document.querySelectorAll('svg.circuit path.edge').length,
      visible: [...document.querySelectorAll('svg.circuit path.edge')].filter((e) => getComputedStyle(e).display !== 'none').length,
      sections: [...document.querySelectorAll('section')].map((s) => s.id),
      scripts: [...document.scripts].map((s) => s.src).filter(Boolean),
    }));
    check('one element per circuit node', counts.nodes === circuit.nodes.length, `${counts.nodes} of ${circuit.nodes.length}`);
    check('one element per drawn edge', counts.edges === drawn, `${counts.edges} of ${drawn}`);
    check('the strongest edges shown at first', counts.visible === shown, `${counts.visible} visible, ${shown} expected`);
    check('no external script', counts.scripts.length === 0, counts.scripts.join(' '));
    console.log(`     sections: ${counts.sections.join(' ')}`);

    // As the page opens: the screenshot before anything is touched.
    const shot = await page.screenshot({ type: 'png', fullPage: false });
    if (args.screenshot) fs.writeFileSync(args.screenshot, shot);
    // Not blank: the screenshot's pixel variance, measured by the browser itself on a canvas.
    const probe = await context.newPage();
    watch(probe);
    await probe.setContent('<canvas></canvas>');
    const stats = await probe.evaluate(async (b64) => {
      const img = new Image();
      img.src = 'data:image/png;base64,' + b64;
      await img.decode();
      const c = document.querySelector('canvas');
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let n = 0, sum = 0, sq = 0, dark = 0;
      for (let i = 0; i < d.length; i += 4) {
        const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
        n++; sum += y; sq += y * y;
        if (y < 128) dark++;
      }
      const mean = sum / n;
      return { w: c.width, h: c.height, variance: sq / n - mean * mean, dark: dark / n };
    }, shot.toString('base64'));
    check('the screenshot is not blank', stats.variance > 100 && stats.dark > 0.002,
      `${stats.w}×${stats.h}, luminance variance ${stats.variance.toFixed(0)}, dark pixels ${(100 * stats.dark).toFixed(2)}%`);
    await probe.close();

    // The control: every drawn edge at its maximum; hovering a node highlights its edges only.
    if (drawn > 0) {
      const all = await page.evaluate((n) => {
        const r = document.getElementById('shown');
        r.value = String(n);
        r.dispatchEvent(new Event('input'));
        return [...document.querySelectorAll('svg.circuit path.edge')].filter((e) => getComputedStyle(e).display !== 'none').length;
      }, drawn);
      check('the control shows every drawn edge', all === drawn, `${all}`);
      await page.hover('svg.circuit g.node[data-node="logits"], svg.circuit g.node');
      const hl = await page.evaluate(() => ({
        focus: document.querySelector('svg.circuit').classList.contains('focus'),
        on: document.querySelectorAll('svg.circuit path.edge.hl').length,
      }));
      check('hovering a node highlights its edges', hl.focus && hl.on > 0, `${hl.on} highlighted`);
      await page.mouse.move(0, 0);
      await page.evaluate((n) => {
        const r = document.getElementById('shown');
        r.value = String(n);
        r.dispatchEvent(new Event('input'));
      }, shown);
    }

    // The standalone SVG: parses as XML on its own, with the same counts.
    if (args.svg) {
      const svg = await context.newPage();
      watch(svg);
      await svg.goto('file://' + path.resolve(args.svg), { waitUntil: 'load' });
      const s = await svg.evaluate(() => ({
        root: document.documentElement.nodeName,
        parseError: document.getElementsByTagName('parsererror').length,
        nodes: document.querySelectorAll('g.node').length,
        edges: document.querySelectorAll('path.edge').length,
      }));
      const svgEdges = Math.min(circuit.edges.length, shownEdges);
      check('the SVG file is well-formed SVG', s.root === 'svg' && s.parseError === 0, `root ${s.root}`);
      check('the SVG holds one element per node and drawn edge', s.nodes === circuit.nodes.length && s.edges === svgEdges,
        `${s.nodes} nodes, ${s.edges} edges`);
    }
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  const outside = requests.filter((u) => !u.startsWith('file:') && !u.startsWith('data:'));
  check('no network request', outside.length === 0, outside.length ? outside.join(' ') : `${requests.length} requests, all file: or data:`);
  check('no console error', errors.length === 0, errors.join(' | '));
  console.log(`test result: ${failed ? 'FAILED' : 'ok'}. ${passed} passed; ${failed} failed (report in headless Chromium)`);
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.error(`report-check: ${e.stack || e}`);
  process.exit(1);
});
