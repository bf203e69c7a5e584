// The API page: every path of /api/openapi.json with its summary, request fields and responses. No CDN.
"use strict";
(function () {
  var root = document.getElementById("endpoints");
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function typeOf(schema) {
    if (!schema) return "any";
    if (schema.$ref) return schema.$ref.split("/").pop();
    if (schema.anyOf) return schema.anyOf.map(typeOf).join(" | ");
    if (schema.type === "array") return "array of " + typeOf(schema.items);
    return schema.type || "any";
  }
  function fields(schema) {
    var table = el("table", "fields"), head = table.appendChild(el("tr"));
    ["field", "type", "default", "meaning"].forEach(function (name) { head.appendChild(el("th", null, name)); });
    Object.keys(schema.properties || {}).forEach(function (name) {
      var prop = schema.properties[name], row = table.appendChild(el("tr"));
      row.appendChild(el("td")).appendChild(el("code", null, name));
      row.appendChild(el("td", null, typeOf(prop)));
      row.appendChild(el("td", null, prop.default === undefined ? ((schema.required || []).indexOf(name) >= 0 ?
        "required" : "") : JSON.stringify(prop.default)));
      row.appendChild(el("td", null, prop.description || ""));
    });
    return table;
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
          var schema = body.schema.$ref ? spec.components.schemas[typeOf(body.schema)] : body.schema;
          section.appendChild(el("p", null, "JSON body (" + typeOf(body.schema) + "):"));
          section.appendChild(fields(schema));
        }
        section.appendChild(el("p", "meta", "Responses: " + Object.keys(op.responses).join(", ") +
          (method === "post" ? "; 400, 413, 503 with {\"error\": ...}" : "")));
        root.appendChild(section);
      });
    });
    var message = spec.components && spec.components.schemas.Message;
    if (message) {
      var section = el("section");
      section.appendChild(el("h2", null, "Message"));
      section.appendChild(fields(message));
      root.appendChild(section);
    }
  }).catch(function (err) { root.textContent = "could not load the API description: " + err.message; });
})();
