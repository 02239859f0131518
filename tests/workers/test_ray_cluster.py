"""par_map(backend="ray") on a cluster of two Ray nodes, made on this machine with
``ray.cluster_utils.Cluster``: items run on both nodes, each exactly once, in order;
a node removed mid-run loses nothing and repeats nothing."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
import ray
import ray_funcs
from conftest import TESTS
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

import snake


@contextlib.contextmanager
def ray_funcs_importable() -> Iterator[None]:
    """Nodes started in the block give their workers this directory on ``PYTHONPATH``
    (for ``ray_funcs``)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), old) if p)
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node and one more, one CPU each: each holds one actor (``num_cpus=1``)."""
    with ray_funcs_importable():
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False, logging_level=logging.WARNING)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def snake_actors() -> list[Any]:
    return list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "SnakeWorker"), ("state", "!=", "DEAD")],
    )


def test_items_run_on_both_nodes_exactly_once_in_order(cluster: Cluster, no_leaks: None) -> None:
    stream = snake.from_iterable(range(60)).par_map(ray_funcs.where, workers=2, backend="ray")
    out = stream.to_list()
    assert [x for x, _, _ in out] == list(range(60))
    assert len({node for _, _, node in out}) == 2


def test_a_node_removed_mid_run_loses_nothing_and_repeats_nothing(cluster: Cluster, no_leaks: None) -> None:
    with ray_funcs_importable():
        extra = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    # Three nodes of one CPU, three actors of one CPU each: one actor per node. When the
    # extra node goes, its actor's item is retried on an actor of another node (a new
    # actor cannot be placed: no CPU is free; an idle one is taken as it comes back).
    stream = snake.from_iterable(range(40)).par_map(ray_funcs.slow_where, workers=3, backend="ray", retries=1)
    got = []
    nodes_before: set[str] = set()
    nodes_after: set[str] = set()
    with stream.open_sync() as items:
        for i, (x, _, node) in enumerate(items):
            got.append(x)
            (nodes_before if i <= 9 else nodes_after).add(node)
            if i == 9:
                assert extra.node_id in nodes_before, "the extra node ran no item"
                cluster.remove_node(extra)
        stats = items.statistics().stage(1)
    assert got == list(range(40))  # nothing lost, nothing twice, in order
    assert len(nodes_before) == 3
    assert extra.node_id not in nodes_after or stats.workers_lost >= 1
    assert stats.workers_lost >= 1 and stats.retries >= 1
    assert not snake_actors()
