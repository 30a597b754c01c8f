// A webhook receiver for scripts/bench-webhooks: answers every POST 204 at once on a kept-alive
// connection and counts the deliveries, so the rate measured is coffer's, not the receiver's.
// Prints its port on the first line; GET /count answers the count so far.
import http from "node:http";

let count = 0;
const server = http.createServer((request, response) => {
  if (request.method === "GET") {
    response.writeHead(200, { "content-type": "text/plain" });
    response.end(String(count));
    return;
  }
  request.resume();
  request.on("end", () => {
    count++;
    response.writeHead(204);
    response.end();
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
