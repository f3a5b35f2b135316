"""The report page's fixed parts: its stylesheet and its script (plain JavaScript, no library, no CDN).

Kept apart from ``imgcap.report`` so the renderer stays readable. The script only reads the
``data-*`` attributes the renderer writes on each card; it never builds HTML from entry text, so
nothing that came from a file name, caption or error record is ever interpreted as markup.
"""

from __future__ import annotations

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d232b}
header{background:#1d2b3a;color:#fff;padding:16px 24px}header h1{margin:0 0 4px;font-size:20px;
overflow-wrap:anywhere}header p{margin:0;color:#b9c6d3;font-size:13px}
.limit{color:#ffd28a;font-weight:600}
main{padding:16px 24px;max-width:1600px;margin:0 auto}
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 10px}
.tile{background:#fff;border-radius:8px;padding:8px 12px;min-width:96px;box-shadow:0 1px 2px #0002;
color:inherit;text-decoration:none}
.tile b{display:block;font-size:19px}.tile span{font-size:12px;color:#5b6673}
.tiles.run .tile{background:#eef1f5;box-shadow:none}.tiles.run b{font-size:15px}
.tiles-label{font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:#6b7684;margin:8px 0 4px}
.controls{position:sticky;top:0;z-index:2;background:#f5f6f8;padding:10px 0;display:flex;flex-wrap:wrap;
gap:8px;align-items:center;border-bottom:1px solid #dde2e8}
.controls input[type=search]{flex:1 1 260px;min-width:180px;padding:7px 10px;border:1px solid #c4ccd6;
border-radius:6px;font-size:14px}
.controls select{padding:6px 8px;border:1px solid #c4ccd6;border-radius:6px;font-size:13px;max-width:240px;
background:#fff}
.controls button{padding:6px 10px;border:1px solid #c4ccd6;border-radius:6px;background:#fff;cursor:pointer}
.shown{font-size:13px;color:#3d4854;margin-left:auto;white-space:nowrap}
h2{font-size:17px;margin:22px 0 10px}h2 .of{font-weight:400;color:#6b7684;font-size:14px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002;display:flex;flex-direction:column;
min-width:0;overflow:hidden;content-visibility:auto;contain-intrinsic-size:auto 420px}
.card.failed{border-top:3px solid #c0392b}.card.pending{border-top:3px solid #8a94a0}
.card.truncated-card{border-top:3px solid #e08a00}
.pic{background:#eceff3;position:relative;aspect-ratio:4/3;overflow:hidden;flex:none}
.pic img{position:absolute;inset:0;width:100%;height:100%;object-fit:contain;display:block}
.noimg{color:#8a94a0;font-size:12px;padding:8px}
.pic.none{aspect-ratio:auto;height:56px}
.pic .noimg{position:absolute;inset:0;display:flex;align-items:center;justify-content:center}
.body{padding:10px 12px 12px;display:flex;flex-direction:column;gap:6px;min-width:0}
.key{margin:0;font-size:12px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;color:#3d4854;
overflow-wrap:anywhere}
.caption{font-size:14px;line-height:1.45;margin:0}
.alt{font-size:13px;margin:0;color:#3d4854}.alt b{font-weight:600}
.tags{display:flex;flex-wrap:wrap;gap:4px;margin:0;padding:0;list-style:none}
.tags li{font-size:11px;background:#e7eef7;color:#27496d;border-radius:10px;padding:1px 8px}
.truncated{color:#8a4b00;background:#fff3e0;border-radius:4px;padding:2px 6px;font-size:12px;margin:0}
.code{display:inline-block;font-family:ui-monospace,monospace;font-size:12px;background:#fdecea;color:#8e2b20;
border-radius:4px;padding:1px 6px}
.reason{font-size:13px;margin:0;overflow-wrap:anywhere}
.failure{font-size:13px;margin:0;color:#3d4854}
.facts{font-size:11px;color:#5b6673;margin:0;line-height:1.5}.facts span{white-space:nowrap}
.links{font-size:12px;margin:6px 0 0}.links a,.pair a{color:#27496d}.missing{color:#8a94a0}
details.views summary{cursor:pointer;font-size:12px;color:#27496d}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px;margin-top:8px;align-items:start}
.card:has(details.views[open]){grid-column:1/-1;content-visibility:visible}
.card:has(details.views[open]) .pic{display:none}
.pair figure{margin:0;min-width:0}
.pair img{max-width:100%;max-height:75vh;height:auto;display:block;background:#eceff3;
border:1px solid #dde2e8}
.pair figcaption{font-size:11px;color:#5b6673;margin-top:2px}
.pair a{color:#27496d}
.empty{color:#6b7684;font-size:14px}
.more{margin:14px 0;display:flex;flex-wrap:wrap;gap:8px}
.more button{padding:8px 14px;border:1px solid #c4ccd6;border-radius:6px;background:#fff;cursor:pointer;
font-size:13px}
noscript table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
noscript td,noscript th{padding:6px 8px;border-bottom:1px solid #e3e7ec;text-align:left;vertical-align:top}
details.summary{margin:0 0 10px;font-size:13px}details.summary summary{cursor:pointer;color:#27496d}
pre{background:#fff;padding:12px;border-radius:8px;overflow:auto;font-size:12px}
[hidden]{display:none!important}
@media (max-width:700px){main{padding:10px}header{padding:12px}.pair{grid-template-columns:1fr}
.grid{grid-template-columns:repeat(auto-fill,minmax(200px,1fr))}.shown{margin-left:0}}
"""

# The entries are JSON in the page; cards are built from them with textContent and attributes only
# (never innerHTML), a batch at a time as a section's end scrolls into view. Every control narrows:
# an entry matches when it passes all of them; the counts say how many match, in all and per section.
SCRIPT = """
(function () {
  "use strict";
  var BATCH = 120;
  var data = JSON.parse(document.getElementById("entries").textContent);
  var q = document.getElementById("q");
  var status = document.getElementById("f-status");
  var code = document.getElementById("f-code");
  var folder = document.getElementById("f-folder");
  var tag = document.getElementById("f-tag");
  var shown = document.getElementById("shown");
  var sections = Array.prototype.map.call(document.querySelectorAll("section[data-section]"), function (el) {
    return {
      name: el.getAttribute("data-section"), el: el, grid: el.querySelector(".grid"),
      more: el.querySelector(".more"), all: [], list: [], done: 0
    };
  });
  var byName = {};
  sections.forEach(function (sec) { byName[sec.name] = sec; });
  data.forEach(function (e, i) { byName[e.s].all.push(i); });
  var hay = null; // the search text of each entry, built on the first search
  function textOf(i) {
    if (hay === null) {
      hay = data.map(function (e) {
        return [e.k, e.cap, e.alt, (e.g || []).join(" "), e.c, e.stage, e.msg].join(" ").toLowerCase();
      });
    }
    return hay[i];
  }
  function node(tag, cls, text) {
    var x = document.createElement(tag);
    if (cls) x.className = cls;
    if (text !== undefined && text !== null) x.textContent = text;
    return x;
  }
  function link(href, text) {
    var a = node("a", null, text);
    a.href = href; a.target = "_blank"; a.rel = "noopener";
    return a;
  }
  function views(e) {
    var d = node("details", "views");
    d.appendChild(node("summary", null, "original vs. what the model saw"));
    var links = node("p", "links");
    links.appendChild(e.o ? link(e.o, e.ol) : node("span", "missing", "original not available"));
    links.appendChild(document.createTextNode(" \u00b7 "));
    var modelLabel = e.ml || "sent to the model (PNG as encoded)";
    links.appendChild(e.m ? link(e.m, modelLabel)
                          : node("span", "missing", "no model input (not encoded)"));
    d.appendChild(links);
    d.addEventListener("toggle", function () {
      if (!d.open || d.querySelector(".pair")) return;
      var pair = node("div", "pair");
      [[e.o, e.ol, "original not available"], [e.m, modelLabel,
        "no model input (not encoded)"]].forEach(function (v) {
        var fig = node("figure");
        if (v[0]) {
          var a = link(v[0]);
          var img = node("img"); img.src = v[0]; img.alt = v[1];
          a.appendChild(img); fig.appendChild(a);
          fig.appendChild(node("figcaption", null, v[1]));
        } else {
          fig.appendChild(node("div", "noimg", v[2]));
        }
        pair.appendChild(fig);
      });
      d.insertBefore(pair, links);
    });
    return d;
  }
  function card(e) {
    var a = node("article", "card " + e.s + (e.t ? " truncated-card" : ""));
    a.id = e.k;
    a.setAttribute("data-status", e.s);
    a.setAttribute("data-truncated", e.t ? "1" : "0");
    a.setAttribute("data-code", e.c || "");
    a.setAttribute("data-folder", e.f);
    var pic = node("div", "pic");
    if (e.th) {
      var img = node("img");
      img.src = e.th; img.alt = e.k; img.loading = "lazy"; img.decoding = "async";
      if (e.tw) { img.width = e.tw; img.height = e.thh; }
      pic.appendChild(img);
    } else {
      pic.className = "pic none";
      pic.appendChild(node("div", "noimg", "no preview"));
    }
    a.appendChild(pic);
    var body = node("div", "body");
    body.appendChild(node("p", "key", e.k));
    if (e.s === "captioned") {
      if (e.t) body.appendChild(node("p", "truncated",
        "truncated: the model stopped at maxTokens (raise max-tokens in SSM)"));
      body.appendChild(node("p", "caption", e.cap));
      if (e.alt) {
        var alt = node("p", "alt");
        alt.appendChild(node("b", null, "alt:"));
        alt.appendChild(document.createTextNode(" " + e.alt));
        body.appendChild(alt);
      }
      if (e.g) {
        var ul = node("ul", "tags");
        e.g.forEach(function (t) { ul.appendChild(node("li", null, t)); });
        body.appendChild(ul);
      }
      if (e.facts) {
        var facts = node("p", "facts");
        e.facts.forEach(function (f, i) {
          if (i) facts.appendChild(document.createTextNode(" \u00b7 "));
          facts.appendChild(node("span", null, f));
        });
        body.appendChild(facts);
      }
    } else if (e.s === "failed") {
      var f = node("p", "failure");
      f.appendChild(node("span", "code", e.c));
      if (e.stage) f.appendChild(document.createTextNode(" at " + e.stage));
      body.appendChild(f);
      body.appendChild(node("p", "reason", e.msg));
    } else {
      body.appendChild(node("p", "reason", "no caption and no error record yet"));
    }
    if (e.o || e.m) body.appendChild(views(e));
    a.appendChild(body);
    return a;
  }
  function renderMore(sec, count) {
    var end = Math.min(sec.list.length, sec.done + count);
    var frag = document.createDocumentFragment();
    for (var j = sec.done; j < end; j++) frag.appendChild(card(data[sec.list[j]]));
    sec.grid.appendChild(frag);
    sec.done = end;
    var left = sec.list.length - sec.done;
    sec.more.hidden = left <= 0;
    sec.more.querySelector(".more-batch").textContent =
      "show " + Math.min(BATCH, left) + " more (" + left + " not yet on the page)";
    sec.more.querySelector(".more-all").textContent = "show all " + sec.list.length;
    sec.el.setAttribute("data-rendered", String(sec.done));
  }
  function passes(e, i, terms) {
    var s = status.value;
    if (s === "truncated") { if (!e.t) return false; }
    else if (s && e.s !== s) return false;
    if (code.value && (e.c || "") !== code.value) return false;
    if (folder.value && !(e.f === folder.value || e.f.indexOf(folder.value + "/") === 0)) return false;
    if (tag && tag.value && (!e.g || e.g.indexOf(tag.value) < 0)) return false;
    for (var k = 0; k < terms.length; k++) { if (textOf(i).indexOf(terms[k]) < 0) return false; }
    return true;
  }
  function apply() {
    var terms = q.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var matching = 0;
    sections.forEach(function (sec) {
      sec.list = sec.all.filter(function (i) { return passes(data[i], i, terms); });
      matching += sec.list.length;
      sec.grid.textContent = "";
      sec.done = 0;
      renderMore(sec, BATCH);
      sec.el.querySelector(".of").textContent =
        sec.list.length === sec.all.length ? "" : " \\u2014 " + sec.list.length + " match";
      sec.el.querySelector(".none-match").hidden = !(sec.all.length > 0 && sec.list.length === 0);
      sec.el.setAttribute("data-matching", String(sec.list.length));
    });
    shown.textContent = matching === data.length
      ? "all " + data.length + " entries" : matching + " of " + data.length + " match";
    shown.setAttribute("data-visible", String(matching));
    shown.setAttribute("data-query", q.value);
  }
  sections.forEach(function (sec) {
    sec.more.querySelector(".more-batch").addEventListener("click", function () { renderMore(sec, BATCH); });
    sec.more.querySelector(".more-all").addEventListener("click", function () {
      renderMore(sec, sec.list.length);
    });
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (seen) {
        if (seen[0].isIntersecting && !sec.more.hidden) renderMore(sec, BATCH);
      }, { rootMargin: "800px" }).observe(sec.more);
    }
  });
  var timer = null;
  q.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 120); });
  [status, code, folder, tag].forEach(function (el) { if (el) el.addEventListener("change", apply); });
  document.getElementById("f-reset").addEventListener("click", function () {
    q.value = ""; status.value = ""; code.value = ""; folder.value = ""; if (tag) tag.value = "";
    apply();
  });
  Array.prototype.forEach.call(document.querySelectorAll("a[data-status-link]"), function (a) {
    a.addEventListener("click", function () { status.value = a.getAttribute("data-status-link"); apply(); });
  });
  apply();
  document.body.setAttribute("data-ready", "1");
})();
"""
