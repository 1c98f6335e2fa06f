"""Where jobs run: an embedded local Ray, an existing cluster, or a remote one."""

from cluster.session import RaySession, connect

__all__ = ["RaySession", "connect"]
