// Starts Swagger UI on Lockgate's OpenAPI document, from the packaged bundle only.
// A file rather than an inline script, so that the page works under CSP script-src 'self'.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // BaseLayout: the standalone preset (its top bar) is not vendored.
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The default would send the document to validator.swagger.io for a badge.
    validatorUrl: null,
  });
});
