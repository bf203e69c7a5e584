// The trace viewer: token chips coloured by their fidelity label; hover or click a token to read its
// explanation, its claims (weighted, leave-one-out) and its quotes (grounded, flagged, or predictions).
// Shared by the self-contained trace.html and by `nla serve`. All text from a trace goes into the page
// through textContent, never as HTML, so an explanation cannot inject markup.
"use strict";
var NLAViewer = (function () {
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fixed(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
  function pct(x) { return x === null || x === undefined ? "–" : Math.round(100 * x) + "%"; }
  function labelOf(token) {
    if (!token.traced) return null;
    return token.label || "unlabelled";
  }

  function header(trace) {
    var head = el("header", "nla-head");
    var cal = trace.calibration, sum = trace.summary, nla = trace.nla;
    head.appendChild(el("h1", null, "nla trace" + (trace.input && trace.input.source ? ": " + trace.input.source : "")));
    head.appendChild(el("p", "meta", "NLA " + nla.name + " · layer " + nla.layer + " · target " + trace.target +
      " · " + sum.tokens + " tokens, " + sum.traced + " traced" +
      (trace.input.continued ? " (last " + trace.input.continued + " written by the target)" : "") +
      (trace.seconds !== undefined ? " · " + fixed(trace.seconds, 1) + " s" : "")));
    var note = el("p", "calibration" + (cal.estimated ? " estimated" : ""));
    if (cal.estimated) note.appendChild(el("span", "estimate-tag", "Not calibrated on this NLA's held-out data: "));
    note.appendChild(document.createTextNode(cal.note));
    head.appendChild(note);

    var legend = el("div", "legend");
    legend.appendChild(el("span", null, "score = 1 − MSE/B:"));
    var parts = [["High", cal.high !== null ? "≥ " + fixed(cal.high, 2) : ""],
                 ["Medium", ""], ["Low", cal.low !== null ? "< " + fixed(cal.low, 2) : ""],
                 ["failed", "no explanation"]];
    parts.forEach(function (p) {
      legend.appendChild(el("span", "tok label-" + p[0], " " + p[0] + (p[1] ? " " + p[1] : "") + " "));
    });
    legend.appendChild(el("span", null, "(thresholds: tertiles of held-out scores)"));
    head.appendChild(legend);

    var claims = sum.claims || {};
    head.appendChild(el("p", "summary", "mean score " + fixed(sum.mean_score, 2) +
      " · High " + sum.labels.High + " · Medium " + sum.labels.Medium + " · Low " + sum.labels.Low +
      " · failed " + sum.labels.failed + " · claims " + claims.claims + " (" + pct(claims.negligible_share) +
      " negligible) · quotes " + claims.quotes + " (" + pct(claims.flagged_share) + " flagged) · quoted predictions " +
      claims.quoted_predictions + " (" + pct(claims.supported_prediction_share) + " among the target's next tokens)"));
    return head;
  }

  function chip(token) {
    var label = labelOf(token);
    var cls = "tok" + (label ? " label-" + label : " untraced") + (token.special ? " special" : "") +
      (token.generated ? " generated" : "");
    var node = el("span", cls);
    node.dataset.position = token.position;
    var text = token.token;
    var lines = text.split("\n");
    lines.forEach(function (line, i) {
      if (i > 0) { node.appendChild(el("span", "nl", "↵")); node.appendChild(document.createTextNode("\n")); }
      if (line) node.appendChild(document.createTextNode(line));
    });
    if (!text.length) node.appendChild(el("span", "nl", "∅"));
    if (token.traced) {
      node.tabIndex = 0;
      node.title = label === "failed" ? "explanation failed" : "score " + fixed(token.score, 2) + " (" + label + ")";
    }
    return node;
  }

  function claimText(explanation, claim) {
    var span = el("span", "claim-text"), at = claim.start;
    claim.quotes.forEach(function (q) {
      if (q.start > at) span.appendChild(document.createTextNode(explanation.slice(at, q.start)));
      var kind = q.prediction ? "prediction" : q.flagged ? "flagged" : "grounded";
      var mark = el("mark", "quote " + kind, explanation.slice(q.start, q.end));
      mark.title = q.prediction ? "a predicted continuation, not a quotation" +
          (q.predicted === true ? "; among the target's likeliest next tokens" :
           q.predicted === false ? "; not among the target's likeliest next tokens" : "") +
          (q.where === "later" ? " (it does occur after this token)" : "") :
        q.where === "context" ? "found in the text before this token" :
        q.where === "later" ? "occurs only after this token: the activation cannot have seen it" :
        "not in the text: possibly confabulated";
      span.appendChild(mark);
      at = q.end;
    });
    if (claim.end > at) span.appendChild(document.createTextNode(explanation.slice(at, claim.end)));
    claim.quotes.forEach(function (q) {
      if (q.flagged) span.appendChild(el("span", "tag flag", q.where === "later" ? "quote only later" :
        "quote not in text: possibly confabulated"));
    });
    return span;
  }

  function claimList(token, scale) {
    var list = el("ol", "claims");
    token.claims.forEach(function (claim) {
      var item = el("li", "claim" + (claim.negligible ? " negligible" : ""));
      var weight = el("span", "weight", (claim.weight >= 0 ? "+" : "") + fixed(claim.weight, 3));
      var bar = el("span", "bar" + (claim.weight < 0 ? " negative" : ""));
      bar.style.width = Math.max(2, Math.round(100 * Math.abs(claim.weight || 0) / scale)) + "%";
      weight.appendChild(bar);
      item.appendChild(weight);
      var text = claimText(token.explanation, claim);
      if (claim.negligible) text.appendChild(el("span", "tag", "negligible"));
      item.appendChild(text);
      list.appendChild(item);
    });
    return list;
  }

  function detail(panel, token) {
    panel.textContent = "";
    var title = el("h2", null, "Token ");
    title.appendChild(el("code", null, JSON.stringify(token.token)));
    title.appendChild(el("small", null, " position " + token.position + (token.generated ? " · written by the target" : "") +
      (token.special ? " · special token" : "")));
    panel.appendChild(title);
    if (!token.traced) { panel.appendChild(el("p", "hint", "Not traced (before --min-position).")); return; }
    if (token.sink) panel.appendChild(el("p", "hint sink-note", "Attention sink (position 0, or an activation far " +
      "above the text's median norm): its reading says little about the text and is left out of the mean."));
    var label = labelOf(token);
    var line = el("div", "score-line");
    line.appendChild(el("span", "badge label-" + label, label));
    line.appendChild(el("span", "figures", token.score === null ? "  no score" : "  score " + fixed(token.score, 2) +
      " · MSE " + fixed(token.mse, 3) + " · cos " + fixed(token.cosine, 3) + " · ‖v‖ " + fixed(token.norm, 1)));
    panel.appendChild(line);
    if (token.next_tokens) panel.appendChild(el("p", "next-tokens", "The target's likeliest next tokens: " +
      token.next_tokens.map(function (t) { return JSON.stringify(t.token) + " " + pct(t.prob); }).join(" · ")));
    if (token.status === "failed") {
      panel.appendChild(el("p", "failed-note", "Explanation failed: " + token.failure + ". What the AV wrote:"));
      panel.appendChild(el("pre", "raw", token.answer || "(nothing)"));
      return;
    }
    var claimsHead = el("h3", null, "Claims ");
    claimsHead.appendChild(el("small", null, "weight = score lost when the claim is removed"));
    panel.appendChild(claimsHead);
    var scale = Math.max.apply(null, token.claims.map(function (c) { return Math.abs(c.weight || 0); }).concat([0.05]));
    panel.appendChild(claimList(token, scale));
    var flagged = 0;
    token.claims.forEach(function (c) { c.quotes.forEach(function (q) { if (q.flagged) flagged += 1; }); });
    panel.appendChild(el("p", "caveat", (flagged ? flagged + " quote(s) not found before this token. " : "") +
      "Published NLAs ground only ~27–51% of their claims in the text: read claims as hypotheses."));
  }

  // options.onDetail(panel, token): called after a token's reading is shown (nla serve adds its steer panel).
  function render(root, trace, options) {
    root.textContent = "";
    var page = el("div", "nla-page");
    page.appendChild(header(trace));
    var layout = el("section", "layout");
    var tokens = el("div", "tokens"), panel = el("aside", "detail");
    panel.setAttribute("aria-live", "polite");
    panel.appendChild(el("p", "hint", "Hover over a token to read its explanation; click to keep it."));
    var chips = trace.tokens.map(function (token) {
      var node = chip(token);
      tokens.appendChild(node);
      return node;
    });
    var locked = null;
    function show(i) {
      detail(panel, trace.tokens[i]);
      if (options && options.onDetail) options.onDetail(panel, trace.tokens[i], trace);
    }
    function lock(i) {
      if (locked !== null) chips[locked].classList.remove("locked");
      locked = (locked === i) ? null : i;
      if (locked !== null) { chips[locked].classList.add("locked"); show(locked); }
    }
    chips.forEach(function (node, i) {
      if (!trace.tokens[i].traced) return;
      node.addEventListener("mouseenter", function () { if (locked === null) show(i); });
      node.addEventListener("focus", function () { if (locked === null) show(i); });
      node.addEventListener("click", function () { lock(i); });
      node.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); lock(i); }
      });
    });
    // One key handler per root: a re-render (the app shows trace after trace) replaces the last one.
    if (root.nlaKeys) root.removeEventListener("keydown", root.nlaKeys);
    root.nlaKeys = function (event) {
      if (event.key === "Escape" && locked !== null) { lock(locked); return; }
      if (locked === null || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
      var step = event.key === "ArrowRight" ? 1 : -1, j = locked + step;
      while (j >= 0 && j < chips.length && !trace.tokens[j].traced) j += step;
      if (j >= 0 && j < chips.length) { lock(j); chips[j].focus(); }
    };
    root.addEventListener("keydown", root.nlaKeys);
    layout.appendChild(tokens);
    layout.appendChild(panel);
    page.appendChild(layout);
    root.appendChild(page);
    return { show: show, lock: lock };
  }

  return { render: render };
})();
