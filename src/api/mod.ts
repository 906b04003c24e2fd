/**
 * @module
 * The OVMS runtime contract over HTTP on a UNIX socket (spec section 11):
 * zod schemas, the controller that applies actions, the pure request handler,
 * `listen()`, the OpenAPI document, the client and the conformance kit.
 */
export * from "./schemas.ts";
export * from "./controller.ts";
export * from "./server.ts";
export * from "./listen.ts";
export * from "./openapi.ts";
export * from "./client.ts";
export * from "./validate.ts";
export * from "./conformance.ts";
