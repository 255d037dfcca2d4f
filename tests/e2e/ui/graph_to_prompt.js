// Loads each editor-format workflow into ComfyUI's real frontend (headless Chromium) and records the
// API graph the editor would submit (app.graphToPrompt), plus a screenshot of the first one.
// usage: node graph_to_prompt.js SERVER_URL WORKFLOW_DIR OUT_DIR
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

(async () => {
  const [url, workflowDir, outDir] = process.argv.slice(2);
  // playwright starts every launch on a new, empty profile (its own --user-data-dir)
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: FLAGS,
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    await page.goto(url);
    await page.waitForFunction(() => window.app && window.app.graph, null, { timeout: 90000 });
    await page.waitForTimeout(3000);
    await page.keyboard.press("Escape");
    const prompts = {};
    const files = fs.readdirSync(workflowDir).filter((f) => f.endsWith(".json")).sort();
    for (const file of files) {
      const workflow = JSON.parse(fs.readFileSync(path.join(workflowDir, file), "utf8"));
      prompts[file] = await page.evaluate(async (wf) => {
        await window.app.loadGraphData(wf);
        const p = await window.app.graphToPrompt();
        return p.output;
      }, workflow);
      if (file.startsWith("01 ")) {
        // the first-run template browser may open late; close it so the graph itself is captured
        const close = page.locator(".p-dialog .p-dialog-close-button, .p-dialog button[aria-label='Close']");
        for (let i = 0; i < 3 && (await close.count()) > 0; i++) {
          await close.first().click().catch(() => {});
          await page.waitForTimeout(300);
        }
        await page.screenshot({ path: path.join(outDir, "text_to_image.png") });
      }
    }
    fs.writeFileSync(path.join(outDir, "prompts.json"), JSON.stringify(prompts, null, 1));
  } finally {
    await browser.close();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
