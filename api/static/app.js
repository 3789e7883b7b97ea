// beatbus live dashboard: one WebSocket per source (/ws/{source}) drives every widget.
// Plain JS, no build step. Events are the bus's JSON events, told apart by their "type".
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
const SECTION_WINDOW_S = 120;

const st = {
  source: params.get("source") || "",
  ws: null, retry: null, beats: 0, meter: 4, bpm: 0,
  unreachable: false,         // the API says the broker node holding the source does not answer
  clockSkew: 0,               // browser ms - server ms: the least (now - emitted_at) of the last 20 s
  skews: [],                  // [[browser ms, now - emitted_at]]: delivery delay only ever adds to it
  nextBeat: null, period: 0.5, // server wall s of the next predicted beat, beat period s
  sections: [],               // the song so far: [{start (source s), label, at (browser ms)}], oldest first
  transitions: [],            // build-ups, drops, breakdowns: [{kind, start (source s), at (browser ms)}]
  taps: [], tapErrors: [], tapOffset: null,
  plan: null,
  led: { mode: "simulated", pixels: 60, frame: null, flash: 0, down: false, ws: null },
};

// -- API key: entered once, kept in sessionStorage (this tab only, gone when it closes) -------
// A link may carry it as #key=... (never sent to the server); it is moved to storage at once.
const KEY_ITEM = "beatbus.apiKey";
(function keyFromFragment() {
  const m = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (!m) return;
  sessionStorage.setItem(KEY_ITEM, decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search);
})();
const apiKey = () => sessionStorage.getItem(KEY_ITEM) || "";
function askForKey(message) {
  const form = $("key-form");
  form.hidden = false;
  say($("key-msg"), message, true);
}
function socket(url) {
  // Browsers cannot set headers on a WebSocket: the key travels as a subprotocol.
  const key = apiKey();
  return key ? new WebSocket(url, ["beatbus.v1", `bearer.${key}`]) : new WebSocket(url);
}

// -- helpers -------------------------------------------------------------------------------
async function api(path, opts = {}) {
  const key = apiKey();
  const headers = { ...(opts.headers || {}) };
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(path, { ...opts, headers });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (r.status === 401) askForKey(key ? "that API key was refused: enter another" : "this API needs a key");
  if (!r.ok) throw new Error((body && body.detail) || `${r.status} ${r.statusText}`);
  return body;
}
const postJSON = (path, doc) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(doc) });
function say(el, text, isError = false) { el.textContent = text; el.classList.toggle("error", isError); }
function setStatus(state, text) { const s = $("status"); s.dataset.state = state; s.textContent = text; }

// -- sources and the event socket ----------------------------------------------------------
async function loadSources() {
  let names = [];
  try { names = (await api("/api/sources")).sources.map((s) => s.source); } catch (_) { /* keep going */ }
  if (st.source && !names.includes(st.source)) names.unshift(st.source);
  if (!st.source) st.source = names[0] || "default";
  if (!names.includes(st.source)) names.unshift(st.source);
  const sel = $("source-select");
  sel.innerHTML = "";
  for (const n of names) sel.add(new Option(n, n, false, n === st.source));
}

function connect() {
  if (st.ws) { st.ws.onclose = null; st.ws.close(); }
  clearTimeout(st.retry);
  st.unreachable = false;
  setStatus("connecting", `connecting to ${st.source}…`);
  const ws = socket(`${wsBase}/ws/${encodeURIComponent(st.source)}`);
  st.ws = ws;
  ws.onopen = () => st.unreachable || setStatus("live", `${st.source} · waiting for beats`);
  ws.onmessage = (e) => { try { handle(JSON.parse(e.data)); } catch (err) { console.warn(err); } };
  ws.onclose = () => { setStatus("connecting", "reconnecting…"); st.retry = setTimeout(connect, 1000); };
  refreshState();
  loadSections();
}

// the song so far from the server, so a page opened mid-song draws every section already played
async function loadSections() {
  const source = st.source;
  try {
    const h = await api(`/api/sources/${encodeURIComponent(source)}/sections`);
    if (source !== st.source) return;
    st.sections = h.sections.map((s) => ({ start: s.start, label: s.label, at: s.system_time * 1000 + st.clockSkew }));
    if (st.sections.length) showSection(st.sections[st.sections.length - 1].label);
    drawTimeline();
  } catch (_) { st.sections = []; drawTimeline(); }
}

async function refreshState() {
  try {
    const s = await api(`/api/sources/${encodeURIComponent(st.source)}`);
    if (s.bpm) $("bpm").textContent = s.bpm.toFixed(1);
    if (s.position) $("position").textContent = s.position;
    if (s.section && !st.sections.length) showSection(s.section);
    if (s.intensity != null) showIntensity(s.intensity);
    if (s.level_db != null) showLevel(s.level_db);
    showQuality(s.quality || {});
    showReachable(s.reachable);
  } catch (_) { /* unknown yet: the socket fills in */ }
}

// a Redis Cluster shard down: the socket stays open and silent, so say why (the API's answer)
function showReachable(reachable) {
  if (reachable === false && !st.unreachable) {
    st.unreachable = true;
    setStatus("down", `${st.source} · unreachable: the broker node holding it does not answer`);
  } else if (reachable !== false && st.unreachable) {
    st.unreachable = false;
    setStatus("live", `${st.source} · waiting for beats`);
  }
}

// adaptive quality: the stages that serve this source below full quality under load
function showQuality(q) {
  const low = Object.entries(q).filter(([, level]) => level !== "full")
    .sort(([a], [b]) => a.localeCompare(b));
  $("quality-row").hidden = !low.length;
  $("quality").textContent = low.map(([role, level]) => `${role} ${level}`).join(" · ");
}
setInterval(async () => {
  try {
    const s = await api(`/api/sources/${encodeURIComponent(st.source)}`);
    showQuality(s.quality || {});
    showReachable(s.reachable);
  } catch (_) { /* next time */ }
}, 5000);

function handle(ev) {
  switch (ev.type) {
    case "beat": return onBeat(ev);
    case "intensity": showIntensity(ev.intensity); return showLevel(20 * Math.log10(Math.max(ev.rms, 1e-6)));
    // confirmed sections and relabels of past ones; a tentative one is a mere hint
    case "section": return ev.status !== "tentative" && noteSection(ev);
    case "transition": return noteTransition(ev);
    case "control": return onControl(ev);
    case "stream_end": st.sectionsEnded = true; return setStatus("ended", `${st.source} · ended (${ev.reason})`);
  }
}

// -- beats: tempo, metronome, bar.beat ---------------------------------------------------
function onBeat(ev) {
  const now = Date.now();
  // the smallest recent sample is the one delivered fastest, so the least inflated by a late
  // WebSocket message (one slow message would otherwise shift every tap by its delay)
  st.skews = st.skews.filter(([t]) => now - t < 20000).concat([[now, now - ev.emitted_at * 1000]]);
  st.clockSkew = Math.min(...st.skews.map(([, s]) => s));
  st.beats += 1;
  st.bpm = ev.bpm;
  st.period = ev.bpm > 0 ? 60 / ev.bpm : 0.5;
  st.nextBeat = ev.next_beat_system_time;
  st.lastBeat = ev.system_time;
  document.body.dataset.beats = String(st.beats);
  $("bpm").textContent = ev.bpm.toFixed(1);
  $("position").textContent = `${ev.bar + 1}.${ev.beat_in_bar}`;
  $("beat-count").textContent = String(ev.beat + 1);
  $("confidence").textContent = ev.confidence.toFixed(2);
  $("lag").textContent = `${Math.round((ev.emitted_at - ev.system_time) * 1000)} ms`;
  $("backend").textContent = ev.backend || "–";
  st.unreachable = false;
  setStatus("live", `${st.source} · live`);
  if (ev.intensity != null) showIntensity(ev.intensity);
  metronome(ev.meter, ev.beat_in_bar, ev.is_downbeat);
  st.led.flash = 1; st.led.down = ev.is_downbeat;
}

function metronome(meter, inBar, down) {
  const box = $("metronome");
  if (box.children.length !== meter) {
    box.innerHTML = "";
    for (let i = 0; i < meter; i++) {
      const d = document.createElement("div");
      d.className = "dot" + (i === 0 ? " first" : "");
      box.appendChild(d);
    }
  }
  [...box.children].forEach((d, i) => d.classList.toggle("on", i === inBar - 1));
  box.dataset.beat = String(inBar);
  const card = $("metronome-card");
  card.classList.add("pulse"); card.classList.toggle("down", down);
  clearTimeout(card._t);
  card._t = setTimeout(() => card.classList.remove("pulse", "down"), Math.min(150, st.period * 400));
}

// -- levels and sections ----------------------------------------------------------------
function showIntensity(x) {
  $("intensity-bar").style.width = `${Math.round(Math.max(0, Math.min(1, x)) * 100)}%`;
  $("intensity").textContent = x.toFixed(2);
}
function showLevel(db) {
  const pct = Math.max(0, Math.min(1, (db + 60) / 60));
  $("level-bar").style.width = `${Math.round(pct * 100)}%`;
  $("level").textContent = `${db.toFixed(0)} dB`;
}
function showSection(label) {
  const el = $("section");
  el.textContent = label; el.dataset.label = label;
}
function noteSection(ev) {
  if (st.sectionsEnded) { st.sections = []; st.transitions = []; st.sectionsEnded = false; }   // a new run
  // one entry per section start: a revision relabels it in place
  const i = st.sections.findIndex((s) => Math.abs(s.start - ev.start) < 1e-3);
  if (i >= 0) st.sections[i].label = ev.label;
  else {
    st.sections.push({ start: ev.start, label: ev.label, at: ev.system_time * 1000 + st.clockSkew });
    st.sections.sort((a, b) => a.start - b.start);
  }
  if (ev.end == null && st.sections[st.sections.length - 1].start <= ev.start) showSection(ev.label);
  drawTimeline();
}
const MARKED = { "build-up": "build-up", drop: "drop", breakdown: "breakdown" };   // not tempo changes
function noteTransition(ev) {
  // a build-up is issued again with a new predicted drop while it keeps rising: one mark per start
  if (!MARKED[ev.kind] || st.transitions.some((t) => t.kind === ev.kind && Math.abs(t.start - ev.timestamp) < 1e-3)) return;
  // system_time: the wall time it began (a build-up is known only a second or so later)
  st.transitions.push({ kind: ev.kind, start: ev.timestamp, at: ev.system_time * 1000 + st.clockSkew });
  drawTimeline();
}
function drawTimeline() {
  // the whole song so far, at least the last SECTION_WINDOW_S
  const tl = $("timeline"), now = Date.now();
  const first = st.sections.length ? st.sections[0].at : now;
  const span = Math.max(SECTION_WINDOW_S * 1000, now - first), from = now - span;
  const m = Math.floor(span / 60000), sec = Math.floor((span % 60000) / 1000);
  $("timeline-legend").textContent = now - first > SECTION_WINDOW_S * 1000
    ? `the song so far (${m}:${String(sec).padStart(2, "0")})` : "last 2 minutes";
  tl.innerHTML = "";
  st.sections.forEach((s, i) => {
    const start = Math.max(s.at, from), end = i + 1 < st.sections.length ? st.sections[i + 1].at : now;
    const d = document.createElement("div");
    d.className = `seg-${s.label}`; d.title = s.label;
    d.style.width = `${(100 * (end - start)) / span}%`;
    tl.appendChild(d);
  });
  // transitions as marks over the sections (a build-up spans from its start to now or the next mark)
  st.transitions = st.transitions.filter((t) => t.at >= from);
  st.transitions.forEach((t) => {
    const m = document.createElement("span");
    m.className = `mark mark-${t.kind}`; m.title = t.kind;
    m.style.left = `${(100 * (t.at - from)) / span}%`;
    tl.appendChild(m);
  });
}
setInterval(drawTimeline, 1000);

// -- LED preview: the LED consumer's web output if there is one, else beat flashes ----------
async function setupLed() {
  // ?led=NAME picks a device of GET /api/led/devices; ?led=ws://HOST:PORT a standalone ws:// preview
  let url = params.get("led");
  if (url && !/^wss?:\/\//.test(url)) url = `${wsBase}/ws/led/${encodeURIComponent(url)}`;
  if (!url) {
    try {
      const d = await api("/api/led/devices");
      if (d.devices.length) url = `${wsBase}/ws/led/${encodeURIComponent(d.devices[0])}`;
    } catch (_) { /* no LED preview */ }
  }
  if (!url) { $("led-mode").textContent = "simulated from beats (no LED web preview running)"; return; }
  const ws = socket(url);
  ws.binaryType = "arraybuffer";
  st.led.ws = ws;
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      const hello = JSON.parse(e.data);
      st.led.pixels = hello.pixels || st.led.pixels;
      st.led.mode = "device";
      $("led-mode").textContent = `${hello.device} · ${st.led.pixels} px`;
    } else {
      st.led.frame = new Uint8Array(e.data);
      st.led.mode = "device";
    }
  };
  ws.onclose = () => { st.led.mode = "simulated"; $("led-mode").textContent = "simulated (preview closed)"; };
}

function drawLed() {
  const c = $("led-canvas"), g = c.getContext("2d");
  const n = st.led.mode === "device" && st.led.frame ? st.led.frame.length / 3 : st.led.pixels;
  const w = c.width / n;
  g.fillStyle = "#050608"; g.fillRect(0, 0, c.width, c.height);
  for (let i = 0; i < n; i++) {
    let r, gg, b;
    if (st.led.mode === "device" && st.led.frame) {
      [r, gg, b] = [st.led.frame[3 * i], st.led.frame[3 * i + 1], st.led.frame[3 * i + 2]];
    } else {
      const f = st.led.flash;
      [r, gg, b] = st.led.down ? [255 * f, 77 * f, 109 * f] : [76 * f, 201 * f, 240 * f];
    }
    g.fillStyle = `rgb(${r | 0},${gg | 0},${b | 0})`;
    g.fillRect(i * w + 1, 4, Math.max(1, w - 2), c.height - 8);
  }
  st.led.flash *= 0.88;
  requestAnimationFrame(drawLed);
}

// -- lights: the LED consumers' devices, effects and presets (each consumer saves its own) -----
// Every change goes to the consumer through the API and answers with its new setup, shown at once;
// GET /api/led/devices every 2 s shows what others change. Names and URLs are users' text: never
// put into innerHTML.
const lights = { setups: [], consumer: "", catalogue: null, editing: null, sig: "" };
const lightsQuery = () => (lights.setups.length > 1 ? `?consumer=${encodeURIComponent(lights.consumer)}` : "");
const lightsSetup = () => lights.setups.find((c) => c.consumer === lights.consumer) || null;
const deviceOf = (name) => (lightsSetup() || { devices: [] }).devices.find((d) => d.name === name) || null;
const effectOf = (name) => (lights.catalogue ? lights.catalogue.effects.find((e) => e.name === name) : null);
const paletteOf = (name) => (lights.catalogue ? lights.catalogue.palettes.find((p) => p.name === name) : null);
function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

async function loadLights() {
  try {
    if (!lights.catalogue) lights.catalogue = await api("/api/led/effects");
    showConsumers((await api("/api/led/devices")).consumers);
  } catch (err) { $("lights-status").textContent = err.message; }
}

function showConsumers(consumers) {
  lights.setups = consumers;
  if (!consumers.some((c) => c.consumer === lights.consumer)) lights.consumer = consumers.length ? consumers[0].consumer : "";
  const sel = $("lights-consumer");
  sel.hidden = consumers.length < 2;
  if ([...sel.options].map((o) => o.value).join() !== consumers.map((c) => c.consumer).join()) {
    sel.innerHTML = "";
    for (const c of consumers) sel.add(new Option(c.consumer, c.consumer, false, c.consumer === lights.consumer));
  }
  showSetup(lightsSetup());
}

function showSetup(setup) {
  if (setup) lights.setups = lights.setups.filter((c) => c.consumer !== setup.consumer).concat([setup]);
  const devices = setup ? setup.devices : [];
  $("lights-status").textContent = setup
    ? `${setup.consumer} · ${devices.length} device${devices.length === 1 ? "" : "s"} · source ${setup.source}`
    : "no LED consumer running (start one: beatbus consume led)";
  const sig = JSON.stringify([setup && setup.consumer, devices, setup && setup.presets]);
  if (sig === lights.sig) return;
  lights.sig = sig;
  const body = $("lights-devices").tBodies[0];
  body.innerHTML = "";
  for (const d of devices) {
    const on = el("input", { type: "checkbox", checked: d.enabled, className: "dev-enabled", title: "enabled" });
    on.addEventListener("change", () => changeDevice(d.name, { enabled: on.checked }));
    const state = !d.enabled ? "off" : !d.running ? "starting" : d.output_up === false ? "output down" : "sending";
    const edit = el("button", { type: "button", className: "dev-edit", textContent: "edit" });
    edit.addEventListener("click", () => editDevice(d));
    const remove = el("button", { type: "button", className: "dev-remove", textContent: "remove" });
    remove.addEventListener("click", () => lightsCall(`/api/led/devices/${encodeURIComponent(d.name)}${lightsQuery()}`,
      { method: "DELETE" }, `removed ${d.name}`));
    const row = el("tr", {}, el("td", {}, on), el("td", { textContent: d.name }), el("td", { textContent: d.output }),
      el("td", { textContent: d.pixels }),
      el("td", { textContent: d.segments.length || "", title: segmentsText(d.segments), className: "dev-segments" }),
      el("td", { textContent: d.fps }), el("td", { textContent: d.brightness }),
      el("td", { textContent: d.output_latency_ms }), el("td", { textContent: d.effect, className: "dev-effect" }),
      el("td", { textContent: state, className: "dev-state" }), el("td", {}, edit, " ", remove));
    row.dataset.device = d.name;
    row.dataset.state = state;
    body.append(row);
  }
  const pick = $("fx-device"), keep = pick.value;
  pick.innerHTML = "";
  for (const d of devices) pick.add(new Option(d.name, d.name, false, d.name === keep));
  if (pick.value !== keep || !$("fx-params").children.length) showEffect(deviceOf(pick.value));
  const presets = $("preset-select"), chosen = presets.value;
  presets.innerHTML = "";
  for (const name of Object.keys((setup && setup.presets) || {}).sort()) presets.add(new Option(name, name, false, name === chosen));
}

// one request at a time, like the controls: changes reach the consumer in the order they were made
let lightsSent = Promise.resolve();
function lightsCall(path, opts, done) {
  lightsSent = lightsSent.then(async () => {
    try {
      showSetup(await api(path, opts));
      say($("lights-result"), done);
    } catch (err) { say($("lights-result"), err.message, true); lights.sig = ""; loadLights(); }
  });
  return lightsSent;
}
const sendJSON = (method, doc) => ({ method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(doc) });
const changeDevice = (name, doc) => lightsCall(`/api/led/devices/${encodeURIComponent(name)}${lightsQuery()}`,
  sendJSON("PATCH", doc), `${name}: ${Object.keys(doc).join(", ")} changed`);

// segments as the form writes them: "0-149, 299-150", inclusive pixel ranges in the order the effect
// runs along them; one written high-to-low runs reversed. The consumer checks overlaps and bounds.
function parseSegments(text) {
  const segments = [];
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)\s*(?:-\s*(\d+))?$/.exec(part);
    if (!m) throw new Error(`segments: "${part}" is not a pixel range like 0-149 (299-150 runs reversed)`);
    const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
    segments.push({ start: Math.min(a, b), stop: Math.max(a, b) + 1, reverse: a > b });
  }
  return segments;
}
const segmentsText = (segments) => (segments || [])
  .map((s) => (s.reverse ? `${s.stop - 1}-${s.start}` : `${s.start}-${s.stop - 1}`)).join(", ");

// the device form: add, or edit the device picked in the list (a device keeps its name)
function editDevice(d) {
  lights.editing = d ? d.name : null;
  $("dev-name").value = d ? d.name : ""; $("dev-name").disabled = !!d;
  $("dev-output").value = d ? d.output : "";
  $("dev-pixels").value = d ? d.pixels : 60;
  $("dev-brightness").value = d ? d.brightness : 1;
  $("dev-fps").value = d ? d.fps : "";
  $("dev-latency").value = d ? d.output_latency_ms : "";
  $("dev-segments").value = d ? segmentsText(d.segments) : "";
  $("dev-reverse").checked = d ? d.reverse : false;
  $("dev-submit").textContent = d ? `save ${d.name}` : "add device";
  $("dev-cancel").hidden = !d;
}
$("device-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const doc = { output: $("dev-output").value.trim(), reverse: $("dev-reverse").checked };
  try { doc.segments = parseSegments($("dev-segments").value); } catch (err) { say($("lights-result"), err.message, true); return; }
  for (const [id, key] of [["dev-pixels", "pixels"], ["dev-brightness", "brightness"], ["dev-fps", "fps"],
    ["dev-latency", "output_latency_ms"]]) if ($(id).value !== "") doc[key] = Number($(id).value);
  if (lights.editing) {
    const name = lights.editing;
    changeDevice(name, doc).then(() => { if (!$("lights-result").classList.contains("error")) editDevice(null); });
    return;
  }
  if ($("dev-name").value.trim()) doc.name = $("dev-name").value.trim();
  lightsCall(`/api/led/devices${lightsQuery()}`, sendJSON("POST", doc), `added ${doc.name || doc.output}`)
    .then(() => { if (!$("lights-result").classList.contains("error")) editDevice(null); });
});
$("dev-cancel").addEventListener("click", () => editDevice(null));

// WLED discovery: the API's machine listens for mDNS answers (~2 s); "add" fills the device form with
// the controller's ddp:// URL and name, and nothing is sent until the form is (the pixel count is the user's).
$("wled-find").addEventListener("click", async () => {
  const find = $("wled-find"), body = $("wled-found").tBodies[0];
  find.disabled = true;
  say($("wled-status"), "listening for WLED controllers…");
  try {
    const found = await api("/api/led/discover");
    body.innerHTML = "";
    for (const w of found.devices) {
      const add = el("button", { type: "button", className: "wled-add", textContent: "add" });
      add.addEventListener("click", () => {
        editDevice(null);
        $("dev-name").value = w.device;
        $("dev-output").value = w.output;
        $("dev-pixels").focus();
        say($("lights-result"), `${w.name}: give its pixel count, then add device`);
      });
      const row = el("tr", {}, el("td", { textContent: w.name }), el("td", { textContent: w.output }),
        el("td", { textContent: w.host }), el("td", { textContent: w.mac ? `mac ${w.mac}` : "" }), el("td", {}, add));
      row.dataset.wled = w.name;
      body.append(row);
    }
    say($("wled-status"), found.devices.length ? `${found.devices.length} found`
      : `no WLED device answered within ${found.timeout_s} s`);
  } catch (err) { say($("wled-status"), err.message, true); } finally { find.disabled = false; }
});
$("lights-consumer").addEventListener("change", (e) => { lights.consumer = e.target.value; lights.sig = ""; showSetup(lightsSetup()); });

// the effect picker: one input per parameter of the catalogue, the device's values filled in
function showEffect(device, effectName) {
  const box = $("fx-params"), fx = $("fx-effect");
  if (!lights.catalogue) return;
  if (!fx.options.length) for (const e of lights.catalogue.effects) fx.add(new Option(e.name, e.name));
  const name = effectName || (device ? device.effect : fx.value);
  fx.value = name;
  const info = effectOf(name);
  $("fx-description").textContent = info ? info.description : "";
  const values = device && device.effect === name ? device.effect_config : {};
  box.innerHTML = "";
  for (const p of info ? info.params : []) {
    const v = p.name in values ? values[p.name] : p.default;
    let input;
    if (p.type === "bool") {
      input = el("input", { type: "checkbox", checked: v });
    } else if (p.choices) {
      input = el("select");
      for (const c of p.choices) input.add(new Option(c, c, false, c === v));
    } else if (p.type === "str") {
      input = el("input", { value: v });
    } else {
      input = el("input", { type: "number", min: p.min, max: p.max, step: p.type === "int" ? 1 : "any", value: v });
    }
    Object.assign(input, { id: `fx-param-${p.name}`, title: p.description });
    input.dataset.param = p.name; input.dataset.type = p.type;
    const label = el("label", { className: p.type === "bool" ? "check" : "" }, `${p.name} `, input);
    if (p.name === "color_palette") {
      const swatch = el("span", { className: "swatch" });
      const paint = () => { const pal = paletteOf(input.value); swatch.style.background = pal ? `linear-gradient(90deg, ${pal.colors.join(", ")}${pal.colors.length === 1 ? ", " + pal.colors[0] : ""})` : ""; };
      input.addEventListener("change", paint); paint();
      label.append(swatch);
    }
    box.append(label);
  }
}
$("fx-device").addEventListener("change", (e) => showEffect(deviceOf(e.target.value)));
$("fx-effect").addEventListener("change", (e) => showEffect(deviceOf($("fx-device").value), e.target.value));
$("effect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const device = $("fx-device").value;
  if (!device) { say($("lights-result"), "add a device first", true); return; }
  const config = {};
  for (const input of $("fx-params").querySelectorAll("[data-param]")) {
    const t = input.dataset.type;
    config[input.dataset.param] = t === "bool" ? input.checked : t === "int" || t === "float" ? Number(input.value) : input.value;
  }
  changeDevice(device, { effect: $("fx-effect").value, effect_config: config });
});

// presets: the effects of every device, saved by the consumer
$("preset-save").addEventListener("click", () => {
  const name = $("preset-name").value.trim();
  if (!name) { say($("lights-result"), "give the preset a name", true); return; }
  lightsCall(`/api/led/presets${lightsQuery()}`, sendJSON("POST", { name }), `saved preset ${name}`);
});
$("preset-apply").addEventListener("click", () => {
  const name = $("preset-select").value;
  if (!name) { say($("lights-result"), "no preset saved yet", true); return; }
  lightsCall(`/api/led/presets/${encodeURIComponent(name)}/apply${lightsQuery()}`, { method: "POST" }, `applied preset ${name}`)
    .then(() => showEffect(deviceOf($("fx-device").value)));
});
$("preset-delete").addEventListener("click", () => {
  const name = $("preset-select").value;
  if (!name) { say($("lights-result"), "no preset saved yet", true); return; }
  lightsCall(`/api/led/presets/${encodeURIComponent(name)}${lightsQuery()}`, { method: "DELETE" }, `deleted preset ${name}`);
});
setInterval(loadLights, 2000);

// -- controls ---------------------------------------------------------------------------
// One at a time, in order: concurrent POSTs can reach the bus out of order (a slider moved by
// three key presses could leave the consumers on its second value, not its last).
let controlsSent = Promise.resolve();
function sendControl(doc) {
  controlsSent = controlsSent.then(async () => {
    try {
      const r = await postJSON(`/api/sources/${encodeURIComponent(st.source)}/control`, doc);
      say($("control-result"), `sent ${Object.keys(doc).join(", ")} → ${r.id}`);
    } catch (err) { say($("control-result"), err.message, true); }
  });
}
function onControl(ev) {
  if (ev.sensitivity != null) { $("sensitivity").value = ev.sensitivity; $("sensitivity-out").textContent = ev.sensitivity.toFixed(2); }
  if (ev.effects_enabled != null) $("effects").checked = ev.effects_enabled;
  if (ev.led_offset_ms != null) { $("led-offset").value = ev.led_offset_ms; $("offset-out").textContent = `${Math.round(ev.led_offset_ms)} ms`; }
}
$("sensitivity").addEventListener("input", (e) => { $("sensitivity-out").textContent = Number(e.target.value).toFixed(2); });
$("sensitivity").addEventListener("change", (e) => sendControl({ sensitivity: Number(e.target.value) }));
$("led-offset").addEventListener("input", (e) => { $("offset-out").textContent = `${e.target.value} ms`; });
$("led-offset").addEventListener("change", (e) => sendControl({ led_offset_ms: Number(e.target.value) }));
$("effects").addEventListener("change", (e) => sendControl({ effects_enabled: e.target.checked }));
$("bpm-apply").addEventListener("click", () => {
  const v = Number($("bpm-override").value);
  if (v) sendControl({ bpm_override: v }); else say($("control-result"), "enter a BPM (30-300)", true);
});
$("bpm-clear").addEventListener("click", () => { $("bpm-override").value = ""; sendControl({ bpm_override: 0 }); });

// -- tap to calibrate: median(tap - nearest predicted beat), and the tapped tempo -----------
function tap() {
  const now = Date.now();
  const btn = $("tap");
  btn.classList.add("hit"); setTimeout(() => btn.classList.remove("hit"), 80);
  st.taps = st.taps.filter((t) => now - t < 8000).concat(now);
  if (st.taps.length >= 2) {
    const gaps = st.taps.slice(1).map((t, i) => t - st.taps[i]).sort((a, b) => a - b);
    $("tap-bpm").textContent = (60000 / gaps[gaps.length >> 1]).toFixed(1);
  }
  if (st.nextBeat && st.period > 0) {
    const server = (now - st.clockSkew) / 1000;           // tap time on the server's clock
    const k = Math.round((server - st.nextBeat) / st.period);
    const err = server - (st.nextBeat + k * st.period);   // s; positive = heard after predicted
    if (Math.abs(err) < 0.3 * st.period) st.tapErrors = st.tapErrors.slice(-15).concat(err);
    if (st.tapErrors.length >= 4) {
      const s = [...st.tapErrors].sort((a, b) => a - b);
      st.tapOffset = Math.round(s[s.length >> 1] * 1000);
      $("tap-offset").textContent = `${st.tapOffset} ms`;
      $("tap-apply").disabled = false;
    }
  }
}
$("tap").addEventListener("click", tap);
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && !/INPUT|SELECT|TEXTAREA|BUTTON/.test(document.activeElement.tagName)) { e.preventDefault(); tap(); }
});
$("tap-apply").addEventListener("click", () => {
  const v = Math.max(-1000, Math.min(1000, st.tapOffset));
  $("led-offset").value = v; $("offset-out").textContent = `${v} ms`;
  sendControl({ led_offset_ms: v });
});

// -- rhythm mode ------------------------------------------------------------------------
function drawPlan(plan) {
  const box = $("plan");
  box.innerHTML = "";
  for (const s of plan.sections) {
    const d = document.createElement("div");
    d.className = `seg-${s.label}`;
    d.style.width = `${(100 * (s.end - s.start)) / plan.duration}%`;
    d.textContent = s.label; d.title = `${s.label} ${s.start.toFixed(0)}–${s.end.toFixed(0)} s → ${s.pattern || ""}`;
    box.appendChild(d);
  }
}
$("analyze").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("rhythm-result");
  try {
    const file = $("song-file").files[0];
    let plan;
    if (file) {
      say(out, `analysing ${file.name}…`);
      plan = await api("/api/analyze-song", { method: "POST", body: file,
        headers: { "Content-Type": file.type || "application/octet-stream", "X-Filename": file.name.slice(0, 200) } });
    } else {
      const doc = { title: $("song-title").value, duration: Number($("song-duration").value) };
      if ($("song-tempo").value) doc.tempo = Number($("song-tempo").value);
      if ($("song-genre").value) doc.genre = $("song-genre").value;
      plan = await postJSON("/api/analyze-song", doc);
    }
    st.plan = plan;
    drawPlan(plan);
    $("rhythm-start").disabled = false;
    say(out, `${plan.method}: ${plan.tempo} BPM, ${plan.meter}/4, ${plan.sections.length} sections`);
  } catch (err) { say(out, err.message, true); }
});
$("rhythm-start").addEventListener("click", async () => {
  try {
    const r = await postJSON("/api/start-rhythm-mode", { song_data: st.plan, duration: Number($("rhythm-duration").value) });
    say($("rhythm-result"), `rhythm mode: ${r.mode} on ${r.source}`);
    if (r.source !== st.source) { st.source = r.source; await loadSources(); connect(); }
  } catch (err) { say($("rhythm-result"), err.message, true); }
  rhythmStatus();
});
$("rhythm-stop").addEventListener("click", async () => {
  try {
    const r = await postJSON("/api/stop-rhythm-mode", {});
    say($("rhythm-result"), `stopped: ${JSON.stringify(r.outcomes)}`);
  } catch (err) { say($("rhythm-result"), err.message, true); }
  rhythmStatus();
});
$("trigger-fire").addEventListener("click", async () => {
  try {
    const r = await postJSON("/api/beat-trigger", { section: $("trigger-section").value,
      beat_num: Number($("trigger-beat").value), source: st.source });
    say($("rhythm-result"), `trigger ${r.payload.error_type} → ${r.outcome} (${r.status})`);
  } catch (err) { say($("rhythm-result"), err.message, true); }
});
async function rhythmStatus() {
  try {
    const r = await api("/api/rhythm-mode");
    const n = Object.values(r.outcomes || {}).reduce((a, b) => a + b, 0);
    $("rhythm-status").textContent = r.active ? `${r.mode} on ${r.source} · ${n} triggers` : "idle";
  } catch (_) { /* keep the last */ }
}
setInterval(rhythmStatus, 2000);

// -- start ------------------------------------------------------------------------------
$("source-select").addEventListener("change", (e) => { st.source = e.target.value; connect(); });
(async () => {
  await loadSources();
  connect();
  setupLed();
  loadLights();
  rhythmStatus();
  requestAnimationFrame(drawLed);
})();

// -- the key form ---------------------------------------------------------------------------
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  location.reload();
});
$("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY_ITEM); location.reload(); });
