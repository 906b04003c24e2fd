/**
 * @module
 * The warm pool (spec §8.5): placeholder until the pool lands.
 */
import type { PreparedRestore } from "./restore.ts";

export class WarmPool {
  constructor(_home: string, _options: { size: number }) {}
  take(_digest: string): PreparedRestore | undefined {
    return undefined;
  }
}
