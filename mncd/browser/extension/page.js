// In the page's own world on https://*.go.jp/ pages only (see manifest.json): the sites accept
// only Windows and macOS, so the browser is presented to them as Windows 10 (x64). Nothing
// else of the page is touched.
(() => {
  "use strict";
  const real = navigator.userAgent;
  const userAgent = real.replace(/\([^)]*\)/, (system) => {
    const firefox = system.match(/; rv:[^;)]+/);
    return "(Windows NT 10.0; Win64; x64" + (firefox ? firefox[0] : "") + ")";
  });
  const define = (object, name, value) =>
    Object.defineProperty(object, name, { get: () => value, configurable: true });
  define(Navigator.prototype, "userAgent", userAgent);
  define(Navigator.prototype, "appVersion", userAgent.replace(/^Mozilla\//, ""));
  define(Navigator.prototype, "platform", "Win32");
  define(Navigator.prototype, "oscpu", "Windows NT 10.0; Win64; x64");
  const data = navigator.userAgentData;
  if (data) {
    const brands = data.brands;
    const high = {
      architecture: "x86",
      bitness: "64",
      model: "",
      platform: "Windows",
      platformVersion: "10.0.0",
      wow64: false,
    };
    const windows = {
      brands,
      mobile: false,
      platform: "Windows",
      getHighEntropyValues: async (hints) => {
        const values = { brands, mobile: false, platform: "Windows" };
        for (const hint of hints || []) {
          if (hint in high) values[hint] = high[hint];
          if (hint === "fullVersionList" && data.getHighEntropyValues) {
            values.fullVersionList = (await data.getHighEntropyValues([hint])).fullVersionList;
          }
        }
        return values;
      },
      toJSON: () => ({ brands, mobile: false, platform: "Windows" }),
    };
    define(Navigator.prototype, "userAgentData", windows);
  }
})();
