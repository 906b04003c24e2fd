/**
 * @module
 * The version of ovm and of the OVMS spec it implements.
 */
export const VERSION = "0.1.0";
export const SPEC_VERSION = "0.1";
export const USER_AGENT = `ovm/${VERSION}`;
