/* Referral tracking snippet, served by the referral platform; put it on every page of your site:
 *   <script src="https://PLATFORM/static/tracking/rp.js" data-cookie-days="90" defer></script>
 * It keeps the `ref` (referral code) and `vid` (visitor id) parameters our /r/ redirect adds to your
 * landing URL in first-party cookies for the program's cookie window, and hands them to your sign-up:
 * every form field named `rp_visitor_id` / `rp_referral_code` is filled in, and
 * window.ReferralPlatform.visitorId() / .referralCode() return them for your own server call
 * (POST /api/v1/signups with visitor_id and referral_code). No other data is read or sent. */
(function () {
  "use strict";
  var script = document.currentScript;
  var days = parseInt((script && script.getAttribute("data-cookie-days")) || "90", 10);
  var refParam = (script && script.getAttribute("data-ref-param")) || "ref";
  var vidParam = (script && script.getAttribute("data-vid-param")) || "vid";
  var safe = /^[A-Za-z0-9_-]{1,64}$/;

  function readCookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }
  function writeCookie(name, value) {
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + days * 86400 + "; Path=/; SameSite=Lax" + secure;
  }
  var params = new URLSearchParams(location.search);
  [["rp_ref", params.get(refParam)], ["rp_vid", params.get(vidParam)]].forEach(function (pair) {
    if (pair[1] && safe.test(pair[1])) { writeCookie(pair[0], pair[1]); }
  });
  var api = {
    visitorId: function () { return readCookie("rp_vid"); },
    referralCode: function () { return readCookie("rp_ref"); },
    fill: function (root) {
      (root || document).querySelectorAll("input[name=rp_visitor_id], input[name=visitor_id][data-rp]").forEach(function (input) {
        if (!input.value) { input.value = api.visitorId(); }
      });
      (root || document).querySelectorAll("input[name=rp_referral_code], input[name=referral_code][data-rp]").forEach(function (input) {
        if (!input.value) { input.value = api.referralCode(); }
      });
    },
  };
  window.ReferralPlatform = api;
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", function () { api.fill(); }); }
  else { api.fill(); }
})();
