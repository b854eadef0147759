/**
 * The inspector's page in a real browser: Debian's headless Chromium
 * (/usr/bin/chromium, or $CHROMIUM_PATH) driven by playwright-core, which
 * downloads nothing. The page loads, shows a known channel's fill, marks a
 * real deadlock cycle, renders a hostile channel name as text, updates at
 * least 4 times a second and draws pipeline stages; it makes no request
 * beyond the inspector. A screenshot goes to test/artifacts/inspector.png.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { suite, assert } from "./_harness.js";
import { configureDeadlockDetection, create, createChannel, inspect, type Interpreter, serveInspector } from "../src/index.js";
import type { PipelineStats } from "../src/inspect/pipelines.js";
import { ARTIFACTS, launchChromium } from "./fixtures/lab-chromium.js";

const test = suite("inspect-page");

configureDeadlockDetection({ mode: "report", after: 60_000 });
const HOSTILE = "<img src=x onerror=alert(1)>";

test("the page shows fill, a deadlock cycle, names as text, >= 4 updates a second; a screenshot is saved", async () => {
  const [fillRx, fillTx] = createChannel<number>({ capacity: 8, name: "fill-me" });
  for (let i = 0; i < 3; i++) fillTx.trySend(i);
  const [hostileRx, hostileTx] = createChannel<number>({ capacity: 2, name: HOSTILE });
  hostileTx.trySend(1);
  const [aRx, aTx] = createChannel<number>({ capacity: 0, name: "to-parser" });
  const [bRx, bTx] = createChannel<number>({ capacity: 1, name: "to-writer" });
  const interpreters: Interpreter[] = [await create({ name: "parser" }), await create({ name: "writer" })];
  const [a, b] = interpreters as [Interpreter, Interpreter];
  void a.exec("inbox.recvSync(); peer.sendSync(1)", { bind: { inbox: aRx, peer: bTx } }).catch(() => {});
  void b.exec("inbox.recvSync(); peer.sendSync(1)", { bind: { inbox: bRx, peer: aTx } }).catch(() => {});
  const inspector = await serveInspector();
  const browser = await launchChromium();
  const dialogs: string[] = [];
  const foreign: string[] = [];
  try {
    const page = await browser.context.newPage();
    page.on("dialog", (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
    page.on("request", (req) => {
      if (!req.url().startsWith(inspector.url)) foreign.push(req.url());
    });
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(inspector.url);

    // A known channel's fill: 3 of 8.
    const fillRow = page.locator(`tr[data-channel="${fillRx.id}"]`);
    await fillRow.waitFor({ timeout: 15_000 });
    assert.equal(await fillRow.locator("svg.bar").getAttribute("data-fill"), "0.375");
    assert.match(await fillRow.innerText(), /3 \/ 8/);

    // The deadlock: both edges of the cycle red, both nodes marked, a banner naming both.
    await page.locator("path.edge.deadlock").nth(1).waitFor({ timeout: 15_000 });
    const red = await page.locator("path.edge.deadlock").evaluateAll((paths) => paths.map((p) => `${p.getAttribute("data-from")}>${p.getAttribute("data-to")}`));
    assert.ok(red.includes(`${a.id}>${b.id}`) && red.includes(`${b.id}>${a.id}`), red.join(" "));
    assert.equal(await page.locator(`g.node.in-deadlock[data-id="${a.id}"]`).count(), 1);
    const banner = await page.locator(".alert.deadlock").innerText();
    assert.match(banner, /parser/);
    assert.match(banner, /writer/);

    // The hostile name is text: no element made of it, no script run.
    const hostileRow = page.locator(`tr[data-channel="${hostileRx.id}"]`);
    assert.equal(await hostileRow.locator("td.name").first().textContent(), HOSTILE);
    assert.equal(await page.locator("#channels img").count(), 0);

    // Updates: at least 4 a second, as the page itself counts them.
    await page.waitForFunction(() => Number(document.body.getAttribute("data-frames")) >= 25, undefined, { timeout: 15_000 });
    const rate = Number(await page.locator("#rate").getAttribute("data-rate"));
    assert.ok(rate >= 4, `${rate} updates/s`);

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "inspector.png"), fullPage: true });
    assert.equal(dialogs, []);
    assert.equal(foreign, []);
    assert.equal(errors, []);
  } finally {
    await browser.close();
    await inspector.close();
    await Promise.all(interpreters.map((i) => i.terminate()));
    for (const end of [fillRx, hostileRx]) end.close();
  }
}, { timeout: 90_000 });

test("pipeline stages: queue against capacity, busy / back-pressured / idle, the bottleneck marked", async () => {
  const pipeline: PipelineStats = {
    name: "ingest",
    elapsedMs: 4200,
    inFlight: 21,
    bottleneck: "parse",
    stages: [
      { name: "parse", workers: 2, capacity: 16, overflow: "wait", queued: 12, in: 900, out: 880, dropped: 0, failed: 1, busyMsPerSecond: 930, backpressuredMsPerSecond: 20, idleMsPerSecond: 50, serviceUs: { p50: 410, p99: 1900 }, itemsPerSecond: 210 },
      { name: "store", workers: 1, capacity: 4, overflow: "wait", queued: 1, in: 880, out: 880, dropped: 0, failed: 0, busyMsPerSecond: 300, backpressuredMsPerSecond: 0, idleMsPerSecond: 700, serviceUs: { p50: 90, p99: 300 }, itemsPerSecond: 209 },
    ],
  };
  const inspector = await serveInspector({ source: () => ({ ...inspect(), pipelines: [pipeline] }) });
  const browser = await launchChromium();
  try {
    const page = await browser.context.newPage();
    await page.goto(inspector.url);
    const parse = page.locator('tr[data-stage="parse"]');
    await parse.waitFor({ timeout: 15_000 });
    assert.match(await parse.innerText(), /bottleneck/);
    assert.match(await parse.innerText(), /12 \/ 16/);
    assert.equal(await parse.locator("svg.bar").getAttribute("data-fill"), "0.750");
    assert.equal(await parse.locator("svg.stage-bars rect").count(), 3);
    assert.match(await page.locator('tr[data-stage="store"]').innerText(), /300 \/ 0 \/ 700/);
  } finally {
    await browser.close();
    await inspector.close();
  }
}, { timeout: 60_000 });

test.run();
