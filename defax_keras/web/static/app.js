"use strict";
// DeFaX page: uploads images to /api/predict and shows one card per image.
// File names are data: they are only ever written with textContent.

const state = { results: [], info: null, nextId: 0 };
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(message) {
  $("status").textContent = message;
}

async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    state.info = await response.json();
    const mb = Math.round(state.info.max_request_bytes / (1024 * 1024));
    $("model-info").textContent = `Model ${state.info.model} · ${state.info.image_size}px · DeFaX-Keras ${state.info.version}`;
    $("limits").textContent = `${state.info.formats.join(" ")} · up to ${state.info.max_files} files and ${mb} MB per upload`;
    if (!state.info.explain.includes("gradcam")) {
      $("explain-toggle").disabled = true;
      $("explain-toggle").parentElement.title = "This model cannot show Grad-CAM";
    }
  } catch (error) {
    $("model-info").textContent = "Model information unavailable";
  }
}

async function upload(fileList) {
  const files = Array.from(fileList);
  if (!files.length) return;
  showError("");
  const info = state.info;
  if (info) {
    const total = files.reduce((sum, f) => sum + f.size, 0);
    if (files.length > info.max_files) {
      showError(`Too many files: ${files.length} selected, at most ${info.max_files} per upload.`);
      return;
    }
    if (total > info.max_request_bytes) {
      showError(`Upload too large: ${(total / 1048576).toFixed(1)} MB, at most ${Math.round(info.max_request_bytes / 1048576)} MB per upload.`);
      return;
    }
  }
  const form = new FormData();
  files.forEach((file) => form.append("files", file, file.name));
  const explain = $("explain-toggle").checked ? "?explain=gradcam" : "";
  setStatus(`Analysing ${files.length} image${files.length > 1 ? "s" : ""}…`);
  try {
    const response = await fetch(`/api/predict${explain}`, { method: "POST", body: form });
    let payload;
    try {
      payload = await response.json();
    } catch (error) {
      payload = { error: `server answered ${response.status} ${response.statusText}` };
    }
    if (!response.ok) {
      showError(`Upload refused: ${payload.error || response.statusText}`);
      setStatus("");
      return;
    }
    payload.results.forEach((result, index) => {
      state.results.push({ ...result, id: state.nextId++, thumbnail: URL.createObjectURL(files[index]) });
    });
    const failed = payload.results.filter((r) => r.error).length;
    setStatus(`${payload.results.length} image${payload.results.length > 1 ? "s" : ""} analysed${failed ? `, ${failed} could not be read` : ""}.`);
    render();
  } catch (error) {
    showError(`Upload failed: ${error.message}`);
    setStatus("");
  }
}

function visibleResults() {
  const filter = $("filter").value;
  let rows = state.results.filter((r) => {
    if (filter === "all") return true;
    if (filter === "error") return Boolean(r.error);
    return r.label === filter;
  });
  const sort = $("sort").value;
  const pFake = (r) => (r.error ? -1 : r.p_fake);
  if (sort === "fake-desc") rows = rows.slice().sort((a, b) => pFake(b) - pFake(a));
  if (sort === "fake-asc") rows = rows.slice().sort((a, b) => pFake(a) - pFake(b));
  if (sort === "name") rows = rows.slice().sort((a, b) => a.name.localeCompare(b.name));
  return rows;
}

function card(result) {
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = String(result.id);
  node.querySelector(".name").textContent = result.name;
  const image = node.querySelector("img");
  image.src = result.thumbnail;
  image.alt = result.name;
  if (result.error) {
    node.classList.add("failed");
    node.querySelector(".verdict").textContent = `Error: ${result.error}`;
    node.querySelector(".probabilities").hidden = true;
    return node;
  }
  node.classList.add(result.label);
  const confidence = Math.max(result.p_real, result.p_fake);
  node.querySelector(".verdict").textContent = `${result.label === "fake" ? "Fake" : "Real"} · ${(100 * confidence).toFixed(1)}% confident`;
  node.querySelector(".p-real").textContent = `real ${(100 * result.p_real).toFixed(1)}%`;
  node.querySelector(".p-fake").textContent = `fake ${(100 * result.p_fake).toFixed(1)}%`;
  const meter = node.querySelector(".confidence");
  meter.value = result.p_fake;
  meter.title = `P(fake) = ${result.p_fake.toFixed(4)}`;
  if (result.gradcam) {
    const toggle = node.querySelector(".gradcam-toggle");
    toggle.hidden = false;
    const note = node.querySelector(".gradcam-note");
    if (result.gradcam_blank) {
      // an all-zero map: say so rather than show the bare image as if it were a heat map
      note.textContent = `Grad-CAM is blank: ${result.gradcam_note || "the map is all zero"}.`;
    }
    toggle.addEventListener("click", () => {
      const showing = image.dataset.view === "gradcam";
      image.src = showing ? result.thumbnail : result.gradcam;
      image.dataset.view = showing ? "original" : "gradcam";
      toggle.textContent = showing ? "Show Grad-CAM" : "Show original";
      note.hidden = showing || !result.gradcam_blank;
    });
  }
  return node;
}

function render() {
  const container = $("results");
  container.replaceChildren(...visibleResults().map(card));
  $("controls").hidden = state.results.length === 0;
}

function exportable() {
  return state.results.map(({ name, label, p_real, p_fake, error }) => (error ? { name, error } : { name, label, p_real, p_fake }));
}

function download(blob, filename) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

async function exportCsv() {
  // The server writes the CSV so that file names cannot become spreadsheet formulas.
  const response = await fetch("/api/export.csv", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ results: exportable() }),
  });
  if (!response.ok) {
    showError("CSV export failed");
    return;
  }
  download(await response.blob(), "defax-results.csv");
}

function exportJson() {
  download(new Blob([JSON.stringify(exportable(), null, 2)], { type: "application/json" }), "defax-results.json");
}

function init() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    upload(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("file-input").click();
  });
  $("file-input").addEventListener("change", (event) => {
    upload(event.target.files);
    event.target.value = "";
  });
  $("sort").addEventListener("change", render);
  $("filter").addEventListener("change", render);
  $("export-csv").addEventListener("click", exportCsv);
  $("export-json").addEventListener("click", exportJson);
  $("clear").addEventListener("click", () => {
    state.results.forEach((r) => URL.revokeObjectURL(r.thumbnail));
    state.results = [];
    setStatus("");
    render();
  });
  loadInfo();
}

document.addEventListener("DOMContentLoaded", init);
