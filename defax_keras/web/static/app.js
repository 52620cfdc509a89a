"use strict";
// DeFaX page: uploads images and videos to /api/predict and shows one card per file: a photo gets a box and a
// verdict chip over every face found, a video a chart of P(fake) over time per face track whose points open
// that frame's face. File names are data: they are only ever written with textContent.

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
    const video = state.info.video;
    const videos = !video
      ? ""
      : video.available
        ? ` · videos (${video.formats.join(" ")}) up to ${Math.round(video.max_bytes / 1048576)} MB and ${video.max_seconds} s`
        : ' · videos need PyAV on the server: pip install "defax-keras[video]"';
    $("limits").textContent = `${state.info.formats.join(" ")} · up to ${state.info.max_files} files and ${mb} MB per upload${videos}`;
    if (video) {
      $("video-frames").max = String(video.max_frames);
      $("video-frames").value = String(video.frames);
    }
    const faces = state.info.faces;
    if (faces) {
      $("faces-mode").options[0].textContent = `server default (${faces.mode}; a photo's verdict is its faces' ${faces.aggregate})`;
    }
    if (!state.info.explain.includes("gradcam")) {
      $("explain-toggle").disabled = true;
      const note = state.info.explain_note || "Grad-CAM is off: this model cannot show it.";
      $("explain-toggle").parentElement.title = note;
      $("explain-note").textContent = note;
      $("explain-note").hidden = false;
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
  const query = new URLSearchParams();
  if ($("explain-toggle").checked) query.set("explain", "gradcam");
  if ($("faces-mode").value) query.set("faces", $("faces-mode").value);
  const frames = $("video-frames").value;
  if (frames && !(info && info.video && frames === String(info.video.frames))) query.set("frames", frames);
  if ($("video-aggregate").value !== "mean") query.set("video_aggregate", $("video-aggregate").value);
  setStatus(`Analysing ${files.length} file${files.length > 1 ? "s" : ""}…`);
  try {
    const search = query.toString();
    const response = await fetch(`/api/predict${search ? `?${search}` : ""}`, { method: "POST", body: form });
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
    const faceless = payload.results.filter((r) => r.label === "no face").length;
    const notes = [failed ? `${failed} could not be read` : "", faceless ? `no face found in ${faceless}` : ""].filter(Boolean);
    setStatus(`${payload.results.length} file${payload.results.length > 1 ? "s" : ""} analysed${notes.length ? `, ${notes.join(", ")}` : ""}.`);
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
  const pFake = (r) => (r.error || r.p_fake === null ? -1 : r.p_fake);
  if (sort === "fake-desc") rows = rows.slice().sort((a, b) => pFake(b) - pFake(a));
  if (sort === "fake-asc") rows = rows.slice().sort((a, b) => pFake(a) - pFake(b));
  if (sort === "name") rows = rows.slice().sort((a, b) => a.name.localeCompare(b.name));
  return rows;
}

const percent = (p) => `${(100 * p).toFixed(1)}%`;
const title = (label) => (label === "fake" ? "Fake" : "Real");

// The frame takes the photo's shape, so boxes in percent of width and height land on the faces.
function shapeFrame(frame, result) {
  if (!result.width || !result.height) return;
  frame.style.aspectRatio = `${result.width} / ${result.height}`;
  frame.style.width = result.width >= result.height ? "100%" : `${(100 * result.width) / result.height}%`;
}

function faceBox(face, index, result) {
  const [x1, y1, x2, y2] = face.box;
  const box = document.createElement("div");
  box.className = `face-box ${face.label}`;
  box.style.left = `${(100 * Math.max(x1, 0)) / result.width}%`;
  box.style.top = `${(100 * Math.max(y1, 0)) / result.height}%`;
  box.style.width = `${(100 * (Math.min(x2, result.width) - Math.max(x1, 0))) / result.width}%`;
  box.style.height = `${(100 * (Math.min(y2, result.height) - Math.max(y1, 0))) / result.height}%`;
  if (y1 / result.height < 0.08) box.classList.add("chip-below");
  const chip = document.createElement("span");
  chip.className = "chip";
  chip.textContent = `${index + 1} · ${face.label} ${percent(face.p_fake)}`;
  chip.title = `Face ${index + 1}: P(fake) = ${face.p_fake.toFixed(4)}, detector confidence ${face.confidence.toFixed(3)}`;
  box.appendChild(chip);
  return box;
}

function faceItem(face, index) {
  const item = $("face-template").content.firstElementChild.cloneNode(true);
  const text = item.querySelector(".face-text");
  const verdict = document.createElement("span");
  verdict.className = face.label;
  verdict.textContent = title(face.label);
  text.append(`Face ${index + 1} · `, verdict, ` · P(fake) ${percent(face.p_fake)}`);
  if (face.gradcam) {
    const image = item.querySelector(".face-gradcam");
    image.src = face.gradcam;
    image.alt = `Grad-CAM of face ${index + 1}`;
    image.title = "Grad-CAM of the aligned face crop the model saw";
    image.hidden = false;
    if (face.gradcam_blank) {
      const note = item.querySelector(".face-gradcam-note");
      note.textContent = `Grad-CAM is blank: ${face.gradcam_note || "the map is all zero"}.`;
      note.hidden = false;
    }
  }
  return item;
}

function card(result) {
  if (result.kind === "video") return videoCard(result);
  const node = $("card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = String(result.id);
  node.querySelector(".name").textContent = result.name;
  const frame = node.querySelector(".frame");
  const image = node.querySelector("img");
  image.src = result.thumbnail;
  image.alt = result.name;
  if (result.error) {
    node.classList.add("failed");
    node.querySelector(".verdict").textContent = `Error: ${result.error}`;
    node.querySelector(".probabilities").hidden = true;
    return node;
  }
  shapeFrame(frame, result);
  const faces = result.faces || [];
  faces.forEach((face, index) => frame.appendChild(faceBox(face, index, result)));
  const faceNote = node.querySelector(".face-note");
  if (result.label === "no face") {
    node.classList.add("noface");
    node.querySelector(".verdict").textContent = "No face found";
    node.querySelector(".probabilities").hidden = true;
    faceNote.textContent = "Nothing was scored: the model judges faces. Try Faces: off to score the whole image.";
    faceNote.hidden = false;
    return node;
  }
  node.classList.add(result.label);
  const confidence = Math.max(result.p_real, result.p_fake);
  node.querySelector(".verdict").textContent = `${title(result.label)} · ${percent(confidence)} confident`;
  node.querySelector(".p-real").textContent = `real ${percent(result.p_real)}`;
  node.querySelector(".p-fake").textContent = `fake ${percent(result.p_fake)}`;
  const meter = node.querySelector(".confidence");
  meter.value = result.p_fake;
  meter.title = `P(fake) = ${result.p_fake.toFixed(4)}`;
  if (faces.length) {
    const how = state.info && state.info.faces && state.info.faces.aggregate === "mean" ? "the mean of its faces" : "its most suspicious face";
    faceNote.textContent = faces.length > 1 ? `${faces.length} faces; the photo's verdict is ${how}.` : "1 face.";
    faceNote.hidden = false;
    const list = node.querySelector(".face-list");
    list.replaceChildren(...faces.map(faceItem));
    list.hidden = false;
  } else if (result.face_note) {
    faceNote.textContent = `${result.face_note[0].toUpperCase()}${result.face_note.slice(1)}.`;
    faceNote.hidden = false;
  }
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
      frame.classList.toggle("showing-gradcam", !showing);
      toggle.textContent = showing ? "Show Grad-CAM" : "Show original";
      note.hidden = showing || !result.gradcam_blank;
    });
  }
  return node;
}

// ---------------------------------------------------------------- videos

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 600, height: 200, left: 40, right: 12, top: 12, bottom: 28 };

function svg(name, attributes, parent) {
  const element = document.createElementNS(SVG, name);
  Object.entries(attributes).forEach(([key, value]) => element.setAttribute(key, String(value)));
  if (parent) parent.appendChild(element);
  return element;
}

function svgText(parent, x, y, text, className) {
  const element = svg("text", { x, y, class: className }, parent);
  element.textContent = text;
  return element;
}

const seconds = (t) => `${Number(t.toFixed(2))} s`;

// P(fake) over time, one line per face track, with the threshold; each point opens its frame's face.
function timelineChart(result, onPick) {
  const { width, height, left, right, top, bottom } = CHART;
  const end = Math.max(result.duration || 0, ...result.timeline.map((f) => f.time)) || 1;
  const x = (t) => left + ((width - left - right) * t) / end;
  const y = (p) => top + (height - top - bottom) * (1 - p);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  svg("title", {}, chart).textContent = "P(fake) over time per face track";
  svg("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "axis" }, chart);
  svg("line", { x1: left, y1: y(0), x2: left, y2: y(1), class: "axis" }, chart);
  [0, 0.5, 1].forEach((p) => svgText(chart, left - 6, y(p) + 4, p.toFixed(1), "tick y-tick"));
  svgText(chart, left, height - 8, "0 s", "tick");
  svgText(chart, width - right, height - 8, seconds(end), "tick x-end");
  svgText(chart, (left + width - right) / 2, height - 8, "time", "tick x-label");
  const threshold = state.info && typeof state.info.threshold === "number" ? state.info.threshold : 0.5;
  svg("line", { x1: left, y1: y(threshold), x2: width - right, y2: y(threshold), class: "threshold" }, chart);
  svgText(chart, width - right, y(threshold) - 4, `threshold ${threshold}`, "tick threshold-label");
  result.tracks.forEach((track, order) => {
    const colour = `track-${order % 6}`;
    const points = [];
    result.timeline.forEach((frame, frameIndex) => {
      frame.faces.forEach((face, faceIndex) => {
        if (face.track === track.track) points.push({ frame, frameIndex, face, faceIndex });
      });
    });
    svg("polyline", { points: points.map(({ frame, face }) => `${x(frame.time)},${y(face.p_fake)}`).join(" "), class: `track-line ${colour}` }, chart);
    points.forEach((point) => {
      const { frame, face } = point;
      const label = `Track ${track.track + 1}, ${seconds(frame.time)} (frame ${frame.index}): P(fake) ${percent(face.p_fake)}`;
      const dot = svg("circle", { cx: x(frame.time), cy: y(face.p_fake), r: 5, class: `point ${colour}`, tabindex: 0, role: "button", "aria-label": label }, chart);
      dot.dataset.track = String(track.track);
      dot.dataset.frame = String(frame.index);
      svg("title", {}, dot).textContent = label;
      const pick = () => {
        chart.querySelectorAll(".point.selected").forEach((other) => other.classList.remove("selected"));
        dot.classList.add("selected");
        onPick(point, track);
      };
      dot.addEventListener("click", pick);
      dot.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          pick();
        }
      });
    });
  });
  return chart;
}

function showFrame(node, result, { frame, face }, track) {
  const detail = node.querySelector(".frame-detail");
  const crop = detail.querySelector(".frame-crop");
  crop.src = face.crop;
  crop.alt = `Face of track ${track.track + 1} at ${seconds(frame.time)}`;
  const figure = detail.querySelector(".frame-gradcam-figure");
  const gradcam = detail.querySelector(".frame-gradcam");
  const note = detail.querySelector(".frame-gradcam-note");
  figure.hidden = !face.gradcam;
  note.hidden = !face.gradcam_blank;
  if (face.gradcam) {
    gradcam.src = face.gradcam;
    gradcam.alt = `Grad-CAM of track ${track.track + 1} at ${seconds(frame.time)}`;
    if (face.gradcam_blank) note.textContent = `Grad-CAM is blank: ${face.gradcam_note || "the map is all zero"}.`;
  }
  const text = detail.querySelector(".frame-text");
  const verdict = document.createElement("span");
  verdict.className = face.label;
  verdict.textContent = title(face.label);
  text.replaceChildren(`${seconds(frame.time)} (frame ${frame.index}) · track ${track.track + 1} · `, verdict, ` · P(fake) ${percent(face.p_fake)}`);
  detail.hidden = false;
  const preview = node.querySelector(".preview");
  if (preview.readyState > 0) {
    preview.pause();
    preview.currentTime = frame.time;
  }
}

function videoCard(result) {
  const node = $("video-card-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = String(result.id);
  node.querySelector(".name").textContent = result.name;
  const preview = node.querySelector(".preview");
  preview.src = result.thumbnail;
  const verdict = node.querySelector(".verdict");
  if (result.error) {
    node.classList.add("failed");
    verdict.textContent = `Error: ${result.error}`;
    node.querySelector(".probabilities").hidden = true;
    node.querySelector(".video-summary").hidden = true;
    return node;
  }
  const scored = `${result.frames_scored} of ${result.frames} sampled frame${result.frames === 1 ? "" : "s"} with a face`;
  const tracks = `${result.tracks.length} face track${result.tracks.length === 1 ? "" : "s"}`;
  node.querySelector(".video-summary").textContent = `Video · ${seconds(result.duration || 0)} · ${scored} · ${tracks}`;
  if (result.label === "no face") {
    node.classList.add("noface");
    verdict.textContent = "No face found";
    node.querySelector(".probabilities").hidden = true;
    const note = node.querySelector(".face-note");
    note.textContent = `No face in any of the ${result.frames} sampled frames: nothing was scored.`;
    note.hidden = false;
    return node;
  }
  node.classList.add(result.label);
  const chip = document.createElement("span");
  chip.className = `verdict-chip ${result.label}`;
  chip.textContent = title(result.label);
  verdict.replaceChildren(chip, ` · ${percent(Math.max(result.p_real, result.p_fake))} confident`);
  node.querySelector(".p-real").textContent = `real ${percent(result.p_real)}`;
  node.querySelector(".p-fake").textContent = `fake ${percent(result.p_fake)}`;
  const meter = node.querySelector(".confidence");
  meter.value = result.p_fake;
  meter.title = `P(fake) = ${result.p_fake.toFixed(4)}, the ${result.aggregate} over frames`;
  const timeline = node.querySelector(".timeline");
  timeline.replaceChildren(timelineChart(result, (point, track) => showFrame(node, result, point, track)));
  timeline.hidden = false;
  const list = node.querySelector(".track-list");
  list.replaceChildren(
    ...result.tracks.map((track, order) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch track-${order % 6}`;
      const label = document.createElement("span");
      label.className = track.label;
      label.textContent = title(track.label);
      item.append(swatch, `Track ${track.track + 1} · `, label, ` · P(fake) ${percent(track.p_fake)} · ${track.frames} frame${track.frames === 1 ? "" : "s"}`);
      return item;
    }),
  );
  list.hidden = false;
  const note = node.querySelector(".face-note");
  note.textContent = "Click a point to see the face the model saw in that frame.";
  note.hidden = false;
  return node;
}

function render() {
  const container = $("results");
  container.replaceChildren(...visibleResults().map(card));
  $("controls").hidden = state.results.length === 0;
}

// What the exports carry: the verdicts and each face's box and score (not the crops or Grad-CAM images).
function exportable() {
  return state.results.map(({ name, kind, label, p_real, p_fake, faces, face_note, scored, error, ...video }) => {
    if (error) return kind ? { name, kind, error } : { name, error };
    if (kind === "video") {
      const { frames, frames_scored, aggregate, tracks, timeline } = video;
      const plain = timeline.map((frame) => ({ ...frame, faces: frame.faces.map(({ crop, gradcam, gradcam_blank, gradcam_note, ...face }) => face) }));
      return { name, kind, label, p_real, p_fake, frames, frames_scored, aggregate, tracks, timeline: plain };
    }
    const row = { name, label, p_real, p_fake };
    if (scored !== "whole") row.faces = (faces || []).map(({ gradcam, gradcam_blank, gradcam_note, ...face }) => face);
    return face_note ? { ...row, face_note } : row;
  });
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
