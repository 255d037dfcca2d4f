// A new user's first minutes in ComfyUI's real editor (headless Chromium), recorded for test_first_contact.py:
//  1. the template browser: the pack's category, every thumbnail the editor requests (status, URL), the order
//     sorted "A → Z", and each template loaded by clicking its card and run as the Run button does;
//  2. a new graph with every sampling and task node at its defaults, wired to the bundled model, run;
//  3. a Text to Image node asked for a size the model cannot draw (the server's validation answer).
// usage: node first_contact.js SERVER_URL OUT_DIR MODEL_NAME
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const PACK = "lumina-mgpt";

async function closeDialogs(page) {
  const close = page.locator(".p-dialog .p-dialog-close-button, .p-dialog button[aria-label='Close']");
  for (let i = 0; i < 3 && (await close.count()) > 0; i++) {
    await close.first().click().catch(() => {});
    await page.waitForTimeout(300);
  }
}

async function openPackTemplates(page) {
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  const nav = page.getByText(PACK, { exact: true }).first();
  await nav.waitFor({ timeout: 30000 });
  await nav.click();
  await page.waitForTimeout(1000);
}

// Builds the defaults graph in the editor (LiteGraph) and returns nothing; widgets keep their defaults except
// the loaders' model choice.
async function buildDefaultsGraph(page, model) {
  await page.evaluate((model) => {
    const { app } = window;
    const LiteGraph = window.LiteGraph;
    app.graph.clear();
    let column = 0;
    const add = (type, x, y) => {
      const node = LiteGraph.createNode(type);
      node.pos = [x, y];
      app.graph.add(node);
      return node;
    };
    const set = (node, name, value) => { node.widgets.find((w) => w.name === name).value = value; };
    const loader = add("LuminaMGPTModelLoader", 20, 20);
    set(loader, "model_name", model);
    const tokenizer = add("LuminaMGPTTokenizerLoader", 20, 200);
    set(tokenizer, "tokenizer", `lumina_mgpt/${model}`);
    const example = add("LuminaMGPTExampleImage", 20, 380);
    const wire = (node) => {
      if (node.findInputSlot("model") >= 0) loader.connect(0, node, node.findInputSlot("model"));
      if (node.findInputSlot("tokenizer") >= 0) tokenizer.connect(0, node, node.findInputSlot("tokenizer"));
      if (node.findInputSlot("image") >= 0) example.connect(0, node, node.findInputSlot("image"));
    };
    const show = (node, slot, x, y) => {
      const type = node.outputs[slot].type;
      const viewer = add(type === "IMAGE" ? "PreviewImage" : "PreviewAny", x, y);
      node.connect(slot, viewer, 0);
    };
    const place = () => { column += 1; return [380 + (column % 5) * 360, 20 + Math.floor(column / 5) * 1100]; };
    for (const type of ["LuminaMGPTTextToImage", "LuminaMGPTImageEdit", "LuminaMGPTDensePrediction",
      "LuminaMGPTDetect", "LuminaMGPTConditionToImage", "LuminaMGPTMultiview", "LuminaMGPTChat"]) {
      const [x, y] = place();
      const node = add(type, x, y);
      wire(node);
      show(node, 0, x, y + node.size[1] + 40);
    }
    // the step-by-step chain: Resolution-Aware Prompt -> Sampler -> VQ Decode, and Task Prompt -> Sampler
    for (const promptType of ["LuminaMGPTPrompt", "LuminaMGPTTaskPrompt"]) {
      const [x, y] = place();
      const prompt = add(promptType, x, y);
      wire(prompt);
      const sampler = add("LuminaMGPTSampler", x, y + prompt.size[1] + 40);
      wire(sampler);
      prompt.connect(0, sampler, sampler.findInputSlot("prompt"));
      const decode = add(promptType === "LuminaMGPTPrompt" ? "LuminaMGPTVQDecode" : "LuminaMGPTDecodeResponse",
        x, sampler.pos[1] + sampler.size[1] + 40);
      wire(decode);
      sampler.connect(0, decode, decode.findInputSlot("tokens"));
      show(decode, promptType === "LuminaMGPTPrompt" ? 0 : 1, x, decode.pos[1] + decode.size[1] + 40);
    }
    app.graph.setDirtyCanvas(true, true);
  }, model);
}

// Submits the editor's graph as the Run button does, and returns the server's answer (prompt_id or errors).
async function submit(page) {
  return await page.evaluate(async () => {
    const p = await window.app.graphToPrompt();
    const res = await fetch("/api/prompt", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: p.output, client_id: window.app.api.clientId,
        extra_data: { extra_pnginfo: { workflow: p.workflow } } }),
    });
    return { status: res.status, body: await res.json(), prompt: p.output };
  });
}

async function waitForHistory(page, promptId, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const entry = await page.evaluate(async (id) => {
      const res = await fetch(`/api/history/${id}`);
      return (await res.json())[id] || null;
    }, promptId);
    if (entry && entry.status && entry.status.completed !== undefined &&
        (entry.status.completed || entry.status.status_str === "error")) return entry;
    await page.waitForTimeout(1000);
  }
  return null;
}

(async () => {
  const [url, outDir, model] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: FLAGS });
  const result = { thumbnails: [], templates: {}, defaults: null, refused: null };
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.on("response", (r) => {
      const u = decodeURIComponent(r.url());
      if (u.includes(`/workflow_templates/${PACK}/`) && u.endsWith(".jpg")) {
        result.thumbnails.push({ status: r.status(), url: u });
      }
    });
    await page.goto(url);
    await page.waitForFunction(() => window.app && window.app.graph, null, { timeout: 90000 });
    await page.waitForTimeout(3000);
    await page.keyboard.press("Escape");
    await closeDialogs(page);

    // 1. the template browser
    await openPackTemplates(page);
    const titles = await page.evaluate(async (pack) => (await (await fetch("/api/workflow_templates")).json())[pack],
      PACK);
    for (let i = 0; i < 8; i++) {  // scroll the grid so that lazy thumbnails are requested
      await page.mouse.move(800, 600);
      await page.mouse.wheel(0, 400);
      await page.waitForTimeout(400);
    }
    await page.mouse.wheel(0, -4000);
    await page.waitForTimeout(800);
    // the numbered titles give the intended order when sorted "A → Z"
    await page.getByText("Newest", { exact: true }).first().click();
    await page.getByRole("option", { name: "A → Z" }).first().click();
    await page.waitForTimeout(1000);
    result.alphabetical = await page.evaluate((titles) => {
      const found = [];
      for (const el of document.querySelectorAll(".p-dialog *")) {
        const text = (el.childElementCount === 0 && el.textContent || "").trim();
        if (titles.includes(text) && !found.includes(text)) found.push(text);
      }
      return found;
    }, titles);
    await page.screenshot({ path: path.join(outDir, "templates.png") });
    await closeDialogs(page);
    // each template by a click on its card, then run as the Run button would
    for (const title of titles) {
      await openPackTemplates(page);
      const search = page.getByPlaceholder("Search").first();
      await search.fill(title);
      await page.waitForTimeout(800);
      const card = page.getByText(title, { exact: true }).first();
      await card.click();
      await page.waitForTimeout(1500);
      await closeDialogs(page);
      const run = await submit(page);
      const history = run.status === 200 ? await waitForHistory(page, run.body.prompt_id, 600000) : null;
      result.templates[title] = { prompt: run.prompt, submit: run.body, status: history && history.status };
      if (title.startsWith("10 ")) {  // the README's picture: a graph with its outputs
        await page.waitForTimeout(1500);  // below the editor's "Nodes 2.0" banner
        await page.screenshot({ path: path.join(outDir, "graph_with_outputs.png"),
          clip: { x: 0, y: 40, width: 1600, height: 960 } });
      }
    }

    // 2. a new graph with every node at its defaults
    await buildDefaultsGraph(page, model);
    const run = await submit(page);
    result.defaults = { submit: run };
    if (run.status === 200 && run.body.prompt_id) {
      result.defaults.history = await waitForHistory(page, run.body.prompt_id, 600000);
    }
    await page.waitForTimeout(1500);
    await page.evaluate(() => window.app.canvas.ds && (window.app.canvas.ds.scale = 0.55));
    await page.evaluate(() => window.app.graph.setDirtyCanvas(true, true));
    await page.waitForTimeout(500);
    await page.screenshot({ path: path.join(outDir, "defaults_graph.png") });

    // 3. a size the bundled model cannot draw, refused by the server's validation
    await page.evaluate((model) => {
      const { app } = window;
      const LiteGraph = window.LiteGraph;
      app.graph.clear();
      const add = (type, x, y) => { const n = LiteGraph.createNode(type); n.pos = [x, y]; app.graph.add(n); return n; };
      const loader = add("LuminaMGPTModelLoader", 20, 20);
      loader.widgets.find((w) => w.name === "model_name").value = model;
      const tokenizer = add("LuminaMGPTTokenizerLoader", 20, 220);
      tokenizer.widgets.find((w) => w.name === "tokenizer").value = `lumina_mgpt/${model}`;
      const t2i = add("LuminaMGPTTextToImage", 420, 20);
      t2i.widgets.find((w) => w.name === "resolution").value = "custom";
      t2i.widgets.find((w) => w.name === "custom_size").value = "512x512";
      loader.connect(0, t2i, t2i.findInputSlot("model"));
      tokenizer.connect(0, t2i, t2i.findInputSlot("tokenizer"));
      const view = add("PreviewImage", 820, 20);
      t2i.connect(0, view, 0);
      app.canvas.ds.scale = 1;
      app.graph.setDirtyCanvas(true, true);
    }, model);
    result.refused = await submit(page);
    await page.evaluate(() => window.app.queuePrompt(0, 1));  // the Run button: the editor shows the error
    await page.waitForTimeout(2000);
    await page.screenshot({ path: path.join(outDir, "refused.png") });
    fs.writeFileSync(path.join(outDir, "first_contact.json"), JSON.stringify(result, null, 1));
  } finally {
    await browser.close();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
