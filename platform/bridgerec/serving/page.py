"""The page at ``GET /``: pick a user (or type item titles), see their history and every strategy's
recommendations side by side. Plain HTML + JavaScript over the JSON API, so it shows exactly what
an API client gets. A bearer token (when the app has one) is read from the URL fragment
(``/#token=...``, never sent to the server in a URL) or typed into the page; ``user=`` in the
fragment preselects a user."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bridgerec recommender</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 24px; color: #1d2330; background: #f6f7f9; }
 h1 { font-size: 20px; margin: 0 0 4px; } .sub { color: #5b6473; margin-bottom: 16px; font-size: 13px; }
 form { display: flex; gap: 8px; flex-wrap: wrap; align-items: center; margin-bottom: 16px; }
 input { padding: 6px 8px; border: 1px solid #c4c9d2; border-radius: 4px; font-size: 14px; }
 #titles { width: 380px; } button { padding: 6px 14px; border: 0; border-radius: 4px; background: #2f5bd3; color: #fff; font-size: 14px; }
 .grid { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
 .card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px 12px; min-width: 280px; max-width: 360px; }
 .card h2 { font-size: 15px; margin: 0 0 6px; } .note { font-size: 12px; color: #8a5a00; margin-bottom: 4px; }
 table { border-collapse: collapse; width: 100%; font-size: 13px; } td { padding: 3px 4px; border-top: 1px solid #eef0f3; }
 td.score { text-align: right; color: #5b6473; font-variant-numeric: tabular-nums; } .err { color: #b00020; }
</style></head>
<body>
<h1>bridgerec recommender</h1>
<div class="sub" id="model">model: loading...</div>
<form id="f">
 <label>user id <input id="user" placeholder="e.g. user_000001"></label>
 <label>or item titles <input id="titles" placeholder="titles, separated by ;"></label>
 <label>k <input id="k" type="number" value="10" min="1" max="100" style="width:60px"></label>
 <label>token <input id="token" type="password" placeholder="if the app needs one"></label>
 <button type="submit">Recommend</button>
</form>
<div class="grid" id="out"></div>
<script>
const params = new URLSearchParams(location.hash.slice(1));
const $ = (id) => document.getElementById(id);
if (params.get("token")) $("token").value = params.get("token");
if (params.get("user")) $("user").value = params.get("user");
function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("token").value) h["Authorization"] = "Bearer " + $("token").value;
  return h;
}
async function api(method, path, body) {
  const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";  // the app's route prefix
  const r = await fetch(base + path.replace(/^[/]/, ""), {method, headers: headers(), body: body ? JSON.stringify(body) : undefined});
  const j = await r.json().catch(() => ({detail: r.statusText}));
  if (!r.ok) throw new Error(r.status + ": " + (typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)));
  return j;
}
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function card(title, items, note, cls) {
  const rows = items.map((i) => `<tr><td>${i.rank ?? ""}</td><td class="title">${esc(i.title)}</td><td class="score">${i.score === undefined ? "" : i.score.toFixed(3)}</td></tr>`).join("");
  return `<div class="card ${cls || ""}" data-strategy="${esc(title)}"><h2>${esc(title)}</h2>${note ? `<div class="note">${esc(note)}</div>` : ""}<table>${rows}</table></div>`;
}
async function run() {
  const out = $("out"); out.innerHTML = ""; out.dataset.state = "loading";
  try {
    const k = parseInt($("k").value || "10");
    let body = {k};
    let cards = [];
    if ($("user").value) {
      body.user_id = $("user").value.trim();
      const u = await api("GET", "/v1/users/" + encodeURIComponent(body.user_id));
      cards.push(card("history", u.history.map((h) => ({title: h.title})), `${u.n_known} known items`, "history"));
    } else {
      const titles = $("titles").value.split(";").map((t) => t.trim()).filter(Boolean);
      const grounded = await Promise.all(titles.map((t) => api("POST", "/v1/ground", {text: t, k: 1})));
      body.history = grounded.map((g) => g.items[0].item_id);
      cards.push(card("history", grounded.map((g) => ({title: g.items[0].title})), "titles grounded to items", "history"));
    }
    const strategies = (await api("GET", "/v1/strategies")).strategies;
    for (const s of strategies) {
      try {
        const r = await api("POST", "/v1/recommend", {...body, strategy: s});
        cards.push(card(s, r.items, r.fallback ? "fell back to domain: " + r.fallback_reason : (r.generated ? "generated: " + r.generated : "")));
      } catch (e) { cards.push(`<div class="card err" data-strategy="${esc(s)}"><h2>${esc(s)}</h2>${esc(e.message)}</div>`); }
    }
    out.innerHTML = cards.join("");
  } catch (e) { out.innerHTML = `<div class="err">${esc(e.message)}</div>`; }
  out.dataset.state = "done";
}
$("f").addEventListener("submit", (e) => { e.preventDefault(); run(); });
api("GET", "/readyz").then((r) => { const m = r.model; $("model").textContent = `model: ${m.name ? m.name + " v" + m.version : m.uri} (run ${m.run_id || "-"})`; })
  .catch((e) => { $("model").textContent = "model: " + e.message; });
if ($("user").value || params.get("titles")) { if (params.get("titles")) $("titles").value = params.get("titles"); run(); }
</script>
</body></html>
"""
