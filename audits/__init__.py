"""Bias audits: one module per audit, each registered by name.

>>> from audits import list_audits, get_audit   # doctest: +SKIP
"""
from audits.base import AUDITS, AuditResult, get_audit, list_audits, register_audit, skipped

__all__ = ["AUDITS", "AuditResult", "get_audit", "list_audits", "register_audit", "skipped"]
