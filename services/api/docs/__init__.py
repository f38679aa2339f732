"""The public API documentation, generated from the route table and served by the gateway:
`openapi` builds the OpenAPI 3.0 document (its types in `spec`, the spec's Errors table in
`error_table`), `postman` turns it into a Postman v2.1 collection (with bodies from `examples`),
`published` keeps both for one gateway's routes, and `page` is the HTML page, Redoc (vendored in
`static/`) rendering the document. `endpoints` holds the routes that serve them."""
