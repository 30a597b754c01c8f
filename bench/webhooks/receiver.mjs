// A webhook receiver for scripts/bench-webhooks: parses every POST as a receiver would, answers
// 204 at once on a kept-alive connection and counts the changes (one per POST, or the length of
// a batch's "changes"), so the rate measured is coffer's, not the receiver's.
// Prints its port on the first line; GET /count answers the count so far.
import http from "node:http";

let count = 0;
const server = http.createServer((request, response) => {
  if (request.method === "GET") {
    response.writeHead(200, { "content-type": "text/plain" });
    response.end(String(count));
    return;
  }
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    count += body.type === "batch" ? body.data.changes.length : 1;
    response.writeHead(204);
    response.end();
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
