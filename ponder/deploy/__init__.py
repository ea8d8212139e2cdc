"""Rendering the typed config into deployments: KubeRay manifests (a RayService for serving, a
RayJob for evaluation jobs, Redis, the Secret, PodDisruptionBudgets, monitoring) and a Ray
cluster-launcher `cluster.yaml`. The one source of pool sizes, models, engines and resources is
the PonderConfig; this room only lays it out. It knows ponder.config and the strategy registry,
never Ray, the search internals or the engines.

    files = render(config, ["rayservice", "rayjob"], source="configs/deploy-prod.yaml")
    write(files, Path("k8s/prod"))
"""

from ponder.deploy.render import TARGETS, render, write

__all__ = ["TARGETS", "render", "write"]
