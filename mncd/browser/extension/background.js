// Relays a page's request to the native-messaging host (mncd-browser-host) and its answer back.
// The page's origin comes from the browser (the message's sender), never from the page. Only
// the fields the host knows are passed on; one request is handled at a time.
"use strict";
const api = globalThis.browser ?? globalThis.chrome;
const HOST = "io.github.mncd.browser";
const SITE = /^https:\/\/([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+go\.jp(:[0-9]{1,5})?$/;
const FIELDS = ["mode", "service_id", "digest"];
// What the official extension answers when its app cannot be reached.
const HOST_MISSING = "EW044-C300";
let inFlight = false;

const senderOrigin = (sender) => {
  if (sender.origin) return sender.origin;
  try {
    return new URL(sender.url).origin;
  } catch {
    return "";
  }
};

const toHost = (message) => api.runtime.sendNativeMessage(HOST, message);

api.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (sender.id !== api.runtime.id || !message || typeof message !== "object") return false;
  if (message.type === "check" && sender.url === api.runtime.getURL("popup.html")) {
    // The popup: is the host there, does the daemon answer, is a card in the reader?
    toHost({ mode: "check" }).then(sendResponse, () => sendResponse(null));
    return true;
  }
  if (message.type !== "launchApp" || !sender.tab) return false; // from a page's content script
  const request = message.request;
  const origin = senderOrigin(sender);
  if (!SITE.test(origin)) return false; // another site gets nothing
  if (inFlight) {
    sendResponse({
      ...request,
      result: "1",
      message: "前の処理が終わっていません。しばらくしてから、もう一度お試しください。",
    });
    return false;
  }
  const forwarded = { origin };
  for (const field of FIELDS) if (field in request) forwarded[field] = request[field];
  inFlight = true;
  toHost(forwarded)
    .then(sendResponse, () =>
      sendResponse({
        ...request,
        result: "1",
        errcode: HOST_MISSING,
        message:
          "mncd のブラウザー連携（mncd-browser-host）が見つかりません。" +
          "「mncctl browser install」を実行してください。",
      }),
    )
    .finally(() => {
      inFlight = false;
    });
  return true;
});
