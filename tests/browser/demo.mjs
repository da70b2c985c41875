// Opens lapps/static/demo.html in Debian's Chromium (driven by playwright-core)
// against a running echo_lapps, waits until the page shows a login, enough
// echo round trips and server-time pushes, and prints one JSON line with what
// the page showed. Exits 1 if that does not happen within the timeout.
//
// With --cut, it then prints {"phase": "cut", ...what the page showed} for
// the test to cut the page's connection (through a proxy), and waits until
// the page shows it reconnected, recovered what it missed, and goes on.
//
//   node demo.mjs WS_URL [--echoes N] [--times N] [--cut] [--timeout MS]

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
const IDS = ["connection", "login", "echoes", "rate", "mismatches", "time", "times", "offset",
             "gaps", "reconnects", "recovered", "blobs", "blobsize", "log"];
const NUMBERS = ["echoes", "times", "offset", "gaps", "reconnects", "mismatches", "blobs"];

function options(argv) {
  const opts = { url: null, echoes: 10, times: 2, cut: false, timeout: 30000 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--echoes") opts.echoes = Number(argv[++i]);
    else if (arg === "--times") opts.times = Number(argv[++i]);
    else if (arg === "--timeout") opts.timeout = Number(argv[++i]);
    else if (arg === "--cut") opts.cut = true;
    else if (opts.url === null) opts.url = arg;
    else throw new Error(`unexpected argument ${arg}`);
  }
  if (!opts.url) {
    throw new Error("usage: node demo.mjs WS_URL [--echoes N] [--times N] [--cut] [--timeout MS]");
  }
  return opts;
}

async function read(page) {
  const seen = await page.evaluate((ids) => {
    const shown = {};
    for (const id of ids) shown[id] = document.getElementById(id).textContent;
    return shown;
  }, IDS);
  for (const id of NUMBERS) seen[id] = Number(seen[id]);
  return seen;
}

// Until the page shows that it started (logged in, `times` time pushes and
// `echoes` round trips) or, after a cut, that it reconnected (logged in, and
// more pushes since `since` than it recovered: the time goes on), or that it
// will not get there (a failed login, a connection closed for good): "ok" or
// "failed".
async function until(page, phase, { echoes, times, since }, timeout) {
  const outcome = await page.waitForFunction(({ phase, echoes, times, since }) => {
    const text = (id) => document.getElementById(id).textContent;
    if (text("login").startsWith("failed") || text("connection").startsWith("closed")) {
      return "failed";
    }
    const pushes = Number(text("times"));
    const recovered = text("recovered");
    const enough = phase === "started"
      ? Number(text("echoes")) >= echoes && pushes >= times
      : Number(text("reconnects")) >= 1 && recovered !== "–" &&
        (recovered === "not possible" || pushes > since + parseInt(recovered, 10));
    return enough && text("login") === "ok" && "ok";
  }, { phase, echoes, times, since }, { timeout, polling: 100 });
  return outcome.jsonValue();
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
      let outcome = await until(page, "started", opts, opts.timeout);
      if (outcome === "ok" && opts.cut) {
        report.before = await read(page);
        process.stdout.write(JSON.stringify({ phase: "cut", ...report.before }) + "\n");
        outcome = await until(page, "reconnected", { since: report.before.times }, opts.timeout);
      }
      report.ok = outcome === "ok";
      if (!report.ok) report.failure = "the page failed (see login, connection and log)";
    } catch (error) {
      report.failure = error.message.split("\n")[0];
    }
    Object.assign(report, await read(page));
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
