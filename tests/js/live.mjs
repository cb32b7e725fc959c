// What every Node test of the JavaScript SDK shares: the live orchestra tests/test_js_sdk.py
// started (ORCHESTRA_URL, ORCHESTRA_TOKEN), a client of it, and a wait for a condition.
import assert from "node:assert/strict";

import { Client } from "../../orchestra/http/static/sdk/orchestra.js";

export const baseUrl = process.env.ORCHESTRA_URL;
export const token = process.env.ORCHESTRA_TOKEN;
assert.ok(baseUrl && token, "ORCHESTRA_URL and ORCHESTRA_TOKEN must be set");

/** A prompt the fake engine answers with one token, then nothing until the client leaves. */
export const HANG = "[[hang:1]] holds its slot until cancelled";

export const client = new Client({ baseUrl, token });

/** Wait until `predicate()` is true, checking it again every 20 ms (up to `timeoutMs`). */
export async function until(predicate, what, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}
