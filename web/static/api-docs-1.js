// Starts Swagger UI on the API docs page with the gateway's own OpenAPI document (the page's data-url).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-url"),
    domNode: root,
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    validatorUrl: null, // no validator badge fetched from elsewhere
    persistAuthorization: false, // an admin key typed into Authorize is forgotten with the page
    docExpansion: "list",
  });
})();
