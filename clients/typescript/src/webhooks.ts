// Checking a webhook delivery from coffer, as the Standard Webhooks convention signs it: base64
// HMAC-SHA256 with the secret's bytes over "<webhook-id>.<webhook-timestamp>.<body>", a
// timestamp close to now, and a constant-time comparison. Pure: no I/O, the clock injectable.
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Change } from "./feed.js";
import { parseJsonExact } from "./json.js";

/** A delivery that is not from the server: a missing header, a stale timestamp, no matching
 *  signature. */
export class WebhookVerificationError extends Error {
  override name = "WebhookVerificationError";
}

/** A delivery's body: the change as GET /v1/events has it, under `data`. */
export interface WebhookPayload {
  type: string;
  timestamp: string;
  data: Change;
}

export type WebhookHeaders =
  | Headers
  | Record<string, string | string[] | undefined>; // node:http's IncomingMessage.headers

export interface VerifyOptions {
  /** How far webhook-timestamp may be from now, in seconds (default 300). */
  toleranceS?: number;
  /** Now, in Unix seconds (default: the clock). */
  now?: number;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const entry = Object.entries(headers).find(([key]) => key.toLowerCase() === name)?.[1];
  return Array.isArray(entry) ? entry.join(" ") : entry;
}

/**
 * Checks a delivery and returns its parsed payload; throws WebhookVerificationError otherwise.
 * `secret` is "whsec_<base64>"; `body` the raw bytes (or text) as received: parse only after
 * checking. webhook-signature may list several ("v1,<sig> v1,<sig>" while a secret is rotated);
 * one match is enough. A delivery may come more than once: de-duplicate on webhook-id.
 */
export function verifyWebhook(secret: string, headers: WebhookHeaders, body: string | Uint8Array,
  options: VerifyOptions = {}): WebhookPayload {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !timestamp || !signatures) {
    throw new WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature");
  }
  if (!/^[0-9]+$/.test(timestamp)) throw new WebhookVerificationError("webhook-timestamp is not a number of seconds");
  const now = options.now ?? Date.now() / 1000;
  if (Math.abs(now - Number(timestamp)) > (options.toleranceS ?? 300)) {
    throw new WebhookVerificationError("webhook-timestamp is too far from now");
  }
  if (!secret.startsWith("whsec_")) throw new TypeError("a webhook secret starts with whsec_");
  const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
  const digest = createHmac("sha256", Buffer.from(secret.slice("whsec_".length), "base64"))
    .update(`${id}.${timestamp}.`).update(bytes).digest("base64");
  const expected = Buffer.from(digest);
  for (const signature of signatures.split(" ")) {
    const [version, value] = signature.split(",", 2);
    if (version !== "v1" || value === undefined) continue;
    const given = Buffer.from(value);
    if (given.length === expected.length && timingSafeEqual(given, expected)) {
      return parseJsonExact(bytes.toString("utf8")) as WebhookPayload;
    }
  }
  throw new WebhookVerificationError("no matching signature");
}
