// The JavaScript SDK's artifact registry calls (putArtifact, getArtifact, readArtifact,
// listArtifacts, lineage, tagArtifact, deleteArtifact) and a task's `artifact` option, against
// the live orchestra of tests/test_js_sdk.py (one slot, the bearer token required; its data
// directory, so its artifact store, is the test's own). Every artifact a test puts carries a
// tag of that run alone, so the listings see only them; each test deletes what it put.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { describe, test } from "node:test";

import { Client, ParseError, ServerError } from "../../orchestra/http/static/sdk/orchestra.js";
import { baseUrl, client, token } from "./live.mjs";


const RUN = `js-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
const idOf = (bytes) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
const utf8 = (text) => new TextEncoder().encode(text);

/** The server's error for `promise`, checked to be a ServerError with this code and status. */
async function refused(promise, code, status) {
  let caught = null;
  await assert.rejects(promise, (error) => {
    caught = error;
    return true;
  });
  assert.ok(caught instanceof ServerError, String(caught));
  assert.equal(caught.code, code, String(caught));
  assert.equal(caught.status, status, String(caught));
  return caught;
}

/** Runs `body` with no crypto.subtle (as in a page served over plain HTTP). */
async function withoutSubtle(body) {
  const descriptor = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  Object.defineProperty(globalThis, "crypto", { value: {}, configurable: true, writable: true });
  try {
    return await body();
  } finally {
    if (descriptor) Object.defineProperty(globalThis, "crypto", descriptor);
    else delete globalThis.crypto;
  }
}

describe("putting and reading artifacts", () => {
  test("text: its id is the sha256 of its UTF-8 bytes; the same content again is the same artifact", async () => {
    const text = `1. read the code (${RUN})\n2. change it: é ✓ 🎉\n`;
    const put = await client.putArtifact(text, {
      kind: "plan",
      tags: [`${RUN}-text`, "b-tag", "a-tag"],
      sessionId: "sess-artifacts",
      meta: { agent: "coder", n: 1 },
    });
    const bytes = utf8(text);
    assert.equal(put.id, idOf(bytes));
    assert.match(put.id, /^sha256:[0-9a-f]{64}$/);
    const subtle = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    assert.equal(put.id, `sha256:${Buffer.from(subtle).toString("hex")}`);
    assert.equal(put.kind, "plan");
    assert.equal(put.media_type, "text/plain; charset=utf-8");
    assert.equal(put.size_bytes, bytes.length);
    assert.deepEqual(put.tags, [`${RUN}-text`, "a-tag", "b-tag"].sort());
    assert.deepEqual(put.parents, []);
    assert.equal(put.session_id, "sess-artifacts");
    assert.equal(put.task_id, null);
    assert.deepEqual(put.meta, { agent: "coder", n: 1 });
    assert.equal(put.content_url, `/v1/artifacts/${put.id}?raw=1`);
    assert.ok(!Number.isNaN(Date.parse(put.created_at)), put.created_at);

    const again = await client.putArtifact(text, { kind: "summary", tags: ["c-tag"], meta: { other: true } });
    assert.equal(again.id, put.id, "the same bytes are the same artifact");
    assert.equal(again.kind, "plan", "its first kind stays");
    assert.equal(again.created_at, put.created_at);
    assert.deepEqual(again.meta, put.meta, "its first meta stays");
    assert.deepEqual(again.tags, [...put.tags, "c-tag"].sort(), "tags merged");

    assert.deepEqual(await client.getArtifact(put.id), again);
    const read = await client.readArtifact(put.id);
    assert.ok(read instanceof Uint8Array);
    assert.deepEqual(read, bytes);
    assert.equal(new TextDecoder().decode(read), text);
    assert.deepEqual(await client.deleteArtifact(put.id), [put.id]);
    await refused(client.getArtifact(put.id), "NOT_FOUND", 404);
  });

  test("bytes (a Uint8Array, an ArrayBuffer, a view) are sent as base64 and read back exactly", async () => {
    const every = Uint8Array.from({ length: 256 }, (_, i) => i);
    const big = new Uint8Array(randomBytes(100_003)); // past the base64 encoder's 32 KiB chunks
    const ids = [];
    try {
      const put = await client.putArtifact(every, { kind: "x-bytes", tags: [`${RUN}-bytes`] });
      ids.push(put.id);
      assert.equal(put.id, idOf(every));
      assert.equal(put.media_type, "application/octet-stream");
      assert.equal(put.size_bytes, 256);
      assert.deepEqual(await client.readArtifact(put.id), every);

      const large = await client.putArtifact(big.buffer, { kind: "x-bytes", mediaType: "image/png" });
      ids.push(large.id);
      assert.equal(large.id, idOf(big));
      assert.equal(large.media_type, "image/png");
      assert.equal(large.size_bytes, big.length);
      const read = await client.readArtifact(large.id);
      assert.equal(read.length, big.length);
      assert.ok(Buffer.from(read).equals(Buffer.from(big)), "the exact bytes");

      const part = new DataView(big.buffer, 10, 1000); // a view: its own bytes only
      const viewed = await client.putArtifact(part, { kind: "x-bytes" });
      ids.push(viewed.id);
      assert.equal(viewed.id, idOf(big.subarray(10, 1010)));
      assert.equal((await client.putArtifact(Buffer.from(every), { kind: "x-bytes" })).id, put.id, "a Buffer is a Uint8Array");
    } finally {
      for (const id of ids) await client.deleteArtifact(id, { cascade: true });
    }
  });

  test("readArtifact checks the bytes against the id: ParseError on a mismatch; without crypto.subtle too", async () => {
    const text = `checked ${RUN}`;
    const { id } = await client.putArtifact(text, { kind: "text" });
    try {
      const corrupting = new Client({
        baseUrl,
        token,
        fetch: async (url, init) => {
          const response = await fetch(url, init);
          if (!String(url).includes("raw=1")) return response;
          const bytes = new Uint8Array(await response.arrayBuffer());
          bytes[0] ^= 1;
          return new Response(bytes, { status: response.status, headers: response.headers });
        },
      });
      await assert.rejects(corrupting.readArtifact(id), (error) => {
        assert.ok(error instanceof ParseError, String(error));
        assert.equal(error.status, 200);
        assert.match(error.message, /hashes to sha256:[0-9a-f]{64}/);
        return true;
      });
      await withoutSubtle(async () => {
        assert.equal(globalThis.crypto.subtle, undefined);
        assert.equal(new TextDecoder().decode(await client.readArtifact(id)), text, "hashed without crypto.subtle");
        await assert.rejects(corrupting.readArtifact(id), ParseError);
        for (const size of [0, 55, 56, 64, 65_537]) {
          const bytes = new Uint8Array(randomBytes(size));
          const put = await client.putArtifact(bytes, { kind: "x-hashed" });
          assert.deepEqual(await client.readArtifact(put.id), bytes, `${size} bytes`);
          await client.deleteArtifact(put.id);
        }
      });
      const unknown = idOf(utf8(`never put ${RUN}`));
      await refused(client.readArtifact(unknown), "NOT_FOUND", 404);
      await refused(client.getArtifact(unknown), "NOT_FOUND", 404);
    } finally {
      await client.deleteArtifact(id);
    }
  });

  test("a bad put is refused before sending (TypeError) or by the server (INVALID_PARAMS, ARTIFACT_TOO_LARGE)", async () => {
    assert.throws(() => client.putArtifact(42, { kind: "text" }), TypeError);
    assert.throws(() => client.putArtifact("x", {}), TypeError);
    assert.throws(() => client.putArtifact("x", { kind: "text", tags: "one" }), TypeError);
    assert.throws(() => client.putArtifact("x", { kind: "text", parents: "sha256:00" }), TypeError);
    assert.throws(() => client.tagArtifact("sha256:00", { add: "one" }), TypeError);

    const badKind = await refused(client.putArtifact("x", { kind: "novel" }), "INVALID_PARAMS", 400);
    assert.ok(badKind.problems.some((p) => p.startsWith("kind")), badKind.problems);
    const missing = idOf(utf8(`no parent ${RUN}`));
    const orphan = await refused(client.putArtifact("x", { kind: "text", parents: [missing] }), "INVALID_PARAMS", 400);
    assert.ok(orphan.problems.some((p) => p.includes(missing)), orphan.problems);

    const tooLarge = await refused(client.putArtifact("x".repeat(4 * 1024 * 1024 + 1), { kind: "text" }), "ARTIFACT_TOO_LARGE", 413);
    assert.equal(tooLarge.retriable, false);
    assert.ok(tooLarge.details.size_bytes > tooLarge.details.max_artifact_bytes, JSON.stringify(tooLarge.details));
  });
});

describe("listing, lineage, tags, delete", () => {
  test("list by tag, kind and parent, paged; lineage both ways; tags added and removed; delete refused, then cascaded", async () => {
    const tag = `${RUN}-tree`;
    const root = await client.putArtifact(`root ${RUN}`, { kind: "plan", tags: [tag] });
    const child = await client.putArtifact(`child ${RUN}`, { kind: "diff", tags: [tag], parents: [root.id] });
    const grandchild = await client.putArtifact(`grandchild ${RUN}`, { kind: "summary", tags: [tag], parents: [child.id] });
    const other = await client.putArtifact(`other ${RUN}`, { kind: "plan", tags: [`${RUN}-other`], taskId: "t-1" });
    let deleted = false;
    try {
      assert.deepEqual(child.parents, [root.id]);
      const page = await client.listArtifacts({ tag });
      assert.deepEqual(
        page.artifacts.map((a) => a.id),
        [grandchild.id, child.id, root.id],
        "newest first",
      );
      assert.equal(page.next_cursor, null);
      assert.deepEqual(page.artifacts[1], child);

      const ids = [];
      let cursor = null;
      do {
        const one = await client.listArtifacts({ tag, limit: 1, cursor });
        assert.ok(one.artifacts.length <= 1);
        ids.push(...one.artifacts.map((a) => a.id));
        cursor = one.next_cursor;
      } while (cursor !== null);
      assert.deepEqual(ids, [grandchild.id, child.id, root.id], "paged one at a time, none repeated or skipped");

      assert.deepEqual((await client.listArtifacts({ tag, kind: "plan" })).artifacts.map((a) => a.id), [root.id]);
      assert.deepEqual((await client.listArtifacts({ parent: root.id })).artifacts.map((a) => a.id), [child.id]);
      assert.deepEqual((await client.listArtifacts({ taskId: "t-1" })).artifacts.map((a) => a.id), [other.id]);
      assert.deepEqual((await client.listArtifacts({ tag: `${RUN}-none` })).artifacts, []);
      await refused(client.listArtifacts({ limit: 0 }), "INVALID_PARAMS", 400);

      const middle = await client.lineage(child.id);
      assert.equal(middle.id, child.id);
      assert.deepEqual(middle.ancestors, [{ id: root.id, kind: "plan", depth: 1, parents: [] }]);
      assert.deepEqual(middle.descendants, [{ id: grandchild.id, kind: "summary", depth: 1, parents: [child.id] }]);
      assert.equal(middle.truncated, false);
      const leaf = await client.lineage(grandchild.id);
      assert.deepEqual(
        leaf.ancestors.map((n) => [n.id, n.depth]),
        [
          [child.id, 1],
          [root.id, 2],
        ],
      );
      assert.deepEqual(leaf.descendants, []);
      assert.deepEqual(
        (await client.lineage(root.id)).descendants.map((n) => [n.id, n.depth]),
        [
          [child.id, 1],
          [grandchild.id, 2],
        ],
      );

      const tagged = await client.tagArtifact(root.id, { add: ["reviewed", "z-last"], remove: [tag, "never-had"] });
      assert.deepEqual(tagged.tags, ["reviewed", "z-last"]);
      assert.deepEqual((await client.getArtifact(root.id)).tags, ["reviewed", "z-last"]);
      assert.deepEqual((await client.listArtifacts({ tag })).artifacts.map((a) => a.id), [grandchild.id, child.id]);
      assert.deepEqual((await client.tagArtifact(root.id, { remove: ["z-last"] })).tags, ["reviewed"]);

      const conflict = await refused(client.deleteArtifact(root.id), "CONFLICT", 409);
      assert.deepEqual(conflict.details.children, [child.id]);
      assert.equal((await client.getArtifact(root.id)).id, root.id, "still there");
      const gone = await client.deleteArtifact(root.id, { cascade: true });
      deleted = true;
      assert.equal(gone[0], root.id, "the one asked for first");
      assert.deepEqual([...gone].sort(), [root.id, child.id, grandchild.id].sort());
      for (const id of gone) await refused(client.getArtifact(id), "NOT_FOUND", 404);
      await refused(client.lineage(root.id), "NOT_FOUND", 404);
      await refused(client.deleteArtifact(root.id), "NOT_FOUND", 404);
      await refused(client.tagArtifact(root.id, { add: ["x"] }), "NOT_FOUND", 404);
    } finally {
      if (!deleted) await client.deleteArtifact(root.id, { cascade: true }).catch(() => {});
      await client.deleteArtifact(other.id);
    }
  });
});

describe("a task's artifact option", () => {
  test("complete(), chat() and streamChat() keep their text; a kind alone is sent as {kind, tags: []}", async () => {
    const done = await client.complete(`keep me ${RUN}`, { max_tokens: 4, artifact: "summary" });
    assert.match(done.artifact_id, /^sha256:[0-9a-f]{64}$/);
    assert.equal(done.artifact_error, null);
    assert.equal(new TextDecoder().decode(await client.readArtifact(done.artifact_id)), done.text);
    const kept = await client.getArtifact(done.artifact_id);
    assert.equal(kept.kind, "summary");
    assert.equal(kept.task_id, done.task_id);
    assert.equal((await client.status(done.task_id)).artifact_id, done.artifact_id);

    const tag = `${RUN}-chat`;
    const messages = [{ role: "user", content: `a chat to keep ${RUN}` }];
    const chat = await client.chat(messages, { max_tokens: 3, artifact: { kind: "text", tags: [tag] } });
    assert.match(chat.artifact_id, /^sha256:[0-9a-f]{64}$/);
    assert.equal(chat.artifact_error, null);
    assert.equal(chat.artifact_id, idOf(utf8(chat.text)));
    assert.deepEqual((await client.getArtifact(chat.artifact_id)).tags, [tag]);

    const stream = client.streamChat([{ role: "user", content: `streamed ${RUN}` }], { max_tokens: 3, artifact: { kind: "trace" } });
    for await (const _ of stream);
    assert.ok(stream.done);
    assert.equal(stream.artifactId, idOf(utf8(stream.text)));
    assert.equal(stream.artifactError, null);
    assert.equal((await client.getArtifact(stream.artifactId)).kind, "trace");

    const plain = await client.complete(`keep nothing ${RUN}`, { max_tokens: 2 });
    assert.equal(plain.artifact_id, null);
    assert.equal((await client.chat(messages, { max_tokens: 2 })).artifact_id, null);

    assert.throws(() => client.submit({ prompt: "x", artifact: { kind: "text", extra: 1 } }), TypeError);
    assert.throws(() => client.submit({ prompt: "x", artifact: 7 }), TypeError);
    await assert.rejects(client.chat(messages, { artifact: ["text"] }), TypeError);
    assert.throws(() => client.streamChat(messages, { artifact: { tags: [] } }), TypeError);
    await refused(client.submit({ prompt: "x", max_tokens: 1, artifact: "novel" }), "INVALID_PARAMS", 400);

    assert.equal(new Set([done.artifact_id, chat.artifact_id, stream.artifactId]).size, 3, "three texts, three artifacts");
    for (const id of [done.artifact_id, chat.artifact_id, stream.artifactId]) await client.deleteArtifact(id, { cascade: true });
  });
});
