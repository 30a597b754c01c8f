"""The HTTP suites of test_api.py and test_concurrency.py against a cluster: a PostgreSQL primary
and synchronous standby (scripts/pg-cluster) and three `coffer serve --log` instances on it,
started once for the module. Each TestCase of those modules runs here unchanged, through a
ClusterClient (harness.py): its own client's home is a follower, so every write is answered 307
and sent again, same body, to the leader; the extra clients a test opens take the three
instances in turn; every read carries Coffer-Min-Seq, the highest Coffer-Seq seen so far, and so
sees every write acknowledged before it (read-your-writes on a follower). At the end every
instance reports the same applied_seq and applied_hash and GET /v1/verify passes on each."""

import sys
import time
import unittest

import test_api
import test_concurrency
from harness import NO_POSTGRESQL, SLOW, Cluster, have_postgresql, json_exchange

# TestCase classes whose tests run here.
SUITES = [test_api.Accounts, test_api.History, test_api.Transfers, test_api.Holds,
          test_api.Times, test_api.Batches, test_api.Operations,
          test_concurrency.HotAccount, test_concurrency.Seat, test_concurrency.ExpiryRace]

# Not here: test_api.Overload and ConnectionLimit start a server of their own with per-instance
# options (--queue-events, --max-connections) that a shared cluster cannot take. Every test of
# the classes above applies to a cluster as it is.

CLUSTER = None
ISSUERS = set()  # (the cluster's key, currency): issuer accounts already created


def setUpModule():  # noqa: N802 - unittest's name
    global CLUSTER
    if not have_postgresql():
        raise unittest.SkipTest(NO_POSTGRESQL)
    CLUSTER = Cluster(3).start()
    try:
        CLUSTER.settled_leader(30)
    except BaseException:
        CLUSTER.stop(check=False)  # unittest calls no tearDownModule after a failed setUp
        CLUSTER = None
        raise


def tearDownModule():  # noqa: N802
    if CLUSTER is not None:
        CLUSTER.stop()


class ClusterServer:
    """What a ServerTestCase uses of its `server`, for the cluster: clients, and an identity."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.pid = "cluster"  # ServerTestCase.issuer keys the issuers it created by it

    def client(self, timeout=30.0):
        return self.cluster.client(timeout=timeout)


class OnTheCluster:
    """Mixed in before a ServerTestCase: the module's cluster instead of a server of its own."""

    role = "follower"  # what /readyz of the instance a test's own client talks to names

    @classmethod
    def setUpClass(cls):
        cls.server = ClusterServer(CLUSTER)
        cls.client = CLUSTER.client(home=CLUSTER.followers()[0])
        cls._issuers = ISSUERS
        try:
            cls.prepare()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.client.close()


def on_the_cluster(suite):
    """`suite` with OnTheCluster mixed in, defined in this module (where setUpModule is)."""
    return type(suite.__name__, (OnTheCluster, suite),
                {"__module__": __name__, "__doc__": suite.__doc__})


for _suite in SUITES:
    globals()[_suite.__name__] = on_the_cluster(_suite)
del _suite


class ZzReplicas(unittest.TestCase):
    """Runs last (unittest orders classes by name): after every suite above, each instance has
    applied the same history and its invariants hold."""

    def test_every_instance_reports_the_same_seq_and_hash_and_verifies(self):
        leader = CLUSTER.settled_leader(15)
        target = CLUSTER.view(leader)["applied_seq"]
        deadline = time.monotonic() + 15 * SLOW
        while True:
            views = {m.url: CLUSTER.view(m) for m in CLUSTER.members}
            pairs = {url: (v["applied_seq"], v["applied_hash"]) if v else None
                     for url, v in views.items()}
            if len(set(pairs.values())) == 1 and pairs[leader.url][0] >= target:
                break
            self.assertLess(time.monotonic(), deadline,
                            "the instances did not converge on one (seq, hash): %r" % pairs)
            time.sleep(0.1)
        self.assertRegex(pairs[leader.url][1], r"^[0-9a-f]{64}$")
        # the suites' writes did go through followers: hundreds were redirected
        print("\n%d writes redirected by a follower; every instance at seq %d, hash %s"
              % (CLUSTER.redirects, pairs[leader.url][0], pairs[leader.url][1]), file=sys.stderr)
        self.assertGreater(CLUSTER.redirects, 100)
        for member in CLUSTER.members:
            status, _, report = json_exchange(member.port, "GET", "/v1/verify", timeout=60)
            self.assertEqual(status, 200, (member.url, report))
            self.assertEqual((report["ok"], report["problems"]), (True, []), member.url)
            self.assertGreater(report["transfers_checked"], 0, member.url)


if __name__ == "__main__":
    unittest.main()
