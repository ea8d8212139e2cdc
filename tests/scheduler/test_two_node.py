"""Policy and PRM replicas pinned to different nodes of a two-node cluster by custom resources."""

import pytest

from ponder.actors.engine import ScoreRequest, StepRequest
from ponder.actors.pool import ReplicaPool
from ponder.config import ClusterConfig
from tests.scheduler.engines import build_policy, build_reward, engine_configs
from tests.scheduler.ray_fixtures import ray, ray_session  # noqa: F401
from tests.search.fakes import problems

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_nodes(ray_session):  # noqa: F811
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared single-node cluster; the next module starts it again
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"policy_node": 1}, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    worker = cluster.add_node(num_cpus=1, resources={"prm_node": 1}, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, log_to_driver=False, namespace="ponder-tests")
    cluster.wait_for_nodes()
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    yield nodes, worker
    ray.shutdown()
    cluster.shutdown()


async def test_pools_pinned_to_their_nodes(two_nodes):
    nodes, worker = two_nodes
    policy_node = next(i for i, r in nodes.items() if "policy_node" in r)
    prm_node = next(i for i, r in nodes.items() if "prm_node" in r)
    assert prm_node == worker.node_id and policy_node != prm_node
    cl = ClusterConfig(cpus_per_replica=0, policy_resources={"policy_node": 0.5},
                       reward_resources={"prm_node": 0.5})
    pol_cfg, rew_cfg = engine_configs()
    policy = await ReplicaPool("policy", pol_cfg, cl, builder=build_policy).start(2)
    reward = await ReplicaPool("reward", rew_cfg, cl, builder=build_reward).start(2)
    assert {h["node_id"] for h in await policy.health()} == {policy_node}
    assert {h["node_id"] for h in await reward.health()} == {prm_node}
    p = problems(1)[0]
    [[steps]] = await policy.generate([StepRequest(p.problem, [], seed=1)])
    [res] = await reward.score([ScoreRequest(p.problem, [steps[0].text])])
    assert len(res.rewards) == 1
    await policy.close()
    await reward.close()
