// The search page: plain JavaScript against the HTTP API (shared/API.md). No build step, no dependencies.
"use strict";

const API = new URL("..", location.href); // the service's root: this page lives at <root>/ui/
const $ = (id) => document.getElementById(id);
const PAGE = 10; // hits a page
// filter: no prototype, so that a metadata key "__proto__" is a key like any other (QA: its facet did nothing).
const state = {
  filter: Object.create(null), facetFields: [], features: new Set(), seq: 0, inFlight: null, offset: 0,
  refocus: null, // () => the element keyboard focus goes to once the next answer is shown (`refocus`)
  maxOffset: undefined, // the largest offset the service takes (its OpenAPI document)
  standIn: null, // {named, shown}: the address named a collection the service lacks, and the page shows this one
};

// --- talking to the service ------------------------------------------------------------------------

async function call(method, path, body, signal) {
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  // A header carries Latin-1 only: fetch refused a key such as "ключ" with a message read as "service down" (QA).
  if (/[^\x21-\x7e]/.test(key)) {
    throw new Error("the API key holds a character an HTTP header cannot carry: keys are printable ASCII, no spaces");
  }
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(new URL(path, API), { method, headers, body: body && JSON.stringify(body), signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    // The browser says only "Failed to fetch" (QA): the service is down, restarting or out of reach.
    throw new Error(`cannot reach the search service (${error.message}); is it running?`);
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    // The details say why (a 422 names the field), the message only what failed.
    const why = (answer.error?.details || []).filter((d) => d?.msg)
      .map((d) => `${(d.loc || []).filter((part) => part !== "body").join(".")}: ${d.msg}`);
    const message = answer.error?.message || `${response.status} ${response.statusText}`;
    const error = new Error(why.length ? `${message} (${why.join("; ")})` : message);
    error.status = response.status;
    throw error;
  }
  return answer;
}

// Highlights, facets and prefix are newer request fields: ask for them only when this server's OpenAPI has them.
async function loadFeatures() {
  try {
    const schema = await call("GET", "openapi.json");
    const fields = schema.components?.schemas?.SearchRequest?.properties || {};
    for (const name of ["highlight", "facets", "prefix"]) if (name in fields) state.features.add(name);
    // The deepest page it takes (an old link's deeper one got its 422): the integer's maximum, in or out of anyOf.
    state.maxOffset = [fields.offset, ...(fields.offset?.anyOf || [])].map((type) => type?.maximum)
      .find(Number.isFinite);
  } catch { /* no OpenAPI document: search without them */ }
}

async function loadCollections() {
  const picker = $("collection");
  const wanted = picker.value || addressed("collection") || localStorage.getItem("collection");
  try {
    const { collections } = await call("GET", "v1/collections");
    picker.replaceChildren(...collections.map(({ name, count }) => new Option(`${name} (${count})`, name)));
    if (collections.some((c) => c.name === wanted)) picker.value = wanted;
    standIn(picker.value);
    if (!collections.length) showStatus("No collections yet: load one with `python -m app ingest`.");
  } catch (error) {
    picker.replaceChildren(); // not the list another key was allowed to see
    showStatus(error.message, true);
    // Opened while the service starts (503 until its indexes are loaded): ask again until it answers.
    if (error.status === 503) setTimeout(() => loadCollections().then(() => search({ keepPage: true })), 1000);
  }
}

function searchBody(extra = {}) {
  const body = { query: $("query").value.trim(), k: PAGE, mode: $("mode").value, fusion: { method: $("fusion").value } };
  if (state.offset) body.offset = state.offset;
  body.relevance = { enabled: $("relevance").checked };
  if (body.relevance.enabled && $("recall").value) body.relevance.recall_target = Number($("recall").value);
  if (Object.keys(state.filter).length) body.filter = { ...state.filter };
  if (state.features.has("highlight")) body.highlight = { fields: ["title", "text"] };
  if (state.features.has("facets") && state.facetFields.length) body.facets = state.facetFields;
  // As you type, the last word may be unfinished ("vitam"): unless a space already ended it, ask for its completions.
  if (state.features.has("prefix") && body.query && !/\s$/.test($("query").value)) body.prefix = true;
  return { ...body, ...extra };
}

// A new search starts at the first page; the pager's buttons move through the same one.
// `push`: the search is a step of its own in the browser's history (a page, a facet, a setting); typing refines
// the step it is on.
async function search({ keepPage = false, push = false } = {}) {
  if (!keepPage) state.offset = 0;
  if (state.maxOffset >= 0) state.offset = Math.min(state.offset, state.maxOffset - (state.maxOffset % PAGE));
  const collection = $("collection").value;
  const body = searchBody();
  if (!collection) return; // none to search (the status line says why)
  toAddress(collection, body, push);
  // A newer query (an empty one too) makes the answer to the older one useless: abort it before anything.
  state.inFlight?.abort();
  const seq = ++state.seq;
  if (!body.query) return render(null, collection, body); // no status: the last query's count would stay (QA)
  state.inFlight = new AbortController();
  try {
    const path = `v1/collections/${encodeURIComponent(collection)}/search`;
    const learning = !state.facetFields.length;
    const answer = await call("POST", path, body, state.inFlight.signal);
    if (seq !== state.seq) return;
    if (!answer.hits.length && state.offset && answer.total) { // a page past the end (an old link): the last
      state.offset = Math.floor((answer.total - 1) / PAGE) * PAGE;
      return search({ keepPage: true });
    }
    // The facet fields are learnt from the first answer's hits: ask once more for their counts, and show only
    // that answer (showing both drew the hits twice: a flicker, and a stale hit for whoever read between).
    if (learning) learnFacetFields(answer.hits);
    if (learning && state.facetFields.length) return search({ keepPage: true });
    render(answer, collection, body);
  } catch (error) {
    if (error.name === "AbortError" || seq !== state.seq) return;
    render(null, collection, body); // not the previous query's hits under this query's error
    showStatus(error.message, true);
  }
}

// The search in the page's address, so that a reload or a link sent to someone shows the same search, and Back
// and Forward step through searches: the page kept none (QA).
function toAddress(collection, body, push) {
  const params = new URLSearchParams();
  if (body.query) params.set("q", body.query);
  params.set("collection", collection);
  if (body.mode !== "hybrid") params.set("mode", body.mode);
  if (body.fusion.method !== "convex") params.set("fusion", body.fusion.method);
  if (!body.relevance.enabled) params.set("relevance", "off");
  if (body.relevance.recall_target) params.set("recall", String(body.relevance.recall_target));
  if (body.offset) params.set("offset", String(body.offset));
  if (body.filter) params.set("filter", JSON.stringify(body.filter));
  if (`?${params}` === location.search) return;
  if (push) history.pushState(null, "", `?${params}`);
  else history.replaceState(null, "", `?${params}`);
}

// The controls as the address sets them; one it leaves out, or sets to a value the page does not offer, at its
// default (the first option).
function fromAddress() {
  const params = new URLSearchParams(location.search);
  $("query").value = params.get("q") || "";
  for (const id of ["mode", "fusion", "recall"]) {
    const options = [...$(id).options];
    $(id).value = options.some((option) => option.value === params.get(id)) ? params.get(id) : options[0].value;
  }
  $("relevance").checked = params.get("relevance") !== "off";
  $("recall").disabled = !$("relevance").checked;
  const offset = Math.floor(Number(params.get("offset"))); // ("Infinity" read as a page, QA)
  state.offset = Number.isSafeInteger(offset) && offset > 0 ? offset : 0;
  state.filter = Object.create(null);
  try {
    const filter = JSON.parse(params.get("filter") || "{}");
    if (filter && typeof filter === "object" && !Array.isArray(filter)) Object.assign(state.filter, filter);
  } catch { /* not JSON: no filter */ }
}

// One parameter of the page's address: the collection it names is picked once the list of them is loaded.
function addressed(name) {
  return new URLSearchParams(location.search).get(name);
}

// The collection the page shows when the address names one the service does not have (a link to a collection
// since deleted, or one this key may not read): the status line says so, where it showed another collection's
// hits as if they were the named one's (QA). Until another collection is picked.
function standIn(shown) {
  const named = addressed("collection");
  state.standIn = named && shown && named !== shown ? { named, shown } : null;
}

function standInNote(collection) {
  if (state.standIn?.shown !== collection) return "";
  const named = state.standIn.named.replace(/[\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, "").slice(0, 80);
  return `No collection “${named}” here (or none this key may read): showing ${collection}. `;
}

// --- showing the answer ----------------------------------------------------------------------------

function showStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

// `highlights` come HTML-escaped outside their <mark>s from the server, so they may be inserted as HTML;
// anything else is text and goes in as text.
function fill(element, fragments, text) {
  // Each fragment carries its own "…" where the field goes on before or after it.
  if (fragments?.length) element.innerHTML = fragments.join(" ").replaceAll("… …", "…");
  else element.textContent = text;
}

function render(answer, collection, body) {
  $("hits").replaceChildren();
  $("facets").replaceChildren();
  $("more").hidden = true;
  $("pager").hidden = true;
  renderFilters();
  if (!answer) {
    showStatus(standInNote(collection));
    return refocus();
  }
  const offset = body.offset || 0;
  const shown = answer.hits.length ? `${offset + 1}–${offset + answer.hits.length}` : "0";
  showStatus(`${standInNote(collection)}${shown} of ${answer.total} hits · ${answer.took_ms.toFixed(1)} ms`);
  $("previous").disabled = !offset;
  $("next").disabled = offset + answer.hits.length >= answer.total;
  $("pager").hidden = $("previous").disabled && $("next").disabled;
  for (const hit of answer.hits) $("hits").append(renderHit(hit, collection, body));
  if (answer.filtered_out > 0 && body.relevance.enabled) {
    $("more-count").textContent = answer.filtered_out;
    $("more").hidden = false;
  }
  learnFacetFields(answer.hits);
  for (const [field, values] of Object.entries(answer.facets || {})) renderFacet(field, values);
  refocus();
}

// A control a keyboard user pressed can be gone from the next answer: facet buttons and filter chips are made
// anew, "Show them" hides, Next is disabled on the last page. Focus then fell to <body> (QA); it goes to what
// now stands for the control (the filter's chip or the field's first facet, the relevance box, the other
// pager button), else the query.
function refocus() {
  const pick = state.refocus;
  state.refocus = null;
  if (pick) (pick() || $("query")).focus();
}

function fieldButton(where, field) {
  return [...$(where).querySelectorAll("button")].find((button) => button.dataset.field === field);
}

function usable(...ids) {
  return ids.map($).find((element) => !element.disabled && element.getClientRects().length);
}

// Text from documents goes in isolated: a value's right-to-left override (U+202E) reversed every field after it
// on the line, and a facet's count (QA).
function isolated(text) {
  const element = document.createElement("bdi");
  element.textContent = text;
  return element;
}

function renderHit(hit, collection, body) {
  const item = $("hit").content.firstElementChild.cloneNode(true);
  // null: not scored (the service has no relevance adapter), which is not a relevance of 0.
  const probability = hit.relevance;
  const scored = probability !== null && probability !== undefined;
  item.querySelector(".bar").style.height = scored ? `${Math.round(probability * 100)}%` : "0";
  item.querySelector(".relevance").title = scored ? `relevance ${probability.toFixed(3)}` : "relevance not scored";
  fill(item.querySelector(".title"), hit.highlights?.title, hit.title || hit.id);
  const text = hit.text.length > 320 ? `${hit.text.slice(0, 320)}…` : hit.text;
  fill(item.querySelector(".text"), hit.highlights?.text, text);
  const meta = Object.entries(hit.metadata)
    .map(([k, v]) => [isolated(k), ": ", isolated(Array.isArray(v) ? v.join(", ") : String(v))]);
  const parts = [[isolated(hit.id)], [`relevance ${scored ? probability.toFixed(2) : "—"}`],
    [`score ${hit.score.toFixed(3)}`], ...meta];
  item.querySelector(".meta").replaceChildren(...parts.flatMap((part, i) => (i ? [" · ", ...part] : part)));
  const details = item.querySelector(".explain");
  // Asked again on each opening until it has an answer: one that failed (the service away) stayed (QA).
  details.addEventListener("toggle", () => {
    if (details.open && !details.dataset.explained) explain(details, hit.id, collection, body);
  });
  return item;
}

// The explanation is asked for only when someone opens it: the same search again, with explain on.
async function explain(details, id, collection, body) {
  const pre = details.querySelector("pre");
  pre.textContent = "…";
  try {
    const answer = await call("POST", `v1/collections/${encodeURIComponent(collection)}/search`,
      { ...body, explain: true });
    const hit = answer.hits.find((h) => h.id === id);
    const round = (key, value) => (typeof value === "number" ? Number(value.toPrecision(4)) : value);
    pre.textContent = hit ? JSON.stringify(hit.explain, round, 2) : "no longer among the hits";
    details.dataset.explained = "yes";
  } catch (error) {
    pre.textContent = error.message;
  }
}

// Facet on the metadata fields the hits carry (strings, lists of strings, integers), until the page sets others.
function learnFacetFields(hits) {
  if (state.facetFields.length || !state.features.has("facets")) return;
  const fields = new Set();
  const measured = new Set(); // a field with a fraction in some hit is a measure, not a category (QA: a score)
  for (const hit of hits) {
    for (const [key, value] of Object.entries(hit.metadata)) {
      if (typeof value === "number" && !Number.isInteger(value)) measured.add(key);
      else if (typeof value === "string" || Number.isInteger(value) || Array.isArray(value)) fields.add(key);
    }
  }
  state.facetFields = [...fields].filter((key) => !measured.has(key)).slice(0, 5);
}

// A string that would read as a number or a boolean is shown quoted: a year stored as 2021 in some documents and
// as "2021" in others gave two facet buttons that looked the same and filtered differently (QA).
function shown(value) {
  if (value !== null && typeof value === "object") return JSON.stringify(value); // a range or `in` from an address
  if (typeof value !== "string") return String(value);
  try {
    return typeof JSON.parse(value) === "string" ? value : JSON.stringify(value);
  } catch {
    return value;
  }
}

function renderFacet(field, values) {
  if (!values.length) return;
  const heading = document.createElement("h3");
  heading.append(isolated(field));
  $("facets").append(heading);
  for (const { value, count } of values) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "facet";
    button.dataset.field = field;
    button.append(isolated(shown(value)), ` (${count})`);
    button.addEventListener("click", () => {
      state.filter[field] = value;
      state.refocus = () => fieldButton("filters", field);
      search({ push: true });
    });
    $("facets").append(button);
  }
}

function renderFilters() {
  $("filters").replaceChildren(...Object.entries(state.filter).map(([field, value]) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.dataset.field = field;
    chip.append(isolated(field), ": ", isolated(shown(value)), " ✕");
    chip.addEventListener("click", () => {
      delete state.filter[field];
      state.refocus = () => fieldButton("facets", field);
      search({ push: true });
    });
    return chip;
  }));
}

// --- wiring --------------------------------------------------------------------------------------------

function debounce(fn, ms) {
  let timer;
  const later = () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
  later.cancel = () => clearTimeout(timer);
  return later;
}

const typed = debounce(search, 250);
$("query").addEventListener("input", typed);
for (const id of ["mode", "fusion", "recall"]) $(id).addEventListener("change", () => search({ push: true }));
$("relevance").addEventListener("change", () => {
  $("recall").disabled = !$("relevance").checked;
  search({ push: true });
});
$("collection").addEventListener("change", () => {
  state.standIn = null;
  localStorage.setItem("collection", $("collection").value);
  state.filter = Object.create(null);
  state.facetFields = [];
  search({ push: true });
});
$("api-key").value = sessionStorage.getItem("api-key") || "";
$("api-key").addEventListener("change", async () => {
  sessionStorage.setItem("api-key", $("api-key").value.trim());
  await Promise.all([loadFeatures(), loadCollections()]); // features too: a key refused before asking lost them
  search();
});
$("show-all").addEventListener("click", () => {
  state.refocus = () => usable("relevance");
  $("relevance").checked = false;
  $("recall").disabled = true;
  search({ push: true });
});
$("previous").addEventListener("click", () => {
  state.refocus = () => usable("previous", "next");
  state.offset = Math.max(0, state.offset - PAGE);
  search({ keepPage: true, push: true });
});
$("next").addEventListener("click", () => {
  state.refocus = () => usable("next", "previous");
  state.offset += PAGE;
  search({ keepPage: true, push: true });
});
// Back and Forward: the controls as that step's address set them, and its search again.
window.addEventListener("popstate", () => {
  typed.cancel(); // a keystroke's search still waiting would rewrite the step gone back to (QA)
  fromAddress();
  const picker = $("collection");
  const wanted = addressed("collection");
  if (wanted !== picker.value && [...picker.options].some((option) => option.value === wanted)) {
    picker.value = wanted;
    state.facetFields = [];
  }
  standIn(picker.value);
  search({ keepPage: true });
});
$("controls").addEventListener("submit", (event) => event.preventDefault());

fromAddress();
Promise.all([loadFeatures(), loadCollections()]).then(() => search({ keepPage: true }));
