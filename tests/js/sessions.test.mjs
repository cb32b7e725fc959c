// The JavaScript SDK's session calls (session, deleteSession) and embed, against the live
// orchestra of tests/test_js_sdk.py (one slot, the bearer token required, the fake engine,
// which serves no embeddings unless started with them). Each test deletes the sessions it made.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";

import { QueueFull, ServerError } from "../../orchestra/http/static/sdk/orchestra.js";
import { client } from "./live.mjs";


const RUN = `js-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;

describe("sessions", () => {
  test("two turns of one session; session() shows them; deleteSession() ends it; then 404", async () => {
    const sessionId = `${RUN}-chat`;
    let open = false;
    try {
      const first = await client.complete("the first turn", { max_tokens: 3, session_id: sessionId });
      open = true;
      const second = await client.complete("the second turn", { max_tokens: 4, session_id: sessionId });
      assert.equal(first.tokens_out + second.tokens_out, 7);

      const session = await client.session(sessionId);
      assert.equal(session.session_id, sessionId);
      assert.equal(session.turns, 2);
      assert.equal(session.tokens_out, 7);
      assert.ok(Number.isInteger(session.slot) && session.slot >= 0, session);
      assert.equal(typeof session.replica, "string");
      assert.ok(session.max_turns >= 2, session);
      assert.equal(session.task_id, null, "no turn in progress");
      assert.ok(Number.isInteger(session.ttl_left_ms), session);
      assert.equal(typeof session.kv_warm, "boolean");
      for (const field of ["tokens", "cost", "wall_ms"]) assert.ok(field in session.budget_left, field);

      const deleted = await client.deleteSession(sessionId);
      open = false;
      assert.equal(deleted.deleted, true);
      assert.equal(typeof deleted.kv_erased, "boolean");
      assert.equal(deleted.session_id, sessionId);
      assert.equal(deleted.turns, 2);

      for (const call of [client.session(sessionId), client.deleteSession(sessionId)]) {
        await assert.rejects(call, (error) => {
          assert.ok(error instanceof ServerError && !(error instanceof QueueFull), String(error));
          assert.equal(error.code, "NOT_FOUND");
          assert.equal(error.status, 404);
          assert.equal(error.retriable, false);
          return true;
        });
      }
      const again = await client.complete("a new session under the same id", { max_tokens: 1, session_id: sessionId });
      open = true;
      assert.equal(again.tokens_out, 1);
      assert.equal((await client.session(sessionId)).turns, 1, "a new session");
    } finally {
      if (open) await client.deleteSession(sessionId);
    }
  });

  test("a session id is one path segment", async () => {
    await assert.rejects(client.session("a/b"), { code: "NOT_FOUND", status: 404 });
    await assert.rejects(client.session("no-such-session"), { code: "NOT_FOUND", status: 404 });
  });
});

describe("embed", () => {
  test("a pool without embeddings refuses with INVALID_PARAMS; a bad input is a TypeError", async () => {
    await assert.rejects(client.embed(42), TypeError);
    const { features } = await client.capabilities();
    if (features.embeddings) {
      const one = await client.embed("hello world");
      assert.equal(one.vectors.length, 1);
      const several = await client.embed(["a", "b", "c"]);
      assert.equal(several.vectors.length, 3);
      assert.equal(typeof several.model, "string");
      assert.ok(Number.isInteger(several.prompt_tokens));
      return;
    }
    for (const input of ["hello world", ["first", "second"]]) {
      await assert.rejects(client.embed(input), (error) => {
        assert.ok(error instanceof ServerError, String(error));
        assert.equal(error.code, "INVALID_PARAMS");
        assert.equal(error.status, 400);
        assert.equal(error.retriable, false);
        assert.match(error.message, /does not serve embeddings/);
        return true;
      });
    }
    await assert.rejects(client.embed("x", { model: "no-such-model" }), (error) => {
      assert.ok(error instanceof ServerError, String(error));
      assert.equal(error.status, 404);
      assert.equal(error.code, "NOT_FOUND");
      assert.equal(error.param, "model");
      return true;
    });
  });
});
