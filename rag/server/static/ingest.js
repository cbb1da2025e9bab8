// "Add files to the index": shown when the server allows ingesting folders (rag serve
// --allow-ingest DIR). Streams the progress, then the report with each bad file and its
// reason. Uses app.js's helpers ($, el, api, events, say, loadInfo). Text from the server is
// always set with textContent.
"use strict";

const ingestState = { running: false, roots: [] };

function showIngest(info) {
  const allowed = info.server.ingest.allowed || [];
  ingestState.roots = allowed;
  $("ingest").hidden = allowed.length === 0;
  if (!allowed.length) return;
  $("ingest-roots").replaceChildren(...allowed.map((root) => el("option", { value: root })));
  $("ingest-allowed").textContent = (allowed.length === 1 ? "Allowed folder: " : "Allowed folders: ") +
    allowed.join(", ") + ". Give an absolute path inside one of them.";
  if (!$("ingest-path").value) $("ingest-path").value = allowed[0];
  $("ingest-go").disabled = ingestState.running || info.server.ingest.running;
  if (info.server.ingest.running && !ingestState.running) ingestStage("Another ingest is running on this server.");
}

function ingestStage(text, done, total) {
  $("ingest-progress").hidden = false;
  $("ingest-stage").textContent = text;
  const bar = $("ingest-bar");
  if (total) { bar.max = total; bar.value = done; } else { bar.removeAttribute("value"); }
}

function plural(n, word) { return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`; }

function showReport(report) {
  const parts = [
    `Indexed ${plural(report.files_indexed, "file")}: ${plural(report.text_nodes, "passage")}, ` +
      `${plural(report.image_nodes, "image")}`,
    `${report.unchanged.toLocaleString()} unchanged`,
  ];
  if (report.removed) parts.push(`${report.removed.toLocaleString()} removed`);
  if (report.stopped) parts.push("stopped early: the server is shutting down (run it again to finish)");
  const bad = report.skipped || [];
  parts.push(bad.length ? `${plural(bad.length, "file")} could not be indexed:` : "no bad files.");
  $("ingest-summary").textContent = parts.join(" · ");
  $("ingest-bad").replaceChildren(...bad.map((item) => el("li", {},
    el("span", { class: "bad-path", text: item.path }), ": ", el("span", { class: "bad-reason", text: item.reason }))));
  $("ingest-report").hidden = false;
  $("ingest-progress").hidden = true;
  $("ingest-report").focus();
}

async function runIngest(event) {
  event.preventDefault();
  if (ingestState.running) return;
  const path = $("ingest-path").value.trim();
  if (!path) { $("ingest-path").focus(); return; }
  ingestState.running = true;
  $("ingest-go").disabled = true;
  $("ingest-report").hidden = true;
  ingestStage("Starting…");
  let finished = false;
  try {
    const response = await api("/api/ingest", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ paths: [path], prune: $("ingest-prune").checked }),
    });
    for await (const [name, data] of events(response)) {
      if (name === "plan") {
        ingestStage(`${plural(data.files, "file")} to index (${data.unchanged.toLocaleString()} unchanged)`);
      } else if (name === "progress") {
        ingestStage(`${data.stage}: ${data.done.toLocaleString()} of ${data.total.toLocaleString()}`, data.done, data.total);
      } else if (name === "report") {
        showReport(data);
        say(data.ok ? "The ingest finished." : "The ingest finished; some files could not be indexed (see the list).",
            data.ok ? "info" : "warn");
        finished = true;
      } else if (name === "error") {
        $("ingest-progress").hidden = true;
        say(data.error, "error");
        finished = true;
      }
    }
    if (!finished) say("The server closed the ingest stream before the report.", "error");
  } catch (error) {
    $("ingest-progress").hidden = true;
    say(error.message, "error");
  } finally {
    ingestState.running = false;
    $("ingest-go").disabled = false;
    await loadInfo();  // the new point counts
  }
}

document.addEventListener("rag:info", (event) => showIngest(event.detail));
$("ingest-form").addEventListener("submit", runIngest);
