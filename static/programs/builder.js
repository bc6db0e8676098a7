// The program builder: show the inputs each reward type uses, add reward rows, and refresh the
// plain-language terms beside the form from the server (POST the form to the preview endpoint).
(function () {
  "use strict";
  var form = document.getElementById("builder-form");
  if (!form) { return; }
  var typeFields = JSON.parse(document.getElementById("builder-type-fields").textContent);
  var always = ["kind", "on", "description", "partner_tier"];

  function syncRow(row) {
    var kindSelect = row.querySelector("select[name$='-kind']");
    if (!kindSelect) { return; }
    var used = typeFields[kindSelect.value] || [];
    row.querySelectorAll(".bfield").forEach(function (box) {
      var name = box.getAttribute("data-field");
      box.hidden = !(always.indexOf(name) >= 0 ? (name === "kind" || kindSelect.value) : used.indexOf(name) >= 0);
    });
  }
  function syncAll() { form.querySelectorAll("[data-row]").forEach(syncRow); }

  form.addEventListener("click", function (event) {
    var button = event.target.closest("[data-add]");
    if (!button) { return; }
    var prefix = button.getAttribute("data-add");
    var total = form.querySelector("input[name='" + prefix + "-TOTAL_FORMS']");
    var html = document.getElementById(prefix + "-empty").innerHTML.replace(/__prefix__/g, total.value);
    button.insertAdjacentHTML("beforebegin", html);
    total.value = String(parseInt(total.value, 10) + 1);
    syncAll();
  });

  var live = {
    offer: document.getElementById("live-offer"),
    example: document.getElementById("live-example"),
    terms: document.getElementById("live-terms"),
    problems: document.getElementById("live-problems"),
  };
  function text(tag, value) { var node = document.createElement(tag); node.textContent = value; return node; }
  function showErrors(errors) {
    form.querySelectorAll("ul.errorlist.live").forEach(function (list) { list.textContent = ""; });
    form.querySelectorAll(".bfield.has-error").forEach(function (box) { box.classList.remove("has-error"); });
    form.querySelectorAll("[aria-invalid]").forEach(function (input) { input.removeAttribute("aria-invalid"); });
    Object.keys(errors).forEach(function (name) {
      var list = document.getElementById("id_" + name + "_error") || document.getElementById(name + "_error");
      var input = form.querySelector("[name='" + name + "']");
      if (input) { input.setAttribute("aria-invalid", "true"); input.closest(".bfield").classList.add("has-error"); }
      if (!list) { list = document.getElementById("form-errors"); }
      if (list) { errors[name].forEach(function (message) { list.appendChild(text("li", message)); }); }
    });
  }
  var timer = null;
  function refresh() {
    var url = form.getAttribute("data-preview-url");
    fetch(url, { method: "POST", body: new FormData(form), credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        showErrors(data.errors || {});
        if (!data.ok) {
          live.problems.hidden = false;
          live.problems.textContent = "Fix the fields marked in red to see the terms.";
          return;
        }
        live.problems.hidden = true;
        live.offer.textContent = data.offer || "";
        live.example.textContent = "";
        (data.example || []).forEach(function (line) { live.example.appendChild(text("p", line)); });
        live.terms.textContent = "";
        (data.sections || []).forEach(function (section) {
          live.terms.appendChild(text("h3", section.title));
          var list = document.createElement("ul");
          section.items.forEach(function (item) { list.appendChild(text("li", item)); });
          live.terms.appendChild(list);
        });
      })
      .catch(function () { /* the panel keeps its last content; saving still validates */ });
  }
  function schedule(event) {
    if (event && event.target && event.target.matches("select[name$='-kind']")) { syncRow(event.target.closest("[data-row]")); }
    clearTimeout(timer);
    timer = setTimeout(refresh, 350);
  }
  form.addEventListener("input", schedule);
  form.addEventListener("change", schedule);
  syncAll();
})();
