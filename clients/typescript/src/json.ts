// JSON with exact integers. JSON.parse rounds integers beyond 2^53-1 (Node 20 has no reviver
// `context.source`), and coffer's amounts are signed 64-bit: such integer literals are read as
// BigInt, every other number as a number; a bigint in a request body is written as digits.

const MARK = "\u0000bigint:"; // coffer refuses strings with NUL, so none collides with this

/** Parses JSON text; integers beyond Number.MAX_SAFE_INTEGER become bigint. */
export function parseJsonExact(text: string): unknown {
  let marked = "";
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === "\\") i++;
      continue;
    }
    if (c !== "-" && (c < "0" || c > "9")) continue;
    let end = i + 1;
    while (end < text.length && /[0-9.eE+-]/.test(text[end])) end++;
    const literal = text.slice(i, end);
    if (/^-?[0-9]+$/.test(literal) && !Number.isSafeInteger(Number(literal))) {
      marked += text.slice(from, i) + JSON.stringify(MARK + literal);
      from = end;
    }
    i = end - 1;
  }
  marked += text.slice(from);
  return JSON.parse(marked, (_key, value) =>
    typeof value === "string" && value.startsWith(MARK) ? BigInt(value.slice(MARK.length)) : value);
}

/** JSON text of a value that may hold bigints (written as plain integer literals). */
export function stringifyJsonExact(value: unknown): string {
  const text = JSON.stringify(value, (_key, item) =>
    typeof item === "bigint" ? MARK + item.toString() : item);
  return text.replace(/"\\u0000bigint:(-?[0-9]+)"/g, "$1");
}
