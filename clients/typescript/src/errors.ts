// The problems coffer answers (RFC 9457 with a `code`), as one error class per family of codes.
import type { components } from "./generated/schema.js";
import type { Code } from "./generated/codes.js";

export type Problem = components["schemas"]["Problem"];
export type BatchItem = components["schemas"]["FailedBatchResult"]["results"][number];

/** A problem answered by the server: `status`, `code` and the whole `problem` body. */
export class CofferError extends Error {
  readonly status: number;
  readonly code: Code | string;
  readonly problem: Partial<Problem>;
  constructor(status: number, problem: Partial<Problem>) {
    super(`${status} ${problem.code ?? "unknown"}: ${problem.detail ?? ""}`);
    this.name = new.target.name;
    this.status = status;
    this.code = problem.code ?? "unknown";
    this.problem = problem;
  }
}
/** 400/405/413: refused before reaching the ledger; nothing was recorded. */
export class MalformedError extends CofferError {}
/** 404: the account, transfer or endpoint does not exist. */
export class NotFoundError extends CofferError {}
/** 422: a missing account or hold, mixed currencies, the same account twice. */
export class UnprocessableError extends CofferError {}
/** id_reused (the id was used with other content) or request_in_progress. */
export class IdempotencyError extends CofferError {}
/** 409: a state conflict (insufficient_balance, version_mismatch, hold_expired, ...). */
export class ConflictError extends CofferError {}
/** 5xx: a service condition; nothing was applied. */
export class UnavailableError extends CofferError {}
/** 401 unauthorized (no valid bearer token) or 403 forbidden (scope, prefixes, Origin, Host). */
export class AuthError extends CofferError {}
/** 409 for an atomic batch that applied nothing: every item's result, the first failure's code. */
export class BatchFailedError extends ConflictError {
  readonly results: BatchItem[];
  constructor(status: number, body: { code: Code; results: BatchItem[] }) {
    super(status, { code: body.code, detail: "the atomic batch failed" });
    this.results = body.results;
  }
}
/** No instance answered within the attempts; `cause` is the last error. */
export class ConnectionFailedError extends Error {}

/** The error for a non-2xx answer. */
export function errorFor(status: number, body: unknown): CofferError {
  const answer = (body ?? {}) as Record<string, unknown>;
  if (status === 409 && Array.isArray(answer.results))
    return new BatchFailedError(status, answer as { code: Code; results: BatchItem[] });
  const problem = answer as Partial<Problem>;
  if (problem.code === "id_reused" || problem.code === "request_in_progress")
    return new IdempotencyError(status, problem);
  if (status === 400 || status === 405 || status === 413) return new MalformedError(status, problem);
  if (status === 404) return new NotFoundError(status, problem);
  if (status === 422) return new UnprocessableError(status, problem);
  if (status === 409) return new ConflictError(status, problem);
  if (status === 401 || status === 403) return new AuthError(status, problem);
  return new UnavailableError(status, problem);
}
