// The API page: every path of /api/openapi.json with its summary, request schema and responses. No CDN.
"use strict";
(function () {
  var root = document.getElementById("endpoints");
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function resolve(spec, schema) {
    if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
    return schema;
  }
  fetch("/api/openapi.json").then(function (r) { return r.json(); }).then(function (spec) {
    root.textContent = "";
    Object.keys(spec.paths).forEach(function (path) {
      Object.keys(spec.paths[path]).forEach(function (method) {
        var op = spec.paths[path][method], section = el("section");
        var title = el("h2");
        title.appendChild(el("span", "method", method.toUpperCase()));
        title.appendChild(el("code", null, path));
        section.appendChild(title);
        section.appendChild(el("p", null, op.summary || ""));
        var body = op.requestBody && op.requestBody.content["application/json"];
        if (body) {
          section.appendChild(el("p", null, "Request body:"));
          section.appendChild(el("pre", null, JSON.stringify(resolve(spec, body.schema), null, 2)));
        }
        section.appendChild(el("p", "meta", "Responses: " + Object.keys(op.responses).join(", ")));
        root.appendChild(section);
      });
    });
  }).catch(function (err) { root.textContent = "could not load the API description: " + err.message; });
})();
