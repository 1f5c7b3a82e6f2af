/* chatlake web widget: plain JavaScript, no build step.
 * Embedded by the snippet from GET /v1/channels/web/embed:
 *   <script src=".../v1/channels/web/widget.js" data-chatlake-tenant="…"
 *           data-chatlake-key="clkw_…" data-chatlake-api="https://…" defer></script>
 * The visitor id lives in localStorage, so a reload continues the conversation.
 */
(function () {
  "use strict";
  var script = document.currentScript ||
    document.querySelector("script[data-chatlake-tenant]");
  if (!script) { return; }
  var tenant = script.getAttribute("data-chatlake-tenant");
  var key = script.getAttribute("data-chatlake-key");
  var api = (script.getAttribute("data-chatlake-api") || "").replace(/\/$/, "");
  var endpoint = api + "/v1/channels/web/" + encodeURIComponent(tenant);
  var storeKey = "chatlake:" + tenant + ":visitor";

  function visitorId() {
    var id = null;
    try { id = window.localStorage.getItem(storeKey); } catch (e) { id = null; }
    if (!id) {
      var bytes = new Uint8Array(18);
      window.crypto.getRandomValues(bytes);
      id = Array.prototype.map.call(bytes, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      }).join("");
      try { window.localStorage.setItem(storeKey, id); } catch (e) { /* private mode */ }
    }
    return id;
  }
  var visitor = visitorId();

  var style = document.createElement("style");
  style.textContent =
    "#chatlake-widget{position:fixed;bottom:16px;right:16px;width:320px;max-height:480px;" +
    "display:flex;flex-direction:column;font:14px/1.4 system-ui,sans-serif;background:#fff;" +
    "border:1px solid #ccd;border-radius:8px;box-shadow:0 4px 16px rgba(0,0,0,.15);z-index:2147483000}" +
    "#chatlake-log{flex:1;overflow-y:auto;padding:8px}" +
    ".chatlake-msg{margin:4px 0;padding:6px 10px;border-radius:12px;max-width:85%;white-space:pre-wrap}" +
    ".chatlake-in{background:#e8eefc;margin-left:auto}.chatlake-out{background:#f1f1f1}" +
    ".chatlake-choices button{margin:2px;padding:4px 8px;border:1px solid #88a;border-radius:12px;background:#fff;cursor:pointer}" +
    ".chatlake-card{border:1px solid #dde;border-radius:6px;padding:6px;margin:4px 0}" +
    ".chatlake-card img,.chatlake-msg img{max-width:100%}" +
    "#chatlake-form{display:flex;border-top:1px solid #dde}" +
    "#chatlake-input{flex:1;border:0;padding:8px}#chatlake-send{border:0;padding:8px 12px;cursor:pointer}" +
    "#chatlake-error{color:#a00;padding:0 8px;font-size:12px}";
  document.head.appendChild(style);

  var root = document.createElement("div");
  root.id = "chatlake-widget";
  root.setAttribute("role", "complementary");
  root.setAttribute("aria-label", "Chat");
  var log = document.createElement("div");
  log.id = "chatlake-log";
  log.setAttribute("aria-live", "polite");
  var error = document.createElement("div");
  error.id = "chatlake-error";
  var form = document.createElement("form");
  form.id = "chatlake-form";
  var input = document.createElement("input");
  input.id = "chatlake-input";
  input.setAttribute("aria-label", "Message");
  input.placeholder = "Type a message…";
  input.autocomplete = "off";
  var send = document.createElement("button");
  send.id = "chatlake-send";
  send.type = "submit";
  send.textContent = "Send";
  form.appendChild(input);
  form.appendChild(send);
  root.appendChild(log);
  root.appendChild(error);
  root.appendChild(form);

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function safeUrl(url) {
    return /^(https?:|data:image\/)/i.test(String(url || "")) ? String(url) : null;
  }
  function choices(list, container) {
    var box = el("div", "chatlake-choices");
    (list || []).forEach(function (choice) {
      var url = safeUrl(choice.url);
      if (url) {
        var link = el("a", null, choice.title);
        link.href = url; link.target = "_blank"; link.rel = "noopener";
        box.appendChild(link);
        return;
      }
      var button = el("button", null, choice.title);
      button.type = "button";
      button.addEventListener("click", function () {
        post(choice.title, "postback", { payload: choice.payload || choice.title, title: choice.title });
      });
      box.appendChild(button);
    });
    container.appendChild(box);
  }

  function show(direction, message) {
    var type = message.type || "text";
    var payload = message.payload || {};
    var bubble = el("div", "chatlake-msg chatlake-" + direction);
    bubble.setAttribute("data-type", type);
    var text = payload.text !== undefined ? payload.text : message.text;
    if (direction === "in" || type === "text") {
      bubble.textContent = message.text || "";
    } else if (type === "image" && safeUrl(payload.url)) {
      var img = el("img"); img.src = safeUrl(payload.url); img.alt = text || "image";
      bubble.appendChild(img);
      if (text) { bubble.appendChild(el("div", null, text)); }
    } else if ((type === "audio" || type === "video") && safeUrl(payload.url)) {
      var media = el(type); media.src = safeUrl(payload.url); media.controls = true;
      bubble.appendChild(media);
    } else if (type === "file" && safeUrl(payload.url)) {
      var file = el("a", null, payload.filename || text || payload.url);
      file.href = safeUrl(payload.url); file.target = "_blank"; file.rel = "noopener";
      bubble.appendChild(file);
    } else if (type === "location") {
      var map = el("a", null, [payload.name, payload.address].filter(Boolean).join(", ") || "Location");
      map.href = "https://maps.google.com/?q=" + encodeURIComponent(payload.latitude + "," + payload.longitude);
      map.target = "_blank"; map.rel = "noopener";
      bubble.appendChild(map);
    } else if (type === "contact") {
      bubble.textContent = [payload.name, payload.phone, payload.email].filter(Boolean).join("\n");
    } else if (type === "quick_replies" || type === "buttons" || type === "list") {
      if (text) { bubble.appendChild(el("div", null, text)); }
      choices(payload.options || payload.buttons || payload.items, bubble);
    } else if (type === "carousel") {
      if (text) { bubble.appendChild(el("div", null, text)); }
      (payload.cards || []).forEach(function (card) {
        var box = el("div", "chatlake-card");
        if (safeUrl(card.image_url)) {
          var pic = el("img"); pic.src = safeUrl(card.image_url); pic.alt = card.title;
          box.appendChild(pic);
        }
        box.appendChild(el("strong", null, card.title));
        if (card.subtitle) { box.appendChild(el("div", null, card.subtitle)); }
        choices(card.buttons, box);
        bubble.appendChild(box);
      });
    } else {
      bubble.textContent = message.text || "";
    }
    log.appendChild(bubble);
    log.scrollTop = log.scrollHeight;
  }

  function request(method, url, body) {
    var options = { method: method, headers: { "X-Widget-Key": key } };
    if (body) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          throw new Error((data && data.error && data.error.message) || ("HTTP " + response.status));
        }
        return data;
      });
    });
  }

  function post(text, type, payload) {
    error.textContent = "";
    show("in", { type: "text", text: text });
    send.disabled = true;
    return request("POST", endpoint, { visitor_id: visitor, text: text, type: type || "text", payload: payload || null })
      .then(function (data) {
        (data.replies || []).forEach(function (reply) { show("out", reply); });
      })
      .catch(function (e) { error.textContent = "Not sent: " + e.message; })
      .then(function () { send.disabled = false; input.focus(); });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) { return; }
    input.value = "";
    post(text);
  });

  function start() {
    document.body.appendChild(root);
    request("GET", endpoint + "?visitor_id=" + encodeURIComponent(visitor))
      .then(function (data) {
        (data.messages || []).forEach(function (message) {
          show(message.direction === "in" ? "in" : "out", message);
        });
        root.setAttribute("data-ready", "true");
      })
      .catch(function (e) {
        error.textContent = "Chat unavailable: " + e.message;
        root.setAttribute("data-ready", "true");
      });
  }
  if (document.body) { start(); } else { document.addEventListener("DOMContentLoaded", start); }
})();
