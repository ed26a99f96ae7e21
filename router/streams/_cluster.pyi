"""Type stub of the compiled module ``router.streams._cluster``
(ext/router/streams/_cluster.pyx)."""

from router.streams._publisher import PublisherCore

class ClusterPublisherCore(PublisherCore):
    _by_shard: list[PublisherCore]
