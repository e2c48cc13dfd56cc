"""Comparison reports of a study, computed from its results document: JSON, CSV and HTML."""

from __future__ import annotations

from service.reports.comparison import build_report
from service.reports.html import render_html
from service.reports.tables import render_csv

__all__ = ["build_report", "render_csv", "render_html"]
