// The search page: plain JavaScript, no build step. Every text from the server is set with
// textContent (never parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, info: null, busy: false };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function say(text, kind = "info") {
  const box = $("message");
  if (!text) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.className = "message " + kind;
  box.textContent = text;
}

// -- token (only servers on a non-loopback address need one) --------------------------------
function setToken(token) {
  document.cookie = "rag_token=" + encodeURIComponent(token) + "; path=/; SameSite=Strict";
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    $("token-form").hidden = false;
    $("token").focus();
    throw new Error("This server needs a token: enter it above.");
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    if (response.status === 503) message = "The server is busy: " + message;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

// -- index status ---------------------------------------------------------------------------
async function loadInfo() {
  try {
    const info = await (await api("/api/info")).json();
    state.info = info;
    const c = info.collections;
    const llm = info.server.llm;
    const llmText = llm.configured ? `LLM ${llm.model || llm.backend}` : "no LLM (RAG_LLM=none)";
    const ingest = info.server.ingest.running ? " · ingest running" : "";
    $("status").textContent = `${c.text.points} passages · ${c.image.points} images · ${llmText}${ingest}`;
    $("status").title = `storage ${info.storage}; text model ${info.models.text}; image model ${info.models.image}`;
    if (c.text.points + c.image.points === 0) {
      say(info.server.ingest.allowed.length
        ? "The index is empty. Add a folder with \u201cAdd files to the index\u201d below, then search again."
        : "The index is empty. Index a folder with `rag ingest PATH` (it goes through this server " +
          "when the server was started with --allow-ingest DIR), then search again.", "warn");
    }
    document.dispatchEvent(new CustomEvent("rag:info", { detail: info }));
    return info;
  } catch (error) {
    $("status").textContent = "Not connected";
    say(error.message, "error");
    return null;
  }
}

// -- the query image: file picker, drag and drop, paste --------------------------------------
function setImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { say(`${file.name || "That file"} is not an image.`, "error"); return; }
  const limit = state.info ? state.info.server.limits.max_upload_bytes : Infinity;
  if (file.size > limit) { say(`The image has ${file.size.toLocaleString()} bytes; the limit is ${limit.toLocaleString()}.`, "error"); return; }
  state.image = file;
  const url = URL.createObjectURL(file);
  $("preview-img").src = url;
  $("preview-name").textContent = file.name || "pasted image";
  $("preview").hidden = false;
  say("");
}

function clearImage() {
  state.image = null;
  $("image").value = "";
  $("preview").hidden = true;
  $("preview-img").removeAttribute("src");
}

// -- results ----------------------------------------------------------------------------------
function isWebUrl(text) { return /^https?:\/\//i.test(text || ""); }

function why(hit) {
  const signals = hit.signals || {};
  const names = Object.keys(signals);
  if (names.length) {
    return "why: " + names.map((name) => {
      const s = signals[name];
      const parts = [name];
      if (s.rank !== undefined) parts.push("#" + s.rank);
      if (s.score !== undefined) parts.push(Number(s.score).toFixed(3));
      return parts.join(" ");
    }).join(" · ");
  }
  return hit.modality === "image" ? "why: CLIP similarity to the query" : "why: meaning of the passage (text embedding)";
}

function hitCard(hit, n) {
  const image = hit.modality === "image";
  const title = hit.title || (hit.file || hit.source || "").split("/").pop() || "untitled";
  const link = isWebUrl(hit.url) ? hit.url : (image ? `/api/media/${encodeURIComponent(hit.node_id)}` : null);
  const heading = el("h3", {},
    n ? el("span", { class: "n", text: `[${n}]` }) : null,
    link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer", class: "title", text: title })
         : el("span", { class: "title", text: title }),
    el("span", { class: "kind", text: image ? "image" : "passage" }));
  const text = (hit.text || "").replace(/\s+/g, " ").trim();
  const snippet = el("p", { class: "snippet", text: text.length > 400 ? text.slice(0, 400) + "…" : text });
  const meta = el("p", { class: "meta" },
    el("span", { class: "score", text: hit.score === null || hit.score === undefined ? "" : `score ${Number(hit.score).toFixed(3)}` }),
    el("span", { class: "why", text: why(hit) }),
    el("span", { class: "where", text: isWebUrl(hit.url) ? hit.url : (hit.file || hit.source || "") }));
  const body = el("div", {}, heading, text ? snippet : null, meta);
  const item = el("li", { class: `hit ${hit.modality}`, id: n ? `src-${n}` : null, tabindex: n ? "-1" : null });
  if (image) {
    const thumb = el("img", { class: "thumb", alt: text || title, loading: "lazy",
      src: `/api/media/${encodeURIComponent(hit.node_id)}?size=256` });
    thumb.addEventListener("error", () => {  // busy (429/503): try once more a moment later
      if (thumb.dataset.retried) return;
      thumb.dataset.retried = "1";
      setTimeout(() => { thumb.src = thumb.src.split("&retry")[0] + "&retry=1"; }, 1500);
    });
    item.append(link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer", tabindex: "-1" }, thumb) : thumb);
  }
  item.append(body);
  return item;
}

function showHits(hits, numbered = false) {
  const list = $("results");
  list.replaceChildren(...hits.map((hit, i) => hitCard(hit, numbered ? (hit.n || i + 1) : null)));
}

// -- form values ------------------------------------------------------------------------------
function formData(textField) {
  const data = new FormData();
  data.append(textField, $("q").value);
  const kind = $("f-kind").value;
  data.append("top_k", kind === "image" ? "0" : ($("f-top-k").value || "5"));
  data.append("image_top_k", kind === "text" ? "0" : ($("f-image-top-k").value || "3"));
  const filters = {};
  if ($("f-title").value.trim()) filters.title = $("f-title").value.trim();
  for (const pair of $("f-more").value.split(",")) {
    const [key, ...rest] = pair.split("=");
    if (key.trim() && rest.length) filters[key.trim()] = rest.join("=").trim();
  }
  if (Object.keys(filters).length) data.append("filters", JSON.stringify(filters));
  if (state.image) data.append("image", state.image, state.image.name || "pasted.png");
  return data;
}

function setBusy(busy) {
  state.busy = busy;
  $("go").disabled = busy;
  document.body.setAttribute("aria-busy", busy ? "true" : "false");
}

// -- search -----------------------------------------------------------------------------------
async function search() {
  $("answer").hidden = true;
  const response = await api("/api/search", { method: "POST", body: formData("q") });
  const { hits } = await response.json();
  showHits(hits);
  if (!hits.length) {
    const empty = state.info && state.info.collections.text.points + state.info.collections.image.points === 0;
    say(empty ? "The index is empty: nothing to find yet." : "No results. Try other words or fewer filters.", "warn");
  } else {
    say(`${hits.length} results` + (state.image ? " (with the query image)" : ""));
  }
}

// -- ask: the answer streams in as server-sent events ------------------------------------------
function highlight(n) {
  document.querySelectorAll(".hit.highlight").forEach((node) => node.classList.remove("highlight"));
  const card = $(`src-${n}`);
  if (!card) return;
  card.classList.add("highlight");
  card.scrollIntoView({ behavior: "smooth", block: "nearest" });
  card.focus({ preventScroll: true });
}

function renderAnswer(text, known) {
  const box = $("answer-text");
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    const n = Number(match[1]);
    nodes.push(document.createTextNode(text.slice(last, match.index)));
    if (known.has(n)) {
      const a = el("a", { href: `#src-${n}`, class: "cite", "data-n": String(n), text: match[0] });
      a.addEventListener("click", (event) => { event.preventDefault(); highlight(n); });
      a.addEventListener("mouseenter", () => highlight(n));
      nodes.push(a);
    } else {
      nodes.push(document.createTextNode(match[0]));
    }
    last = match.index + match[0].length;
  }
  nodes.push(document.createTextNode(text.slice(last)));
  box.replaceChildren(...nodes);
}

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield [event, JSON.parse(data.join("\n"))];
    }
  }
}

async function ask() {
  const response = await api("/api/ask", { method: "POST", body: formData("question") });
  $("answer").hidden = false;
  $("prompt").hidden = true;
  const box = $("answer-text");
  box.textContent = "";
  box.classList.add("streaming");
  let text = "";
  let known = new Set();
  say("Answering…");
  try {
    for await (const [event, data] of events(response)) {
      if (event === "sources") {
        showHits(data.sources, true);
        known = new Set(data.sources.map((s) => s.n));
      } else if (event === "delta") {
        text += data.text;
        renderAnswer(text, known);
      } else if (event === "answer") {
        showHits(data.sources, true);
        known = new Set(data.sources.map((s) => s.n));
        if (data.answer === null) {
          box.textContent = "";
          $("prompt-text").textContent = data.prompt || "";
          $("prompt").hidden = false;
          $("prompt").open = true;
          say("No LLM is configured (RAG_LLM=none), so no model was called. This is the prompt that " +
              "would be sent, and the sources it would cite.", "warn");
        } else {
          renderAnswer(data.answer, known);
          const cited = data.cited.length;
          say(cited ? `Answer with ${cited} cited source${cited > 1 ? "s" : ""}: follow a [n] to its source.`
                    : "The answer cites no source.", cited ? "info" : "warn");
          for (const note of data.notes || []) say(note, "warn");
        }
      } else if (event === "error") {
        say(data.error, "error");
      }
    }
  } finally {
    box.classList.remove("streaming");
  }
}

// -- wiring -----------------------------------------------------------------------------------
function mode() { return document.querySelector("input[name=mode]:checked").value; }

function updateMode() {
  const asking = mode() === "ask";
  $("go").textContent = asking ? "Ask" : "Search";
  $("q").placeholder = asking ? "Ask a question about the indexed articles and pictures"
                              : "Search passages and images (press / to focus)";
}

async function submit(event) {
  event.preventDefault();
  if (state.busy) return;
  if (!$("q").value.trim() && !state.image) {
    say(mode() === "ask" ? "Type a question, add an image, or both." : "Type something to search for, add an image, or both.", "warn");
    $("q").focus();
    return;
  }
  setBusy(true);
  try {
    await (mode() === "ask" ? ask() : search());
  } catch (error) {
    say(error.message, error.status === 503 ? "warn" : "error");
  } finally {
    setBusy(false);
  }
}

function wire() {
  $("query").addEventListener("submit", submit);
  for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", updateMode);
  $("image").addEventListener("change", () => setImage($("image").files[0]));
  $("clear-image").addEventListener("click", clearImage);
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    document.addEventListener(name, () => drop.classList.remove("over"));
  }
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) setImage(file);
  });
  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    const image = items.find((f) => f.type.startsWith("image/"));
    if (image) { event.preventDefault(); setImage(image); }
  });
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (event.key === "/" && !typing) { event.preventDefault(); $("q").focus(); }
    if (event.key === "Escape" && state.image) clearImage();
  });
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken($("token").value);
    $("token").value = "";
    $("token-form").hidden = true;
    say("");
    await loadInfo();  // a wrong token shows the form again
  });
  updateMode();
  loadInfo();
  $("q").focus();
}

wire();
