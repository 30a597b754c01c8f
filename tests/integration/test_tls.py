"""TLS: `coffer serve --tls-cert --tls-key` with a throwaway self-signed certificate made here
(openssl), reached by curl, the CLI and `coffer bench --server https://` with --cacert; plain
HTTP to the TLS port gets no HTTP answer; a certificate that is not trusted, and flags or files
that are wrong, are refused."""

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from harness import SLOW, Server, coffer_binary, uid


def run(args, env=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=30 * SLOW, env=env)


def make_certificate(directory, name, subject_alt_name=True):
    """A self-signed EC certificate for localhost and 127.0.0.1; (certificate, key) paths."""
    certificate = os.path.join(directory, name + "-cert.pem")
    key = os.path.join(directory, name + "-key.pem")
    args = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-keyout", key, "-out", certificate]
    if subject_alt_name:
        args += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    made = run(args)
    assert made.returncode == 0, made.stderr
    return certificate, key


def client_environment():
    """The environment without the CLI's own variables, so only the flags given count."""
    env = dict(os.environ)
    for name in ("COFFER_SERVER", "COFFER_CACERT", "COFFER_TOKEN"):
        env.pop(name, None)
    return env


class TlsServer(Server):
    """A Server whose readiness is asked over HTTPS, trusting only `certificate`."""

    def __init__(self, certificate, key, **kw):
        super().__init__(args=["--tls-cert", certificate, "--tls-key", key], **kw)
        self.context = ssl.create_default_context(cafile=certificate)

    def connection(self, timeout):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.context)


class Tls(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="coffer-tls-")
        cls.certificate, cls.key = make_certificate(cls.tmp, "server")
        cls.server = TlsServer(cls.certificate, cls.key, fsync="never").start()
        cls.url = "https://127.0.0.1:%d" % cls.server.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def coffer(self, *args, env=None):
        return run([coffer_binary()] + list(args), env=env or client_environment())

    def test_the_printed_url_and_start_line_say_https(self):
        log = self.server.stderr()
        self.assertIn("%s\n" % self.url, log)  # stdout: the URL line
        self.assertIn("coffer: serving on %s with data in" % self.url, log)

    def test_curl_with_cacert_reads_and_writes(self):
        account = uid("tls")
        created = run(["curl", "-sS", "--cacert", self.certificate, "-w", "\n%{http_code}",
                       "-H", "Content-Type: application/json",
                       "-d", json.dumps({"id": account, "currency": "KRW"}),
                       self.url + "/v1/accounts"])
        self.assertEqual(created.returncode, 0, created.stderr)
        body, status = created.stdout.rsplit("\n", 1)
        self.assertEqual(status, "201", body)
        self.assertEqual(json.loads(body)["id"], account)
        read = run(["curl", "-sS", "--cacert", self.certificate,
                    "%s/v1/accounts/%s" % (self.url, account)])
        self.assertEqual(read.returncode, 0, read.stderr)
        self.assertEqual(json.loads(read.stdout)["currency"], "KRW")

    def test_curl_without_cacert_refuses_the_certificate(self):
        refused = run(["curl", "-sS", self.url + "/healthz"])
        self.assertEqual(refused.returncode, 60, refused.stderr)  # peer certificate not trusted

    def test_plain_http_to_the_tls_port_gets_no_http_answer(self):
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            received = b""
            try:
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    received += chunk
            except ConnectionResetError:
                pass
        self.assertFalse(received.startswith(b"HTTP/"), received[:200])

    def exchange_raw(self, data):
        """Raw bytes over TLS on a fresh connection; everything the server sent until it closed."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=10 * SLOW) as raw:
            with self.server.context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(data)
                received = b""
                try:
                    while chunk := sock.recv(65536):
                        received += chunk
                except (ConnectionResetError, ssl.SSLError):
                    pass
        return received

    def test_framing_is_scanned_inside_tls_too(self):
        # The scanner reads a TLS connection's bytes as they are decrypted: what libmicrohttpd
        # alone would answer twice, in HTML, or not at all is one problem+json answer here too.
        host = b"Host: 127.0.0.1\r\n"
        cases = ((b"POST /v1/accounts HTTP/1.1\r\n" + host + b"Content-Length: -1\r\n\r\n",
                  b"400", b"not a number of bytes"),
                 (b"GET /healthz HTTP/1.1\r\n" + host +
                  b"".join(b"X%d: v\r\n" % i for i in range(2000)) + b"\r\n",
                  b"431", b"256 header lines"),
                 (b"POST /v1/accounts HTTP/1.1\r\n" + host +
                  b"Transfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n",
                  b"400", b"bare LF"),
                 (b"GET /healthz HTTP/1.1\r\n" + host + b"\r\n" +
                  b"GET /healthz HTTP/1.1\r\n" + host + b"X: a\0\n\r\n", b"200", b"NUL"))
        for data, status, said in cases:
            received = self.exchange_raw(data)
            self.assertTrue(received.startswith(b"HTTP/1.1 " + status), received[:300])
            self.assertIn(b"application/problem+json", received)
            self.assertIn(said, received)
            answers = re.findall(rb"HTTP/1\.1 (\d+) ", received)
            self.assertEqual(answers[-1], b"400" if status == b"200" else status, received[:300])
            self.assertEqual(len(answers), 2 if status == b"200" else 1, received[:300])

    def test_cli_with_cacert(self):
        account = uid("cli")
        created = self.coffer("--server", self.url, "--cacert", self.certificate, "--json",
                              "account", "create", account, "--currency", "KRW")
        self.assertEqual(created.returncode, 0, created.stderr)
        self.assertEqual(json.loads(created.stdout)["id"], account)
        env = client_environment()
        env["COFFER_CACERT"] = self.certificate
        shown = self.coffer("--server", self.url, "--json", "account", "get", account, env=env)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertEqual(json.loads(shown.stdout)["id"], account)

    def test_cli_without_cacert_says_the_certificate_is_not_trusted(self):
        refused = self.coffer("--server", self.url, "account", "get", "nobody")
        self.assertEqual(refused.returncode, 3, refused.stderr)  # no answer from the server
        self.assertIn("certificate", refused.stderr)
        self.assertIn("--cacert FILE or COFFER_CACERT", refused.stderr)

    def test_cli_refuses_another_certificate(self):
        other, _ = make_certificate(self.tmp, "other")
        refused = self.coffer("--server", self.url, "--cacert", other, "account", "get", "x")
        self.assertEqual(refused.returncode, 3, refused.stderr)
        self.assertIn("not trusted", refused.stderr)

    def test_cli_refuses_a_missing_cacert_file(self):
        missing = os.path.join(self.tmp, "missing.pem")
        refused = self.coffer("--server", self.url, "--cacert", missing, "account", "get", "x")
        self.assertEqual(refused.returncode, 2, refused.stderr)
        self.assertEqual(refused.stderr, "coffer: --cacert %s: No such file or directory\n"
                         % missing)

    def bench(self, *args, duration="1", connections="2", env=None):
        return self.coffer("bench", "--server", self.url, "--accounts", "100", "--duration",
                           duration, "--connections", connections, *args, env=env)

    def test_bench_with_cacert_runs_the_load_over_tls(self):
        ran = self.bench("--cacert", self.certificate, duration="2", connections="4")
        self.assertEqual(ran.returncode, 0, ran.stderr)
        result = json.loads(ran.stdout.splitlines()[-1])
        self.assertIs(result["tls"], True)
        self.assertEqual(result["connections"], 4)
        self.assertGreater(result["codes"]["created"], 0)
        self.assertEqual(result["codes"]["created"], result["transfers"])
        self.assertEqual(result["connection_failures"], 0)
        self.assertIs(result["verify_ok"], True)  # /v1/verify over TLS too
        self.assertIn("4 connections over TLS", ran.stdout)

    def test_bench_takes_the_cacert_from_before_the_command_and_the_environment(self):
        before = self.coffer("--cacert", self.certificate, "bench", "--server", self.url,
                             "--accounts", "10", "--duration", "1", "--connections", "1")
        self.assertEqual(before.returncode, 0, before.stderr)
        env = client_environment()
        env["COFFER_CACERT"] = self.certificate
        from_env = self.bench(env=env)
        self.assertEqual(from_env.returncode, 0, from_env.stderr)

    def test_bench_without_cacert_says_the_certificate_is_not_trusted(self):
        refused = self.bench()
        self.assertEqual(refused.returncode, 1, refused.stderr)
        self.assertIn("cannot reach the server at %s: the server's certificate is not trusted "
                      "(The certificate is NOT trusted. The certificate issuer is unknown.)"
                      % self.url, refused.stderr)
        self.assertIn("--cacert FILE or COFFER_CACERT", refused.stderr)
        self.assertEqual(refused.stdout, "")

    def test_bench_refuses_another_certificate_and_a_missing_cacert_file(self):
        other, _ = make_certificate(self.tmp, "other-bench")
        refused = self.bench("--cacert", other)
        self.assertEqual(refused.returncode, 1, refused.stderr)
        self.assertIn("certificate is not trusted", refused.stderr)
        missing = os.path.join(self.tmp, "missing.pem")
        refused = self.bench("--cacert", missing)
        self.assertEqual(refused.returncode, 2, refused.stderr)
        self.assertEqual(refused.stderr, "coffer: --cacert %s: No such file or directory\n"
                         % missing)

    def test_bench_over_plain_http_to_the_tls_port_fails(self):
        refused = self.coffer("bench", "--server", self.url.replace("https:", "http:"),
                              "--accounts", "10", "--duration", "1")
        self.assertEqual(refused.returncode, 1, refused.stderr)
        self.assertIn("cannot reach the server", refused.stderr)

    def test_cacert_does_not_apply_to_offline_commands(self):
        refused = self.coffer("--cacert", self.certificate, "codes")
        self.assertEqual(refused.returncode, 2, refused.stderr)
        self.assertIn("--cacert does not apply", refused.stderr)


class TlsStartRefusals(unittest.TestCase):
    """Wrong TLS flags or files: exit 2 with one line naming the flag and file, before the
    data directory is created; a key that does not match the certificate: exit 1."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="coffer-tls-")
        cls.certificate, cls.key = make_certificate(cls.tmp, "server")
        _, cls.other_key = make_certificate(cls.tmp, "other")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def serve(self, *args):
        data = os.path.join(self.tmp, uid("data"))
        served = run([coffer_binary(), "serve", "--listen", "127.0.0.1:0", "--data", data,
                      "--fsync", "never"] + list(args))
        return served, os.path.exists(data)

    def assert_refused(self, args, line):
        served, data_created = self.serve(*args)
        self.assertEqual(served.returncode, 2, served.stderr)
        self.assertEqual(served.stderr, "coffer: serve: %s\n" % line)
        self.assertEqual(served.stdout, "")
        self.assertFalse(data_created)

    def test_a_certificate_without_a_key(self):
        self.assert_refused(["--tls-cert", self.certificate], "--tls-cert needs --tls-key too")

    def test_a_key_without_a_certificate(self):
        self.assert_refused(["--tls-key", self.key], "--tls-key needs --tls-cert too")

    def test_a_missing_key_file(self):
        missing = os.path.join(self.tmp, "missing-key.pem")
        self.assert_refused(["--tls-cert", self.certificate, "--tls-key", missing],
                            "--tls-key %s: No such file or directory" % missing)

    def test_the_files_swapped(self):
        self.assert_refused(["--tls-cert", self.key, "--tls-key", self.certificate],
                            "--tls-cert %s: holds no PEM certificate" % self.key)

    def test_a_key_that_does_not_match_the_certificate(self):
        served, _ = self.serve("--tls-cert", self.certificate, "--tls-key", self.other_key)
        self.assertEqual(served.returncode, 1, served.stderr)
        self.assertIn("do not match", served.stderr)  # GnuTLS's reason, through libmicrohttpd
        self.assertIn("--tls-cert or --tls-key was refused", served.stderr)


if __name__ == "__main__":
    unittest.main()
