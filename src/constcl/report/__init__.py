"""The bench report: ``report.html`` with comparison charts, pretraining curves and
qualitative panels (``report.page.write_report``)."""

from constcl.report.page import ReportInputs, write_report

__all__ = ["ReportInputs", "write_report"]
