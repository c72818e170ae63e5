"""Ingest: lands readings and meter events in the database, fast, once, and without losing any.

Owns the batch writer (binary ``COPY`` + idempotent merge, conflicts kept aside, invalid rows to
the dead-letter table) and the buffered ingestor (batches by count and time, back-pressure).
May import ``releve``; never imports collectors, analytics, billing or dashboards.
"""

from ingest.frame import ReadingFrame
from ingest.ingestor import Ingestor
from ingest.writer import BatchResult, BatchWriter

__all__ = ["BatchResult", "BatchWriter", "Ingestor", "ReadingFrame"]
