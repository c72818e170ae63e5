"""Theft and non-technical-loss detection: signals, scoring, the inspection list and feedback.

Data flows one way through the subpackage:

- :mod:`analytics.theft.data` — :class:`TheftData`, the columnar input (meters × days), and the
  documented CSV importers (long interval format, SGCC wide daily format, areas, feeders, events);
- :mod:`analytics.theft.signals` — pure, vectorised signal functions over numpy arrays;
- :mod:`analytics.theft.features` — the feature matrix and the per-meter evidence behind it;
- :mod:`analytics.theft.evidence` — the evidence table: one entry per component of the rule score
  (weight, features read, named saturation, explanation, CLI filter);
- :mod:`analytics.theft.model` — rule-based evidence score, IsolationForest, the supervised model
  trained on inspection outcomes, calibration, expected value per visit;
- :mod:`analytics.theft.ranking` — the ranked inspection list with reasons in words and evidence,
  CSV / GeoJSON export for a night route;
- :mod:`analytics.theft.store` — loading from the database, runs, candidates and outcomes;
- :mod:`analytics.theft.cli` — ``releve theft …``.

A simulated fleet comes as :class:`TheftData` from ``bench/simdata.py`` (bench and tests only:
analytics does not import the simulators). See docs/theft.md.
"""

#: The defaults of a database ranking, shared by ``releve theft rank``, the demo and the sharded
#: path (:func:`analytics.theft.store.rank_database`), so that the list the command prints and the
#: run the fraud page shows come in the same order over the same period: the last 365 days up to
#: the last complete day, by risk, meters with a conclusive outcome left off. Here, not in ``store``,
#: so that the command line's parser does not load numpy and scikit-learn to know them.
DEFAULT_DAYS = 365
DEFAULT_ORDER = "risk"
DEFAULT_KEEP = 500
