"""Redis topologies for tests: real redis-server processes in TLS, Sentinel
and Cluster setups, on free ports in temp dirs, torn down after use.

``tls.py`` (test CA, TLS server, ACL user) and ``sentinel.py`` (master,
replica, three sentinels) belong to issue 12's connection modes;
``cluster.py`` to its cluster part.
"""
