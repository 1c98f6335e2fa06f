"""Where jobs run: an embedded local Ray, an existing cluster, or a remote one."""

from rayformers.cluster.session import RaySession, connect, use_token_auth_if_set_up

__all__ = ["RaySession", "connect", "use_token_auth_if_set_up"]
