// cielr serve: the page. Plain JavaScript, no build step; talks to the JSON API of cielr_agent/web_server.py.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { session: null, job: null, next: 0, correction: null, approval: null };

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

const post = (path, body) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
});

function showError(error) { $("error").textContent = error ? String(error.message || error) : ""; }

async function loadImages() {
  const { images } = await api("/api/images");
  $("image-list").replaceChildren(...images.map((img) => new Option(img.name, img.path)));
}

async function openImage(path) {
  showError();
  showSession(await post("/api/sessions", { image: path }));
}

async function upload(file) {
  const { path } = await api(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  await loadImages();
  await openImage(path);
}

function imageUrl(number) { return `/api/sessions/${state.session}/image/${number}`; }

function showSession(history) {
  state.session = history.session;
  location.hash = `session=${history.session}`;
  $("session-name").textContent = `session ${history.session}`;
  for (const id of ["edit-panel", "result", "history-panel"]) $(id).hidden = false;
  const versions = history.versions;
  const head = versions[history.head];
  const parent = head.parent === null ? head : versions[head.parent];
  $("before").src = imageUrl(parent.number);
  $("after").src = imageUrl(head.number);
  $("before-caption").textContent = `version ${parent.number}` + (parent.number === head.number ? " (original)" : "");
  $("after-caption").textContent = `version ${head.number}` + (head.instruction ? `: “${head.instruction}”` : "");
  $("download").href = `${imageUrl(head.number)}?download=1`;
  $("history").replaceChildren(...versions.map((v) => {
    const li = document.createElement("li");
    li.dataset.version = v.number;
    li.className = (v.head ? "head " : "") + (v.redo ? "redo" : "");
    li.textContent = v.instruction ? `${v.instruction} — ${v.done.join("; ") || "nothing"}` : "original";
    li.title = "click to go back to this version";
    li.onclick = () => step("checkout", { version: v.number });
    return li;
  }));
  $("undo").disabled = head.parent === null;
  $("redo").disabled = !versions.some((v) => v.redo);
}

async function step(op, body) {
  showError();
  try { showSession(await post(`/api/sessions/${state.session}/${op}`, body)); } catch (e) { showError(e); }
}

async function startEdit(event) {
  event.preventDefault();
  showError();
  $("log").textContent = "";
  $("plan").disabled = true;
  try {
    const job = await post(`/api/sessions/${state.session}/edit`, { instruction: $("instruction").value });
    state.job = job.id;
    state.next = 0;
    poll();
  } catch (e) { showError(e); $("plan").disabled = false; }
}

async function poll() {
  const job = await api(`/api/jobs/${state.job}?since=${state.next}`);
  state.next = job.next;
  if (job.events.length) {
    $("log").textContent += job.events.join("\n") + "\n";
    $("log").scrollTop = $("log").scrollHeight;
  }
  if (job.status === "awaiting_approval" && job.approval && !state.approval) showApproval(job.approval);
  if (["done", "rejected", "failed"].includes(job.status)) {
    $("approval").hidden = true;
    state.approval = null;
    $("plan").disabled = false;
    if (job.error) showError(job.error);
    showSession(await api(`/api/sessions/${state.session}`));
    document.body.dataset.lastJob = job.status;
    return;
  }
  setTimeout(poll, 400);
}

function showApproval(approval) {
  state.approval = approval;
  state.correction = null;
  $("rationale").textContent = approval.plan.rationale;
  const byId = Object.fromEntries(approval.objects.map((o) => [o.id, o]));
  $("actions").replaceChildren(...approval.plan.actions.map((a) => {
    const li = document.createElement("li");
    const target = byId[a.target];
    const extra = Object.entries(a).filter(([k, v]) => !["type", "target"].includes(k) && v !== null && v !== "")
      .map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(", ");
    li.textContent = `${a.type} ${target ? `#${target.id} ${target.label}` : ""} ${extra}`;
    return li;
  }));
  $("overlay").src = `/api/jobs/${state.job}/overlay?t=${Date.now()}`;
  $("marker").hidden = true;
  $("correction").textContent = "";
  $("approval").hidden = false;
}

function pickTarget(event) {
  const img = $("overlay");
  const rect = img.getBoundingClientRect();
  const x = (event.clientX - rect.left) * img.naturalWidth / rect.width;
  const y = (event.clientY - rect.top) * img.naturalHeight / rect.height;
  state.correction = { point: [Math.round(x), Math.round(y)] };
  Object.assign($("marker").style, { left: `${event.clientX - rect.left}px`, top: `${event.clientY - rect.top}px` });
  $("marker").hidden = false;
  const inside = state.approval.objects
    .filter((o) => x >= o.box[0] && x <= o.box[2] && y >= o.box[1] && y <= o.box[3])
    .sort((a, b) => (a.box[2] - a.box[0]) * (a.box[3] - a.box[1]) - (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]));
  $("correction").textContent = `new target: the object under (${Math.round(x)}, ${Math.round(y)})` +
    (inside.length ? ` — probably #${inside[0].id} ${inside[0].label}` : " — segmented from your click");
}

async function decide(answer) {
  $("approve").disabled = $("reject").disabled = true;
  try { await post(`/api/jobs/${state.job}/decision`, { answer }); } catch (e) { showError(e); }
  $("approve").disabled = $("reject").disabled = false;
  $("approval").hidden = true;
}

window.addEventListener("DOMContentLoaded", async () => {
  $("open-image").onclick = () => openImage($("image-list").value).catch(showError);
  $("upload").onchange = (e) => e.target.files[0] && upload(e.target.files[0]).catch(showError);
  $("edit-form").onsubmit = startEdit;
  $("overlay").onclick = pickTarget;
  $("approve").onclick = () => decide(state.correction || "approve");
  $("reject").onclick = () => decide("reject");
  $("undo").onclick = () => step("undo");
  $("redo").onclick = () => step("redo");
  try {
    await loadImages();
    const match = location.hash.match(/session=([\w-]+)/);
    if (match) { state.session = match[1]; showSession(await api(`/api/sessions/${match[1]}`)); }
  } catch (e) { showError(e); }
});
