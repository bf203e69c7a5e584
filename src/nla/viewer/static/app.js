// The `nla serve` page: send a prompt or chat to /api/trace, render the trace (with a steer panel under each
// reading); list and open saved traces.
"use strict";
(function () {
  var viewer = document.getElementById("viewer");
  var status = document.getElementById("status");
  var button = document.getElementById("trace-button");

  function say(text, isError) {
    status.textContent = text;
    status.className = "status" + (isError ? " error" : "");
  }

  function getJSON(url, options) {
    return fetch(url, options).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
        return body;
      });
    });
  }

  // A JSON list of {role, content} objects is a chat; anything else is plain text.
  function requestBody(input) {
    var trimmed = input.trim();
    if (trimmed.charAt(0) === "[") {
      try {
        var messages = JSON.parse(trimmed);
        if (Array.isArray(messages) && messages.length && messages.every(function (m) {
          return m && typeof m.role === "string" && typeof m.content === "string";
        })) return { messages: messages.map(function (m) { return { role: m.role, content: m.content }; }) };
      } catch (e) { /* not JSON: trace it as text */ }
    }
    return { text: input };
  }

  // The steer panel under a token's reading: edit its explanation, steer the target at that token, and read
  // what the target writes before and after (POST /api/steer, greedy).
  function inputOf(trace) {
    return trace.input.messages ? { messages: trace.input.messages } : { text: trace.input.text };
  }

  function steerPanel(panel, token, trace) {
    if (!token.traced || token.status !== "ok") return;
    var box = panel.appendChild(document.createElement("section"));
    box.className = "steer";
    box.appendChild(document.createElement("h3")).textContent = "Steer with an edited explanation";
    if (token.generated) {
      box.appendChild(document.createElement("p")).textContent = "Steering reads the input's tokens, not the ones the target wrote.";
      return;
    }
    var edit = box.appendChild(document.createElement("textarea"));
    edit.className = "steer-edit";
    edit.value = token.explanation;
    var row = box.appendChild(document.createElement("div"));
    row.className = "row";
    var label = row.appendChild(document.createElement("label"));
    label.textContent = "α ";
    var alpha = label.appendChild(document.createElement("input"));
    alpha.type = "number"; alpha.step = "0.5"; alpha.value = "2"; alpha.className = "steer-alpha";
    var go = row.appendChild(document.createElement("button"));
    go.type = "button"; go.textContent = "Steer"; go.className = "steer-button";
    var out = box.appendChild(document.createElement("div"));
    out.className = "steer-out";
    go.addEventListener("click", function () {
      var body = inputOf(trace);
      body.position = token.position;
      body.explanation = edit.value;
      body.alphas = [parseFloat(alpha.value)];
      go.disabled = true;
      out.textContent = "steering…";
      getJSON("/api/steer", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
        .then(function (result) {
          out.textContent = "";
          result.runs.forEach(function (run) {
            var line = out.appendChild(document.createElement("p"));
            line.className = "steer-run";
            line.textContent = (run.alpha ? "after, α " + run.alpha : "before") + ": " + run.greedy.text +
              " (perplexity " + run.greedy.perplexity + ")";
          });
        })
        .catch(function (err) { out.textContent = "error: " + err.message; })
        .then(function () { go.disabled = false; });
    });
  }

  function show(trace) { NLAViewer.render(viewer, trace, { onDetail: steerPanel }); }

  document.getElementById("trace-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = document.getElementById("prompt").value;
    if (!input.trim()) { say("Type something to trace.", true); return; }
    var body = requestBody(input);
    body.continue_tokens = parseInt(document.getElementById("continue").value || "0", 10) || 0;
    button.disabled = true;
    say("tracing… (every token is explained and scored; this takes a while on a CPU)");
    var started = Date.now();
    getJSON("/api/trace", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (trace) {
        show(trace);
        say("traced " + trace.summary.traced + " tokens in " + ((Date.now() - started) / 1000).toFixed(1) + " s");
      })
      .catch(function (err) { say("error: " + err.message, true); })
      .then(function () { button.disabled = false; });
  });

  function openSaved(name) {
    say("opening " + name + "…");
    getJSON("/api/traces/" + name.split("/").map(encodeURIComponent).join("/"))
      .then(function (trace) { show(trace); say("opened " + name); })
      .catch(function (err) { say("error: " + err.message, true); });
  }

  getJSON("/api/traces").then(function (listing) {
    document.getElementById("saved-folder").textContent = "(from " + listing.folder + "/)";
    var list = document.getElementById("saved-list");
    if (!listing.traces.length) list.appendChild(document.createElement("li")).textContent = "none yet: nla trace --out writes them";
    listing.traces.forEach(function (name) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = name;
      button.addEventListener("click", function () { openSaved(name); });
      list.appendChild(document.createElement("li")).appendChild(button);
    });
  }).catch(function (err) { say("error: " + err.message, true); });

  getJSON("/api/health").then(function (health) {
    var cal = health.calibration;
    document.getElementById("server-meta").textContent = "NLA " + health.nla.name + " · layer " + health.nla.layer +
      " · target " + health.target + " · at most " + health.limits.max_tokens + " tokens per request" +
      (cal.estimated ? " · calibration estimated on a built-in sample" : "");
  }).catch(function (err) { say("error: " + err.message, true); });
})();
