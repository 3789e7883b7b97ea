"""A real Redis Cluster on loopback for tests (3 masters + 3 replicas): the benchmarks' own
:class:`~beatbus.lab.bench.cluster.LocalCluster`, started and stopped by the test."""
from beatbus.lab.bench.cluster import NODE_TIMEOUT_MS, LocalCluster, source_on_each_master

RedisClusterNodes = LocalCluster

__all__ = ["NODE_TIMEOUT_MS", "RedisClusterNodes", "LocalCluster", "source_on_each_master"]
