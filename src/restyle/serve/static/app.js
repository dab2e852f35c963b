// restyle's page: upload photos, show the analysis and edit the listing draft.
// Everything from the server goes in as text (textContent, value), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null;  // the draft as the server made it

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// Only images a browser may load from a listing: http(s) links or data the server made.
function safeImage(url) {
  return typeof url === "string" && (/^https?:\/\//i.test(url) || /^data:image\/(jpeg|png|webp);base64,/i.test(url));
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function money(m) { return m ? `${m.amount} ${m.currency}` : "none"; }
function pct(x) { return `${Math.round(x * 100)}%`; }

$("photos").addEventListener("change", () => {
  const strip = $("previews");
  strip.replaceChildren();
  for (const file of $("photos").files) {
    const img = el("img");
    img.alt = file.name;
    img.src = URL.createObjectURL(file);
    strip.append(img);
  }
});

$("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const files = $("photos").files;
  if (!files.length) { setStatus("Pick a photo first.", true); return; }
  const form = new FormData();
  for (const file of files) form.append("image", file, file.name);
  form.append("price", $("price").value);
  const headers = {};
  const token = $("token").value || sessionStorage.getItem("restyle-token");
  if (token) headers.Authorization = `Bearer ${token}`;
  $("go").disabled = true;
  setStatus("Analyzing…");
  try {
    const response = await fetch("/v1/draft", { method: "POST", body: form, headers });
    const body = await response.json().catch(() => null);
    if (response.status === 401) {
      $("token-label").hidden = false;
      sessionStorage.removeItem("restyle-token");
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `Error ${response.status}`;
      setStatus(message, true);
      return;
    }
    if (token) {
      sessionStorage.setItem("restyle-token", token);
      $("token-label").hidden = true;
    }
    show(body);
    setStatus("Done.");
  } catch (err) {
    setStatus("The service did not answer.", true);
  } finally {
    $("go").disabled = false;
  }
});

function show(result) {
  const ident = result.identification;
  const name = [ident.brand, ident.product_name || ident.category].filter(Boolean).join(" ");
  $("ident-name").textContent = name || "Not identified";
  $("ident-summary").textContent = ident.summary;
  $("ident-confidence").textContent = pct(ident.confidence);
  const rows = $("evidence").tBodies[0];
  rows.replaceChildren();
  for (const e of ident.evidence || []) {
    const tr = el("tr");
    tr.append(el("td", e.field), el("td", e.value), el("td", e.expert), el("td", pct(e.score)),
              el("td", e.photo === null ? "" : `#${e.photo + 1}`));
    rows.append(tr);
  }
  const price = result.price;
  $("price-estimate").textContent = price.estimate
    ? `${price.estimate} ${price.currency} (${price.low}–${price.high})` : "Not enough data";
  $("price-basis").textContent = price.estimate
    ? `Based on ${price.comps_used} comps (${price.basis} prices).`
    : `Needs ${price.minimum_comps} comps, found ${price.comps_used}.`;
  showComps(result.comps);
  showDraft(result.draft);
  $("result").hidden = false;
}

function showComps(comps) {
  const list = $("comps");
  list.replaceChildren();
  for (const comp of comps) {
    const li = el("li");
    const img = el("img", null, "thumb");
    img.alt = "";
    img.loading = "lazy";
    img.referrerPolicy = "no-referrer";
    if (safeImage(comp.image_url)) img.src = comp.image_url;
    const text = el("div");
    const title = el(comp.url && /^https?:\/\//i.test(comp.url) ? "a" : "span", comp.title, "title");
    if (title.tagName === "A") { title.href = comp.url; title.rel = "noopener noreferrer"; title.target = "_blank"; }
    const sold = comp.sold === true ? "sold" : comp.sold === false ? "asking" : "";
    const alike = comp.similarity === null ? "" : `${pct(comp.similarity)} alike`;
    text.append(title, el("div", [money(comp.price), sold, comp.condition, alike, comp.marketplace]
      .filter(Boolean).join(" · "), "meta"));
    li.append(img, text);
    list.append(li);
  }
}

function showDraft(draft) {
  current = draft || null;
  $("draft").hidden = !draft;
  if (!draft) return;
  $("d-title").value = draft.title;
  $("d-price").value = draft.price ? draft.price.amount : "";
  $("d-condition").value = draft.condition_description || draft.condition;
  $("d-specifics").value = Object.entries(draft.item_specifics)
    .map(([name, values]) => `${name}: ${values.join(", ")}`).join("\n");
  $("d-description").value = draft.description;
  $("d-problems").replaceChildren(...draft.problems.map((p) => el("li", p)));
  countTitle();
}

function countTitle() { $("d-title-count").textContent = `${$("d-title").value.length}/80`; }
$("d-title").addEventListener("input", countTitle);

// The draft as edited on the page.
function edited() {
  const specifics = {};
  for (const line of $("d-specifics").value.split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) specifics[line.slice(0, at).trim()] = line.slice(at + 1).split(",").map((v) => v.trim()).filter(Boolean);
  }
  const currency = current && current.price ? current.price.currency : null;
  return {
    title: $("d-title").value,
    price: $("d-price").value ? { amount: $("d-price").value, currency } : null,
    price_strategy: current ? current.price_strategy : null,
    category_id: current ? current.category_id : null,
    condition: current ? current.condition : null,
    condition_description: $("d-condition").value,
    item_specifics: specifics,
    description: $("d-description").value,
  };
}

function asText(d) {
  const lines = [d.title, d.price ? `${d.price.amount} ${d.price.currency || ""}`.trim() : "", d.condition_description];
  for (const [name, values] of Object.entries(d.item_specifics)) lines.push(`${name}: ${values.join(", ")}`);
  lines.push("", d.description);
  return lines.filter((l, i) => l !== "" || i > 2).join("\n");
}

$("copy").addEventListener("click", async () => {
  const text = asText(edited());
  try {
    await navigator.clipboard.writeText(text);
    setStatus("Copied.");
  } catch (err) {
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    setStatus("Copied.");
  }
});

$("export").addEventListener("click", () => {
  const blob = new Blob([JSON.stringify(edited(), null, 2)], { type: "application/json" });
  const link = el("a");
  link.href = URL.createObjectURL(blob);
  link.download = "listing-draft.json";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  setStatus("Exported listing-draft.json.");
});
