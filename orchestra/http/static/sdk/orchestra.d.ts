// Types of orchestra's JavaScript client (orchestra.js, served at /sdk/orchestra.js).
// Values from the wire keep the wire's field names (snake_case, as in specs/openapi/*.yaml);
// the SDK's own options and error fields are camelCase.

export const VERSION: string;
/** The cookie a task's stream takes the token from (EventSource sends no header). */
export const STREAM_COOKIE: "orchestra_token";

export type ErrorCode =
  | "INVALID_PARAMS"
  | "CTX_LIMIT_EXCEEDED"
  | "UNAUTHORIZED"
  | "FORBIDDEN"
  | "NOT_FOUND"
  | "CONFLICT"
  | "ADMISSION_REJECT"
  | "BUDGET_EXCEEDED"
  | "POOL_UNREADY"
  | "POOL_UNAVAILABLE"
  | "MODEL_LOAD_FAILED"
  | "MODEL_TOO_LARGE"
  | "DEADLINE_UNMET"
  | "DECODE_TIMEOUT"
  | "WORKER_RESET"
  | "CANCELLED"
  | "ARTIFACT_TOO_LARGE"
  | "STORAGE_FULL"
  | "TOOL_FAILED"
  | "TOOL_TIMEOUT"
  | "INTERNAL"
  | (string & {});

export class OrchestraError extends Error {}

/** No answer came back: the connection failed, broke, or timed out. */
export class TransportError extends OrchestraError {
  constructor(message: string, options?: { cause?: unknown });
}

/** An answer outside the contract. */
export class ParseError extends OrchestraError {
  status: number | null;
}

/** The server's error envelope (or a stream's error event, with status null). */
export class ServerError extends OrchestraError {
  code: ErrorCode;
  status: number | null;
  retriable: boolean;
  retryAfterMs: number | null;
  correlationId: string | null;
  policyLabel: string | null;
  problems: string[];
  details: Record<string, unknown> | null;
  /** The OpenAI face's INVALID_PARAMS: the field its first problem names. */
  param: string | null;
}

/** 429 ADMISSION_REJECT: come back after retryAfterMs. */
export class QueueFull extends ServerError {}
/** 429 BUDGET_EXCEEDED: the session's budget is spent; not retriable. */
export class BudgetExceeded extends ServerError {}
/** The task ended with an error event / error chunk; `text` is what came before it. */
export class TaskFailed extends ServerError {
  taskId: string;
  text: string;
}

export interface RetryOptions {
  /** Tries in all, the first included (4). */
  attempts?: number;
  /** The first wait when the server advised none, doubled each time (250). */
  backoffMs?: number;
  /** The longest wait; a longer advised wait is not made: the error is thrown (30000). */
  maxWaitMs?: number;
}

export interface ClientOptions {
  /** Default: the page's origin in a browser, else http://127.0.0.1:8080. */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string | null;
  /** Retry 429/503 (and no answer) after the advised delay; off unless given. */
  retry?: boolean | RetryOptions;
  /** Per plain call, until the answer's headers (30000). */
  timeoutMs?: number;
  /** Failed reconnections in a row before a stream throws TransportError (5). */
  resumeAttempts?: number;
  /** Silence after which a stream counts as dropped and is resumed (45000). */
  idleMs?: number;
  /** A fetch to use instead of globalThis.fetch. */
  fetch?: typeof fetch;
  /** Sent with every request. */
  headers?: Record<string, string>;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface TaskRequest {
  prompt: string;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string[];
  priority?: "interactive" | "batch";
  deadline_ms?: number;
  determinism?: "strict" | "best_effort";
  task_id?: string;
  session_id?: string;
  model_ref?: string;
  metrics?: boolean;
  /** Keep the text as an artifact once the task completes: a kind alone, or {kind, tags}. */
  artifact?: string | KeepArtifact | null;
  [field: string]: unknown;
}

/** A task's `artifact` option on the wire (a kind alone is sent as {kind, tags: []}). */
export interface KeepArtifact {
  /** `plan`, `summary`, `diff`, `trace`, `text`, or a name of your own starting with `x-`. */
  kind: string;
  tags?: string[];
}

export interface TaskHandle {
  task_id: string;
  queue_position: number;
  predicted_start_ms: number;
  stream_url: string;
  [field: string]: unknown;
}

export type TaskState = "queued" | "running" | "completed" | "cancelled" | "failed";

/** One task as GET /v1/tasks lists it (no prompt, no text). */
export interface TaskSummary {
  task_id: string;
  pool: string;
  state: TaskState | (string & {});
  priority: "interactive" | "batch" | (string & {});
  queue_position: number | null;
  predicted_start_ms: number | null;
  tokens_out: number;
  max_tokens: number;
  replica: string | null;
  attempts: number;
  age_ms: number;
  run_ms: number | null;
  ended_ms_ago: number | null;
  error_code: ErrorCode | null;
  error_message: string | null;
  session_id: string | null;
  face: "v1" | "openai" | (string & {});
}

/** One pool's replicas as GET /v1/replicasets shows them. */
export interface ReplicaSet {
  id: string;
  pool_id: string;
  state: string;
  slo: { window_s: number; tasks: number; ttft_ms_p50: number | null; ttft_ms_p95: number | null; tokens_per_s: number | null };
  /** Tokens the pool sent since orchestra started (its rate: the live tokens/s). */
  tokens_out_total: number;
  replicas: Json[];
}

/** POST /v1/pools/{pool}/drain's answer, once the drain is complete. */
export interface DrainResult {
  pool_id: string;
  state: "drained";
  /** Tasks running when the drain began that ended on their own. */
  finished: number;
  /** Running tasks that had sent tokens at the deadline (ended CANCELLED, retriable). */
  cancelled: number;
  /** Running tasks that had sent no token at the deadline: back at the head of the line. */
  requeued: number;
  /** Tasks still waiting; they stay queued until resume. */
  queued: number;
  waited_ms: number;
  [field: string]: unknown;
}

/** POST /v1/pools/{pool}/resume's answer: the pool's state now. */
export interface ResumeResult {
  pool_id: string;
  state: string;
  [field: string]: unknown;
}

export interface TaskStatus {
  task_id: string;
  state: TaskState | (string & {});
  queue_position: number | null;
  predicted_start_ms: number | null;
  tokens_out: number;
  attempts: number;
  error_code: ErrorCode | null;
  [field: string]: unknown;
}

/** What a session may still spend; null where there is no such limit. */
export interface BudgetLeft {
  tokens: number | null;
  cost: number | null;
  wall_ms: number | null;
}

/** GET /v1/sessions/{id}: a snapshot of one session. */
export interface SessionStatus {
  session_id: string;
  /** The engine slot its turns are pinned to. */
  slot: number;
  /** The replica whose engine holds that slot (`<model>/<index>`; empty before it reported). */
  replica: string;
  /** Tasks admitted in it (the one in progress included). */
  turns: number;
  max_turns: number;
  tokens_in: number;
  tokens_out: number;
  cached_tokens: number;
  wall_ms: number;
  cost: number;
  budget_left: BudgetLeft;
  /** Until it expires if no task comes; null while a task is in progress. */
  ttl_left_ms: number | null;
  kv_warm: boolean;
  /** Its task in progress, if any. */
  task_id: string | null;
  [field: string]: unknown;
}

/** DELETE /v1/sessions/{id}: the session as it was when deleted. */
export interface DeletedSession extends SessionStatus {
  deleted: true;
  /** Whether the engine erased the session's slot cache. */
  kv_erased: boolean;
}

/** POST /v1/embeddings, read: one vector per input, in the order of the inputs. */
export interface Embeddings {
  vectors: number[][];
  /** The model that computed them. */
  model: string;
  /** Tokens of the inputs, in all. */
  prompt_tokens: number;
  /** X-Task-Id: the task that computed them. */
  task_id: string | null;
}

/** An artifact's metadata (a put's, a retag's, a listing entry's answer). */
export interface Artifact {
  /** `sha256:` and the lowercase hex SHA-256 of the content. */
  id: string;
  kind: string;
  /** `text/plain; charset=utf-8` for text, `application/octet-stream` for bytes, unless given. */
  media_type: string;
  size_bytes: number;
  /** When this content was first kept (RFC 3339, UTC). */
  created_at: string;
  /** Sorted, without repeats. */
  tags: string[];
  /** The ids of the artifacts it was made from, sorted. */
  parents: string[];
  session_id: string | null;
  task_id: string | null;
  meta: Json;
  /** Where its raw content is (`/v1/artifacts/{id}?raw=1`). */
  content_url: string;
}

/** One page of listArtifacts(), newest first. */
export interface ArtifactPage {
  artifacts: Artifact[];
  /** Pass as `cursor` for the next page; null: this is the last. */
  next_cursor: string | null;
}

/** An artifact met walking the parent links from another. */
export interface LineageNode {
  id: string;
  kind: string;
  /** 1 for a direct parent (or child), 2 for theirs, and so on. */
  depth: number;
  parents: string[];
}

/** GET /v1/artifacts/{id}/lineage: each list nearest first. */
export interface Lineage {
  id: string;
  ancestors: LineageNode[];
  descendants: LineageNode[];
  /** The server stopped at its node limit before reaching the ends. */
  truncated: boolean;
}

export interface PutArtifactOptions extends CallOptions {
  /** `plan`, `summary`, `diff`, `trace`, `text`, or a name starting with `x-`. */
  kind: string;
  mediaType?: string | null;
  tags?: string[];
  /** Ids of artifacts it was made from; each must exist. */
  parents?: string[];
  sessionId?: string | null;
  taskId?: string | null;
  /** A JSON object of your own (at most 16 KiB encoded). */
  meta?: Json | null;
}

export interface ListArtifactsOptions extends CallOptions {
  kind?: string | null;
  /** Those with this tag. */
  tag?: string | null;
  sessionId?: string | null;
  taskId?: string | null;
  /** Those made from this artifact. */
  parent?: string | null;
  /** 1 to 200 (server default 50). */
  limit?: number | null;
  /** The previous page's next_cursor. */
  cursor?: string | null;
}

export interface CancelResult {
  task_id: string;
  state: string;
  [field: string]: unknown;
}

export type Json = Record<string, unknown>;

export interface CatalogModel {
  id: string;
  object: "model";
  created: number;
  owned_by: string;
  loaded: boolean;
  [field: string]: unknown;
}

export interface StartedEvent {
  kind: "started";
  id: number;
  queue_position: number;
  predicted_start_ms: number;
  queue_wait_ms: number;
}
export interface TokenEvent {
  kind: "token";
  id: number;
  /** The wire's `t`. */
  text: string;
  /** The wire's `i`: this piece's index among the task's tokens, from 0. */
  index: number;
}
export interface MetricsEvent {
  kind: "metrics";
  id: number;
  queue_depth?: number;
  tokens_per_s?: number;
  on_time_probability?: number | null;
  [field: string]: unknown;
}
export interface ToolCallEvent {
  kind: "tool_call";
  id: number;
  index: number;
  arguments: string;
  name?: string;
  [field: string]: unknown;
}
export interface EndEvent {
  kind: "end";
  id: number;
  tokens_out: number;
  decode_time_ms: number;
  finish_reason?: string | null;
  tokens_in?: number | null;
  cached_tokens?: number;
  artifact_id?: string | null;
  artifact_error?: string | null;
}
export interface ErrorEvent {
  kind: "error";
  id: number;
  code: ErrorCode;
  retriable: boolean;
  retry_after_ms?: number | null;
  message?: string | null;
}
export type TaskEvent = StartedEvent | TokenEvent | MetricsEvent | ToolCallEvent | EndEvent | ErrorEvent;

export interface StreamOptions extends CallOptions {
  /** Only events after this id. */
  lastEventId?: number | null;
}

export interface Completion {
  task_id: string;
  text: string;
  tokens_out: number;
  queue_wait_ms: number;
  decode_time_ms: number;
  total_ms: number;
  finish_reason: string | null;
  artifact_id: string | null;
  artifact_error: string | null;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool" | (string & {});
  content: string | null | Json[];
  name?: string;
  tool_calls?: Json[];
  tool_call_id?: string;
}

export interface ChatCompletion {
  task_id: string | null;
  id: string;
  model: string;
  text: string;
  finish_reason: string | null;
  tool_calls: Json[];
  usage: Json | null;
  /** The assistant message, to append to the conversation. */
  message: ChatMessage;
  correlation_id: string | null;
  /** The artifact the text was kept as (a chat with `artifact`). */
  artifact_id: string | null;
  /** Why the text could not be kept as the artifact asked for. */
  artifact_error: string | null;
  /** OpenAI's whole answer. */
  raw: Json;
}

export interface ChatDelta {
  content: string;
  tool_calls: Json[];
  finish_reason: string | null;
  usage: Json | null;
}

export class ChatStream implements AsyncIterable<ChatDelta> {
  /** X-Task-Id, once the answer began (null before). */
  taskId: string | null;
  correlationId: string | null;
  /** The text so far. */
  text: string;
  /** True once [DONE] was read. */
  done: boolean;
  /** The artifact the text was kept as (a chat with `artifact`), once the last chunk came. */
  artifactId: string | null;
  /** Why the text could not be kept as the artifact asked for. */
  artifactError: string | null;
  /** Close the HTTP stream: the server cancels the task. */
  close(): void;
  [Symbol.asyncIterator](): AsyncGenerator<ChatDelta, void, undefined>;
}

export class Client {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;
  /** Sent as `Authorization: Bearer`; useStreamCookie() puts it in the stream cookie. */
  token: string | null;
  retry: Required<RetryOptions> | null;
  timeoutMs: number;
  resumeAttempts: number;
  idleMs: number;
  headers: Record<string, string>;
  capabilities(options?: CallOptions): Promise<Json>;
  health(pool?: string, options?: CallOptions): Promise<Json>;
  models(options?: CallOptions): Promise<CatalogModel[]>;
  submit(request: TaskRequest, options?: CallOptions): Promise<TaskHandle>;
  status(taskId: string, options?: CallOptions): Promise<TaskStatus>;
  cancel(taskId: string, options?: CallOptions): Promise<CancelResult>;
  session(sessionId: string, options?: CallOptions): Promise<SessionStatus>;
  deleteSession(sessionId: string, options?: CallOptions): Promise<DeletedSession>;
  tasks(
    options?: CallOptions & { state?: TaskState | TaskState[]; pool?: string; limit?: number },
  ): Promise<TaskSummary[]>;
  replicaSets(options?: CallOptions): Promise<ReplicaSet[]>;
  drain(pool?: string, options?: CallOptions & { deadlineMs?: number; timeoutMs?: number }): Promise<DrainResult>;
  resume(pool?: string, options?: CallOptions): Promise<ResumeResult>;
  streamUrl(taskId: string): string;
  useStreamCookie(): void;
  loadModel(modelId: string, options?: CallOptions & { timeoutMs?: number }): Promise<CatalogModel>;
  unloadModel(
    modelId: string,
    options?: CallOptions & { force?: boolean; timeoutMs?: number },
  ): Promise<CatalogModel & { cancelled: number }>;
  embed(
    input: string | string[],
    options?: CallOptions & { model?: string | null; timeoutMs?: number },
  ): Promise<Embeddings>;
  stream(taskId: string, options?: StreamOptions): AsyncGenerator<TaskEvent, void, undefined>;
  complete(
    prompt: string,
    params?: Omit<TaskRequest, "prompt">,
    options?: CallOptions,
  ): Promise<Completion>;
  putArtifact(content: string | Uint8Array | ArrayBuffer | ArrayBufferView, options: PutArtifactOptions): Promise<Artifact>;
  getArtifact(artifactId: string, options?: CallOptions): Promise<Artifact>;
  /** The raw bytes, checked against the id (ParseError when their SHA-256 differs). */
  readArtifact(artifactId: string, options?: CallOptions): Promise<Uint8Array>;
  listArtifacts(options?: ListArtifactsOptions): Promise<ArtifactPage>;
  lineage(artifactId: string, options?: CallOptions): Promise<Lineage>;
  tagArtifact(artifactId: string, options?: CallOptions & { add?: string[]; remove?: string[] }): Promise<Artifact>;
  /** The ids deleted, artifactId first. */
  deleteArtifact(artifactId: string, options?: CallOptions & { cascade?: boolean }): Promise<string[]>;
  chat(messages: ChatMessage[], params?: Json, options?: CallOptions & { timeoutMs?: number }): Promise<ChatCompletion>;
  streamChat(messages: ChatMessage[], params?: Json, options?: CallOptions): ChatStream;
}
