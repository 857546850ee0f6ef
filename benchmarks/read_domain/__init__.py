"""Benchmark-only templates over the example domain's DBA views (``benchmarks/reads.py``).

The example domain has no REL template with the fetch cache and no plain (unordered) query over
``spn_notes_v``; the read scenarios need both. These templates add no database object: they read
``spp_posts_v`` and ``spn_notes_v``, which the example's schema installs. Only the nodes of the
read scenarios load this plugin: :func:`benchmarks.reads.prepare` writes a distribution folder
declaring its entry point, which those nodes (and no other) find on their ``PYTHONPATH``.
"""

from beds import hookimpl
from beds.registry import TemplateRegistry


@hookimpl
def beds_register_templates(registry: TemplateRegistry) -> None:
    """Add ``templates/*.toml`` (no schema: the example domain's views serve them)."""
    registry.add_package(__package__)
