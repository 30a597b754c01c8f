// @coffer/client: coffer's HTTP API typed from docs/openapi.yaml (openapi-typescript +
// openapi-fetch), with exact int64 numbers, retries under one idempotency key, leader redirects,
// failover across base URLs, and problems thrown as typed errors.
import { randomUUID } from "node:crypto";
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./generated/schema.js";
import { parseJsonExact, stringifyJsonExact } from "./json.js";
import { ConnectionFailedError, errorFor } from "./errors.js";
import type { Change, EventsPage, EventsQuery, Webhook, WebhookCreate } from "./feed.js";

export * from "./errors.js";
export * from "./webhooks.js";
export type * from "./feed.js";
export { CODES, type Code } from "./generated/codes.js";
export { parseJsonExact, stringifyJsonExact } from "./json.js";
export type { components, paths };

type Schemas = components["schemas"];
export type Account = Schemas["Account"];
export type TransferResult = Schemas["TransferResult"];
export type TransferRequest = Schemas["TransferRequest"];
export type BatchItemRequest = Schemas["BatchRequest"]["transfers"][number];

export interface CofferClientOptions {
  /** One base URL or several (a cluster's instances), tried in turn. */
  baseUrls: string | string[];
  /** Tries per request (default 6). */
  attempts?: number;
  /** First backoff in ms, doubled per retry up to backoffMaxMs (defaults 50, 2000). */
  backoffMs?: number;
  backoffMaxMs?: number;
}

// Service codes after which the same request may succeed later or on another instance.
const RETRYABLE = new Set(["overloaded", "shutting_down", "no_leader"]);
// openapi-fetch builds URLs on this origin; each attempt puts the instance's base URL instead.
const PLACEHOLDER = "http://coffer.invalid";

/** A Response whose json() keeps integers beyond 2^53-1 exact (as bigint). */
class ExactResponse extends Response {
  override async json(): Promise<unknown> {
    return parseJsonExact(await this.text());
  }
}

export class CofferClient {
  /** The openapi-fetch client, typed by the spec, with this client's retries underneath. */
  readonly api: Client<paths>;
  readonly baseUrls: string[];
  private current = 0;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly backoffMaxMs: number;

  constructor(options: CofferClientOptions) {
    const urls = typeof options.baseUrls === "string" ? [options.baseUrls] : [...options.baseUrls];
    if (urls.length === 0) throw new Error("at least one base URL");
    this.baseUrls = urls.map((url) => url.replace(/\/+$/, ""));
    this.attempts = options.attempts ?? 6;
    this.backoffMs = options.backoffMs ?? 50;
    this.backoffMaxMs = options.backoffMaxMs ?? 2000;
    this.api = createClient<paths>({
      baseUrl: PLACEHOLDER,
      fetch: (request: Request) => this.send(request),
      bodySerializer: stringifyJsonExact,
    });
  }

  /** The base URL requests go to now (the leader, once a 307 named it). */
  get baseUrl(): string {
    return this.baseUrls[this.current];
  }

  // -- the API, throwing typed errors

  createAccount(body: Schemas["AccountCreate"]): Promise<Account> {
    return this.unwrap(this.api.POST("/v1/accounts", { body })) as Promise<Account>;
  }

  getAccount(id: string, at?: string | number): Promise<Account> {
    const query = at === undefined ? {} : { at: String(at) };
    return this.unwrap(this.api.GET("/v1/accounts/{id}", { params: { path: { id }, query } }));
  }

  history(id: string, query: { after?: number; limit?: number } = {}) {
    return this.unwrap(this.api.GET("/v1/accounts/{id}/history", { params: { path: { id }, query } }));
  }

  /** One transfer; without an id it gets a fresh one, kept by every retry. */
  transfer(body: TransferRequest): Promise<TransferResult> {
    const withId = { ...body, id: body.id ?? randomUUID() };
    return this.unwrap(this.api.POST("/v1/transfers", { body: withId })) as Promise<TransferResult>;
  }

  /** A batch; items without an id get one. A failed atomic batch throws BatchFailedError. */
  batch(transfers: BatchItemRequest[], atomic = false): Promise<Schemas["BatchResult"]> {
    const items = transfers.map((item) => ({ ...item, id: item.id ?? randomUUID() }));
    return this.unwrap(this.api.POST("/v1/transfers", { body: { atomic, transfers: items } })) as
      Promise<Schemas["BatchResult"]>;
  }

  postHold(holdId: string, body: Schemas["PostRequest"] = {}): Promise<TransferResult> {
    return this.unwrap(this.api.POST("/v1/holds/{id}/post", {
      params: { path: { id: holdId } }, body: { ...body, id: body.id ?? randomUUID() } }));
  }

  voidHold(holdId: string, body: Schemas["VoidRequest"] = {}): Promise<TransferResult> {
    return this.unwrap(this.api.POST("/v1/holds/{id}/void", {
      params: { path: { id: holdId } }, body: { ...body, id: body.id ?? randomUUID() } }));
  }

  getTransfer(id: string): Promise<Schemas["Transfer"]> {
    return this.unwrap(this.api.GET("/v1/transfers/{id}", { params: { path: { id } } }));
  }

  holds(query: { account?: string; limit?: number } = {}): Promise<Schemas["HoldList"]> {
    return this.unwrap(this.api.GET("/v1/holds", { params: { query } }));
  }

  verify(): Promise<Schemas["VerifyReport"]> {
    return this.unwrap(this.api.GET("/v1/verify", {}));
  }

  // -- the change feed

  /** One page of changes after `query.after`, oldest first. */
  events(query: EventsQuery = {}): Promise<EventsPage> {
    const parameters: Record<string, string> = { after: String(query.after ?? 0) };
    if (query.limit !== undefined) parameters.limit = String(query.limit);
    if (query.types !== undefined) parameters.types = query.types.join(",");
    if (query.account !== undefined) parameters.account = query.account;
    if (query.waitMs !== undefined) parameters.wait_ms = String(query.waitMs);
    return this.call("GET", "/v1/events?" + new URLSearchParams(parameters)) as Promise<EventsPage>;
  }

  /** Every change after `query.after`, each once and in seq order, long-polling (waitMs,
   *  default 25000) when there is none. After a ConnectionFailedError, start again after the
   *  last seq seen. */
  async *follow(query: EventsQuery = {}): AsyncGenerator<Change> {
    let after = query.after ?? 0;
    for (;;) {
      const page = await this.events({ ...query, after, waitMs: query.waitMs ?? 25_000 });
      yield* page.events;
      after = page.next_after;
    }
  }

  // -- webhooks (an admin token's calls)

  /** Registers a webhook; its answer carries the secret, and only this answer does. */
  createWebhook(body: WebhookCreate): Promise<Webhook> {
    return this.call("POST", "/v1/webhooks", body) as Promise<Webhook>;
  }

  async webhooks(): Promise<Webhook[]> {
    return ((await this.call("GET", "/v1/webhooks")) as { webhooks: Webhook[] }).webhooks;
  }

  getWebhook(id: string): Promise<Webhook> {
    return this.call("GET", "/v1/webhooks/" + encodeURIComponent(id)) as Promise<Webhook>;
  }

  async deleteWebhook(id: string): Promise<void> {
    await this.call("DELETE", "/v1/webhooks/" + encodeURIComponent(id));
  }

  /** Resumes a failing webhook from its cursor. */
  enableWebhook(id: string): Promise<Webhook> {
    return this.call("POST", `/v1/webhooks/${encodeURIComponent(id)}/enable`, {}) as Promise<Webhook>;
  }

  /** A request outside the generated paths, with the same retries; throws typed errors. */
  private async call(method: string, target: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await this.send(new Request(PLACEHOLDER + target, {
      method, headers, body: body === undefined ? undefined : stringifyJsonExact(body) }));
    const text = await response.text();
    const answer = text ? parseJsonExact(text) : undefined;
    if (!response.ok) throw errorFor(response.status, answer ?? {});
    return answer;
  }

  private async unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
    const { data, error, response } = await call;
    if (!response.ok) throw errorFor(response.status, error);
    return data as T;
  }

  // -- one request, with retries and redirects

  /** Sends a request built by openapi-fetch: the same bytes (and so the same id) every try. */
  private async send(request: Request): Promise<Response> {
    const body = request.body ? await request.arrayBuffer() : undefined;
    const target = request.url.slice(PLACEHOLDER.length);
    let lastError: unknown;
    let waitMs: number | undefined;
    let redirected: string | undefined;
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      if (attempt > 0) await this.pause(attempt, waitMs);
      waitMs = undefined;
      const base = redirected ?? this.baseUrl;
      redirected = undefined;
      let response: Response;
      try {
        response = await fetch(base + target, {
          method: request.method, headers: request.headers, body, redirect: "manual" });
      } catch (error) {
        lastError = error;
        this.next();
        continue;
      }
      const location = response.headers.get("location");
      if (response.status === 307 && location) {
        await response.body?.cancel();
        redirected = this.followRedirect(location, target);
        continue;
      }
      const text = await response.text();
      // A 204 (DELETE) may not carry a body, not even an empty one.
      const answer = new ExactResponse(text === "" ? null : text,
        { status: response.status, headers: response.headers });
      if (response.status !== 503) return answer;
      const code = (parseJsonExact(text || "{}") as { code?: string }).code ?? "";
      if (!RETRYABLE.has(code)) return answer;
      lastError = errorFor(503, parseJsonExact(text));
      waitMs = Number(response.headers.get("retry-after") ?? "NaN") * 1000;
      if (code !== "overloaded") this.next();
    }
    if (lastError instanceof Error && "status" in lastError) throw lastError;
    throw new ConnectionFailedError(
      `no answer from ${this.baseUrls.join(", ")} after ${this.attempts} attempts`, { cause: lastError });
  }

  /** The base URL of a 307's Location, used from now on. */
  private followRedirect(location: string, target: string): string {
    const base = (location.endsWith(target) ? location.slice(0, -target.length) : location)
      .replace(/\/+$/, "");
    if (!this.baseUrls.includes(base)) this.baseUrls.push(base);
    this.current = this.baseUrls.indexOf(base);
    return base;
  }

  private next(): void {
    this.current = (this.current + 1) % this.baseUrls.length;
  }

  private pause(attempt: number, waitMs?: number): Promise<void> {
    const backoff = Math.min(this.backoffMaxMs, this.backoffMs * 2 ** (attempt - 1)) *
      (0.5 + Math.random() / 2); // jitter: the retries of many clients spread out
    const ms = waitMs !== undefined && Number.isFinite(waitMs) ? Math.max(backoff, waitMs) : backoff;
    return new Promise((resolve) => setTimeout(resolve, ms));
  }
}
