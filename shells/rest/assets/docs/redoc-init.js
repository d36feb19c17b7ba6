// Starts ReDoc on Lockgate's OpenAPI document, from the packaged bundle only.
// A file rather than an inline script, so that the page works under CSP script-src 'self'.
// ReDoc's theme names web fonts (Roboto, Montserrat) that the page never loads;
// system fonts instead, so nothing is fetched and nothing waits for a font.
Redoc.init(
  "/openapi.json",
  {
    theme: {
      typography: {
        fontFamily: "system-ui, -apple-system, 'Segoe UI', sans-serif",
        headings: { fontFamily: "system-ui, -apple-system, 'Segoe UI', sans-serif" },
        code: { fontFamily: "ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace" },
      },
    },
  },
  document.getElementById("redoc")
);
