// The `nla serve --index` search page: POST /api/search, list the hits with the token marked in its context;
// clicking a hit asks /api/search/reading for the AV's reading of that stored activation.
"use strict";
(function () {
  var status = document.getElementById("status");
  var body = document.querySelector("#hits tbody");
  var panel = document.getElementById("reading");

  function say(text, isError) {
    status.textContent = text;
    status.className = "status" + (isError ? " error" : "");
  }

  function postJSON(url, payload) {
    return fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                        body: JSON.stringify(payload) }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
        return data;
      });
    });
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function number(value) { return value === null || value === undefined ? "-" : value.toFixed(3); }

  // The context as text nodes with the marked token in a <mark>: nothing from the index is parsed as HTML.
  function context(td, text) {
    var open = text.indexOf("\u27e6"), close = text.indexOf("\u27e7", open);
    if (open < 0 || close < 0) { td.textContent = text; return; }
    td.appendChild(document.createTextNode(text.slice(0, open)));
    var mark = document.createElement("mark");
    mark.textContent = text.slice(open + 1, close);
    td.appendChild(mark);
    td.appendChild(document.createTextNode(text.slice(close + 1)));
  }

  function show(hits, docs) {
    body.textContent = "";
    hits.forEach(function (hit, i) {
      var row = document.createElement("tr");
      row.className = "hit";
      cell(row, String(i + 1));
      cell(row, hit.score.toFixed(4));
      cell(row, number(hit.text_score));
      cell(row, number(hit.activation_score));
      cell(row, hit.doc_id);
      cell(row, docs ? hit.positions + " pos." : String(hit.position));
      context(cell(row, "", "context"), hit.context);
      row.addEventListener("click", function () { openReading(hit.row); });
      body.appendChild(row);
    });
  }

  function openReading(row) {
    say("reading row " + row + "…");
    postJSON("/api/search/reading", { row: row }).then(function (data) {
      var r = data.reading, stored = data.stored;
      panel.hidden = false;
      panel.textContent = "";
      var title = document.createElement("h2");
      title.textContent = stored.doc_id + " · position " + stored.position + " · token " + JSON.stringify(stored.token);
      panel.appendChild(title);
      var where = document.createElement("p");
      context(where, stored.context);
      panel.appendChild(where);
      var text = document.createElement("p");
      text.className = "explanation";
      text.textContent = r.explanation || ("failed: " + (r.failure || "no explanation"));
      panel.appendChild(text);
      var meta = document.createElement("p");
      meta.className = "meta";
      meta.textContent = "score " + number(r.score) + " (" + (r.label || "no label") + "), claims " + r.claims.length;
      panel.appendChild(meta);
      say("");
    }).catch(function (err) { say(err.message, true); });
  }

  document.getElementById("search-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var query = document.getElementById("query").value;
    if (!query.trim()) { say("Type what to search for.", true); return; }
    var docs = document.getElementById("docs").checked;
    var payload = { query: query, by: document.getElementById("by").value, docs: docs,
                    centre: document.getElementById("centre").checked, filters: {} };
    var against = document.getElementById("against").value.trim();
    if (against) payload.against = against;
    var role = document.getElementById("role").value.trim();
    if (role) payload.filters.role = role;
    say("searching…");
    postJSON("/api/search", payload).then(function (data) {
      show(data.hits, docs);
      say(data.hits.length + " hits");
    }).catch(function (err) { say(err.message, true); });
  });
})();
