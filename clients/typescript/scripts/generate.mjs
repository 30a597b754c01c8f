// Generates src/generated/ before every build: schema.ts, the types of docs/openapi.yaml by
// openapi-typescript (int64 fields typed `number | bigint`, as the client parses them exactly),
// and codes.ts, the code table of include/coffer.h (COFFER_CODE_MAP), so neither is copied by hand.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const root = new URL("../../../", import.meta.url);
const out = new URL("../src/generated/", import.meta.url);
mkdirSync(out, { recursive: true });

const NUMBER = ts.factory.createKeywordTypeNode(ts.SyntaxKind.NumberKeyword);
const BIGINT = ts.factory.createKeywordTypeNode(ts.SyntaxKind.BigIntKeyword);
const NULL = ts.factory.createLiteralTypeNode(ts.factory.createNull());

const ast = await openapiTS(new URL("docs/openapi.yaml", root), {
  transform(schema) {
    if (schema.format !== "int64") return undefined;
    const nullable = Array.isArray(schema.type) && schema.type.includes("null");
    return ts.factory.createUnionTypeNode(nullable ? [NUMBER, BIGINT, NULL] : [NUMBER, BIGINT]);
  },
});
writeFileSync(new URL("schema.ts", out),
  "// Generated from docs/openapi.yaml by scripts/generate.mjs; do not edit.\n" + astToString(ast));

const header = readFileSync(new URL("include/coffer.h", root), "utf8");
const table = header
  .slice(header.indexOf("#define COFFER_CODE_MAP"), header.indexOf("enum coffer_code"))
  .replace(/\\\n/g, " "); // the macro's line continuations
const rows = [...table.matchAll(/X\(\s*\w+,\s*(\w+),\s*(\d+),\s*(\d+),\s*"((?:[^"\\]|\\.)*)"/g)];
if (rows.length < 20) throw new Error("COFFER_CODE_MAP not found in include/coffer.h");
const lines = rows.map(([, name, value, status, message]) =>
  `  ${name}: { value: ${value}, status: ${status}, message: "${message}" },`);
writeFileSync(new URL("codes.ts", out), [
  "// Generated from COFFER_CODE_MAP in include/coffer.h by scripts/generate.mjs; do not edit.",
  "export const CODES = {", ...lines, "} as const;",
  "export type Code = keyof typeof CODES;", ""].join("\n"));
