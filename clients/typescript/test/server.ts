// Starts a real `coffer serve` for the tests: a free loopback port, a fresh data directory,
// stopped with SIGTERM (by its own pid) at the end. The binary is $COFFER_BINARY or build/coffer.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface RunningServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const port = (probe.address() as { port: number }).port;
      probe.close(() => resolve(port));
    });
  });
}

export async function startServer(): Promise<RunningServer> {
  const binary = process.env.COFFER_BINARY ?? new URL("../../../../build/coffer", import.meta.url).pathname;
  const directory = mkdtempSync(join(tmpdir(), "coffer-ts-"));
  const port = await freePort();
  const child: ChildProcess = spawn(binary, ["serve", "--listen", `127.0.0.1:${port}`,
    "--data", join(directory, "data"), "--fsync", "never"], { stdio: ["ignore", "ignore", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`coffer serve exited with ${child.exitCode}`);
    try {
      if ((await fetch(url + "/readyz")).ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill("SIGKILL"); throw new Error("coffer serve not ready"); }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url, port,
    stop: () => new Promise((resolve) => {
      child.once("exit", () => { rmSync(directory, { recursive: true, force: true }); resolve(); });
      child.kill("SIGTERM");
    }),
  };
}
