// In the extension's own world on https://*.go.jp/ pages only: adds the two hidden inputs the
// pages look for and relays the page's "launchApp" events to the background, answering with
// "recvMsg". It never asks for, sees or stores a PIN: the daemon asks in its own dialog.
(() => {
  "use strict";
  const api = globalThis.browser ?? globalThis.chrome;
  // What the pages look for (values as the official extension and app present themselves).
  const INPUTS = { "extension-is-installed": "24", "app-is-installed": "29" };
  const MAX_REQUEST = 64 * 1024;
  let busy = false;

  const addInputs = () => {
    for (const [id, value] of Object.entries(INPUTS)) {
      if (document.getElementById(id)) continue;
      const input = document.createElement("input");
      input.type = "hidden";
      input.id = id;
      input.value = value;
      (document.body || document.documentElement).appendChild(input);
    }
  };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", addInputs, { once: true });
  } else {
    addInputs();
  }

  const reply = (answer) =>
    document.dispatchEvent(
      new CustomEvent("recvMsg", { bubbles: true, detail: JSON.stringify(answer) }),
    );
  const refuse = (request, message) =>
    reply({ ...(request || {}), result: "1", message });

  document.addEventListener("launchApp", (event) => {
    const detail = event.detail;
    let request;
    try {
      if (typeof detail !== "string" || detail.length > MAX_REQUEST) throw new Error("size");
      request = JSON.parse(detail);
      if (!request || typeof request !== "object" || Array.isArray(request)) throw new Error();
    } catch {
      refuse(null, "要求の形式が正しくありません。");
      return;
    }
    if (busy) {
      // One request at a time: a flooding page gets an answer at once, never more dialogs.
      refuse(request, "前の処理が終わっていません。しばらくしてから、もう一度お試しください。");
      return;
    }
    busy = true;
    api.runtime
      .sendMessage({ type: "launchApp", request })
      .then(reply, () => refuse(request, "拡張機能が応答しませんでした。"))
      .finally(() => {
        busy = false;
      });
  });
})();
