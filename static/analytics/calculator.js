/* LTV:CAC calculator: recomputes as the inputs change ("—" when a figure is undefined). */
(function () {
  var start = document.getElementById("calculator-start");
  if (!start) return;
  var values = JSON.parse(start.textContent);
  var fields = { arr: "calc-arr", lifetime: "calc-lifetime", spend: "calc-spend", customers: "calc-customers" };
  function input(name) { return document.getElementById(fields[name]); }
  Object.keys(fields).forEach(function (name) {
    if (values[name] !== null && values[name] !== undefined) input(name).value = values[name];
    input(name).addEventListener("input", compute);
  });
  function number(name) { var v = parseFloat(input(name).value); return isFinite(v) ? v : null; }
  function shown(v) { return v === null || !isFinite(v) ? "—" : v.toLocaleString(undefined, { maximumFractionDigits: 2 }); }
  function compute() {
    var arr = number("arr"), lifetime = number("lifetime"), spend = number("spend"), customers = number("customers");
    var ltv = arr !== null && lifetime !== null ? arr * lifetime / 12 : null;
    var cac = spend !== null && customers ? spend / customers : null;
    var ratio = ltv !== null && cac ? ltv / cac : null;
    document.getElementById("calc-ltv").textContent = shown(ltv);
    document.getElementById("calc-cac").textContent = shown(cac);
    document.getElementById("calc-ratio").textContent = shown(ratio);
    document.getElementById("calc-verdict").textContent = ratio === null ? "" : ratio > 4 ? "healthy (> 4)" : "below the healthy 4";
  }
  compute();
})();
