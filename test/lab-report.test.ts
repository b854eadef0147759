/**
 * report.html in a real browser with every request intercepted: one
 * self-contained file (nothing but the file itself is requested), its
 * plots are SVG drawn by Vega in Node, names escaped; a screenshot goes
 * to test/artifacts/lab-report.png.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { suite, assert } from "./_harness.js";
import { parseLabOptions, type LabOptions } from "../src/lab/options.js";
import { escapeHtml, renderReport } from "../src/lab/report.js";
import { runLab } from "../src/lab/run.js";
import { ARTIFACTS, launchChromium } from "./fixtures/lab-chromium.js";

const test = suite("lab-report");

test("report.html loads with no request beyond itself and shows the table and five plots", async () => {
  const options = parseLabOptions(["--capacities", "0,4,inf", "--messages", "300"]) as LabOptions;
  const result = await runLab(options, { update() {} });
  const started = performance.now();
  const html = await renderReport(result);
  const renderMs = performance.now() - started;
  assert.ok(html.length < 500_000, `${html.length} bytes`);
  const dir = mkdtempSync(join(tmpdir(), "interpreters-report-"));
  const file = join(dir, "report.html");
  writeFileSync(file, html);
  const browser = await launchChromium();
  try {
    const page = await browser.context.newPage();
    const requests: string[] = [];
    // Every request is seen here; anything but the file itself is refused (and fails the test).
    await page.route("**/*", (route) => {
      requests.push(route.request().url());
      return route.request().url() === pathToFileURL(file).href ? route.continue() : route.abort();
    });
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(pathToFileURL(file).href);
    assert.equal(requests, [pathToFileURL(file).href]);
    assert.equal(errors, []);
    assert.equal(await page.locator("table tbody tr").count(), 3);
    assert.equal(await page.locator(".charts figure svg").count(), 5);
    // Vega drew axes with the capacities as labels.
    const labels = await page.locator(".charts svg text").allTextContents();
    for (const label of ["0", "4", "inf", "Throughput", "capacity"]) assert.ok(labels.includes(label), `no "${label}" among the plots' text`);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "lab-report.png"), fullPage: true });
    process.stdout.write(`  report: ${html.length} bytes, rendered in ${renderMs.toFixed(0)} ms\n`);
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
}, { timeout: 120_000 });

test("names in the report are escaped", () => {
  assert.equal(escapeHtml(`<img src=x onerror="alert(1)">&'`), "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;&#39;");
});

test.run();
