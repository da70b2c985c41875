// Opens the status page given as argv[2] in Chromium and prints one JSON line
// with what it shows (tests/test_status_page.py).
const { chromium } = require("playwright-core");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync"];
(async () => {
  const executablePath = process.env.LAPPS_CHROMIUM || "/usr/bin/chromium";
  const browser = await chromium.launch({ executablePath, args: ARGS, timeout: 30000 });
  try {
    const page = await browser.newPage();
    const messages = [];  // errors, CSP violations: none expected
    page.on("console", (m) => messages.push(m.text()));
    page.on("pageerror", (e) => messages.push(String(e)));
    const response = await page.goto(process.argv[2], { timeout: 30000 });
    const seen = await page.evaluate(() => {
      const cell = (service, name) =>
        document.querySelector(`tr[data-service="${service}"] td.${name}`).textContent;
      return {
        echo_connections: cell("echo", "connections"),
        fancy_target: cell("fancy", "target"),
        errors: [...document.querySelectorAll("#recent td.text")].map((td) => td.textContent),
        injected: document.querySelectorAll("#from-target, #from-error, img, script, b").length,
        title: document.title,
        pwned: window.pwned === undefined ? null : window.pwned,
        readiness: document.getElementById("readiness").textContent,
      };
    });
    seen.status = response.status();
    seen.console = messages;
    console.log(JSON.stringify(seen));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(1); });
