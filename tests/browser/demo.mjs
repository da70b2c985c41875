// Opens lapps/static/demo.html in Debian's Chromium (driven by playwright-core)
// against a running echo_lapps, waits until the page shows a login, enough
// echo round trips and server-time pushes, and prints one JSON line with what
// the page showed. Exits 1 if that does not happen within the timeout.
//
//   node demo.mjs WS_URL [--echoes N] [--times N] [--timeout MS]

import { pathToFileURL, fileURLToPath } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PAGE = path.resolve(HERE, "..", "..", "lapps", "static", "demo.html");
const CHROMIUM = process.env.LAPPS_CHROMIUM || "/usr/bin/chromium";
// Playwright gives each launch() a fresh, empty profile directory of its own
// (it refuses a --user-data-dir here), removed when the browser closes.
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const IDS = ["connection", "login", "echoes", "rate", "mismatches", "time", "times", "blobs",
             "blobsize", "log"];

function options(argv) {
  const opts = { url: null, echoes: 10, times: 2, timeout: 30000 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--echoes") opts.echoes = Number(argv[++i]);
    else if (arg === "--times") opts.times = Number(argv[++i]);
    else if (arg === "--timeout") opts.timeout = Number(argv[++i]);
    else if (opts.url === null) opts.url = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (!opts.url) throw new Error("usage: node demo.mjs WS_URL [--echoes N] [--times N] [--timeout MS]");
  return opts;
}

async function read(page) {
  return page.evaluate((ids) => {
    const seen = {};
    for (const id of ids) seen[id] = document.getElementById(id).textContent;
    return seen;
  }, IDS);
}

async function main() {
  const opts = options(process.argv.slice(2));
  const pageUrl = `${pathToFileURL(PAGE).href}?url=${encodeURIComponent(opts.url)}`;
  const report = { ok: false, page: pageUrl, errors: [] };
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: opts.timeout });
  try {
    const page = await browser.newPage();
    page.on("pageerror", (error) => report.errors.push(`pageerror: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") report.errors.push(`console: ${message.text()}`);
    });
    await page.goto(pageUrl, { timeout: opts.timeout });
    try {
      // Until the page shows enough, or shows that it will not get there.
      const outcome = await page.waitForFunction(({ echoes, times }) => {
        const text = (id) => document.getElementById(id).textContent;
        if (text("login").startsWith("failed") || text("connection").startsWith("closed")) {
          return "failed";
        }
        return text("login") === "ok" && Number(text("echoes")) >= echoes &&
               Number(text("times")) >= times && "ok";
      }, { echoes: opts.echoes, times: opts.times }, { timeout: opts.timeout, polling: 100 });
      report.ok = (await outcome.jsonValue()) === "ok";
      if (!report.ok) report.failure = "the page failed (see login, connection and log)";
    } catch (error) {
      report.failure = error.message.split("\n")[0];
    }
    const seen = await read(page);
    Object.assign(report, seen, {
      echoes: Number(seen.echoes), times: Number(seen.times), blobs: Number(seen.blobs),
      mismatches: Number(seen.mismatches),
    });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(report) + "\n");
  return report.ok ? 0 : 1;
}

main().then((code) => { process.exitCode = code; }, (error) => {
  process.stdout.write(JSON.stringify({ ok: false, failure: String(error && error.stack || error) }) + "\n");
  process.exitCode = 2;
});
