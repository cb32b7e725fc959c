// The JavaScript SDK's operations calls (tasks, replicaSets, drain, resume, streamUrl and the
// stream cookie) against the live orchestra of tests/test_js_sdk.py: one slot, nothing
// waiting in the engine, two tasks may queue, 20 ms per token, the bearer token required.
// Every test leaves the server as it found it: its tasks cancelled, the pool resumed.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import * as sdk from "../../orchestra/http/static/sdk/orchestra.js";
import { baseUrl, client, HANG, token, until } from "./live.mjs";

const { Client, OrchestraError, QueueFull, ServerError, STREAM_COOKIE } = sdk;

const TYPES = readFileSync(new URL("../../orchestra/http/static/sdk/orchestra.d.ts", import.meta.url), "utf8");


/** Nothing running or waiting (what an earlier test left has ended). */
async function idle() {
  await until(async () => (await client.tasks()).length === 0, "an idle server");
}

/** A task that holds the slot, once it sent its one token. */
async function hanging() {
  const { task_id } = await client.submit({ prompt: HANG, max_tokens: 8 });
  await until(async () => (await client.status(task_id)).tokens_out >= 1, "its first token");
  return task_id;
}

async function cancelAll(ids) {
  for (const id of ids) await client.cancel(id);
}

describe("the module and its types", () => {
  test("the .d.ts declares every export and every public method of Client", () => {
    for (const name of Object.keys(sdk)) {
      assert.match(TYPES, new RegExp(`^export (const|class|function) ${name}\\b`, "m"), name);
    }
    assert.equal(STREAM_COOKIE, "orchestra_token");
    const declared = TYPES.slice(TYPES.indexOf("export class Client"));
    const methods = Object.getOwnPropertyNames(Client.prototype).filter((n) => n !== "constructor" && !n.startsWith("_"));
    for (const name of methods) assert.match(declared, new RegExp(`^  ${name}\\(`, "m"), `Client.${name}`);
    for (const name of ["tasks", "replicaSets", "drain", "resume", "streamUrl", "useStreamCookie"]) {
      assert.ok(methods.includes(name), name);
    }
  });
});

describe("tasks", () => {
  test("a running task, then a waiting one; filters by state, pool and limit", async () => {
    await idle();
    const ids = [];
    try {
      ids.push(await hanging());
      ids.push((await client.submit({ prompt: "waits its turn", max_tokens: 2 })).task_id);
      const [running, waiting, ...rest] = await client.tasks();
      assert.deepEqual(rest, []);
      assert.equal(running.task_id, ids[0]);
      assert.equal(running.state, "running");
      assert.equal(running.pool, "default");
      assert.equal(running.priority, "interactive");
      assert.equal(running.queue_position, null);
      assert.ok(running.tokens_out >= 1 && running.max_tokens === 8, running);
      assert.equal(typeof running.replica, "string");
      assert.ok(Number.isInteger(running.run_ms) && Number.isInteger(running.age_ms), running);
      assert.equal(waiting.task_id, ids[1]);
      assert.equal(waiting.state, "queued");
      assert.equal(waiting.queue_position, 0, "next in line");
      assert.ok(Number.isInteger(waiting.predicted_start_ms), waiting);
      assert.equal(waiting.tokens_out, 0);
      assert.equal(waiting.replica, null);
      assert.equal(waiting.face, "v1");
      for (const task of [running, waiting]) {
        assert.ok(!("prompt" in task) && !("text" in task), "no prompt, no text");
      }

      const idsOf = async (options) => (await client.tasks(options)).map((t) => t.task_id);
      assert.deepEqual(await idsOf({ state: "queued" }), [ids[1]]);
      assert.deepEqual(await idsOf({ state: ["running"] }), [ids[0]]);
      assert.deepEqual(await idsOf({ state: ["queued", "running"] }), ids, "running first, whatever the order asked");
      assert.deepEqual(await idsOf({ limit: 1 }), [ids[0]]);
      assert.deepEqual(await idsOf({ pool: "default" }), ids);

      await assert.rejects(client.tasks({ state: "lost" }), (error) => {
        assert.ok(error instanceof ServerError && !(error instanceof QueueFull), String(error));
        assert.equal(error.code, "INVALID_PARAMS");
        assert.equal(error.status, 400);
        assert.equal(error.retriable, false);
        return true;
      });
      await assert.rejects(client.tasks({ limit: 0 }), { code: "INVALID_PARAMS", status: 400 });
      await assert.rejects(client.tasks({ pool: "nope" }), { code: "NOT_FOUND", status: 404 });
    } finally {
      await cancelAll([...ids].reverse()); // the waiting one first: it never runs
    }
    const ended = await client.tasks({ state: ["cancelled"] });
    for (const id of ids) assert.ok(ended.some((t) => t.task_id === id && t.state === "cancelled"), id);
    assert.deepEqual(await client.tasks(), []);
  });
});

describe("replica sets", () => {
  test("each pool's replicas; tokens_out_total grows as a task runs", async () => {
    await idle();
    const [before, ...others] = await client.replicaSets();
    assert.deepEqual(others, []);
    assert.equal(before.id, "default");
    assert.equal(before.pool_id, "default");
    assert.equal(before.state, "ready");
    assert.ok(Number.isInteger(before.tokens_out_total) && before.tokens_out_total >= 0, before);
    assert.equal(typeof before.slo.window_s, "number");
    assert.deepEqual(
      before.replicas.map((r) => [r.id, r.slots_total]),
      [["default/0", 1]],
    );
    const done = await client.complete("count my tokens", { max_tokens: 5 });
    assert.equal(done.tokens_out, 5);
    const [after] = await client.replicaSets();
    assert.ok(after.tokens_out_total >= before.tokens_out_total + 5, [before.tokens_out_total, after.tokens_out_total]);
  });
});

describe("drain and resume", () => {
  test("a drained pool refuses a submission with POOL_UNREADY; after resume it is taken", async () => {
    await idle();
    let drained;
    try {
      drained = await client.drain("default", { deadlineMs: 1000 });
      assert.equal(drained.pool_id, "default");
      assert.equal(drained.state, "drained");
      for (const field of ["finished", "cancelled", "requeued", "queued", "waited_ms"]) {
        assert.ok(Number.isInteger(drained[field]), field);
      }
      await assert.rejects(client.submit({ prompt: "while drained", max_tokens: 1 }), (error) => {
        assert.ok(error instanceof ServerError && !(error instanceof QueueFull), String(error));
        assert.equal(error.code, "POOL_UNREADY");
        assert.equal(error.status, 503);
        assert.equal(error.retriable, true);
        return true;
      });
      assert.equal((await client.health()).draining, true);
      assert.equal((await client.replicaSets())[0].state, "draining");
    } finally {
      const resumed = await client.resume();
      assert.deepEqual(resumed, { pool_id: "default", state: "ready" });
    }
    assert.ok(drained, "the drain answered");
    const done = await client.complete("after the resume", { max_tokens: 2 });
    assert.equal(done.tokens_out, 2);
    assert.deepEqual(await client.resume("default"), { pool_id: "default", state: "ready" }, "resuming again changes nothing");
    await assert.rejects(client.drain("nope"), { code: "NOT_FOUND", status: 404 });
    await assert.rejects(client.resume("nope"), { code: "NOT_FOUND", status: 404 });
  });
});

describe("streamUrl and the stream cookie", () => {
  test("streamUrl is the task's stream; the stream, and only it, takes the token from the cookie", async () => {
    assert.equal(client.streamUrl("a b/c"), `${baseUrl}/v1/tasks/a%20b%2Fc/stream`);
    assert.equal(new Client({ baseUrl: `${baseUrl}/`, token }).streamUrl("t"), `${baseUrl}/v1/tasks/t/stream`);

    const { task_id } = await client.complete("stream me", { max_tokens: 3 });
    const url = client.streamUrl(task_id);
    const cookie = { Cookie: `${STREAM_COOKIE}=${encodeURIComponent(token)}` };
    const withCookie = await fetch(url, { headers: cookie });
    assert.equal(withCookie.status, 200);
    assert.match(withCookie.headers.get("content-type"), /^text\/event-stream/);
    const body = await withCookie.text();
    assert.match(body, /event: started/);
    assert.match(body, /event: end/);
    assert.equal((await fetch(url)).status, 401, "no header, no cookie");
    const wrong = await fetch(url, { headers: { Cookie: `${STREAM_COOKIE}=not-the-token` } });
    assert.ok([401, 403].includes(wrong.status), wrong.status);
    await wrong.text();
    const status = await fetch(`${baseUrl}/v1/tasks/${task_id}`, { headers: cookie });
    assert.equal(status.status, 401, "the cookie is for the stream only");
    await status.text();
  });

  test("useStreamCookie sets the cookie a browser's EventSource sends; outside a browser it throws", () => {
    assert.throws(() => client.useStreamCookie(), OrchestraError);
    globalThis.document = { cookie: "" };
    try {
      new Client({ baseUrl, token: "a token/+" }).useStreamCookie();
      assert.equal(document.cookie, `${STREAM_COOKIE}=a%20token%2F%2B; Path=/v1/tasks; SameSite=Strict`);
      new Client({ baseUrl }).useStreamCookie(); // no token: the cookie is removed
      assert.equal(document.cookie, `${STREAM_COOKIE}=; Path=/v1/tasks; SameSite=Strict; Max-Age=0`);
    } finally {
      delete globalThis.document;
    }
  });
});
