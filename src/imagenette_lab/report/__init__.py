"""The self-contained HTML report (plus Markdown summary) built from run directories."""

from imagenette_lab.report.html import build_report

__all__ = ["build_report"]
