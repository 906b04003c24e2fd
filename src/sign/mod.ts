/**
 * @module
 * Cosign-compatible signing of OVMS artifacts and the admission policy:
 * keys ({@linkcode generateKeyPair}, {@linkcode loadSigningKey},
 * {@linkcode loadPublicKey}), both signature forms ({@linkcode signReference},
 * {@linkcode verifyReference}, {@linkcode copySignatures}), and the policy
 * that `pull`, `run` and the API's `/start` enforce ({@linkcode enforcePolicy},
 * {@linkcode checkAdmission}).
 */
export * from "./keys.ts";
export * from "./formats.ts";
export * from "./sources.ts";
export * from "./verify.ts";
export * from "./sign.ts";
export * from "./policy.ts";
export * from "./policy_schema.ts";
