"""The study report: Plotly figures in one self-contained HTML file, and a terminal summary."""
from doitray.report.build import ReportInfo, build_report, make_figures, summary_text, text_summary

__all__ = ["ReportInfo", "build_report", "make_figures", "summary_text", "text_summary"]
