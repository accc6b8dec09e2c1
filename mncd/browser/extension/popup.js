// The popup: the host's "check" answer, in Japanese or English by the browser's language.
"use strict";
const api = globalThis.browser ?? globalThis.chrome;
const TEXTS = {
  ja: {
    title: "mncd ブラウザー連携（非公式）",
    waiting: "確認しています…",
    host: ["ブラウザー連携（mncd-browser-host）が応答しました", "ブラウザー連携（mncd-browser-host）がありません。「mncctl browser install」を実行してください"],
    daemon: ["mncd に接続しました", "mncd に接続できません。「mncctl doctor」で確認してください"],
    reader: ["カードリーダーが接続されています", "カードリーダーが見つかりません"],
    card: ["マイナンバーカードがあります", "カードリーダーにマイナンバーカードを置いてください"],
    note: "暗証番号はこの拡張機能ではなく、mncd の画面で入力します。",
  },
  en: {
    title: "mncd browser bridge (unofficial)",
    waiting: "Checking…",
    host: ["The bridge (mncd-browser-host) answers", "The bridge (mncd-browser-host) is missing: run “mncctl browser install”"],
    daemon: ["mncd answers", "mncd cannot be reached: run “mncctl doctor”"],
    reader: ["A card reader is connected", "No card reader found"],
    card: ["A My Number Card is in the reader", "Put your My Number Card on the reader"],
    note: "You type your PIN in mncd's own dialog, never in this extension.",
  },
};
const texts = navigator.language.startsWith("ja") ? TEXTS.ja : TEXTS.en;
document.documentElement.lang = texts === TEXTS.ja ? "ja" : "en";
document.getElementById("title").textContent = texts.title;
document.getElementById("waiting").textContent = texts.waiting;
document.getElementById("note").textContent = texts.note;

const show = (answer) => {
  const items = document.getElementById("items");
  items.replaceChildren();
  const line = (name, ok) => {
    const li = document.createElement("li");
    li.id = name;
    li.className = ok ? "ok" : "ng";
    li.textContent = texts[name][ok ? 0 : 1];
    items.appendChild(li);
  };
  line("host", Boolean(answer));
  if (!answer) return;
  for (const item of answer.diagnostics || []) {
    if (item.item in texts) line(item.item, item.ok === true);
  }
};
api.runtime.sendMessage({ type: "check" }).then(show, () => show(null));
