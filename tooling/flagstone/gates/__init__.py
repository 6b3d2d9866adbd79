"""Metric gates for progressions: the statistics that judge a stage
(``statistics``), the metric configuration in ``flagstone.yaml`` (``config``) and the
providers that answer queries (``providers``). ``flagstone.progress`` decides and acts."""
