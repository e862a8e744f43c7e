"""`spruce run`'s workflow: data, training recipes, stages, measurements, report.

`run(config)` is the library entry point (the CLI is a thin layer over it);
`load_config(path, overrides)` builds its settings.
"""

from spruce.workflow.config import RunConfig, load_config

__all__ = ["RunConfig", "load_config", "run"]


def run(config, fresh=False, progress=True, quiet=False):
    """See :func:`spruce.workflow.pipeline.run`."""
    from spruce.workflow.pipeline import run as _run

    return _run(config, fresh=fresh, progress=progress, quiet=quiet)
