/* clicktrail snippet: keeps the click ID on the merchant's site and reports leads.
 *
 *   <script src="https://TRACKER/t.js" async></script>
 *   <script src="https://TRACKER/t.js" data-campaign="KEY" async></script>   (direct tracking)
 *
 * - Reads `click_id` (or the parameter named by data-param) from the landing URL and keeps it in a
 *   first-party cookie (`ct_click_id`, 90 days) and localStorage.
 * - Direct tracking: with data-campaign (or ?ct_campaign=KEY in the URL) and no click ID in the URL,
 *   a visitor arriving from an ad (gclid, fbclid, ttclid, msclkid, sub1…sub10 or external_id in the
 *   URL) is registered as a click with one request to /d/KEY, which answers its click ID.
 * - clicktrail.track("lead", {txid, payout, currency, status, token}) reports a conversion through
 *   the JS pixel (/pixel) and resolves to the tracker's JSON answer.
 */
(function (window, document) {
  "use strict";
  if (window.clicktrail && window.clicktrail.track) return;

  var script = document.currentScript;
  var base = script ? new URL(script.src, window.location.href).origin : "";
  var NAME = "ct_click_id";
  var MAX_AGE = 90 * 24 * 3600;
  var ID = /^[0-9a-zA-Z]{32}$/;
  var FORWARDED = ["gclid", "fbclid", "ttclid", "msclkid", "wbraid", "gbraid", "external_id", "cost"];
  for (var n = 1; n <= 10; n++) FORWARDED.push("sub" + n);

  function attribute(name) {
    return script ? script.getAttribute(name) : null;
  }

  function store(id) {
    var cookie = NAME + "=" + encodeURIComponent(id) + "; Max-Age=" + MAX_AGE + "; Path=/; SameSite=Lax";
    if (window.location.protocol === "https:") cookie += "; Secure";
    document.cookie = cookie;
    try { window.localStorage.setItem(NAME, id); } catch (e) { /* storage blocked: the cookie stays */ }
  }

  function stored() {
    var match = document.cookie.match(new RegExp("(?:^|; )" + NAME + "=([^;]*)"));
    if (match) return decodeURIComponent(match[1]);
    try { return window.localStorage.getItem(NAME); } catch (e) { return null; }
  }

  function query(params) {
    var parts = [];
    for (var key in params) {
      if (Object.prototype.hasOwnProperty.call(params, key) && params[key] !== undefined && params[key] !== null) {
        parts.push(encodeURIComponent(key) + "=" + encodeURIComponent(String(params[key])));
      }
    }
    return parts.join("&");
  }

  var url = new URLSearchParams(window.location.search);
  var fromUrl = url.get(attribute("data-param") || "click_id");
  var ready;

  if (fromUrl && ID.test(fromUrl)) {
    store(fromUrl);
    ready = Promise.resolve(fromUrl);
  } else {
    var campaign = attribute("data-campaign") || url.get("ct_campaign");
    var landing = {};
    var fromAd = false;
    FORWARDED.forEach(function (name) {
      var value = url.get(name);
      if (value) { landing[name] = value; fromAd = true; }
    });
    var seen = null;
    try { seen = window.sessionStorage.getItem("ct_landing"); } catch (e) { /* no session storage */ }
    if (campaign && (fromAd || url.get("ct_campaign")) && seen !== window.location.search) {
      landing.ref = document.referrer || undefined;
      ready = fetch(base + "/d/" + encodeURIComponent(campaign) + "?" + query(landing))
        .then(function (response) { return response.ok ? response.json() : {}; })
        .then(function (answer) {
          if (answer.click_id) {
            store(answer.click_id);
            try { window.sessionStorage.setItem("ct_landing", window.location.search); } catch (e) { /* ok */ }
          }
          return answer.click_id || stored();
        })
        .catch(function () { return stored(); });
    } else {
      ready = Promise.resolve(stored());
    }
  }

  function track(event, data) {
    data = data || {};
    return ready.then(function (clickId) {
      var params = {
        click_id: data.click_id || clickId,
        event: event || "conversion",
        txid: data.txid,
        payout: data.payout,
        currency: data.currency,
        status: data.status,
        token: data.token
      };
      if (!params.click_id) return { error: "missing_click_id", detail: "no click ID on this visitor" };
      var target = base + "/pixel?" + query(params);
      if (!window.fetch) {
        new Image().src = base + "/pixel.gif?" + query(params);
        return { result: "sent" };
      }
      return fetch(target, { keepalive: true }).then(function (response) { return response.json(); });
    });
  }

  window.clicktrail = {
    track: track,
    clickId: function () { return ready; },
    ready: ready
  };
})(window, document);
