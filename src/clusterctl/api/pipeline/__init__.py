"""Pipelines: stages on the world's slots, items streaming through bounded queues,
exactly once, with each stage's T_S, T_A and ρ measured and the bottleneck named.

The rooms: ``run`` (``Pipeline``, the loop; ``pipeline``/``pipeline_results``),
``stages`` (the stages as written, grouped into farms), ``farm`` (one farm, run by a
pmap scheduler of its own), ``feed`` (the bounded queue in front of a farm) and
``stats`` (the figures). See docs/how-it-works.md, section "Pipelines".
"""

from clusterctl.api.pipeline.run import Pipeline, pipeline, pipeline_results
from clusterctl.api.pipeline.stats import PipelineStats, StageFigures, bottleneck, figures

__all__ = ["Pipeline", "PipelineStats", "StageFigures", "bottleneck", "figures", "pipeline",
           "pipeline_results"]
