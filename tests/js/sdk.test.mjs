// The JavaScript SDK against a live orchestra on the fake engine (tests/test_js_sdk.py starts
// it: one slot, nothing waiting in the engine, two tasks may queue, 20 ms per token, the
// bearer token required). Run by that test as `node --test`, with ORCHESTRA_URL and
// ORCHESTRA_TOKEN set.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  BudgetExceeded,
  ChatStream,
  Client,
  ParseError,
  QueueFull,
  ServerError,
  TaskFailed,
  TransportError,
} from "../../orchestra/http/static/sdk/orchestra.js";
import { baseUrl, client, HANG, token, until } from "./live.mjs";



async function drain(iterator) {
  const events = [];
  for await (const event of iterator) events.push(event);
  return events;
}

function assertWholeStream(events, tokens) {
  assert.deepEqual(
    events.map((e) => e.id),
    events.map((_, i) => i),
    "ids 0, 1, 2... each once",
  );
  assert.equal(events[0].kind, "started");
  const pieces = events.filter((e) => e.kind === "token");
  assert.deepEqual(
    pieces.map((e) => e.index),
    [...Array(tokens).keys()],
  );
  assert.equal(events.at(-1).kind, "end");
  assert.equal(events.at(-1).tokens_out, tokens);
}

describe("calls", () => {
  test("capabilities, health, models", async () => {
    const caps = await client.capabilities();
    assert.equal(typeof caps.api_version, "string");
    assert.ok(Array.isArray(caps.pools));
    const health = await client.health();
    assert.equal(health.ready, true);
    assert.equal(health.live, true);
    const models = await client.models();
    assert.deepEqual(
      models.map((m) => [m.id, m.object, m.loaded]),
      [["fake", "model", true]],
    );
  });

  test("submit, status, stream", async () => {
    const handle = await client.submit({ prompt: "Once upon a time", max_tokens: 6, seed: 1 });
    assert.equal(typeof handle.task_id, "string");
    assertWholeStream(await drain(client.stream(handle.task_id)), 6);
    const status = await client.status(handle.task_id);
    assert.equal(status.state, "completed");
    assert.equal(status.tokens_out, 6);
    // resuming from an id gives only the events after it
    const rest = await drain(client.stream(handle.task_id, { lastEventId: 4 }));
    assert.deepEqual(
      rest.map((e) => e.id),
      [5, 6, 7],
    );
  });

  test("complete", async () => {
    const done = await client.complete("Once upon a time", { max_tokens: 5, seed: 7 });
    assert.equal(done.tokens_out, 5);
    assert.ok(done.text.length > 0);
    const again = await client.complete("Once upon a time", { max_tokens: 5, seed: 7 });
    assert.equal(again.text, done.text, "the same seed gives the same text");
  });

  test("chat and streamChat", async () => {
    const messages = [{ role: "user", content: "Name three colours." }];
    const answer = await client.chat(messages, { max_tokens: 5, seed: 3 });
    assert.equal(typeof answer.task_id, "string");
    assert.equal(answer.message.role, "assistant");
    assert.ok(answer.text.length > 0);
    assert.equal(answer.usage.completion_tokens, 5);
    const stream = client.streamChat(messages, { max_tokens: 5, seed: 3 });
    assert.ok(stream instanceof ChatStream);
    const deltas = [];
    for await (const delta of stream) deltas.push(delta);
    assert.equal(typeof stream.taskId, "string");
    assert.ok(stream.done);
    assert.equal(stream.text, answer.text, "streamed or not, the same seed gives the same text");
    assert.equal(deltas.at(-1).usage.completion_tokens, 5);
  });

  test("loadModel and unloadModel", async () => {
    const loaded = await client.loadModel("default");
    assert.equal(loaded.loaded, true);
    await assert.rejects(client.unloadModel("default"), (error) => {
      assert.ok(error instanceof ServerError);
      assert.equal(error.code, "CONFLICT"); // the single-model configuration is always loaded
      assert.equal(error.status, 409);
      return true;
    });
  });
});

describe("errors", () => {
  test("no token: UNAUTHORIZED with its correlation id", async () => {
    const anonymous = new Client({ baseUrl });
    await assert.rejects(anonymous.capabilities(), (error) => {
      assert.ok(error instanceof ServerError && !(error instanceof QueueFull));
      assert.equal(error.code, "UNAUTHORIZED");
      assert.equal(error.status, 401);
      assert.equal(error.retriable, false);
      assert.match(error.correlationId, /\S+/);
      return true;
    });
  });

  test("an invalid request names its problems", async () => {
    await assert.rejects(client.submit({ prompt: "x", max_tokens: -1, nonsense: 1 }), (error) => {
      assert.equal(error.code, "INVALID_PARAMS");
      assert.equal(error.status, 400);
      assert.ok(error.problems.length >= 2, error.problems);
      return true;
    });
    await assert.rejects(client.status("no-such-task"), { code: "NOT_FOUND", status: 404 });
  });

  test("no connection: TransportError; an answer off the contract: ParseError", async () => {
    await assert.rejects(new Client({ baseUrl: "http://127.0.0.1:9" }).health(), TransportError);
    const proxy = async () =>
      new Response("<html>502 Bad Gateway</html>", { status: 502, headers: { "Content-Type": "text/html" } });
    await assert.rejects(new Client({ baseUrl, fetch: proxy }).health(), (error) => {
      assert.ok(error instanceof ParseError);
      assert.equal(error.status, 502);
      return true;
    });
    assert.ok(new BudgetExceeded({ code: "BUDGET_EXCEEDED", message: "m" }) instanceof ServerError);
  });

  test("a full queue: QueueFull with the retry time, and a retry that honours it", async () => {
    const blockers = [];
    for (let i = 0; i < 3; i++) blockers.push((await client.submit({ prompt: HANG, max_tokens: 8 })).task_id);
    try {
      let full;
      await assert.rejects(client.submit({ prompt: "one too many", max_tokens: 2 }), (error) => {
        full = error;
        return error instanceof QueueFull;
      });
      assert.equal(full.code, "ADMISSION_REJECT");
      assert.equal(full.status, 429);
      assert.equal(full.retriable, true);
      assert.equal(full.policyLabel, "queue_capacity");
      assert.ok(Number.isInteger(full.retryAfterMs) && full.retryAfterMs > 0, full.retryAfterMs);

      // a wait longer than the caller agreed to is not made: thrown at once
      const impatient = new Client({ baseUrl, token, retry: { attempts: 5, maxWaitMs: full.retryAfterMs - 1 } });
      const began = Date.now();
      await assert.rejects(impatient.submit({ prompt: "x", max_tokens: 2 }), QueueFull);
      assert.ok(Date.now() - began < full.retryAfterMs, "no wait was made");

      // with retry on, the submission is sent again after the advised delay, and passes once
      // the queue has room (the blockers are cancelled meanwhile)
      const sent = [];
      const recording = async (url, init) => {
        const response = await fetch(url, init);
        if (String(url).endsWith("/v1/tasks")) {
          sent.push({ at: Date.now(), status: response.status, body: JSON.parse(init.body) });
        }
        return response;
      };
      const patient = new Client({ baseUrl, token, fetch: recording, retry: { attempts: 3, maxWaitMs: 60000 } });
      const retried = patient.submit({ prompt: "patient", max_tokens: 2 });
      await until(() => sent.length === 1, "the first try's answer");
      assert.equal(sent[0].status, 429);
      for (const id of blockers) await client.cancel(id);
      const handle = await retried;
      assert.deepEqual(
        sent.map((s) => s.status),
        [429, 202],
      );
      assert.ok(sent[1].at - sent[0].at >= Math.min(full.retryAfterMs, 60000) - 50, sent);
      assert.equal(sent[0].body.task_id, sent[1].body.task_id, "retried with the same task id");
      assert.equal(handle.task_id, sent[0].body.task_id);
      assert.equal((await drain(client.stream(handle.task_id))).at(-1).kind, "end");
    } finally {
      for (const id of blockers) await client.cancel(id);
    }
  });
});

describe("streams", () => {
  test("a cut connection is resumed with Last-Event-ID, without loss or repeat", async () => {
    const connections = [];
    const cutting = async (url, init) => {
      if (!String(url).endsWith("/stream")) return fetch(url, init);
      const abort = new AbortController(); // the test hook: this cuts the connection
      init.signal?.addEventListener("abort", () => abort.abort(init.signal.reason), { once: true });
      const response = await fetch(url, { ...init, signal: abort.signal });
      const seen = { lastEventId: init.headers["Last-Event-ID"] ?? null, tokens: 0 };
      connections.push(seen);
      if (connections.length > 1) return response;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const body = new ReadableStream({
        async pull(controller) {
          try {
            const { done, value } = await reader.read();
            if (done) return controller.close();
            controller.enqueue(value);
            seen.tokens += (decoder.decode(value).match(/event: token/g) ?? []).length;
            if (seen.tokens >= 3) abort.abort(); // cut mid-stream
          } catch (error) {
            controller.error(error);
          }
        },
      });
      return new Response(body, { status: response.status, headers: response.headers });
    };
    const cut = new Client({ baseUrl, token, fetch: cutting });
    const handle = await cut.submit({ prompt: "Tell me a story", max_tokens: 20, seed: 2 });
    const events = await drain(cut.stream(handle.task_id));
    assert.equal(connections.length, 2, "one cut, one resume");
    const delivered = events.filter((e) => e.id <= Number(connections[1].lastEventId));
    assert.ok(delivered.length >= 4, "the cut came after some tokens");
    assert.equal(Number(connections[1].lastEventId), delivered.at(-1).id);
    assertWholeStream(events, 20);
  });

  test("cancel: the stream ends with CANCELLED; complete() throws TaskFailed", async () => {
    const handle = await client.submit({ prompt: HANG, max_tokens: 8 });
    const events = [];
    for await (const event of client.stream(handle.task_id)) {
      events.push(event);
      if (event.kind === "token") {
        const cancelled = await client.cancel(handle.task_id);
        assert.equal(cancelled.task_id, handle.task_id);
      }
    }
    assert.deepEqual(
      events.map((e) => e.kind),
      ["started", "token", "error"],
    );
    assert.equal(events.at(-1).code, "CANCELLED");
    assert.equal((await client.status(handle.task_id)).state, "cancelled");

    const taskId = `js-cancel-${Date.now()}`;
    const completing = client.complete(HANG, { max_tokens: 8, task_id: taskId });
    const failure = completing.then(
      () => null,
      (error) => error,
    );
    await until(async () => {
      try {
        return (await client.status(taskId)).tokens_out >= 1;
      } catch {
        return false;
      }
    }, "its first token");
    await client.cancel(taskId);
    const error = await failure;
    assert.ok(error instanceof TaskFailed, String(error));
    assert.equal(error.code, "CANCELLED");
    assert.equal(error.status, null, "an error event has no HTTP status");
    assert.equal(error.taskId, taskId);
    assert.ok(error.text.length > 0, "the text before the cancel");
  });

  test("leaving a stream early closes it; an abort signal stops it", async () => {
    const handle = await client.submit({ prompt: HANG, max_tokens: 8 });
    try {
      for await (const event of client.stream(handle.task_id)) if (event.kind === "token") break;
      const abort = new AbortController();
      const events = [];
      await assert.rejects(
        (async () => {
          for await (const event of client.stream(handle.task_id, { signal: abort.signal })) {
            events.push(event);
            if (event.kind === "token") abort.abort();
          }
        })(),
        { name: "AbortError" },
      );
      assert.deepEqual(
        events.map((e) => e.kind),
        ["started", "token"],
      );
    } finally {
      await client.cancel(handle.task_id);
    }
  });
});
